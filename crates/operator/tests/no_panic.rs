//! No schema-valid policy and no pod can panic the operator: arbitrary policies the CRD admits
//! (names, ports, paths, commands, methods, rounds) and arbitrary pods (containers, states, exit
//! codes, restart policies, env, annotations, lameduck's record, ephemeral containers) go through
//! the watch cache, `decide`, and a whole reconcile (its calls included) against an in-process
//! fake API server that answers each request with an arbitrary status. A panic, whether it
//! escapes or the reconcile's own guard catches it, fails the property.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures::FutureExt;
use http::{Request, Response};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Client,
    client::Body,
    runtime::{reflector, watcher},
};
use lameduck_api::{ShutdownPolicy, policy::SHUTDOWN_PATH_RULE};
use lameduck_operator::{
    controller::attempts::AttemptLog,
    controller::decide::{Terms, decide},
    controller::pod::SlimPod,
    controller::reconcile::{Context, Error, reconcile},
};
use proptest::{prelude::*, test_runner::TestRunner};
use serde_json::{Value, json};

/// A container name as the CRD admits it (a DNS label), or one of the names lameduck knows.
fn container_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("linkerd-proxy".to_owned()),
        Just("istio-proxy".to_owned()),
        Just("lameduck-proxy".to_owned()),
        Just("cloud-sql-proxy".to_owned()),
        Just("main".to_owned()),
        "[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?",
    ]
}

/// A shutdown path as this release's CRD admits it (the rule's own pattern), or a path that
/// only the previous release's rule (`startsWith('/')`) admitted: a policy stored back then.
fn shutdown_path() -> impl Strategy<Value = String> {
    // The regex inside the CEL rule: `self.matches("^...$")`.
    let anchored = SHUTDOWN_PATH_RULE.split('"').nth(1).unwrap_or("^/$");
    let pattern = anchored.trim_start_matches('^').trim_end_matches('$');
    let admitted = proptest::string::string_regex(pattern).expect("the rule's pattern is a regex");
    prop_oneof![admitted, "/[ -~]{0,20}", "/\\PC{0,10}"]
}

fn methods() -> impl Strategy<Value = Vec<&'static str>> {
    proptest::sample::subsequence(vec!["Exec", "PortForward", "EphemeralContainer", "Signal"], 1..=4)
        .prop_shuffle()
}

fn proxy_spec() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just("Lameduck"), Just("Linkerd"), Just("Istio"), Just("CloudSqlProxy"), Just("Custom")],
        proptest::option::of(container_name()),
        proptest::option::of(1..=65535i32),
        proptest::option::of(shutdown_path()),
        proptest::option::weighted(0.1, proptest::collection::vec("[ -~]{0,12}", 1..4)),
    )
        .prop_map(|(profile, name, port, path, command)| {
            let mut spec = json!({"profile": profile});
            // The schema requires a name for Custom.
            let name = name.or_else(|| (profile == "Custom").then(|| "agent".to_owned()));
            for (key, value) in [
                ("containerName", name.map(Value::from)),
                ("adminPort", port.map(Value::from)),
                ("shutdownPath", path.map(Value::from)),
                ("execCommand", command.map(Value::from)),
            ] {
                if let Some(value) = value {
                    spec[key] = value;
                }
            }
            spec
        })
}

/// A policy spec the CRD admits (its shapes; the CEL rules' cross-field checks do not matter
/// here: the operator must survive anything it can read).
fn policy_spec() -> impl Strategy<Value = Value> {
    (
        proxy_spec(),
        proptest::collection::vec((proxy_spec(), proptest::option::of(methods())), 0..3),
        methods(),
        1..=10u32,
        proptest::option::weighted(0.1, "[a-z]{1,8}(:[a-z0-9]{1,5})?"),
        proptest::bool::weighted(0.9),
    )
        .prop_map(|(proxy, sidecars, methods, rounds, image, enabled)| {
            let sidecars: Vec<Value> = sidecars
                .into_iter()
                .map(|(mut sidecar, methods)| {
                    if let Some(methods) = methods {
                        sidecar["methods"] = json!(methods);
                    }
                    sidecar
                })
                .collect();
            let mut completion =
                json!({"methods": methods, "maxRounds": rounds, "enabled": enabled, "attemptTimeout": "1s"});
            if let Some(image) = image {
                completion["ephemeralImage"] = json!(image);
            }
            json!({"proxy": proxy, "sidecars": sidecars, "completion": completion})
        })
}

fn state() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"running": {}})),
        Just(json!({"waiting": {"reason": "CrashLoopBackOff"}})),
        Just(json!({})),
        (any::<i32>(), proptest::option::of("[ -~]{0,30}"), any::<bool>()).prop_map(
            |(code, message, dated)| {
                let mut terminated = json!({"exitCode": code});
                if let Some(message) = message {
                    terminated["message"] = json!(message);
                }
                if dated {
                    terminated["finishedAt"] = json!("2026-11-21T07:59:55Z");
                }
                json!({"terminated": terminated})
            }
        ),
    ]
}

/// What lameduck's record annotation may hold: its own shape, or anything someone wrote.
fn record() -> impl Strategy<Value = Option<String>> {
    proptest::option::weighted(0.3, prop_oneof![
        Just(r#"[{"number":1,"round":1,"method":"PortForward","started":"2026-11-21T07:59:58Z"}]"#.to_owned()),
        Just(r#"[{"number":1,"round":1,"method":"Signal","started":"2026-11-21T07:59:58Z","outcome":{"kind":"sent"}}]"#.to_owned()),
        "[ -~]{0,40}",
    ])
}

/// The containers a policy names (the ones the operator will act on), resolved as it does.
fn named_by(spec: &Value) -> Vec<String> {
    serde_json::from_value::<lameduck_api::ShutdownPolicySpec>(spec.clone())
        .map(|spec| spec.sidecars().into_iter().map(|s| s.proxy.container_name).collect())
        .unwrap_or_default()
}

/// Mostly the state of a stuck pod's container (`stuck`: a main that exited 0, or a sidecar
/// that runs), else any state: so that most cases reach the calls.
fn biased_state(stuck: Value) -> impl Strategy<Value = Value> {
    prop_oneof![3 => Just(stuck), 1 => state()]
}

/// A pod with a `main` container, the containers `named` (the policy's sidecars) and others.
fn pod(named: Vec<String>) -> impl Strategy<Value = Value> {
    let exited = json!({"terminated": {"exitCode": 0, "finishedAt": "2026-11-21T07:59:55Z"}});
    let running = json!({"running": {}});
    let mut containers: Vec<BoxedStrategy<(String, Value)>> =
        vec![biased_state(exited).prop_map(|s| ("main".to_owned(), s)).boxed()];
    for name in named {
        containers.push(biased_state(running.clone()).prop_map(move |s| (name.clone(), s)).boxed());
    }
    (
        containers,
        proptest::collection::vec((container_name(), state()), 0..2),
        proptest::collection::vec((any::<i32>(), proptest::option::of("[ -~]{0,8}")), 6),
        proptest::option::weighted(0.8, prop_oneof![3 => Just("Never"), 1 => Just("OnFailure"), 1 => Just("Always")]),
        record(),
        proptest::collection::vec(state(), 0..3),
        proptest::bool::weighted(0.8),
    )
        .prop_map(|(mut containers, extra, details, restart, record, ephemeral, owned)| {
            containers.extend(extra);
            // Container names are unique in a pod.
            let mut seen = std::collections::HashSet::new();
            containers.retain(|(name, _)| seen.insert(name.clone()));
            let mut annotations = json!({"linkerd.io/proxy-version": "x", "sidecar.istio.io/status": "{}"});
            if let Some(record) = record {
                annotations["lameduck.io/shutdown-attempts"] = json!(record);
            }
            let detail = |i: usize| details.get(i % details.len()).cloned().unwrap_or((0, None));
            let specs: Vec<Value> = containers
                .iter()
                .enumerate()
                .map(|(i, (name, _))| {
                    let env: Vec<Value> = detail(i)
                        .1
                        .iter()
                        .flat_map(|value| {
                            ["LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "LAMEDUCK_PROXY_ENABLE_SHUTDOWN_ENDPOINT"]
                                .map(|n| json!({"name": n, "value": value}))
                        })
                        .collect();
                    json!({"name": name, "env": env, "args": ["--enable-shutdown-endpoint", "--quitquitquit"]})
                })
                .collect();
            let statuses: Vec<Value> = containers
                .iter()
                .enumerate()
                .map(|(i, (name, state))| json!({"name": name, "state": state, "restartCount": detail(i).0.rem_euclid(3)}))
                .collect();
            let ephemeral: Vec<Value> = ephemeral
                .iter()
                .enumerate()
                .map(|(i, state)| json!({"name": format!("lameduck-shutdown-{}", i + 1), "state": state}))
                .collect();
            let mut pod = json!({
                "metadata": {"name": "p", "namespace": "jobs", "uid": "u-1", "resourceVersion": "7", "annotations": annotations},
                "spec": {"containers": specs},
                "status": {"phase": "Running", "containerStatuses": statuses, "ephemeralContainerStatuses": ephemeral},
            });
            if let Some(restart) = restart {
                pod["spec"]["restartPolicy"] = json!(restart);
            }
            if owned {
                pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "j", "controller": true}]);
            }
            pod
        })
}

/// What the fake API server answers: a status code, and for a 200 the pod or an empty object.
fn answers() -> impl Strategy<Value = Vec<u16>> {
    proptest::collection::vec(
        prop_oneof![6 => Just(200u16), 1 => Just(201), 1 => Just(404), 1 => Just(409), 1 => Just(500)],
        1..8,
    )
}

#[test]
fn no_policy_or_pod_panics_decide_or_a_reconcile() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut runner = TestRunner::new(ProptestConfig { cases: 512, ..ProptestConfig::default() });
    runner
        .run(
            &policy_spec().prop_flat_map(|spec| {
                let named = named_by(&spec);
                (Just(spec), pod(named), answers())
            }),
            |(spec, pod_json, answers)| {
            let policy: ShutdownPolicy = serde_json::from_value(json!({
                "apiVersion": "lameduck.io/v1alpha1", "kind": "ShutdownPolicy",
                "metadata": {"name": "any", "namespace": "jobs", "uid": "p-1", "creationTimestamp": "2026-11-21T00:00:00Z"},
                "spec": spec,
            }))
            .map_err(|e| TestCaseError::fail(format!("the strategy made an unreadable policy: {e}")))?;
            let full: Pod = serde_json::from_value(pod_json.clone())
                .map_err(|e| TestCaseError::fail(format!("the strategy made an unreadable pod: {e}")))?;
            let slim = SlimPod::cache(&full).map_err(|e| TestCaseError::fail(e.to_string()))?;

            let now = "2026-11-21T08:00:00Z".parse().unwrap();
            let log = AttemptLog::from_annotations(slim.metadata.annotations.as_ref()).unwrap_or_default();
            let terms = Terms { spec: &policy.spec, generation: 1, max_ephemeral_containers: 4 };
            let decided = std::panic::catch_unwind(AssertUnwindSafe(|| decide(&slim.to_pod(), &terms, &log, now)));
            prop_assert!(decided.is_ok(), "decide panicked on {pod_json} under {:?}", policy.spec);

            let outcome = runtime.block_on(async {
                let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
                let client = Client::new(service, "jobs");
                let (store, mut writer) = reflector::store::<ShutdownPolicy>();
                writer.apply_watcher_event(&watcher::Event::Apply(policy.clone()));
                let (ctx, _leader) = Context::test(client, store);
                let served = pod_json.clone();
                let api = tokio::spawn(async move {
                    for code in answers.iter().cycle().take(64) {
                        let Some((_, respond)) = handle.next_request().await else { return };
                        let body = match code {
                            200 => serde_json::to_vec(&served).unwrap_or_default(),
                            201 => b"{}".to_vec(),
                            _ => serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": "fake"})).unwrap_or_default(),
                        };
                        let response = Response::builder().status(*code).body(Body::from(body));
                        respond.send_response(response.unwrap_or_else(|_| Response::new(Body::empty())));
                    }
                });
                let reconciled = tokio::time::timeout(
                    Duration::from_secs(10),
                    AssertUnwindSafe(reconcile(Arc::new(slim), Arc::new(ctx))).catch_unwind(),
                )
                .await;
                api.abort();
                reconciled
            });
            match outcome {
                // Caught by the reconcile's own guard: still a panic, and a failed property.
                Ok(Ok(Err(Error::Panic(message)))) => {
                    Err(TestCaseError::fail(format!("a reconcile panicked ({message}) on {pod_json} under {:?}", policy.spec)))
                }
                Ok(Ok(_)) => Ok(()),
                Ok(Err(_)) => Err(TestCaseError::fail(format!("a reconcile panicked on {pod_json} under {:?}", policy.spec))),
                // A fake server that stops answering may leave a call waiting: not a panic.
                Err(_) => Ok(()),
            }
        })
        .unwrap();
}
