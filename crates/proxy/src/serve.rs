//! Accepting and serving connections on the inbound and outbound listeners.

use std::{net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use hyper::{
    server::conn::{http1, http2},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    time::Instant,
};

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
    response_body::ProxyBody,
};

/// A client that sends nothing for this long may speak a server-first protocol: treat as opaque.
const DETECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 limits, set here rather than left to hyper's and h2's defaults, which may change:
/// Streams one HTTP/2 client may have open at once.
const H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Streams a client opened and reset before the proxy took them, at once; past it, GOAWAY
/// (ENHANCE_YOUR_CALM). The rapid-reset guard (CVE-2023-44487); h2's own default.
const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the proxy had to reset for a client's errors before it sends GOAWAY; hyper's default.
const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// A request's header list, decoded, as for an HTTP/1 head: one that passes one path passes the
/// other. h2 also derives from it how many CONTINUATION frames one header block may take (5 at
/// 64 KiB), the CONTINUATION-flood guard.
const H2_MAX_HEADER_LIST_SIZE: u32 = MAX_HEAD_BYTES as u32;
/// What one client can make the proxy buffer: its request bodies up to the flow-control windows,
/// and up to this much of each response it does not read.
const H2_WINDOW: u32 = 1024 * 1024;
const H2_MAX_SEND_BUF_SIZE: usize = 400 * 1024;
/// A PING every so often finds a peer that went away without a word; one not answered within
/// the timeout closes the connection.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
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
    /// A connection with no request in flight for this long is closed (inbound).
    pub(crate) idle_timeout: Option<Duration>,
    /// Inbound: one permit per open connection (`--max-inbound-connections`).
    pub(crate) connection_slots: Option<Arc<Semaphore>>,
}

/// The requests in flight on one connection served by hyper, and since when there has been none,
/// for the idle timeout. A request counts until its response body has been sent.
#[derive(Debug)]
struct Activity(watch::Sender<ActivityState>);

#[derive(Clone, Copy, Debug)]
struct ActivityState {
    in_flight: usize,
    idle_since: Instant,
}

/// Counts a request in flight until dropped (with the response body it is moved into).
#[derive(Debug)]
struct Active(Arc<Activity>);

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self(watch::Sender::new(ActivityState { in_flight: 0, idle_since: Instant::now() })))
    }

    fn start(self: &Arc<Self>) -> Active {
        // Watchers are woken only when the connection stops or starts being idle.
        self.0.send_if_modified(|state| {
            state.in_flight += 1;
            state.in_flight == 1
        });
        Active(Arc::clone(self))
    }

    /// Resolves once no request has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        let mut rx = self.0.subscribe();
        loop {
            let since = rx.wait_for(|state| state.in_flight == 0).await.map(|state| state.idle_since);
            let Ok(since) = since else { return std::future::pending().await };
            tokio::select! {
                () = tokio::time::sleep_until(since + timeout) => {
                    let state = *rx.borrow();
                    if state.in_flight == 0 && state.idle_since == since {
                        return;
                    }
                }
                _ = rx.changed() => {}
            }
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.0.send_if_modified(|state| {
            state.in_flight -= 1;
            if state.in_flight == 0 {
                state.idle_since = Instant::now();
            }
            state.in_flight == 0
        });
    }
}

/// A response body that keeps its request counted as in flight until it has been sent.
#[derive(Debug)]
struct Tracked {
    body: ProxyBody,
    _active: Active,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
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
                    Ok((stream, _peer)) => Arc::clone(&self).admit(stream),
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
                                    Arc::clone(&self).admit(stream);
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

    /// Serves an accepted connection, or closes it at once when `--max-inbound-connections` are
    /// already open. Closing rather than leaving it in the backlog is what Envoy does past a
    /// listener's connection limit (`downstream_cx_overflow`), and what a meshed client's proxy
    /// handles best: it sees a failed connection at once and tries another endpoint, where a
    /// connection left in the backlog would look established and hang until its request timed
    /// out.
    fn admit(self: Arc<Self>, stream: TcpStream) {
        let permit = match &self.connection_slots {
            Some(slots) => match Arc::clone(slots).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    self.metrics
                        .refused
                        .with_label_values(&[self.direction.as_str(), "connection-limit"])
                        .inc();
                    tracing::debug!(
                        direction = self.direction.as_str(),
                        "--max-inbound-connections are open; closing a new one"
                    );
                    return;
                }
            },
            None => None,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(self.serve(stream, permit));
    }

    async fn serve(self: Arc<Self>, stream: TcpStream, _permit: Option<OwnedSemaphorePermit>) {
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
        let activity = Activity::new();
        let tracker = Arc::clone(&activity);
        let service = service_fn(move |req| {
            let active = tracker.start();
            let forwarder = Arc::clone(&forwarder);
            async move {
                let response = forwarder.handle(req).await?;
                Ok::<_, std::convert::Infallible>(response.map(|body| Tracked { body, _active: active }))
            }
        });
        // Never resolves without an idle timeout (outbound: the app's own connections).
        let idle = async {
            match self.idle_timeout {
                Some(timeout) => activity.idle_for(timeout).await,
                None => std::future::pending().await,
            }
        };
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
                self.drive(conn, graceful, first(self.lifecycle.linger_over(), idle)).await;
            }
            Protocol::Http2 => {
                let conn = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
                    .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
                    .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS)
                    .max_header_list_size(H2_MAX_HEADER_LIST_SIZE)
                    .initial_stream_window_size(H2_WINDOW)
                    .initial_connection_window_size(H2_WINDOW)
                    .max_send_buf_size(H2_MAX_SEND_BUF_SIZE)
                    .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
                    .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                // GOAWAY: open streams finish, new ones go to another connection.
                // Idle: GOAWAY too, so a request racing the close is refused unprocessed and the
                // client sends it again on a new connection.
                let graceful = Some(|conn: Pin<&mut http2::Connection<_, _, _>>| conn.graceful_shutdown());
                self.drive(conn, graceful, first(self.lifecycle.draining(), idle)).await;
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

/// Resolves when either future does.
async fn first(a: impl Future<Output = ()>, b: impl Future<Output = ()>) {
    tokio::select! {
        () = a => {}
        () = b => {}
    }
}
