//! Accepting and serving connections on the inbound and outbound listeners.

use std::{net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use hyper::{
    server::conn::{http1, http2},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use lameduck_proxy::framing::head::MAX_HEAD_BYTES;

use crate::{
    app::AppConnections,
    detect::{self, Protocol},
    forward::Forwarder,
    lifecycle::Lifecycle,
    metrics::{Direction, Metrics},
    opaque,
    prefixed::Prefixed,
    relay::{Ended, Relay},
};

/// A client that sends nothing for this long may speak a server-first protocol: treat as opaque.
const DETECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Streams one HTTP/2 client may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Accept failures (such as running out of file descriptors) are logged at most this often.
const ACCEPT_WARNING_INTERVAL: Duration = Duration::from_secs(5);
/// What every connection on one listener shares.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) direction: Direction,
    /// Inbound: the app and its connection budget, for opaque TCP. Outbound has no fixed
    /// destination.
    pub(crate) target: Option<(SocketAddr, Arc<AppConnections>)>,
    pub(crate) forwarder: Arc<Forwarder>,
    /// Inbound: the HTTP/1 relay, which hands what it does not carry to `forwarder`.
    pub(crate) relay: Option<Relay>,
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) metrics: Arc<Metrics>,
    /// Slowloris guard: an HTTP/1 request head must arrive within this time.
    pub(crate) header_read_timeout: Duration,
}

/// Decrements a gauge when the connection ends, however it ends.
struct GaugeGuard(prometheus::IntGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Listener {
    /// Accepts until draining starts (inbound) or forever (outbound keeps serving the app).
    pub(crate) async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        let stop_on_drain = self.direction == Direction::Inbound;
        let mut last_warning: Option<tokio::time::Instant> = None;
        let mut unreported = 0u64;
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(Arc::clone(&self).serve(stream));
                    }
                    Err(err) => {
                        // Out of file descriptors and the like: pause instead of spinning, and
                        // say so once every few seconds rather than on every retry.
                        unreported += 1;
                        if last_warning.is_none_or(|at| at.elapsed() >= ACCEPT_WARNING_INTERVAL) {
                            tracing::warn!(direction = self.direction.as_str(), error = %err, failures = unreported, "accept failed");
                            last_warning = Some(tokio::time::Instant::now());
                            unreported = 0;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = self.lifecycle.draining(), if stop_on_drain => {
                    // Connections whose handshake already completed wait in the kernel's backlog;
                    // closing the socket would reset them, so take them first and serve them.
                    let mut backlog = 0;
                    loop {
                        tokio::select! {
                            biased;
                            accepted = listener.accept() => match accepted {
                                Ok((stream, _peer)) => {
                                    let _ = stream.set_nodelay(true);
                                    tokio::spawn(Arc::clone(&self).serve(stream));
                                    backlog += 1;
                                }
                                Err(_) => break,
                            },
                            () = std::future::ready(()) => break,
                        }
                    }
                    // Dropping the listener closes the socket: new connections are refused.
                    tracing::info!(direction = self.direction.as_str(), backlog, "stopped accepting connections");
                    return;
                }
            }
        }
    }

    async fn serve(self: Arc<Self>, stream: TcpStream) {
        let _open = self.lifecycle.open();
        let direction = self.direction.as_str();
        let gauge = self.metrics.open_connections.with_label_values(&[direction]);
        gauge.inc();
        let _gauge = GaugeGuard(gauge);
        let accepted_while_draining = self.lifecycle.is_draining();

        let protocol = match detect::detect(&stream, DETECT_TIMEOUT).await {
            Ok(Some(protocol)) => protocol,
            Ok(None) => return,
            Err(err) => {
                tracing::debug!(direction, error = %err, "connection failed before it sent anything");
                return;
            }
        };
        self.metrics.connections.with_label_values(&[direction, protocol.as_str()]).inc();

        let forwarder = Arc::clone(&self.forwarder);
        let service = service_fn(move |req| Arc::clone(&forwarder).handle(req));
        match protocol {
            Protocol::Http1 => {
                let mut stream = stream;
                let prefix = match &self.relay {
                    Some(relay) => {
                        let ended = tokio::select! {
                            ended = relay.serve(&mut stream) => ended,
                            () = self.lifecycle.forced() => {
                                self.metrics.forced_closes.inc();
                                return;
                            }
                        };
                        match ended {
                            Ended::Closed => return,
                            Ended::Fallback(prefix) => prefix,
                        }
                    }
                    None => bytes::BytesMut::new(),
                };
                let io = TokioIo::new(Prefixed::new(prefix, stream));
                let accepted_while_draining = accepted_while_draining || self.lifecycle.is_draining();
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(self.header_read_timeout)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .serve_connection(io, service)
                    .with_upgrades();
                // A connection accepted while draining gets `Connection: close` on its response
                // rather than a graceful shutdown, which would close it before its first request.
                let graceful = (!accepted_while_draining)
                    .then_some(|conn: Pin<&mut http1::UpgradeableConnection<_, _>>| conn.graceful_shutdown());
                self.drive(conn, graceful, self.lifecycle.linger_over()).await;
            }
            Protocol::Http2 => {
                let conn = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
                    .serve_connection(TokioIo::new(stream), service);
                // GOAWAY: open streams finish, new ones go to another connection.
                let graceful = Some(|conn: Pin<&mut http2::Connection<_, _, _>>| conn.graceful_shutdown());
                self.drive(conn, graceful, self.lifecycle.draining()).await;
            }
            Protocol::Opaque => {
                match &self.target {
                    Some((target, slots)) => {
                        opaque::forward(
                            stream,
                            *target,
                            slots,
                            self.direction,
                            &self.lifecycle,
                            &self.metrics,
                        )
                        .await;
                    }
                    None => {
                        // Outbound has no destination for raw TCP: the app must use CONNECT.
                        self.metrics.refused.with_label_values(&[direction, "not-http"]).inc();
                        tracing::debug!("outbound connection is not HTTP; closing (use CONNECT for raw TCP)");
                    }
                }
            }
        }
    }

    /// Runs a connection to its end: graceful shutdown once `shutdown_when` resolves (for HTTP/1
    /// the drain's linger, for HTTP/2 the drain itself), dropped when forced.
    async fn drive<C, E>(
        &self,
        conn: C,
        graceful: Option<impl FnOnce(Pin<&mut C>)>,
        shutdown_when: impl Future<Output = ()>,
    ) where
        C: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        tokio::pin!(conn, shutdown_when);
        let mut graceful = graceful;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(direction = self.direction.as_str(), error = %err, "connection ended with an error");
                    }
                    return;
                }
                () = &mut shutdown_when, if graceful.is_some() => {
                    if let Some(start) = graceful.take() {
                        start(conn.as_mut());
                    }
                }
                () = self.lifecycle.forced() => {
                    self.metrics.forced_closes.inc();
                    return;
                }
            }
        }
    }
}
