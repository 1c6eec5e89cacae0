//! The one answer to questions about a pod's shape: where a named sidecar is and whether it is
//! native, which containers are the pod's main work, whether the pod runs to completion, and
//! whether a container that exited will be restarted. The timing rules, the webhook, the
//! operator and the CLI all ask here, so they cannot disagree.
//!
//! A *native* sidecar is an init container with `restartPolicy: Always`: the kubelet stops it
//! after the main containers, so nothing has to. Any other init container runs before the pod's
//! containers and is never a sidecar. A *classic* sidecar is a regular container, which nothing
//! but a call or a signal ends.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Container, ContainerStateTerminated, ContainerStatus, Pod, PodSpec},
    jiff::Timestamp,
};
use serde::Serialize;

use crate::{
    names::{annotations, containers},
    policy::ProxyProfile,
};

/// What a container runs: its `command`, then its `args`, as the kubelet joins them when both are
/// set. (An image's own entrypoint is not in the pod spec, so it is not here.)
pub fn argv(container: &Container) -> impl Iterator<Item = &str> {
    container.command.iter().flatten().chain(container.args.iter().flatten()).map(String::as_str)
}

/// How a sidecar runs in the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Placement {
    /// A regular container: it gets SIGTERM with the app and never exits by itself.
    Classic,
    /// An init container with `restartPolicy: Always`: stopped after the app containers.
    NativeSidecar,
}

/// A container found in a pod, and how it runs there.
#[derive(Clone, Copy, Debug)]
pub struct Placed<'a> {
    pub container: &'a Container,
    pub placement: Placement,
}

/// Sidecars recognised by their container name alone, and the profile that stops each. The
/// mesh proxies come first: a pod's proxy is the first of these it has.
pub const KNOWN_SIDECARS: [(&str, ProxyProfile); 4] = [
    (containers::LAMEDUCK_PROXY, ProxyProfile::Lameduck),
    (containers::LINKERD_PROXY, ProxyProfile::Linkerd),
    (containers::ISTIO_PROXY, ProxyProfile::Istio),
    (containers::CLOUD_SQL_PROXY, ProxyProfile::CloudSqlProxy),
];

/// A mesh whose injector lameduck recognises without a policy (`--default-profile auto`): the
/// annotation its injector leaves on every pod it injects, and the profile of the proxy it adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injector {
    /// The annotation every injected pod carries.
    pub mark: &'static str,
    /// The proxy it injects (its container name is the profile's).
    pub profile: ProxyProfile,
}

/// The injectors lameduck recognises. [`PodShape::injected_mesh`] and the operator's pod cache
/// (which must keep each `mark`) both read this table.
pub const INJECTORS: [Injector; 2] = [
    // Linkerd's proxy-injector: `linkerd.io/proxy-version` on every pod it injects.
    Injector { mark: annotations::LINKERD_PROXY_VERSION, profile: ProxyProfile::Linkerd },
    // Istio's sidecar injector: `sidecar.istio.io/status` (the injected containers, as JSON).
    Injector { mark: annotations::ISTIO_SIDECAR_STATUS, profile: ProxyProfile::Istio },
];

/// The profile a container of this name is known to be, if any.
pub fn known_sidecar(name: &str) -> Option<ProxyProfile> {
    KNOWN_SIDECARS.iter().find(|(known, _)| *known == name).map(|(_, profile)| *profile)
}

/// Whether a pod with this `restartPolicy` is meant to finish: `Never` and `OnFailure` are, and
/// `Always` (the default when unset) never is.
pub fn finishes(restart_policy: Option<&str>) -> bool {
    matches!(restart_policy, Some("Never" | "OnFailure"))
}

/// Whether an init container is a native sidecar.
pub fn is_native_sidecar(init_container: &Container) -> bool {
    init_container.restart_policy.as_deref() == Some("Always")
}

/// Whether the kubelet restarts `container` after it exited with `exit_code`, in a pod whose
/// `restartPolicy` is `pod_policy`. A container's own restart rules and `restartPolicy`
/// (Kubernetes 1.34, `ContainerRestartRules`) come first: the first rule whose exit codes match
/// decides, then the container's policy, then the pod's.
pub fn restarts_after(container: &Container, pod_policy: Option<&str>, exit_code: i32) -> bool {
    for rule in container.restart_policy_rules.iter().flatten() {
        let Some(codes) = rule.exit_codes.as_ref() else { continue };
        let listed = codes.values.iter().flatten().any(|code| *code == exit_code);
        let matches = match codes.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => false,
        };
        if matches {
            return rule.action == "Restart";
        }
    }
    match container.restart_policy.as_deref().or(pod_policy).unwrap_or("Always") {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// Where a pod's main containers are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mains {
    /// One has not terminated yet (or the pod has none).
    Running,
    /// One exited and the kubelet will start it again.
    WillRestart { container: String },
    /// Every one has terminated for good; the last at `last_exit` (`None`: a status without
    /// `finishedAt`).
    Exited { last_exit: Option<Timestamp> },
}

/// The status of container `name`, from the pod's regular containers' statuses.
pub fn status_of<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.iter().find(|s| s.name == name)
}

/// The kind of the pod's controller (`Job`, `Workflow`, ...); `None` for a bare pod.
pub fn owner_kind(pod: &Pod) -> Option<&str> {
    let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
    owners.iter().find(|o| o.controller == Some(true)).or(owners.first()).map(|o| o.kind.as_str())
}

/// How container `name` ended, if it has.
pub fn terminated<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStateTerminated> {
    status_of(pod, name)?.state.as_ref()?.terminated.as_ref()
}

static NO_ANNOTATIONS: BTreeMap<String, String> = BTreeMap::new();

/// What the rules need to know about a pod or a pod template.
#[derive(Clone, Copy, Debug)]
pub struct PodShape<'a> {
    /// The pod spec (or a workload's `spec.template.spec`).
    pub spec: &'a PodSpec,
    /// The pod's (or template's) annotations.
    pub annotations: &'a BTreeMap<String, String>,
    /// Whether the pod is meant to finish.
    pub runs_to_completion: bool,
}

impl<'a> PodShape<'a> {
    /// A pod's shape, or a template's: it runs to completion when its owner is a kind whose pods
    /// finish (`owner_finishes`: a Job, a CronJob) or when its `restartPolicy` lets it.
    pub fn new(
        spec: &'a PodSpec,
        annotations: Option<&'a BTreeMap<String, String>>,
        owner_finishes: bool,
    ) -> Self {
        Self {
            spec,
            annotations: annotations.unwrap_or(&NO_ANNOTATIONS),
            runs_to_completion: owner_finishes || finishes(spec.restart_policy.as_deref()),
        }
    }

    /// A pod's shape; `None` when it has no spec.
    pub fn of_pod(pod: &'a Pod) -> Option<Self> {
        Some(Self::new(pod.spec.as_ref()?, pod.metadata.annotations.as_ref(), false))
    }

    /// The container called `name`: a regular container, or an init container that is a native
    /// sidecar. Other init containers are not looked at: they have finished before the pod runs.
    pub fn container(&self, name: &str) -> Option<Placed<'a>> {
        if let Some(container) = self.spec.containers.iter().find(|c| c.name == name) {
            return Some(Placed { container, placement: Placement::Classic });
        }
        let native =
            self.spec.init_containers.iter().flatten().find(|c| c.name == name && is_native_sidecar(c));
        native.map(|container| Placed { container, placement: Placement::NativeSidecar })
    }

    /// The mesh proxy, when a policy does not name it: the first known sidecar the pod has.
    pub fn known_proxy(&self) -> Option<(ProxyProfile, Placed<'a>)> {
        KNOWN_SIDECARS.iter().find_map(|(name, profile)| Some((*profile, self.container(name)?)))
    }

    /// The mesh whose injector marked this pod: its annotation (Linkerd's proxy-version,
    /// Istio's sidecar-status) and its proxy container both there. `None` for anything else,
    /// however its containers are named.
    pub fn injected_mesh(&self) -> Option<ProxyProfile> {
        INJECTORS
            .iter()
            .find(|injector| {
                self.annotations.contains_key(injector.mark)
                    && injector.profile.container_name().is_some_and(|name| self.container(name).is_some())
            })
            .map(|injector| injector.profile)
    }

    /// The main containers: every regular container that is not one of `sidecars` and not a
    /// sidecar known by its name.
    pub fn main_containers<'s>(&self, sidecars: &'s [&'s str]) -> impl Iterator<Item = &'a Container> + 's
    where
        'a: 's,
    {
        self.spec
            .containers
            .iter()
            .filter(move |c| !sidecars.contains(&c.name.as_str()) && known_sidecar(&c.name).is_none())
    }

    /// Where the main containers (all but `sidecars` and known sidecars) are, from `pod`'s status.
    pub fn mains(&self, pod: &Pod, sidecars: &[&str]) -> Mains {
        let mut last_exit: Option<Option<Timestamp>> = None;
        for container in self.main_containers(sidecars) {
            let Some(ended) = terminated(pod, &container.name) else { return Mains::Running };
            if restarts_after(container, self.spec.restart_policy.as_deref(), ended.exit_code) {
                return Mains::WillRestart { container: container.name.clone() };
            }
            let at = ended.finished_at.as_ref().map(|t| t.0);
            last_exit = Some(match last_exit {
                None => at,
                Some(before) => before.max(at),
            });
        }
        match last_exit {
            Some(last_exit) => Mains::Exited { last_exit },
            // A pod of sidecars alone has no work to wait for.
            None => Mains::Running,
        }
    }

    /// Whether the pod is stuck as its user sees it, whoever may help: it runs to completion,
    /// its main containers have all exited for good, and a classic sidecar (one of `sidecars`,
    /// or one known by its name) still runs.
    pub fn stuck(&self, pod: &Pod, sidecars: &[&str]) -> bool {
        self.runs_to_completion
            && matches!(self.mains(pod, sidecars), Mains::Exited { .. })
            && self
                .spec
                .containers
                .iter()
                .filter(|c| sidecars.contains(&c.name.as_str()) || known_sidecar(&c.name).is_some())
                .any(|c| terminated(pod, &c.name).is_none())
    }

    /// The classic sidecars known by their name that are not among `sidecars`: what a policy
    /// leaves running, and what keeps the pod from finishing.
    pub fn unlisted_sidecars<'s>(&self, sidecars: &'s [&'s str]) -> impl Iterator<Item = &'a Container> + 's
    where
        'a: 's,
    {
        self.spec
            .containers
            .iter()
            .filter(move |c| !sidecars.contains(&c.name.as_str()) && known_sidecar(&c.name).is_some())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerRestartRule, ContainerRestartRuleOnExitCodes};

    use super::*;

    fn container(name: &str, restart_policy: Option<&str>) -> Container {
        Container {
            name: name.into(),
            restart_policy: restart_policy.map(Into::into),
            ..Container::default()
        }
    }

    fn spec(containers: &[&str], inits: Vec<Container>, restart_policy: Option<&str>) -> PodSpec {
        PodSpec {
            containers: containers.iter().map(|n| container(n, None)).collect(),
            init_containers: Some(inits),
            restart_policy: restart_policy.map(Into::into),
            ..PodSpec::default()
        }
    }

    #[test]
    fn only_an_init_container_that_restarts_always_is_a_native_sidecar() {
        let s = spec(
            &["app"],
            vec![container("migrate", None), container("linkerd-proxy", Some("Always"))],
            Some("Never"),
        );
        let shape = PodShape::new(&s, None, false);
        assert_eq!(shape.container("linkerd-proxy").unwrap().placement, Placement::NativeSidecar);
        assert!(shape.container("migrate").is_none(), "a plain init container is no sidecar");
        assert_eq!(shape.container("app").unwrap().placement, Placement::Classic);
        assert_eq!(shape.known_proxy().unwrap().0, ProxyProfile::Linkerd);
    }

    #[test]
    fn a_pod_runs_to_completion_by_its_owner_or_its_restart_policy() {
        for (policy, owner, finishes) in [
            (None, false, false),
            (Some("Always"), false, false),
            (Some("Never"), false, true),
            (Some("OnFailure"), false, true),
            (None, true, true),
        ] {
            let s = spec(&["app"], vec![], policy);
            assert_eq!(PodShape::new(&s, None, owner).runs_to_completion, finishes, "{policy:?} {owner}");
        }
    }

    #[test]
    fn main_containers_leave_out_listed_and_known_sidecars() {
        let s = spec(&["app", "log-agent", "cloud-sql-proxy", "linkerd-proxy"], vec![], Some("Never"));
        let shape = PodShape::new(&s, None, false);
        let mains: Vec<&str> = shape.main_containers(&["log-agent"]).map(|c| c.name.as_str()).collect();
        assert_eq!(mains, ["app"]);
        let unlisted: Vec<&str> =
            shape.unlisted_sidecars(&["linkerd-proxy"]).map(|c| c.name.as_str()).collect();
        assert_eq!(unlisted, ["cloud-sql-proxy"]);
    }

    #[test]
    fn container_restart_rules_come_before_the_pods_policy() {
        let plain = container("app", None);
        assert!(!restarts_after(&plain, Some("Never"), 1));
        assert!(restarts_after(&plain, Some("OnFailure"), 1));
        assert!(!restarts_after(&plain, Some("OnFailure"), 0));
        assert!(restarts_after(&plain, None, 0), "unset means Always");

        let rule = |action: &str, operator: &str, values: Vec<i32>| ContainerRestartRule {
            action: action.into(),
            exit_codes: Some(ContainerRestartRuleOnExitCodes {
                operator: operator.into(),
                values: Some(values),
            }),
        };
        let ruled = Container {
            restart_policy: Some("Never".into()),
            restart_policy_rules: Some(vec![rule("Restart", "In", vec![42])]),
            ..plain.clone()
        };
        assert!(restarts_after(&ruled, Some("OnFailure"), 42), "the rule matches");
        assert!(!restarts_after(&ruled, Some("OnFailure"), 1), "the container's Never wins over the pod's");
        let not_in =
            Container { restart_policy_rules: Some(vec![rule("Restart", "NotIn", vec![0])]), ..ruled };
        assert!(restarts_after(&not_in, Some("Never"), 3));
        assert!(!restarts_after(&not_in, Some("Never"), 0));
    }
}
