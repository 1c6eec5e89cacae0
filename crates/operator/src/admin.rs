//! The operator's own HTTP server: `/live`, `/ready` (200 once every cache has synced) and
//! `/metrics`.

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use lameduck_api::names::paths;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    metrics::Metrics,
    server::{self, ServerLimits},
};

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    server::response(status, "text/plain; charset=utf-8", body.into())
}

/// Answers one request.
pub fn respond(method: &Method, path: &str, ready: bool, metrics: &Metrics) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match path {
        paths::LIVE => text(StatusCode::OK, "live\n"),
        paths::READY if ready => text(StatusCode::OK, "ready\n"),
        paths::READY => text(StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet\n"),
        paths::METRICS => text(StatusCode::OK, metrics.encode()),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves until the process ends, within [`ServerLimits::ADMIN`].
pub async fn serve(listener: TcpListener, ready: watch::Receiver<bool>, metrics: Metrics) {
    serve_with_limits(listener, ready, metrics, ServerLimits::ADMIN).await;
}

/// Serves until the process ends, within `limits` (plain HTTP: no handshake).
pub async fn serve_with_limits(
    listener: TcpListener,
    ready: watch::Receiver<bool>,
    metrics: Metrics,
    limits: ServerLimits,
) {
    let shared = Arc::new((ready, metrics));
    server::accept_loop(listener, limits, "admin", move |stream, peer| {
        let shared = shared.clone();
        async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let shared = shared.clone();
                async move {
                    let ready = *shared.0.borrow();
                    Ok::<_, Infallible>(respond(request.method(), request.uri().path(), ready, &shared.1))
                }
            });
            if let Err(err) = server::serve_connection(TokioIo::new(stream), service, limits).await {
                tracing::debug!(%peer, error = %err, "admin connection ended with an error");
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_sync_and_metrics_in_text_format() {
        let metrics = Metrics::new();
        assert_eq!(respond(&Method::GET, "/ready", false, &metrics).status(), 503);
        assert_eq!(respond(&Method::GET, "/ready", true, &metrics).status(), 200);
        assert_eq!(respond(&Method::GET, "/live", false, &metrics).status(), 200);
        assert_eq!(respond(&Method::GET, "/metrics", false, &metrics).status(), 200);
        assert_eq!(respond(&Method::POST, "/metrics", true, &metrics).status(), 405);
        assert_eq!(respond(&Method::GET, "/nope", true, &metrics).status(), 404);
    }
}
