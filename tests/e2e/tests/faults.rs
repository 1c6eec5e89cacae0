//! Faults the operator must survive on the local cluster: the API server, etcd, the kubelet and
//! containerd restarted while Jobs are stuck, the leader killed with 50 stuck Jobs, and a
//! slowloris client holding the webhook while real admissions continue. For each: every Job
//! completes, no attempt is made twice, no pod is given more ephemeral containers than the cap,
//! and admissions are answered within a second.
//!
//! They take minutes and restart parts of the cluster, so they are `#[ignore]`d and run one at a
//! time by `tests/run --faults`, which prints the table each test adds a row to
//! (`<logs>/faults.tsv`: fault, Jobs, completed, worst seconds from main exit to completion,
//! repeats).

use std::{
    collections::BTreeMap,
    io::Write,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod, events::v1::Event};
use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
};
use lameduck_api::{
    ShutdownPolicy,
    names::{annotations, containers, events, images},
};
use lameduck_e2e::{
    TestNamespace, container_status, logs_dir,
    operator::Operator,
    webhook::Webhook,
    workloads::{job, job_complete, proxy_container},
};
use lameduck_operator::controller::attempts::AttemptLog;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);
/// `--max-ephemeral-containers` of the operators these tests run.
const EPHEMERAL_CAP: usize = 4;

fn cluster_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("LAMEDUCK_CLUSTER_DIR").unwrap_or_else(|_| "/var/tmp/lameduck-cluster".into()),
    )
}

/// SIGKILLs the cluster components named, as a crash would.
fn kill(components: &[&str]) {
    for name in components {
        let pidfile = cluster_dir().join("run").join(format!("{name}.pid"));
        let text = std::fs::read_to_string(&pidfile).unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()));
        let pid: i32 = text.trim().parse().unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
            .unwrap_or_else(|e| panic!("kill {name} (pid {pid}): {e}"));
        eprintln!("killed {name} (pid {pid})");
    }
}

/// Starts what is not running again (`tests/cluster/up.sh` skips what runs).
fn restart_cluster() {
    let up = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../cluster/up.sh");
    let status = Command::new("bash").arg(up).status().expect("run up.sh");
    assert!(status.success(), "tests/cluster/up.sh failed");
}

/// A policy that finishes Jobs by port-forward, after `delay` (so faults can land while the
/// Jobs are stuck).
async fn policy(ns: &TestNamespace, delay: &str) {
    let _: ShutdownPolicy = ns
        .create(json!({
            "apiVersion": "lameduck.io/v1alpha1", "kind": "ShutdownPolicy", "metadata": {"name": "jobs"},
            "spec": {"proxy": {"profile": "Lameduck"},
                     "completion": {"methods": ["PortForward", "Signal"], "delay": delay, "attemptTimeout": "20s"}},
        }))
        .await;
}

/// Creates `n` meshed Jobs whose main container exits after 2s.
async fn jobs(ns: &TestNamespace, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("job-{i}");
        let _: Job = ns.create(job(&name, 2, json!({"containers": [proxy_container(false)]}))).await;
        names.push(name);
    }
    names
}

/// Lists everything `api` holds, retrying through a fault until the API server answers.
async fn list<K>(api: &Api<K>) -> Vec<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let deadline = Instant::now() + 3 * MINUTE;
    loop {
        match api.list(&ListParams::default()).await {
            Ok(list) => return list.items,
            Err(err) if Instant::now() < deadline => {
                eprintln!("list: {err}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => panic!("list: {err}"),
        }
    }
}

/// Waits until every main container of the namespace has exited: the Jobs are stuck.
async fn all_stuck(ns: &TestNamespace, n: usize) {
    let pods: Api<Pod> = ns.api();
    let deadline = Instant::now() + 3 * MINUTE;
    loop {
        let exited = list(&pods)
            .await
            .iter()
            .filter(|p| {
                container_status(p, "main")
                    .is_some_and(|s| s.state.as_ref().is_some_and(|s| s.terminated.is_some()))
            })
            .count();
        if exited >= n {
            return;
        }
        if Instant::now() > deadline {
            ns.fail(&format!("only {exited} of {n} main containers exited within 3 minutes")).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    fault: &'static str,
    jobs: usize,
    completed: usize,
    worst_seconds: i64,
    repeats: usize,
}

impl Row {
    fn record(&self) {
        let line = format!(
            "{}\t{}\t{}\t{}\t{}\n",
            self.fault, self.jobs, self.completed, self.worst_seconds, self.repeats
        );
        eprint!("fault row: {line}");
        let path = PathBuf::from(logs_dir()).join("faults.tsv");
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("faults.tsv");
        file.write_all(line.as_bytes()).unwrap();
    }
}

/// Waits for every Job to complete, then measures as a user would: Jobs complete, seconds from
/// each main container's exit to its proxy's, attempts made twice (the same attempt number in
/// two events of the operator's), pods over the ephemeral-container cap.
async fn outcome(ns: &TestNamespace, fault: &'static str, names: &[String]) -> Row {
    let jobs: Api<Job> = ns.api();
    let deadline = Instant::now() + 5 * MINUTE;
    let completed = loop {
        let done = list(&jobs).await.iter().filter(|j| job_complete(Some(j))).count();
        if done == names.len() || Instant::now() > deadline {
            break done;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let pods = list(&ns.api::<Pod>()).await;
    let finished = |pod: &Pod, name: &str| {
        container_status(pod, name)
            .and_then(|s| s.state.as_ref()?.terminated.as_ref()?.finished_at.clone())
            .map(|t| t.0.as_second())
    };
    let worst_seconds = pods
        .iter()
        .filter_map(|p| Some(finished(p, containers::LAMEDUCK_PROXY)? - finished(p, "main")?))
        .max()
        .unwrap_or(-1);
    let events = list(&ns.api::<Event>()).await;
    let mut calls: BTreeMap<(String, String), usize> = BTreeMap::new();
    for event in events.iter().filter(|e| {
        e.reporting_controller.as_deref() == Some(events::REPORTER)
            && matches!(
                e.reason.as_deref(),
                Some(
                    events::SHUTDOWN_REQUESTED
                        | events::SHUTDOWN_CALL_FAILED
                        | events::SHUTDOWN_ENDPOINT_DISABLED
                )
            )
    }) {
        let pod = event.regarding.as_ref().and_then(|r| r.name.clone()).unwrap_or_default();
        let attempt =
            event.note.as_deref().unwrap_or_default().split(',').next().unwrap_or_default().to_owned();
        *calls.entry((pod, attempt)).or_default() += 1;
    }
    let repeats = calls.values().map(|n| n - 1).sum();
    for pod in &pods {
        let log = AttemptLog::from_annotations(pod.metadata.annotations.as_ref()).expect("a readable record");
        let mut numbers: Vec<u32> = log.0.iter().map(|a| a.number).collect();
        numbers.dedup();
        assert_eq!(
            numbers.len(),
            log.0.len(),
            "{}: an attempt number recorded twice: {log:?}",
            pod.name_any()
        );
        let ephemeral = pod.spec.as_ref().and_then(|s| s.ephemeral_containers.as_ref()).map_or(0, Vec::len);
        assert!(ephemeral <= EPHEMERAL_CAP, "{}: {ephemeral} ephemeral containers", pod.name_any());
    }
    let row = Row { fault, jobs: names.len(), completed, worst_seconds, repeats };
    row.record();
    assert_eq!(row.completed, row.jobs, "{row:?}\n{}", ns.dump().await);
    assert_eq!(row.repeats, 0, "{row:?}: calls per attempt {calls:?}");
    row
}

/// Stuck Jobs, a fault while the operator acts, then the table row.
async fn survives(prefix: &str, fault: &'static str, n: usize, components: &[&str]) {
    let ns = TestNamespace::new(prefix).await;
    policy(&ns, "15s").await;
    let _operator = Operator::start(&ns, "solo", &[]).await;
    let names = jobs(&ns, n).await;
    all_stuck(&ns, n).await;
    // The delay (15s) is running out: the fault lands as the attempts start.
    tokio::time::sleep(Duration::from_secs(12)).await;
    kill(components);
    tokio::time::sleep(Duration::from_secs(3)).await;
    restart_cluster();
    outcome(&ns, fault, &names).await;
    ns.finish().await;
}

#[tokio::test]
#[ignore = "a fault test: tests/run --faults"]
async fn kube_apiserver_killed_during_attempts() {
    survives("fault-apiserver", "kube-apiserver killed and restarted", 10, &["kube-apiserver"]).await;
}

#[tokio::test]
#[ignore = "a fault test: tests/run --faults"]
async fn etcd_restarted() {
    survives("fault-etcd", "etcd killed and restarted", 10, &["etcd"]).await;
}

#[tokio::test]
#[ignore = "a fault test: tests/run --faults"]
async fn containerd_and_kubelet_restarted_while_jobs_are_stuck() {
    survives("fault-kubelet", "containerd and kubelet restarted", 10, &["kubelet", "containerd"]).await;
}

#[tokio::test]
#[ignore = "a fault test: tests/run --faults"]
async fn leader_killed_with_50_stuck_jobs() {
    let ns = TestNamespace::new("fault-leader").await;
    policy(&ns, "10s").await;
    let a = Operator::start(&ns, "replica-a", &[]).await;
    let b = Operator::start(&ns, "replica-b", &[]).await;
    let names = jobs(&ns, 50).await;
    all_stuck(&ns, 50).await;
    // Once the leader has begun, SIGKILL it: no release of the Lease, calls cut mid-way.
    let pods: Api<Pod> = ns.api();
    let deadline = Instant::now() + MINUTE;
    while !pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|p| p.annotations().contains_key(annotations::SHUTDOWN_ATTEMPTS))
    {
        assert!(Instant::now() < deadline, "no attempt within a minute");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (leader, follower) = if a.metric("lameduck_leader").await == Some(1.0) { (a, b) } else { (b, a) };
    let identity = leader.identity.clone();
    leader.kill().await;
    eprintln!("killed the leader {identity}");
    outcome(&ns, "leader SIGKILLed, 50 stuck Jobs", &names).await;
    // The replica left standing finished what the killed one had not.
    let by_follower = list(&ns.api::<Event>())
        .await
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some(events::PROXY_STOPPED)
                && e.reporting_instance.as_deref() == Some(follower.identity.as_str())
        })
        .count();
    eprintln!("{by_follower} of 50 pods finished by {}", follower.identity);
    assert!(by_follower > 0, "the follower finished none of the stuck Jobs");
    ns.finish().await;
}

#[tokio::test]
#[ignore = "a fault test: tests/run --faults"]
async fn slowloris_on_the_webhook_while_admissions_continue() {
    let ns = TestNamespace::new("fault-slowloris").await;
    let hook = Webhook::install(&ns).await;
    let _: ShutdownPolicy = ns
        .create(json!({
            "apiVersion": "lameduck.io/v1alpha1", "kind": "ShutdownPolicy", "metadata": {"name": "web"},
            "spec": {"proxy": {"profile": "Lameduck"}, "drain": {"waitBeforeExit": "2s"}},
        }))
        .await;
    let args = hook.operator_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _operator = Operator::start(&ns, "solo", &args).await;
    hook.wait_for_ca_bundles().await;

    // Hundreds of connections that send part of a TLS ClientHello, then a byte now and then.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], hook.port));
    let mut slow = Vec::new();
    for _ in 0..400 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            use tokio::io::AsyncWriteExt;
            let _ = stream.write_all(&[0x16, 0x03, 0x01]).await;
            slow.push(stream);
        }
    }
    let held = slow.len();
    let drip = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            for stream in &mut slow {
                let _ = stream.write_all(&[0x00]).await;
            }
        }
    });

    // Real admissions meanwhile: each pod create goes through the mutating webhook.
    let pods: Api<Pod> = ns.api();
    let mut worst = Duration::ZERO;
    let n = 20;
    for i in 0..n {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("web-{i}")},
            "spec": {"containers": [
                {"name": "app", "image": images::TESTAPP, "imagePullPolicy": "IfNotPresent"},
                {"name": containers::LAMEDUCK_PROXY, "image": images::PROXY, "imagePullPolicy": "IfNotPresent"},
            ]},
        }))
        .unwrap();
        let started = Instant::now();
        let created = pods
            .create(&PostParams { dry_run: true, ..PostParams::default() }, &pod)
            .await
            .expect("admitted");
        worst = worst.max(started.elapsed());
        assert_eq!(
            created.annotations().get(annotations::POLICY).map(String::as_str),
            Some("web"),
            "admitted with the policy applied, not skipped"
        );
    }
    drip.abort();
    eprintln!("slowloris: {held} connections held; worst admission {worst:?}");
    let line = format!(
        "slowloris ({held} held connections) on the webhook\t{n} admissions\t{n} mutated\t{:.3}\t0\n",
        worst.as_secs_f64()
    );
    eprint!("fault row: {line}");
    let path = PathBuf::from(logs_dir()).join("faults.tsv");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(line.as_bytes())
        .unwrap();
    assert!(held >= 300, "only {held} slow connections could be opened");
    assert!(
        worst < Duration::from_secs(1),
        "an admission took {worst:?} while {held} slow clients were held"
    );
    hook.remove().await;
    ns.finish().await;
}
