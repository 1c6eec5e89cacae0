//! Runs a Prometheus (Debian's `prometheus` package) on this machine for one test, scraping the
//! cluster's pods that carry the conventional `prometheus.io/*` annotations (what the chart's pods
//! carry), with lameduck's alert rules loaded, a 2s scrape and rule interval, and its HTTP API on a
//! free loopback port. The scrape goes straight from this machine to the pod IPs, which the host
//! routes to. Killed when dropped.
//!
//! Debian builds Prometheus without Kubernetes service discovery (removed in 1.5.0 "due to the
//! insane amount of dependencies", NEWS.Debian; `kubernetes_sd_configs` is an unknown field).
//! So the harness discovers the pods itself and hands them to Prometheus through file-based
//! discovery, labelled as the Kubernetes pod role labels them (`__meta_kubernetes_pod_*`): the
//! relabelling below is the one a Prometheus with `kubernetes_sd_configs: [{role: pod}]` uses.
//!
//! [`PrometheusApi`] is the client of Prometheus' HTTP API that this harness and the one for the
//! Prometheus Operator (`crate::prometheus_operator`, upstream Prometheus with Kubernetes
//! discovery) share.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};
use serde_json::{Value, json};
use tokio::{
    process::{Child, Command},
    task::JoinHandle,
    time::Instant,
};

use crate::logs_dir;

/// One sample of an instant query: the series' labels and its value.
pub type Sample = (BTreeMap<String, String>, f64);

/// The alert rules the chart ships, which this Prometheus evaluates.
pub fn alert_rules_file() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/lameduck/files/alert-rules.yaml");
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// The binary: `$LAMEDUCK_PROMETHEUS_BIN`, else Debian's, else `prometheus` from `PATH`.
fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("LAMEDUCK_PROMETHEUS_BIN") {
        return bin.into();
    }
    let debian = PathBuf::from("/usr/bin/prometheus");
    if debian.exists() { debian } else { PathBuf::from("prometheus") }
}

/// The relabelling of the usual annotation-based pod scrape job (upstream's example
/// `kubernetes-pods`): pods annotated `prometheus.io/scrape: "true"`, at `prometheus.io/port` and
/// `prometheus.io/path` (and `prometheus.io/scheme`), labelled with namespace, pod and container.
/// Shared by this harness's file-discovery job and the Prometheus Operator test's
/// `kubernetes_sd_configs` one.
pub fn pod_annotation_relabelling() -> Value {
    let annotation = |name: &str| format!("__meta_kubernetes_pod_annotation_prometheus_io_{name}");
    json!([
        {"source_labels": [annotation("scrape")], "action": "keep", "regex": "true"},
        // Finished pods have nothing left to scrape.
        {"source_labels": ["__meta_kubernetes_pod_phase"], "action": "drop", "regex": "Succeeded|Failed"},
        {"source_labels": [annotation("scheme")], "regex": "(https?)", "target_label": "__scheme__"},
        {"source_labels": [annotation("path")], "regex": "(.+)", "target_label": "__metrics_path__"},
        {
            "source_labels": ["__address__", annotation("port")],
            "regex": r"([^:]+)(?::\d+)?;(\d+)",
            "replacement": "$1:$2",
            "target_label": "__address__",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
    ])
}

/// The scrape job: [`pod_annotation_relabelling`] over the targets in `targets_file`, written by
/// [`discover`].
fn scrape_job(targets_file: &Path) -> Value {
    json!({
        "job_name": "kubernetes-pods",
        // Prometheus watches the file (inotify); the interval is a fallback.
        "file_sd_configs": [{"files": [targets_file], "refresh_interval": "2s"}],
        "relabel_configs": pod_annotation_relabelling(),
    })
}

/// A Kubernetes label or annotation name as Prometheus' Kubernetes discovery spells it in a
/// label name: every character that is not `[a-zA-Z0-9_]` becomes `_`.
fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// File-discovery target groups for one pod, as Prometheus' Kubernetes pod role makes them: one
/// target per declared container port (`ip:port`), or one per container without ports (`ip`);
/// none while the pod has no IP.
fn pod_targets(pod: &Pod) -> Vec<Value> {
    let status = pod.status.clone().unwrap_or_default();
    let Some(ip) = status.pod_ip.filter(|ip| !ip.is_empty()) else { return Vec::new() };
    let meta = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let mut common = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        common.insert(format!("__meta_kubernetes_{k}"), v.to_owned());
    };
    set("namespace", meta.namespace.as_deref().unwrap_or_default());
    set("pod_name", meta.name.as_deref().unwrap_or_default());
    set("pod_ip", &ip);
    set("pod_uid", meta.uid.as_deref().unwrap_or_default());
    set("pod_node_name", spec.node_name.as_deref().unwrap_or_default());
    set("pod_host_ip", status.host_ip.as_deref().unwrap_or_default());
    set("pod_phase", status.phase.as_deref().unwrap_or_default());
    let ready = status.conditions.iter().flatten().find(|c| c.type_ == "Ready");
    set("pod_ready", &ready.map_or("unknown".to_owned(), |c| c.status.to_lowercase()));
    if let Some(owner) = meta.owner_references.iter().flatten().find(|o| o.controller == Some(true)) {
        set("pod_controller_kind", &owner.kind);
        set("pod_controller_name", &owner.name);
    }
    for (kind, map) in [("label", &meta.labels), ("annotation", &meta.annotations)] {
        for (k, v) in map.iter().flatten() {
            set(&format!("pod_{kind}_{}", sanitize(k)), v);
            set(&format!("pod_{kind}present_{}", sanitize(k)), "true");
        }
    }
    let containers = spec.containers.iter().map(|c| (c, false));
    let init = spec.init_containers.iter().flatten().map(|c| (c, true));
    let mut groups = Vec::new();
    for (container, is_init) in containers.chain(init) {
        let mut labels = common.clone();
        labels.insert("__meta_kubernetes_pod_container_name".into(), container.name.clone());
        labels.insert(
            "__meta_kubernetes_pod_container_image".into(),
            container.image.clone().unwrap_or_default(),
        );
        labels.insert("__meta_kubernetes_pod_container_init".into(), is_init.to_string());
        let ports = container.ports.clone().unwrap_or_default();
        if ports.is_empty() {
            groups.push(json!({"targets": [ip], "labels": labels}));
        }
        for port in ports {
            let mut labels = labels.clone();
            labels.insert("__meta_kubernetes_pod_container_port_name".into(), port.name.unwrap_or_default());
            labels.insert(
                "__meta_kubernetes_pod_container_port_number".into(),
                port.container_port.to_string(),
            );
            labels.insert(
                "__meta_kubernetes_pod_container_port_protocol".into(),
                port.protocol.unwrap_or_else(|| "TCP".into()),
            );
            groups.push(json!({"targets": [format!("{ip}:{}", port.container_port)], "labels": labels}));
        }
    }
    groups
}

/// The pods of `namespaces` (empty: all) as target groups.
async fn list_targets(client: &Client, namespaces: &[String]) -> Result<Vec<Value>, kube::Error> {
    let apis: Vec<Api<Pod>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect()
    };
    let mut groups = Vec::new();
    for api in apis {
        for pod in api.list(&ListParams::default()).await? {
            groups.extend(pod_targets(&pod));
        }
    }
    Ok(groups)
}

/// Writes the file Prometheus reads its targets from, atomically (a rename), so that it never
/// reads half a file.
fn write_targets(file: &Path, groups: &[Value]) {
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(groups).expect("targets serialize"))
        .expect("write targets");
    std::fs::rename(&tmp, file).expect("replace targets file");
}

/// Keeps the targets file up to date with the pods, every second, until aborted.
async fn discover(client: Client, namespaces: Vec<String>, file: PathBuf, mut last: Vec<Value>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match list_targets(&client, &namespaces).await {
            Ok(groups) if groups != last => {
                write_targets(&file, &groups);
                last = groups;
            }
            Ok(_) => {}
            // The next round retries; a failing test shows the targets file's age in `describe`.
            Err(e) => eprintln!("prometheus harness: listing pods failed: {e}"),
        }
    }
}

/// Percent-encodes a query parameter (everything but RFC 3986's unreserved characters).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Prometheus' HTTP API at one address: instant queries, targets, rules and alerts, and waits
/// on them.
#[derive(Clone, Copy, Debug)]
pub struct PrometheusApi {
    pub addr: SocketAddr,
}

/// A running Prometheus; killed when dropped. Its HTTP API's methods ([`PrometheusApi`]) are
/// callable on it directly.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    api: PrometheusApi,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    /// Its config, TSDB, log and targets file.
    pub dir: PathBuf,
    pub log: PathBuf,
    /// The discovered pods, in Prometheus' file-discovery format.
    pub targets_file: PathBuf,
    discovery: JoinHandle<()>,
    started: Instant,
}

impl Prometheus {
    /// Starts Prometheus for a test named `name`, scraping annotated pods in `namespaces` (empty:
    /// all) of the cluster `$KUBECONFIG` names. Call [`Prometheus::wait_ready`] before querying.
    pub async fn start(name: &str, namespaces: &[&str]) -> Self {
        let client = crate::client().await;
        let started = Instant::now();
        let suffix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            % 1_000_000_000;
        let dir = PathBuf::from(logs_dir()).join(format!("prometheus-{name}-{suffix}"));
        std::fs::create_dir_all(dir.join("data")).expect("Prometheus directory");

        let namespaces: Vec<String> = namespaces.iter().map(|ns| (*ns).to_owned()).collect();
        let targets_file = dir.join("targets.json");
        let groups = list_targets(&client, &namespaces).await.expect("list the pods to scrape");
        write_targets(&targets_file, &groups);
        let discovery = tokio::spawn(discover(client, namespaces, targets_file.clone(), groups));

        let config = json!({
            "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "2s"},
            "rule_files": [alert_rules_file()],
            "scrape_configs": [scrape_job(&targets_file)],
        });
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, serde_yaml_ng::to_string(&config).expect("config serializes"))
            .expect("write prometheus.yml");

        // A free port rather than 9090: Debian's prometheus.service may hold that one.
        let addr = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().unwrap()
        };
        let log = dir.join("prometheus.log");
        let file = std::fs::File::create(&log).expect("Prometheus log file");
        let child = Command::new(binary())
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {}: {e} (install Debian's prometheus package: bash tests/cluster/install-deps.sh)",
                    binary().display()
                )
            });
        Self { child, api: PrometheusApi { addr }, addr, dir, log, targets_file, discovery, started }
    }

    /// Time since [`Prometheus::start`].
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/-/ready` answers 200 (config and rules loaded, TSDB open); returns how long
    /// that took since the start.
    pub async fn wait_ready(&mut self) -> Duration {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited with {status}; log {}:\n{}", self.log.display(), self.log_text());
            }
            if self.is_ready().await {
                return self.uptime();
            }
            if Instant::now() > deadline {
                panic!(
                    "prometheus not ready within a minute; log {}:\n{}",
                    self.log.display(),
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl PrometheusApi {
    /// GETs an API path and returns its `data`, or why not.
    async fn api(&self, path: &str) -> Result<Value, String> {
        let (code, body) = crate::http_get(self.addr, path)
            .await
            .ok_or_else(|| format!("prometheus at {} did not answer GET {path}", self.addr))?;
        let answer: Value =
            serde_json::from_str(&body).map_err(|e| format!("GET {path}: {code}, not JSON ({e}): {body}"))?;
        if answer["status"] != "success" {
            return Err(format!("GET {path}: {code} {answer}"));
        }
        Ok(answer["data"].clone())
    }

    async fn try_query(&self, expr: &str) -> Result<Vec<Sample>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(expr))).await?;
        let value = |pair: &Value| pair[1].as_str().and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|sample| {
                    let labels = sample["metric"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect();
                    (labels, value(&sample["value"]))
                })
                .collect()),
            Some("scalar") => Ok(vec![(BTreeMap::new(), value(&data["result"]))]),
            other => Err(format!("{expr}: result type {other:?} is not an instant vector or scalar")),
        }
    }

    /// Evaluates `expr` now (`/api/v1/query`): each series' labels and value.
    pub async fn query(&self, expr: &str) -> Vec<Sample> {
        self.try_query(expr).await.unwrap_or_else(|e| panic!("query failed: {e}"))
    }

    /// The value of an expression that yields one series (an aggregate such as `sum(...)`): the
    /// first sample's value, or `None` when there is none (or the query fails).
    pub async fn value(&self, expr: &str) -> Option<f64> {
        self.try_query(expr).await.ok()?.first().map(|(_, value)| *value)
    }

    /// Polls `expr` until `accept` holds for its result and returns that result; after `timeout`,
    /// an error with the last result and the scrape targets.
    pub async fn wait_for_samples(
        &self,
        expr: &str,
        accept: impl Fn(&[Sample]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<Sample>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.try_query(expr).await {
                Ok(samples) if accept(&samples) => return Ok(samples),
                other => other,
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {expr}; last result: {last:?}\n{}",
                    self.describe().await
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Polls an expression that yields one series (see [`PrometheusApi::value`]) until `accept`
    /// holds for its value and returns that value; no series counts as not yet.
    pub async fn wait_for(
        &self,
        expr: &str,
        accept: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> Result<f64, String> {
        let samples = self
            .wait_for_samples(
                expr,
                |samples| samples.first().is_some_and(|(_, value)| accept(*value)),
                timeout,
            )
            .await?;
        Ok(samples[0].1)
    }

    /// `/api/v1/targets`: the active and dropped targets.
    pub async fn targets(&self) -> Value {
        self.api("/api/v1/targets").await.unwrap_or_else(|e| panic!("targets: {e}"))
    }

    /// `/api/v1/rules`: the rule groups with each rule's health and state.
    pub async fn rules(&self) -> Value {
        self.api("/api/v1/rules").await.unwrap_or_else(|e| panic!("rules: {e}"))
    }

    /// `/api/v1/alerts`: the active (pending and firing) alerts with their labels and state.
    pub async fn alerts(&self) -> Vec<Value> {
        let data = self.api("/api/v1/alerts").await.unwrap_or_else(|e| panic!("alerts: {e}"));
        data["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// Whether `/-/ready` answers 200: configuration and rules loaded, TSDB open.
    pub async fn is_ready(&self) -> bool {
        crate::http_get(self.addr, "/-/ready").await.is_some_and(|(code, _)| code == 200)
    }

    /// The names of the alerting rules loaded.
    pub async fn alert_names(&self) -> Vec<String> {
        self.rules().await["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().into_iter().flatten())
            .filter(|rule| rule["type"] == "alerting")
            .filter_map(|rule| rule["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// For failure messages: the active targets (URL, health, last error, labels).
    pub async fn describe(&self) -> String {
        let mut out = format!("prometheus at http://{}:\n", self.addr);
        match self.api("/api/v1/targets").await {
            Ok(targets) => {
                let active = targets["activeTargets"].as_array().cloned().unwrap_or_default();
                let dropped = targets["droppedTargets"].as_array().map_or(0, Vec::len);
                let _ = writeln!(out, "  {} active targets, {dropped} dropped by relabelling", active.len());
                for t in active {
                    let _ = writeln!(
                        out,
                        "  {} {} {:?} {}",
                        t["scrapeUrl"].as_str().unwrap_or_default(),
                        t["health"].as_str().unwrap_or_default(),
                        t["lastError"].as_str().unwrap_or_default(),
                        t["labels"]
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "  targets: {e}");
            }
        }
        out
    }
}

impl std::ops::Deref for Prometheus {
    type Target = PrometheusApi;

    fn deref(&self) -> &PrometheusApi {
        &self.api
    }
}

impl Prometheus {
    /// Polls `expr` until `accept` holds for its result (see [`PrometheusApi::wait_for_samples`]);
    /// a timeout's error also has the discovery file and the end of the log.
    pub async fn wait_for_samples(
        &self,
        expr: &str,
        accept: impl Fn(&[Sample]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<Sample>, String> {
        self.api.wait_for_samples(expr, accept, timeout).await.map_err(|e| format!("{e}{}", self.notes()))
    }

    /// Polls a one-series expression until `accept` holds for its value (see
    /// [`PrometheusApi::wait_for`]); a timeout's error also has the discovery file and the log.
    pub async fn wait_for(
        &self,
        expr: &str,
        accept: impl Fn(f64) -> bool,
        timeout: Duration,
    ) -> Result<f64, String> {
        self.api.wait_for(expr, accept, timeout).await.map_err(|e| format!("{e}{}", self.notes()))
    }

    /// For failure messages: the active targets, the discovery file and the end of the log.
    pub async fn describe(&self) -> String {
        format!("{}{}", self.api.describe().await, self.notes())
    }

    /// The discovery file's size and age and the end of the log (read from disk, no API call).
    fn notes(&self) -> String {
        let mut out = format!("  dir {}\n", self.dir.display());
        let groups = std::fs::read_to_string(&self.targets_file)
            .ok()
            .and_then(|text| serde_json::from_str::<Vec<Value>>(&text).ok())
            .map_or(0, |groups| groups.len());
        let age = std::fs::metadata(&self.targets_file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        let _ = writeln!(
            out,
            "  {groups} discovered targets in {} (written {age:?} ago)",
            self.targets_file.display()
        );
        let log = self.log_text();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        out.push_str("  log (last lines):\n");
        for line in tail.into_iter().rev() {
            let _ = writeln!(out, "    {line}");
        }
        out
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // The TSDB is the bulk of the directory and is of no use
        // after the test (the config and log stay for inspection).
        self.discovery.abort();
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }
}

/// Fails the test unless `promtool check metrics` finds a live scrape clean: names, types, help
/// and units as Prometheus's own conventions want them.
pub fn promtool_check_metrics(exposition: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run promtool: {e}; install Debian's prometheus package"));
    child.stdin.take().expect("piped").write_all(exposition.as_bytes()).expect("promtool reads its input");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_percent_encoded() {
        assert_eq!(encode(r#"up{a="b c"}[5m]"#), "up%7Ba%3D%22b%20c%22%7D%5B5m%5D");
        assert_eq!(encode("rate(x_total[1m]) > 0.5"), "rate%28x_total%5B1m%5D%29%20%3E%200.5");
    }

    #[test]
    fn pods_are_labelled_as_the_kubernetes_pod_role_labels_them() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "p", "namespace": "ns", "uid": "u",
                "labels": {"app.kubernetes.io/name": "x"},
                "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "4191"},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "j", "controller": true}],
            },
            "spec": {
                "nodeName": "n",
                "containers": [
                    {"name": "main", "image": "app"},
                    {"name": "web", "image": "web", "ports": [{"name": "http", "containerPort": 8080}]},
                ],
                "initContainers": [{"name": "proxy", "image": "proxy", "restartPolicy": "Always"}],
            },
            "status": {"podIP": "10.244.0.7", "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap();
        let groups = pod_targets(&pod);
        let targets: Vec<&Value> = groups.iter().map(|g| &g["targets"][0]).collect();
        assert_eq!(targets, [&json!("10.244.0.7"), &json!("10.244.0.7:8080"), &json!("10.244.0.7")]);
        let labels = &groups[1]["labels"];
        assert_eq!(labels["__meta_kubernetes_namespace"], "ns");
        assert_eq!(labels["__meta_kubernetes_pod_name"], "p");
        assert_eq!(labels["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "true");
        assert_eq!(labels["__meta_kubernetes_pod_annotationpresent_prometheus_io_port"], "true");
        assert_eq!(labels["__meta_kubernetes_pod_label_app_kubernetes_io_name"], "x");
        assert_eq!(labels["__meta_kubernetes_pod_controller_kind"], "Job");
        assert_eq!(labels["__meta_kubernetes_pod_ready"], "true");
        assert_eq!(labels["__meta_kubernetes_pod_container_name"], "web");
        assert_eq!(labels["__meta_kubernetes_pod_container_port_name"], "http");
        assert_eq!(groups[2]["labels"]["__meta_kubernetes_pod_container_init"], "true");

        let mut pending = pod.clone();
        pending.status.as_mut().unwrap().pod_ip = None;
        assert!(pod_targets(&pending).is_empty(), "no IP, no target");
    }
}
