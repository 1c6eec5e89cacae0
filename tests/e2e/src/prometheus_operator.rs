//! Prometheus as users run it: upstream Prometheus, with Kubernetes service discovery, in a pod
//! that the Prometheus Operator manages from a `Prometheus` custom resource, configured by
//! ServiceMonitor and PrometheusRule objects.
//!
//! `tests/cluster/build.sh` builds both from the Go modules pinned in
//! `tests/cluster/prometheus/go.mod`; `tests/cluster/monitoring.sh` imports the images of
//! Prometheus and the operator's config reloader and installs the operator's CRDs. The operator
//! runs as a process on this machine with the admin kubeconfig, as `crate::operator` runs
//! lameduck's: no image, Deployment or cluster-wide RBAC of its own to create and remove, its log
//! in a file, and it dies with the test. `--namespaces` keeps it to the test's
//! namespaces, so it never touches what other tests on the cluster create.
//!
//! The Prometheus pod's API is queried from this machine at the pod's IP (the host routes to
//! pods), through [`PrometheusApi`].

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use k8s_openapi::{
    api::{
        core::v1::{Pod, Secret, ServiceAccount},
        rbac::v1::{Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, LogParams, PostParams},
};
use serde_json::{Value, json};
use tokio::{
    process::{Child, Command},
    time::Instant,
};

use crate::{
    TestNamespace, logs_dir,
    prometheus::{PrometheusApi, pod_annotation_relabelling},
};

const MINUTE: Duration = Duration::from_secs(60);

/// The ServiceAccount the Prometheus pods run as, in the Prometheus' namespace.
pub const ACCOUNT: &str = "prometheus";

/// The CRDs the tests need served (the operator's other CRDs are installed beside them).
const CRDS: [&str; 3] = [
    "prometheuses.monitoring.coreos.com",
    "servicemonitors.monitoring.coreos.com",
    "prometheusrules.monitoring.coreos.com",
];

fn cluster_src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../cluster")
}

/// The version `dir/go.mod` requires of `module`, read as `tests/cluster/lib.sh` reads it, so
/// that the pins in the go.mod files stay the one place to change a version.
fn module_version(dir: &str, module: &str) -> String {
    let path = cluster_src().join(dir).join("go.mod");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .find_map(|line| match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["require", m, v, ..] | [m, v, ..] if m == module && v.starts_with('v') => Some(v.to_owned()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{} requires no {module}", path.display()))
}

/// Prometheus' release (`v3.13.5`): its Go module is published as `v0.3MM.P` for `v3.MM.P`.
pub fn prometheus_version() -> String {
    let module = module_version("prometheus", "github.com/prometheus/prometheus");
    let parts: Vec<u32> = module
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse().unwrap_or_else(|_| panic!("Prometheus module version {module}")))
        .collect();
    let [0, minor, patch] = parts[..] else { panic!("Prometheus module version {module} is not v0.MNN.P") };
    format!("v{}.{}.{patch}", minor / 100, minor % 100)
}

/// The Prometheus Operator's release (`v0.93.1`), also its config reloader's.
pub fn operator_version() -> String {
    module_version("prometheus", "github.com/prometheus-operator/prometheus-operator")
}

/// The image `tests/cluster/monitoring.sh` makes of the Prometheus binary.
pub fn prometheus_image() -> String {
    format!("localhost/lameduck/prometheus:{}", prometheus_version())
}

/// The image `tests/cluster/monitoring.sh` makes of the operator's config reloader.
pub fn config_reloader_image() -> String {
    format!("localhost/lameduck/prometheus-config-reloader:{}", operator_version())
}

/// The operator binary: `$LAMEDUCK_PROMETHEUS_OPERATOR_BIN`, else where `tests/cluster/build.sh`
/// puts it.
fn operator_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("LAMEDUCK_PROMETHEUS_OPERATOR_BIN") {
        return bin.into();
    }
    let cache = std::env::var_os("LAMEDUCK_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME or LAMEDUCK_CACHE")).join(".cache/lameduck")
    });
    cache.join(format!("prometheus-operator-{}/bin/prometheus-operator", operator_version()))
}

/// Fails the test, saying how to fix it, unless the operator's CRDs are served.
pub async fn require_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in CRDS {
        let crd = crds.get_opt(name).await.expect("read CRDs");
        let established = crd
            .and_then(|c| c.status)
            .and_then(|s| s.conditions)
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
        assert!(
            established,
            "CRD {name} is not served: run `bash tests/cluster/monitoring.sh` (tests/run does)"
        );
    }
}

/// The Prometheus Operator, a process on this machine; killed when dropped.
#[derive(Debug)]
pub struct PrometheusOperator {
    child: Child,
    /// Its metrics and health endpoints.
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl PrometheusOperator {
    /// Starts the operator with `$KUBECONFIG`'s (admin) credentials, acting only in `namespaces`:
    /// its Prometheus objects, ServiceMonitors and PrometheusRules must all be in them.
    pub async fn start(namespaces: &[&str]) -> Self {
        let bin = operator_binary();
        assert!(bin.exists(), "{} is missing: run `bash tests/cluster/build.sh`", bin.display());
        // A free loopback port: its default, :8080 on every address, may be taken on this machine,
        // and two tests may run at once.
        let addr = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
        std::fs::create_dir_all(logs_dir()).expect("logs dir");
        let log = PathBuf::from(logs_dir()).join(format!("{}-prometheus-operator.log", namespaces[0]));
        let file = std::fs::File::create(&log).expect("operator log file");
        let child = Command::new(&bin)
            .arg(format!("--namespaces={}", namespaces.join(",")))
            .arg(format!("--prometheus-config-reloader={}", config_reloader_image()))
            // The reloader's default CPU limit is 10m. On this 2-core machine, with the suite's
            // other pods still stopping, its init container twice stayed silent for the test's
            // whole 3 minutes before printing its first line. The test is about scraping and
            // alerts, not about the reloader's limit.
            .arg("--config-reloader-cpu-limit=0")
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log-level=info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let mut this = Self { child, addr, log };
        this.wait_serving().await;
        this
    }

    /// Waits until its web server answers, so that a failure to start shows here with its log.
    async fn wait_serving(&mut self) {
        let deadline = Instant::now() + MINUTE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus-operator exited with {status}:\n{}", self.log_tail(40));
            }
            if crate::http_get(self.addr, "/metrics").await.is_some_and(|(code, _)| code == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus-operator not serving within a minute:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        let mut out = format!("prometheus-operator log {} (last lines):\n", self.log.display());
        for line in tail.into_iter().rev() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Stops it and waits until it has exited.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The `Prometheus` custom resource's API.
fn prometheuses(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "Prometheus");
    Api::namespaced_with(client.clone(), namespace, &ApiResource::from_gvk_with_plural(&gvk, "prometheuses"))
}

/// What one Prometheus, managed by the operator, scrapes and evaluates.
#[derive(Clone, Debug)]
pub struct Selection<'a> {
    /// Labels the ServiceMonitors and PrometheusRules must carry.
    pub labels: BTreeMap<&'a str, &'a str>,
    /// The namespaces they may be in; Prometheus may discover Services, Endpoints(Slices) and
    /// Pods there (a Role in each).
    pub namespaces: Vec<&'a str>,
    /// Scrape jobs of its own beside the operator's (the `additionalScrapeConfigs` Secret), as
    /// users keep annotation-based jobs next to ServiceMonitors.
    pub additional_scrape_configs: Vec<Value>,
}

/// The usual annotation-based pod job (`prometheus.io/*`, the annotations the chart's pods
/// carry) with Kubernetes discovery, limited to `namespaces`.
pub fn pod_annotations_job(namespaces: &[&str]) -> Value {
    json!({
        "job_name": "kubernetes-pods",
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": namespaces}}],
        "relabel_configs": pod_annotation_relabelling(),
    })
}

/// A Prometheus that the operator runs from a `Prometheus` object in a test namespace.
pub struct OperatedPrometheus {
    client: Client,
    pub namespace: String,
    pub name: String,
    /// Its HTTP API, at its pod's IP.
    pub api: PrometheusApi,
}

impl std::fmt::Debug for OperatedPrometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatedPrometheus")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl OperatedPrometheus {
    /// Creates, in `ns`, the ServiceAccount, the discovery Roles and the `Prometheus` object named
    /// `name` (local images, 2s scrape and evaluation intervals), and waits until its pod is
    /// Ready and its API answers.
    pub async fn create(ns: &TestNamespace, name: &str, selection: &Selection<'_>) -> Self {
        let _: ServiceAccount = ns.create(json!({"metadata": {"name": ACCOUNT}})).await;
        // Kubernetes discovery of ServiceMonitors' targets (the endpoints or endpointslice role,
        // which also reads the Services and Pods behind them), only where they may be.
        let read = ["get", "list", "watch"];
        let rules = json!([
            {"apiGroups": [""], "resources": ["services", "endpoints", "pods"], "verbs": read},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
        ]);
        let role_name = format!("{}-{name}-discovery", ns.name);
        for namespace in &selection.namespaces {
            let roles: Api<Role> = Api::namespaced(ns.client.clone(), namespace);
            let role = json!({"metadata": {"name": role_name}, "rules": rules});
            roles.create(&PostParams::default(), &serde_json::from_value(role).unwrap()).await.expect("Role");
            let bindings: Api<RoleBinding> = Api::namespaced(ns.client.clone(), namespace);
            let binding = json!({
                "metadata": {"name": role_name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
                "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": ns.name}],
            });
            bindings
                .create(&PostParams::default(), &serde_json::from_value(binding).unwrap())
                .await
                .expect("RoleBinding");
        }

        let namespaces = json!({"matchExpressions": [{
            "key": "kubernetes.io/metadata.name", "operator": "In", "values": selection.namespaces,
        }]});

        let mut object = json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "Prometheus",
            "metadata": {"name": name},
            "spec": {
                "image": prometheus_image(),
                "version": prometheus_version(),
                "imagePullPolicy": "IfNotPresent",
                "replicas": 1,
                "serviceAccountName": ACCOUNT,
                "scrapeInterval": "2s",
                "scrapeTimeout": "2s",
                "evaluationInterval": "2s",
                "retention": "1h",
                "serviceMonitorSelector": {"matchLabels": selection.labels},
                "serviceMonitorNamespaceSelector": namespaces,
                "ruleSelector": {"matchLabels": selection.labels},
                "ruleNamespaceSelector": namespaces,
                "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
            },
        });
        if !selection.additional_scrape_configs.is_empty() {
            let (secret, key) = (format!("{name}-additional"), "scrape-configs.yaml");
            let yaml =
                serde_yaml_ng::to_string(&selection.additional_scrape_configs).expect("scrape configs");
            let _: Secret = ns.create(json!({"metadata": {"name": secret}, "stringData": {key: yaml}})).await;
            object["spec"]["additionalScrapeConfigs"] = json!({"name": secret, "key": key});
        }
        let object: DynamicObject = serde_json::from_value(object).unwrap();
        prometheuses(&ns.client, &ns.name)
            .create(&PostParams::default(), &object)
            .await
            .expect("Prometheus object created");

        // The operator names the StatefulSet prometheus-<name>.
        let pods: Api<Pod> = ns.api();
        let pod = ns
            .wait_for(
                &pods,
                &format!("prometheus-{name}-0"),
                "the Prometheus pod to be Ready",
                3 * MINUTE,
                |p: Option<&Pod>| {
                    p.and_then(|p| p.status.as_ref()?.conditions.as_ref())
                        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                },
            )
            .await;
        let ip = pod.status.and_then(|s| s.pod_ip).expect("a Ready pod has an IP");
        let api = PrometheusApi { addr: format!("{ip}:9090").parse().expect("pod IP") };
        let this = Self { client: ns.client.clone(), namespace: ns.name.clone(), name: name.to_owned(), api };
        assert!(
            this.api.is_ready().await,
            "Prometheus' pod is Ready but /-/ready is not:\n{}",
            this.describe().await
        );
        this
    }

    /// For failure messages: the object's status conditions, the targets, and the end of the
    /// logs of Prometheus and its config reloader.
    pub async fn describe(&self) -> String {
        let mut out = String::new();
        if let Ok(object) = prometheuses(&self.client, &self.namespace).get(&self.name).await {
            out.push_str(&format!(
                "Prometheus {}/{} status: {}\n",
                self.namespace, self.name, object.data["status"]
            ));
        }
        out.push_str(&self.api.describe().await);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        for container in ["prometheus", "config-reloader"] {
            let params =
                LogParams { container: Some(container.into()), tail_lines: Some(20), ..LogParams::default() };
            let log = pods
                .logs(&format!("prometheus-{}-0", self.name), &params)
                .await
                .unwrap_or_else(|e| e.to_string());
            out.push_str(&format!("{container} log (last lines):\n{log}\n"));
        }
        out
    }

    /// Deletes the `Prometheus` object and waits until it is gone (while the operator still runs,
    /// in case it holds a finalizer on it); its StatefulSet follows by garbage collection.
    pub async fn delete(self) {
        let api = prometheuses(&self.client, &self.namespace);
        let _ = api.delete(&self.name, &DeleteParams::background()).await;
        let deadline = Instant::now() + MINUTE;
        while api.get_opt(&self.name).await.expect("read Prometheus").is_some() {
            assert!(Instant::now() < deadline, "Prometheus {} not deleted within a minute", self.name);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_go_mod_pins() {
        let prometheus = prometheus_version();
        assert!(prometheus.starts_with("v3."), "{prometheus}");
        let module = module_version("prometheus", "github.com/prometheus/prometheus");
        let minor = prometheus.split('.').nth(1).unwrap();
        assert!(module.starts_with(&format!("v0.3{minor:0>2}.")), "{module} -> {prometheus}");
        assert!(operator_version().starts_with("v0."), "{}", operator_version());
        assert!(config_reloader_image().ends_with(&operator_version()));
    }
}
