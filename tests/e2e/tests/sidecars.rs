//! lameduck-operator on the local cluster, beyond one mesh proxy in a Job: it finishes any
//! run-to-completion pod (a bare pod, a pod owned by a custom resource, `restartPolicy:
//! OnFailure`), stops several sidecars in the policy's order with the mesh proxy last, stops an
//! Istio-shaped sidecar through its `/quitquitquit`, and leaves alone (counted stuck, reason
//! `unlisted_sidecar`) a pod whose known sidecar the policy does not list. A sidecar that dies
//! of the signal (143) fails the pod, and the event names it.
//!
//! Each test runs its own operator, namespace-scoped, under the chart's RBAC rules, and checks
//! what a user sees: the pod's phase, every container's exit code and finish time, the events,
//! the operator's metrics and the policy's status. The extra sidecars are `lameduck-testapp`
//! with `--quit-listen` (a quit endpoint), or plain (it exits on SIGTERM, 0 or
//! `--term-exit-code`).

use std::time::Duration;

use k8s_openapi::{
    api::{batch::v1::Job, core::v1::Pod},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, PostParams},
};
use lameduck_api::{
    ShutdownMethod, ShutdownPolicy,
    names::{annotations, containers, events, images},
};
use lameduck_e2e::{
    OperatorEvent, TestNamespace, container_status, exit_code, finished_at, is_running,
    operator::Operator,
    operator_events, phase,
    workloads::{job, job_complete, job_has, job_pod, proxy_container, shutdown_policy},
};
use lameduck_operator::controller::attempts::AttemptLog;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

/// The attempts the operator recorded on the pod.
fn attempts(pod: &Pod) -> AttemptLog {
    AttemptLog::from_annotations(pod.metadata.annotations.as_ref()).expect("a readable attempt log")
}

/// (container, method) of each recorded attempt, oldest first.
fn attempted(pod: &Pod) -> Vec<(String, ShutdownMethod)> {
    attempts(pod).0.into_iter().map(|a| (a.container.unwrap_or_default(), a.method)).collect()
}

/// A bare pod (no owner) whose `main` container serves for `seconds` and exits 0, with extra pod
/// spec fields: the pod template of [`job`].
fn bare_pod(name: &str, seconds: u32, extra: serde_json::Value) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": job(name, seconds, extra)["spec"]["template"]["spec"]})
}

/// A sidecar played by the test app: it serves on a free loopback port (so it never takes the
/// app's 8080), plus `args`, until SIGTERM (or a POST to its quit endpoint, with `--quit-listen`).
fn testapp_sidecar(name: &str, args: &[&str]) -> serde_json::Value {
    let mut command = vec!["lameduck-testapp", "--listen", "127.0.0.1:0"];
    command.extend_from_slice(args);
    json!({"name": name, "image": images::TESTAPP, "imagePullPolicy": "IfNotPresent", "command": command})
}

/// cloud-sql-proxy as a pod shows it: its admin port serves `/quitquitquit`, and the pod says so
/// with `CSQL_PROXY_QUITQUITQUIT=true`.
fn cloud_sql_proxy() -> serde_json::Value {
    let mut container = testapp_sidecar(
        containers::CLOUD_SQL_PROXY,
        &["--quit-listen", "127.0.0.1:9091", "--quit-path", "/quitquitquit"],
    );
    container["env"] = json!([{"name": "CSQL_PROXY_QUITQUITQUIT", "value": "true"}]);
    container
}

/// Whether the pod has reached this phase.
fn in_phase(pod: Option<&Pod>, wanted: &str) -> bool {
    pod.is_some_and(|p| phase(p) == wanted)
}

/// Waits until the pod is Succeeded and returns it.
async fn succeeds(ns: &TestNamespace, name: &str) -> Pod {
    let pods: Api<Pod> = ns.api();
    ns.wait_for(&pods, name, "the pod to succeed", 2 * MINUTE, |p: Option<&Pod>| in_phase(p, "Succeeded"))
        .await
}

/// Waits until the Job completes and returns its pod, read afresh.
async fn job_completes(ns: &TestNamespace, name: &str) -> Pod {
    let jobs: Api<Job> = ns.api();
    ns.wait_for(&jobs, name, "the Job to complete", 2 * MINUTE, |j: Option<&Job>| job_complete(j)).await;
    let pod = job_pod(ns, name).await;
    ns.api::<Pod>().get(&pod.name_any()).await.expect("the Job's pod")
}

/// Fails unless every regular container of the pod exited 0.
fn all_exited_zero(pod: &Pod) {
    for container in &pod.spec.as_ref().expect("a pod spec").containers {
        assert_eq!(
            exit_code(pod, &container.name),
            Some(0),
            "{} exits 0: {:?}",
            container.name,
            container_status(pod, &container.name)
        );
    }
}

/// Waits until the operator's `/metrics` has `sample` at `value`.
async fn metric_reaches(ns: &TestNamespace, operator: &Operator, sample: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + MINUTE;
    while operator.metric(sample).await != Some(value) {
        if tokio::time::Instant::now() > deadline {
            let metrics = operator.metrics().await;
            let ours: Vec<&str> = metrics.lines().filter(|l| l.starts_with("lameduck_")).collect();
            ns.fail(&format!("{sample} is not {value} within a minute:\n{}", ours.join("\n"))).await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the policy's status says `succeeded` shutdowns and `stuck` stuck pods.
async fn policy_status(ns: &TestNamespace, succeeded: i64, stuck: i32) {
    let policies: Api<ShutdownPolicy> = ns.api();
    let what = format!("status.shutdowns.succeeded = {succeeded}, status.stuckPods = {stuck}");
    ns.wait_for(&policies, "jobs", &what, MINUTE, |p: Option<&ShutdownPolicy>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.shutdowns.succeeded == succeeded && s.stuck_pods == stuck)
    })
    .await;
}

/// The one event of this reason, failing unless there is exactly one.
fn only<'a>(events: &'a [OperatorEvent], reason: &str) -> &'a OperatorEvent {
    let found: Vec<&OperatorEvent> = events.iter().filter(|e| e.reason == reason).collect();
    assert_eq!(found.len(), 1, "one {reason} event: {events:#?}");
    found[0]
}

/// The containers the `ShutdownRequested` events of attempts name ("attempt N (round R) on
/// <container>, <Method>: ..."), in the events' order.
fn requested_on(events: &[OperatorEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.reason == events::SHUTDOWN_REQUESTED)
        .filter_map(|e| e.note.split_once(") on ")?.1.split_once(',').map(|(c, _)| c.to_owned()))
        .collect()
}

#[tokio::test]
async fn a_bare_meshed_pod_succeeds() {
    let ns = TestNamespace::new("sc-bare").await;
    shutdown_policy(
        &ns,
        json!({"proxy": {"profile": "Lameduck"}, "completion": {"methods": ["PortForward"]}}),
    )
    .await;
    let operator = Operator::start(&ns, "solo", &[]).await;
    let _: Pod = ns.create(bare_pod("bare", 2, json!({"containers": [proxy_container(false)]}))).await;
    let pod = succeeds(&ns, "bare").await;

    all_exited_zero(&pod);
    assert!(finished_at(&pod, containers::LAMEDUCK_PROXY) >= finished_at(&pod, "main"));
    assert_eq!(
        attempted(&pod),
        [(containers::LAMEDUCK_PROXY.to_owned(), ShutdownMethod::PortForward)],
        "one attempt"
    );
    let events = operator_events(&ns, "bare").await;
    assert_eq!(requested_on(&events), [containers::LAMEDUCK_PROXY], "{events:#?}");
    let stopped = only(&events, events::PROXY_STOPPED);
    assert!(stopped.note.contains("lameduck-proxy exited with code 0"), "{}", stopped.note);
    assert!(stopped.note.contains("owned by nothing (a bare pod)"), "{}", stopped.note);

    metric_reaches(&ns, &operator, r#"lameduck_shutdowns_total{outcome="succeeded",owner="None"}"#, 1.0)
        .await;
    let as_job = operator.metric(r#"lameduck_shutdowns_total{outcome="succeeded",owner="Job"}"#).await;
    assert_eq!(as_job.unwrap_or(0.0), 0.0, "not counted as a Job's");
    policy_status(&ns, 1, 0).await;
    operator.stop().await;
    ns.finish().await;
}

/// A namespaced custom resource for pods to be owned by, as a workflow engine's would be.
const WORKFLOWS: &str = "workflows.e2e.lameduck.test";

/// Installs the `Workflow` CRD (once; it is shared and stays) and waits until it is served.
async fn workflow_crd(ns: &TestNamespace) -> ApiResource {
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": WORKFLOWS},
        "spec": {
            "group": "e2e.lameduck.test",
            "scope": "Namespaced",
            "names": {"plural": "workflows", "singular": "workflow", "kind": "Workflow", "listKind": "WorkflowList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            }],
        },
    }))
    .unwrap();
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => panic!("create the Workflow CRD: {err}"),
    }
    ns.wait_for(
        &crds,
        WORKFLOWS,
        "the Workflow CRD to be established",
        MINUTE,
        |c: Option<&CustomResourceDefinition>| {
            c.and_then(|c| c.status.as_ref()?.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
        },
    )
    .await;
    ApiResource {
        group: "e2e.lameduck.test".into(),
        version: "v1".into(),
        api_version: "e2e.lameduck.test/v1".into(),
        kind: "Workflow".into(),
        plural: "workflows".into(),
    }
}

#[tokio::test]
async fn a_pod_owned_by_a_custom_resource_succeeds() {
    let ns = TestNamespace::new("sc-crd").await;
    let resource = workflow_crd(&ns).await;
    let workflows: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {"name": "nightly"},
        "spec": {"steps": ["report"]},
    }))
    .unwrap();
    // Established can come a moment before the API server serves the new resource.
    let deadline = tokio::time::Instant::now() + MINUTE;
    let workflow = loop {
        match workflows.create(&PostParams::default(), &object).await {
            Ok(workflow) => break workflow,
            Err(err) if tokio::time::Instant::now() > deadline => panic!("create the Workflow: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };

    shutdown_policy(
        &ns,
        json!({"proxy": {"profile": "Lameduck"}, "completion": {"methods": ["PortForward"]}}),
    )
    .await;
    let operator = Operator::start(&ns, "solo", &[]).await;
    let mut pod = bare_pod("step", 2, json!({"containers": [proxy_container(false)]}));
    pod["metadata"]["ownerReferences"] = json!([{
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "name": workflow.name_any(),
        "uid": workflow.uid().expect("the Workflow's uid"),
        "controller": true,
    }]);
    let _: Pod = ns.create(pod).await;
    let pod = succeeds(&ns, "step").await;

    all_exited_zero(&pod);
    let events = operator_events(&ns, "step").await;
    let stopped = only(&events, events::PROXY_STOPPED);
    assert!(stopped.note.contains("owned by its Workflow"), "{}", stopped.note);
    metric_reaches(&ns, &operator, r#"lameduck_shutdowns_total{outcome="succeeded",owner="Other"}"#, 1.0)
        .await;
    policy_status(&ns, 1, 0).await;
    operator.stop().await;
    ns.finish().await;
}

#[tokio::test]
async fn three_sidecars_stop_in_the_policys_order_with_the_mesh_proxy_last() {
    let ns = TestNamespace::new("sc-three").await;
    shutdown_policy(
        &ns,
        json!({
            "sidecars": [
                {"containerName": "log-agent", "profile": "Custom", "methods": ["Signal"]},
                {"profile": "CloudSqlProxy", "methods": ["PortForward"]},
                {"profile": "Lameduck"},
            ],
            "completion": {"methods": ["PortForward"], "attemptTimeout": "20s"},
        }),
    )
    .await;
    let operator = Operator::start(&ns, "solo", &[]).await;
    // The mesh proxy first in the pod, so that the order can only come from the policy.
    let sidecars = json!([proxy_container(false), cloud_sql_proxy(), testapp_sidecar("log-agent", &[])]);
    let _: Job = ns.create(job("report", 2, json!({"containers": sidecars}))).await;
    let pod = job_completes(&ns, "report").await;

    assert_eq!(phase(&pod), "Succeeded");
    all_exited_zero(&pod);
    let mesh = finished_at(&pod, containers::LAMEDUCK_PROXY);
    for other in ["main", "log-agent", containers::CLOUD_SQL_PROXY] {
        assert!(mesh >= finished_at(&pod, other), "lameduck-proxy finished at {mesh}, before {other}");
    }
    // finishedAt has one-second resolution; the attempt record says the order exactly.
    assert!(finished_at(&pod, containers::CLOUD_SQL_PROXY) >= finished_at(&pod, "log-agent"));
    assert_eq!(
        attempted(&pod),
        [
            ("log-agent".to_owned(), ShutdownMethod::Signal),
            (containers::CLOUD_SQL_PROXY.to_owned(), ShutdownMethod::PortForward),
            (containers::LAMEDUCK_PROXY.to_owned(), ShutdownMethod::PortForward),
        ],
        "one attempt per sidecar, in the policy's order"
    );
    assert_eq!(exit_code(&pod, "lameduck-shutdown-1"), Some(0), "the signal was delivered");
    let events = operator_events(&ns, &pod.name_any()).await;
    assert_eq!(
        requested_on(&events),
        ["log-agent", containers::CLOUD_SQL_PROXY, containers::LAMEDUCK_PROXY],
        "{events:#?}"
    );
    let stopped = only(&events, events::PROXY_STOPPED);
    assert!(
        stopped.note.contains("log-agent, then cloud-sql-proxy, then lameduck-proxy exited with code 0"),
        "{}",
        stopped.note
    );
    assert!(stopped.note.contains("owned by its Job"), "{}", stopped.note);
    metric_reaches(&ns, &operator, r#"lameduck_shutdowns_total{outcome="succeeded",owner="Job"}"#, 1.0).await;
    policy_status(&ns, 1, 0).await;
    operator.stop().await;
    ns.finish().await;
}

#[tokio::test]
async fn an_istio_shaped_sidecar_is_stopped_through_quitquitquit() {
    let ns = TestNamespace::new("sc-istio").await;
    shutdown_policy(
        &ns,
        json!({"proxy": {"profile": "Istio"}, "completion": {"methods": ["EphemeralContainer"]}}),
    )
    .await;
    let operator = Operator::start(&ns, "solo", &[]).await;
    // pilot-agent's status port; Istio's profile takes its /quitquitquit as always on.
    let istio = testapp_sidecar(containers::ISTIO_PROXY, &["--quit-listen", "127.0.0.1:15020"]);
    let _: Job = ns.create(job("report", 2, json!({"containers": [istio]}))).await;
    let pod = job_completes(&ns, "report").await;

    assert_eq!(phase(&pod), "Succeeded");
    all_exited_zero(&pod);
    assert_eq!(
        attempted(&pod),
        [(containers::ISTIO_PROXY.to_owned(), ShutdownMethod::EphemeralContainer)],
        "one attempt"
    );
    assert_eq!(exit_code(&pod, "lameduck-shutdown-1"), Some(0), "its POST was answered 200");
    let events = operator_events(&ns, &pod.name_any()).await;
    assert_eq!(requested_on(&events), [containers::ISTIO_PROXY], "{events:#?}");
    let stopped = only(&events, events::PROXY_STOPPED);
    assert!(stopped.note.contains("istio-proxy exited with code 0"), "{}", stopped.note);
    metric_reaches(&ns, &operator, r#"lameduck_shutdowns_total{outcome="succeeded",owner="Job"}"#, 1.0).await;
    policy_status(&ns, 1, 0).await;
    operator.stop().await;
    ns.finish().await;
}

#[tokio::test]
async fn a_known_sidecar_the_policy_does_not_list_leaves_the_pod_stuck_untouched() {
    let ns = TestNamespace::new("sc-unlisted").await;
    shutdown_policy(
        &ns,
        json!({"proxy": {"profile": "Lameduck"}, "completion": {"methods": ["PortForward"]}}),
    )
    .await;
    let operator = Operator::start(&ns, "solo", &[]).await;
    for reason in ["stopping", "gave_up", "unlisted_sidecar", "completion_disabled", "refused", "no_policy"] {
        let sample = format!("lameduck_stuck_pods{{reason=\"{reason}\"}}");
        assert_eq!(operator.metric(&sample).await, Some(0.0), "{sample} is exported, 0");
    }
    // cloud-sql-proxy serving forever, with no quit endpoint; the policy lists only the proxy.
    let sidecars = json!([proxy_container(false), testapp_sidecar(containers::CLOUD_SQL_PROXY, &[])]);
    let _: Job = ns.create(job("report", 2, json!({"containers": sidecars}))).await;
    let pod = job_pod(&ns, "report").await;
    let name = pod.name_any();
    let pods: Api<Pod> = ns.api();
    ns.wait_for(&pods, &name, "main to exit", MINUTE, |p: Option<&Pod>| {
        p.is_some_and(|p| exit_code(p, "main").is_some())
    })
    .await;

    policy_status(&ns, 0, 1).await;
    metric_reaches(&ns, &operator, r#"lameduck_stuck_pods{reason="unlisted_sidecar"}"#, 1.0).await;
    ns.holds_for(
        &pods,
        &name,
        "Running, both sidecars up, no attempt",
        Duration::from_secs(10),
        |p: &Pod| {
            phase(p) == "Running"
                && is_running(p, containers::LAMEDUCK_PROXY)
                && is_running(p, containers::CLOUD_SQL_PROXY)
                && p.annotations().get(annotations::SHUTDOWN_ATTEMPTS).is_none()
        },
    )
    .await;
    let pod = pods.get(&name).await.unwrap();
    assert_eq!(exit_code(&pod, "main"), Some(0));
    assert!(pod.spec.as_ref().is_some_and(|s| s.ephemeral_containers.is_none()), "no ephemeral container");
    let events = operator_events(&ns, &name).await;
    assert_eq!(events, [], "the operator says nothing on the pod");
    assert_eq!(operator.metric(r#"lameduck_stuck_pods{reason="stopping"}"#).await, Some(0.0));

    // Deleted, the pod no longer counts.
    let jobs: Api<Job> = ns.api();
    jobs.delete("report", &DeleteParams::foreground()).await.expect("Job deleted");
    let deadline = tokio::time::Instant::now() + MINUTE;
    while pods.get_opt(&name).await.expect("read the pod").is_some() {
        if tokio::time::Instant::now() > deadline {
            ns.fail("the Job's pod is still there a minute after the Job was deleted").await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    metric_reaches(&ns, &operator, r#"lameduck_stuck_pods{reason="unlisted_sidecar"}"#, 0.0).await;
    policy_status(&ns, 0, 0).await;
    operator.stop().await;
    ns.finish().await;
}

#[tokio::test]
async fn an_on_failure_bare_pod_is_finished_after_its_main_restarts() {
    let ns = TestNamespace::new("sc-onfailure").await;
    shutdown_policy(
        &ns,
        json!({"proxy": {"profile": "Lameduck"}, "completion": {"methods": ["PortForward"]}}),
    )
    .await;
    let operator = Operator::start(&ns, "solo", &[]).await;
    let mut spec = bare_pod("retry", 2, json!({"containers": [proxy_container(false)]}));
    let pod_spec = &mut spec["spec"];
    pod_spec["restartPolicy"] = json!("OnFailure");
    pod_spec["volumes"] = json!([{"name": "state", "emptyDir": {}}]);
    let main = &mut pod_spec["containers"][0];
    main["volumeMounts"] = json!([{"name": "state", "mountPath": "/state"}]);
    main["command"].as_array_mut().unwrap().extend([json!("--fail-once-marker"), json!("/state/failed")]);
    let _: Pod = ns.create(spec).await;
    let pod = succeeds(&ns, "retry").await;

    all_exited_zero(&pod);
    assert_eq!(container_status(&pod, "main").map(|s| s.restart_count), Some(1), "main ran twice");
    assert_eq!(container_status(&pod, containers::LAMEDUCK_PROXY).map(|s| s.restart_count), Some(0));
    // One attempt, after main's second (last) run: none while the first failure awaited its restart.
    let log = attempts(&pod);
    assert_eq!(attempted(&pod), [(containers::LAMEDUCK_PROXY.to_owned(), ShutdownMethod::PortForward)]);
    let main_exit = finished_at(&pod, "main");
    assert!(
        log.0[0].started >= main_exit,
        "attempt at {} before main's last exit at {main_exit}",
        log.0[0].started
    );
    let events = operator_events(&ns, "retry").await;
    assert!(
        only(&events, events::PROXY_STOPPED).note.contains("owned by nothing (a bare pod)"),
        "{events:#?}"
    );
    metric_reaches(&ns, &operator, r#"lameduck_shutdowns_total{outcome="succeeded",owner="None"}"#, 1.0)
        .await;
    policy_status(&ns, 1, 0).await;
    operator.stop().await;
    ns.finish().await;
}

#[tokio::test]
async fn a_sidecar_that_dies_of_the_signal_fails_the_pod_and_says_which() {
    let ns = TestNamespace::new("sc-143").await;
    shutdown_policy(
        &ns,
        json!({
            "sidecars": [
                {"containerName": "log-agent", "profile": "Custom", "methods": ["Signal"]},
                {"profile": "Lameduck"},
            ],
            "completion": {"methods": ["PortForward"]},
        }),
    )
    .await;
    let operator = Operator::start(&ns, "solo", &[]).await;
    // As a program with no SIGTERM handler ends: 128 + 15.
    let sidecars =
        json!([proxy_container(false), testapp_sidecar("log-agent", &["--term-exit-code", "143"])]);
    let _: Job = ns.create(job("report", 2, json!({"containers": sidecars}))).await;
    let jobs: Api<Job> = ns.api();
    ns.wait_for(&jobs, "report", "the Job to fail", 2 * MINUTE, |j: Option<&Job>| job_has(j, "Failed")).await;
    let pod = job_pod(&ns, "report").await;
    let pod = ns.api::<Pod>().get(&pod.name_any()).await.unwrap();

    assert_eq!(phase(&pod), "Failed");
    assert_eq!(exit_code(&pod, "main"), Some(0));
    assert_eq!(exit_code(&pod, "log-agent"), Some(143));
    assert_eq!(exit_code(&pod, containers::LAMEDUCK_PROXY), Some(0), "the proxy is still stopped, last");
    assert_eq!(
        attempted(&pod),
        [
            ("log-agent".to_owned(), ShutdownMethod::Signal),
            (containers::LAMEDUCK_PROXY.to_owned(), ShutdownMethod::PortForward),
        ]
    );
    let events = operator_events(&ns, &pod.name_any()).await;
    assert!(!events.iter().any(|e| e.reason == events::PROXY_STOPPED), "{events:#?}");
    let failed = only(&events, events::PROXY_FAILED);
    assert!(failed.note.contains("sidecar log-agent exited with code 143"), "{}", failed.note);
    assert!(failed.note.contains("its Job may count a failure"), "{}", failed.note);
    metric_reaches(&ns, &operator, r#"lameduck_shutdowns_total{outcome="failed",owner="Job"}"#, 1.0).await;
    let policies: Api<ShutdownPolicy> = ns.api();
    ns.wait_for(&policies, "jobs", "status.shutdowns.failed = 1", MINUTE, |p: Option<&ShutdownPolicy>| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| s.shutdowns.failed == 1 && s.stuck_pods == 0)
    })
    .await;
    operator.stop().await;
    ns.finish().await;
}

#[tokio::test]
async fn the_stopped_event_names_only_the_sidecars_the_pod_has() {
    let ns = TestNamespace::new("sc-absent").await;
    // One policy for a namespace whose pods carry some of its sidecars, not all.
    shutdown_policy(
        &ns,
        json!({
            "sidecars": [
                {"containerName": "log-agent", "profile": "Custom", "methods": ["Signal"]},
                {"profile": "CloudSqlProxy"},
                {"profile": "Lameduck"},
            ],
            "completion": {"methods": ["PortForward"]},
        }),
    )
    .await;
    let _operator = Operator::start(&ns, "solo", &[]).await;
    let _: Job = ns.create(job("report", 2, json!({"containers": [proxy_container(false)]}))).await;
    let pod = job_completes(&ns, "report").await;

    all_exited_zero(&pod);
    assert_eq!(attempted(&pod), [(containers::LAMEDUCK_PROXY.to_owned(), ShutdownMethod::PortForward)]);
    let events = operator_events(&ns, &pod.name_any()).await;
    let stopped = only(&events, events::PROXY_STOPPED);
    assert!(stopped.note.starts_with("lameduck-proxy exited with code 0"), "{}", stopped.note);
    assert!(
        !stopped.note.contains("log-agent") && !stopped.note.contains("cloud-sql-proxy"),
        "the pod has no such sidecar: {}",
        stopped.note
    );
    ns.finish().await;
}
