//! Connections to the app, as the inbound side opens them: one budget for all of them
//! (`--max-app-connections`), and the one HTTP/2 connection every inbound HTTP/2 request shares.
//!
//! Clients choose `Host` and `:authority`, so nothing a client sends may decide how many
//! connections reach the app: the relay's pool, hyper's HTTP/1 client and the HTTP/2 connection
//! all go to the one `--inbound-target`, and each connection holds a slot of the budget while it
//! is open, idle ones included.

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, OnceLock, Weak},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Empty};
use hyper::{body::Incoming, client::conn::http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

use crate::metrics::Metrics;

/// What goes to the app: the client's body, or none at all for a request kept to send again.
pub(crate) type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// How many times a request that never left the proxy moves to a new connection: an app that
/// keeps closing connections at once gets a 502 rather than a loop.
const MAX_UNSENT_RETRIES: usize = 2;

/// The app connection budget is spent: the request gets a 503 made by the proxy.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("{max} connections to the app are open, the --max-app-connections limit")]
pub(crate) struct LimitReached {
    max: usize,
}

/// Something that holds idle app connections and can close one to make room.
pub(crate) trait IdleConnections: Send + Sync {
    /// Closes the oldest idle connection; `false` when there was none.
    fn close_oldest(&self) -> bool;
}

/// The budget of app connections, shared by every way inbound traffic reaches the app.
pub(crate) struct AppConnections {
    slots: Arc<Semaphore>,
    max: usize,
    /// `lameduck_proxy_app_connections`.
    open: prometheus::IntGauge,
    /// `refused_connections_total{direction="inbound",reason="app-connection-limit"}`.
    refused: prometheus::IntCounter,
    /// The relay's pool: its idle connections are closed before a request is refused.
    idle: OnceLock<Weak<dyn IdleConnections>>,
}

impl std::fmt::Debug for AppConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConnections").field("max", &self.max).finish_non_exhaustive()
    }
}

/// One open app connection's share of the budget, given back when the connection is dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    open: prometheus::IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl AppConnections {
    pub(crate) fn new(max: usize, metrics: &Metrics) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            open: metrics.app_connections.clone(),
            refused: metrics.refused.with_label_values(&["inbound", "app-connection-limit"]),
            idle: OnceLock::new(),
        })
    }

    /// Lets [`Self::take`] close one of `idle`'s connections rather than refuse a request.
    pub(crate) fn set_idle(&self, idle: Weak<dyn IdleConnections>) {
        let _ = self.idle.set(idle);
    }

    /// A slot for a new app connection. An idle connection is closed to make room if needed: an
    /// idle connection in one pool must not starve a request that needs another kind.
    pub(crate) fn take(&self) -> Result<Slot, LimitReached> {
        let permit = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let idle = self.idle.get().and_then(Weak::upgrade);
                if !idle.is_some_and(|idle| idle.close_oldest()) {
                    return Err(LimitReached { max: self.max });
                }
                Arc::clone(&self.slots).try_acquire_owned().map_err(|_| LimitReached { max: self.max })?
            }
        };
        self.open.inc();
        Ok(Slot { _permit: permit, open: self.open.clone() })
    }

    /// Counts a request or connection refused for want of a slot.
    pub(crate) fn refused(&self) {
        self.refused.inc();
    }
}

/// Whether `err`, or one of its causes, is the budget being spent.
pub(crate) fn limit_reached(err: &(dyn std::error::Error + 'static)) -> Option<LimitReached> {
    let mut source = Some(err);
    while let Some(err) = source {
        if let Some(limit) = err.downcast_ref::<LimitReached>() {
            return Some(*limit);
        }
        // `transparent` hides the limit from the chain of causes.
        if let Some(H2Error::Limit(limit)) = err.downcast_ref::<H2Error>() {
            return Some(*limit);
        }
        source = err.source();
    }
    None
}

/// Why an HTTP/2 request could not be had from the app.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H2Error {
    #[error(transparent)]
    Limit(#[from] LimitReached),
    #[error("connect: {0}")]
    Connect(#[source] Arc<io::Error>),
    #[error("HTTP/2 handshake: {0}")]
    Handshake(#[source] Arc<hyper::Error>),
    #[error(transparent)]
    Request(hyper::Error),
}

impl H2Error {
    /// No connection to the app could be had: counted as refused rather than as a failed exchange.
    pub(crate) const fn is_connect(&self) -> bool {
        !matches!(self, Self::Request(_))
    }
}

/// The one HTTP/2 connection inbound HTTP/2 requests share, to `--inbound-target`, whatever
/// `:authority` each request carries (the app still sees it). A new one is opened when the app
/// closes it or sends GOAWAY.
pub(crate) struct AppH2 {
    target: SocketAddr,
    connect_timeout: Duration,
    slots: Arc<AppConnections>,
    current: tokio::sync::Mutex<Current>,
}

impl std::fmt::Debug for AppH2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppH2").field("target", &self.target).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Current {
    sender: Option<http2::SendRequest<UpstreamBody>>,
    /// The last attempt to connect, when it failed: requests that waited for it share its error
    /// rather than each waiting out a connect timeout of its own in turn.
    failed: Option<(Instant, H2Error)>,
}

impl Clone for H2Error {
    fn clone(&self) -> Self {
        match self {
            Self::Limit(limit) => Self::Limit(*limit),
            Self::Connect(err) => Self::Connect(Arc::clone(err)),
            Self::Handshake(err) => Self::Handshake(Arc::clone(err)),
            // Not stored: a request's own failure is never shared.
            Self::Request(_) => Self::Connect(Arc::new(io::Error::other("connection failed"))),
        }
    }
}

impl AppH2 {
    pub(crate) fn new(target: SocketAddr, connect_timeout: Duration, slots: Arc<AppConnections>) -> Self {
        Self { target, connect_timeout, slots, current: tokio::sync::Mutex::new(Current::default()) }
    }

    /// Sends a request. One that never left the proxy (still queued for a connection that
    /// closed) comes back from hyper whole, body included, and goes on a new connection: the app
    /// has seen nothing of it, whatever its method.
    pub(crate) async fn request(&self, req: Request<UpstreamBody>) -> Result<Response<Incoming>, H2Error> {
        let mut req = req;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut sender = self.sender().await?;
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(response),
                Err(mut err) => match err.take_message() {
                    Some(unsent) if attempt <= MAX_UNSENT_RETRIES => {
                        tracing::debug!(error = %err.error(), "request not sent before its app connection closed; sending it on a new one");
                        req = unsent;
                    }
                    _ => return Err(H2Error::Request(err.into_error())),
                },
            }
        }
    }

    /// The open connection, or a new one. One at a time connects; the others wait for it.
    async fn sender(&self) -> Result<http2::SendRequest<UpstreamBody>, H2Error> {
        let asked = Instant::now();
        let mut current = self.current.lock().await;
        if let Some(sender) = current.sender.as_ref().filter(|sender| !sender.is_closed()) {
            return Ok(sender.clone());
        }
        current.sender = None;
        if let Some((at, err)) = &current.failed
            && *at >= asked
        {
            return Err(err.clone());
        }
        match self.connect().await {
            Ok(sender) => {
                current.failed = None;
                current.sender = Some(sender.clone());
                Ok(sender)
            }
            Err(err) => {
                current.failed = Some((Instant::now(), err.clone()));
                Err(err)
            }
        }
    }

    async fn connect(&self) -> Result<http2::SendRequest<UpstreamBody>, H2Error> {
        let slot = self.slots.take()?;
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.target))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
            .and_then(|connected| connected)
            .map_err(|err| H2Error::Connect(Arc::new(err)))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|err| H2Error::Handshake(Arc::new(err)))?;
        tokio::spawn(async move {
            // The slot is the connection's for as long as it is open.
            let _slot = slot;
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "app HTTP/2 connection ended with an error");
            }
        });
        Ok(sender)
    }
}
