//! What the monitoring tests share: [`PrometheusApi`], a client of Prometheus' HTTP API (used with
//! the upstream Prometheus that `crate::prometheus_operator` runs), the chart's alert rules file,
//! the annotation-based pod scrape relabelling, and `promtool check metrics` on live scrapes.

use std::{
    collections::BTreeMap, fmt::Write as _, net::SocketAddr, path::PathBuf, process::Stdio, time::Duration,
};

use serde_json::{Value, json};
use tokio::time::Instant;

/// One sample of an instant query: the series' labels and its value.
pub type Sample = (BTreeMap<String, String>, f64);

/// The alert rules the chart ships, which this Prometheus evaluates.
pub fn alert_rules_file() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/lameduck/files/alert-rules.yaml");
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// The relabelling of the usual annotation-based pod scrape job (upstream's example
/// `kubernetes-pods`): pods annotated `prometheus.io/scrape: "true"`, at `prometheus.io/port` and
/// `prometheus.io/path` (and `prometheus.io/scheme`), labelled with namespace, pod and container.
/// The Prometheus Operator test's `kubernetes_sd_configs` job uses it.
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
}
