//! What a `ShutdownPolicy` can direct the operator to do beyond the built-in profiles, and the
//! operator's own limits on it. Pure. Which fields bear which power is `lameduck_api::powers`.
//!
//! The operator holds `pods/exec` and `pods/ephemeralcontainers` in every namespace it watches;
//! a policy must not lend them to an author who lacks them. Two guards, each enough alone:
//! - the validating webhook asks the API server whether the author holds each power the spec
//!   asks for ([`requested`]) and refuses the policy otherwise;
//! - the operator honours those fields only on a policy the webhook reviewed (its stamp,
//!   `crate::review`), and refuses to act on a policy that asks for what its flags do not allow
//!   ([`refusal`]), so a policy stored while the webhook was down or removed grants nothing.

use k8s_openapi::api::{
    authentication::v1::UserInfo,
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
pub use lameduck_api::powers::{Power, Request, requested};
use lameduck_api::{ShutdownMethod, ShutdownPolicySpec, Sidecar};

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
    /// The reason of the policy's `Ready=False` condition.
    pub condition: &'static str,
    pub message: String,
}

/// The reason of a `Ready` condition that is `False` because the operator's flags refuse what
/// the policy asks for.
pub const REFUSED: &str = "Refused";

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
            condition: REFUSED,
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
            condition: REFUSED,
        });
    }
    None
}

/// Every label `refusal` can give, so the gauge shows zeros too.
pub const REFUSAL_REASONS: [&str; 3] =
    ["ephemeral_image", "exec_command", crate::review::NOT_REVIEWED_REASON];

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ShutdownPolicySpec {
        serde_yaml_ng::from_str(yaml).unwrap()
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
        let forward = access_review(&user, "shop", Power::PortForward).spec.resource_attributes.unwrap();
        assert_eq!(
            (forward.verb.as_deref(), forward.subresource.as_deref()),
            (Some("create"), Some("portforward"))
        );
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
        let allowed = Limits { allow_custom_exec_command: true, ..limits.clone() };
        assert_eq!(refusal(&spec("{proxy: {execCommand: [x]}}"), &allowed), None);
        for reason in [image.reason, exec.reason] {
            assert!(REFUSAL_REASONS.contains(&reason));
        }
        let sidecars = spec(
            "{sidecars: [{profile: Custom, containerName: vault-agent, execCommand: [/bin/quit], methods: [Exec]}]}",
        );
        let refused = refusal(&sidecars, &limits).expect("a custom exec command is refused");
        assert_eq!(
            (refused.field.as_str(), refused.reason),
            ("spec.sidecars[0].execCommand", "exec_command")
        );
    }
}
