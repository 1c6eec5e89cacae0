//! What the webhook's integration tests share: a fixed `Knowledge` (one policy, one pod, a
//! SubjectAccessReview stand-in), the review they post, a certificate and a TLS client config.
// Each test file uses part of this.
#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::UserInfo;
use lameduck_api::ShutdownPolicy;
use lameduck_operator::{
    powers::Power,
    review::{Mode, PolicyReview},
    webhook::admission::PodLabels,
    webhook::certs::{self, Bundle, CertSettings, Plan, Reason},
    webhook::https::Knowledge,
};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject},
};
use serde_json::{Value, json};

/// What the webhook knows: the `web` policy, one pod, and who holds which power.
pub struct Fixed;

/// Who holds which power, as the API server's SubjectAccessReviews would say: `alice` may exec
/// in `shop`; nobody may add ephemeral containers; `mallory`'s reviews fail.
pub fn holds(user: &UserInfo, namespace: &str, power: Power) -> Result<bool, String> {
    match user.username.as_deref() {
        Some("mallory") => Err("simulated API failure".into()),
        Some("alice") => Ok(namespace == "shop" && power == Power::Exec),
        _ => Ok(false),
    }
}

impl Knowledge for Fixed {
    fn policies(&self) -> Vec<Arc<ShutdownPolicy>> {
        vec![policy()]
    }
    fn pods_in(&self, _namespace: &str) -> Vec<PodLabels> {
        vec![PodLabels { name: "web-1".into(), labels: [("app".to_owned(), "web".to_owned())].into() }]
    }
    fn stamp(&self, namespace: &str, name: &str, spec: &lameduck_api::ShutdownPolicySpec) -> Option<String> {
        review_key().stamp(namespace, name, spec)
    }
    fn may<'a>(
        &'a self,
        user: &'a UserInfo,
        namespace: &'a str,
        power: Power,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move { holds(user, namespace, power) })
    }
}

/// The review key the fixed webhook stamps with.
pub fn review_key() -> PolicyReview {
    PolicyReview::with_key(Mode::Required, &[9; lameduck_operator::review::KEY_LEN])
}

/// Pods labelled `app: web` in `shop` get a 45s proxy wait, and a longer grace period to fit it.
pub fn policy() -> Arc<ShutdownPolicy> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "lameduck.io/v1alpha1", "kind": "ShutdownPolicy",
            "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "proxy": {"profile": "Lameduck"},
                     "drain": {"waitBeforeExit": "45s", "shutdownGracePeriod": "10s", "enforce": "Fix"}},
        }))
        .unwrap(),
    )
}

/// The review of a pod the `web` policy selects, as the ReplicaSet controller creates it.
pub fn pod_review(uid: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE", "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "web-", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "app"}, {"name": "lameduck-proxy", "image": "proxy"}]},
            },
        },
    })
}

pub fn cert_settings() -> CertSettings {
    CertSettings {
        hosts: vec!["127.0.0.1".into(), "lameduck-webhook.lameduck.svc".into()],
        cert_validity: Duration::from_secs(3600),
        ca_validity: Duration::from_secs(86_400),
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A fresh CA and serving certificate for 127.0.0.1.
pub fn bundle() -> Bundle {
    certs::issue(&Plan::All(Reason::Missing), None, &cert_settings(), now()).unwrap()
}

/// A TLS client configuration that trusts only `ca_pem` and offers `alpn`.
pub fn trusting(ca_pem: &[u8], alpn: &[u8]) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}
