//! `helm upgrade` from the chart of the previous release to this one, on the local cluster. Helm
//! installs a chart's `crds/` once and never upgrades them, so the chart's operator applies its
//! own CRD at start (`crds.upgrade`, `--upgrade-crd`). Asserted as a user would see it: under the
//! previous release's CRD a new field is pruned; after the upgrade the CRD is this release's,
//! the new field is served, and the policy made before the upgrade is kept and still acted on.
//!
//! A second test puts a newer release's CRD on the cluster and installs this chart: its operator
//! leaves that CRD alone (never a downgrade) and says so in its log.
//!
//! A third stores, under the previous release's schema, a policy this release's schema refuses
//! (a shutdown path with a space, which once crashed every replica): the operator fails that
//! call with a reason and stays up.
//!
//! These tests put another release's CRD on the cluster for their duration and this release's
//! back at the end, so they must not run beside tests that use new fields (`cargo test` runs test
//! files one after another, and these two one after another through `CRD_HELD`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{batch::v1::Job, core::v1::Pod},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, LogParams, PostParams},
};
use lameduck_api::{
    ShutdownPolicy,
    names::{annotations, containers, events},
    policy::shutdown_policy_crd,
};
use lameduck_e2e::{
    TestNamespace, chart_flags, exit_code, install_chart,
    operator::Operator,
    operator_events,
    workloads::{job, job_complete, job_pod, proxy_container},
};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

/// The main branch as the previous submission landed it (issue 14): its CRD has no
/// `spec.sidecars`, which this release adds.
const PREVIOUS_RELEASE: &str = "45c23ac";

/// Held by each test for its whole run: both put a CRD of another release on the cluster.
static CRD_HELD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The chart's `appVersion`: the release version its operator image is built with
/// (`tests/e2e/build-images.sh` passes it as `LAMEDUCK_VERSION`), which that operator stamps on
/// the CRD it applies. This test binary's own `build::VERSION` may differ (built without it).
fn chart_app_version() -> String {
    let chart: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(repo().join("deploy/lameduck/Chart.yaml")).unwrap())
            .unwrap();
    chart["appVersion"].as_str().expect("Chart.yaml has an appVersion").to_owned()
}

fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The previous release's chart, extracted from git into `dir`.
fn previous_chart(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let archive = dir.join("chart.tar");
    run("git", &["archive", "--output", archive.to_str().unwrap(), PREVIOUS_RELEASE, "deploy/lameduck"]);
    run("tar", &["-xf", archive.to_str().unwrap(), "-C", dir.to_str().unwrap()]);
    dir.join("deploy/lameduck")
}

/// Puts `crd` on the cluster whole (a replace, so no field of another manager survives) and waits
/// until the API server serves it.
async fn put_crd(crds: &Api<CustomResourceDefinition>, mut crd: CustomResourceDefinition) {
    let name = crd.name_any();
    let current = crds.get(&name).await.unwrap();
    crd.metadata.resource_version = current.resource_version();
    crds.replace(&name, &PostParams::default(), &crd).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// Puts things back however the test ends, a failed assertion included: the release uninstalled
/// and this release's CRD applied, as the other tests expect it.
struct Restore {
    release: String,
    namespace: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = Command::new("helm")
            .args(["uninstall", &self.release, "--namespace", &self.namespace, "--wait"])
            .output();
        let crd = repo().join("crds/shutdownpolicies.lameduck.io.yaml");
        let applied = Command::new("kubectl")
            .args(["apply", "--server-side", "--force-conflicts", "--field-manager", "lameduck-e2e", "-f"])
            .arg(&crd)
            .output();
        if !applied.is_ok_and(|out| out.status.success()) {
            eprintln!(
                "could not put this release's CRD back: run `kubectl apply --server-side -f {}`",
                crd.display()
            );
        }
    }
}

/// Whether the installed CRD's schema has `spec.sidecars`.
fn has_sidecars(crd: &CustomResourceDefinition) -> bool {
    crd.spec.versions.iter().any(|v| {
        v.schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| s.properties.as_ref())
            .and_then(|p| p.get("spec"))
            .and_then(|s| s.properties.as_ref())
            .is_some_and(|p| p.contains_key("sidecars"))
    })
}

/// A policy in the new shape: the proxy given as an entry of `spec.sidecars`.
fn sidecars_policy(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "lameduck.io/v1alpha1",
        "kind": "ShutdownPolicy",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"policy": name}},
            "sidecars": [{"profile": "Lameduck", "methods": ["PortForward"]}],
        },
    })
}

/// A meshed Job whose pods a policy selects by the label `policy`, its proxy's `/shutdown` on.
fn labelled_job(name: &str, policy: &str) -> serde_json::Value {
    let mut proxy = proxy_container(false);
    proxy["args"] = json!(["--inbound-target", "127.0.0.1:8080", "--enable-shutdown-endpoint"]);
    let mut manifest = job(name, 2, json!({"containers": [proxy]}));
    manifest["spec"]["template"]["metadata"] = json!({"labels": {"policy": policy}});
    manifest
}

/// Runs a labelled Job to completion: the operator stopped its proxy, which exited 0.
async fn completes(work: &TestNamespace, name: &str, policy: &str) {
    let _: Job = work.create(labelled_job(name, policy)).await;
    let jobs: Api<Job> = work.api();
    work.wait_for(&jobs, name, "the Job to complete", 2 * MINUTE, |j: Option<&Job>| job_complete(j)).await;
    let pod = job_pod(work, name).await;
    assert_eq!(exit_code(&pod, containers::LAMEDUCK_PROXY), Some(0), "{name}: the proxy exits 0");
}

#[tokio::test]
async fn helm_upgrade_from_the_previous_release_upgrades_the_crd_and_keeps_policies() {
    let _held = CRD_HELD.lock().await;
    let system = TestNamespace::new("upgrade").await;
    let work = TestNamespace::new("upgrade-jobs").await;
    let crds: Api<CustomResourceDefinition> = Api::all(system.client.clone());
    let scratch = std::env::temp_dir().join(format!("lameduck-upgrade-{}", std::process::id()));
    let old_chart = previous_chart(&scratch);

    // The cluster as the previous release left it: its CRD, as its chart's crds/ holds it.
    let old_crd: CustomResourceDefinition = serde_yaml_ng::from_str(
        &std::fs::read_to_string(old_chart.join("crds/shutdownpolicies.lameduck.io.yaml")).unwrap(),
    )
    .unwrap();
    assert!(!has_sidecars(&old_crd), "{PREVIOUS_RELEASE}'s CRD already has spec.sidecars");
    put_crd(&crds, old_crd).await;

    let release = system.name.clone();
    let restore = Restore { release: release.clone(), namespace: system.name.clone() };
    let values = chart_flags(&system.name, &work.name, &[]);
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let old = old_chart.display().to_string();
    run("helm", &[&["install", &release, &old][..], &values].concat());

    // Under the old schema: a policy made now is acted on, and a new field is pruned.
    let before: ShutdownPolicy = work
        .create(json!({
            "apiVersion": "lameduck.io/v1alpha1",
            "kind": "ShutdownPolicy",
            "metadata": {"name": "before"},
            "spec": {"selector": {"matchLabels": {"policy": "before"}}, "proxy": {"profile": "Lameduck"},
                     "completion": {"methods": ["PortForward"]}},
        }))
        .await;
    let pruned: ShutdownPolicy = work.create(sidecars_policy("pruned")).await;
    assert!(pruned.spec.sidecars.is_empty(), "the previous CRD does not serve spec.sidecars");
    completes(&work, "old-operator", "before").await;

    let current = repo().join("deploy/lameduck").display().to_string();
    let started = Instant::now();
    run("helm", &[&["upgrade", &release, &current][..], &values].concat());
    println!("helm upgrade --wait: {:.1}s", started.elapsed().as_secs_f64());
    // The upgrade adds the policy-stamping webhook, whose CA the operator patches in.
    lameduck_e2e::wait_for_policy_admission(&work.name);

    // The new operator applied this release's CRD (the previous one has no version annotation).
    let ours = chart_app_version();
    let deadline = Instant::now() + MINUTE;
    loop {
        let crd = crds.get(&shutdown_policy_crd().name_any()).await.unwrap();
        let version = crd.annotations().get(annotations::CRD_VERSION).cloned();
        if version.as_deref() == Some(ours.as_str()) && has_sidecars(&crd) {
            break;
        }
        assert!(Instant::now() < deadline, "the CRD was not upgraded: version {version:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // New fields are served; the old policy is kept, unchanged, and still acted on.
    let served: ShutdownPolicy = work.create(sidecars_policy("after")).await;
    assert_eq!(served.spec.sidecars.len(), 1, "spec.sidecars is served after the upgrade");
    let policies: Api<ShutdownPolicy> = work.api();
    let kept = policies.get("before").await.expect("the policy made before the upgrade is kept");
    assert_eq!(kept.uid(), before.uid());
    assert_eq!(serde_json::to_value(&kept.spec).unwrap(), serde_json::to_value(&before.spec).unwrap());
    completes(&work, "kept-policy", "before").await;
    completes(&work, "new-policy", "after").await;

    // Uninstalled before its namespace goes, so no cluster-wide object of it is left behind.
    drop(restore);
    let _ = std::fs::remove_dir_all(&scratch);
    work.finish().await;
    system.finish().await;
}

/// The top-level description of a CRD's first version's schema.
fn description(crd: &CustomResourceDefinition) -> Option<&str> {
    crd.spec.versions.first()?.schema.as_ref()?.open_api_v3_schema.as_ref()?.description.as_deref()
}

/// The operator's log lines, from every replica of the release.
async fn operator_logs(system: &TestNamespace, release: &str) -> String {
    let pods: Api<Pod> = system.api();
    let selector = format!("app.kubernetes.io/name=lameduck,app.kubernetes.io/instance={release}");
    let mut logs = String::new();
    for pod in pods.list(&ListParams::default().labels(&selector)).await.unwrap() {
        if let Ok(text) = pods.logs(&pod.name_any(), &LogParams::default()).await {
            logs.push_str(&text);
        }
    }
    logs
}

#[tokio::test]
async fn a_crd_from_a_newer_release_is_left_alone() {
    // Above any release this chart could be.
    const NEWER: &str = "999.0.0";
    // A changed description marks the installed CRD: an apply of this release's CRD would put its
    // own back. (An extra annotation would not do: a server-side apply keeps fields it does not set.)
    const MARKER: &str = "a newer release's ShutdownPolicy (lameduck e2e marker)";
    let _held = CRD_HELD.lock().await;
    let system = TestNamespace::new("newer-crd").await;
    let work = TestNamespace::new("newer-crd-jobs").await;
    let crds: Api<CustomResourceDefinition> = Api::all(system.client.clone());

    // The cluster as a newer release left it: its version on this release's schema, marked.
    let mut newer = shutdown_policy_crd();
    newer.annotations_mut().insert(annotations::CRD_VERSION.to_owned(), NEWER.to_owned());
    let schema = newer.spec.versions[0].schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut());
    schema.expect("the generated CRD has a schema").description = Some(MARKER.to_owned());
    let name = newer.name_any();
    put_crd(&crds, newer).await;
    let before = crds.get(&name).await.unwrap();
    assert_eq!(description(&before), Some(MARKER));

    let release = system.name.clone();
    let restore = Restore { release: release.clone(), namespace: system.name.clone() };
    install_chart(&release, &system.name, &work.name, &[]);

    // The operator says it left the CRD alone (it decides before it reports ready, so `--wait`
    // has let it; a minute more for the log to be read).
    let said = format!("installed={NEWER}");
    let deadline = Instant::now() + MINUTE;
    loop {
        let logs = operator_logs(&system, &release).await;
        if logs
            .lines()
            .any(|line| line.contains("comes from a newer release; left as it is") && line.contains(&said))
        {
            break;
        }
        if Instant::now() > deadline {
            system.fail(&format!("the operator did not log that it left the newer CRD alone:\n{logs}")).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // And did: not a write since, the marker and the newer version still there.
    let after = crds.get(&name).await.unwrap();
    assert_eq!(after.resource_version(), before.resource_version(), "the CRD was written to");
    assert_eq!(description(&after), Some(MARKER));
    assert_eq!(after.annotations().get(annotations::CRD_VERSION).map(String::as_str), Some(NEWER));

    drop(restore);
    work.finish().await;
    system.finish().await;
}

/// A shutdown path this release's schema refuses (a space is no URI character), which one
/// policy once used to crash every replica of the operator in turn.
const CRASH_PATH: &str = "/a b";

#[tokio::test]
async fn a_policy_stored_past_the_schema_cannot_crash_the_operator() {
    let _held = CRD_HELD.lock().await;
    let ns = TestNamespace::new("crash").await;
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    let restore = Restore { release: format!("{}-none", ns.name), namespace: ns.name.clone() };
    let policy = json!({
        "apiVersion": "lameduck.io/v1alpha1", "kind": "ShutdownPolicy", "metadata": {"name": "crash"},
        "spec": {"selector": {"matchLabels": {"policy": "crash"}},
                 "proxy": {"profile": "Lameduck", "shutdownPath": CRASH_PATH},
                 "completion": {"methods": ["PortForward"], "maxRounds": 1}},
    });

    // This release's schema refuses it at admission, naming the field.
    let policies: Api<ShutdownPolicy> = ns.api();
    let refused = policies
        .create(&PostParams::default(), &serde_json::from_value(policy.clone()).unwrap())
        .await
        .expect_err("the CRD refuses the path");
    assert!(refused.to_string().contains("shutdownPath"), "{refused}");

    // Stored anyway, under the previous release's schema (as a policy made before this release
    // is), then acted on by an operator that trusts every stored policy (no webhook to review
    // it): the call fails with a reason, and the operator stays up.
    let scratch = std::env::temp_dir().join(format!("lameduck-crash-{}", std::process::id()));
    let old_crd: CustomResourceDefinition = serde_yaml_ng::from_str(
        &std::fs::read_to_string(previous_chart(&scratch).join("crds/shutdownpolicies.lameduck.io.yaml"))
            .unwrap(),
    )
    .unwrap();
    put_crd(&crds, old_crd).await;
    let _: ShutdownPolicy = ns.create(policy).await;
    let operator = Operator::start(&ns, "op-crash", &[]).await;
    let _: Job = ns.create(labelled_job("crash", "crash")).await;
    let pod = job_pod(&ns, "crash").await;
    let deadline = Instant::now() + 2 * MINUTE;
    loop {
        let said = operator_events(&ns, &pod.name_any()).await;
        if said
            .iter()
            .any(|e| e.reason == events::SHUTDOWN_CALL_FAILED && e.note.contains("is not a URI path"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed call that names the path: {said:?}\n{}",
            operator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Still serving, and nothing panicked on the way.
    assert_eq!(operator.metric("lameduck_leader").await, Some(1.0), "{}", operator.log_text());
    assert!(!operator.log_text().contains("panicked"), "{}", operator.log_text());
    assert_eq!(
        operator.metric(r#"lameduck_reconcile_errors_total{reason="panic"}"#).await.unwrap_or(0.0),
        0.0
    );

    drop(operator);
    drop(restore);
    let _ = std::fs::remove_dir_all(&scratch);
    ns.finish().await;
}
