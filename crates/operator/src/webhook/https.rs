//! The admission webhook's HTTPS server: reads `AdmissionReview`s, answers with
//! [`crate::webhook::admission`]'s verdicts. The certificate is swapped in place when it is renewed, so
//! rotation needs no restart.

use std::sync::PoisonError;
use std::{
    convert::Infallible,
    sync::{Arc, RwLock},
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview},
};
use lameduck_api::{ShutdownPolicy, ShutdownPolicySpec, names::webhook as names};
use rustls::{
    ServerConfig,
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{
    metrics::Metrics,
    powers::Power,
    server::{self, ServerLimits},
    webhook::admission::{self, PodLabels, Verdict},
};

/// The API server sends at most 3 MiB objects; a review carries one (two on updates).
const MAX_BODY: usize = 8 << 20;

/// The serving certificate, replaced in place on renewal.
#[derive(Debug, Default)]
pub struct ServingCert(RwLock<Option<Arc<CertifiedKey>>>);

impl ServingCert {
    /// Loads a PEM certificate chain and key; the next handshake uses them.
    pub fn load(&self, cert_pem: &str, key_pem: &str) -> Result<(), String> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("serving certificate: {e}"))?;
        if chain.is_empty() {
            return Err("serving certificate: no certificate in the PEM text".into());
        }
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("serving key: {e}"))?;
        let key = ring::sign::any_supported_type(&key).map_err(|e| format!("serving key: {e}"))?;
        *self.0.write().unwrap_or_else(PoisonError::into_inner) =
            Some(Arc::new(CertifiedKey::new(chain, key)));
        Ok(())
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.0.read().unwrap_or_else(PoisonError::into_inner).is_some()
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// A TLS server configuration that serves whatever `cert` holds.
pub fn tls_config(cert: Arc<ServingCert>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What the webhook reads to decide: the policy caches, the pod index, and the API server's
/// answer to whether a user holds a power.
pub trait Knowledge: Send + Sync + 'static {
    /// Every cached policy.
    fn policies(&self) -> Vec<Arc<ShutdownPolicy>>;
    /// Names and labels of the pods of one namespace.
    fn pods_in(&self, namespace: &str) -> Vec<PodLabels>;
    /// The review stamp for a policy the webhook admits; `None` until the key is loaded.
    fn stamp(&self, namespace: &str, name: &str, spec: &ShutdownPolicySpec) -> Option<String>;
    /// Whether `user` holds `power` over the pods of `namespace` (a SubjectAccessReview);
    /// `Err` when that cannot be known.
    fn may<'a>(
        &'a self,
        user: &'a UserInfo,
        namespace: &'a str,
        power: Power,
    ) -> BoxFuture<'a, Result<bool, String>>;
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    server::response(status, "application/json", Bytes::from(body))
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    server::response(status, "text/plain; charset=utf-8", Bytes::from(body))
}

/// Answers one review body sent to `path`.
pub async fn answer(
    path: &str,
    body: &[u8],
    knowledge: &dyn Knowledge,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    let resource = match path {
        names::MUTATE_PODS_PATH => "pods",
        names::VALIDATE_POLICIES_PATH | names::MUTATE_POLICIES_PATH => "shutdownpolicies",
        _ => return text(StatusCode::NOT_FOUND, format!("no webhook at {path}\n")),
    };
    let request: AdmissionRequest<DynamicObject> = match serde_json::from_slice::<
        AdmissionReview<DynamicObject>,
    >(body)
    .map_err(|e| e.to_string())
    .and_then(|review| {
        review.try_into().map_err(|e: kube::core::admission::ConvertAdmissionReviewError| e.to_string())
    }) {
        Ok(request) => request,
        Err(err) => {
            metrics.webhook_admissions.with_label_values(&[resource, Verdict::Error.as_str()]).inc();
            return text(StatusCode::BAD_REQUEST, format!("not an AdmissionReview request: {err}\n"));
        }
    };
    let policies = knowledge.policies();
    let (response, verdict) = if resource == "pods" {
        admission::review_pod(&request, &policies)
    } else {
        let namespace = request.namespace.clone().unwrap_or_default();
        let (response, verdict) =
            admission::review_policy(&request, &policies, &knowledge.pods_in(&namespace));
        let (response, verdict) = match response.allowed {
            true => authorize(&request, response, verdict, &namespace, knowledge).await,
            false => (response, verdict),
        };
        // Reviewed and allowed: the stamp that lets the operator honour its power-bearing fields.
        match (response.allowed, path) {
            (true, names::MUTATE_POLICIES_PATH) => {
                admission::stamp_policy(&request, response, |ns, name, spec| knowledge.stamp(ns, name, spec))
            }
            _ => (response, verdict),
        }
    };
    metrics.webhook_admissions.with_label_values(&[resource, verdict.as_str()]).inc();
    tracing::debug!(resource, verdict = verdict.as_str(), namespace = ?request.namespace, name = %request.name, "admission review");
    match serde_json::to_vec(&response.into_review()) {
        Ok(body) => json(StatusCode::OK, body),
        Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot write the review: {err}\n")),
    }
}

/// Refuses a policy whose author lacks a power it asks the operator to use for them.
async fn authorize(
    request: &AdmissionRequest<DynamicObject>,
    response: AdmissionResponse,
    verdict: Verdict,
    namespace: &str,
    knowledge: &dyn Knowledge,
) -> (AdmissionResponse, Verdict) {
    let asked = admission::requested_powers(request);
    // At once: the API server's webhook timeout covers all of them together.
    let answers = futures::future::join_all(
        asked.iter().map(|a| knowledge.may(&request.user_info, namespace, a.power)),
    )
    .await;
    let lacking: Vec<_> = asked
        .into_iter()
        .zip(answers)
        .filter(|(_, answer)| *answer != Ok(true))
        .map(|(asked, answer)| (asked, answer.err()))
        .collect();
    if lacking.is_empty() {
        return (response, verdict);
    }
    (admission::refuse_powers(response, &request.user_info, namespace, &lacking), Verdict::Rejected)
}

async fn handle(
    request: Request<Incoming>,
    knowledge: Arc<dyn Knowledge>,
    metrics: Metrics,
    body_timeout: std::time::Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::POST {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n".into()));
    }
    let path = request.uri().path().to_owned();
    // A body sent a byte at a time would hold its connection's slot for as long as it lasts.
    let body = match tokio::time::timeout(body_timeout, Limited::new(request.into_body(), MAX_BODY).collect())
        .await
    {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(err)) => {
            return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, format!("cannot read the body: {err}\n")));
        }
        Err(_) => {
            let mut response =
                text(StatusCode::REQUEST_TIMEOUT, format!("the body took more than {body_timeout:?}\n"));
            response.headers_mut().insert(header::CONNECTION, http::HeaderValue::from_static("close"));
            return Ok(response);
        }
    };
    // Reviews are CPU work on small objects; a policy's may also wait on SubjectAccessReviews.
    Ok(answer(&path, &body, knowledge.as_ref(), &metrics).await)
}

/// Serves HTTPS on `listener` until the process ends, within [`ServerLimits::WEBHOOK`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    knowledge: Arc<dyn Knowledge>,
    metrics: Metrics,
) {
    serve_with_limits(listener, tls, knowledge, metrics, ServerLimits::WEBHOOK).await;
}

/// Serves HTTPS on `listener` until the process ends, within `limits`.
pub async fn serve_with_limits(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    knowledge: Arc<dyn Knowledge>,
    metrics: Metrics,
    limits: ServerLimits,
) {
    let acceptor = TlsAcceptor::from(tls);
    server::accept_loop(listener, limits, "webhook", move |stream, peer| {
        let (acceptor, knowledge, metrics) = (acceptor.clone(), knowledge.clone(), metrics.clone());
        async move {
            // A client that connects and never finishes the handshake would hold its slot forever.
            let stream = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, timeout = ?limits.handshake_timeout, "webhook TLS handshake timed out");
                    return;
                }
            };
            let body_timeout = limits.header_read_timeout;
            let service =
                service_fn(move |request| handle(request, knowledge.clone(), metrics.clone(), body_timeout));
            if let Err(err) = server::serve_connection(TokioIo::new(stream), service, limits).await {
                tracing::debug!(%peer, error = %err, "webhook connection ended with an error");
            }
        }
    })
    .await;
}
