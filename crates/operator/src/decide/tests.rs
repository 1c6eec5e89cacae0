use super::*;
use crate::attempts::Attempt;
use lameduck_api::ProxyProfile;

const NOW: &str = "2026-11-21T08:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn at(offset_secs: i64) -> Timestamp {
    now().checked_add(SignedDuration::from_secs(offset_secs)).unwrap()
}

fn pod(yaml: &str) -> Pod {
    serde_yaml_ng::from_str(yaml).expect("fixture pod parses")
}

fn linkerd_policy() -> ShutdownPolicySpec {
    ShutdownPolicySpec::default()
}

/// A Linkerd-injected Job pod: `main` terminated (code, seconds before NOW), proxy `proxy_state`.
fn linkerd_job_pod(main_state: &str, proxy_state: &str) -> Pod {
    pod(&format!(
        r#"
metadata:
  name: report-abc
  ownerReferences: [{{apiVersion: batch/v1, kind: Job, name: report, uid: u1}}]
spec:
  restartPolicy: Never
  containers: [{{name: main}}, {{name: linkerd-proxy}}]
status:
  phase: Running
  containerStatuses:
  - {{name: main, ready: false, restartCount: 0, image: x, imageID: x, state: {main_state}}}
  - {{name: linkerd-proxy, ready: true, restartCount: 0, image: x, imageID: x, state: {proxy_state}}}
"#
    ))
}

fn exited(code: i32, secs_before_now: i64) -> String {
    format!("{{terminated: {{exitCode: {code}, finishedAt: '{}'}}}}", at(-secs_before_now))
}

const RUNNING: &str = "{running: {startedAt: '2026-11-21T07:00:00Z'}}";

fn stuck() -> Pod {
    linkerd_job_pod(&exited(0, 5), RUNNING)
}

fn attempt(
    number: u32,
    round: u32,
    method: ShutdownMethod,
    secs_before_now: i64,
    outcome: Option<Outcome>,
) -> Attempt {
    Attempt { number, round, method, started: at(-secs_before_now), outcome }
}

fn failed() -> Option<Outcome> {
    Some(Outcome::Failed { message: "exec: command not found".into() })
}

#[test]
fn stuck_linkerd_job_pod_gets_the_first_method() {
    let action = decide(&stuck(), &linkerd_policy(), &AttemptLog::default(), now());
    assert_eq!(action, Action::Attempt { method: ShutdownMethod::Exec, number: 1, round: 1 });
}

#[test]
fn running_main_container_means_wait() {
    let pod = linkerd_job_pod(RUNNING, RUNNING);
    assert_eq!(
        decide(&pod, &linkerd_policy(), &AttemptLog::default(), now()),
        Action::Wait { reason: Waiting::MainContainersRunning, until: None }
    );
}

#[test]
fn lameduck_profile_looks_for_its_own_container() {
    let mut policy = linkerd_policy();
    policy.proxy.profile = ProxyProfile::Lameduck;
    // The Linkerd pod has no lameduck-proxy container.
    assert_eq!(decide(&stuck(), &policy, &AttemptLog::default(), now()), Action::Ignore(Ignored::NoProxy));
    let text = serde_yaml_ng::to_string(&stuck()).unwrap().replace("linkerd-proxy", "lameduck-proxy");
    let lameduck_pod: Pod = serde_yaml_ng::from_str(&text).unwrap();
    assert!(matches!(decide(&lameduck_pod, &policy, &AttemptLog::default(), now()), Action::Attempt { .. }));
}

#[test]
fn native_sidecar_is_left_to_the_kubelet() {
    let pod = pod(r#"
metadata:
  ownerReferences: [{apiVersion: batch/v1, kind: Job, name: j, uid: u}]
spec:
  restartPolicy: Never
  initContainers: [{name: linkerd-proxy, restartPolicy: Always}]
  containers: [{name: main}]
"#);
    assert_eq!(
        decide(&pod, &linkerd_policy(), &AttemptLog::default(), now()),
        Action::Ignore(Ignored::NativeSidecar)
    );
}

#[test]
fn pods_not_owned_by_a_job_and_disabled_policies_are_ignored() {
    let mut pod = stuck();
    pod.metadata.owner_references = None;
    assert_eq!(
        decide(&pod, &linkerd_policy(), &AttemptLog::default(), now()),
        Action::Ignore(Ignored::NotAJobPod)
    );
    let mut policy = linkerd_policy();
    policy.completion.enabled = false;
    assert_eq!(
        decide(&stuck(), &policy, &AttemptLog::default(), now()),
        Action::Ignore(Ignored::CompletionDisabled)
    );
}

#[test]
fn on_failure_with_a_failing_main_waits_for_the_restart() {
    let mut pod = linkerd_job_pod(&exited(1, 5), RUNNING);
    pod.spec.as_mut().unwrap().restart_policy = Some("OnFailure".into());
    assert_eq!(
        decide(&pod, &linkerd_policy(), &AttemptLog::default(), now()),
        Action::Wait { reason: Waiting::WillRestart { container: "main".into() }, until: None }
    );
    // With Never, a failed main is final: the pod is stuck and must be finished (it will fail).
    let never = linkerd_job_pod(&exited(1, 5), RUNNING);
    assert!(matches!(
        decide(&never, &linkerd_policy(), &AttemptLog::default(), now()),
        Action::Attempt { .. }
    ));
}

#[test]
fn every_main_container_must_be_done_and_the_last_one_starts_the_delay() {
    let two_mains = |first: String, second: String| {
        pod(&format!(
            r#"
metadata:
  ownerReferences: [{{apiVersion: batch/v1, kind: Job, name: j, uid: u}}]
spec:
  restartPolicy: Never
  containers: [{{name: a}}, {{name: b}}, {{name: linkerd-proxy}}]
status:
  containerStatuses:
  - {{name: a, ready: false, restartCount: 0, image: x, imageID: x, state: {first}}}
  - {{name: b, ready: false, restartCount: 0, image: x, imageID: x, state: {second}}}
  - {{name: linkerd-proxy, ready: true, restartCount: 0, image: x, imageID: x, state: {RUNNING}}}
"#
        ))
    };
    let mut policy = linkerd_policy();
    policy.completion.delay = "10s".parse().unwrap();
    let one_running = two_mains(exited(0, 60), RUNNING.to_owned());
    assert_eq!(
        decide(&one_running, &policy, &AttemptLog::default(), now()),
        Action::Wait { reason: Waiting::MainContainersRunning, until: None }
    );
    // a ended 60s ago, b 3s ago: the 10s delay runs from b's end.
    let both_done = two_mains(exited(0, 60), exited(0, 3));
    assert_eq!(
        decide(&both_done, &policy, &AttemptLog::default(), now()),
        Action::Wait { reason: Waiting::Delay, until: Some(at(7)) }
    );
    assert!(matches!(decide(&both_done, &policy, &AttemptLog::default(), at(7)), Action::Attempt { .. }));
}

#[test]
fn proxy_exit_code_decides_done_or_failed() {
    let log = AttemptLog(vec![attempt(1, 1, ShutdownMethod::Exec, 3, Some(Outcome::Sent))]);
    let done = linkerd_job_pod(&exited(0, 5), &exited(0, 1));
    assert_eq!(decide(&done, &linkerd_policy(), &log, now()), Action::Done { attempts: 1 });
    let failed_proxy = linkerd_job_pod(&exited(0, 5), &exited(137, 1));
    assert_eq!(
        decide(&failed_proxy, &linkerd_policy(), &log, now()),
        Action::ProxyFailed { exit_code: 137, attempts: 1 }
    );
    // Gone with no attempt of ours: not lameduck's doing (lameduck-await -S, say).
    assert_eq!(
        decide(&done, &linkerd_policy(), &AttemptLog::default(), now()),
        Action::Ignore(Ignored::ProxyExitedByItself { exit_code: 0 })
    );
}

#[test]
fn proxy_not_running_yet_means_wait() {
    let pod = linkerd_job_pod(&exited(0, 5), "{waiting: {reason: ContainerCreating}}");
    assert_eq!(
        decide(&pod, &linkerd_policy(), &AttemptLog::default(), now()),
        Action::Wait { reason: Waiting::ProxyNotRunning, until: None }
    );
}

#[test]
fn an_attempt_under_way_is_verified_until_its_timeout_then_the_next_method_runs() {
    // attemptTimeout is 30s by default. Outcome unknown (the operator restarted mid-call):
    let in_flight = AttemptLog(vec![attempt(1, 1, ShutdownMethod::Exec, 10, None)]);
    assert_eq!(
        decide(&stuck(), &linkerd_policy(), &in_flight, now()),
        Action::Verify { number: 1, method: ShutdownMethod::Exec, deadline: at(20) }
    );
    let sent = AttemptLog(vec![attempt(1, 1, ShutdownMethod::Exec, 10, Some(Outcome::Sent))]);
    assert!(matches!(decide(&stuck(), &linkerd_policy(), &sent, now()), Action::Verify { .. }));
    let timed_out = AttemptLog(vec![attempt(1, 1, ShutdownMethod::Exec, 31, Some(Outcome::Sent))]);
    assert_eq!(
        decide(&stuck(), &linkerd_policy(), &timed_out, now()),
        Action::Attempt { method: ShutdownMethod::PortForward, number: 2, round: 1 }
    );
}

#[test]
fn a_failed_call_moves_on_at_once() {
    let log = AttemptLog(vec![attempt(1, 1, ShutdownMethod::Exec, 1, failed())]);
    assert_eq!(
        decide(&stuck(), &linkerd_policy(), &log, now()),
        Action::Attempt { method: ShutdownMethod::PortForward, number: 2, round: 1 }
    );
}

#[test]
fn endpoint_disabled_jumps_to_signal() {
    let log = AttemptLog(vec![
        attempt(1, 1, ShutdownMethod::Exec, 5, failed()),
        attempt(2, 1, ShutdownMethod::PortForward, 1, Some(Outcome::EndpointDisabled)),
    ]);
    assert_eq!(
        decide(&stuck(), &linkerd_policy(), &log, now()),
        Action::Attempt { method: ShutdownMethod::Signal, number: 3, round: 1 }
    );
    // Without Signal among the methods, nothing else can work: the round is over.
    let mut policy = linkerd_policy();
    policy.completion.methods =
        vec![ShutdownMethod::Exec, ShutdownMethod::PortForward, ShutdownMethod::EphemeralContainer];
    assert_eq!(decide(&stuck(), &policy, &log, now()), Action::Exhausted { round: 1, retry_at: at(-1 + 10) });
}

#[test]
fn exhausted_round_backs_off_then_starts_over() {
    let mut policy = linkerd_policy();
    policy.completion.methods = vec![ShutdownMethod::PortForward, ShutdownMethod::Signal];
    let log = AttemptLog(vec![
        attempt(1, 1, ShutdownMethod::PortForward, 40, failed()),
        attempt(2, 1, ShutdownMethod::Signal, 35, Some(Outcome::Sent)),
    ]);
    // Signal was sent 35s ago, timed out at -5s; round 2 may start 10s after that.
    assert_eq!(decide(&stuck(), &policy, &log, now()), Action::Exhausted { round: 1, retry_at: at(5) });
    assert_eq!(
        decide(&stuck(), &policy, &log, at(5)),
        Action::Attempt { method: ShutdownMethod::PortForward, number: 3, round: 2 }
    );
}

#[test]
fn backoff_doubles_up_to_five_minutes() {
    let secs: Vec<u64> = (1..=7).map(|round| backoff(round).as_secs()).collect();
    assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300]);
    assert_eq!(backoff(u32::MAX).as_secs(), 300);
}

#[test]
fn pods_that_restart_always_are_ignored() {
    let mut pod = stuck();
    pod.spec.as_mut().unwrap().restart_policy = Some("Always".into());
    assert_eq!(
        decide(&pod, &linkerd_policy(), &AttemptLog::default(), now()),
        Action::Ignore(Ignored::RestartsAlways)
    );
}

/// A stuck pod on which attempt `name` added an ephemeral container that exited with `code`.
fn with_ephemeral_exit(name: &str, code: i32) -> Pod {
    let mut pod = stuck();
    let status: ContainerStatus = serde_yaml_ng::from_str(&format!(
        "{{name: {name}, ready: false, restartCount: 0, image: x, imageID: x, state: {}}}",
        exited(code, 1)
    ))
    .unwrap();
    pod.status.as_mut().unwrap().ephemeral_container_statuses = Some(vec![status]);
    pod
}

#[test]
fn ephemeral_container_exit_codes_correct_the_recorded_outcome() {
    // Exec sits between EphemeralContainer and Signal, so "disabled" (skip to Signal) and
    // "failed" (next method: Exec) lead to different attempts.
    let mut policy = linkerd_policy();
    policy.completion.methods =
        vec![ShutdownMethod::EphemeralContainer, ShutdownMethod::Exec, ShutdownMethod::Signal];
    let log = AttemptLog(vec![attempt(1, 1, ShutdownMethod::EphemeralContainer, 2, Some(Outcome::Sent))]);
    // Not finished yet, or finished 0: the proxy is being given its time.
    assert!(matches!(decide(&stuck(), &policy, &log, now()), Action::Verify { number: 1, .. }));
    let pod = with_ephemeral_exit("lameduck-shutdown-1", 0);
    assert!(matches!(decide(&pod, &policy, &log, now()), Action::Verify { number: 1, .. }));
    // 3 is `lameduck-proxy shutdown`'s "endpoint disabled": straight to Signal.
    let pod = with_ephemeral_exit("lameduck-shutdown-1", EXIT_ENDPOINT_DISABLED);
    assert_eq!(
        decide(&pod, &policy, &log, now()),
        Action::Attempt { method: ShutdownMethod::Signal, number: 2, round: 1 }
    );
    // Any other failure moves on to the next method without waiting out the timeout.
    let pod = with_ephemeral_exit("lameduck-shutdown-1", 1);
    assert_eq!(
        decide(&pod, &policy, &log, now()),
        Action::Attempt { method: ShutdownMethod::Exec, number: 2, round: 1 }
    );
    // Another attempt's container says nothing about this one.
    let pod = with_ephemeral_exit("lameduck-shutdown-7", 1);
    assert!(matches!(decide(&pod, &policy, &log, now()), Action::Verify { number: 1, .. }));
}

#[test]
fn last_main_exit_is_the_latest_finish_once_every_main_container_is_done() {
    assert_eq!(last_main_exit(&stuck(), "linkerd-proxy"), Some(at(-5)));
    assert_eq!(last_main_exit(&linkerd_job_pod(RUNNING, RUNNING), "linkerd-proxy"), None);
}
