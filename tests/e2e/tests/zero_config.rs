//! The chart with its defaults and no ShutdownPolicy at all, as a new user installs it: the
//! operator's `--default-profile auto` finishes the Jobs that Linkerd's and Istio's injectors
//! marked, from the pods as its watch cache holds them. A Linkerd-injected Job with `/shutdown`
//! enabled completes; with it disabled, the operator gives up at once (one `ShutdownGaveUp`
//! event, `lameduck_stuck_pods{reason="gave_up"}`) rather than call what cannot answer; an
//! Istio-injected Job completes. The sidecars are the test app playing each proxy: its quit
//! endpoint on the mesh's admin port and path.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::{Api, ResourceExt};
use lameduck_api::{
    names::{annotations, containers, env, events, images, paths, ports},
    shape::INJECTORS,
};
use lameduck_e2e::{
    TestNamespace, exit_code, helm, install_chart,
    operator::sample_value,
    operator_events, operator_metrics,
    workloads::{job, job_complete, job_pod},
};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

/// The injector mark of `profile`'s mesh, from the table the operator reads.
fn mark(profile: lameduck_api::ProxyProfile) -> &'static str {
    INJECTORS.iter().find(|i| i.profile == profile).map(|i| i.mark).expect("a known injector")
}

/// A Job whose pod carries `annotation` (an injector's mark) and the sidecar `sidecar`.
fn injected_job(name: &str, annotation: &str, sidecar: serde_json::Value) -> serde_json::Value {
    let mut job = job(name, 2, json!({"containers": [sidecar]}));
    job["spec"]["template"]["metadata"] = json!({"annotations": {annotation: "injected-by-the-test"}});
    job
}

/// The test app playing a mesh proxy: its quit endpoint at `port` and `path` on loopback.
fn proxy(name: &str, port: u16, path: &str, env: serde_json::Value) -> serde_json::Value {
    json!({
        "name": name, "image": images::TESTAPP, "imagePullPolicy": "IfNotPresent",
        "command": ["lameduck-testapp", "--listen", "127.0.0.1:0",
                    "--quit-listen", format!("127.0.0.1:{port}"), "--quit-path", path],
        "env": env,
    })
}

#[tokio::test]
async fn the_charts_defaults_finish_injected_jobs_with_no_policy() {
    let system = TestNamespace::new("zero").await;
    let work = TestNamespace::new("zero-jobs").await;
    let release = system.name.clone();
    // The chart's defaults; only its scope is this test's namespace (other tests run beside it).
    install_chart(&release, &system.name, &work.name, &[]);

    let linkerd = |enabled: &str| {
        proxy(
            containers::LINKERD_PROXY,
            ports::ADMIN,
            paths::SHUTDOWN,
            json!([{"name": env::LINKERD_SHUTDOWN_ENDPOINT_ENABLED, "value": enabled}]),
        )
    };
    let linkerd_mark = mark(lameduck_api::ProxyProfile::Linkerd);
    let istio_mark = mark(lameduck_api::ProxyProfile::Istio);
    let istio = proxy(containers::ISTIO_PROXY, ports::ISTIO_STATUS, paths::QUITQUITQUIT, json!([]));
    for (name, annotation, sidecar) in [
        ("linkerd", linkerd_mark, linkerd("true")),
        ("linkerd-off", linkerd_mark, linkerd("false")),
        ("istio", istio_mark, istio),
    ] {
        let _: Job = work.create(injected_job(name, annotation, sidecar)).await;
    }

    let jobs: Api<Job> = work.api();
    for (name, sidecar) in [("linkerd", containers::LINKERD_PROXY), ("istio", containers::ISTIO_PROXY)] {
        work.wait_for(&jobs, name, "the injected Job to complete", 2 * MINUTE, |j: Option<&Job>| {
            job_complete(j)
        })
        .await;
        let pod = job_pod(&work, name).await;
        assert_eq!(exit_code(&pod, "main"), Some(0), "{name}");
        assert_eq!(exit_code(&pod, sidecar), Some(0), "{name}: the proxy quit through its endpoint");
        let said = operator_events(&work, &pod.name_any()).await;
        assert!(said.iter().any(|e| e.reason == events::PROXY_STOPPED), "{name}: {said:?}");
        assert!(
            pod.annotations().contains_key(annotations::SHUTDOWN_ATTEMPTS),
            "{name}: the operator's record is on the pod"
        );
    }

    // `/shutdown` off: nothing would answer, so no call is made and the operator says so once.
    let off = job_pod(&work, "linkerd-off").await;
    let deadline = Instant::now() + 2 * MINUTE;
    let gave_up = loop {
        let said = operator_events(&work, &off.name_any()).await;
        if let Some(event) = said.iter().find(|e| e.reason == events::SHUTDOWN_GAVE_UP) {
            break event.clone();
        }
        assert!(Instant::now() < deadline, "no ShutdownGaveUp event: {said:?}\n{}", work.dump().await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(gave_up.note.contains(env::LINKERD_SHUTDOWN_ENDPOINT_ENABLED), "{}", gave_up.note);
    let off = job_pod(&work, "linkerd-off").await;
    assert!(lameduck_e2e::is_running(&off, containers::LINKERD_PROXY), "left running");
    let deadline = Instant::now() + MINUTE;
    loop {
        let stuck: f64 = operator_metrics(&system)
            .await
            .iter()
            .filter_map(|m| sample_value(m, r#"lameduck_stuck_pods{reason="gave_up"}"#))
            .sum();
        // Both replicas sum up their caches; each counts the pod once.
        if stuck >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "lameduck_stuck_pods{{reason=\"gave_up\"}} stayed {stuck}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    helm(&["uninstall", &release, "--namespace", &system.name, "--wait"]);
    work.finish().await;
    system.finish().await;
}
