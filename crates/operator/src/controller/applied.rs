//! Which policy the operator applies to a pod: the oldest `ShutdownPolicy` that selects it, or,
//! with `--default-profile`, built-in settings for the pods no policy selects.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use lameduck_api::{ProxyProfile, ProxySpec, ShutdownPolicy, ShutdownPolicySpec, selection};

/// The settings that apply to one pod, and where they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The policy's name, or `None` for the built-in defaults of `--default-profile`.
    pub policy: Option<String>,
    /// The policy's `metadata.generation` (0 for the defaults).
    pub generation: i64,
    pub spec: ShutdownPolicySpec,
}

/// The settings `--default-profile` applies: every default, with this proxy profile.
pub fn default_spec(profile: ProxyProfile) -> ShutdownPolicySpec {
    ShutdownPolicySpec {
        proxy: ProxySpec { profile, ..ProxySpec::default() },
        ..ShutdownPolicySpec::default()
    }
}

/// The policy that applies to `pod`, among the policies of its namespace.
pub fn applied(
    pod: &Pod,
    policies: &[Arc<ShutdownPolicy>],
    default: Option<&ShutdownPolicySpec>,
) -> Option<Applied> {
    let selection =
        selection::select(policies.iter().map(Arc::as_ref), pod.namespace().as_deref(), pod.labels());
    match selection.winner {
        Some(policy) => Some(Applied {
            policy: Some(policy.name_any()),
            generation: policy.metadata.generation.unwrap_or(0),
            spec: policy.spec.clone(),
        }),
        None => default.map(|spec| Applied { policy: None, generation: 0, spec: spec.clone() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, created: &str, labels: &str) -> Arc<ShutdownPolicy> {
        Arc::new(
            serde_yaml_ng::from_str(&format!(
                "metadata: {{name: {name}, namespace: jobs, creationTimestamp: '{created}'}}
spec: {{selector: {{matchLabels: {labels}}}, proxy: {{profile: Lameduck}}}}"
            ))
            .unwrap(),
        )
    }

    fn pod(labels: &str) -> Pod {
        serde_yaml_ng::from_str(&format!("metadata: {{name: p, namespace: jobs, labels: {labels}}}")).unwrap()
    }

    #[test]
    fn the_oldest_selecting_policy_applies() {
        let policies = [
            policy("young", "2026-11-21T08:00:00Z", "{team: a}"),
            policy("old", "2026-11-20T08:00:00Z", "{}"),
            policy("other", "2026-11-19T08:00:00Z", "{team: b}"),
        ];
        let applied = applied(&pod("{team: a}"), &policies, None).unwrap();
        assert_eq!(applied.policy.as_deref(), Some("old"));
    }

    #[test]
    fn default_profile_covers_unselected_pods_only() {
        let policies = [policy("a-only", "2026-11-21T08:00:00Z", "{team: a}")];
        assert_eq!(applied(&pod("{team: b}"), &policies, None), None);
        let default = default_spec(ProxyProfile::Linkerd);
        let fallback = applied(&pod("{team: b}"), &policies, Some(&default)).unwrap();
        assert_eq!(fallback.policy, None);
        assert_eq!(fallback.spec.proxy.resolve().container_name, "linkerd-proxy");
        let chosen = applied(&pod("{team: a}"), &policies, Some(&default)).unwrap();
        assert_eq!(chosen.policy.as_deref(), Some("a-only"));
    }
}
