//! The Prometheus harness on the local cluster: pod discovery with the `prometheus.io/*`
//! annotations the chart uses finds an annotated proxy pod, scrapes it with namespace, pod and
//! container labels, leaves an unannotated pod alone, and loads and evaluates the alert rules.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use lameduck_api::names::{containers, images};
use lameduck_e2e::{TestNamespace, is_running, prometheus::Prometheus};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

/// A pod running lameduck's proxy, which serves `/metrics` on its admin port 4191. It declares
/// two ports, as the chart's operator pod does: discovery makes a target of each, and both become
/// the annotated port, one scrape.
fn proxy_pod(name: &str, annotations: serde_json::Value) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": containers::LAMEDUCK_PROXY,
                "image": images::PROXY,
                "imagePullPolicy": "IfNotPresent",
                "args": ["--inbound-target", "127.0.0.1:8080"],
                "ports": [{"name": "admin", "containerPort": 4191}, {"name": "inbound", "containerPort": 4143}],
            }],
        },
    })
}

#[tokio::test]
async fn prometheus_scrapes_annotated_pods_and_evaluates_the_alert_rules() {
    let ns = TestNamespace::new("prom").await;
    let pods: Api<Pod> = ns.api();
    let scrape = json!({
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "4191",
        "prometheus.io/path": "/metrics",
    });
    ns.create::<Pod>(proxy_pod("scraped", scrape)).await;
    // Same metrics endpoint, no annotation: relabelling must drop it.
    ns.create::<Pod>(proxy_pod("ignored", json!({}))).await;

    let mut prometheus = Prometheus::start("prom", &[&ns.name]).await;
    let ready = prometheus.wait_ready().await;
    for name in ["scraped", "ignored"] {
        ns.wait_for(&pods, name, "the proxy running", MINUTE, |p: Option<&Pod>| {
            p.is_some_and(|p| is_running(p, containers::LAMEDUCK_PROXY))
        })
        .await;
    }
    let running = prometheus.uptime();

    let series = format!(r#"lameduck_proxy_draining{{namespace="{}", pod="scraped"}}"#, ns.name);
    let samples = prometheus
        .wait_for_samples(&series, |s| !s.is_empty(), MINUTE)
        .await
        .unwrap_or_else(|e| panic!("the annotated pod was not scraped: {e}"));
    let first_scrape = prometheus.uptime();
    println!(
        "prometheus ready after {ready:?}; pods running after {running:?}; first sample of the pod after \
         {first_scrape:?} (all since Prometheus::start)"
    );
    let (labels, value) = &samples[0];
    assert_eq!(labels["container"], containers::LAMEDUCK_PROXY, "{labels:?}");
    assert_eq!(labels["job"], "kubernetes-pods", "{labels:?}");
    assert!(labels["instance"].ends_with(":4191"), "the port annotation sets the address: {labels:?}");
    assert_eq!(*value, 0.0, "a running proxy is not draining");

    // One series per pod (the two ports' targets are one), the unannotated pod is discovered but
    // dropped, and discovery stays in this namespace.
    let up = prometheus.query(&format!(r#"up{{namespace="{}"}}"#, ns.name)).await;
    let pods_up: Vec<&str> = up.iter().map(|(l, _)| l["pod"].as_str()).collect();
    assert_eq!(pods_up, ["scraped"], "{}", prometheus.describe().await);
    let targets = prometheus.targets().await;
    let active = targets["activeTargets"].as_array().unwrap();
    assert!(active.iter().all(|t| t["labels"]["namespace"] == ns.name.as_str()), "{active:#?}");
    let dropped = targets["droppedTargets"].as_array().unwrap();
    assert!(
        dropped.iter().any(|t| t["discoveredLabels"]["__meta_kubernetes_pod_name"] == "ignored"),
        "the unannotated pod was not discovered: {dropped:#?}"
    );

    // The shipped rules are loaded, and every one evaluates without error once it has run.
    let alerts = prometheus.alert_names().await;
    assert!(alerts.iter().any(|a| a == "LameduckStuckPods"), "{alerts:?}");
    let deadline = tokio::time::Instant::now() + MINUTE;
    loop {
        let rules = prometheus.rules().await;
        let all: Vec<&serde_json::Value> =
            rules["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
        let broken: Vec<_> = all.iter().filter(|r| r["health"] == "err").collect();
        assert!(broken.is_empty(), "rules failed to evaluate: {broken:#?}");
        if all.iter().all(|r| r["health"] == "ok") {
            println!("{} alert rules loaded and evaluated: {alerts:?}", all.len());
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "rules not evaluated within a minute: {all:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ns.finish().await;
}
