//! Runs `lameduck-operator` for one test: a process on this machine, watching only the test's
//! namespace, authenticated as a ServiceAccount bound to a Role made from the chart's RBAC
//! rules (`deploy/lameduck/files/rbac/`), so a missing permission fails the test. The one
//! cluster-scoped rule of a cluster-wide install it needs, reading namespaces (their Pod Security
//! level), is bound with a ClusterRole as the chart does.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use k8s_openapi::api::{
    authentication::v1::TokenRequest,
    core::v1::{Namespace, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
};
use kube::{
    Api, ResourceExt,
    api::PostParams,
    config::{AuthInfo, Kubeconfig, NamedAuthInfo, NamedContext},
};
use serde_json::json;
use tokio::process::{Child, Command};

use crate::{TestNamespace, logs_dir};

/// The service account the operator runs as in a test namespace.
pub const ACCOUNT: &str = "lameduck-operator";
/// The ClusterRole that lets it read namespaces, shared by every test.
const NAMESPACES_ROLE: &str = "lameduck-e2e-namespaces";

/// The operator binary: `$LAMEDUCK_OPERATOR_BIN`, else the workspace's release build.
fn binary() -> PathBuf {
    std::env::var_os("LAMEDUCK_OPERATOR_BIN").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/lameduck-operator")
    })
}

/// RBAC rules from one of the chart's files (`deploy/lameduck/files/rbac/<file>`).
pub fn rules_from(file: &str) -> Vec<PolicyRule> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/lameduck/files/rbac").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The chart's RBAC rules for the operator's namespace-scoped work: every method, the Lease and
/// the webhook's Secret (the operator's namespace is the test's).
pub fn rules() -> Vec<PolicyRule> {
    [
        "operator.yaml",
        "exec.yaml",
        "portforward.yaml",
        "ephemeral-containers.yaml",
        "leader-election.yaml",
        "webhook-secret.yaml",
    ]
    .into_iter()
    .flat_map(rules_from)
    .collect()
}

/// A running operator; killed when dropped.
#[derive(Debug)]
pub struct Operator {
    child: Child,
    pub identity: String,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

/// Grants the operator's rules in the namespace (once) and writes a kubeconfig that uses them.
async fn kubeconfig_for(ns: &TestNamespace) -> PathBuf {
    let path = PathBuf::from(logs_dir()).join(format!("{}-operator.kubeconfig", ns.name));
    if path.exists() {
        return path;
    }
    let accounts: Api<ServiceAccount> = ns.api();
    if accounts.get_opt(ACCOUNT).await.expect("read service account").is_none() {
        let roles: Api<ClusterRole> = Api::all(ns.client.clone());
        let role = NAMESPACES_ROLE;
        if roles.get_opt(role).await.expect("read cluster role").is_none() {
            let object = json!({"metadata": {"name": role}, "rules": rules_from("namespaces.yaml")});
            // Another test may create it at the same moment.
            let _ = roles.create(&PostParams::default(), &serde_json::from_value(object).unwrap()).await;
        }
        // Owned by the test's namespace, so it goes with it (cluster-scoped, it would stay).
        let namespace = Api::<Namespace>::all(ns.client.clone()).get(&ns.name).await.expect("read namespace");
        let owner = json!({"apiVersion": "v1", "kind": "Namespace", "name": ns.name, "uid": namespace.uid()});
        let bindings: Api<ClusterRoleBinding> = Api::all(ns.client.clone());
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("{}-{role}", ns.name), "ownerReferences": [owner]},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": ns.name}],
        }))
        .unwrap();
        bindings.create(&PostParams::default(), &binding).await.expect("bind the namespaces rule");
        let _: ServiceAccount = ns.create(json!({"metadata": {"name": ACCOUNT}})).await;
        let _: Role = ns.create(json!({"metadata": {"name": ACCOUNT}, "rules": rules()})).await;
        let _: RoleBinding = ns
            .create(json!({
                "metadata": {"name": ACCOUNT},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ACCOUNT},
                "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": ns.name}],
            }))
            .await;
    }
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}})).unwrap();
    let token = accounts
        .create_token_request(ACCOUNT, &PostParams::default(), &request)
        .await
        .expect("token for the operator's service account")
        .status
        .expect("token request status")
        .token;

    let mut config = Kubeconfig::read().expect("read $KUBECONFIG");
    let context = config.current_context.clone().expect("a current context");
    let cluster = config
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .expect("the current context names a cluster");
    config.auth_infos = vec![NamedAuthInfo {
        name: ACCOUNT.into(),
        auth_info: Some(AuthInfo { token: Some(token.into()), ..AuthInfo::default() }),
        other: Default::default(),
    }];
    config.contexts = vec![NamedContext {
        name: ACCOUNT.into(),
        context: Some(kube::config::Context {
            cluster,
            user: Some(ACCOUNT.into()),
            namespace: Some(ns.name.clone()),
            ..kube::config::Context::default()
        }),
        other: Default::default(),
    }];
    config.current_context = Some(ACCOUNT.into());
    std::fs::create_dir_all(logs_dir()).expect("logs dir");
    std::fs::write(&path, serde_json::to_vec(&config).expect("kubeconfig serializes"))
        .expect("write kubeconfig");
    path
}

impl Operator {
    /// Starts an operator for the test namespace, as its ServiceAccount, with short Lease and
    /// status intervals, and waits until it is ready (caches synced).
    ///
    /// Without a webhook (no `--webhook-addr` in `extra`) no policy can carry the webhook's
    /// review stamp, so these operators trust the test's own policies (`--policy-review off`);
    /// with one, the stamp is required as in the chart (tests/e2e/tests/guards.rs).
    pub async fn start(ns: &TestNamespace, identity: &str, extra: &[&str]) -> Self {
        let kubeconfig = kubeconfig_for(ns).await;
        let mut args = vec!["--lease-duration", "6s", "--status-interval", "1s"];
        if !extra.iter().any(|a| a.starts_with("--policy-review") || a.starts_with("--webhook-addr")) {
            args.extend(["--policy-review", "off"]);
        }
        args.extend_from_slice(extra);
        Self::launch(Some(&kubeconfig), &ns.name, identity, &args).await
    }

    /// Starts an operator watching `namespace` (with `$KUBECONFIG` when `kubeconfig` is `None`)
    /// and waits until it is ready. Also used by the benchmark.
    pub async fn launch(kubeconfig: Option<&Path>, namespace: &str, identity: &str, extra: &[&str]) -> Self {
        let admin = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().unwrap()
        };
        let log = PathBuf::from(logs_dir()).join(format!("{namespace}-{identity}.log"));
        std::fs::create_dir_all(logs_dir()).expect("logs dir");
        let file = std::fs::File::create(&log).expect("operator log file");
        let mut command = Command::new(binary());
        if let Some(kubeconfig) = kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        let child = command
            .env("LAMEDUCK_OPERATOR_LOG_LEVEL", "info,lameduck_operator=debug")
            .args(["--namespace", namespace, "--lease-namespace", namespace, "--identity", identity])
            .args(["--admin-addr", &admin.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {}: {e} (build it with cargo build --release)", binary().display())
            });
        let mut operator = Self { child, identity: identity.to_owned(), admin, log };
        // Generous: with ten thousand pods the first list takes a while.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = operator.child.try_wait() {
                panic!("operator {identity} exited with {status}; log: {}", operator.log_text());
            }
            if operator.get("/ready").await.is_some_and(|(code, _)| code == 200) {
                return operator;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("operator {identity} not ready within 2 minutes; log: {}", operator.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// (current RSS, peak RSS) in MiB, from `/proc/<pid>/status`.
    pub fn rss_mib(&self) -> (f64, f64) {
        let status =
            self.child.id().and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok());
        let field = |name: &str| {
            status
                .as_deref()
                .and_then(|s| s.lines().find(|l| l.starts_with(name)))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(f64::NAN, |kb| kb / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// The operator's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        crate::http_get(self.admin, path).await
    }

    /// The operator's `/metrics`.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.map(|(_, body)| body).unwrap_or_default()
    }

    /// The value of one sample in `/metrics`, e.g. `lameduck_leader`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        sample_value(&self.metrics().await, sample)
    }

    /// SIGKILL, as a crash or an OOM kill would: no clean-up, no Lease release.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, as the kubelet sends, and waits for the exit.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("operator exits within 30s of SIGTERM")
            .expect("operator exit status")
    }
}

/// Reads one sample (name with labels, exactly as exported) from Prometheus text.
pub fn sample_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
}
