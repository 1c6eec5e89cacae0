use super::*;
use crate::controller::attempts::Attempt;
use lameduck_api::ProxyProfile;

/// `decide` under `policy` (generation 0) and the operator's default limits, with the sidecar
/// of an attempt reduced to its container name (`on`).
fn d(pod: &Pod, policy: &ShutdownPolicySpec, log: &AttemptLog, now: Timestamp) -> Action {
    named(decide(pod, &Terms { spec: policy, generation: 0, max_ephemeral_containers: 4 }, log, now))
}

/// An attempt's sidecar as `on(its container)`, so that tests compare the container alone.
fn named(action: Action) -> Action {
    match action {
        Action::Attempt { sidecar, method, number, round, epoch, last_main_exit } => Action::Attempt {
            sidecar: on(&sidecar.proxy.container_name),
            method,
            number,
            round,
            epoch,
            last_main_exit,
        },
        other => other,
    }
}

/// A sidecar known by its container name alone.
fn on(container: &str) -> Box<Sidecar> {
    let proxy = lameduck_api::ProxySpec {
        profile: ProxyProfile::Custom,
        container_name: Some(container.into()),
        ..Default::default()
    };
    Box::new(Sidecar { proxy: proxy.resolve(), methods: vec![], field: String::new() })
}

/// The attempt `decide` asks for on the `stuck()` pod (its main container exited at -5s).
fn next(method: ShutdownMethod, number: u32, round: u32) -> Action {
    next_on("linkerd-proxy", method, number, round)
}

/// The attempt on `container` that `decide` asks for on a pod whose main exited at -5s.
fn next_on(container: &str, method: ShutdownMethod, number: u32, round: u32) -> Action {
    Action::Attempt {
        sidecar: on(container),
        method,
        number,
        round,
        epoch: Epoch::default(),
        last_main_exit: at(-5),
    }
}

const NOW: &str = "2026-11-21T08:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn at(offset_secs: i64) -> Timestamp {
    now().checked_add(SignedDuration::from_secs(offset_secs)).unwrap()
}

/// A fixture pod in the form the operator holds it: through its watch cache.
fn pod(yaml: &str) -> Pod {
    let full: Pod = serde_yaml_ng::from_str(yaml).expect("fixture pod parses");
    crate::controller::pod::SlimPod::cache(&full).expect("fixture pod caches").to_pod()
}

fn linkerd_policy() -> ShutdownPolicySpec {
    ShutdownPolicySpec::default()
}

/// A Linkerd-injected Job pod with `/shutdown` enabled: `main` terminated (code, seconds before
/// NOW), proxy `proxy_state`.
fn linkerd_job_pod(main_state: &str, proxy_state: &str) -> Pod {
    pod(&format!(
        r#"
metadata:
  name: report-abc
  ownerReferences: [{{apiVersion: batch/v1, kind: Job, name: report, uid: u1}}]
spec:
  restartPolicy: Never
  containers:
  - {{name: main}}
  - {{name: linkerd-proxy, env: [{{name: LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED, value: "true"}}]}}
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
    Attempt {
        number,
        round,
        method,
        container: None,
        started: at(-secs_before_now),
        outcome,
        epoch: Epoch::default(),
    }
}

fn failed() -> Option<Outcome> {
    Some(Outcome::Failed { message: "exec: command not found".into() })
}

#[test]
fn stuck_linkerd_job_pod_gets_the_first_method() {
    let action = d(&stuck(), &linkerd_policy(), &AttemptLog::default(), now());
    assert_eq!(action, next(ShutdownMethod::Exec, 1, 1));
}

#[test]
fn running_main_container_means_wait() {
    let pod = linkerd_job_pod(RUNNING, RUNNING);
    assert_eq!(
        d(&pod, &linkerd_policy(), &AttemptLog::default(), now()),
        Action::Wait { reason: Waiting::MainContainersRunning, until: None }
    );
}

#[test]
fn lameduck_profile_looks_for_its_own_container() {
    let mut policy = linkerd_policy();
    policy.proxy.profile = ProxyProfile::Lameduck;
    // The Linkerd pod has no lameduck-proxy container.
    assert_eq!(d(&stuck(), &policy, &AttemptLog::default(), now()), Action::Ignore(Ignored::NoProxy));
    let text = serde_yaml_ng::to_string(&stuck()).unwrap().replace("linkerd-proxy", "lameduck-proxy");
    let lameduck_pod: Pod = serde_yaml_ng::from_str(&text).unwrap();
    assert!(matches!(d(&lameduck_pod, &policy, &AttemptLog::default(), now()), Action::Attempt { .. }));
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
        d(&pod, &linkerd_policy(), &AttemptLog::default(), now()),
        Action::Ignore(Ignored::NativeSidecar)
    );
}

#[test]
fn any_owner_or_none_is_finished_and_disabled_policies_are_ignored() {
    let mut bare = stuck();
    bare.metadata.owner_references = None;
    assert_eq!(d(&bare, &linkerd_policy(), &AttemptLog::default(), now()), next(ShutdownMethod::Exec, 1, 1));
    let mut workflow = stuck();
    workflow.metadata.owner_references.as_mut().unwrap()[0].kind = "Workflow".into();
    assert_eq!(
        d(&workflow, &linkerd_policy(), &AttemptLog::default(), now()),
        next(ShutdownMethod::Exec, 1, 1)
    );
    let mut service = stuck();
    service.spec.as_mut().unwrap().restart_policy = Some("Always".into());
    assert_eq!(
        d(&service, &linkerd_policy(), &AttemptLog::default(), now()),
        Action::Ignore(Ignored::RestartsAlways)
    );
    let mut policy = linkerd_policy();
    policy.completion.enabled = false;
    assert_eq!(
        d(&stuck(), &policy, &AttemptLog::default(), now()),
        Action::Ignore(Ignored::CompletionDisabled)
    );
}

#[test]
fn on_failure_with_a_failing_main_waits_for_the_restart() {
    let mut pod = linkerd_job_pod(&exited(1, 5), RUNNING);
    pod.spec.as_mut().unwrap().restart_policy = Some("OnFailure".into());
    assert_eq!(
        d(&pod, &linkerd_policy(), &AttemptLog::default(), now()),
        Action::Wait { reason: Waiting::WillRestart { container: "main".into() }, until: None }
    );
    // With Never, a failed main is final: the pod is stuck and must be finished (it will fail).
    let never = linkerd_job_pod(&exited(1, 5), RUNNING);
    assert!(matches!(d(&never, &linkerd_policy(), &AttemptLog::default(), now()), Action::Attempt { .. }));
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
        d(&one_running, &policy, &AttemptLog::default(), now()),
        Action::Wait { reason: Waiting::MainContainersRunning, until: None }
    );
    // a ended 60s ago, b 3s ago: the 10s delay runs from b's end.
    let both_done = two_mains(exited(0, 60), exited(0, 3));
    assert_eq!(
        d(&both_done, &policy, &AttemptLog::default(), now()),
        Action::Wait { reason: Waiting::Delay, until: Some(at(7)) }
    );
    assert!(matches!(d(&both_done, &policy, &AttemptLog::default(), at(7)), Action::Attempt { .. }));
}

#[test]
fn proxy_exit_code_decides_done_or_failed() {
    let log = AttemptLog(vec![attempt(1, 1, ShutdownMethod::Exec, 3, Some(Outcome::Sent))]);
    let done = linkerd_job_pod(&exited(0, 5), &exited(0, 1));
    let ends = Ends { last_main_exit: Some(at(-5)), last_sidecar_exit: Some(at(-1)) };
    assert_eq!(
        d(&done, &linkerd_policy(), &log, now()),
        Action::Done { attempts: 1, ends, sidecars: vec!["linkerd-proxy".into()] }
    );
    let failed_proxy = linkerd_job_pod(&exited(0, 5), &exited(137, 1));
    assert_eq!(
        d(&failed_proxy, &linkerd_policy(), &log, now()),
        Action::SidecarFailed { container: "linkerd-proxy".into(), exit_code: 137, attempts: 1, ends }
    );
    // Gone with no attempt of ours: not lameduck's doing (lameduck-await -S, say).
    assert_eq!(
        d(&done, &linkerd_policy(), &AttemptLog::default(), now()),
        Action::Ignore(Ignored::ProxyExitedByItself { exit_code: 0 })
    );
}

#[test]
fn proxy_not_running_yet_means_wait() {
    let pod = linkerd_job_pod(&exited(0, 5), "{waiting: {reason: ContainerCreating}}");
    assert_eq!(
        d(&pod, &linkerd_policy(), &AttemptLog::default(), now()),
        Action::Wait { reason: Waiting::ProxyNotRunning, until: None }
    );
}

#[test]
fn an_attempt_under_way_is_verified_until_its_timeout_then_the_next_method_runs() {
    // attemptTimeout is 30s by default. Outcome unknown (the operator restarted mid-call):
    let in_flight = AttemptLog(vec![attempt(1, 1, ShutdownMethod::Exec, 10, None)]);
    assert_eq!(
        d(&stuck(), &linkerd_policy(), &in_flight, now()),
        Action::Verify { number: 1, method: ShutdownMethod::Exec, deadline: at(20) }
    );
    let sent = AttemptLog(vec![attempt(1, 1, ShutdownMethod::Exec, 10, Some(Outcome::Sent))]);
    assert!(matches!(d(&stuck(), &linkerd_policy(), &sent, now()), Action::Verify { .. }));
    let timed_out = AttemptLog(vec![attempt(1, 1, ShutdownMethod::Exec, 31, Some(Outcome::Sent))]);
    assert_eq!(d(&stuck(), &linkerd_policy(), &timed_out, now()), next(ShutdownMethod::PortForward, 2, 1));
}

#[test]
fn a_failed_call_moves_on_at_once() {
    let log = AttemptLog(vec![attempt(1, 1, ShutdownMethod::Exec, 1, failed())]);
    assert_eq!(d(&stuck(), &linkerd_policy(), &log, now()), next(ShutdownMethod::PortForward, 2, 1));
}

#[test]
fn endpoint_disabled_jumps_to_signal() {
    let log = AttemptLog(vec![
        attempt(1, 1, ShutdownMethod::Exec, 5, failed()),
        attempt(2, 1, ShutdownMethod::PortForward, 1, Some(Outcome::EndpointDisabled)),
    ]);
    assert_eq!(d(&stuck(), &linkerd_policy(), &log, now()), next(ShutdownMethod::Signal, 3, 1));
    // Without Signal among the methods, nothing else can work, in this round or the next.
    let mut policy = linkerd_policy();
    policy.completion.methods =
        vec![ShutdownMethod::Exec, ShutdownMethod::PortForward, ShutdownMethod::EphemeralContainer];
    let Action::GiveUp { reason: GaveUp::NoMethod(why), attempts: 2, .. } = d(&stuck(), &policy, &log, now())
    else {
        panic!("expected to give up");
    };
    assert!(why.contains("answered 404"), "{why}");
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
    assert_eq!(
        d(&stuck(), &policy, &log, now()),
        Action::Exhausted { container: "linkerd-proxy".into(), round: 1, retry_at: at(5) }
    );
    assert_eq!(d(&stuck(), &policy, &log, at(5)), next(ShutdownMethod::PortForward, 3, 2));
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
        d(&pod, &linkerd_policy(), &AttemptLog::default(), now()),
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
    assert!(matches!(d(&stuck(), &policy, &log, now()), Action::Verify { number: 1, .. }));
    let pod = with_ephemeral_exit("lameduck-shutdown-1", 0);
    assert!(matches!(d(&pod, &policy, &log, now()), Action::Verify { number: 1, .. }));
    // 3 is `lameduck-proxy shutdown`'s "endpoint disabled": recorded, then straight to Signal.
    let pod = with_ephemeral_exit("lameduck-shutdown-1", EXIT_ENDPOINT_DISABLED);
    assert_eq!(
        d(&pod, &policy, &log, now()),
        Action::RecordOutcome {
            number: 1,
            method: ShutdownMethod::EphemeralContainer,
            outcome: Outcome::EndpointDisabled
        }
    );
    let recorded = AttemptLog(vec![attempt(
        1,
        1,
        ShutdownMethod::EphemeralContainer,
        2,
        Some(Outcome::EndpointDisabled),
    )]);
    assert_eq!(d(&pod, &policy, &recorded, now()), next(ShutdownMethod::Signal, 2, 1));
    // Any other failure is recorded as failed, and the next method follows without waiting out
    // the timeout.
    let pod = with_ephemeral_exit("lameduck-shutdown-1", 1);
    let Action::RecordOutcome { number: 1, outcome: Outcome::Failed { message }, .. } =
        d(&pod, &policy, &log, now())
    else {
        panic!("a non-zero exit is recorded as failed");
    };
    assert!(message.contains("exited with code 1"), "{message}");
    let recorded = AttemptLog(vec![attempt(
        1,
        1,
        ShutdownMethod::EphemeralContainer,
        2,
        Some(Outcome::failed(&message)),
    )]);
    assert_eq!(d(&pod, &policy, &recorded, now()), next(ShutdownMethod::Exec, 2, 1));
    // Another attempt's container says nothing about this one.
    let pod = with_ephemeral_exit("lameduck-shutdown-7", 1);
    assert!(matches!(d(&pod, &policy, &log, now()), Action::Verify { number: 1, .. }));
}

#[test]
fn a_signal_container_that_fails_is_recorded_with_what_it_said() {
    // The case of issue #14: the Signal container got EPERM and exited 1; today it stayed "sent".
    let mut pod = with_ephemeral_exit("lameduck-shutdown-2", 1);
    let status = &mut pod.status.as_mut().unwrap().ephemeral_container_statuses.as_mut().unwrap()[0];
    status.state.as_mut().unwrap().terminated.as_mut().unwrap().message =
        Some("signal TERM to pid 1: EPERM: Operation not permitted".into());
    let log = AttemptLog(vec![
        attempt(1, 1, ShutdownMethod::PortForward, 3, failed()),
        attempt(2, 1, ShutdownMethod::Signal, 2, Some(Outcome::Sent)),
    ]);
    let Action::RecordOutcome {
        number: 2,
        method: ShutdownMethod::Signal,
        outcome: Outcome::Failed { message },
    } = d(&pod, &linkerd_policy(), &log, now())
    else {
        panic!("expected the failure to be recorded");
    };
    assert!(message.contains("EPERM"), "{message}");
}

/// A Linkerd pod as its injector makes it by default: no LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED.
fn linkerd_defaults() -> Pod {
    let mut pod = stuck();
    pod.spec.as_mut().unwrap().containers[1].env = None;
    pod
}

#[test]
fn with_linkerd_defaults_only_signal_is_tried() {
    // Exec would run linkerd-await, which exits 0 whatever /shutdown answers: sent, and the Job
    // waits out attemptTimeout. The pod says the endpoint is off, so those methods are skipped.
    assert_eq!(
        d(&linkerd_defaults(), &linkerd_policy(), &AttemptLog::default(), now()),
        next(ShutdownMethod::Signal, 1, 1)
    );
    let mut annotated = linkerd_defaults();
    annotated.metadata.annotations =
        Some([("config.linkerd.io/proxy-admin-shutdown".to_owned(), "enabled".to_owned())].into());
    assert_eq!(
        d(&annotated, &linkerd_policy(), &AttemptLog::default(), now()),
        next(ShutdownMethod::Exec, 1, 1)
    );
    // Without Signal there is nothing to try: lameduck gives up at once and says why.
    let mut policy = linkerd_policy();
    policy.completion.methods = vec![ShutdownMethod::Exec, ShutdownMethod::PortForward];
    let Action::GiveUp { reason: GaveUp::NoMethod(why), attempts: 0, .. } =
        d(&linkerd_defaults(), &policy, &AttemptLog::default(), now())
    else {
        panic!("expected to give up");
    };
    assert!(why.contains("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED"), "{why}");
}

/// `rounds` full rounds of Exec then Signal, all failed, the last one ending 1000s ago.
fn failed_rounds(rounds: u32, epoch: Epoch) -> AttemptLog {
    AttemptLog(
        (0..rounds * 2)
            .map(|i| {
                let method = if i % 2 == 0 { ShutdownMethod::Exec } else { ShutdownMethod::Signal };
                Attempt {
                    epoch,
                    ..attempt(i + 1, i / 2 + 1, method, 1000 + i64::from(rounds * 2 - i), failed())
                }
            })
            .collect(),
    )
}

#[test]
fn after_max_rounds_lameduck_gives_up_until_the_proxy_restarts_or_the_policy_changes() {
    let mut policy = linkerd_policy();
    policy.completion.methods = vec![ShutdownMethod::Exec, ShutdownMethod::Signal];
    assert_eq!(policy.completion.max_rounds, 3);
    assert_eq!(
        d(&stuck(), &policy, &failed_rounds(2, Epoch::default()), now()),
        next(ShutdownMethod::Exec, 5, 3)
    );
    let three = failed_rounds(3, Epoch::default());
    assert_eq!(
        d(&stuck(), &policy, &three, now()),
        Action::GiveUp { container: "linkerd-proxy".into(), reason: GaveUp::Rounds(3), attempts: 6 }
    );
    // Asked again and again, the answer stays: no calls.
    assert_eq!(
        d(&stuck(), &policy, &three, at(86_400)),
        Action::GiveUp { container: "linkerd-proxy".into(), reason: GaveUp::Rounds(3), attempts: 6 }
    );

    // A new spec (generation) starts a fresh count.
    let terms = Terms { spec: &policy, generation: 2, max_ephemeral_containers: 4 };
    assert_eq!(
        named(decide(&stuck(), &terms, &three, now())),
        Action::Attempt {
            sidecar: on("linkerd-proxy"),
            method: ShutdownMethod::Exec,
            number: 7,
            round: 4,
            epoch: Epoch { generation: 2, proxy_restarts: 0 },
            last_main_exit: at(-5)
        }
    );
    // So does a restarted proxy.
    let mut restarted = stuck();
    restarted.status.as_mut().unwrap().container_statuses.as_mut().unwrap()[1].restart_count = 1;
    assert!(matches!(
        d(&restarted, &policy, &three, now()),
        Action::Attempt { number: 7, round: 4, epoch: Epoch { generation: 0, proxy_restarts: 1 }, .. }
    ));
    // maxRounds counts the rounds of the current epoch only.
    let mut mixed = three.clone();
    mixed.0.extend(
        failed_rounds(1, Epoch { generation: 2, proxy_restarts: 0 }).0.into_iter().map(|a| Attempt {
            number: a.number + 6,
            round: a.round + 3,
            ..a
        }),
    );
    assert!(matches!(named(decide(&stuck(), &terms, &mixed, now())), Action::Attempt { round: 5, .. }));
}

#[test]
fn ephemeral_containers_are_capped_per_pod() {
    let mut policy = linkerd_policy();
    policy.completion.methods = vec![ShutdownMethod::PortForward, ShutdownMethod::Signal];
    policy.completion.max_rounds = 10;
    let four = failed_rounds(2, Epoch::default()); // Exec, Signal twice: 2 containers
    let terms = |cap| Terms { spec: &policy, generation: 0, max_ephemeral_containers: cap };
    // Under the cap, Signal is still tried; at the cap it is skipped.
    let log = AttemptLog(vec![attempt(5, 3, ShutdownMethod::PortForward, 1, failed())]);
    let log = AttemptLog(four.0.iter().cloned().chain(log.0).collect());
    assert!(matches!(
        decide(&stuck(), &terms(3), &log, now()),
        Action::Attempt { method: ShutdownMethod::Signal, .. }
    ));
    assert!(matches!(decide(&stuck(), &terms(2), &log, now()), Action::Exhausted { .. }));
    // With only container methods left, lameduck gives up and names the flag.
    policy.completion.methods = vec![ShutdownMethod::EphemeralContainer, ShutdownMethod::Signal];
    let terms = Terms { spec: &policy, generation: 0, max_ephemeral_containers: 2 };
    let Action::GiveUp { reason: GaveUp::NoMethod(why), .. } = named(decide(&stuck(), &terms, &four, now()))
    else {
        panic!("expected to give up");
    };
    assert!(why.contains("--max-ephemeral-containers"), "{why}");
}

#[test]
fn the_record_never_grows_past_max_attempts() {
    let mut policy = linkerd_policy();
    policy.completion.methods = vec![ShutdownMethod::Exec, ShutdownMethod::Signal];
    // Many epochs, each giving up after its rounds: the attempts add up, and stop at the cap.
    let log = AttemptLog(
        (0..MAX_ATTEMPTS)
            .map(|i| Attempt {
                epoch: Epoch { generation: i64::from(i), proxy_restarts: 0 },
                ..attempt(i + 1, i + 1, ShutdownMethod::Exec, 5000, failed())
            })
            .collect(),
    );
    let terms = Terms { spec: &policy, generation: 1000, max_ephemeral_containers: 4 };
    assert_eq!(
        named(decide(&stuck(), &terms, &log, now())),
        Action::GiveUp {
            container: "linkerd-proxy".into(),
            reason: GaveUp::Attempts,
            attempts: MAX_ATTEMPTS
        }
    );
}

#[test]
fn attempt_timeout_is_capped_at_ten_minutes() {
    let mut policy = linkerd_policy();
    policy.completion.attempt_timeout = "1h".parse().unwrap();
    let log = AttemptLog(vec![attempt(1, 1, ShutdownMethod::Exec, 1, Some(Outcome::Sent))]);
    assert_eq!(
        d(&stuck(), &policy, &log, now()),
        Action::Verify { number: 1, method: ShutdownMethod::Exec, deadline: at(599) }
    );
}

/// A Job pod with `main` exited at -5s and three sidecars in `states` (log-agent,
/// cloud-sql-proxy, lameduck-proxy), all with their quit endpoints on.
fn three_sidecars(states: [&str; 3]) -> Pod {
    let [log, sql, proxy] = states;
    pod(&format!(
        r#"
metadata:
  name: backup-abc
  ownerReferences: [{{apiVersion: batch/v1, kind: Job, name: backup, uid: u1}}]
spec:
  restartPolicy: Never
  containers:
  - {{name: main}}
  - {{name: log-agent}}
  - {{name: cloud-sql-proxy, args: [--quitquitquit]}}
  - {{name: lameduck-proxy, args: [--enable-shutdown-endpoint]}}
status:
  phase: Running
  containerStatuses:
  - {{name: main, ready: false, restartCount: 0, image: x, imageID: x, state: {main}}}
  - {{name: log-agent, ready: true, restartCount: 0, image: x, imageID: x, state: {log}}}
  - {{name: cloud-sql-proxy, ready: true, restartCount: 0, image: x, imageID: x, state: {sql}}}
  - {{name: lameduck-proxy, ready: true, restartCount: 0, image: x, imageID: x, state: {proxy}}}
"#,
        main = exited(0, 5)
    ))
}

fn three_sidecar_policy() -> ShutdownPolicySpec {
    serde_yaml_ng::from_str(
        "{completion: {methods: [PortForward]}, sidecars: [
           {profile: Custom, containerName: log-agent, methods: [Signal]},
           {profile: CloudSqlProxy},
           {profile: Lameduck, methods: [Exec]}]}",
    )
    .unwrap()
}

fn on_container(container: &str, number: u32, method: ShutdownMethod, secs_before_now: i64) -> Attempt {
    Attempt {
        container: Some(container.into()),
        ..attempt(number, 1, method, secs_before_now, Some(Outcome::Sent))
    }
}

#[test]
fn sidecars_are_stopped_in_the_listed_order_each_with_its_own_methods() {
    let policy = three_sidecar_policy();
    let none = AttemptLog::default();
    // First the log agent, by its own method.
    let all_running = three_sidecars([RUNNING, RUNNING, RUNNING]);
    assert_eq!(d(&all_running, &policy, &none, now()), next_on("log-agent", ShutdownMethod::Signal, 1, 1));

    // While it has not exited, its attempt is waited out; nothing is sent to the next one.
    let log = AttemptLog(vec![on_container("log-agent", 1, ShutdownMethod::Signal, 3)]);
    assert!(matches!(d(&all_running, &policy, &log, now()), Action::Verify { number: 1, .. }));

    // Once it exited, the next in the list, by completion.methods, in a fresh round 1.
    let agent_done = three_sidecars([&exited(0, 2), RUNNING, RUNNING]);
    assert_eq!(
        d(&agent_done, &policy, &log, now()),
        next_on("cloud-sql-proxy", ShutdownMethod::PortForward, 2, 1)
    );

    // The mesh proxy last.
    let log = AttemptLog(vec![
        on_container("log-agent", 1, ShutdownMethod::Signal, 3),
        on_container("cloud-sql-proxy", 2, ShutdownMethod::PortForward, 2),
    ]);
    let two_done = three_sidecars([&exited(0, 2), &exited(0, 1), RUNNING]);
    assert_eq!(d(&two_done, &policy, &log, now()), next_on("lameduck-proxy", ShutdownMethod::Exec, 3, 1));

    // All exited 0: done, timed from the main's exit to the last sidecar's.
    let all_done = three_sidecars([&exited(0, 2), &exited(0, 1), &exited(0, 0)]);
    let ends = Ends { last_main_exit: Some(at(-5)), last_sidecar_exit: Some(at(0)) };
    assert_eq!(
        d(&all_done, &policy, &log, now()),
        Action::Done {
            attempts: 2,
            ends,
            sidecars: vec!["log-agent".into(), "cloud-sql-proxy".into(), "lameduck-proxy".into()],
        }
    );

    // One that exited 143 on its signal is named.
    let agent_143 = three_sidecars([&exited(143, 2), &exited(0, 1), &exited(0, 0)]);
    assert_eq!(
        d(&agent_143, &policy, &log, now()),
        Action::SidecarFailed { container: "log-agent".into(), exit_code: 143, attempts: 2, ends }
    );
}

#[test]
fn a_sidecar_that_exited_by_itself_is_skipped_and_rounds_count_per_sidecar() {
    let policy = three_sidecar_policy();
    // The log agent left on its own: the next one is stopped.
    let pod = three_sidecars([&exited(0, 3), RUNNING, RUNNING]);
    assert_eq!(
        d(&pod, &policy, &AttemptLog::default(), now()),
        next_on("cloud-sql-proxy", ShutdownMethod::PortForward, 1, 1)
    );
    // Three failed rounds on the log agent give up on it (and so on the pod), naming it.
    let log = AttemptLog(
        (1..=3)
            .map(|i| Attempt {
                container: Some("log-agent".into()),
                ..attempt(i, i, ShutdownMethod::Signal, 5000, failed())
            })
            .collect(),
    );
    let running = three_sidecars([RUNNING, RUNNING, RUNNING]);
    assert_eq!(
        d(&running, &policy, &log, now()),
        Action::GiveUp { container: "log-agent".into(), reason: GaveUp::Rounds(3), attempts: 3 }
    );
}

#[test]
fn a_known_sidecar_the_policy_leaves_out_keeps_lameduck_from_acting() {
    // The shorthand lists the mesh proxy alone; cloud-sql-proxy still runs after main exited.
    let policy: ShutdownPolicySpec = serde_yaml_ng::from_str("{proxy: {profile: Lameduck}}").unwrap();
    let pod = three_sidecars([&exited(0, 2), RUNNING, RUNNING]);
    assert_eq!(
        d(&pod, &policy, &AttemptLog::default(), now()),
        Action::Ignore(Ignored::UnlistedSidecar { container: "cloud-sql-proxy".into() })
    );
    // log-agent is no known sidecar: to the shorthand it is a main container, the last to exit.
    let sql_done = three_sidecars([&exited(0, 2), &exited(0, 1), RUNNING]);
    assert_eq!(
        d(&sql_done, &policy, &AttemptLog::default(), now()),
        Action::Attempt {
            sidecar: on("lameduck-proxy"),
            method: ShutdownMethod::Exec,
            number: 1,
            round: 1,
            epoch: Epoch::default(),
            last_main_exit: at(-2),
        }
    );
    // A still-running log-agent is a main container that has not finished.
    let agent_runs = three_sidecars([RUNNING, &exited(0, 1), RUNNING]);
    assert_eq!(
        d(&agent_runs, &policy, &AttemptLog::default(), now()),
        Action::Wait { reason: Waiting::MainContainersRunning, until: None }
    );
}

#[test]
fn records_from_before_sidecars_belong_to_the_proxy() {
    // An attempt without a container (written by an older operator) was on the proxy.
    let log = AttemptLog(vec![attempt(1, 1, ShutdownMethod::Exec, 3, Some(Outcome::Sent))]);
    assert!(matches!(d(&stuck(), &linkerd_policy(), &log, now()), Action::Verify { number: 1, .. }));
}

#[test]
fn done_names_only_the_sidecars_the_pod_has() {
    // The policy lists three; this Job's pod has the mesh proxy alone.
    let mut pod = stuck();
    let spec = pod.spec.as_mut().unwrap();
    spec.containers[1].name = "lameduck-proxy".into();
    let status = pod.status.as_mut().unwrap().container_statuses.as_mut().unwrap();
    status[1].name = "lameduck-proxy".into();
    status[1].state = serde_yaml_ng::from_str(&exited(0, 1)).unwrap();
    let log = AttemptLog(vec![on_container("lameduck-proxy", 1, ShutdownMethod::Exec, 3)]);
    let Action::Done { sidecars, .. } = d(&pod, &three_sidecar_policy(), &log, now()) else {
        panic!("expected done");
    };
    assert_eq!(sidecars, ["lameduck-proxy"]);
}
