//! What a `ShutdownPolicy` can direct the operator to do beyond the built-in profiles, and the
//! operator's own limits on it. Pure.
//!
//! The operator holds `pods/exec` and `pods/ephemeralcontainers` in every namespace it watches;
//! a policy must not lend them to an author who lacks them. Two guards, each enough alone:
//! - the validating webhook asks the API server whether the author holds each power the spec
//!   asks for ([`requested`]) and refuses the policy otherwise;
//! - the operator refuses to act on a policy that asks for what its flags do not allow
//!   ([`refusal`]), so a policy admitted while the webhook was down still grants nothing.

use k8s_openapi::api::{
    authentication::v1::UserInfo,
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use lameduck_api::{ShutdownMethod, ShutdownPolicySpec, Sidecar};

/// A power over other workloads' pods that a policy can ask the operator to use for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Power {
    /// Running a command in a container (`create pods/exec`).
    Exec,
    /// Adding an ephemeral container (`patch pods/ephemeralcontainers`).
    EphemeralContainers,
}

impl Power {
    /// The verb and subresource of `pods` an author needs, as a SubjectAccessReview asks.
    pub const fn verb_and_subresource(self) -> (&'static str, &'static str) {
        match self {
            Self::Exec => ("create", "exec"),
            Self::EphemeralContainers => ("patch", "ephemeralcontainers"),
        }
    }

    /// As `kubectl auth can-i` would name it.
    pub fn describe(self) -> String {
        let (verb, subresource) = self.verb_and_subresource();
        format!("{verb} pods/{subresource}")
    }
}

/// The question for the API server: may `user` use `power` on the pods of `namespace`?
pub fn access_review(user: &UserInfo, namespace: &str, power: Power) -> SubjectAccessReview {
    let (verb, subresource) = power.verb_and_subresource();
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_owned()),
                verb: Some(verb.to_owned()),
                group: Some(String::new()),
                resource: Some("pods".to_owned()),
                subresource: Some(subresource.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// One power a spec asks for, and the field that asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub field: String,
    pub power: Power,
}

/// Whether completion runs `method` on `sidecar`.
fn uses(spec: &ShutdownPolicySpec, sidecar: &Sidecar, method: ShutdownMethod) -> bool {
    spec.completion.enabled && sidecar.methods.contains(&method)
}

fn uses_containers(spec: &ShutdownPolicySpec, sidecar: &Sidecar) -> bool {
    uses(spec, sidecar, ShutdownMethod::EphemeralContainer) || uses(spec, sidecar, ShutdownMethod::Signal)
}

/// Whether `sidecar` has an exec command of its own, not its profile's.
fn custom_exec_command(sidecar: &Sidecar) -> bool {
    let proxy = &sidecar.proxy;
    proxy.exec_command.is_some() && proxy.exec_command != proxy.profile.exec_command(proxy.admin_port)
}

/// The powers `spec` asks for beyond what every policy gets. A policy that keeps each sidecar
/// to its profile's container and command, and to the operator's image, asks for none: the
/// operator's own calls then reach only those containers, in the ways the profiles define.
/// (`Custom` has no container of its own: naming one asks for the powers its methods use.)
pub fn requested(spec: &ShutdownPolicySpec) -> Vec<Request> {
    let mut requests = Vec::new();
    let mut ask = |field: String, power| {
        let request = Request { field, power };
        if !requests.contains(&request) {
            requests.push(request);
        }
    };
    let sidecars = spec.sidecars();
    for sidecar in &sidecars {
        if custom_exec_command(sidecar) && uses(spec, sidecar, ShutdownMethod::Exec) {
            ask(format!("{}.execCommand", sidecar.field), Power::Exec);
        }
        if sidecar.proxy.profile.container_name() != Some(sidecar.proxy.container_name.as_str()) {
            if uses(spec, sidecar, ShutdownMethod::Exec) {
                ask(format!("{}.containerName", sidecar.field), Power::Exec);
            }
            if uses_containers(spec, sidecar) {
                ask(format!("{}.containerName", sidecar.field), Power::EphemeralContainers);
            }
        }
    }
    if spec.completion.ephemeral_image.is_some() && sidecars.iter().any(|s| uses_containers(spec, s)) {
        ask("spec.completion.ephemeralImage".to_owned(), Power::EphemeralContainers);
    }
    requests
}

/// The operator's own limits on policies (its flags).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Images a policy's `completion.ephemeralImage` may name (`--allowed-ephemeral-image`,
    /// plus the operator's own `--ephemeral-image`).
    pub allowed_images: Vec<String>,
    /// Whether a policy's `proxy.execCommand` is ever run (`--allow-custom-exec-command`).
    pub allow_custom_exec_command: bool,
}

/// Why the operator will not act on a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The field at fault.
    pub field: String,
    /// The label of `lameduck_policies_refused{reason}`: bounded.
    pub reason: &'static str,
    pub message: String,
}

/// Why the operator refuses `spec`, if it does.
pub fn refusal(spec: &ShutdownPolicySpec, limits: &Limits) -> Option<Refusal> {
    let sidecars = spec.sidecars();
    if let Some(image) = &spec.completion.ephemeral_image
        && sidecars.iter().any(|s| uses_containers(spec, s))
        && !limits.allowed_images.iter().any(|allowed| allowed == image)
    {
        return Some(Refusal {
            field: "spec.completion.ephemeralImage".to_owned(),
            reason: "ephemeral_image",
            message: format!(
                "spec.completion.ephemeralImage: {image:?} is not among the operator's allowed images \
                 (--allowed-ephemeral-image: {}); remove the field to use the operator's own image",
                limits.allowed_images.join(", ")
            ),
        });
    }
    if let Some(sidecar) = sidecars
        .iter()
        .find(|s| custom_exec_command(s) && uses(spec, s, ShutdownMethod::Exec))
        .filter(|_| !limits.allow_custom_exec_command)
    {
        let field = format!("{}.execCommand", sidecar.field);
        return Some(Refusal {
            message: format!(
                "{field}: the operator runs no custom exec command unless started with \
                 --allow-custom-exec-command; remove the field to use the profile's command, or Exec \
                 from the methods"
            ),
            field,
            reason: "exec_command",
        });
    }
    None
}

/// Every label `refusal` can give, so the gauge shows zeros too.
pub const REFUSAL_REASONS: [&str; 2] = ["ephemeral_image", "exec_command"];

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ShutdownPolicySpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn a_policy_that_keeps_to_its_profile_asks_for_nothing() {
        assert_eq!(requested(&spec("{}")), []);
        assert_eq!(
            requested(&spec("{proxy: {profile: Lameduck, containerName: lameduck-proxy, adminPort: 9000}}")),
            []
        );
    }

    #[test]
    fn custom_commands_containers_and_images_ask_for_the_powers_they_use() {
        let exec = requested(&spec("{proxy: {execCommand: [/bin/sh, -c, 'cat /etc/shadow']}}"));
        assert_eq!(exec, [Request { field: "spec.proxy.execCommand".into(), power: Power::Exec }]);

        let other = requested(&spec("{proxy: {profile: Custom, containerName: app}}"));
        assert_eq!(
            other,
            [
                Request { field: "spec.proxy.containerName".into(), power: Power::Exec },
                Request { field: "spec.proxy.containerName".into(), power: Power::EphemeralContainers },
            ]
        );
        let signal_only = requested(&spec("{proxy: {containerName: app}, completion: {methods: [Signal]}}"));
        assert_eq!(
            signal_only,
            [Request { field: "spec.proxy.containerName".into(), power: Power::EphemeralContainers }]
        );

        let image = requested(&spec(
            "{completion: {ephemeralImage: 'evil/debug:latest', methods: [EphemeralContainer]}}",
        ));
        assert_eq!(
            image,
            [Request { field: "spec.completion.ephemeralImage".into(), power: Power::EphemeralContainers }]
        );
        // Fields whose methods are not used ask for nothing.
        assert_eq!(requested(&spec("{completion: {ephemeralImage: x, methods: [PortForward]}}")), []);
        assert_eq!(requested(&spec("{proxy: {execCommand: [x]}, completion: {methods: [Signal]}}")), []);
        assert_eq!(requested(&spec("{proxy: {execCommand: [x]}, completion: {enabled: false}}")), []);
        assert_eq!(Power::EphemeralContainers.describe(), "patch pods/ephemeralcontainers");
    }

    #[test]
    fn each_sidecar_asks_for_what_its_own_methods_use_on_it() {
        let policy = spec(
            "{completion: {methods: [PortForward]}, sidecars: [
               {profile: Custom, containerName: log-agent, methods: [Signal]},
               {profile: CloudSqlProxy},
               {profile: Custom, containerName: vault-agent, execCommand: [/bin/quit], methods: [Exec]},
               {profile: Lameduck, methods: [Exec, EphemeralContainer]}]}",
        );
        assert_eq!(
            requested(&policy),
            [
                Request { field: "spec.sidecars[0].containerName".into(), power: Power::EphemeralContainers },
                Request { field: "spec.sidecars[2].execCommand".into(), power: Power::Exec },
                Request { field: "spec.sidecars[2].containerName".into(), power: Power::Exec },
            ]
        );
        let refused = refusal(&policy, &Limits::default()).expect("a custom exec command is refused");
        assert_eq!(
            (refused.field.as_str(), refused.reason),
            ("spec.sidecars[2].execCommand", "exec_command")
        );
        // With `sidecars`, `proxy` does not take part in completion.
        assert_eq!(requested(&spec("{proxy: {execCommand: [x]}, sidecars: [{profile: Lameduck}]}")), []);
    }

    #[test]
    fn the_access_review_asks_about_the_author_and_the_subresource() {
        let user = UserInfo {
            username: Some("alice".into()),
            groups: Some(vec!["devs".into(), "system:authenticated".into()]),
            ..UserInfo::default()
        };
        let review = access_review(&user, "shop", Power::EphemeralContainers);
        assert_eq!(review.spec.user.as_deref(), Some("alice"));
        assert_eq!(review.spec.groups.as_deref().unwrap().len(), 2);
        let attributes = review.spec.resource_attributes.unwrap();
        assert_eq!(
            (attributes.namespace.as_deref(), attributes.verb.as_deref(), attributes.resource.as_deref()),
            (Some("shop"), Some("patch"), Some("pods"))
        );
        assert_eq!(attributes.subresource.as_deref(), Some("ephemeralcontainers"));
    }

    #[test]
    fn the_operator_refuses_images_off_its_list_and_custom_commands_unless_allowed() {
        let limits = Limits { allowed_images: vec!["ours:1".into()], allow_custom_exec_command: false };
        assert_eq!(refusal(&spec("{}"), &limits), None);
        assert_eq!(refusal(&spec("{completion: {ephemeralImage: 'ours:1'}}"), &limits), None);
        let image = refusal(&spec("{completion: {ephemeralImage: 'evil:1'}}"), &limits).unwrap();
        assert_eq!(
            (image.field.as_str(), image.reason),
            ("spec.completion.ephemeralImage", "ephemeral_image")
        );
        assert!(image.message.contains("evil:1") && image.message.contains("--allowed-ephemeral-image"));

        let exec = refusal(&spec("{proxy: {execCommand: [x]}}"), &limits).unwrap();
        assert_eq!((exec.field.as_str(), exec.reason), ("spec.proxy.execCommand", "exec_command"));
        assert!(exec.message.contains("--allow-custom-exec-command"));
        let allowed = Limits { allow_custom_exec_command: true, ..limits };
        assert_eq!(refusal(&spec("{proxy: {execCommand: [x]}}"), &allowed), None);
        for reason in [image.reason, exec.reason] {
            assert!(REFUSAL_REASONS.contains(&reason));
        }
    }
}
