//! What the operator keeps of a pod in its cache: only the fields its decisions and its
//! ephemeral containers read. A Job pod's spec and status are mostly volumes, env, probes and
//! conditions; dropping them keeps memory flat with tens of thousands of pods.

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStatus, Pod, PodSecurityContext, PodSpec, PodStatus, SecurityContext,
};
use lameduck_api::names::annotations;

/// Ephemeral containers of other tools are none of lameduck's business.
const OWN_EPHEMERAL_PREFIX: &str = "lameduck-shutdown-";

/// Trims `pod` in place to what the operator reads.
pub fn trim(pod: &mut Pod) {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.finalizers = None;
    meta.generate_name = None;
    if let Some(map) = meta.annotations.as_mut() {
        map.retain(|key, _| key == annotations::SHUTDOWN_ATTEMPTS || key == annotations::SHUTDOWN_RESULT);
    }
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(PodSpec {
            containers: spec.containers.into_iter().map(trim_container).collect(),
            init_containers: spec.init_containers.map(|cs| cs.into_iter().map(trim_container).collect()),
            restart_policy: spec.restart_policy,
            node_name: spec.node_name,
            security_context: spec.security_context.map(|sc| PodSecurityContext {
                run_as_user: sc.run_as_user,
                run_as_group: sc.run_as_group,
                ..PodSecurityContext::default()
            }),
            ..PodSpec::default()
        });
    }
    if let Some(status) = pod.status.take() {
        pod.status = Some(PodStatus {
            phase: status.phase,
            container_statuses: status.container_statuses.map(|ss| ss.into_iter().map(trim_status).collect()),
            ephemeral_container_statuses: status.ephemeral_container_statuses.map(|ss| {
                ss.into_iter().filter(|s| s.name.starts_with(OWN_EPHEMERAL_PREFIX)).map(trim_status).collect()
            }),
            ..PodStatus::default()
        });
    }
}

fn trim_container(c: Container) -> Container {
    Container {
        name: c.name,
        restart_policy: c.restart_policy,
        security_context: c.security_context.map(|sc| SecurityContext {
            run_as_user: sc.run_as_user,
            run_as_group: sc.run_as_group,
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn trim_status(s: ContainerStatus) -> ContainerStatus {
    let state = s.state.map(|state| ContainerState {
        running: state.running,
        terminated: state.terminated.map(|mut t| {
            // Termination messages can be 4 KiB each; only the code and the time are read.
            t.message = None;
            t.container_id = None;
            t
        }),
        waiting: state.waiting.map(|mut w| {
            w.message = None;
            w
        }),
    });
    ContainerStatus { name: s.name, restart_count: s.restart_count, state, ..ContainerStatus::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{attempts::AttemptLog, decide::decide};
    use lameduck_api::ShutdownPolicySpec;

    const FULL_POD: &str = r#"
metadata:
  name: report-abc
  namespace: jobs
  uid: u-1
  labels: {batch.kubernetes.io/job-name: report}
  annotations:
    lameduck.io/shutdown-attempts: '[]'
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
status:
  phase: Running
  podIP: 10.0.0.1
  conditions: [{type: Ready, status: "False"}]
  containerStatuses:
  - {name: main, ready: false, restartCount: 0, image: app, imageID: sha, containerID: c1,
     state: {terminated: {exitCode: 0, finishedAt: '2026-11-21T07:59:55Z', message: "done and dusted"}}}
  - {name: linkerd-proxy, ready: true, restartCount: 0, image: proxy, imageID: sha,
     state: {running: {startedAt: '2026-11-21T07:00:00Z'}}}
  ephemeralContainerStatuses:
  - {name: debugger, ready: false, restartCount: 0, image: x, imageID: x, state: {running: {}}}
  - {name: lameduck-shutdown-1, ready: false, restartCount: 0, image: x, imageID: x,
     state: {terminated: {exitCode: 3}}}
"#;

    #[test]
    fn keeps_what_decisions_read_and_drops_the_rest() {
        let full: Pod = serde_yaml_ng::from_str(FULL_POD).unwrap();
        let mut trimmed = full.clone();
        trim(&mut trimmed);

        let meta = &trimmed.metadata;
        assert!(meta.managed_fields.is_none());
        assert_eq!(meta.annotations.as_ref().unwrap().len(), 1, "only lameduck's annotations stay");
        assert_eq!(meta.labels, full.metadata.labels);
        assert_eq!(meta.owner_references, full.metadata.owner_references);
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

        // The decision is the same on the trimmed pod as on the full one.
        let policy = ShutdownPolicySpec::default();
        let now = "2026-11-21T08:00:00Z".parse().unwrap();
        let log = AttemptLog::default();
        assert_eq!(decide(&trimmed, &policy, &log, now), decide(&full, &policy, &log, now));

        let full_size = serde_json::to_vec(&full).unwrap().len();
        let trimmed_size = serde_json::to_vec(&trimmed).unwrap().len();
        assert!(trimmed_size * 3 < full_size * 2, "{trimmed_size} of {full_size} bytes");
    }
}
