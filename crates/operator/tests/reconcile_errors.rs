//! Error paths of the reconciler that a real API server will not produce on demand, against
//! kube's mock service: lost races on the attempt record and on the result, and a failing API.

use std::{sync::Arc, time::Duration};

use http::{Request, Response};
use kube::{
    Client,
    client::Body,
    runtime::{controller::Action as Requeue, reflector, watcher},
};
use lameduck_api::{ShutdownPolicy, names::annotations};
use lameduck_operator::{
    controller::pod::SlimPod,
    controller::reconcile::{Context, Error, error_policy, reconcile},
};
use serde_json::json;
use tokio::sync::watch;
use tower_test::mock::Handle;

/// A stuck pod: main exited 5s ago, the proxy (its `/shutdown` on) runs, no attempt yet.
fn stuck_pod() -> SlimPod {
    pod(json!({"running": {}}), None)
}

/// The pod with its proxy in `proxy_state` and `annotations`.
fn pod(proxy_state: serde_json::Value, annotations: Option<serde_json::Value>) -> SlimPod {
    let finished = k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(5);
    serde_json::from_value(json!({
        "metadata": {
            "name": "report-abc", "namespace": "jobs", "uid": "u-1", "resourceVersion": "41",
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "report", "uid": "j-1"}],
            "annotations": annotations.unwrap_or(json!({})),
        },
        "spec": {"restartPolicy": "Never", "containers": [
            {"name": "main"},
            {"name": "lameduck-proxy", "env": [{"name": "LAMEDUCK_PROXY_ENABLE_SHUTDOWN_ENDPOINT", "value": "true"}]},
        ]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "main", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "finishedAt": finished.to_string()}}},
            {"name": "lameduck-proxy", "restartCount": 0, "state": proxy_state},
        ]},
    }))
    .unwrap()
}

/// The mock API server's end.
type ApiServer = Handle<Request<Body>, Response<Body>>;

/// A context whose client is the mock, with one Lameduck policy for namespace `jobs`.
fn context() -> (Arc<Context>, ApiServer, watch::Sender<bool>) {
    context_with(false)
}

/// The same, in `--dry-run` when `dry_run`.
fn context_with(dry_run: bool) -> (Arc<Context>, ApiServer, watch::Sender<bool>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "jobs");
    let (policies, mut writer) = reflector::store::<ShutdownPolicy>();
    let policy: ShutdownPolicy = serde_json::from_value(json!({
        "apiVersion": "lameduck.io/v1alpha1", "kind": "ShutdownPolicy",
        "metadata": {"name": "jobs", "namespace": "jobs", "creationTimestamp": "2026-11-21T00:00:00Z"},
        "spec": {"proxy": {"profile": "Lameduck"}, "completion": {"methods": ["PortForward"]}},
    }))
    .unwrap();
    writer.apply_watcher_event(&watcher::Event::Apply(policy));
    let (mut ctx, leader_tx) = Context::test(client, policies);
    ctx.settings.dry_run = dry_run;
    (Arc::new(ctx), handle, leader_tx)
}

/// The delay of a requeue, read from its `Debug` text (kube keeps the field private).
fn requeue_seconds(action: &Requeue) -> f64 {
    let text = format!("{action:?}");
    let inner = text.split("Some(").nth(1).and_then(|rest| rest.split(')').next()).expect("a requeue delay");
    match inner.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().unwrap() / 1000.0,
        None => inner.strip_suffix('s').unwrap().parse().unwrap(),
    }
}

fn status(code: u16, reason: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
        "message": format!("simulated {reason}")});
    Response::builder().status(code).body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap()
}

#[tokio::test]
async fn a_lost_race_on_the_attempt_record_makes_no_call() {
    let (ctx, mut server, _leader) = context();
    let api = tokio::spawn(async move {
        let (request, respond) = server.next_request().await.expect("the attempt is written first");
        assert_eq!(request.method(), http::Method::PATCH);
        assert_eq!(request.uri().path(), "/api/v1/namespaces/jobs/pods/report-abc");
        let body = http_body_util::BodyExt::collect(request.into_body()).await.unwrap().to_bytes();
        let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
        // Conditional on the cached version, and the attempt is in it before any call.
        assert_eq!(patch["metadata"]["resourceVersion"], "41");
        let log = patch["metadata"]["annotations"][annotations::SHUTDOWN_ATTEMPTS].as_str().unwrap();
        assert!(log.contains("PortForward"), "{log}");
        respond.send_response(status(409, "Conflict"));
        // Nothing else: no port-forward, no event.
        // (`None`: the client was dropped, which also means no call.)
        let next = tokio::time::timeout(Duration::from_millis(300), server.next_request()).await;
        if let Ok(Some((request, _))) = next {
            panic!("a call was made after losing the record: {} {}", request.method(), request.uri());
        }
    });
    let action = reconcile(Arc::new(stuck_pod()), ctx).await.expect("a conflict is not an error");
    assert_eq!(action, Requeue::requeue(Duration::from_millis(500)));
    api.await.unwrap();
}

#[tokio::test]
async fn an_api_failure_is_a_counted_reconcile_error_and_a_retry() {
    let (ctx, mut server, _leader) = context();
    let api = tokio::spawn(async move {
        let (_, respond) = server.next_request().await.expect("the attempt is written first");
        respond.send_response(status(500, "InternalError"));
    });
    let pod = Arc::new(stuck_pod());
    let error = reconcile(pod.clone(), ctx.clone()).await.expect_err("the record could not be written");
    assert!(matches!(error, Error::Kube(_)), "{error}");
    // Each failure in a row waits longer: 5s, 10s, 20s... each cut by up to half (jitter).
    let waits: Vec<Requeue> = (0..4).map(|_| error_policy(pod.clone(), &error, ctx.clone())).collect();
    for (i, wait) in waits.iter().enumerate() {
        let full = Duration::from_secs(5 << i);
        let seconds = requeue_seconds(wait);
        assert!(
            (full.as_secs_f64() / 2.0..=full.as_secs_f64()).contains(&seconds),
            "failure {}: {seconds}s is not within {:?}..={full:?}",
            i + 1,
            full / 2
        );
    }
    assert_eq!(ctx.metrics.reconcile_errors.with_label_values(&["kube_api"]).get(), 4);
    api.await.unwrap();
}

#[tokio::test]
async fn the_result_is_written_once_and_conditionally() {
    let (ctx, mut server, _leader) = context();
    let attempts = json!({annotations::SHUTDOWN_ATTEMPTS:
        r#"[{"number":1,"round":1,"method":"PortForward","started":"2026-11-21T08:00:00Z","outcome":{"kind":"sent"}}]"#});
    let done = pod(json!({"terminated": {"exitCode": 0}}), Some(attempts));
    let api = tokio::spawn(async move {
        let (request, respond) = server.next_request().await.expect("the result is written");
        assert_eq!(request.method(), http::Method::PATCH);
        let body = http_body_util::BodyExt::collect(request.into_body()).await.unwrap().to_bytes();
        let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
        // Conditional: a second replica (or a stale cache) cannot count it again.
        assert_eq!(patch["metadata"]["resourceVersion"], "41");
        assert_eq!(patch["metadata"]["annotations"][annotations::SHUTDOWN_RESULT], "succeeded");
        respond.send_response(status(409, "Conflict"));
        let next = tokio::time::timeout(Duration::from_millis(300), server.next_request()).await;
        if let Ok(Some((request, _))) = next {
            panic!("a lost result write was followed by {} {}", request.method(), request.uri());
        }
    });
    let action = reconcile(Arc::new(done), ctx.clone()).await.expect("a conflict is not an error");
    assert_eq!(action, Requeue::requeue(Duration::from_millis(500)));
    assert_eq!(
        ctx.metrics.shutdowns.with_label_values(&["succeeded", "Job"]).get(),
        0,
        "counted only once written"
    );
    api.await.unwrap();
}

#[tokio::test]
async fn a_follower_touches_nothing() {
    let (ctx, mut server, leader) = context();
    leader.send_replace(false);
    let action = reconcile(Arc::new(stuck_pod()), ctx).await.unwrap();
    assert_eq!(action, Requeue::await_change());
    let next = tokio::time::timeout(Duration::from_millis(100), server.next_request()).await;
    assert!(matches!(next, Err(_) | Ok(None)), "a follower made a request");
}

#[tokio::test]
async fn a_dry_run_that_would_give_up_says_so_and_writes_nothing_to_the_pod() {
    let (ctx, mut server, _leader) = context_with(true);
    // The proxy's /shutdown is off and the policy lists PortForward alone: nothing can work.
    let mut off = stuck_pod();
    off.spec.containers[1].details = None;
    let api = tokio::spawn(async move {
        let (request, respond) = server.next_request().await.expect("the decision is said");
        assert_eq!(request.method(), http::Method::POST);
        assert!(request.uri().path().ends_with("/events"), "{}", request.uri());
        let body = http_body_util::BodyExt::collect(request.into_body()).await.unwrap().to_bytes();
        let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(event["reason"], lameduck_api::names::events::DRY_RUN);
        assert!(event["note"].as_str().unwrap().contains("would give up"), "{event}");
        respond.send_response(Response::builder().status(201).body(Body::from(body.to_vec())).unwrap());
        let next = tokio::time::timeout(Duration::from_millis(300), server.next_request()).await;
        if let Ok(Some((request, _))) = next {
            panic!("a dry run wrote {} {}", request.method(), request.uri());
        }
    });
    let action = reconcile(Arc::new(off), ctx.clone()).await.unwrap();
    assert_eq!(action, Requeue::await_change());
    assert_eq!(ctx.metrics.shutdowns.with_label_values(&["gave_up", "Job"]).get(), 0);
    api.await.unwrap();
}

#[tokio::test]
async fn a_caught_panic_is_counted_and_backed_off_like_an_api_error() {
    let (ctx, _server, _leader) = context();
    let pod = Arc::new(stuck_pod());
    let error = Error::Panic("a bug".into());
    let wait = error_policy(pod, &error, ctx.clone());
    assert!((2.5..=5.0).contains(&requeue_seconds(&wait)), "{wait:?}");
    assert_eq!(ctx.metrics.reconcile_errors.with_label_values(&["panic"]).get(), 1);
}
