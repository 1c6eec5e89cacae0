//! The admission webhook on the local cluster: `kubectl apply` of pods that break the timing
//! rules is warned, fixed or refused per `enforce`; pods admitted while the webhook was down are
//! reported; and the seed's "slow updating clients" rollout loses no request with a policy and
//! does lose requests without one. A policy's author cannot borrow the operator's powers: the
//! webhook refuses the fields that ask for what they lack, and with the webhook removed the
//! operator honours no unreviewed policy's power-bearing field.

use std::{
    collections::HashMap,
    io::Write,
    net::{IpAddr, SocketAddr},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    batch::v1::Job,
    core::v1::{Pod, Service},
    discovery::v1::EndpointSlice,
    events::v1::Event,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use lameduck_api::{
    ShutdownPolicy,
    names::{annotations, containers, events, images, labels, ports},
};
use lameduck_e2e::{
    TestNamespace, exit_code, is_running,
    operator::Operator,
    webhook::Webhook,
    workloads::{job, job_complete, job_pod},
};
use lameduck_operator::review;
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

/// `kubectl apply -f -` of `object` in the namespace: (success, stdout + stderr).
fn kubectl_apply(ns: &TestNamespace, object: &serde_json::Value) -> (bool, String) {
    kubectl_apply_as(ns, object, None)
}

/// The same, as `user` (kubectl's `--as`) when given.
fn kubectl_apply_as(ns: &TestNamespace, object: &serde_json::Value, user: Option<&str>) -> (bool, String) {
    let mut args =
        vec!["apply".to_owned(), "-n".to_owned(), ns.name.clone(), "-f".to_owned(), "-".to_owned()];
    if let Some(user) = user {
        args.push(format!("--as={user}"));
    }
    let mut child = Command::new("kubectl")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl on PATH (source tests/cluster/env.sh)");
    child.stdin.take().unwrap().write_all(object.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn policy(name: &str, selector: serde_json::Value, drain: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "lameduck.io/v1alpha1",
        "kind": "ShutdownPolicy",
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": selector}, "proxy": {"profile": "Lameduck"}, "drain": drain},
    })
}

/// A meshed pod: the test app with a 2s preStop, lameduck's proxy, and a 10s grace period.
fn meshed_pod(name: &str, tier: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"tier": tier}},
        "spec": {
            "terminationGracePeriodSeconds": 10,
            "containers": [
                {"name": "app", "image": images::TESTAPP, "imagePullPolicy": "IfNotPresent",
                 "lifecycle": {"preStop": {"sleep": {"seconds": 2}}}},
                {"name": containers::LAMEDUCK_PROXY, "image": images::PROXY, "imagePullPolicy": "IfNotPresent",
                 "args": ["--inbound-target", "127.0.0.1:8080"]},
            ],
        },
    })
}

/// Starts the operator with its webhook and waits until the API server trusts it.
async fn operator_with_webhook(ns: &TestNamespace, hook: &Webhook, identity: &str) -> Operator {
    let args = hook.operator_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let operator = Operator::start(ns, identity, &args).await;
    hook.wait_for_ca_bundles().await;
    operator
}

#[tokio::test]
async fn kubectl_apply_is_warned_fixed_or_refused_per_enforce() {
    let ns = TestNamespace::new("admit").await;
    let hook = Webhook::install(&ns).await;
    // A 20s proxy wait does not fit the pods' 10s grace period.
    let drain =
        |enforce: &str| json!({"waitBeforeExit": "20s", "shutdownGracePeriod": "25s", "enforce": enforce});
    for (name, tier) in [("warn", "a"), ("fix", "b"), ("reject", "c")] {
        let enforce = format!("{}{}", name[..1].to_uppercase(), &name[1..]);
        let _: ShutdownPolicy = ns.create(policy(name, json!({"tier": tier}), drain(&enforce))).await;
    }
    let operator = operator_with_webhook(&ns, &hook, "op-admit").await;

    let (ok, out) = kubectl_apply(&ns, &meshed_pod("warned", "a"));
    assert!(ok, "{out}");
    assert!(out.contains("Warning: ShutdownPolicy warn: proxy-wait-not-below-termination-grace"), "{out}");
    let pods: Api<Pod> = ns.api();
    let warned = pods.get("warned").await.unwrap();
    assert_eq!(
        warned.spec.as_ref().unwrap().termination_grace_period_seconds,
        Some(10),
        "Warn changes no timing"
    );
    let proxy = warned
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .find(|c| c.name == containers::LAMEDUCK_PROXY)
        .unwrap();
    let command = proxy
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.exec.as_ref())
        .and_then(|e| e.command.clone());
    assert_eq!(command.unwrap(), ["lameduck-proxy", "wait", "--seconds", "20"]);
    assert_eq!(warned.annotations().get(annotations::POLICY).map(String::as_str), Some("warn"));

    let (ok, out) = kubectl_apply(&ns, &meshed_pod("fixed", "b"));
    assert!(ok, "{out}");
    let fixed = pods.get("fixed").await.unwrap();
    // 20s wait + 25s drain + 1s.
    assert_eq!(fixed.spec.as_ref().unwrap().termination_grace_period_seconds, Some(46));

    let (ok, out) = kubectl_apply(&ns, &meshed_pod("refused", "c"));
    assert!(!ok, "a pod breaking the rules under enforce: Reject was created: {out}");
    assert!(
        out.contains("denied the request") && out.contains("ShutdownPolicy reject (enforce: Reject)"),
        "{out}"
    );
    assert!(out.contains("20s") && out.contains("10s"), "the numbers are named: {out}");
    assert!(pods.get_opt("refused").await.unwrap().is_none());

    // Pods no policy selects are left exactly as written.
    let (ok, out) = kubectl_apply(&ns, &meshed_pod("alone", "z"));
    assert!(ok, "{out}");
    let alone = pods.get("alone").await.unwrap();
    assert!(!alone.annotations().contains_key(annotations::POLICY));

    // The validating side: a selector the API server's schema accepts but that means nothing.
    let bad = json!({
        "apiVersion": "lameduck.io/v1alpha1", "kind": "ShutdownPolicy", "metadata": {"name": "bad"},
        "spec": {"selector": {"matchExpressions": [{"key": "tier", "operator": "Near", "values": ["a"]}]}},
    });
    let (ok, out) = kubectl_apply(&ns, &bad);
    assert!(!ok && out.contains("spec.selector"), "{out}");
    let overlapping = policy("overlap", json!({"tier": "a"}), json!({}));
    let (ok, out) = kubectl_apply(&ns, &overlapping);
    assert!(ok, "{out}");
    assert!(
        out.contains("Warning: ShutdownPolicy warn also selects 1 of this namespace's pods (such as warned)"),
        "{out}"
    );

    let metrics = operator.metrics().await;
    for sample in [
        "lameduck_webhook_admissions_total{resource=\"pods\",result=\"mutated\"} 2",
        "lameduck_webhook_admissions_total{resource=\"pods\",result=\"rejected\"} 1",
        "lameduck_webhook_admissions_total{resource=\"pods\",result=\"not_selected\"} 1",
        "lameduck_webhook_admissions_total{resource=\"shutdownpolicies\",result=\"rejected\"} 1",
        "lameduck_webhook_admissions_total{resource=\"shutdownpolicies\",result=\"warned\"} 1",
    ] {
        assert!(metrics.contains(sample), "{sample} missing from\n{metrics}");
    }
    assert!(
        lameduck_e2e::operator::sample_value(
            &metrics,
            "lameduck_webhook_certificate_expiry_timestamp_seconds"
        )
        .unwrap()
            > 0.0
    );
    hook.remove().await;
    ns.finish().await;
}

/// A Role named `name` with `rules`.
fn role(name: &str, rules: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name}, "rules": rules})
}

/// Binds the Role `name` to the ServiceAccount `author` of the namespace.
fn bind(ns: &TestNamespace, name: &str) -> serde_json::Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
           "subjects": [{"kind": "ServiceAccount", "name": "author", "namespace": ns.name}]})
}

/// A policy author who may write ShutdownPolicies in the namespace, and nothing else; their
/// user name, for kubectl's `--as`.
fn policy_author(ns: &TestNamespace) -> String {
    for object in [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "author"}}),
        role(
            "policies",
            json!([{"apiGroups": ["lameduck.io"], "resources": ["shutdownpolicies"],
                                 "verbs": ["get", "list", "create", "patch", "update"]}]),
        ),
        bind(ns, "policies"),
    ] {
        let (ok, out) = kubectl_apply(ns, &object);
        assert!(ok, "{out}");
    }
    format!("system:serviceaccount:{}:author", ns.name)
}

#[tokio::test]
async fn a_policy_author_cannot_borrow_the_operators_powers() {
    let ns = TestNamespace::new("powers").await;
    let hook = Webhook::install(&ns).await;
    let author = policy_author(&ns);
    let _operator = operator_with_webhook(&ns, &hook, "op-powers").await;
    let spec = |name: &str, spec: serde_json::Value| json!({"apiVersion": "lameduck.io/v1alpha1", "kind": "ShutdownPolicy", "metadata": {"name": name}, "spec": spec});

    // A policy that keeps to its profile needs nothing more.
    let (ok, out) =
        kubectl_apply_as(&ns, &spec("plain", json!({"proxy": {"profile": "Linkerd"}})), Some(&author));
    assert!(ok, "{out}");
    // A command of the author's choice, run by the operator's exec rights: refused, named.
    let exec = spec(
        "exec",
        json!({"proxy": {"profile": "Lameduck", "execCommand": ["sh", "-c", "env"]},
                                   "completion": {"methods": ["Exec"]}}),
    );
    let (ok, out) = kubectl_apply_as(&ns, &exec, Some(&author));
    assert!(!ok, "{out}");
    assert!(out.contains("spec.proxy.execCommand") && out.contains("create pods/exec"), "{out}");
    // An image of the author's choice in other pods: refused, named.
    let image = spec(
        "image",
        json!({"proxy": {"profile": "Lameduck"},
                                     "completion": {"methods": ["Signal"], "ephemeralImage": images::TESTAPP}}),
    );
    let (ok, out) = kubectl_apply_as(&ns, &image, Some(&author));
    assert!(!ok, "{out}");
    assert!(
        out.contains("spec.completion.ephemeralImage") && out.contains("patch pods/ephemeralcontainers"),
        "{out}"
    );
    // A port or path of the author's choice, POSTed to from the pods' loopback: refused, named.
    let port = spec("port", json!({"proxy": {"profile": "Lameduck", "adminPort": 8080}}));
    let (ok, out) = kubectl_apply_as(&ns, &port, Some(&author));
    assert!(!ok, "{out}");
    assert!(out.contains("spec.proxy.adminPort") && out.contains("create pods/portforward"), "{out}");
    let policies: Api<ShutdownPolicy> = ns.api();
    assert!(
        policies.get_opt("exec").await.unwrap().is_none()
            && policies.get_opt("image").await.unwrap().is_none()
            && policies.get_opt("port").await.unwrap().is_none()
    );

    // Once the author holds the power themselves, the policy lends them nothing: admitted.
    for object in [
        role("exec", json!([{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}])),
        bind(&ns, "exec"),
    ] {
        let (ok, out) = kubectl_apply(&ns, &object);
        assert!(ok, "{out}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // RBAC changes reach the authorizer's cache within moments.
        let (ok, out) = kubectl_apply_as(&ns, &exec, Some(&author));
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "still refused with pods/exec granted: {out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // ... and stamped as reviewed.
    let stored = policies.get("exec").await.unwrap();
    let stamp = stored.annotations().get(annotations::POLICY_REVIEW).cloned().unwrap_or_default();
    assert!(stamp.starts_with("v1:"), "no review stamp: {:?}", stored.annotations());
    hook.remove().await;
    ns.finish().await;
}

/// The test app as a sidecar named `worker`: it runs until SIGTERM and then exits 0.
fn worker() -> serde_json::Value {
    json!({"name": "worker", "image": images::TESTAPP, "imagePullPolicy": "IfNotPresent",
           "command": ["lameduck-testapp", "--listen", "127.0.0.1:0"]})
}

/// A policy for Job `job`'s pod that has the operator signal its `worker` container: a power
/// (patch pods/ephemeralcontainers) that only a reviewed policy may lend.
fn signal_worker(name: &str, job: &str) -> serde_json::Value {
    json!({"apiVersion": "lameduck.io/v1alpha1", "kind": "ShutdownPolicy", "metadata": {"name": name},
           "spec": {"selector": {"matchLabels": {labels::JOB_NAME: job}},
                    "proxy": {"profile": "Custom", "containerName": "worker"},
                    "completion": {"methods": ["Signal"]}}})
}

#[tokio::test]
async fn the_operator_honours_powers_only_on_a_policy_the_webhook_reviewed() {
    let ns = TestNamespace::new("guard").await;
    let hook = Webhook::install(&ns).await;
    let author = policy_author(&ns);
    // The CA goes back into re-created configurations within seconds.
    let mut args = hook.operator_args();
    args.extend(["--webhook-cert-check-interval".to_owned(), "2s".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let operator = Operator::start(&ns, "op-guard", &args).await;
    hook.wait_for_ca_bundles().await;
    let policies: Api<ShutdownPolicy> = ns.api();
    let jobs: Api<Job> = ns.api();

    // Reviewed: written through the webhook by the test's user, who holds every right. The
    // operator signals the worker and the Job completes.
    let (ok, out) = kubectl_apply(&ns, &signal_worker("reviewed", "ok"));
    assert!(ok, "{out}");
    let reviewed = policies.get("reviewed").await.unwrap();
    assert!(reviewed.annotations().contains_key(annotations::POLICY_REVIEW), "not stamped");
    let _: Job = ns.create(job("ok", 2, json!({"containers": [worker()]}))).await;
    ns.wait_for(&jobs, "ok", "the Job to complete", 2 * MINUTE, |j: Option<&Job>| job_complete(j)).await;
    assert_eq!(exit_code(&job_pod(&ns, "ok").await, "worker"), Some(0));

    // The webhook removed (its configurations deleted): the author, who may not add ephemeral
    // containers, stores the same kind of policy for another Job. It carries no stamp, so the
    // operator lends them nothing: Ready=False (NotReviewed) and no call in their pod.
    hook.detach().await;
    let (ok, out) = kubectl_apply_as(&ns, &signal_worker("unreviewed", "stuck"), Some(&author));
    assert!(ok, "{out}");
    let _: Job = ns.create(job("stuck", 2, json!({"containers": [worker()]}))).await;
    let not_reviewed = |p: Option<&ShutdownPolicy>| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == review::NOT_REVIEWED)
        })
    };
    let refused =
        ns.wait_for(&policies, "unreviewed", "Ready=False, NotReviewed", MINUTE, not_reviewed).await;
    let message =
        refused.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap().message;
    assert!(
        message.contains("spec.proxy.containerName") && message.contains("patch pods/ephemeralcontainers"),
        "{message}"
    );
    let pod = job_pod(&ns, "stuck").await;
    let pods: Api<Pod> = ns.api();
    ns.wait_for(&pods, &pod.name_any(), "main to exit", MINUTE, |p: Option<&Pod>| {
        p.is_some_and(|p| exit_code(p, "main") == Some(0))
    })
    .await;
    ns.holds_for(
        &pods,
        &pod.name_any(),
        "no call in the author's pod",
        Duration::from_secs(15),
        |p: &Pod| {
            !p.annotations().contains_key(annotations::SHUTDOWN_ATTEMPTS)
                && p.spec.as_ref().is_none_or(|s| s.ephemeral_containers.is_none())
                && is_running(p, "worker")
        },
    )
    .await;
    assert_eq!(operator.metric(r#"lameduck_policies_refused{reason="not_reviewed"}"#).await, Some(1.0));

    // The webhook back, the policy written again by someone who holds the right: reviewed,
    // stamped, and the pod that waited is finished (a new stamp alone wakes its pods).
    hook.attach().await;
    hook.wait_for_ca_bundles().await;
    let touched = Command::new("kubectl")
        .args(["annotate", "--overwrite", "-n", &ns.name, "shutdownpolicy", "unreviewed", "reviewed-at=now"])
        .output()
        .expect("kubectl on PATH");
    assert!(touched.status.success(), "{}", String::from_utf8_lossy(&touched.stderr));
    let stamped = policies.get("unreviewed").await.unwrap();
    assert!(stamped.annotations().contains_key(annotations::POLICY_REVIEW), "not stamped on review");
    ns.wait_for(&jobs, "stuck", "the re-reviewed policy's Job to complete", 2 * MINUTE, |j: Option<&Job>| {
        job_complete(j)
    })
    .await;
    assert_eq!(exit_code(&job_pod(&ns, "stuck").await, "worker"), Some(0));
    hook.remove().await;
    ns.finish().await;
}

#[tokio::test]
async fn pods_admitted_while_the_webhook_was_down_are_reported() {
    let ns = TestNamespace::new("unmutated").await;
    let hook = Webhook::install(&ns).await;
    let _: ShutdownPolicy =
        ns.create(policy("web", json!({"tier": "web"}), json!({"waitBeforeExit": "4s"}))).await;
    // The operator issues the certificate, then goes away: the API server cannot reach the
    // webhook and, with failurePolicy Ignore, lets the pod in as it is.
    let first = operator_with_webhook(&ns, &hook, "op-1").await;
    first.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pods: Api<Pod> = ns.api();
    let _: Pod = ns.create(meshed_pod("slipped", "web")).await;
    assert!(!pods.get("slipped").await.unwrap().annotations().contains_key(annotations::POLICY));

    let operator = operator_with_webhook(&ns, &hook, "op-2").await;
    let events: Api<Event> = ns.api();
    let deadline = Instant::now() + MINUTE;
    loop {
        let found = events.list(&ListParams::default()).await.unwrap().items.into_iter().find(|e| {
            e.reason.as_deref() == Some(events::ADMITTED_UNMUTATED)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("slipped")
        });
        if let Some(event) = found {
            assert_eq!(event.type_.as_deref(), Some("Warning"));
            assert!(event.note.unwrap_or_default().contains("ShutdownPolicy web selects this pod"));
            break;
        }
        if Instant::now() > deadline {
            ns.fail("no AdmittedUnmutated event for the pod admitted while the webhook was down").await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let deadline = Instant::now() + MINUTE;
    while operator.metric("lameduck_unmutated_pods").await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "lameduck_unmutated_pods never reached 1:\n{}",
            operator.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // With the webhook back, the next pod is mutated.
    let _: Pod = ns.create(meshed_pod("caught", "web")).await;
    assert_eq!(
        pods.get("caught").await.unwrap().annotations().get(annotations::POLICY).map(String::as_str),
        Some("web")
    );
    hook.remove().await;
    ns.finish().await;
}

/// How long the late client keeps sending to a pod after it left the endpoints.
const CLIENT_LAG: Duration = Duration::from_secs(2);

/// A client that learns endpoints from EndpointSlices but forgets a pod only `CLIENT_LAG` after
/// it stopped being ready there, and sends steady requests (a new connection each) to what it
/// knows. Returns (requests sent, failures, a few failure reasons).
async fn late_client(ns: &TestNamespace, service: &str, stop: Arc<AtomicBool>) -> (u64, u64, Vec<String>) {
    let slices: Api<EndpointSlice> = ns.api();
    let selector = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let (sent, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut reasons = Vec::new();
    let mut last_ready: HashMap<IpAddr, Instant> = HashMap::new();
    let mut refreshed = Instant::now() - Duration::from_secs(1);
    let mut turn = 0usize;
    while !stop.load(Ordering::Acquire) {
        if refreshed.elapsed() >= Duration::from_millis(200) {
            if let Ok(list) = slices.list(&selector).await {
                let now = Instant::now();
                for endpoint in list.items.iter().flat_map(|s| s.endpoints.iter()) {
                    if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(true) {
                        for address in &endpoint.addresses {
                            if let Ok(ip) = address.parse() {
                                last_ready.insert(ip, now);
                            }
                        }
                    }
                }
            }
            refreshed = Instant::now();
            last_ready.retain(|_, seen| seen.elapsed() <= CLIENT_LAG);
        }
        let mut targets: Vec<IpAddr> = last_ready.keys().copied().collect();
        targets.sort();
        if targets.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        turn += 1;
        let target = SocketAddr::new(targets[turn % targets.len()], ports::INBOUND);
        sent.fetch_add(1, Ordering::Relaxed);
        let answer = tokio::time::timeout(Duration::from_secs(3), lameduck_e2e::http_get(target, "/")).await;
        if !matches!(answer, Ok(Some((200, _)))) {
            failed.fetch_add(1, Ordering::Relaxed);
            if reasons.len() < 5 {
                reasons.push(format!("{target}: {answer:?}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (sent.into_inner(), failed.into_inner(), reasons)
}

fn web_deployment() -> serde_json::Value {
    let probe = |port: u16, path: &str| json!({"httpGet": {"path": path, "port": port}, "periodSeconds": 1});
    json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    // app preStop 4s < proxy wait 7s (from the policy) < 20s, and the proxy's
                    // 8s drain fits in what is left.
                    "terminationGracePeriodSeconds": 20,
                    "containers": [
                        {"name": "app", "image": images::TESTAPP, "imagePullPolicy": "IfNotPresent",
                         "readinessProbe": probe(ports::APP, "/"),
                         "lifecycle": {"preStop": {"sleep": {"seconds": 4}}}},
                        {"name": containers::LAMEDUCK_PROXY, "image": images::PROXY,
                         "imagePullPolicy": "IfNotPresent",
                         "args": ["--inbound-target", "127.0.0.1:8080"],
                         "readinessProbe": probe(ports::ADMIN, "/ready")},
                    ],
                },
            },
        },
    })
}

/// Whether every replica runs the newest template and no old pod is left.
async fn rolled_out(ns: &TestNamespace) -> bool {
    let deployments: Api<Deployment> = ns.api();
    let Ok(d) = deployments.get("web").await else { return false };
    let status = d.status.unwrap_or_default();
    let pods: Api<Pod> = ns.api();
    let count = pods.list(&ListParams::default().labels("app=web")).await.map(|l| l.items.len()).unwrap_or(0);
    status.observed_generation >= d.metadata.generation
        && status.updated_replicas == Some(2)
        && status.available_replicas == Some(2)
        && status.replicas == Some(2)
        && count == 2
}

async fn wait_rolled_out(ns: &TestNamespace, what: &str) {
    let deadline = Instant::now() + 2 * MINUTE;
    while !rolled_out(ns).await {
        if Instant::now() > deadline {
            ns.fail(&format!("deployment not rolled out within 2 minutes ({what})")).await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the rolling restart under load; returns what the late client saw.
async fn rollout_under_load(ns: &TestNamespace) -> (u64, u64, Vec<String>) {
    let _: Service = ns
        .create(json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": ports::INBOUND}]},
        }))
        .await;
    let _: Deployment = ns.create(web_deployment()).await;
    wait_rolled_out(ns, "first rollout").await;

    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (ns, stop) = (TestNamespace { client: ns.client.clone(), name: ns.name.clone() }, stop.clone());
        tokio::spawn(async move { late_client(&ns, "web", stop).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deployments: Api<Deployment> = ns.api();
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {"e2e/restartedAt": format!("{:?}", Instant::now())}}}}});
    deployments.patch("web", &PatchParams::default(), &Patch::Merge(&restart)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_rolled_out(ns, "rolling restart").await;
    // The client forgets the last old pod CLIENT_LAG after it left the endpoints.
    tokio::time::sleep(CLIENT_LAG + Duration::from_secs(1)).await;
    stop.store(true, Ordering::Release);
    client.await.unwrap()
}

#[tokio::test]
async fn a_rolling_restart_with_late_clients_loses_no_request_with_a_policy() {
    let ns = TestNamespace::new("rollout").await;
    let hook = Webhook::install(&ns).await;
    // Enforce: Reject, so the rollout itself proves the pods follow the rules.
    let _: ShutdownPolicy = ns
        .create(policy(
            "web",
            json!({"app": "web"}),
            json!({"waitBeforeExit": "7s", "shutdownGracePeriod": "8s", "enforce": "Reject"}),
        ))
        .await;
    let _operator = operator_with_webhook(&ns, &hook, "op-rollout").await;
    let (sent, failed, reasons) = rollout_under_load(&ns).await;
    println!("with a ShutdownPolicy: {sent} requests, {failed} failed {reasons:?}");
    assert!(sent > 200, "too few requests to tell: {sent}");
    assert_eq!(failed, 0, "requests failed during the rollout: {reasons:?}");
    hook.remove().await;
    ns.finish().await;
}

#[tokio::test]
async fn the_same_rollout_without_a_policy_loses_requests() {
    let ns = TestNamespace::new("rollout-bare").await;
    let (sent, failed, reasons) = rollout_under_load(&ns).await;
    println!("without a ShutdownPolicy: {sent} requests, {failed} failed {reasons:?}");
    assert!(sent > 200, "too few requests to tell: {sent}");
    assert!(failed > 0, "no request failed: the scenario cannot tell a policy from none");
    ns.finish().await;
}
