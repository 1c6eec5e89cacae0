use kube::core::admission::AdmissionReview;
use serde_json::{Value, json};

use super::*;

fn request(resource: &str, operation: &str, object: Value) -> AdmissionRequest<DynamicObject> {
    let kind = if resource == "pods" { "Pod" } else { "ShutdownPolicy" };
    let group = if resource == "pods" { "" } else { "lameduck.io" };
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "6b9b1c1e-0000-4000-8000-000000000001",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": object,
        }
    }))
    .unwrap();
    review.try_into().unwrap()
}

fn policy(name: &str, created: &str, spec: Value) -> Arc<ShutdownPolicy> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "lameduck.io/v1alpha1",
            "kind": "ShutdownPolicy",
            "metadata": {"name": name, "namespace": "shop", "creationTimestamp": created},
            "spec": spec,
        }))
        .unwrap(),
    )
}

fn web_policy() -> Arc<ShutdownPolicy> {
    policy(
        "web",
        "2026-01-01T00:00:00Z",
        json!({
            "selector": {"matchLabels": {"app": "web"}},
            "proxy": {"profile": "Lameduck"},
            "drain": {"waitBeforeExit": "20s", "shutdownGracePeriod": "10s", "enableShutdownEndpoint": true},
        }),
    )
}

/// A lameduck-meshed pod, with a field and a container field the types do not know.
fn web_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "labels": {"app": "web"}},
        "spec": {
            "futureField": {"kept": true},
            "terminationGracePeriodSeconds": 60,
            "containers": [
                {"name": "app", "image": "app", "futureThing": 1,
                 "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}},
                {"name": "lameduck-proxy", "image": "proxy"},
            ],
        },
    })
}

fn patched(raw: &Value, response: &AdmissionResponse) -> Value {
    let patch: json_patch::Patch = serde_json::from_slice(response.patch.as_ref().expect("a patch")).unwrap();
    let mut out = raw.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    out
}

#[test]
fn a_selected_pod_gets_its_drain_settings_and_keeps_unknown_fields() {
    let raw = web_pod();
    let (response, verdict) = review_pod(&request("pods", "CREATE", raw.clone()), &[web_policy()]);
    assert_eq!(verdict, Verdict::Mutated);
    assert!(response.allowed);
    let pod = patched(&raw, &response);
    let proxy = &pod["spec"]["containers"][1];
    assert_eq!(
        proxy["lifecycle"]["preStop"]["exec"]["command"],
        json!(["lameduck-proxy", "wait", "--seconds", "20"])
    );
    let env = proxy["env"].as_array().unwrap();
    assert!(env.contains(&json!({"name": "LAMEDUCK_PROXY_SHUTDOWN_GRACE_PERIOD", "value": "10s"})));
    assert_eq!(pod["metadata"]["annotations"]["lameduck.io/policy"], "web");
    assert_eq!(pod["spec"]["futureField"], json!({"kept": true}));
    assert_eq!(pod["spec"]["containers"][0]["futureThing"], 1);
    assert_eq!(pod["spec"]["containers"][0], raw["spec"]["containers"][0], "the app is untouched");

    // Reinvoked (as with reinvocationPolicy: IfNeeded): nothing more to do.
    let (again, verdict) = review_pod(&request("pods", "CREATE", pod), &[web_policy()]);
    assert_eq!(verdict, Verdict::Unchanged);
    assert!(again.patch.is_none() && again.allowed);
}

#[test]
fn pods_no_policy_selects_are_not_touched() {
    let mut other = web_pod();
    other["metadata"]["labels"]["app"] = json!("db");
    let (response, verdict) = review_pod(&request("pods", "CREATE", other), &[web_policy()]);
    assert_eq!(verdict, Verdict::NotSelected);
    assert!(response.allowed && response.patch.is_none() && response.warnings.is_none());

    let mut elsewhere = web_policy().as_ref().clone();
    elsewhere.metadata.namespace = Some("other".into());
    let (response, verdict) = review_pod(&request("pods", "CREATE", web_pod()), &[Arc::new(elsewhere)]);
    assert_eq!(verdict, Verdict::NotSelected);
    assert!(response.patch.is_none());

    // Updates are not lameduck's business.
    let (response, verdict) = review_pod(&request("pods", "UPDATE", web_pod()), &[web_policy()]);
    assert_eq!(verdict, Verdict::NotSelected);
    assert!(response.patch.is_none());
}

#[test]
fn a_linkerd_pod_gets_sleep_and_linkerd_env() {
    let linkerd = policy(
        "mesh",
        "2026-01-01T00:00:00Z",
        json!({"drain": {"waitBeforeExit": "15s", "enableShutdownEndpoint": true}}),
    );
    let raw = json!({
        "metadata": {"name": "api-0", "labels": {"app": "api"}},
        "spec": {"containers": [{"name": "api"}, {"name": "linkerd-proxy", "image": "linkerd"}]},
    });
    let (response, verdict) = review_pod(&request("pods", "CREATE", raw.clone()), &[linkerd]);
    assert_eq!(verdict, Verdict::Mutated);
    let pod = patched(&raw, &response);
    let proxy = &pod["spec"]["containers"][1];
    assert_eq!(proxy["lifecycle"]["preStop"]["exec"]["command"], json!(["/bin/sleep", "15"]));
    assert!(
        proxy["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "value": "true"}))
    );
}

#[test]
fn enforce_reject_refuses_with_the_numbers_and_fix_raises_the_grace_period() {
    let mut spec = json!({
        "selector": {"matchLabels": {"app": "web"}},
        "proxy": {"profile": "Lameduck"},
        "drain": {"waitBeforeExit": "90s", "enforce": "Reject"},
    });
    let (response, verdict) = review_pod(
        &request("pods", "CREATE", web_pod()),
        &[policy("strict", "2026-01-01T00:00:00Z", spec.clone())],
    );
    assert_eq!(verdict, Verdict::Rejected);
    assert!(!response.allowed);
    assert!(response.result.message.contains("90"), "{}", response.result.message);
    assert!(response.result.message.contains("60"), "{}", response.result.message);

    spec["drain"]["enforce"] = json!("Fix");
    let raw = web_pod();
    let (response, verdict) =
        review_pod(&request("pods", "CREATE", raw.clone()), &[policy("fixer", "2026-01-01T00:00:00Z", spec)]);
    assert_eq!(verdict, Verdict::Mutated);
    let pod = patched(&raw, &response);
    assert!(pod["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap() > 90);
}

#[test]
fn the_older_policy_applies_and_the_younger_is_named_in_a_warning() {
    let younger = policy(
        "later",
        "2026-06-01T00:00:00Z",
        json!({"selector": {"matchLabels": {"app": "web"}}, "proxy": {"profile": "Lameduck"},
               "drain": {"waitBeforeExit": "50s"}}),
    );
    let raw = web_pod();
    let (response, _) = review_pod(&request("pods", "CREATE", raw.clone()), &[younger, web_policy()]);
    let pod = patched(&raw, &response);
    assert_eq!(pod["metadata"]["annotations"]["lameduck.io/policy"], "web");
    let warnings = response.warnings.unwrap().join("\n");
    assert!(warnings.contains("ShutdownPolicy later also selects this pod; web is older"), "{warnings}");
}

fn policy_object(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "lameduck.io/v1alpha1",
        "kind": "ShutdownPolicy",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": spec,
    })
}

#[test]
fn malformed_policies_are_refused_with_the_field_named() {
    let bad_duration = policy_object("p", json!({"drain": {"waitBeforeExit": "soon"}}));
    let (response, verdict) = review_policy(&request("shutdownpolicies", "CREATE", bad_duration), &[], &[]);
    assert_eq!(verdict, Verdict::Rejected);
    assert!(response.result.message.starts_with("spec.drain.waitBeforeExit:"), "{}", response.result.message);

    let bad_selector = policy_object(
        "p",
        json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Near", "values": ["x"]}]}}),
    );
    let (response, verdict) = review_policy(&request("shutdownpolicies", "CREATE", bad_selector), &[], &[]);
    assert_eq!(verdict, Verdict::Rejected);
    assert!(response.result.message.contains("spec.selector"), "{}", response.result.message);
}

#[test]
fn overlapping_policies_and_timing_problems_are_warnings() {
    let pods = [
        PodLabels { name: "web-1".into(), labels: BTreeMap::from([("app".into(), "web".into())]) },
        PodLabels { name: "db-1".into(), labels: BTreeMap::from([("app".into(), "db".into())]) },
    ];
    let everything = policy_object("everything", json!({"proxy": {"profile": "Lameduck"}}));
    let (response, verdict) =
        review_policy(&request("shutdownpolicies", "CREATE", everything), &[web_policy()], &pods);
    assert_eq!(verdict, Verdict::Warned);
    assert!(response.allowed);
    let warnings = response.warnings.unwrap().join("\n");
    assert!(
        warnings.contains("ShutdownPolicy web also selects 1 of this namespace's pods (such as web-1)"),
        "{warnings}"
    );
    assert!(warnings.contains("the older policy, web, applies"), "{warnings}");

    let slow = policy_object(
        "slow",
        json!({"selector": {"matchLabels": {"app": "db"}}, "proxy": {"profile": "Lameduck"},
               "drain": {"waitBeforeExit": "45s", "enforce": "Fix"}}),
    );
    let (response, verdict) =
        review_policy(&request("shutdownpolicies", "CREATE", slow), &[web_policy()], &pods);
    assert_eq!(verdict, Verdict::Warned);
    let warnings = response.warnings.unwrap().join("\n");
    assert!(warnings.contains("proxy-wait-not-below-termination-grace"), "{warnings}");
    assert!(warnings.contains("longer terminationGracePeriodSeconds"), "{warnings}");
    assert!(!warnings.contains("ShutdownPolicy web"), "no overlap with web: {warnings}");

    let fine = policy_object("fine", json!({"selector": {"matchLabels": {"app": "db"}}}));
    let (response, verdict) =
        review_policy(&request("shutdownpolicies", "CREATE", fine), &[web_policy()], &pods);
    assert_eq!(verdict, Verdict::Accepted);
    assert!(response.warnings.is_none());
}

#[test]
fn a_policy_names_the_powers_it_asks_for_and_a_refusal_names_field_and_permission() {
    let object = |spec: Value| {
        json!({"apiVersion": "lameduck.io/v1alpha1", "kind": "ShutdownPolicy",
               "metadata": {"name": "p", "namespace": "shop"}, "spec": spec})
    };
    let plain = request("shutdownpolicies", "CREATE", object(json!({"proxy": {"profile": "Linkerd"}})));
    assert_eq!(requested_powers(&plain), []);
    let exec = request(
        "shutdownpolicies",
        "UPDATE",
        object(
            json!({"proxy": {"execCommand": ["/bin/sh", "-c", "env"]}, "completion": {"methods": ["Exec"]}}),
        ),
    );
    let asked = requested_powers(&exec);
    assert_eq!(
        asked,
        [PowerRequest {
            field: "spec.proxy.execCommand".into(),
            power: powers::Power::Exec,
            value: "/bin/sh\u{0}-c\u{0}env".into()
        }]
    );

    let response =
        refuse_powers(AdmissionResponse::from(&exec), &exec.user_info, "shop", &[(asked[0].clone(), None)]);
    assert!(!response.allowed);
    let message = response.result.message;
    for part in ["spec.proxy.execCommand", "create pods/exec", "namespace shop", "alice"] {
        assert!(message.contains(part), "{part} not in {message}");
    }
    let unknown = refuse_powers(
        AdmissionResponse::from(&exec),
        &exec.user_info,
        "shop",
        &[(asked[0].clone(), Some("API server unreachable".into()))],
    );
    assert!(unknown.result.message.contains("could not check"), "{}", unknown.result.message);
}
