//! Benchmarks lameduck-operator on the local cluster and prints figures (no pass/fail).
//!
//! `decisions` mode: N run-to-completion pods bound to a node that has no kubelet, their owners
//! mixed (a third each owned by a Job, by another kind of object, by nothing); the benchmark
//! writes each pod's status ("main exited, proxy running") at a fixed rate, and measures from each
//! write to the operator's recorded decision (its `--dry-run` event's eventTime), and the
//! operator's RSS.
//!
//! `kubelet` mode: real Jobs on the real kubelet, lameduck-managed vs native sidecar: from the
//! moment the main container is seen terminated to the moment the pod is seen Succeeded.
#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
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

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Status write to dry-run decision latency, and operator RSS.
    Decisions {
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
    },
    /// Main-container exit to pod Succeeded: lameduck-managed Job vs native sidecar.
    Kubelet {
        /// Jobs of each kind.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

const NODE: &str = "lameduck-bench-node";

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

fn pod_name(i: usize) -> String {
    format!("pod-{i:06}")
}

async fn decisions(
    client: Client,
    pods: usize,
    rate: u32,
    sync_only: bool,
    webhook: bool,
    create_concurrency: usize,
) -> anyhow::Result<()> {
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

    // Decisions as they are published: pod name -> eventTime.
    let decided: Arc<Mutex<HashMap<String, SystemTime>>> = Arc::default();
    let events_api: Api<Event> = Api::namespaced(client.clone(), &ns);
    let seen = decided.clone();
    let watch = tokio::spawn(async move {
        let mut stream = watcher(events_api, watcher::Config::default()).applied_objects().boxed();
        while let Ok(Some(event)) = stream.try_next().await {
            if event.reason.as_deref() != Some(events::DRY_RUN) {
                continue;
            }
            let (Some(pod), Some(time)) = (event.regarding.and_then(|r| r.name), event.event_time) else {
                continue;
            };
            seen.lock().unwrap().entry(pod).or_insert_with(|| SystemTime::from(time.0));
        }
    });

    // Status writes at a fixed rate; each records when it was sent.
    let written: Arc<Mutex<HashMap<String, SystemTime>>> = Arc::default();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    let write_start = Instant::now();
    let mut writes = Vec::with_capacity(pods);
    for i in 0..pods {
        ticker.tick().await;
        let (api, written) = (api.clone(), written.clone());
        writes.push(tokio::spawn(async move {
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
            let sent = SystemTime::now();
            let result = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await;
            written.lock().unwrap().insert(name, sent);
            result.map(|_| ())
        }));
    }
    for write in writes {
        write.await??;
    }
    let achieved = pods as f64 / write_start.elapsed().as_secs_f64();
    eprintln!("wrote {pods} statuses at {achieved:.1}/s (asked {rate}/s)");

    let deadline = Instant::now() + Duration::from_secs(300);
    while decided.lock().unwrap().len() < pods && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await; // one status interval more for the gauges
    let (rss, peak) = operator.rss_mib();
    let stuck = lameduck_e2e::http_get(operator.admin, "/metrics").await.and_then(|(_, text)| {
        lameduck_e2e::operator::sample_value(&text, "lameduck_stuck_pods{reason=\"stopping\"}")
    });
    watch.abort();

    let decided = decided.lock().unwrap().clone();
    let written = written.lock().unwrap().clone();
    let mut latencies: Vec<f64> = written
        .iter()
        .filter_map(|(pod, sent)| {
            let at = decided.get(pod)?;
            Some(
                at.duration_since(*sent).map_or_else(|e| -e.duration().as_secs_f64(), |d| d.as_secs_f64())
                    * 1000.0,
            )
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    println!("decisions: pods={pods} rate={achieved:.1}/s decided={}/{pods}", latencies.len());
    println!(
        "decisions: status write -> decision ms: p50={:.1} p90={:.1} p99={:.1} max={:.1}",
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 100.0)
    );
    println!(
        "decisions: operator RSS MiB: after sync={rss_synced:.1} end={rss:.1} peak={peak:.1}; lameduck_stuck_pods={}",
        stuck.map_or("?".into(), |v| v.to_string())
    );
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
        let status = pod.status.unwrap_or_default();
        if main_exit.is_none()
            && status
                .container_statuses
                .iter()
                .flatten()
                .any(|s| s.name == "main" && s.state.as_ref().is_some_and(|st| st.terminated.is_some()))
        {
            main_exit = Some(Instant::now());
        }
        match status.phase.as_deref() {
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
        Mode::Decisions { pods, rate, sync_only, webhook, create_concurrency } => {
            decisions(client, pods, rate, sync_only, webhook, create_concurrency).await
        }
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
