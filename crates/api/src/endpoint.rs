//! Whether a pod's proxy serves its shutdown endpoint, read from the pod as it was admitted.
//!
//! Linkerd's proxy answers `/shutdown` with 404 unless `LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED`
//! is true (the default since 2.16), and lameduck's unless `--enable-shutdown-endpoint` is set.
//! Every method that goes through the endpoint (the profile's exec command, port-forward, the
//! ephemeral container) then fails, and Linkerd's exec command even reports success
//! (`linkerd-await` ignores the answer to its POST and exits with its child's code). So the
//! operator asks this module first, and skips those methods when the answer is no.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar};

use crate::{
    ProxyProfile, ResolvedProxy, ShutdownMethod,
    names::{annotations, env},
};

/// lameduck-proxy's flag that turns its shutdown endpoint on.
pub const ENABLE_SHUTDOWN_FLAG: &str = "--enable-shutdown-endpoint";
/// cloud-sql-proxy's flag that turns `/quitquitquit` on.
pub const QUITQUITQUIT_FLAG: &str = "--quitquitquit";
/// lameduck-proxy's flag that names its live settings file.
const SETTINGS_FILE_FLAG: &str = "--settings-file";

/// Everything [`shutdown_endpoint`] reads of a pod, so that a cache that keeps less of a pod
/// (the operator's) keeps exactly this: the pod's annotations, ...
pub const ANNOTATIONS_READ: [&str; 2] =
    [annotations::ENABLE_SHUTDOWN_ENDPOINT, annotations::LINKERD_ADMIN_SHUTDOWN];
/// ... the container's env vars ...
pub const ENV_READ: [&str; 4] = [
    env::LINKERD_SHUTDOWN_ENDPOINT_ENABLED,
    env::PROXY_ENABLE_SHUTDOWN_ENDPOINT,
    env::PROXY_SETTINGS_FILE,
    env::CLOUD_SQL_PROXY_QUITQUITQUIT,
];
/// ... and the flags on its command line (`FLAG`, `FLAG=VALUE` or `FLAG VALUE`).
pub const FLAGS_READ: [&str; 3] = [ENABLE_SHUTDOWN_FLAG, SETTINGS_FILE_FLAG, QUITQUITQUIT_FLAG];

/// What the pod says about its proxy's shutdown endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// The endpoint is on.
    Enabled,
    /// The endpoint is off; the text says which setting makes it so, for events.
    Disabled(String),
    /// The pod does not say (a value from a Secret, a custom proxy): methods are tried.
    Unknown,
}

impl Endpoint {
    /// Whether `method` can be skipped because it needs the endpoint and the endpoint is off.
    pub fn rules_out(&self, method: ShutdownMethod, proxy: &ResolvedProxy) -> bool {
        matches!(self, Self::Disabled(_)) && needs_endpoint(method, proxy)
    }
}

/// Whether `method` reaches the proxy through its shutdown endpoint. A custom exec command may
/// do anything, so only the profiles' own commands count.
pub fn needs_endpoint(method: ShutdownMethod, proxy: &ResolvedProxy) -> bool {
    match method {
        ShutdownMethod::PortForward | ShutdownMethod::EphemeralContainer => true,
        ShutdownMethod::Exec => {
            proxy.exec_command.is_some() && proxy.exec_command == proxy.profile.exec_command(proxy.admin_port)
        }
        ShutdownMethod::Signal => false,
    }
}

/// The literal value of `name` in the container's env: `Some(None)` when it is set from
/// elsewhere (a ConfigMap, a Secret), which the pod cannot tell.
fn env_value<'a>(container: &'a Container, name: &str) -> Option<Option<&'a str>> {
    container
        .env
        .iter()
        .flatten()
        .rev() // the last definition wins, as in the kubelet
        .find(|e: &&EnvVar| e.name == name)
        .map(|e| if e.value_from.is_some() { None } else { Some(e.value.as_deref().unwrap_or("")) })
}

/// The same truth values lameduck-proxy accepts.
fn truth(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// `FLAG[=BOOL]` (or `FLAG BOOL`) on the command line: `--enable-shutdown-endpoint`, say.
fn flag_value(container: &Container, flag: &str) -> Option<Option<bool>> {
    let argv: Vec<&str> = crate::shape::argv(container).collect();
    let mut found = None;
    for (i, arg) in argv.iter().enumerate() {
        if let Some(value) = arg.strip_prefix(flag).and_then(|rest| rest.strip_prefix('=')) {
            found = Some(truth(value));
        } else if *arg == flag {
            found = Some(match argv.get(i + 1).map(|next| truth(next)) {
                Some(Some(value)) => Some(value),
                // A bare flag means true; the next argument is another flag.
                _ => Some(true),
            });
        }
    }
    found
}

fn has_settings_file(container: &Container) -> bool {
    env_value(container, env::PROXY_SETTINGS_FILE).is_some()
        || container
            .args
            .iter()
            .flatten()
            .chain(container.command.iter().flatten())
            .any(|a| a.starts_with(SETTINGS_FILE_FLAG))
}

/// What `container`, the pod's proxy, says about its shutdown endpoint. `annotations` are the
/// pod's: lameduck's proxy reads them live through its settings file.
pub fn shutdown_endpoint(
    container: &Container,
    annotations: &BTreeMap<String, String>,
    proxy: &ResolvedProxy,
) -> Endpoint {
    match proxy.profile {
        ProxyProfile::Linkerd => match env_value(container, env::LINKERD_SHUTDOWN_ENDPOINT_ENABLED) {
            Some(None) => Endpoint::Unknown,
            Some(Some(text)) => match truth(text) {
                Some(true) => Endpoint::Enabled,
                Some(false) => Endpoint::Disabled(format!(
                    "{}={text:?} on container {}",
                    env::LINKERD_SHUTDOWN_ENDPOINT_ENABLED,
                    container.name
                )),
                None => Endpoint::Unknown,
            },
            // Linkerd's injector turns the annotation into the env var; a pod with the
            // annotation but not the variable was injected by something else.
            None => match annotations.get(annotations::LINKERD_ADMIN_SHUTDOWN).map(String::as_str) {
                Some("enabled") => Endpoint::Enabled,
                _ => Endpoint::Disabled(format!(
                    "container {} does not set {}=true (Linkerd's default since 2.16 is off; \
                     annotation {}: enabled turns it on)",
                    container.name,
                    env::LINKERD_SHUTDOWN_ENDPOINT_ENABLED,
                    annotations::LINKERD_ADMIN_SHUTDOWN
                )),
            },
        },
        ProxyProfile::Lameduck => {
            // The settings file overrides the flag and the env, as the proxy reads them.
            if has_settings_file(container)
                && let Some(text) = annotations.get(annotations::ENABLE_SHUTDOWN_ENDPOINT)
            {
                return match truth(text) {
                    Some(true) => Endpoint::Enabled,
                    Some(false) => Endpoint::Disabled(format!(
                        "pod annotation {}={text:?}",
                        annotations::ENABLE_SHUTDOWN_ENDPOINT
                    )),
                    None => Endpoint::Unknown,
                };
            }
            let setting = match flag_value(container, ENABLE_SHUTDOWN_FLAG) {
                Some(value) => Some(value),
                None => match env_value(container, env::PROXY_ENABLE_SHUTDOWN_ENDPOINT) {
                    Some(Some(text)) => Some(truth(text)),
                    Some(None) => Some(None),
                    None => Some(Some(false)),
                },
            };
            match setting {
                Some(Some(true)) => Endpoint::Enabled,
                Some(Some(false)) => Endpoint::Disabled(format!(
                    "container {} has neither --enable-shutdown-endpoint nor {}=true",
                    container.name,
                    env::PROXY_ENABLE_SHUTDOWN_ENDPOINT
                )),
                _ => Endpoint::Unknown,
            }
        }
        // pilot-agent always serves /quitquitquit.
        ProxyProfile::Istio => Endpoint::Enabled,
        // cloud-sql-proxy serves /quitquitquit only when told to.
        ProxyProfile::CloudSqlProxy => {
            let setting = match flag_value(container, QUITQUITQUIT_FLAG) {
                Some(value) => value,
                None => match env_value(container, env::CLOUD_SQL_PROXY_QUITQUITQUIT) {
                    Some(Some(text)) => truth(text),
                    Some(None) => None,
                    None => Some(false),
                },
            };
            match setting {
                Some(true) => Endpoint::Enabled,
                Some(false) => Endpoint::Disabled(format!(
                    "container {} has neither {QUITQUITQUIT_FLAG} nor {}=true",
                    container.name,
                    env::CLOUD_SQL_PROXY_QUITQUITQUIT
                )),
                None => Endpoint::Unknown,
            }
        }
        ProxyProfile::Custom => Endpoint::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProxySpec;

    fn container(yaml: &str) -> Container {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn resolved(profile: ProxyProfile) -> ResolvedProxy {
        ProxySpec { profile, ..ProxySpec::default() }.resolve()
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn linkerd_is_off_unless_its_env_or_annotation_turns_it_on() {
        let linkerd = resolved(ProxyProfile::Linkerd);
        let none = annotations(&[]);
        let plain = container("{name: linkerd-proxy, env: [{name: LINKERD2_PROXY_LOG, value: warn}]}");
        assert!(
            matches!(shutdown_endpoint(&plain, &none, &linkerd), Endpoint::Disabled(why) if why.contains("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED"))
        );
        let on = container(
            "{name: linkerd-proxy, env: [{name: LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED, value: 'true'}]}",
        );
        assert_eq!(shutdown_endpoint(&on, &none, &linkerd), Endpoint::Enabled);
        let off = container(
            "{name: linkerd-proxy, env: [{name: LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED, value: 'false'}]}",
        );
        assert!(matches!(shutdown_endpoint(&off, &none, &linkerd), Endpoint::Disabled(_)));
        let secret = container(
            "{name: linkerd-proxy, env: [{name: LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED, valueFrom: {configMapKeyRef: {name: c, key: k}}}]}",
        );
        assert_eq!(shutdown_endpoint(&secret, &none, &linkerd), Endpoint::Unknown);
        let annotated = annotations(&[(annotations::LINKERD_ADMIN_SHUTDOWN, "enabled")]);
        assert_eq!(shutdown_endpoint(&plain, &annotated, &linkerd), Endpoint::Enabled);
    }

    #[test]
    fn lameduck_reads_its_flag_env_and_settings_file() {
        let lameduck = resolved(ProxyProfile::Lameduck);
        let none = annotations(&[]);
        let bare = container("{name: lameduck-proxy}");
        assert!(matches!(shutdown_endpoint(&bare, &none, &lameduck), Endpoint::Disabled(_)));
        for args in [
            "[--enable-shutdown-endpoint]",
            "['--enable-shutdown-endpoint=true']",
            "[--enable-shutdown-endpoint, --admin-addr, '0.0.0.0:4191']",
        ] {
            let c = container(&format!("{{name: lameduck-proxy, args: {args}}}"));
            assert_eq!(shutdown_endpoint(&c, &none, &lameduck), Endpoint::Enabled, "{args}");
        }
        let flag_off = container("{name: lameduck-proxy, args: ['--enable-shutdown-endpoint=false']}");
        assert!(matches!(shutdown_endpoint(&flag_off, &none, &lameduck), Endpoint::Disabled(_)));
        let env_on = container(
            "{name: lameduck-proxy, env: [{name: LAMEDUCK_PROXY_ENABLE_SHUTDOWN_ENDPOINT, value: 'true'}]}",
        );
        assert_eq!(shutdown_endpoint(&env_on, &none, &lameduck), Endpoint::Enabled);
        // The settings file (the pod's annotations) overrides the env, as in the proxy.
        let with_file = container(
            "{name: lameduck-proxy, env: [{name: LAMEDUCK_PROXY_ENABLE_SHUTDOWN_ENDPOINT, value: 'true'}, {name: LAMEDUCK_PROXY_SETTINGS_FILE, value: /var/run/lameduck/annotations}]}",
        );
        let off = annotations(&[(annotations::ENABLE_SHUTDOWN_ENDPOINT, "false")]);
        assert!(
            matches!(shutdown_endpoint(&with_file, &off, &lameduck), Endpoint::Disabled(why) if why.contains("lameduck.io/enable-shutdown-endpoint"))
        );
        assert_eq!(shutdown_endpoint(&with_file, &none, &lameduck), Endpoint::Enabled);
        // Without a settings file the annotation is not read by the proxy.
        let on = annotations(&[(annotations::ENABLE_SHUTDOWN_ENDPOINT, "true")]);
        assert!(matches!(shutdown_endpoint(&bare, &on, &lameduck), Endpoint::Disabled(_)));
    }

    #[test]
    fn istio_is_always_on_and_custom_is_unknown() {
        let none = annotations(&[]);
        let c = container("{name: istio-proxy}");
        assert_eq!(shutdown_endpoint(&c, &none, &resolved(ProxyProfile::Istio)), Endpoint::Enabled);
        let custom = ProxySpec {
            profile: ProxyProfile::Custom,
            container_name: Some("envoy".into()),
            ..ProxySpec::default()
        }
        .resolve();
        assert_eq!(shutdown_endpoint(&c, &none, &custom), Endpoint::Unknown);
    }

    #[test]
    fn only_methods_through_the_endpoint_are_ruled_out() {
        let linkerd = resolved(ProxyProfile::Linkerd);
        let off = Endpoint::Disabled("off".into());
        assert!(off.rules_out(ShutdownMethod::Exec, &linkerd));
        assert!(off.rules_out(ShutdownMethod::PortForward, &linkerd));
        assert!(off.rules_out(ShutdownMethod::EphemeralContainer, &linkerd));
        assert!(!off.rules_out(ShutdownMethod::Signal, &linkerd));
        assert!(!Endpoint::Unknown.rules_out(ShutdownMethod::PortForward, &linkerd));
        // A custom exec command is the author's own way; it is not ruled out.
        let custom_exec =
            ProxySpec { exec_command: Some(vec!["/bin/kill-proxy".into()]), ..ProxySpec::default() }
                .resolve();
        assert!(!off.rules_out(ShutdownMethod::Exec, &custom_exec));
    }
}
