//! Prometheus as users run it, on the local cluster: upstream Prometheus with Kubernetes service
//! discovery, run by the Prometheus Operator (`lameduck_e2e::prometheus_operator`), and the chart
//! installed with its monitoring objects on (the operator's CRDs are served, so it renders them).
//! Prometheus finds the operator pods through the chart's ServiceMonitor (and, as users with the
//! usual annotation-based job also do, through their `prometheus.io/*` annotations), loads the
//! chart's PrometheusRule, fires `LameduckStuckPods` for a Job pod that no ShutdownPolicy covers
//! (stuck with reason `no_policy`: its main container exited, its proxy runs on), and resolves it
//! once a ShutdownPolicy lets lameduck finish the pod, as the alert's runbook advises; the
//! shutdown shows in `lameduck_shutdown_attempts_total`.
//!
//! The shipped alert waits `for: 10m`. The test does not change the shipped rule: it sets the
//! chart value `metrics.prometheusRule.for.LameduckStuckPods` (which replaces only that `for:`)
//! to 10s, so the same expression fires within the test.

use std::time::{Duration, Instant};

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::Api;
use lameduck_api::{ShutdownPolicy, names::containers};
use lameduck_e2e::{
    TestNamespace, container_status, helm, install_chart,
    prometheus::Sample,
    prometheus_operator::{
        OperatedPrometheus, PrometheusOperator, Selection, pod_annotations_job, require_crds,
    },
    workloads::{job, job_complete, job_pod, proxy_container},
};
use serde_json::{Value, json};

const MINUTE: Duration = Duration::from_secs(60);
/// The label the Prometheus object selects the chart's ServiceMonitor and PrometheusRule by, set
/// through the chart's `metrics.*.labels` values (as kube-prometheus-stack selects on `release`).
const SELECT: &str = "prometheus";
/// The stuck-pods alert's `for:` in this test (the chart ships 10m).
const STUCK_FOR: &str = "10s";

/// The alert names of the shipped rule file, in order.
fn shipped_alerts() -> Vec<String> {
    let path = lameduck_e2e::prometheus::alert_rules_file();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file: Value = serde_yaml_ng::from_str(&text).expect("alert rules parse");
    file["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect()
}

fn alert_states(samples: &[Sample]) -> Vec<&str> {
    samples.iter().map(|(labels, _)| labels.get("alertstate").map_or("", String::as_str)).collect()
}

#[tokio::test]
async fn the_prometheus_operator_scrapes_the_chart_and_its_stuck_pods_alert_fires_and_resolves() {
    let started = Instant::now();
    let monitoring = TestNamespace::new("promop-mon").await;
    let system = TestNamespace::new("promop").await;
    let work = TestNamespace::new("promop-jobs").await;
    require_crds(&system.client).await;
    let operator = PrometheusOperator::start(&[&monitoring.name, &system.name]).await;

    let release = system.name.clone();
    let fullname = format!("{release}-lameduck");
    let t = Instant::now();
    install_chart(
        &release,
        &system.name,
        &work.name,
        &[
            "operator.statusInterval=1s",
            "metrics.serviceMonitor.interval=2s",
            &format!("metrics.serviceMonitor.labels.{SELECT}={}", monitoring.name),
            &format!("metrics.prometheusRule.labels.{SELECT}={}", monitoring.name),
            &format!("metrics.prometheusRule.for.LameduckStuckPods={STUCK_FOR}"),
        ],
    );
    println!("helm install --wait: {:.1}s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let selection = Selection {
        labels: [(SELECT, monitoring.name.as_str())].into(),
        namespaces: vec![system.name.as_str()],
        // The chart's pods carry the prometheus.io/* annotations too: users with that job scrape
        // each operator pod twice, which the rules' max() must absorb.
        additional_scrape_configs: vec![pod_annotations_job(&[&system.name])],
    };
    let prometheus = OperatedPrometheus::create(&monitoring, "lameduck", &selection).await;
    let api = prometheus.api;
    println!("Prometheus object to Ready pod and API: {:.1}s", t.elapsed().as_secs_f64());

    // (a) Both operator replicas are up, found through the ServiceMonitor: the operator's labels
    // for a ServiceMonitor's targets (job = the Service, endpoint = the port name).
    let t = Instant::now();
    let service = format!("{fullname}-metrics");
    let up = format!(r#"up{{namespace="{}", job="{service}"}}"#, system.name);
    let samples = match api
        .wait_for_samples(&up, |s| s.len() == 2 && s.iter().all(|(_, v)| *v == 1.0), 2 * MINUTE)
        .await
    {
        Ok(samples) => samples,
        Err(e) => panic!(
            "the operator pods are not up: {e}\n{}\n{}",
            prometheus.describe().await,
            operator.log_tail(30)
        ),
    };
    println!("both operator pods up in Prometheus after {:.1}s", t.elapsed().as_secs_f64());
    for (labels, _) in &samples {
        assert_eq!(labels["service"], service, "{labels:?}");
        assert_eq!(labels["endpoint"], "metrics", "{labels:?}");
        assert!(labels["pod"].starts_with(&fullname), "{labels:?}");
    }
    let targets = api.targets().await;
    let pools: Vec<&str> = targets["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["labels"]["job"] == service.as_str())
        .filter_map(|t| t["scrapePool"].as_str())
        .collect();
    let pool = format!("serviceMonitor/{}/{fullname}/0", system.name);
    assert_eq!(pools, [pool.as_str(), pool.as_str()], "scraped through the chart's ServiceMonitor");
    // And through their annotations, by Kubernetes pod discovery: one target per pod although
    // each declares two ports (both become the annotated one).
    let by_annotations = format!(r#"up{{namespace="{}", job="kubernetes-pods"}}"#, system.name);
    let samples = match api
        .wait_for_samples(&by_annotations, |s| s.len() == 2 && s.iter().all(|(_, v)| *v == 1.0), MINUTE)
        .await
    {
        Ok(samples) => samples,
        Err(e) => panic!("the operator pods are not scraped by annotations: {e}"),
    };
    for (labels, _) in &samples {
        assert!(labels["pod"].starts_with(&fullname), "{labels:?}");
        assert_eq!(labels["container"], "operator", "{labels:?}");
        assert!(labels["instance"].ends_with(":9090"), "the port annotation sets the address: {labels:?}");
    }

    // (b) The PrometheusRule is loaded, with every shipped alert, and all evaluate cleanly; only
    // the stuck-pods alert's `for:` differs from the file's.
    let shipped = shipped_alerts();
    let deadline = Instant::now() + MINUTE;
    let rules = loop {
        let groups = api.rules().await["groups"].as_array().cloned().unwrap_or_default();
        let ours: Vec<&Value> = groups
            .iter()
            .filter(|g| {
                g["name"] == "lameduck" && g["file"].as_str().is_some_and(|f| f.contains(&system.name))
            })
            .collect();
        let rules: Vec<Value> =
            ours.iter().flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default()).collect();
        let broken: Vec<&Value> = rules.iter().filter(|r| r["health"] == "err").collect();
        assert!(broken.is_empty(), "rules failed to evaluate: {broken:#?}");
        if !rules.is_empty() && rules.iter().all(|r| r["health"] == "ok") {
            break rules;
        }
        assert!(
            Instant::now() < deadline,
            "lameduck's rules not loaded and evaluated within a minute: {groups:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let names: Vec<&str> =
        rules.iter().filter(|r| r["type"] == "alerting").filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, shipped, "the PrometheusRule holds the shipped alerts");
    let stuck_rule = rules.iter().find(|r| r["name"] == "LameduckStuckPods").unwrap();
    assert_eq!(stuck_rule["query"], "max by (namespace, reason) (lameduck_stuck_pods) > 0");
    assert_eq!(stuck_rule["duration"], 10.0, "{stuck_rule}");
    println!(
        "{} alert rules loaded and evaluated after {:.1}s",
        names.len(),
        started.elapsed().as_secs_f64()
    );

    // (c) A Job pod no policy covers: its main exits after 1s, its proxy runs on. It is stuck
    // with reason no_policy, and the alert goes pending, then fires.
    let stuck = format!(r#"max(lameduck_stuck_pods{{namespace="{}", reason="no_policy"}})"#, system.name);
    assert_eq!(api.value(&stuck).await, Some(0.0), "nothing is stuck yet");
    // Counted once, through the ServiceMonitor's job (the annotations' job sees the same pods).
    let attempts = format!(
        r#"sum(lameduck_shutdown_attempts_total{{namespace="{}", job="{service}"}}) or vector(0)"#,
        system.name
    );
    let attempts_before = api.value(&attempts).await.unwrap_or(0.0);
    let _: Job = work.create(job("stuck", 1, json!({"containers": [proxy_container(false)]}))).await;
    let pod = job_pod(&work, "stuck").await;
    let pods: Api<Pod> = work.api();
    let pod_name = pod.metadata.name.clone().unwrap();
    work.wait_for(&pods, &pod_name, "the main container to exit", MINUTE, |p: Option<&Pod>| {
        p.and_then(|p| container_status(p, "main")?.state.as_ref()?.terminated.as_ref()).is_some()
    })
    .await;
    let exited = Instant::now();
    let alert = format!(
        r#"ALERTS{{alertname="LameduckStuckPods", namespace="{}", reason="no_policy"}}"#,
        system.name
    );
    let pending = api
        .wait_for_samples(&alert, |s| alert_states(s).contains(&"pending"), MINUTE)
        .await
        .unwrap_or_else(|e| panic!("LameduckStuckPods never went pending: {e}"));
    let to_pending = exited.elapsed();
    let firing = api
        .wait_for_samples(&alert, |s| alert_states(s) == ["firing"], MINUTE)
        .await
        .unwrap_or_else(|e| panic!("LameduckStuckPods never fired: {e}"));
    let to_firing = exited.elapsed();
    println!(
        "LameduckStuckPods pending {:.1}s and firing {:.1}s after the main container exited \
         (for: {STUCK_FOR})",
        to_pending.as_secs_f64(),
        to_firing.as_secs_f64()
    );
    assert_eq!(firing[0].0["severity"], "warning", "{pending:?} {firing:?}");
    let active = api.alerts().await;
    let ours = active
        .iter()
        .find(|a| {
            a["labels"]["alertname"] == "LameduckStuckPods"
                && a["labels"]["namespace"] == system.name.as_str()
        })
        .unwrap_or_else(|| panic!("not in /api/v1/alerts: {active:#?}"));
    assert_eq!(ours["state"], "firing", "{ours}");
    assert_eq!(ours["labels"]["reason"], "no_policy", "{ours}");
    // The annotations are templated with the series' labels.
    let description = ours["annotations"]["description"].as_str().unwrap_or_default();
    assert!(description.contains(&system.name) && description.contains("no_policy"), "{ours}");
    let pod = pods.get(&pod_name).await.unwrap();
    assert!(
        container_status(&pod, containers::LAMEDUCK_PROXY)
            .and_then(|cs| cs.state.as_ref()?.running.as_ref())
            .is_some(),
        "the proxy still runs: {:?}",
        pod.status
    );

    // The runbook's fix for no_policy: a ShutdownPolicy. lameduck finishes the pod, the Job
    // completes, nothing is stuck, and the alert resolves (its ALERTS series ends).
    let _: ShutdownPolicy = work
        .create(json!({
            "apiVersion": "lameduck.io/v1alpha1",
            "kind": "ShutdownPolicy",
            "metadata": {"name": "default"},
            "spec": {"proxy": {"profile": "Lameduck"}, "completion": {"methods": ["Exec", "PortForward"]}},
        }))
        .await;
    let fixed = Instant::now();
    let jobs: Api<Job> = work.api();
    work.wait_for(&jobs, "stuck", "the Job to complete", 2 * MINUTE, |j: Option<&Job>| job_complete(j)).await;
    let completed = fixed.elapsed();
    if let Err(e) = api.wait_for_samples(&alert, <[Sample]>::is_empty, MINUTE).await {
        panic!("LameduckStuckPods did not resolve: {e}");
    }
    let resolved = fixed.elapsed();
    assert_eq!(api.value(&stuck).await, Some(0.0));
    let attempts_after = api
        .wait_for(&attempts, |v| v > attempts_before, MINUTE)
        .await
        .unwrap_or_else(|e| panic!("lameduck_shutdown_attempts_total did not rise in Prometheus: {e}"));
    let active = api.alerts().await;
    assert!(
        !active.iter().any(|a| a["labels"]["alertname"] == "LameduckStuckPods"
            && a["labels"]["namespace"] == system.name.as_str()),
        "{active:#?}"
    );
    println!(
        "after the ShutdownPolicy: Job complete in {:.1}s, alert resolved in {:.1}s; \
         lameduck_shutdown_attempts_total {attempts_before} -> {attempts_after}",
        completed.as_secs_f64(),
        resolved.as_secs_f64()
    );

    // Nothing left behind: the release's cluster-wide objects, the Prometheus (while its operator
    // still runs), the operator process, the namespaces.
    helm(&["uninstall", &release, "--namespace", &system.name, "--wait"]);
    prometheus.delete().await;
    operator.stop().await;
    work.finish().await;
    system.finish().await;
    monitoring.finish().await;
    println!("total: {:.1}s", started.elapsed().as_secs_f64());
}
