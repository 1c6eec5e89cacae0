//! `helm install` of the chart on the local cluster, as a user would: the operator comes up Ready
//! (two replicas, one leader), its webhook is trusted through the chart's Service, a meshed Job in
//! a watched namespace gets its drain settings at admission and completes, and the operators count
//! the shutdown attempt (Prometheus scraping them is `tests/prometheus_operator.rs`).

use std::{
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration, apps::v1::Deployment, batch::v1::Job,
    core::v1::Secret,
};
use kube::{Api, ResourceExt};
use lameduck_api::{
    ShutdownPolicy, build,
    names::{annotations, containers},
};
use lameduck_e2e::{
    TestNamespace, exit_code, helm, install_chart,
    operator::sample_value,
    operator_metrics,
    workloads::{job, job_complete, job_pod, proxy_container},
};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

/// Runs `kubectl lameduck ARGS` with the release CLI installed as the plugin `kubectl-lameduck`
/// (`tests/e2e/build-images.sh` builds it), and parses its JSON output.
fn kubectl_lameduck(args: &[&str]) -> serde_json::Value {
    let cli = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/lameduck");
    let plugins = std::env::temp_dir().join(format!("lameduck-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&plugins).unwrap();
    let plugin = plugins.join("kubectl-lameduck");
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(&cli, &plugin).unwrap();
    let path = format!("{}:{}", plugins.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("kubectl")
        .arg("lameduck")
        .args(args)
        .env("PATH", path)
        .output()
        .expect("kubectl on PATH");
    let _ = std::fs::remove_dir_all(&plugins);
    assert!(out.status.success(), "kubectl lameduck {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test]
async fn helm_install_gives_a_ready_operator_that_finishes_jobs() {
    let system = TestNamespace::new("chart").await;
    let work = TestNamespace::new("chart-jobs").await;
    let release = system.name.clone();
    let fullname = format!("{release}-lameduck");
    let started = Instant::now();
    install_chart(&release, &system.name, &work.name, &["operator.statusInterval=1s"]);
    println!("helm install --wait: {:.1}s", started.elapsed().as_secs_f64());

    // Two Ready replicas, exactly one of them leading.
    let deployments: Api<Deployment> = system.api();
    let deployment = deployments.get(&fullname).await.unwrap();
    assert_eq!(deployment.status.as_ref().and_then(|s| s.ready_replicas), Some(2));
    let deadline = Instant::now() + MINUTE;
    loop {
        let leaders: f64 =
            operator_metrics(&system).await.iter().filter_map(|m| sample_value(m, "lameduck_leader")).sum();
        if leaders == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "leaders: {leaders}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The operator made its certificate and the API server trusts it through the chart's Service.
    let secrets: Api<Secret> = system.api();
    assert!(secrets.get_opt(&format!("{fullname}-webhook-tls")).await.unwrap().is_some());
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(system.client.clone());
    let bundle = mutating.get(&fullname).await.unwrap().webhooks.unwrap()[0].client_config.ca_bundle.clone();
    assert!(bundle.is_some_and(|b| !b.0.is_empty()), "caBundle not patched");

    // The CLI as a kubectl plugin reads what the chart installed.
    let versions = kubectl_lameduck(&["version", "--cluster", "-o", "json"]);
    assert_eq!(versions["client"]["version"], build::VERSION, "{versions}");
    let ours = versions["cluster"]["operators"]
        .as_array()
        .and_then(|ops| ops.iter().find(|op| op["namespace"] == system.name.as_str()).cloned())
        .unwrap_or_else(|| panic!("no operator in {} in {versions}", system.name));
    assert_eq!((&ours["version"], &ours["readyReplicas"]), (&json!(build::VERSION), &json!(2)), "{versions}");
    assert_eq!(versions["cluster"]["crd"]["version"], build::VERSION, "{versions}");

    let _: ShutdownPolicy = work
        .create(json!({
            "apiVersion": "lameduck.io/v1alpha1",
            "kind": "ShutdownPolicy",
            "metadata": {"name": "default"},
            "spec": {
                "proxy": {"profile": "Lameduck"},
                "completion": {"methods": ["Exec", "PortForward"]},
                "drain": {"waitBeforeExit": "5s", "shutdownGracePeriod": "10s"},
            },
        }))
        .await;
    let mut proxy = proxy_container(false);
    proxy["args"] = json!(["--inbound-target", "127.0.0.1:8080", "--enable-shutdown-endpoint"]);
    let _: Job = work.create(job("report", 2, json!({"containers": [proxy]}))).await;
    let jobs: Api<Job> = work.api();
    work.wait_for(&jobs, "report", "the Job to complete", 2 * MINUTE, |j: Option<&Job>| job_complete(j))
        .await;
    let pod = job_pod(&work, "report").await;
    assert_eq!(exit_code(&pod, containers::LAMEDUCK_PROXY), Some(0));
    // Admitted through the in-cluster webhook: the policy's drain settings are on the proxy.
    assert_eq!(pod.annotations().get(annotations::POLICY).map(String::as_str), Some("default"));
    let proxy =
        pod.spec.as_ref().unwrap().containers.iter().find(|c| c.name == containers::LAMEDUCK_PROXY).unwrap();
    assert!(
        proxy.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()).is_some(),
        "no preStop from the policy"
    );

    // Counted by the leader (Prometheus scraping it through the chart's ServiceMonitor is
    // tests/prometheus_operator.rs).
    let attempts: f64 = operator_metrics(&system)
        .await
        .iter()
        .flat_map(|m| {
            m.lines()
                .filter(|l| l.starts_with("lameduck_shutdown_attempts_total{"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|line| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum();
    assert!(attempts >= 1.0, "no shutdown attempt counted by the operators");

    helm(&["uninstall", &release, "--namespace", &system.name, "--wait"]);
    assert!(mutating.get_opt(&fullname).await.unwrap().is_none(), "helm uninstall leaves no webhook behind");
    work.finish().await;
    system.finish().await;
}
