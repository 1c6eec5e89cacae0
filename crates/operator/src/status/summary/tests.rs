use super::*;
use lameduck_api::{ProxyProfile, ShutdownPolicySpec};

const NOW: &str = "2026-11-21T08:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn policy(name: &str, created: &str, selector: &str) -> Arc<ShutdownPolicy> {
    Arc::new(
        serde_yaml_ng::from_str(&format!(
            "metadata: {{name: {name}, namespace: jobs, generation: 3, creationTimestamp: '{created}'}}
spec: {{selector: {selector}, proxy: {{profile: Lameduck}}}}"
        ))
        .unwrap(),
    )
}

/// A lameduck Job pod labelled `team`, its main container `main_state`, in `phase`.
fn pod(name: &str, team: &str, main_state: &str, phase: &str) -> Pod {
    serde_yaml_ng::from_str(&format!(
        r#"
metadata:
  name: {name}
  namespace: jobs
  labels: {{team: {team}}}
  ownerReferences: [{{apiVersion: batch/v1, kind: Job, name: j, uid: u1}}]
spec:
  restartPolicy: Never
  containers: [{{name: main}}, {{name: lameduck-proxy}}]
status:
  phase: {phase}
  containerStatuses:
  - {{name: main, ready: false, restartCount: 0, image: x, imageID: x, state: {main_state}}}
  - {{name: lameduck-proxy, ready: true, restartCount: 0, image: x, imageID: x, state: {{running: {{}}}}}}
"#
    ))
    .unwrap()
}

const DONE: &str = "{terminated: {exitCode: 0, finishedAt: '2026-11-21T07:59:00Z'}}";
const RUNNING: &str = "{running: {}}";

fn key(name: &str) -> PolicyId {
    PolicyId::new("jobs", name)
}

#[test]
fn counts_matched_and_stuck_pods_per_policy_and_skips_finished_ones() {
    let policies = [policy("a", "2026-11-20T00:00:00Z", "{matchLabels: {team: a}}")];
    let pods = [
        pod("stuck", "a", DONE, "Running"),
        pod("busy", "a", RUNNING, "Running"),
        pod("gone", "a", DONE, "Succeeded"),
        pod("other", "b", DONE, "Running"),
    ];
    let summary = summarize(&policies, pods.clone(), &Settings::for_tests(None), now());
    // The pod no policy selects is stuck too, and said so.
    let stuck = BTreeMap::from([(StuckReason::Stopping, 1), (StuckReason::NoPolicy, 1)]);
    assert_eq!((summary.observed, summary.stuck), (2, stuck));
    let a = &summary.policies[&key("a")];
    assert_eq!((a.matched, a.stuck, a.conflict.clone(), a.invalid.clone()), (2, 1, None, None));

    // With --default-profile the unselected pod is observed too, but belongs to no policy.
    let default = ShutdownPolicySpec {
        proxy: lameduck_api::ProxySpec { profile: ProxyProfile::Lameduck, ..Default::default() },
        ..Default::default()
    };
    let summary = summarize(&policies, pods.clone(), &Settings::for_tests(Some(default.clone())), now());
    assert_eq!((summary.observed, summary.stuck), (3, BTreeMap::from([(StuckReason::Stopping, 2)])));
    assert_eq!(summary.policies[&key("a")].matched, 2);
}

#[test]
fn the_younger_of_two_overlapping_policies_reports_the_conflict() {
    let old = policy("old", "2026-11-20T00:00:00Z", "{}");
    let young = policy("young", "2026-11-21T00:00:00Z", "{matchLabels: {team: a}}");
    let summary = summarize(
        &[young.clone(), old.clone()],
        [pod("p1", "a", DONE, "Running")],
        &Settings::for_tests(None),
        now(),
    );
    assert_eq!(
        summary.policies[&key("young")].conflict,
        Some(Conflict { pod: "p1".into(), winner: "old".into() })
    );
    assert_eq!(summary.policies[&key("young")].matched, 0);
    assert_eq!(summary.policies[&key("old")].matched, 1);

    let status = desired_status(&young, &summary.policies[&key("young")], ShutdownCounts::default(), now());
    let conflict = status.conditions.iter().find(|c| c.type_ == "Conflict").unwrap();
    assert_eq!(conflict.status, "True");
    assert!(conflict.message.contains("p1") && conflict.message.contains("old"), "{}", conflict.message);
    assert_eq!(status.observed_generation, Some(3));
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True");
}

#[test]
fn an_unusable_selector_makes_the_policy_not_ready() {
    let bad = policy("bad", "2026-11-20T00:00:00Z", "{matchExpressions: [{key: team, operator: Sideways}]}");
    let summary = summarize(
        std::slice::from_ref(&bad),
        [pod("p1", "a", DONE, "Running")],
        &Settings::for_tests(None),
        now(),
    );
    let status = desired_status(&bad, &summary.policies[&key("bad")], ShutdownCounts::default(), now());
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidSelector"));
    assert!(ready.message.contains("spec.selector"), "{}", ready.message);
}

#[test]
fn transition_times_survive_while_a_condition_holds() {
    let mut p = (*policy("a", "2026-11-20T00:00:00Z", "{}")).clone();
    let summary = PolicySummary { matched: 1, ..PolicySummary::default() };
    let first = desired_status(&p, &summary, ShutdownCounts::default(), now());
    p.status = Some(first.clone());
    let later: Timestamp = "2026-11-21T09:00:00Z".parse().unwrap();
    let second = desired_status(
        &p,
        &PolicySummary { matched: 2, ..summary.clone() },
        ShutdownCounts::default(),
        later,
    );
    assert_eq!(second.conditions[0].last_transition_time, first.conditions[0].last_transition_time);
    assert!(!same_status(&first, &second), "matched changed");
    let third = desired_status(&p, &summary, ShutdownCounts::default(), later);
    assert!(same_status(&first, &third));
}

#[test]
fn a_refused_policy_is_not_ready_and_says_why() {
    let refused: Arc<ShutdownPolicy> = Arc::new(
        serde_yaml_ng::from_str(
            "metadata: {name: r, namespace: jobs, generation: 2, creationTimestamp: '2026-11-20T00:00:00Z'}
spec: {proxy: {profile: Lameduck}, completion: {ephemeralImage: 'elsewhere/debug:1'}}",
        )
        .unwrap(),
    );
    let summary = summarize(
        std::slice::from_ref(&refused),
        [pod("p1", "a", DONE, "Running")],
        &Settings::for_tests(None),
        now(),
    );
    let r = &summary.policies[&key("r")];
    assert_eq!(r.refused.as_ref().map(|x| x.reason), Some("ephemeral_image"));
    assert_eq!((r.matched, r.stuck), (1, 1), "its pods are still counted, and still stuck");
    let status = desired_status(&refused, r, ShutdownCounts::default(), now());
    let ready = status.conditions.iter().find(|c| c.type_ == conditions::READY).unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", crate::powers::REFUSED));
    assert!(ready.message.contains("spec.completion.ephemeralImage"), "{}", ready.message);
}

/// A policy named `name` for every pod of `jobs`, with `spec`.
fn policy_with(name: &str, spec: &str) -> Arc<ShutdownPolicy> {
    Arc::new(
        serde_yaml_ng::from_str(&format!(
            "metadata: {{name: {name}, namespace: jobs, generation: 1, creationTimestamp: '2026-11-20T00:00:00Z'}}
spec: {spec}"
        ))
        .unwrap(),
    )
}

#[test]
fn stuck_pods_are_counted_with_why_even_when_lameduck_cannot_act() {
    let stuck_reasons = |policies: &[Arc<ShutdownPolicy>], pod: Pod| {
        let summary = summarize(policies, [pod], &Settings::for_tests(None), now());
        let by_policy: Vec<i32> = summary.policies.values().map(|p| p.stuck).collect();
        (summary.stuck, by_policy)
    };
    let one = |reason| BTreeMap::from([(reason, 1)]);

    let disabled = policy_with("off", "{proxy: {profile: Lameduck}, completion: {enabled: false}}");
    assert_eq!(
        stuck_reasons(&[disabled], pod("p", "a", DONE, "Running")),
        (one(StuckReason::CompletionDisabled), vec![1])
    );

    let refused =
        policy_with("r", "{proxy: {profile: Lameduck}, completion: {ephemeralImage: 'elsewhere/x:1'}}");
    assert_eq!(
        stuck_reasons(&[refused], pod("p", "a", DONE, "Running")),
        (one(StuckReason::Refused), vec![1])
    );

    // A cloud-sql-proxy that the policy does not list still runs.
    let mut with_sql = pod("p", "a", DONE, "Running");
    with_sql
        .spec
        .as_mut()
        .unwrap()
        .containers
        .push(k8s_openapi::api::core::v1::Container { name: "cloud-sql-proxy".into(), ..Default::default() });
    let running: k8s_openapi::api::core::v1::ContainerStatus = serde_yaml_ng::from_str(
        "{name: cloud-sql-proxy, ready: true, restartCount: 0, image: x, imageID: x, state: {running: {}}}",
    )
    .unwrap();
    with_sql.status.as_mut().unwrap().container_statuses.as_mut().unwrap().push(running);
    let shorthand = policy_with("mesh", "{proxy: {profile: Lameduck}}");
    assert_eq!(stuck_reasons(&[shorthand], with_sql), (one(StuckReason::UnlistedSidecar), vec![1]));

    // Running main containers are no one's problem yet.
    let busy = policy_with("busy", "{proxy: {profile: Lameduck}, completion: {enabled: false}}");
    assert_eq!(stuck_reasons(&[busy], pod("p", "a", RUNNING, "Running")), (BTreeMap::new(), vec![0]));
}
