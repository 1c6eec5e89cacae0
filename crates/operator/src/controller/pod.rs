//! What the operator caches of a run-to-completion pod: a slim type that deserializes only the fields its
//! decisions and its ephemeral containers read, straight from the API server's JSON. A full
//! `Pod` is over 2 KiB before any field is set (each `Container` another 2 KiB), so ten thousand
//! cached `Pod`s cost tens of MiB even when trimmed; this costs a fraction of that. It is turned
//! back into a (sparse) `Pod` for one decision at a time.

use crate::packed_labels::PackedLabels;
use k8s_openapi::{
    api::core::v1::{
        Container, ContainerRestartRule, ContainerState, ContainerStateRunning, ContainerStateTerminated,
        ContainerStateWaiting, ContainerStatus, ContainerUser, EnvVar, EnvVarSource, LinuxContainerUser, Pod,
        PodSecurityContext, PodSpec, PodStatus, SecurityContext,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time},
    jiff::Timestamp,
};
use lameduck_api::{endpoint, names::annotations, shape::INJECTORS};
use serde::Deserialize;

/// Ephemeral containers of other tools are none of lameduck's business.
const OWN_EPHEMERAL_PREFIX: &str = "lameduck-shutdown-";
/// What an ephemeral container of lameduck's said on exit, as much as an event shows.
const MAX_TERMINATION_MESSAGE: usize = 256;

/// lameduck's own record on the pod.
const OWN_ANNOTATIONS: [&str; 2] = [annotations::SHUTDOWN_ATTEMPTS, annotations::SHUTDOWN_RESULT];

/// Whether decisions read the annotation `key`: lameduck's record, what says whether a proxy's
/// shutdown endpoint is on (`lameduck_api::endpoint`), and the injectors' marks that
/// `--default-profile auto` goes by (`lameduck_api::shape::INJECTORS`). Read from those tables,
/// not copied, so that what decisions read and what the cache keeps cannot drift apart.
fn kept_annotation(key: &str) -> bool {
    OWN_ANNOTATIONS.contains(&key)
        || endpoint::ANNOTATIONS_READ.contains(&key)
        || INJECTORS.iter().any(|injector| injector.mark == key)
}
/// The env vars and flags that say whether a sidecar's shutdown endpoint is on.
const KEPT_ENV: [&str; 4] = endpoint::ENV_READ;
const KEPT_FLAGS: [&str; 3] = endpoint::FLAGS_READ;

/// A run-to-completion pod as the operator caches it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimPod {
    /// After [`SlimPod::trim`]: name, namespace, uid, resourceVersion and the kept annotations;
    /// the labels and the owner are kept more compactly below.
    pub metadata: ObjectMeta,
    /// The labels, packed by [`SlimPod::trim`] (policies select pods by them).
    #[serde(skip)]
    pub labels: PackedLabels,
    /// The kind of the pod's controller, kept by [`SlimPod::trim`] (events and a metric name it).
    #[serde(skip)]
    pub owner: Option<Box<str>>,
    #[serde(default)]
    pub spec: Spec,
    #[serde(default)]
    pub status: Status,
}

/// The parts of `PodSpec` that are read.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    #[serde(default)]
    pub restart_policy: Option<String>,
    #[serde(default)]
    pub containers: Vec<SlimContainer>,
    #[serde(default)]
    pub init_containers: Vec<SlimContainer>,
    #[serde(default)]
    pub security_context: Option<UserIds>,
}

/// A container's name and restart policy (native sidecars), and the details that most
/// containers lack, boxed so that a plain container costs a few words.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "WireContainer")]
pub struct SlimContainer {
    pub name: String,
    pub restart_policy: Option<String>,
    pub details: Option<Box<Details>>,
}

/// Restart rules (main containers that restart), user, and what of its command line and env
/// says whether a sidecar's shutdown endpoint is on.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Details {
    #[serde(default)]
    pub restart_policy_rules: Vec<ContainerRestartRule>,
    #[serde(default)]
    pub security_context: Option<UserIds>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<SlimEnv>,
}

impl Details {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A container as read from the API server's JSON.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireContainer {
    name: String,
    #[serde(default)]
    restart_policy: Option<String>,
    #[serde(flatten)]
    details: Details,
}

impl From<WireContainer> for SlimContainer {
    fn from(c: WireContainer) -> Self {
        let details = (!c.details.is_empty()).then(|| Box::new(c.details));
        Self { name: c.name, restart_policy: c.restart_policy, details }
    }
}

/// An env var: its value, or only that it comes from elsewhere.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimEnv {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub value_from: bool,
}

/// Whether a field is there, without keeping what it holds.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(Option::<serde::de::IgnoredAny>::deserialize(deserializer)?.is_some())
}

/// Keeps the flags in `KEPT_FLAGS` (and a value that follows one alone).
fn keep_flags(argv: &mut Vec<String>) {
    let mut keep_next = false;
    argv.retain(|arg| {
        let kept = keep_next || KEPT_FLAGS.iter().any(|flag| arg.starts_with(flag));
        keep_next = KEPT_FLAGS.contains(&arg.as_str());
        kept
    });
}

/// The user and group a container or pod runs as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserIds {
    #[serde(default)]
    pub run_as_user: Option<i64>,
    #[serde(default)]
    pub run_as_group: Option<i64>,
}

/// The parts of `PodStatus` that are read.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub container_statuses: Vec<SlimStatus>,
    #[serde(default)]
    pub ephemeral_container_statuses: Vec<SlimStatus>,
}

/// A container's state.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimStatus {
    pub name: String,
    #[serde(default)]
    pub restart_count: i32,
    #[serde(default, deserialize_with = "slim_state")]
    pub state: SlimState,
    /// The uid the container runs as, where the kubelet reports it (`user.linux.uid`, 1.33+).
    #[serde(default, rename = "user", deserialize_with = "linux_uid")]
    pub uid: Option<i64>,
}

/// What decisions read of a `ContainerState`: a tenth of its size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SlimState {
    /// No state reported yet.
    #[default]
    Unknown,
    Waiting,
    Running,
    Terminated {
        exit_code: i32,
        finished_at: Option<Timestamp>,
        message: Option<Box<str>>,
    },
}

fn slim_state<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SlimState, D::Error> {
    let Some(state) = Option::<ContainerState>::deserialize(deserializer)? else {
        return Ok(SlimState::Unknown);
    };
    Ok(match (state.terminated, state.running, state.waiting) {
        (Some(t), _, _) => SlimState::Terminated {
            exit_code: t.exit_code,
            finished_at: t.finished_at.map(|f| f.0),
            message: t.message.map(String::into_boxed_str),
        },
        (None, Some(_), _) => SlimState::Running,
        (None, None, Some(_)) => SlimState::Waiting,
        (None, None, None) => SlimState::Unknown,
    })
}

fn linux_uid<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Ok(Option::<ContainerUser>::deserialize(deserializer)?.and_then(|u| u.linux).map(|l| l.uid))
}

impl SlimState {
    fn to_state(&self) -> Option<ContainerState> {
        Some(match self {
            Self::Unknown => return None,
            Self::Waiting => ContainerState {
                waiting: Some(ContainerStateWaiting::default()),
                ..ContainerState::default()
            },
            Self::Running => ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..ContainerState::default()
            },
            Self::Terminated { exit_code, finished_at, message } => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: *exit_code,
                    finished_at: finished_at.map(Time),
                    message: message.as_deref().map(str::to_owned),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            },
        })
    }
}

slim_pod_resource!(SlimPod);

impl SlimPod {
    /// What the operator's watch caches of `pod`: read from its JSON as the watch reads it, then
    /// trimmed. Tests decide on `SlimPod::cache(&pod)?.to_pod()`, the form the operator holds, so
    /// that a field the cache drops and a decision reads fails a test.
    pub fn cache(pod: &Pod) -> Result<Self, serde_json::Error> {
        let mut slim: Self = serde_json::from_value(serde_json::to_value(pod)?)?;
        slim.trim();
        Ok(slim)
    }

    /// Drops what is still too much: managed fields, other annotations, other tools' ephemeral
    /// containers, termination messages (up to 4 KiB each).
    pub fn trim(&mut self) {
        let meta = &mut self.metadata;
        if let Some(labels) = meta.labels.take() {
            self.labels = PackedLabels::pack(&labels);
        }
        if let Some(owners) = meta.owner_references.take() {
            let controller = owners.iter().find(|o| o.controller == Some(true)).or(owners.first());
            self.owner = controller.map(|o| o.kind.clone().into_boxed_str());
        }
        let annotations = meta.annotations.take().map(|mut map| {
            map.retain(|key, _| kept_annotation(key));
            map
        });
        // Only what the store and the decisions need; the rest is dropped whole.
        self.metadata = ObjectMeta {
            name: meta.name.take(),
            namespace: meta.namespace.take(),
            uid: meta.uid.take(),
            resource_version: meta.resource_version.take(),
            annotations: annotations.filter(|map| !map.is_empty()),
            ..ObjectMeta::default()
        };
        for container in self.spec.containers.iter_mut().chain(&mut self.spec.init_containers) {
            if let Some(details) = container.details.as_mut() {
                details.env.retain(|e| KEPT_ENV.contains(&e.name.as_str()));
                keep_flags(&mut details.command);
                keep_flags(&mut details.args);
                details.env.shrink_to_fit();
            }
            if container.details.as_ref().is_some_and(|d| d.is_empty()) {
                container.details = None;
            }
        }
        self.status.ephemeral_container_statuses.retain(|s| s.name.starts_with(OWN_EPHEMERAL_PREFIX));
        let own = self.status.ephemeral_container_statuses.iter_mut().map(|s| (s, true));
        let others = self.status.container_statuses.iter_mut().map(|s| (s, false));
        for (status, keep_message) in others.chain(own) {
            if let SlimState::Terminated { message, .. } = &mut status.state {
                // lameduck's own containers say why they failed; that goes into an event.
                *message = message
                    .take()
                    .filter(|_| keep_message)
                    .map(|m| crate::events::shorten(&m, MAX_TERMINATION_MESSAGE).into_boxed_str());
            }
        }
    }

    /// A `Pod` with just these fields, for `decide` and the shutdown methods.
    pub fn to_pod(&self) -> Pod {
        let container = |c: &SlimContainer| {
            let mut container = Container {
                name: c.name.clone(),
                restart_policy: c.restart_policy.clone(),
                ..Container::default()
            };
            if let Some(d) = c.details.as_deref() {
                container.restart_policy_rules =
                    (!d.restart_policy_rules.is_empty()).then(|| d.restart_policy_rules.clone());
                container.security_context = d.security_context.map(|ids| SecurityContext {
                    run_as_user: ids.run_as_user,
                    run_as_group: ids.run_as_group,
                    ..SecurityContext::default()
                });
                container.command = (!d.command.is_empty()).then(|| d.command.clone());
                container.args = (!d.args.is_empty()).then(|| d.args.clone());
                container.env = (!d.env.is_empty()).then(|| {
                    d.env
                        .iter()
                        .map(|e| EnvVar {
                            name: e.name.clone(),
                            value: e.value.clone(),
                            value_from: e.value_from.then(EnvVarSource::default),
                        })
                        .collect()
                });
            }
            container
        };
        let status = |s: &SlimStatus| ContainerStatus {
            name: s.name.clone(),
            restart_count: s.restart_count,
            state: s.state.to_state(),
            // Only the uid is read (the gid is not kept).
            user: s.uid.map(|uid| ContainerUser {
                linux: Some(LinuxContainerUser { uid, ..LinuxContainerUser::default() }),
            }),
            ..ContainerStatus::default()
        };
        let mut metadata = self.metadata.clone();
        if metadata.labels.is_none() {
            metadata.labels = self.labels.unpack();
        }
        if let Some(kind) = self.owner.as_deref().filter(|_| metadata.owner_references.is_none()) {
            // The kind alone, as the controller reference: what `shape::owner_kind` reads.
            metadata.owner_references = Some(vec![OwnerReference {
                kind: kind.to_owned(),
                controller: Some(true),
                ..OwnerReference::default()
            }]);
        }
        let spec = &self.spec;
        let status_of = &self.status;
        Pod {
            metadata,
            spec: Some(PodSpec {
                restart_policy: spec.restart_policy.clone(),
                containers: spec.containers.iter().map(container).collect(),
                init_containers: (!spec.init_containers.is_empty())
                    .then(|| spec.init_containers.iter().map(container).collect()),
                security_context: spec.security_context.map(|ids| PodSecurityContext {
                    run_as_user: ids.run_as_user,
                    run_as_group: ids.run_as_group,
                    ..PodSecurityContext::default()
                }),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: status_of.phase.clone(),
                container_statuses: Some(status_of.container_statuses.iter().map(status).collect()),
                ephemeral_container_statuses: (!status_of.ephemeral_container_statuses.is_empty())
                    .then(|| status_of.ephemeral_container_statuses.iter().map(status).collect()),
                ..PodStatus::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        controller::attempts::AttemptLog,
        controller::decide::{Terms, decide},
    };
    use lameduck_api::ShutdownPolicySpec;

    const FULL_POD: &str = r#"
metadata:
  name: report-abc
  namespace: jobs
  uid: u-1
  labels: {batch.kubernetes.io/job-name: report}
  annotations:
    lameduck.io/shutdown-attempts: '[]'
    config.linkerd.io/proxy-admin-shutdown: enabled
    kubectl.kubernetes.io/last-applied-configuration: '{"a": "very long blob"}'
  ownerReferences: [{apiVersion: batch/v1, kind: Job, name: report, uid: u1}]
  managedFields: [{manager: kubelet, operation: Update}]
spec:
  restartPolicy: Never
  nodeName: node-1
  volumes: [{name: data, emptyDir: {}}]
  securityContext: {runAsUser: 1000, fsGroup: 2000}
  containers:
  - name: main
    image: app
    env: [{name: A, value: b}]
    command: [run, --long, --list, --of, --flags]
  - name: linkerd-proxy
    image: proxy
    securityContext: {runAsUser: 2102, readOnlyRootFilesystem: true}
    args: [--log, warn, --enable-shutdown-endpoint, 'true', --x]
    env:
    - {name: LINKERD2_PROXY_LOG, value: warn}
    - {name: LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED, valueFrom: {configMapKeyRef: {name: c, key: k}}}
status:
  phase: Running
  podIP: 10.0.0.1
  conditions: [{type: Ready, status: "False"}]
  containerStatuses:
  - {name: main, ready: false, restartCount: 0, image: app, imageID: sha, containerID: c1,
     state: {terminated: {exitCode: 0, finishedAt: '2026-11-21T07:59:55Z', message: "done and dusted"}}}
  - {name: linkerd-proxy, ready: true, restartCount: 0, image: proxy, imageID: sha,
     state: {running: {startedAt: '2026-11-21T07:00:00Z'}}, user: {linux: {uid: 2102, gid: 2102}}}
  ephemeralContainerStatuses:
  - {name: debugger, ready: false, restartCount: 0, image: x, imageID: x, state: {running: {}}}
  - {name: lameduck-shutdown-1, ready: false, restartCount: 0, image: x, imageID: x,
     state: {terminated: {exitCode: 1, message: "kill: operation not permitted"}}}
"#;

    #[test]
    fn keeps_what_decisions_read_and_drops_the_rest() {
        let full: Pod = serde_yaml_ng::from_str(FULL_POD).unwrap();
        let mut slim: SlimPod = serde_yaml_ng::from_str(FULL_POD).unwrap();
        slim.trim();
        let trimmed = slim.to_pod();

        let meta = &trimmed.metadata;
        assert!(meta.managed_fields.is_none());
        assert_eq!(meta.annotations.as_ref().unwrap().len(), 2, "only the annotations decisions read stay");
        assert_eq!(meta.labels, full.metadata.labels);
        assert_eq!(lameduck_api::shape::owner_kind(&trimmed), Some("Job"), "the owner's kind stays");
        let spec = trimmed.spec.as_ref().unwrap();
        assert!(spec.volumes.is_none());
        assert!(spec.containers[0].env.is_none() && spec.containers[0].command.is_none());
        assert_eq!(spec.containers[1].security_context.as_ref().unwrap().run_as_user, Some(2102));
        assert_eq!(spec.security_context.as_ref().unwrap().run_as_user, Some(1000));
        let status = trimmed.status.as_ref().unwrap();
        assert!(status.conditions.is_none() && status.pod_ip.is_none());
        let ephemeral = status.ephemeral_container_statuses.as_ref().unwrap();
        assert_eq!(ephemeral.len(), 1, "only lameduck's ephemeral containers stay");
        assert_eq!(ephemeral[0].name, "lameduck-shutdown-1");
        let said = ephemeral[0].state.as_ref().unwrap().terminated.as_ref().unwrap().message.as_deref();
        assert_eq!(said, Some("kill: operation not permitted"), "lameduck's containers say why");
        let uid = |pod: &Pod| {
            pod.status.as_ref()?.container_statuses.as_ref()?[1].user.as_ref()?.linux.as_ref().map(|l| l.uid)
        };
        assert_eq!(uid(&trimmed), Some(2102));
        assert_eq!(uid(&trimmed), uid(&full));
        let proxy = &spec.containers[1];
        assert_eq!(proxy.args.as_deref().unwrap(), ["--enable-shutdown-endpoint", "true"]);
        let env = proxy.env.as_ref().unwrap();
        assert_eq!(env.len(), 1, "only the endpoint's env stays");
        assert!(env[0].value_from.is_some(), "a value from elsewhere stays unknown");

        // The decision is the same on the trimmed pod as on the full one.
        let policy = ShutdownPolicySpec::default();
        let terms = Terms { spec: &policy, generation: 1, max_ephemeral_containers: 4 };
        let now = "2026-11-21T08:00:00Z".parse().unwrap();
        let log = AttemptLog::default();
        assert_eq!(decide(&trimmed, &terms, &log, now), decide(&full, &terms, &log, now));

        let proxy = slim.spec.containers[1].details.as_ref().unwrap();
        assert_eq!(proxy.security_context.unwrap().run_as_user, Some(2102));
        assert!(slim.spec.containers[0].details.is_none(), "nothing kept of the main container: no box");
    }
}
