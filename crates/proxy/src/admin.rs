//! The admin server: `/ready`, `/live`, `/metrics`, `/shutdown`, answering as Linkerd's does.

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use lameduck_api::{admin, names::paths};
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
};

use crate::{lifecycle::Lifecycle, metrics::Metrics, settings::Settings};

/// What the admin endpoints read and the one thing they can do: ask for a shutdown.
#[derive(Debug)]
pub(crate) struct Admin {
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) settings: watch::Receiver<Settings>,
    /// Set once every listener is bound.
    pub(crate) listening: AtomicBool,
    pub(crate) shutdown: mpsc::Sender<()>,
    /// Slowloris guard for admin clients too.
    pub(crate) header_read_timeout: std::time::Duration,
}

/// Loopback, including IPv4-mapped IPv6 (`::ffff:127.0.0.1`), as a dual-stack listener sees it.
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

impl Admin {
    pub(crate) fn ready(&self) -> bool {
        self.listening.load(Ordering::Acquire) && !self.lifecycle.is_draining()
    }

    /// Answers one request; `peer` decides whether `/shutdown` is allowed. The flag says the
    /// request asked for a shutdown, which the caller starts once the answer has been sent.
    pub(crate) fn respond(
        &self,
        method: &Method,
        path: &str,
        peer: SocketAddr,
    ) -> (Response<Full<Bytes>>, bool) {
        let response = match path {
            paths::READY if self.ready() => text(StatusCode::OK, "ready\n"),
            paths::READY => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            paths::LIVE => text(StatusCode::OK, "live\n"),
            paths::METRICS => {
                if let Some(started) = self.lifecycle.drain_started() {
                    self.metrics.drain_seconds.set(started.elapsed().as_secs_f64());
                }
                let mut response = Response::new(Full::new(Bytes::from(self.metrics.render())));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
                response
            }
            paths::SHUTDOWN if !self.settings.borrow().enable_shutdown_endpoint => {
                text(StatusCode::NOT_FOUND, "not found\n")
            }
            paths::SHUTDOWN if method != Method::POST => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            paths::SHUTDOWN if !is_loopback(peer.ip()) => {
                text(StatusCode::FORBIDDEN, "Requests are only permitted from localhost.\n")
            }
            paths::SHUTDOWN => {
                tracing::info!(%peer, "shutdown requested");
                let mut response =
                    Response::new(Full::new(Bytes::from(format!("{}\n", admin::ACCEPTED_BODY))));
                response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                // Closing makes hyper finish writing, so the drain starts after the client has its answer.
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                return (response, true);
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        };
        (response, false)
    }

    /// Serves the admin listener until the process exits.
    pub(crate) async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admin = Arc::clone(&self);
            let header_read_timeout = self.header_read_timeout;
            tokio::spawn(async move {
                let requested = Arc::new(AtomicBool::new(false));
                let service = service_fn({
                    let admin = Arc::clone(&admin);
                    let requested = Arc::clone(&requested);
                    move |req: Request<Incoming>| {
                        let (response, shutdown) = admin.respond(req.method(), req.uri().path(), peer);
                        if shutdown {
                            requested.store(true, Ordering::Release);
                        }
                        async move { Ok::<_, Infallible>(response) }
                    }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read_timeout)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(err) = conn.await {
                    tracing::debug!(error = %err, "admin connection ended with an error");
                }
                if requested.load(Ordering::Acquire) {
                    // A full channel means a shutdown is already on its way.
                    let _ = admin.shutdown.try_send(());
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn admin(enabled: bool) -> (Admin, mpsc::Receiver<()>) {
        let (shutdown, rx) = mpsc::channel(1);
        let settings = watch::channel(Settings {
            shutdown_grace_period: Duration::from_secs(1),
            enable_shutdown_endpoint: enabled,
        })
        .1;
        let admin = Admin {
            lifecycle: Lifecycle::new(),
            metrics: Arc::new(Metrics::new()),
            settings,
            listening: AtomicBool::new(true),
            shutdown,
            header_read_timeout: Duration::from_secs(1),
        };
        (admin, rx)
    }

    const LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5555);

    fn status(answer: (Response<Full<Bytes>>, bool)) -> (u16, bool) {
        (answer.0.status().as_u16(), answer.1)
    }

    #[test]
    fn shutdown_answers_like_linkerd() {
        let (disabled, _) = admin(false);
        assert_eq!(status(disabled.respond(&Method::POST, "/shutdown", LOCAL)), (404, false));

        let (enabled, _) = admin(true);
        assert_eq!(status(enabled.respond(&Method::GET, "/shutdown", LOCAL)), (405, false));
        let remote: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        assert_eq!(status(enabled.respond(&Method::POST, "/shutdown", remote)), (403, false));
        let (response, shutdown) = enabled.respond(&Method::POST, "/shutdown", LOCAL);
        assert_eq!((response.status().as_u16(), shutdown), (200, true));
        assert_eq!(response.headers()[header::CONNECTION], "close");
    }

    #[test]
    fn ipv4_mapped_loopback_counts_as_loopback() {
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("127.3.4.5".parse().unwrap()));
        assert!(!is_loopback("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!is_loopback("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn ready_flips_when_draining() {
        let (admin, _) = admin(true);
        assert_eq!(status(admin.respond(&Method::GET, "/ready", LOCAL)), (200, false));
        admin.lifecycle.start_drain();
        assert_eq!(status(admin.respond(&Method::GET, "/ready", LOCAL)), (503, false));
        assert_eq!(status(admin.respond(&Method::GET, "/live", LOCAL)), (200, false));
    }
}
