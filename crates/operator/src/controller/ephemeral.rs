//! The ephemeral containers of the `EphemeralContainer` and `Signal` methods. Pure: the caller
//! adds the container to the pod through the `pods/ephemeralcontainers` subresource.
//!
//! Both run `lameduck-proxy shutdown` from lameduck's proxy image (or the policy's
//! `completion.ephemeralImage`) with a security context that passes Pod Security "restricted",
//! so they are admitted in any namespace the Job itself could run in. The one exception is a
//! `Signal` container for a proxy whose user the pod does not tell: it runs as root with
//! `CAP_KILL` alone, and only where the namespace's Pod Security level (`baseline`) allows it.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EphemeralContainer, Pod, SeccompProfile, SecurityContext,
};
use lameduck_api::{ResolvedProxy, ShutdownMethod, names::containers};

use crate::controller::attempts::Attempt;

/// The label a namespace's Pod Security admission level is read from.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// A namespace's Pod Security admission level (`pod-security.kubernetes.io/enforce`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodSecurity {
    Privileged,
    Baseline,
    Restricted,
}

impl PodSecurity {
    /// The level a label value names. No label is the API server's default, `privileged`; a
    /// value it does not know is taken as the strictest.
    pub fn from_label(value: Option<&str>) -> Self {
        match value {
            None | Some("privileged") => Self::Privileged,
            Some("baseline") => Self::Baseline,
            Some(_) => Self::Restricted,
        }
    }
}

/// Who the `Signal` container runs as: a signal without capabilities needs the target's user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalAs {
    /// The proxy's own (non-root) user and group.
    User { uid: i64, gid: Option<i64> },
    /// Root with `CAP_KILL` alone, where the namespace's Pod Security level allows it
    /// (`baseline` does; `restricted` does not).
    RootWithKill,
}

/// The user the proxy runs as, where the pod tells: its container's `runAsUser`, the pod's, or
/// what the kubelet reports in the container's status (`user.linux.uid`, 1.33+).
pub fn proxy_user(pod: &Pod, proxy: &str) -> Option<(i64, Option<i64>)> {
    let spec = pod.spec.as_ref();
    let container = spec.and_then(|s| s.containers.iter().find(|c: &&Container| c.name == proxy));
    let own = container.and_then(|c| c.security_context.as_ref());
    let pods = spec.and_then(|s| s.security_context.as_ref());
    let declared = own.and_then(|c| c.run_as_user).or_else(|| pods.and_then(|p| p.run_as_user));
    let group = own.and_then(|c| c.run_as_group).or_else(|| pods.and_then(|p| p.run_as_group));
    if let Some(uid) = declared {
        return Some((uid, group));
    }
    let reported = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == proxy)?
        .user
        .as_ref()?
        .linux
        .as_ref()?;
    Some((reported.uid, group.or(Some(reported.gid))))
}

/// Who the `Signal` container runs as. `level` is the namespace's Pod Security level, needed
/// only when the proxy's user is root or unknown (`None`: not looked up yet). The error names
/// the field that would make the method work.
pub fn signal_as(pod: &Pod, proxy: &str, level: Option<PodSecurity>) -> Result<SignalAs, String> {
    let user = proxy_user(pod, proxy);
    if let Some((uid, gid)) = user
        && uid != 0
    {
        return Ok(SignalAs::User { uid, gid: gid.filter(|g| *g != 0) });
    }
    match level {
        Some(PodSecurity::Privileged | PodSecurity::Baseline) => Ok(SignalAs::RootWithKill),
        _ => Err(format!(
            "Signal needs the proxy's user, and the pod does not say it{}: set \
             spec.containers[name={proxy}].securityContext.runAsUser (or the pod's runAsUser); \
             the namespace's Pod Security level ({}) does not allow a root container with CAP_KILL",
            if user.is_some() { " (it runs as root)" } else { "" },
            match level {
                Some(_) => "restricted",
                None => "unknown, taken as restricted",
            }
        )),
    }
}

/// Whether `signal_as` would need the namespace's Pod Security level for this pod.
pub fn needs_pod_security(pod: &Pod, proxy: &str) -> bool {
    !matches!(proxy_user(pod, proxy), Some((uid, _)) if uid != 0)
}

/// The ephemeral container for `attempt`, or `None` for methods that add none (and for a
/// `Signal` without `signal`, who it runs as: see [`signal_as`]).
pub fn shutdown_container(
    attempt: &Attempt,
    proxy: &ResolvedProxy,
    image: &str,
    signal: Option<SignalAs>,
) -> Option<EphemeralContainer> {
    let program = containers::LAMEDUCK_PROXY.to_owned();
    let (command, target, identity) = match attempt.method {
        // The pod's network namespace is shared, so the proxy's admin port is on loopback.
        ShutdownMethod::EphemeralContainer => (
            vec![
                program,
                "shutdown".into(),
                "--admin-addr".into(),
                format!("127.0.0.1:{}", proxy.admin_port),
                "--path".into(),
                proxy.shutdown_path.clone(),
            ],
            None,
            None,
        ),
        // Targeting the proxy container shares its process namespace, where it is PID 1.
        ShutdownMethod::Signal => (
            vec![program, "shutdown".into(), "--signal".into(), "TERM".into(), "--pid".into(), "1".into()],
            Some(proxy.container_name.clone()),
            Some(signal?),
        ),
        ShutdownMethod::Exec | ShutdownMethod::PortForward => return None,
    };
    let (run_as_user, run_as_group, run_as_non_root, add) = match identity {
        None => (None, None, true, None),
        Some(SignalAs::User { uid, gid }) => (Some(uid), gid, true, None),
        Some(SignalAs::RootWithKill) => (Some(0), None, false, Some(vec!["KILL".to_owned()])),
    };
    Some(EphemeralContainer {
        name: attempt.ephemeral_container_name(),
        image: Some(image.to_owned()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(command),
        target_container_name: target,
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add }),
            run_as_non_root: Some(run_as_non_root),
            run_as_user,
            run_as_group,
            read_only_root_filesystem: Some(true),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
            ..SecurityContext::default()
        }),
        ..EphemeralContainer::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::attempts::Epoch;
    use lameduck_api::{ProxyProfile, ProxySpec};

    fn attempt(method: ShutdownMethod) -> Attempt {
        Attempt {
            number: 4,
            round: 2,
            method,
            container: None,
            started: "2026-11-21T08:00:00Z".parse().unwrap(),
            outcome: None,
            epoch: Epoch::default(),
        }
    }

    fn linkerd_pod() -> Pod {
        serde_yaml_ng::from_str(
            "spec:
  securityContext: {runAsUser: 1000}
  containers:
  - {name: main}
  - {name: linkerd-proxy, securityContext: {runAsUser: 2102}}",
        )
        .unwrap()
    }

    fn linkerd() -> ResolvedProxy {
        ProxySpec { profile: ProxyProfile::Linkerd, ..ProxySpec::default() }.resolve()
    }

    const AS_PROXY: SignalAs = SignalAs::User { uid: 2102, gid: None };

    /// What Pod Security "restricted" requires of every container.
    fn assert_restricted(container: &EphemeralContainer) {
        let sc = container.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert_eq!(sc.capabilities.as_ref().unwrap().add, None);
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        assert_ne!(sc.run_as_user, Some(0));
    }

    #[test]
    fn ephemeral_container_posts_the_profile_path_over_loopback() {
        let c = shutdown_container(&attempt(ShutdownMethod::EphemeralContainer), &linkerd(), "img", None)
            .unwrap();
        assert_eq!(c.name, "lameduck-shutdown-4");
        assert_eq!(
            c.command.as_deref().unwrap(),
            ["lameduck-proxy", "shutdown", "--admin-addr", "127.0.0.1:4191", "--path", "/shutdown"]
        );
        assert_eq!(c.target_container_name, None);
        assert_eq!(c.image.as_deref(), Some("img"));
        assert_eq!(c.security_context.as_ref().unwrap().run_as_user, None);
        assert_restricted(&c);
    }

    #[test]
    fn signal_targets_the_proxy_and_runs_as_its_user() {
        let who = signal_as(&linkerd_pod(), "linkerd-proxy", None).unwrap();
        assert_eq!(who, AS_PROXY);
        let c = shutdown_container(&attempt(ShutdownMethod::Signal), &linkerd(), "img", Some(who)).unwrap();
        assert_eq!(c.target_container_name.as_deref(), Some("linkerd-proxy"));
        assert_eq!(c.command.as_deref().unwrap()[2..], ["--signal", "TERM", "--pid", "1"]);
        assert!(shutdown_container(&attempt(ShutdownMethod::Signal), &linkerd(), "img", None).is_none());
        assert_eq!(c.security_context.as_ref().unwrap().run_as_user, Some(2102));
        assert_restricted(&c);
    }

    #[test]
    fn signal_falls_back_to_the_pod_user_then_to_the_user_the_kubelet_reports() {
        let mut pod = linkerd_pod();
        pod.spec.as_mut().unwrap().containers[1].security_context = None;
        assert_eq!(signal_as(&pod, "linkerd-proxy", None), Ok(SignalAs::User { uid: 1000, gid: None }));

        // The uid comes from the image: only the container status tells it.
        pod.spec.as_mut().unwrap().security_context = None;
        assert!(needs_pod_security(&pod, "linkerd-proxy"));
        pod.status = Some(
            serde_yaml_ng::from_str(
                "containerStatuses: [{name: linkerd-proxy, ready: true, restartCount: 0, image: x, imageID: x,
                  user: {linux: {uid: 2102, gid: 2102}}}]",
            )
            .unwrap(),
        );
        assert!(!needs_pod_security(&pod, "linkerd-proxy"));
        assert_eq!(signal_as(&pod, "linkerd-proxy", None), Ok(SignalAs::User { uid: 2102, gid: Some(2102) }));
    }

    #[test]
    fn an_unknown_user_gets_root_with_cap_kill_where_baseline_allows_and_a_named_field_where_not() {
        let mut pod = linkerd_pod();
        pod.spec.as_mut().unwrap().containers[1].security_context = None;
        pod.spec.as_mut().unwrap().security_context = None;
        for level in [None, Some(PodSecurity::Restricted)] {
            let err = signal_as(&pod, "linkerd-proxy", level).unwrap_err();
            assert!(err.contains("spec.containers[name=linkerd-proxy].securityContext.runAsUser"), "{err}");
        }
        let who = signal_as(&pod, "linkerd-proxy", Some(PodSecurity::Baseline)).unwrap();
        assert_eq!(who, SignalAs::RootWithKill);
        let c = shutdown_container(&attempt(ShutdownMethod::Signal), &linkerd(), "img", Some(who)).unwrap();
        let sc = c.security_context.unwrap();
        assert_eq!((sc.run_as_user, sc.run_as_non_root), (Some(0), Some(false)));
        let caps = sc.capabilities.unwrap();
        assert_eq!(
            (caps.drop.unwrap(), caps.add.unwrap()),
            (vec!["ALL".to_owned()], vec!["KILL".to_owned()])
        );
        assert_eq!(sc.allow_privilege_escalation, Some(false));

        // A proxy that runs as root is treated like an unknown one.
        pod.spec.as_mut().unwrap().containers[1].security_context =
            Some(SecurityContext { run_as_user: Some(0), ..SecurityContext::default() });
        assert!(
            signal_as(&pod, "linkerd-proxy", Some(PodSecurity::Restricted))
                .unwrap_err()
                .contains("runs as root")
        );
        assert_eq!(PodSecurity::from_label(None), PodSecurity::Privileged);
        assert_eq!(PodSecurity::from_label(Some("baseline")), PodSecurity::Baseline);
        assert_eq!(PodSecurity::from_label(Some("restricted")), PodSecurity::Restricted);
        assert_eq!(PodSecurity::from_label(Some("nonsense")), PodSecurity::Restricted);
    }

    #[test]
    fn exec_and_port_forward_add_no_container() {
        for method in [ShutdownMethod::Exec, ShutdownMethod::PortForward] {
            assert!(shutdown_container(&attempt(method), &linkerd(), "img", Some(AS_PROXY)).is_none());
        }
    }
}
