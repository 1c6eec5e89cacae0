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
use lameduck_api::{ShutdownMethod, ShutdownPolicySpec};

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
    pub field: &'static str,
    pub power: Power,
}

fn uses(spec: &ShutdownPolicySpec, method: ShutdownMethod) -> bool {
    spec.completion.enabled && spec.completion.methods.contains(&method)
}

fn uses_containers(spec: &ShutdownPolicySpec) -> bool {
    uses(spec, ShutdownMethod::EphemeralContainer) || uses(spec, ShutdownMethod::Signal)
}

/// The powers `spec` asks for beyond what every policy gets. A policy that keeps to its
/// profile's container, command and the operator's image asks for none: the operator's own
/// calls then reach only the proxy, in the ways the profile defines.
pub fn requested(spec: &ShutdownPolicySpec) -> Vec<Request> {
    let mut requests = Vec::new();
    let mut ask = |field, power| {
        let request = Request { field, power };
        if !requests.contains(&request) {
            requests.push(request);
        }
    };
    if spec.proxy.exec_command.is_some() && uses(spec, ShutdownMethod::Exec) {
        ask("spec.proxy.execCommand", Power::Exec);
    }
    let own_container = spec.proxy.profile.container_name();
    if let Some(name) = &spec.proxy.container_name
        && own_container != Some(name.as_str())
    {
        if uses(spec, ShutdownMethod::Exec) {
            ask("spec.proxy.containerName", Power::Exec);
        }
        if uses_containers(spec) {
            ask("spec.proxy.containerName", Power::EphemeralContainers);
        }
    }
    if spec.completion.ephemeral_image.is_some() && uses_containers(spec) {
        ask("spec.completion.ephemeralImage", Power::EphemeralContainers);
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
    pub field: &'static str,
    /// The label of `lameduck_policies_refused{reason}`: bounded.
    pub reason: &'static str,
    pub message: String,
}

/// Why the operator refuses `spec`, if it does.
pub fn refusal(spec: &ShutdownPolicySpec, limits: &Limits) -> Option<Refusal> {
    if let Some(image) = &spec.completion.ephemeral_image
        && uses_containers(spec)
        && !limits.allowed_images.iter().any(|allowed| allowed == image)
    {
        return Some(Refusal {
            field: "spec.completion.ephemeralImage",
            reason: "ephemeral_image",
            message: format!(
                "spec.completion.ephemeralImage: {image:?} is not among the operator's allowed images \
                 (--allowed-ephemeral-image: {}); remove the field to use the operator's own image",
                limits.allowed_images.join(", ")
            ),
        });
    }
    if spec.proxy.exec_command.is_some()
        && uses(spec, ShutdownMethod::Exec)
        && !limits.allow_custom_exec_command
    {
        return Some(Refusal {
            field: "spec.proxy.execCommand",
            reason: "exec_command",
            message: "spec.proxy.execCommand: the operator runs no custom exec command unless started \
                      with --allow-custom-exec-command; remove the field to use the profile's command, \
                      or Exec from spec.completion.methods"
                .to_owned(),
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
        assert_eq!(exec, [Request { field: "spec.proxy.execCommand", power: Power::Exec }]);

        let other = requested(&spec("{proxy: {profile: Custom, containerName: app}}"));
        assert_eq!(
            other,
            [
                Request { field: "spec.proxy.containerName", power: Power::Exec },
                Request { field: "spec.proxy.containerName", power: Power::EphemeralContainers },
            ]
        );
        let signal_only = requested(&spec("{proxy: {containerName: app}, completion: {methods: [Signal]}}"));
        assert_eq!(
            signal_only,
            [Request { field: "spec.proxy.containerName", power: Power::EphemeralContainers }]
        );

        let image = requested(&spec(
            "{completion: {ephemeralImage: 'evil/debug:latest', methods: [EphemeralContainer]}}",
        ));
        assert_eq!(
            image,
            [Request { field: "spec.completion.ephemeralImage", power: Power::EphemeralContainers }]
        );
        // Fields whose methods are not used ask for nothing.
        assert_eq!(requested(&spec("{completion: {ephemeralImage: x, methods: [PortForward]}}")), []);
        assert_eq!(requested(&spec("{proxy: {execCommand: [x]}, completion: {methods: [Signal]}}")), []);
        assert_eq!(requested(&spec("{proxy: {execCommand: [x]}, completion: {enabled: false}}")), []);
        assert_eq!(Power::EphemeralContainers.describe(), "patch pods/ephemeralcontainers");
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
        assert_eq!((image.field, image.reason), ("spec.completion.ephemeralImage", "ephemeral_image"));
        assert!(image.message.contains("evil:1") && image.message.contains("--allowed-ephemeral-image"));

        let exec = refusal(&spec("{proxy: {execCommand: [x]}}"), &limits).unwrap();
        assert_eq!((exec.field, exec.reason), ("spec.proxy.execCommand", "exec_command"));
        assert!(exec.message.contains("--allow-custom-exec-command"));
        let allowed = Limits { allow_custom_exec_command: true, ..limits };
        assert_eq!(refusal(&spec("{proxy: {execCommand: [x]}}"), &allowed), None);
        for reason in [image.reason, exec.reason] {
            assert!(REFUSAL_REASONS.contains(&reason));
        }
    }
}
