//! `lameduck check --cluster` against a Helm install, as a user runs it: every check passes on a
//! healthy install, and each of three breaks fails the check that names it, and only the checks
//! it really breaks: (a) the webhook's Service deleted, (b) `pods/exec` dropped from the
//! operator's Role while a policy uses Exec, (c) the operator scaled to 0. Between breaks the
//! install is restored with the command the check's own hint gives (`helm upgrade
//! --reuse-values`), and must pass again.
//!
//! The CLI is the release build that `tests/e2e/build-images.sh` makes (`target/release/lameduck`).

use std::{
    collections::BTreeSet,
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    apps::v1::Deployment,
    batch::v1::CronJob,
    core::v1::{Pod, Service},
    rbac::v1::Role,
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use lameduck_api::{
    ShutdownPolicy,
    names::{containers, images, labels},
};
use lameduck_e2e::{TestNamespace, helm, install_chart, install_crd};
use serde_json::{Value, json};

/// No warning is allowed on the healthy install: the cluster's one real node runs v1.34, the
/// CRD is applied by this test, and the chart's version is the CLI's.
const ALLOWED_WARNINGS: &[&str] = &[];

/// The Helm release, uninstalled when the test ends however it ends: its webhook configurations
/// and ClusterRoles are cluster-wide, and must not outlive a failed test (its namespaces stay,
/// for inspection).
struct Release {
    name: String,
    namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = Command::new("helm")
            .args(["uninstall", &self.name, "--namespace", &self.namespace, "--wait"])
            .output();
    }
}

/// One run of the release CLI.
struct Run {
    code: Option<i32>,
    report: Value,
    took: Duration,
}

impl Run {
    /// The descriptions of the checks that came out `result`.
    fn with(&self, result: &str) -> BTreeSet<String> {
        self.report["sections"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["checks"].as_array().into_iter().flatten())
            .filter(|c| c["result"] == result)
            .map(|c| c["description"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn check(&self, description: &str) -> &Value {
        self.report["sections"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["checks"].as_array().into_iter().flatten())
            .find(|c| c["description"] == description)
            .unwrap_or_else(|| panic!("no check {description:?} in {:#}", self.report))
    }

    fn unexpected_warnings(&self) -> BTreeSet<String> {
        self.with("warn").into_iter().filter(|w| !ALLOWED_WARNINGS.contains(&w.as_str())).collect()
    }
}

fn cli() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/lameduck")
}

/// `lameduck check --cluster --operator-namespace NS`; its exit code and text output.
fn check_text(operator_namespace: &str) -> (Option<i32>, String) {
    let out = Command::new(cli())
        .args(["check", "--cluster", "--operator-namespace", operator_namespace])
        .output()
        .expect("target/release/lameduck (tests/e2e/build-images.sh builds it)");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The same as JSON.
fn check_json(operator_namespace: &str) -> Run {
    let started = Instant::now();
    let out = Command::new(cli())
        .args(["check", "--cluster", "--operator-namespace", operator_namespace, "-o", "json"])
        .output()
        .expect("target/release/lameduck (tests/e2e/build-images.sh builds it)");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    Run { code: out.status.code(), report, took: started.elapsed() }
}

/// Runs the check until `done` holds for its report, or fails the test with the last report.
async fn check_until(ns: &TestNamespace, what: &str, timeout: Duration, done: impl Fn(&Run) -> bool) -> Run {
    let deadline = Instant::now() + timeout;
    loop {
        let run = check_json(&ns.name);
        if done(&run) {
            return run;
        }
        if Instant::now() > deadline {
            ns.fail(&format!(
                "timed out after {timeout:?} waiting for {what}; last report:\n{:#}",
                run.report
            ))
            .await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn healthy(run: &Run) -> bool {
    run.code == Some(0) && run.with("fail").is_empty() && run.unexpected_warnings().is_empty()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Prints the text report, for the test's log.
fn show(title: &str, operator_namespace: &str) {
    let (code, text) = check_text(operator_namespace);
    println!("=== {title} (exit {code:?})\n{text}");
}

#[tokio::test]
async fn check_cluster_passes_a_healthy_install_and_fails_the_check_each_break_names() {
    let started = Instant::now();
    let system = TestNamespace::new("check").await;
    let work = TestNamespace::new("check-work").await;
    install_crd(system.client.clone()).await;
    let release = system.name.clone();
    let fullname = format!("{release}-lameduck");
    let upgrade = ["upgrade", &release, "CHART", "-n", &system.name, "--reuse-values"];
    install_chart(&release, &system.name, &work.name, &[]);
    let installed = Release { name: release.clone(), namespace: system.name.clone() };
    println!("helm install --wait: {:.1}s", started.elapsed().as_secs_f64());

    // A policy that uses Exec, so that a missing pods/exec is a failure and not a warning; and two
    // workloads whose timing the check reads but which start no pod.
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
    let pod_spec = |restart: &str| {
        json!({
            "restartPolicy": restart,
            "containers": [
                {"name": "app", "image": images::TESTAPP},
                {"name": containers::LAMEDUCK_PROXY, "image": images::PROXY},
            ],
        })
    };
    let _: Deployment = work
        .create(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec("Always")},
            },
        }))
        .await;
    let _: CronJob = work
        .create(json!({
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "nightly"},
            "spec": {
                "schedule": "@daily",
                "suspend": true,
                "jobTemplate": {"spec": {"template": {"spec": pod_spec("Never")}}},
            },
        }))
        .await;

    // Healthy: every check passes once the leader has patched its CA into the webhooks.
    let ok =
        check_until(&system, "every check to pass on the healthy install", Duration::from_secs(90), healthy)
            .await;
    println!(
        "healthy after {:.1}s; one check run takes {:.1}s",
        started.elapsed().as_secs_f64(),
        ok.took.as_secs_f64()
    );
    show("healthy install", &system.name);
    let answers = ok.check("the mutating webhook answers");
    assert_eq!(
        answers["message"],
        format!("a dry-run pod in {} came back marked with ShutdownPolicy default's settings", work.name),
        "{answers}"
    );
    let workloads = ok.check(&format!("workloads in namespace {} follow the timing rules", work.name));
    assert_eq!(
        workloads["message"], "2 workloads checked under 1 ShutdownPolicy: no timing mistakes",
        "{workloads}"
    );
    assert_eq!(ok.report["success"], true);

    let service_check =
        format!("the webhook's Service {}/{fullname}-webhook has ready endpoints", system.name);
    let probe_check = "the mutating webhook answers";
    let exec_check = format!("Exec permissions in namespace {}", work.name);
    let ready_check = "the operator's replicas are ready";
    let leader_check = format!("a replica leads (Lease {}/{fullname})", system.name);

    // (a) The webhook's Service deleted: the Service check fails. The probe may still pass: the
    // API server keeps its open connection to the webhook (through the old cluster IP, whose
    // connection tracking outlives the Service) until it idles out, so for a while the webhook
    // really does still answer, and the check says so. Nothing else fails.
    let services: Api<Service> = system.api();
    services.delete(&format!("{fullname}-webhook"), &DeleteParams::default()).await.expect("Service deleted");
    let broken = check_until(&system, "the Service check to fail", Duration::from_secs(30), |run| {
        run.with("fail").contains(&service_check)
    })
    .await;
    let failing = broken.with("fail");
    assert!(failing.is_subset(&set(&[&service_check, probe_check])), "{failing:?}\n{:#}", broken.report);
    assert_eq!(
        (broken.code, broken.unexpected_warnings()),
        (Some(1), BTreeSet::new()),
        "{:#}",
        broken.report
    );
    println!("(a) the probe {}", if failing.contains(probe_check) { "failed too" } else { "still passed" });
    let hint = broken.check(&service_check)["hint"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        hint,
        format!("helm upgrade {release} deploy/lameduck -n {} --reuse-values (recreates it)", system.name)
    );
    show("(a) webhook Service deleted", &system.name);
    helm(&upgrade);
    check_until(
        &system,
        "every check to pass once helm upgrade recreated the Service",
        Duration::from_secs(60),
        healthy,
    )
    .await;

    // (b) pods/exec dropped from the operator's Role in the watched namespace, while the policy
    // uses Exec: that check fails, and only that one.
    let roles: Api<Role> = work.api();
    let role = roles.get(&fullname).await.expect("the chart's Role in the watched namespace");
    let rules: Vec<_> = role
        .rules
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|rule| !rule.resources.iter().flatten().any(|r| r == "pods/exec"))
        .collect();
    assert!(rules.len() < role.rules.as_ref().map_or(0, Vec::len), "the chart's Role grants pods/exec");
    roles
        .patch(&fullname, &PatchParams::default(), &Patch::Merge(json!({"rules": rules})))
        .await
        .expect("Role patched");
    let expected = set(&[&exec_check]);
    let broken = check_until(&system, "the Exec check to fail", Duration::from_secs(30), |run| {
        run.with("fail") == expected
    })
    .await;
    assert_eq!(
        (broken.code, broken.unexpected_warnings()),
        (Some(1), BTreeSet::new()),
        "{:#}",
        broken.report
    );
    let message = broken.check(&exec_check)["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("lacks get pods/exec, create pods/exec"), "{message}");
    assert!(message.contains(&format!("ShutdownPolicy {}/default uses Exec", work.name)), "{message}");
    show("(b) pods/exec removed from the Role", &system.name);
    helm(&upgrade);
    check_until(
        &system,
        "every check to pass once helm upgrade restored the Role",
        Duration::from_secs(60),
        healthy,
    )
    .await;

    // (c) The operator scaled to 0: its replicas and its leader fail, and with no replica behind
    // the Service the webhook neither has endpoints nor answers. Nothing else breaks.
    let deployments: Api<Deployment> = system.api();
    deployments
        .patch(&fullname, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}})))
        .await
        .expect("scaled to 0");
    let pods: Api<Pod> = system.api();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !pods
        .list(&ListParams::default().labels(&format!("{}={release}", labels::INSTANCE)))
        .await
        .unwrap()
        .items
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the operator's pods did not go away");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let expected = set(&[ready_check, &leader_check, &service_check, probe_check]);
    // The leader releases its Lease as it stops; a Lease left behind fails once it expires (15s).
    let broken =
        check_until(&system, "the replica and leader checks to fail", Duration::from_secs(40), |run| {
            run.with("fail") == expected
        })
        .await;
    assert_eq!(
        (broken.code, broken.unexpected_warnings()),
        (Some(1), BTreeSet::new()),
        "{:#}",
        broken.report
    );
    let ready = broken.check(ready_check);
    assert_eq!(
        ready["hint"],
        format!("kubectl -n {} scale deploy/{fullname} --replicas=2", system.name),
        "{ready}"
    );
    show("(c) operator scaled to 0", &system.name);

    drop(installed);
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(system.client.clone());
    assert!(mutating.get_opt(&fullname).await.unwrap().is_none(), "helm uninstall leaves no webhook behind");
    work.finish().await;
    system.finish().await;
    println!("whole test: {:.1}s", started.elapsed().as_secs_f64());
}
