//! Applies a `ShutdownPolicy`'s drain settings to a pod's proxy container: the pure core of the
//! admission webhook and of `lameduck inject`. Idempotent: applying twice equals applying once.
//!
//! - `waitBeforeExit` becomes a preStop hook on the proxy that needs no shell: lameduck's
//!   `lameduck-proxy wait`, `/bin/sleep` in Linkerd's image, a `sleep` action otherwise.
//! - `shutdownGracePeriod` and `enableShutdownEndpoint` become the proxy's env vars, and for
//!   lameduck's proxy also pod annotations read live through a downward-API settings file.
//! - `nativeSidecar` moves a classic proxy to the init containers with `restartPolicy: Always`
//!   and a startup probe on `/ready`; its preStop wait no longer applies and is dropped.
//! - The timing rules then run on the result, and `enforce` decides: warn, raise
//!   `terminationGracePeriodSeconds` to fit, or reject with the numbers.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EnvVar, ExecAction, HTTPGetAction,
        Lifecycle, LifecycleHandler, ObjectFieldSelector, Pod, Probe, SleepAction, Volume, VolumeMount,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};

use crate::{
    Enforce, ProxyProfile, ShutdownPolicySpec,
    names::{annotations, containers, env, paths, settings_file},
    shape::{PodShape, is_native_sidecar},
    timing::{Severity, Timeline},
};

/// What applying the policy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Whether the pod changed.
    pub changed: bool,
    /// Admission warnings: timing problems under `enforce: Warn`, settings a profile cannot take.
    pub warnings: Vec<String>,
}

/// The pod breaks the timing rules and the policy says `enforce: Reject`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ShutdownPolicy {policy} (enforce: Reject): {problems}")]
pub struct Rejected {
    pub policy: String,
    pub problems: String,
}

fn set_env(container: &mut Container, name: &str, value: String) {
    let vars = container.env.get_or_insert_with(Vec::new);
    match vars.iter_mut().find(|v| v.name == name) {
        Some(var) => {
            var.value = Some(value);
            var.value_from = None;
        }
        None => vars.push(EnvVar { name: name.to_owned(), value: Some(value), value_from: None }),
    }
}

fn whole_seconds(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_secs() + u64::from(duration.subsec_nanos() > 0)).unwrap_or(i64::MAX)
}

/// The preStop hook that waits `seconds` in this profile's image, without a shell.
fn wait_hook(profile: ProxyProfile, seconds: i64) -> LifecycleHandler {
    let exec = |command: Vec<String>| LifecycleHandler {
        exec: Some(ExecAction { command: Some(command) }),
        ..LifecycleHandler::default()
    };
    match profile {
        ProxyProfile::Lameduck => exec(vec![
            containers::LAMEDUCK_PROXY.into(),
            "wait".into(),
            "--seconds".into(),
            seconds.to_string(),
        ]),
        // Linkerd's distroless image ships /bin/sleep and nothing else to wait with.
        ProxyProfile::Linkerd => exec(vec!["/bin/sleep".into(), seconds.to_string()]),
        ProxyProfile::Istio | ProxyProfile::CloudSqlProxy | ProxyProfile::Custom => {
            LifecycleHandler { sleep: Some(SleepAction { seconds }), ..LifecycleHandler::default() }
        }
    }
}

/// Applies `policy` (named `policy_name`) to `pod`, in place.
pub fn apply(pod: &mut Pod, policy_name: &str, policy: &ShutdownPolicySpec) -> Result<Applied, Rejected> {
    let before = pod.clone();
    let mut applied = Applied::default();
    let proxy = policy.mesh_proxy().resolve();
    let Some(spec) = pod.spec.as_mut() else { return Ok(applied) };

    // Find the proxy; move it to the init containers when the policy asks for a native sidecar.
    let classic = spec.containers.iter().position(|c| c.name == proxy.container_name);
    let native = spec
        .init_containers
        .iter()
        .flatten()
        .position(|c| c.name == proxy.container_name && is_native_sidecar(c));
    let container: &mut Container = match (classic, native) {
        (Some(index), None) if policy.drain.native_sidecar => {
            let mut moved = spec.containers.remove(index);
            moved.restart_policy = Some("Always".into());
            let inits = spec.init_containers.get_or_insert_with(Vec::new);
            inits.insert(0, moved);
            &mut inits[0]
        }
        (Some(index), None) => &mut spec.containers[index],
        (_, Some(index)) => &mut spec.init_containers.as_mut().expect("found in it")[index],
        (None, None) => return Ok(applied),
    };
    let is_native = is_native_sidecar(container);

    if is_native {
        // The kubelet stops a native sidecar after the app: a preStop wait only delays the end.
        if let Some(lifecycle) = container.lifecycle.as_mut() {
            lifecycle.pre_stop = None;
            if lifecycle.post_start.is_none() && lifecycle.stop_signal.is_none() {
                container.lifecycle = None;
            }
        }
        if container.startup_probe.is_none() && policy.drain.native_sidecar {
            container.startup_probe = Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some(paths::READY.into()),
                    port: IntOrString::Int(i32::from(proxy.admin_port)),
                    ..HTTPGetAction::default()
                }),
                period_seconds: Some(1),
                failure_threshold: Some(120),
                ..Probe::default()
            });
        }
    } else if let Some(wait) = policy.drain.wait_before_exit {
        let lifecycle = container.lifecycle.get_or_insert_with(Lifecycle::default);
        lifecycle.pre_stop = Some(wait_hook(proxy.profile, whole_seconds(wait.as_std())));
    }

    let grace = policy.drain.shutdown_grace_period.map(|g| g.to_string());
    let endpoint = policy.drain.enable_shutdown_endpoint.map(|e| e.to_string());
    let mut pod_annotations = BTreeMap::new();
    match proxy.profile {
        ProxyProfile::Lameduck => {
            if let Some(grace) = &grace {
                set_env(container, env::PROXY_SHUTDOWN_GRACE_PERIOD, grace.clone());
                pod_annotations.insert(annotations::SHUTDOWN_GRACE_PERIOD, grace.clone());
            }
            if let Some(endpoint) = &endpoint {
                set_env(container, env::PROXY_ENABLE_SHUTDOWN_ENDPOINT, endpoint.clone());
                pod_annotations.insert(annotations::ENABLE_SHUTDOWN_ENDPOINT, endpoint.clone());
            }
            if let Some(wait) = policy.drain.wait_before_exit {
                pod_annotations.insert(annotations::WAIT_BEFORE_EXIT, wait.to_string());
            }
            if !pod_annotations.is_empty() {
                // The kubelet keeps this file in step with the annotations: a policy change
                // reaches the running proxy without a restart.
                set_env(container, env::PROXY_SETTINGS_FILE, settings_file::PATH.into());
                let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
                if !mounts.iter().any(|m| m.name == settings_file::VOLUME) {
                    mounts.push(VolumeMount {
                        name: settings_file::VOLUME.into(),
                        mount_path: settings_file::DIR.into(),
                        read_only: Some(true),
                        ..VolumeMount::default()
                    });
                }
                let volumes = spec.volumes.get_or_insert_with(Vec::new);
                if !volumes.iter().any(|v| v.name == settings_file::VOLUME) {
                    volumes.push(Volume {
                        name: settings_file::VOLUME.into(),
                        downward_api: Some(DownwardAPIVolumeSource {
                            items: Some(vec![DownwardAPIVolumeFile {
                                path: settings_file::FILE.into(),
                                field_ref: Some(ObjectFieldSelector {
                                    field_path: "metadata.annotations".into(),
                                    api_version: None,
                                }),
                                ..DownwardAPIVolumeFile::default()
                            }]),
                            ..DownwardAPIVolumeSource::default()
                        }),
                        ..Volume::default()
                    });
                }
            }
        }
        ProxyProfile::Linkerd => {
            if let Some(grace) = &grace {
                set_env(container, env::LINKERD_SHUTDOWN_GRACE_PERIOD, grace.clone());
            }
            if let Some(endpoint) = &endpoint {
                set_env(container, env::LINKERD_SHUTDOWN_ENDPOINT_ENABLED, endpoint.clone());
            }
        }
        ProxyProfile::Istio | ProxyProfile::CloudSqlProxy | ProxyProfile::Custom => {
            if grace.is_some() || endpoint.is_some() {
                applied.warnings.push(format!(
                    "ShutdownPolicy {policy_name}: drain.shutdownGracePeriod and drain.enableShutdownEndpoint \
                     are not applied to a {:?} proxy (no known setting for them)",
                    proxy.profile
                ));
            }
        }
    }
    let meta = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    meta.insert(annotations::POLICY.into(), policy_name.into());
    for (key, value) in pod_annotations {
        meta.insert(key.into(), value);
    }

    enforce(pod, policy_name, policy, &mut applied)?;
    applied.changed = *pod != before;
    Ok(applied)
}

/// Runs the timing rules on the mutated pod and applies `drain.enforce`.
fn enforce(
    pod: &mut Pod,
    policy_name: &str,
    policy: &ShutdownPolicySpec,
    applied: &mut Applied,
) -> Result<(), Rejected> {
    let shape = PodShape::of_pod(pod).expect("checked by apply");
    let timeline = Timeline::of(&shape, Some(policy));
    let errors: Vec<String> = timeline
        .findings()
        .into_iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{}: {}", f.rule.as_str(), f.message))
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    match policy.drain.enforce {
        Enforce::Warn => {
            applied.warnings.extend(errors.into_iter().map(|e| format!("ShutdownPolicy {policy_name}: {e}")))
        }
        Enforce::Reject => {
            return Err(Rejected { policy: policy_name.to_owned(), problems: errors.join("; ") });
        }
        Enforce::Fix => {
            // Room for the proxy's wait, then its drain: the longest the shutdown can take.
            let proxy = timeline.proxy.as_ref();
            let wait = proxy.and_then(|p| p.wait_before_exit.known()).unwrap_or_default();
            let drain = proxy.and_then(|p| p.shutdown_grace_period).unwrap_or_default();
            let longest_app =
                timeline.apps.iter().filter_map(|a| a.pre_stop.known()).max().unwrap_or_default();
            let needed = whole_seconds(wait.max(longest_app) + drain) + 1;
            let spec = pod.spec.as_mut().expect("checked by apply");
            if spec
                .termination_grace_period_seconds
                .unwrap_or(crate::names::defaults::TERMINATION_GRACE_PERIOD_SECONDS)
                < needed
            {
                spec.termination_grace_period_seconds = Some(needed);
            }
            // What raising the grace period cannot fix (an app preStop longer than the proxy's
            // wait) is still worth a warning.
            let shape = PodShape::of_pod(pod).expect("checked by apply");
            for finding in Timeline::of(&shape, Some(policy)).findings() {
                if finding.severity == Severity::Error {
                    applied.warnings.push(format!(
                        "ShutdownPolicy {policy_name}: {}: {} (enforce: Fix cannot fix this)",
                        finding.rule.as_str(),
                        finding.message
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
