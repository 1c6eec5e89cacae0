//! Benchmarks lameduck-operator on the local cluster and prints figures (no pass/fail).
//!
//! `decisions` mode: N run-to-completion pods bound to a node that has no kubelet, their owners
//! mixed (a third each owned by a Job, by another kind of object, by nothing); the benchmark
//! writes each pod's status ("main exited, proxy running") at a fixed rate, and measures from each
//! write to the operator's recorded decision (its `--dry-run` event's eventTime), and the
//! operator's RSS.
//!
//! Paired with the decisions, in the same run, a baseline: the benchmark's own plain pod watch
//! (the operator's field selector) records when the API server delivers each written status. The
//! latency then splits in two: write -> watch delivery (the API server and etcd), and watch
//! delivery -> decision (the operator). Every time is wall clock (`SystemTime`, as the operator's
//! eventTime is, on the same machine); a write's time is when its request was sent.
//!
//! `kubelet` mode: real Jobs on the real kubelet, lameduck-managed vs native sidecar: from the
//! moment the main container is seen terminated to the moment the pod is seen Succeeded.
#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{ConfigMap, Namespace, Node, Pod},
    events::v1::Event,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use lameduck_api::names::{annotations, containers, events, images, labels};
use lameduck_e2e::{
    operator::Operator,
    workloads::{job, proxy_container},
};
use serde_json::json;
use tokio::sync::{Semaphore, oneshot};

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Status write to dry-run decision latency, and operator RSS.
    Decisions(Decisions),
    /// Main-container exit to pod Succeeded: lameduck-managed Job vs native sidecar.
    Kubelet {
        /// Jobs of each kind.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

#[derive(Debug, clap::Args)]
struct Decisions {
    /// How many pods.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Status writes per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Stop once the operator has synced, after printing its RSS.
    #[arg(long)]
    sync_only: bool,
    /// Also serve the admission webhook (on a free loopback port), as the chart does: the
    /// operator then also watches every pod of the namespace.
    #[arg(long)]
    webhook: bool,
    /// Pods created at once.
    #[arg(long, default_value_t = 32)]
    create_concurrency: usize,
    /// Also print, per this many seconds from the first write, how many pods reached each
    /// step (sent, answered, watched, decided).
    #[arg(long, value_parser = parse_seconds, value_name = "SECONDS")]
    timeline: Option<Duration>,
    /// Status writes in flight at most; 0: no limit. The client speaks HTTP/1.1, one
    /// connection per write in flight, where a kubelet multiplexes its writes on one HTTP/2
    /// connection: unbounded, a slow API server gets thousands of new TLS connections.
    #[arg(long, default_value_t = 0)]
    max_in_flight: usize,
}

const NODE: &str = "lameduck-bench-node";

fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds.is_finite() => Ok(Duration::from_secs_f64(seconds)),
        _ => Err(format!("{text}: not a positive number of seconds")),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    // Pods left by an earlier run on the kubelet-less node would hold the namespace forever.
    let leftovers: Api<Pod> = Api::namespaced(client.clone(), name);
    let _ =
        leftovers.delete_collection(&DeleteParams::default().grace_period(0), &ListParams::default()).await;
    let _ = namespaces.delete(name, &DeleteParams::background()).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    while namespaces.get_opt(name).await?.is_some() {
        if Instant::now() > deadline {
            bail!("namespace {name} still terminating after 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": name}}))?)
        .await?;
    let policy = json!({
        "apiVersion": "lameduck.io/v1alpha1", "kind": "ShutdownPolicy",
        "metadata": {"name": "all", "namespace": name},
        "spec": {"proxy": {"profile": "Lameduck"}, "completion": {"methods": ["PortForward"]}},
    });
    let policies: Api<lameduck_api::ShutdownPolicy> = Api::namespaced(client.clone(), name);
    policies.create(&PostParams::default(), &serde_json::from_value(policy)?).await?;
    Ok(())
}

/// The operator's own pod watch selector (`RUN_TO_COMPLETION` in lameduck-operator's main.rs):
/// the baseline watch is served by the API server exactly as the operator's is.
const RUN_TO_COMPLETION: &str = "spec.restartPolicy!=Always";

/// When each step happened for each pod, by pod name; wall clock throughout, since the decision
/// times are the operator's eventTimes.
#[derive(Default)]
struct Moments {
    /// The status write's request was sent.
    sent: HashMap<String, SystemTime>,
    /// Its successful response arrived.
    answered: HashMap<String, SystemTime>,
    /// The baseline watch first delivered the pod with its main container terminated.
    watched: HashMap<String, SystemTime>,
    /// The eventTime of the operator's dry-run decision event.
    decided: HashMap<String, SystemTime>,
}

/// Writes in flight now and at most: when the API server answers slowly, writes pile up (and
/// each holds its own connection, as the client speaks HTTP/1.1).
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl InFlight {
    /// Counts one write in flight until the guard is dropped.
    fn enter(&self) -> Entered<'_> {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        Entered(self)
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

struct Entered<'a>(&'a InFlight);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

fn main_terminated(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .any(|s| s.name == "main" && s.state.as_ref().is_some_and(|st| st.terminated.is_some()))
}

/// The baseline: a plain watch of the namespace's run-to-completion pods that records when each
/// pod is first delivered with its main container terminated (the time is taken as the stream
/// yields it, before anything else). `listed` fires when the initial list is done.
async fn watch_deliveries(api: Api<Pod>, moments: Arc<Mutex<Moments>>, listed: oneshot::Sender<()>) {
    let mut stream =
        watcher(api, watcher::Config::default().fields(RUN_TO_COMPLETION)).default_backoff().boxed();
    let mut listed = Some(listed);
    while let Some(event) = stream.next().await {
        let at = SystemTime::now();
        match event {
            Ok(watcher::Event::InitDone) => {
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
            }
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) if main_terminated(&pod) => {
                moments.lock().unwrap().watched.entry(pod.name_any()).or_insert(at);
            }
            Ok(_) => {}
            // The watcher lists again by itself; a pod first seen in that list is seen late.
            Err(err) => eprintln!("baseline pod watch failed, re-listing: {err}"),
        }
    }
}

/// Records each pod's first dry-run decision, at its eventTime: when the operator decided, not
/// when the event reached the API server or this watch.
async fn watch_decisions(api: Api<Event>, moments: Arc<Mutex<Moments>>) {
    let mut stream = watcher(api, watcher::Config::default()).default_backoff().applied_objects().boxed();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                eprintln!("event watch failed, re-listing: {err}");
                continue;
            }
        };
        if event.reason.as_deref() != Some(events::DRY_RUN) {
            continue;
        }
        let (Some(pod), Some(time)) = (event.regarding.and_then(|r| r.name), event.event_time) else {
            continue;
        };
        moments.lock().unwrap().decided.entry(pod).or_insert_with(|| SystemTime::from(time.0));
    }
}

/// Milliseconds from `from` to `to` for each pod in both (negative when `to` came first).
fn between(from: &HashMap<String, SystemTime>, to: &HashMap<String, SystemTime>) -> Vec<f64> {
    from.iter()
        .filter_map(|(pod, start)| {
            let end = to.get(pod)?;
            Some(
                end.duration_since(*start).map_or_else(|e| -e.duration().as_secs_f64(), |d| d.as_secs_f64())
                    * 1000.0,
            )
        })
        .collect()
}

/// How many pods reached each step in each `bucket` from the first write: shows when a step
/// stalls and when it catches up.
fn print_timeline(m: &Moments, start: SystemTime, bucket: Duration) {
    let index = |at: &SystemTime| {
        at.duration_since(start).map_or(0, |d| (d.as_secs_f64() / bucket.as_secs_f64()) as usize)
    };
    let steps = [&m.sent, &m.answered, &m.watched, &m.decided];
    let buckets = steps.iter().flat_map(|step| step.values()).map(index).max().map_or(0, |last| last + 1);
    let mut counts = vec![[0usize; 4]; buckets];
    for (column, step) in steps.iter().enumerate() {
        for at in step.values() {
            counts[index(at)][column] += 1;
        }
    }
    println!("timeline: from s   sent answered  watched  decided");
    for (i, row) in counts.iter().enumerate() {
        println!(
            "timeline: {:>6.1} {:>6} {:>8} {:>8} {:>8}",
            i as f64 * bucket.as_secs_f64(),
            row[0],
            row[1],
            row[2],
            row[3]
        );
    }
}

fn pod_name(i: usize) -> String {
    format!("pod-{i:06}")
}

async fn decisions(client: Client, args: Decisions) -> anyhow::Result<()> {
    let Decisions { pods, rate, sync_only, webhook, create_concurrency, timeline, max_in_flight } = args;
    let ns = format!("bench-decisions-{pods}");
    namespace(&client, &ns).await?;
    // A node with no kubelet: pods bound to it stay as the benchmark writes them.
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(NODE).await?.is_none() {
        nodes
            .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": NODE}}))?)
            .await?;
    }
    // Real owners, so that the garbage collector keeps the pods: a (suspended) Job for a third,
    // a ConfigMap standing in for any other kind (a Workflow, a TaskRun) for a third, and none.
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let mut owner = job("owner", 1, json!({}));
    owner["spec"]["suspend"] = json!(true);
    let owner = jobs.create(&PostParams::default(), &serde_json::from_value(owner)?).await?;
    let job_ref = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "owner", "uid": owner.uid(), "controller": true}]);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let other = maps
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "owner"}}))?)
        .await?;
    let other_ref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": other.uid(), "controller": true}]);

    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let started = Instant::now();
    stream::iter(0..pods)
        .map(|i| {
            let api = api.clone();
            // Marked as the chart's webhook marks what it admits: no configuration points the API
            // server at this operator's webhook, and unmarked pods would each get an
            // AdmittedUnmutated event, ten thousand writes that crowd out the decisions' events.
            let admitted = json!({annotations::POLICY: "all"});
            let metadata = match i % 3 {
                0 => json!({"name": pod_name(i), "annotations": admitted, "labels": {labels::JOB_NAME: "owner"}, "ownerReferences": job_ref}),
                1 => json!({"name": pod_name(i), "annotations": admitted, "labels": {"app": "workflow-step"}, "ownerReferences": other_ref}),
                _ => json!({"name": pod_name(i), "annotations": admitted, "labels": {"app": "bare"}}),
            };
            let pod = json!({
                "metadata": metadata,
                "spec": {
                    "nodeName": NODE, "restartPolicy": "Never",
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "main", "image": images::TESTAPP}, {"name": containers::LAMEDUCK_PROXY, "image": images::PROXY, "args": ["--enable-shutdown-endpoint"]}],
                },
            });
            async move { api.create(&PostParams::default(), &serde_json::from_value(pod)?).await.map(|_| ()).map_err(anyhow::Error::from) }
        })
        .buffer_unordered(create_concurrency)
        .try_collect::<()>()
        .await?;
    eprintln!("created {pods} pods in {:.1}s", started.elapsed().as_secs_f64());

    let mut args = vec!["--dry-run".to_owned(), "--status-interval".into(), "5s".into()];
    if webhook {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        args.extend([
            "--webhook-addr".into(),
            format!("127.0.0.1:{port}"),
            "--webhook-host".into(),
            "127.0.0.1".into(),
        ]);
        // No webhook configurations to patch in a benchmark.
        args.extend([
            "--mutating-webhook-configuration=".into(),
            "--validating-webhook-configuration=".into(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let operator = Operator::launch(None, &ns, "bench", &args).await;
    let (rss_synced, _) = operator.rss_mib();
    eprintln!("operator ready; RSS {rss_synced:.1} MiB with {pods} pods cached");
    if sync_only {
        tokio::time::sleep(Duration::from_secs(6)).await;
        println!(
            "decisions: pods={pods} operator RSS MiB after sync={rss_synced:.1}, 6s later={:.1}",
            operator.rss_mib().0
        );
        return Ok(());
    }

    // The baseline watch is listed before the first write, so that it only sees them live.
    let moments: Arc<Mutex<Moments>> = Arc::default();
    let (listed_tx, listed) = oneshot::channel();
    let baseline = tokio::spawn(watch_deliveries(api.clone(), moments.clone(), listed_tx));
    listed.await.context("the baseline pod watch ended before listing")?;
    let decisions_watch =
        tokio::spawn(watch_decisions(Api::namespaced(client.clone(), &ns), moments.clone()));

    // Status writes at a fixed rate, each its own task: a slow answer does not hold back the
    // next write, as no kubelet would wait either.
    let in_flight = Arc::new(InFlight::default());
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    let write_start = Instant::now();
    let write_start_wall = SystemTime::now();
    let mut writes = Vec::with_capacity(pods);
    // With a limit, the next write waits for a slot here: the sent rate then shows what the
    // cluster took.
    let slots =
        Arc::new(Semaphore::new(if max_in_flight == 0 { Semaphore::MAX_PERMITS } else { max_in_flight }));
    for i in 0..pods {
        ticker.tick().await;
        let slot = slots.clone().acquire_owned().await?;
        let (api, moments, in_flight, failures) =
            (api.clone(), moments.clone(), in_flight.clone(), failures.clone());
        writes.push(tokio::spawn(async move {
            let _slot = slot;
            let name = pod_name(i);
            let now = k8s_openapi::jiff::Timestamp::now();
            let status = json!({"status": {
                "phase": "Running",
                "containerStatuses": [
                    {"name": "main", "ready": false, "restartCount": 0, "image": images::TESTAPP, "imageID": "",
                     "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now.to_string(), "finishedAt": now.to_string()}}},
                    {"name": containers::LAMEDUCK_PROXY, "ready": true, "restartCount": 0, "image": images::PROXY, "imageID": "",
                     "state": {"running": {"startedAt": now.to_string()}}},
                ],
            }});
            let _guard = in_flight.enter();
            let sent = SystemTime::now();
            moments.lock().unwrap().sent.insert(name.clone(), sent);
            match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await {
                Ok(_) => {
                    moments.lock().unwrap().answered.insert(name, SystemTime::now());
                }
                // A 504 may still have been written: the watch and the operator say whether.
                Err(err) => failures.lock().unwrap().push(format!("{name}: {err}")),
            }
        }));
    }
    let sent_rate = pods as f64 / write_start.elapsed().as_secs_f64();
    for write in writes {
        write.await?;
    }
    let answered_rate = pods as f64 / write_start.elapsed().as_secs_f64();
    eprintln!(
        "wrote {pods} statuses: sent at {sent_rate:.1}/s, all answered at {answered_rate:.1}/s (asked {rate}/s)"
    );

    // Until every pod is decided, or nothing new came for 30 s (a write that failed may never
    // show), or 5 minutes at most.
    let progress = || {
        let m = moments.lock().unwrap();
        (m.watched.len(), m.decided.len())
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut last, mut last_change) = (progress(), Instant::now());
    while last.1 < pods && Instant::now() < deadline && last_change.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = progress();
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
    }
    tokio::time::sleep(Duration::from_secs(6)).await; // one status interval more for the gauges
    let (rss, peak) = operator.rss_mib();
    let stuck = lameduck_e2e::http_get(operator.admin, "/metrics").await.and_then(|(_, text)| {
        lameduck_e2e::operator::sample_value(&text, "lameduck_stuck_pods{reason=\"stopping\"}")
    });
    baseline.abort();
    decisions_watch.abort();

    let m = std::mem::take(&mut *moments.lock().unwrap());
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    println!(
        "decisions: pods={pods} asked={rate}/s sent={sent_rate:.1}/s answered={answered_rate:.1}/s \
         watched={}/{pods} decided={}/{pods} write errors={}{}",
        m.watched.len(),
        m.decided.len(),
        failures.len(),
        failures.first().map_or(String::new(), |first| format!(" (first: {first})")),
    );
    println!(
        "decisions: write time = when the status request was sent (wall clock); peak writes in flight={}",
        in_flight.peak()
    );
    let rows = [
        ("write round trip (sent -> answered)", &m.sent, &m.answered),
        ("write -> watch delivery", &m.sent, &m.watched),
        ("watch delivery -> decision", &m.watched, &m.decided),
        ("write -> decision", &m.sent, &m.decided),
    ];
    for (what, from, to) in rows {
        let mut values = between(from, to);
        values.sort_by(f64::total_cmp);
        println!(
            "decisions: {what:<36} ms: n={} p50={:.1} p90={:.1} p99={:.1} max={:.1}",
            values.len(),
            percentile(&values, 50.0),
            percentile(&values, 90.0),
            percentile(&values, 99.0),
            percentile(&values, 100.0)
        );
    }
    println!(
        "decisions: operator RSS MiB: after sync={rss_synced:.1} end={rss:.1} peak={peak:.1}; lameduck_stuck_pods={}",
        stuck.map_or("?".into(), |v| v.to_string())
    );
    if let Some(bucket) = timeline {
        print_timeline(&m, write_start_wall, bucket);
    }
    drop(operator);
    // No kubelet will confirm these pods' deletion: delete them at once.
    api.delete_collection(&DeleteParams::default().grace_period(0), &ListParams::default()).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete(&ns, &DeleteParams::background()).await?;
    Ok(())
}

/// Watches a Job's pod; returns seconds from "main terminated" seen to "pod Succeeded" seen.
async fn exit_to_succeeded(client: &Client, ns: &str, job_name: &str) -> anyhow::Result<f64> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let config = watcher::Config::default().labels(&format!("{}={job_name}", labels::JOB_NAME));
    let mut stream = watcher(api, config).applied_objects().boxed();
    let mut main_exit: Option<Instant> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let pod = match tokio::time::timeout_at(deadline, stream.try_next()).await {
            Ok(Ok(Some(pod))) => pod,
            Ok(other) => bail!("pod watch for {job_name} ended: {other:?}"),
            Err(_) => bail!("{job_name}: no Succeeded pod within 2 minutes"),
        };
        if main_exit.is_none() && main_terminated(&pod) {
            main_exit = Some(Instant::now());
        }
        match pod.status.and_then(|s| s.phase).as_deref() {
            Some("Succeeded") => {
                let exit = main_exit.context("pod Succeeded before main was seen terminated")?;
                return Ok(exit.elapsed().as_secs_f64());
            }
            Some("Failed") => bail!("{job_name} failed"),
            _ => {}
        }
    }
}

async fn kubelet(client: Client, runs: usize) -> anyhow::Result<()> {
    let ns = "bench-kubelet";
    namespace(&client, ns).await?;
    let _operator = Operator::launch(None, ns, "bench", &[]).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let mut results: HashMap<&str, Vec<f64>> = HashMap::new();
    for run in 0..runs {
        for kind in ["lameduck", "native"] {
            let name = format!("{kind}-{run}");
            let spec = if kind == "native" {
                job(&name, 2, json!({"initContainers": [proxy_container(true)]}))
            } else {
                job(&name, 2, json!({"containers": [proxy_container(false)]}))
            };
            let watch = exit_to_succeeded(&client, ns, &name);
            jobs.create(&PostParams::default(), &serde_json::from_value(spec)?).await?;
            let seconds = watch.await?;
            results.entry(kind).or_default().push(seconds);
        }
    }
    for kind in ["lameduck", "native"] {
        let mut values = results.remove(kind).unwrap_or_default();
        values.sort_by(f64::total_cmp);
        println!(
            "kubelet: {kind:<8} main exit -> pod Succeeded s: runs={} p50={:.2} max={:.2} all={values:.2?}",
            values.len(),
            percentile(&values, 50.0),
            percentile(&values, 100.0)
        );
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete(ns, &DeleteParams::background()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::try_default().await.context("KUBECONFIG for the local cluster")?;
    match args.mode {
        Mode::Decisions(args) => decisions(client, args).await,
        Mode::Kubelet { runs } => kubelet(client, runs).await,
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
