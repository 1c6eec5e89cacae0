//! Harness for lameduck's end-to-end tests on the local cluster (`tests/cluster/`).
//!
//! Each test gets its own namespace. Waits watch the object with a deadline (never a bare sleep),
//! and a wait that fails prints the namespace's pods and events and where the component logs are.
#![forbid(unsafe_code)]

use std::{fmt::Debug, time::Duration};

use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{ContainerStatus, Event, Namespace, Pod, ServiceAccount},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::wait::{Condition, await_condition},
};
use serde_json::json;

pub mod operator;
pub mod prometheus;
pub mod prometheus_operator;
pub mod webhook;
pub mod workloads;

/// The label every test namespace carries, so leftovers are easy to find and delete.
pub const TEST_LABEL: &str = "lameduck.io/e2e";

/// Where `tests/cluster/up.sh` keeps the component logs, for failure messages.
pub fn logs_dir() -> String {
    let state = std::env::var("LAMEDUCK_CLUSTER_DIR").unwrap_or_else(|_| "/var/tmp/lameduck-cluster".into());
    format!("{state}/logs")
}

/// A client for the cluster named by `KUBECONFIG`, or a clear failure saying how to get one.
pub async fn client() -> Client {
    if std::env::var_os("KUBECONFIG").is_none() {
        panic!(
            "KUBECONFIG is not set: the end-to-end tests need the local cluster. Run `bash tests/run`, or \
             `tests/cluster/up.sh` and export the KUBECONFIG it prints"
        );
    }
    Client::try_default().await.expect("a client for $KUBECONFIG")
}

/// Runs `helm ARGS` (from `source tests/cluster/env.sh`), with `CHART` standing for this
/// checkout's chart, and fails the test with helm's output unless it succeeds; returns that output.
pub fn helm(args: &[&str]) -> String {
    let chart = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/lameduck");
    let args: Vec<String> = args
        .iter()
        .map(|a| if *a == "CHART" { chart.display().to_string() } else { (*a).to_owned() })
        .collect();
    let out = std::process::Command::new("helm")
        .args(&args)
        .output()
        .expect("helm on PATH (source tests/cluster/env.sh)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "helm {args:?} failed:
{text}"
    );
    text
}

/// The `helm install` or `upgrade` flags every chart test starts from: the release in `system`,
/// acting only in `work` (namespaced RBAC), plain logs, each of `sets` as a `--set`, and waiting
/// up to 3 minutes for it to be ready.
pub fn chart_flags(system: &str, work: &str, sets: &[&str]) -> Vec<String> {
    let scope = ["rbac.scope=namespaces", &format!("watchNamespaces={{{work}}}"), "operator.logFormat=plain"]
        .map(String::from);
    let mut flags = vec!["--namespace".to_owned(), system.to_owned()];
    for set in scope.iter().map(String::as_str).chain(sets.iter().copied()) {
        flags.extend(["--set".to_owned(), set.to_owned()]);
    }
    flags.extend(["--wait", "--timeout", "3m"].map(String::from));
    flags
}

/// `helm install RELEASE CHART` with [`chart_flags`]; returns helm's output. Then waits until
/// the API server trusts the webhook for policies in `work`: its policy webhooks fail closed, and
/// `--wait` sees the operator ready a moment before the API server has its CA, as a user who
/// applies a policy at once might.
pub fn install_chart(release: &str, system: &str, work: &str, sets: &[&str]) -> String {
    let flags = chart_flags(system, work, sets);
    let args: Vec<&str> =
        ["install", release, "CHART"].into_iter().chain(flags.iter().map(String::as_str)).collect();
    let out = helm(&args);
    if !sets.contains(&"webhook.enabled=false") {
        wait_for_policy_admission(work);
    }
    out
}

/// Waits (a minute at most) until a ShutdownPolicy can be created in `namespace`: a server-side
/// dry run, which goes through every admission webhook and stores nothing.
pub fn wait_for_policy_admission(namespace: &str) {
    let policy = r#"{"apiVersion": "lameduck.io/v1alpha1", "kind": "ShutdownPolicy",
                     "metadata": {"name": "admission-probe"}, "spec": {}}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut child = std::process::Command::new("kubectl")
            .args(["create", "--dry-run=server", "-n", namespace, "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl on PATH (source tests/cluster/env.sh)");
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            let _ = stdin.write_all(policy.as_bytes());
        }
        let out = child.wait_with_output().expect("kubectl ran");
        if out.status.success() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the webhook still refuses policies in {namespace} a minute after install: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Installs (or updates) this checkout's CRD as `lameduck crds | kubectl apply --server-side`
/// would, and waits until the API server serves it.
pub async fn install_crd(client: Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::{
        api::{Patch, PatchParams},
        runtime::conditions,
    };
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let crd = lameduck_api::policy::shutdown_policy_crd();
    let name = crd.name_any();
    crds.patch(&name, &PatchParams::apply("lameduck-e2e").force(), &Patch::Apply(&crd))
        .await
        .expect("the API server accepts the generated CRD");
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(crds, &name, conditions::is_crd_established()),
    )
    .await
    .expect("CRD established within a minute")
    .expect("CRD watch");
}

/// A namespace of its own for one test; deleted by [`TestNamespace::finish`].
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
}

impl Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace").field("name", &self.name).finish_non_exhaustive()
    }
}

impl TestNamespace {
    /// Creates `e2e-<prefix>-<suffix>` and waits until its default ServiceAccount exists.
    pub async fn new(prefix: &str) -> Self {
        let client = client().await;
        let suffix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            % 1_000_000_000;
        let name = format!("e2e-{prefix}-{suffix}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {TEST_LABEL: "true"}}
        }))
        .unwrap();
        namespaces.create(&PostParams::default(), &ns).await.expect("namespace created");
        let this = Self { client, name };
        let accounts: Api<ServiceAccount> = this.api();
        this.wait_for(
            &accounts,
            "default",
            "the default ServiceAccount",
            Duration::from_secs(60),
            |sa: Option<&ServiceAccount>| sa.is_some(),
        )
        .await;
        this
    }

    /// A namespaced API in this test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates an object from JSON in this namespace.
    pub async fn create<K>(&self, object: serde_json::Value) -> K
    where
        K: Resource<Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + serde::de::DeserializeOwned
            + serde::Serialize,
        <K as Resource>::DynamicType: Default,
    {
        let object: K = serde_json::from_value(object).expect("the test's object is valid");
        self.api::<K>().create(&PostParams::default(), &object).await.expect("object created")
    }

    /// Waits until `condition` holds for the named object, or fails the test after `timeout`
    /// with the namespace's pods and events.
    pub async fn wait_for<K>(
        &self,
        api: &Api<K>,
        name: &str,
        what: &str,
        timeout: Duration,
        condition: impl Condition<K>,
    ) -> K
    where
        K: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + 'static,
    {
        match tokio::time::timeout(timeout, await_condition(api.clone(), name, condition)).await {
            Ok(Ok(Some(object))) => object,
            Ok(Ok(None)) => self.fail(&format!("{name} was deleted while waiting for {what}")).await,
            Ok(Err(err)) => self.fail(&format!("watching {name} for {what} failed: {err}")).await,
            Err(_) => self.fail(&format!("timed out after {timeout:?} waiting for {what} ({name})")).await,
        }
    }

    /// Holds for `duration` and fails if `condition` stops holding meanwhile: for "stays so" checks.
    pub async fn holds_for<K>(
        &self,
        api: &Api<K>,
        name: &str,
        what: &str,
        duration: Duration,
        condition: impl Fn(&K) -> bool,
    ) where
        K: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + 'static,
    {
        let broken =
            await_condition(api.clone(), name, move |obj: Option<&K>| obj.is_none_or(|o| !condition(o)));
        if let Ok(result) = tokio::time::timeout(duration, broken).await {
            self.fail(&format!("{what} stopped holding for {name}: {result:?}")).await;
        }
    }

    /// Everything worth seeing when a test fails: pods with container states, and events.
    pub async fn dump(&self) -> String {
        let mut out = format!("namespace {}:\n", self.name);
        if let Ok(pods) = self.api::<Pod>().list(&ListParams::default()).await {
            for pod in pods {
                let status = pod.status.clone().unwrap_or_default();
                out.push_str(&format!("  pod {} phase {:?}\n", pod.name_any(), status.phase));
                let statuses = [
                    status.init_container_statuses.unwrap_or_default(),
                    status.container_statuses.unwrap_or_default(),
                    status.ephemeral_container_statuses.unwrap_or_default(),
                ];
                for cs in statuses.iter().flatten() {
                    out.push_str(&format!(
                        "    container {} ready={} state={:?}\n",
                        cs.name, cs.ready, cs.state
                    ));
                }
            }
        }
        if let Ok(events) = self.api::<Event>().list(&ListParams::default()).await {
            for e in events {
                out.push_str(&format!(
                    "  event {} {}/{}: {} {}\n",
                    e.type_.unwrap_or_default(),
                    e.involved_object.kind.unwrap_or_default(),
                    e.involved_object.name.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default()
                ));
            }
        }
        out.push_str(&format!("component logs: {}\n", logs_dir()));
        out
    }

    /// Fails the test with `why` and the namespace's state. The namespace is kept for inspection.
    pub async fn fail(&self, why: &str) -> ! {
        panic!("{why}\n{}", self.dump().await)
    }

    /// Deletes the namespace; call at the end of a test that passed.
    pub async fn finish(self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces.delete(&self.name, &DeleteParams::background()).await;
    }
}

/// The status of the named container (regular, init or ephemeral) of a pod.
pub fn container_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    [&status.container_statuses, &status.init_container_statuses, &status.ephemeral_container_statuses]
        .into_iter()
        .flatten()
        .flatten()
        .find(|cs| cs.name == name)
}

/// The exit code of a container that has terminated, if it has.
pub fn exit_code(pod: &Pod, container: &str) -> Option<i32> {
    container_status(pod, container)?.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code)
}

/// When a terminated container finished; fails the test when it has not.
pub fn finished_at(pod: &Pod, container: &str) -> k8s_openapi::jiff::Timestamp {
    container_status(pod, container)
        .and_then(|cs| cs.state.as_ref()?.terminated.as_ref()?.finished_at.clone())
        .unwrap_or_else(|| panic!("container {container} has not finished: {:?}", pod.status))
        .0
}

/// Whether a container is running now.
pub fn is_running(pod: &Pod, container: &str) -> bool {
    container_status(pod, container).and_then(|cs| cs.state.as_ref()).is_some_and(|s| s.running.is_some())
}

/// The pod's phase (`Pending`, `Running`, `Succeeded`, `Failed`).
pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// One of the operator's events on a pod, as `kubectl events` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorEvent {
    pub reason: String,
    pub note: String,
    /// The reporting instance: the operator's identity.
    pub instance: String,
}

/// The operator's events on the named pod, oldest first.
pub async fn operator_events(ns: &TestNamespace, pod: &str) -> Vec<OperatorEvent> {
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let mut events: Vec<_> = events
        .list(&ListParams::default())
        .await
        .expect("events listed")
        .items
        .into_iter()
        .filter(|e| {
            e.reporting_controller.as_deref() == Some(lameduck_api::names::events::REPORTER)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
        })
        .collect();
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    events
        .into_iter()
        .map(|e| OperatorEvent {
            reason: e.reason.unwrap_or_default(),
            note: e.note.unwrap_or_default(),
            instance: e.reporting_instance.unwrap_or_default(),
        })
        .collect()
}

/// GET `path` from a plain-HTTP server on this machine: the status and the body, or `None` when
/// it cannot be reached.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The `/metrics` of the chart's operator pods in `system`, each scraped directly at its pod IP.
pub async fn operator_metrics(system: &TestNamespace) -> Vec<String> {
    let pods: Api<Pod> = system.api();
    let selector = ListParams::default().labels("app.kubernetes.io/name=lameduck");
    let mut out = Vec::new();
    for pod in pods.list(&selector).await.expect("operator pods listed") {
        let Some(ip) = pod.status.and_then(|s| s.pod_ip) else { continue };
        let Ok(addr) = format!("{ip}:9090").parse() else { continue };
        if let Some((200, body)) = http_get(addr, "/metrics").await {
            out.push(body);
        }
    }
    out
}
