//! Which policy the operator applies to a pod: the oldest `ShutdownPolicy` that selects it, or,
//! with `--default-profile`, built-in settings for the pods no policy selects: one profile's
//! defaults, or (`auto`) those of the mesh whose injector marked the pod.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use lameduck_api::{
    CompletionSpec, ProxyProfile, ProxySpec, ShutdownMethod, ShutdownPolicy, ShutdownPolicySpec,
    names::annotations, selection, shape::PodShape,
};

/// The settings that apply to one pod, and where they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The policy's name, or `None` for the built-in defaults of `--default-profile`.
    pub policy: Option<String>,
    /// The policy's uid: its shutdown counts are kept under it.
    pub uid: Option<String>,
    /// The webhook's review stamp on the policy (`lameduck.io/policy-review`).
    pub stamp: Option<String>,
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

/// The methods `--default-profile auto` uses: no command run in the pod's containers and no
/// container added to it, only the profile's quit call through the kubelet's port-forward.
pub const AUTO_METHODS: [ShutdownMethod; 1] = [ShutdownMethod::PortForward];

/// What applies to the pods no policy selects (`--default-profile`).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Fallback {
    /// Nothing: they are left alone (and counted stuck with reason `no_policy` when they are).
    #[default]
    Off,
    /// These settings, to every such pod.
    Profile(Box<ShutdownPolicySpec>),
    /// To a pod Linkerd's or Istio's injector marked, that mesh's profile with [`AUTO_METHODS`].
    Auto { linkerd: Box<ShutdownPolicySpec>, istio: Box<ShutdownPolicySpec> },
}

impl Fallback {
    /// `--default-profile auto`.
    pub fn auto() -> Self {
        let spec = |profile| {
            Box::new(ShutdownPolicySpec {
                completion: CompletionSpec { methods: AUTO_METHODS.to_vec(), ..CompletionSpec::default() },
                ..default_spec(profile)
            })
        };
        Self::Auto { linkerd: spec(ProxyProfile::Linkerd), istio: spec(ProxyProfile::Istio) }
    }

    /// The settings for `pod`, which no policy selects.
    pub fn for_pod(&self, pod: &Pod) -> Option<&ShutdownPolicySpec> {
        match self {
            Self::Off => None,
            Self::Profile(spec) => Some(spec),
            Self::Auto { linkerd, istio } => match PodShape::of_pod(pod)?.injected_mesh()? {
                ProxyProfile::Linkerd => Some(linkerd),
                ProxyProfile::Istio => Some(istio),
                _ => None,
            },
        }
    }

    /// For logs: `off`, the profile, or `auto`.
    pub fn describe(&self) -> String {
        match self {
            Self::Off => "off".into(),
            Self::Profile(spec) => spec.proxy.profile.as_str().to_owned(),
            Self::Auto { .. } => "auto".into(),
        }
    }
}

/// The policy that applies to `pod`, among the policies of its namespace.
pub fn applied(pod: &Pod, policies: &[Arc<ShutdownPolicy>], fallback: &Fallback) -> Option<Applied> {
    let selection =
        selection::select(policies.iter().map(Arc::as_ref), pod.namespace().as_deref(), pod.labels());
    match selection.winner {
        Some(policy) => Some(Applied {
            policy: Some(policy.name_any()),
            uid: policy.uid(),
            stamp: policy.annotations().get(annotations::POLICY_REVIEW).cloned(),
            generation: policy.metadata.generation.unwrap_or(0),
            spec: policy.spec.clone(),
        }),
        None => fallback.for_pod(pod).map(|spec| Applied {
            policy: None,
            uid: None,
            stamp: None,
            generation: 0,
            spec: spec.clone(),
        }),
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
        let applied = applied(&pod("{team: a}"), &policies, &Fallback::Off).unwrap();
        assert_eq!(applied.policy.as_deref(), Some("old"));
    }

    #[test]
    fn default_profile_covers_unselected_pods_only() {
        let policies = [policy("a-only", "2026-11-21T08:00:00Z", "{team: a}")];
        assert_eq!(applied(&pod("{team: b}"), &policies, &Fallback::Off), None);
        let default = Fallback::Profile(Box::new(default_spec(ProxyProfile::Linkerd)));
        let fallback = applied(&pod("{team: b}"), &policies, &default).unwrap();
        assert_eq!(fallback.policy, None);
        assert_eq!(fallback.spec.proxy.resolve().container_name, "linkerd-proxy");
        let chosen = applied(&pod("{team: a}"), &policies, &default).unwrap();
        assert_eq!(chosen.policy.as_deref(), Some("a-only"));
    }

    /// A pod with `annotations` and containers `containers`, as the operator's cache holds it
    /// (the injectors' marks must survive the trim: the chart's default reads them).
    fn injected(annotations: &str, containers: &str) -> Pod {
        let full: Pod = serde_yaml_ng::from_str(&format!(
            "metadata: {{name: p, namespace: jobs, annotations: {annotations}}}
spec: {{restartPolicy: Never, containers: {containers}}}"
        ))
        .unwrap();
        crate::controller::pod::SlimPod::cache(&full).unwrap().to_pod()
    }

    #[test]
    fn auto_finishes_what_a_mesh_injected_with_its_profile_and_port_forward_only() {
        let auto = Fallback::auto();
        let linkerd =
            injected("{linkerd.io/proxy-version: edge-25.1.1}", "[{name: app}, {name: linkerd-proxy}]");
        let spec = applied(&linkerd, &[], &auto).unwrap().spec;
        assert_eq!(
            (spec.proxy.profile, spec.completion.methods.as_slice()),
            (ProxyProfile::Linkerd, &AUTO_METHODS[..])
        );
        let istio = injected("{sidecar.istio.io/status: '{}'}", "[{name: app}, {name: istio-proxy}]");
        assert_eq!(applied(&istio, &[], &auto).unwrap().spec.proxy.profile, ProxyProfile::Istio);
        // A container name alone, or an annotation alone, is no injector's mark.
        let named_only = injected("{}", "[{name: app}, {name: linkerd-proxy}]");
        assert_eq!(applied(&named_only, &[], &auto), None);
        let annotated_only = injected("{linkerd.io/proxy-version: x}", "[{name: app}]");
        assert_eq!(applied(&annotated_only, &[], &auto), None);
        // A policy still wins.
        let policies = [policy("mine", "2026-11-21T08:00:00Z", "{}")];
        assert_eq!(applied(&linkerd, &policies, &auto).unwrap().policy.as_deref(), Some("mine"));
    }
}
