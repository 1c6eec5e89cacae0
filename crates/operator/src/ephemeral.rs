//! The ephemeral containers of the `EphemeralContainer` and `Signal` methods. Pure: the caller
//! adds the container to the pod through the `pods/ephemeralcontainers` subresource.
//!
//! Both run `lameduck-proxy shutdown` from lameduck's proxy image (or the policy's
//! `completion.ephemeralImage`) with a security context that passes Pod Security "restricted",
//! so they are admitted in any namespace the Job itself could run in.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EphemeralContainer, Pod, SeccompProfile, SecurityContext,
};
use lameduck_api::{ResolvedProxy, ShutdownMethod, names::containers};

use crate::attempts::Attempt;

/// The ephemeral container for `attempt`, or `None` for methods that add none.
pub fn shutdown_container(
    attempt: &Attempt,
    pod: &Pod,
    proxy: &ResolvedProxy,
    image: &str,
) -> Option<EphemeralContainer> {
    let program = containers::LAMEDUCK_PROXY.to_owned();
    let (command, target, run_as) = match attempt.method {
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
            (None, None),
        ),
        // Targeting the proxy container shares its process namespace, where it is PID 1. Without
        // capabilities a signal needs the same user, so the container runs as the proxy does.
        ShutdownMethod::Signal => (
            vec![program, "shutdown".into(), "--signal".into(), "TERM".into(), "--pid".into(), "1".into()],
            Some(proxy.container_name.clone()),
            proxy_user(pod, &proxy.container_name),
        ),
        ShutdownMethod::Exec | ShutdownMethod::PortForward => return None,
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
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            run_as_non_root: Some(true),
            run_as_user: run_as.0,
            run_as_group: run_as.1,
            read_only_root_filesystem: Some(true),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
            ..SecurityContext::default()
        }),
        ..EphemeralContainer::default()
    })
}

/// The user and group the proxy runs as: its container's, else the pod's. Root is left out:
/// "restricted" forbids it, and a container without capabilities could not use it anyway.
fn proxy_user(pod: &Pod, proxy: &str) -> (Option<i64>, Option<i64>) {
    let spec = pod.spec.as_ref();
    let container = spec.and_then(|s| s.containers.iter().find(|c: &&Container| c.name == proxy));
    let own = container.and_then(|c| c.security_context.as_ref());
    let pods = spec.and_then(|s| s.security_context.as_ref());
    let user = own.and_then(|c| c.run_as_user).or_else(|| pods.and_then(|p| p.run_as_user));
    let group = own.and_then(|c| c.run_as_group).or_else(|| pods.and_then(|p| p.run_as_group));
    (user.filter(|u| *u != 0), group.filter(|g| *g != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lameduck_api::{ProxyProfile, ProxySpec};

    fn attempt(method: ShutdownMethod) -> Attempt {
        Attempt {
            number: 4,
            round: 2,
            method,
            started: "2026-11-21T08:00:00Z".parse().unwrap(),
            outcome: None,
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

    /// What Pod Security "restricted" requires of every container.
    fn assert_restricted(container: &EphemeralContainer) {
        let sc = container.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        assert_ne!(sc.run_as_user, Some(0));
    }

    #[test]
    fn ephemeral_container_posts_the_profile_path_over_loopback() {
        let c = shutdown_container(
            &attempt(ShutdownMethod::EphemeralContainer),
            &linkerd_pod(),
            &linkerd(),
            "img",
        )
        .unwrap();
        assert_eq!(c.name, "lameduck-shutdown-4");
        assert_eq!(
            c.command.as_deref().unwrap(),
            ["lameduck-proxy", "shutdown", "--admin-addr", "127.0.0.1:4191", "--path", "/shutdown"]
        );
        assert_eq!(c.target_container_name, None);
        assert_eq!(c.image.as_deref(), Some("img"));
        assert_restricted(&c);
    }

    #[test]
    fn signal_targets_the_proxy_and_runs_as_its_user() {
        let c =
            shutdown_container(&attempt(ShutdownMethod::Signal), &linkerd_pod(), &linkerd(), "img").unwrap();
        assert_eq!(c.target_container_name.as_deref(), Some("linkerd-proxy"));
        assert_eq!(c.command.as_deref().unwrap()[2..], ["--signal", "TERM", "--pid", "1"]);
        assert_eq!(c.security_context.as_ref().unwrap().run_as_user, Some(2102));
        assert_restricted(&c);
    }

    #[test]
    fn signal_falls_back_to_the_pod_user_and_never_root() {
        let mut pod = linkerd_pod();
        pod.spec.as_mut().unwrap().containers[1].security_context = None;
        let c = shutdown_container(&attempt(ShutdownMethod::Signal), &pod, &linkerd(), "img").unwrap();
        assert_eq!(c.security_context.as_ref().unwrap().run_as_user, Some(1000));

        pod.spec.as_mut().unwrap().security_context.as_mut().unwrap().run_as_user = Some(0);
        let c = shutdown_container(&attempt(ShutdownMethod::Signal), &pod, &linkerd(), "img").unwrap();
        assert_eq!(c.security_context.as_ref().unwrap().run_as_user, None);
        assert_restricted(&c);
    }

    #[test]
    fn exec_and_port_forward_add_no_container() {
        for method in [ShutdownMethod::Exec, ShutdownMethod::PortForward] {
            assert!(shutdown_container(&attempt(method), &linkerd_pod(), &linkerd(), "img").is_none());
        }
    }
}
