//! The webhook server as the API server sees it: real AdmissionReview requests over TLS on
//! loopback, trusting only the CA the operator issued, and a certificate renewed in place.

mod support;

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use lameduck_operator::{
    metrics::Metrics,
    webhook::certs::{self, Bundle, Plan, Reason},
    webhook::https::{self as webhook, ServingCert},
};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use support::{Fixed, cert_settings, now, pod_review, review_key, trusting};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

async fn start(bundle: &Bundle) -> (SocketAddr, Arc<ServingCert>, Metrics) {
    let serving = Arc::new(ServingCert::default());
    serving.load(&bundle.cert, &bundle.key).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Metrics::new();
    tokio::spawn(webhook::serve(
        listener,
        webhook::tls_config(serving.clone()).unwrap(),
        Arc::new(Fixed),
        metrics.clone(),
    ));
    (addr, serving, metrics)
}

/// POSTs `body` to `path` over TLS, trusting only `ca_pem`, with HTTP/1.1 or HTTP/2 as the API
/// server may use either.
async fn post(
    addr: SocketAddr,
    ca_pem: &str,
    path: &str,
    body: &Value,
    http2: bool,
) -> Result<(u16, Value), String> {
    let alpn: &[u8] = if http2 { b"h2" } else { b"http/1.1" };
    let config = trusting(ca_pem.as_bytes(), alpn);
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let request = http::Request::post(path)
        .uri(format!("https://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap();
    let response = if http2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender.send_request(request).await.map_err(|e| e.to_string())?
    } else {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender.send_request(request).await.map_err(|e| e.to_string())?
    };
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())),
    ))
}

/// kube's AdmissionResponse writes the patch as a JSON array of bytes, which the API server's
/// decoder reads as a `[]byte` just as it reads base64.
fn decoded_patch(response: &Value) -> Vec<Value> {
    let bytes: Vec<u8> = serde_json::from_value(response["response"]["patch"].clone()).expect("a patch");
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn answers_pod_reviews_with_a_json_patch_over_http1_and_http2() {
    let bundle = certs::issue(&Plan::All(Reason::Missing), None, &cert_settings(), now()).unwrap();
    let (addr, _serving, metrics) = start(&bundle).await;
    let ca = String::from_utf8(bundle.ca_bundle()).unwrap();
    for (uid, http2) in
        [("11111111-1111-4111-8111-111111111111", false), ("22222222-2222-4222-8222-222222222222", true)]
    {
        let (status, review) = post(addr, &ca, "/mutate-pods", &pod_review(uid), http2).await.unwrap();
        assert_eq!(status, 200, "{review}");
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(review["response"]["uid"], uid, "the uid is echoed");
        assert_eq!(review["response"]["allowed"], true);
        assert_eq!(review["response"]["patchType"], "JSONPatch");
        let patch = decoded_patch(&review);
        let text = serde_json::to_string(&patch).unwrap();
        assert!(text.contains("\"wait\",\"--seconds\",\"45\""), "{text}");
        // enforce: Fix raised the default 30s grace period to fit the 45s wait and the 10s drain.
        assert!(
            patch.iter().any(|op| op["path"] == "/spec/terminationGracePeriodSeconds" && op["value"] == 56),
            "{text}"
        );
    }
    let exported = metrics.encode();
    assert!(
        exported.contains("lameduck_webhook_admissions_total{resource=\"pods\",result=\"mutated\"} 2"),
        "{exported}"
    );

    let bad = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
    let (status, _) = post(addr, &ca, "/mutate-pods", &bad, false).await.unwrap();
    assert_eq!(status, 400);
    let (status, _) = post(addr, &ca, "/elsewhere", &pod_review("x"), false).await.unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn refuses_malformed_policies_over_tls() {
    let bundle = certs::issue(&Plan::All(Reason::Missing), None, &cert_settings(), now()).unwrap();
    let (addr, _serving, _) = start(&bundle).await;
    let ca = String::from_utf8(bundle.ca_bundle()).unwrap();
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "33333333-3333-4333-8333-333333333333",
            "kind": {"group": "lameduck.io", "version": "v1alpha1", "kind": "ShutdownPolicy"},
            "resource": {"group": "lameduck.io", "version": "v1alpha1", "resource": "shutdownpolicies"},
            "namespace": "shop", "operation": "CREATE", "userInfo": {"username": "alice"},
            "object": {"apiVersion": "lameduck.io/v1alpha1", "kind": "ShutdownPolicy",
                       "metadata": {"name": "late", "namespace": "shop"},
                       "spec": {"drain": {"shutdownGracePeriod": "two minutes"}}},
        },
    });
    let (status, answer) = post(addr, &ca, "/validate-shutdownpolicies", &review, false).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.starts_with("spec.drain.shutdownGracePeriod:"), "{message}");
}

/// A ShutdownPolicy review of `spec` by `user`.
fn policy_review(user: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "44444444-4444-4444-8444-444444444444",
            "kind": {"group": "lameduck.io", "version": "v1alpha1", "kind": "ShutdownPolicy"},
            "resource": {"group": "lameduck.io", "version": "v1alpha1", "resource": "shutdownpolicies"},
            "namespace": "shop", "operation": "CREATE", "userInfo": {"username": user, "groups": ["devs"]},
            "object": {"apiVersion": "lameduck.io/v1alpha1", "kind": "ShutdownPolicy",
                       "metadata": {"name": "p", "namespace": "shop"}, "spec": spec},
        },
    })
}

#[tokio::test]
async fn a_policy_whose_author_holds_its_powers_is_stamped_and_the_stamp_checks_out() {
    let bundle = certs::issue(&Plan::All(Reason::Missing), None, &cert_settings(), now()).unwrap();
    let (addr, _serving, _) = start(&bundle).await;
    let ca = String::from_utf8(bundle.ca_bundle()).unwrap();
    let spec = json!({"proxy": {"execCommand": ["sh", "-c", "env"]}, "completion": {"methods": ["Exec"]}});
    let path = lameduck_api::names::webhook::MUTATE_POLICIES_PATH;

    // alice holds pods/exec in shop: allowed, with a patch that adds the stamp.
    let (status, answer) = post(addr, &ca, path, &policy_review("alice", spec.clone()), false).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let patch = decoded_patch(&answer);
    // `metadata.annotations` is added whole, or the one annotation into it.
    let stamp = patch
        .iter()
        .find_map(|op| {
            op["value"][lameduck_api::names::annotations::POLICY_REVIEW].as_str().or(op["value"].as_str())
        })
        .unwrap_or_else(|| panic!("no stamp in {patch:?}"))
        .to_owned();
    let parsed: lameduck_api::ShutdownPolicySpec = serde_json::from_value(spec.clone()).unwrap();
    assert_eq!(
        review_key().check("shop", "p", &parsed, Some(&stamp)),
        lameduck_operator::review::Check::Pass
    );
    // The same review on the validating path writes nothing.
    let (_, answer) =
        post(addr, &ca, "/validate-shutdownpolicies", &policy_review("alice", spec.clone()), false)
            .await
            .unwrap();
    assert!(answer["response"]["patch"].is_null(), "{answer}");
    // bob does not hold it: refused, and no stamp.
    let (_, answer) = post(addr, &ca, path, &policy_review("bob", spec), false).await.unwrap();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert!(answer["response"]["patch"].is_null());
}

#[tokio::test]
async fn a_policy_needs_its_author_to_hold_the_powers_it_asks_for() {
    let bundle = certs::issue(&Plan::All(Reason::Missing), None, &cert_settings(), now()).unwrap();
    let (addr, _serving, metrics) = start(&bundle).await;
    let ca = String::from_utf8(bundle.ca_bundle()).unwrap();
    let verdict = |review: Value| {
        let ca = ca.clone();
        async move {
            let (status, answer) =
                post(addr, &ca, "/validate-shutdownpolicies", &review, false).await.unwrap();
            assert_eq!(status, 200);
            let message = answer["response"]["status"]["message"].as_str().unwrap_or_default().to_owned();
            (answer["response"]["allowed"] == true, message)
        }
    };
    let exec = json!({"proxy": {"execCommand": ["sh", "-c", "env"]}, "completion": {"methods": ["Exec"]}});
    let image = json!({"completion": {"ephemeralImage": "evil/debug:1", "methods": ["Signal"]}});

    // Nothing special asked: anyone may.
    assert_eq!(verdict(policy_review("bob", json!({}))).await, (true, String::new()));
    // alice holds pods/exec in shop, so her custom command lends her nothing she lacks.
    assert!(verdict(policy_review("alice", exec.clone())).await.0);
    // bob does not: refused, naming the field and the permission.
    let (allowed, message) = verdict(policy_review("bob", exec)).await;
    assert!(!allowed);
    assert!(message.contains("spec.proxy.execCommand") && message.contains("create pods/exec"), "{message}");
    let (allowed, message) = verdict(policy_review("alice", image.clone())).await;
    assert!(!allowed);
    assert!(
        message.contains("spec.completion.ephemeralImage")
            && message.contains("patch pods/ephemeralcontainers"),
        "{message}"
    );
    // When the API server cannot say, the policy is refused, and the reason given.
    let (allowed, message) = verdict(policy_review("mallory", image)).await;
    assert!(!allowed && message.contains("could not check"), "{message}");
    assert_eq!(metrics.webhook_admissions.with_label_values(&["shutdownpolicies", "rejected"]).get(), 3);
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_untrusted_clients_fail() {
    let first = certs::issue(&Plan::All(Reason::Missing), None, &cert_settings(), now()).unwrap();
    let (addr, serving, _) = start(&first).await;
    let stranger = certs::issue(&Plan::All(Reason::Missing), None, &cert_settings(), now() + 1).unwrap();
    let stranger_ca = String::from_utf8(stranger.ca_bundle()).unwrap();
    let err = post(addr, &stranger_ca, "/mutate-pods", &pod_review("u"), false).await.unwrap_err();
    assert!(err.starts_with("handshake"), "{err}");

    // The CA is renewed: the bundle trusts both, and the server switches on the next handshake.
    let renewed =
        certs::issue(&Plan::All(Reason::CaExpiring), Some(&first), &cert_settings(), now()).unwrap();
    assert_eq!(renewed.ca_certs.len(), 2);
    serving.load(&renewed.cert, &renewed.key).unwrap();
    let only_new = renewed.ca_certs[0].clone();
    let only_old = first.ca_certs[0].clone();
    assert!(post(addr, &only_new, "/mutate-pods", &pod_review("a"), false).await.is_ok());
    let err = post(addr, &only_old, "/mutate-pods", &pod_review("b"), false).await.unwrap_err();
    assert!(err.starts_with("handshake"), "{err}");
    let both = String::from_utf8(renewed.ca_bundle()).unwrap();
    assert!(post(addr, &both, "/mutate-pods", &pod_review("c"), true).await.is_ok());
}
