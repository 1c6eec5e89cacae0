//! Which fields of a `ShutdownPolicy` direct a power over other workloads' pods, and which power.
//! Pure, and the one answer: the validating webhook asks the API server whether a policy's author
//! holds each power [`requested`] lists, and the operator honours those same fields only on a
//! policy the webhook reviewed (its stamp covers [`review_message`], built from the same list).
//!
//! The operator holds `pods/exec`, `pods/portforward` and `pods/ephemeralcontainers` wherever it
//! watches. A policy that keeps each sidecar to its profile's container, port, path and command,
//! and to the operator's image, asks for nothing: the operator's calls then reach only those
//! containers, in the ways the profiles define. Every field that departs from its profile is in
//! [`SIDECAR_FIELDS`] (or is `completion.ephemeralImage`), with the power each method then lends.

use crate::{ShutdownMethod, ShutdownPolicySpec, Sidecar};

/// A power over other workloads' pods that a policy can ask the operator to use for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Power {
    /// Running a command in a container (`create pods/exec`).
    Exec,
    /// Reaching a port of the pod from its own loopback (`create pods/portforward`).
    PortForward,
    /// Adding an ephemeral container (`patch pods/ephemeralcontainers`).
    EphemeralContainers,
}

impl Power {
    /// The verb and subresource of `pods` an author needs, as a SubjectAccessReview asks.
    pub const fn verb_and_subresource(self) -> (&'static str, &'static str) {
        match self {
            Self::Exec => ("create", "exec"),
            Self::PortForward => ("create", "portforward"),
            Self::EphemeralContainers => ("patch", "ephemeralcontainers"),
        }
    }

    /// As `kubectl auth can-i` would name it.
    pub fn describe(self) -> String {
        let (verb, subresource) = self.verb_and_subresource();
        format!("{verb} pods/{subresource}")
    }
}

/// One power a spec asks for: the field that asks, and the value it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `spec.proxy.containerName`, `spec.sidecars[1].adminPort`, ...
    pub field: String,
    pub power: Power,
    /// What the field holds, as the operator will use it (for the review stamp and messages).
    pub value: String,
}

/// A field of a sidecar (`spec.proxy` or `spec.sidecars[i]`) that bears a power when it departs
/// from its profile.
#[derive(Clone, Copy, Debug)]
pub struct PowerField {
    /// Its name under the sidecar's path.
    pub name: &'static str,
    /// The value it holds when it departs from the profile's; `None` when it does not.
    pub departs: fn(&Sidecar) -> Option<String>,
    /// The power each method then lends its author.
    pub needs: fn(ShutdownMethod) -> Option<Power>,
}

/// Methods that reach the proxy's admin port: the profile's exec command POSTs to it from inside
/// the container, port-forward and the loopback container from the pod's loopback.
fn reaches_admin_port(method: ShutdownMethod) -> Option<Power> {
    match method {
        ShutdownMethod::Exec | ShutdownMethod::PortForward | ShutdownMethod::EphemeralContainer => {
            Some(Power::PortForward)
        }
        ShutdownMethod::Signal => None,
    }
}

/// What each method does to a container the policy names.
fn acts_on_container(method: ShutdownMethod) -> Option<Power> {
    Some(match method {
        ShutdownMethod::Exec => Power::Exec,
        ShutdownMethod::PortForward => Power::PortForward,
        ShutdownMethod::EphemeralContainer | ShutdownMethod::Signal => Power::EphemeralContainers,
    })
}

/// The power-bearing fields of a sidecar. `Custom` has no container, port or path of its own:
/// naming one asks for the powers its methods use.
pub const SIDECAR_FIELDS: [PowerField; 4] = [
    PowerField {
        name: "containerName",
        departs: |s| {
            let proxy = &s.proxy;
            (proxy.profile.container_name() != Some(proxy.container_name.as_str()))
                .then(|| proxy.container_name.clone())
        },
        needs: acts_on_container,
    },
    PowerField {
        name: "adminPort",
        departs: |s| {
            let proxy = &s.proxy;
            (proxy.admin_port != proxy.profile.admin_port()).then(|| proxy.admin_port.to_string())
        },
        needs: reaches_admin_port,
    },
    PowerField {
        name: "shutdownPath",
        departs: |s| {
            let proxy = &s.proxy;
            (proxy.shutdown_path != proxy.profile.shutdown_path()).then(|| proxy.shutdown_path.clone())
        },
        needs: reaches_admin_port,
    },
    PowerField {
        name: "execCommand",
        departs: |s| {
            let proxy = &s.proxy;
            let custom = proxy.exec_command.is_some()
                && proxy.exec_command != proxy.profile.exec_command(proxy.admin_port);
            custom.then(|| proxy.exec_command.clone().unwrap_or_default().join("\u{0}"))
        },
        needs: |method| (method == ShutdownMethod::Exec).then_some(Power::Exec),
    },
];

/// The field of the spec, beside the sidecars', that bears a power.
pub const EPHEMERAL_IMAGE_FIELD: &str = "spec.completion.ephemeralImage";

/// The powers `spec` asks for beyond what every policy gets, each with its field and value, in
/// a stable order (sidecars in order, then fields in [`SIDECAR_FIELDS`] order, then the image).
pub fn requested(spec: &ShutdownPolicySpec) -> Vec<Request> {
    let mut requests: Vec<Request> = Vec::new();
    if !spec.completion.enabled {
        return requests;
    }
    let sidecars = spec.sidecars();
    for sidecar in &sidecars {
        for field in &SIDECAR_FIELDS {
            let Some(value) = (field.departs)(sidecar) else { continue };
            for power in sidecar.methods.iter().filter_map(|m| (field.needs)(*m)) {
                let request = Request {
                    field: format!("{}.{}", sidecar.field, field.name),
                    power,
                    value: value.clone(),
                };
                if !requests.contains(&request) {
                    requests.push(request);
                }
            }
        }
    }
    if let Some(image) = &spec.completion.ephemeral_image
        && sidecars.iter().any(|s| s.methods.iter().any(|m| m.adds_container()))
    {
        requests.push(Request {
            field: EPHEMERAL_IMAGE_FIELD.to_owned(),
            power: Power::EphemeralContainers,
            value: image.clone(),
        });
    }
    requests
}

/// What a review stamp covers: the policy's namespace and name (a stamp cannot be moved to
/// another policy) and every power-bearing field with its value and power. Fields that bear no
/// power are left out, so that editing them (a selector, drain settings) needs no new review.
pub fn review_message(namespace: &str, name: &str, spec: &ShutdownPolicySpec) -> Vec<u8> {
    // NUL cannot occur in a namespace, a name or a field path; values are length-prefixed.
    let mut message = format!("lameduck.io/policy-review/v1\0{namespace}\0{name}\0").into_bytes();
    for request in requested(spec) {
        let (verb, subresource) = request.power.verb_and_subresource();
        message.extend_from_slice(
            format!("{}\0{verb} {subresource}\0{}:{}\0", request.field, request.value.len(), request.value)
                .as_bytes(),
        );
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ShutdownPolicySpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn asked(yaml: &str) -> Vec<(String, Power)> {
        requested(&spec(yaml)).into_iter().map(|r| (r.field, r.power)).collect()
    }

    #[test]
    fn a_policy_that_keeps_to_its_profile_asks_for_nothing() {
        assert_eq!(asked("{}"), []);
        assert_eq!(asked("{proxy: {profile: Lameduck, containerName: lameduck-proxy, adminPort: 4191}}"), []);
        assert_eq!(asked("{proxy: {profile: Istio, shutdownPath: /quitquitquit, adminPort: 15020}}"), []);
    }

    #[test]
    fn a_custom_port_or_path_needs_port_forward_for_the_methods_that_reach_it() {
        assert_eq!(
            asked("{proxy: {profile: Lameduck, adminPort: 9000}}"),
            [("spec.proxy.adminPort".to_owned(), Power::PortForward)]
        );
        assert_eq!(
            asked(
                "{proxy: {shutdownPath: /admin/delete-everything}, completion: {methods: [PortForward, Signal]}}"
            ),
            [("spec.proxy.shutdownPath".to_owned(), Power::PortForward)]
        );
        // A signal reaches no port.
        assert_eq!(asked("{proxy: {adminPort: 9000}, completion: {methods: [Signal]}}"), []);
        assert_eq!(asked("{proxy: {adminPort: 9000}, completion: {enabled: false}}"), []);
    }

    #[test]
    fn custom_commands_containers_and_images_ask_for_the_powers_they_use() {
        assert_eq!(
            asked("{proxy: {execCommand: [/bin/sh, -c, 'cat /etc/shadow']}}"),
            [("spec.proxy.execCommand".to_owned(), Power::Exec)]
        );
        assert_eq!(
            asked("{proxy: {profile: Custom, containerName: app}}"),
            [
                ("spec.proxy.containerName".to_owned(), Power::Exec),
                ("spec.proxy.containerName".to_owned(), Power::PortForward),
                ("spec.proxy.containerName".to_owned(), Power::EphemeralContainers),
            ]
        );
        assert_eq!(
            asked("{proxy: {containerName: app}, completion: {methods: [Signal]}}"),
            [("spec.proxy.containerName".to_owned(), Power::EphemeralContainers)]
        );
        assert_eq!(
            asked("{completion: {ephemeralImage: 'evil/debug:latest', methods: [EphemeralContainer]}}"),
            [(EPHEMERAL_IMAGE_FIELD.to_owned(), Power::EphemeralContainers)]
        );
        assert_eq!(asked("{completion: {ephemeralImage: x, methods: [PortForward]}}"), []);
        assert_eq!(asked("{proxy: {execCommand: [x]}, completion: {methods: [Signal]}}"), []);
        assert_eq!(Power::PortForward.describe(), "create pods/portforward");
    }

    #[test]
    fn each_sidecar_asks_for_what_its_own_methods_use_on_it() {
        let policy = "{completion: {methods: [PortForward]}, sidecars: [
               {profile: Custom, containerName: log-agent, methods: [Signal]},
               {profile: CloudSqlProxy},
               {profile: Custom, containerName: vault-agent, execCommand: [/bin/quit], methods: [Exec]},
               {profile: Lameduck, methods: [Exec, EphemeralContainer]}]}";
        assert_eq!(
            asked(policy),
            [
                ("spec.sidecars[0].containerName".to_owned(), Power::EphemeralContainers),
                ("spec.sidecars[2].containerName".to_owned(), Power::Exec),
                ("spec.sidecars[2].execCommand".to_owned(), Power::Exec),
            ]
        );
        // With `sidecars`, `proxy` does not take part in completion.
        assert_eq!(asked("{proxy: {execCommand: [x]}, sidecars: [{profile: Lameduck}]}"), []);
    }

    #[test]
    fn the_review_message_covers_the_policy_and_its_power_bearing_values_only() {
        let a = spec("{proxy: {profile: Custom, containerName: app}, selector: {matchLabels: {a: b}}}");
        let base = review_message("shop", "p", &a);
        assert_ne!(base, review_message("shop", "q", &a), "another policy");
        assert_ne!(base, review_message("other", "p", &a), "another namespace");
        let renamed = spec("{proxy: {profile: Custom, containerName: worker}}");
        assert_ne!(base, review_message("shop", "p", &renamed), "another container");
        let reselected =
            spec("{proxy: {profile: Custom, containerName: app}, selector: {matchLabels: {c: d}}}");
        assert_eq!(base, review_message("shop", "p", &reselected), "a selector bears no power");
        let port = spec("{proxy: {profile: Custom, containerName: app, adminPort: 9000}}");
        assert_ne!(base, review_message("shop", "p", &port), "another port");
    }
}
