//! What the operator's two HTTP servers (the admission webhook and the admin server) share, so
//! that clients which connect and then stall cannot use them up: a cap on open connections,
//! deadlines for the TLS handshake and for each request head, and a pause after a failed accept
//! (out of file descriptors, say) instead of a busy loop that would log at full speed.

use std::{error::Error as StdError, future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::{body::Incoming, service::Service};
use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, Semaphore},
};

/// The error a connection ends with, as hyper reports it.
pub type ConnectionError = Box<dyn StdError + Send + Sync>;

/// How much one server lets its clients hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections served at once. The next one waits in the kernel's listen backlog until one
    /// of them closes, so a flood costs backlog slots, not memory or file descriptors.
    pub max_connections: usize,
    /// From accept to the end of the TLS handshake (TLS servers only).
    pub handshake_timeout: Duration,
    /// From the start of the connection (after TLS) to the end of the first request head, and on
    /// HTTP/1 from the end of one response to the end of the next request head (which also
    /// closes idle keep-alive connections after this long). The webhook gives a request's body
    /// as long again, from the end of its head.
    pub header_read_timeout: Duration,
}

impl ServerLimits {
    /// The admission webhook: the API server's calls, from every API server replica, several at
    /// once during a rollout. It gives up on a webhook after 10 s by default, so a client still
    /// handshaking or sending its head after 10 s is not the API server.
    pub const WEBHOOK: Self = Self {
        max_connections: 1024,
        handshake_timeout: Duration::from_secs(10),
        header_read_timeout: Duration::from_secs(10),
    };

    /// The admin server: kubelet probes and a few Prometheus scrapers, each a short request.
    pub const ADMIN: Self = Self {
        max_connections: 64,
        handshake_timeout: Duration::from_secs(5),
        header_read_timeout: Duration::from_secs(5),
    };
}

/// The first pause after a failed accept.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest pause between failed accepts: long enough not to spin, short enough to pick up
/// again soon after file descriptors are freed.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A response with `status`, a `Content-Type` and `body`. Built from parts, so that no value can
/// make it fail.
pub fn response(
    status: http::StatusCode,
    content_type: &'static str,
    body: bytes::Bytes,
) -> Response<http_body_util::Full<bytes::Bytes>> {
    let mut response = Response::new(http_body_util::Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

/// The pause after a failed accept, given the pause after the previous one of the same streak
/// (`None` for the first failure): doubling from [`ACCEPT_BACKOFF_MIN`] to [`ACCEPT_BACKOFF_MAX`].
pub fn next_accept_backoff(previous: Option<Duration>) -> Duration {
    match previous {
        None => ACCEPT_BACKOFF_MIN,
        Some(previous) => previous.saturating_mul(2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX),
    }
}

/// Accepts connections on `listener` until the process ends, at most `limits.max_connections`
/// at a time, and runs `handle` on each in a task of its own.
///
/// The slot is taken before `accept`, so a connection over the cap is not accepted at all and
/// waits in the backlog; it is given back when `handle`'s future ends.
pub async fn accept_loop<H, Fut>(listener: TcpListener, limits: ServerLimits, name: &'static str, handle: H)
where
    H: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // The pause after the last failure of the current streak of failed accepts, and their count.
    let mut backoff: Option<Duration> = None;
    let mut failures: u64 = 0;
    loop {
        // The semaphore is never closed; should it be, stop accepting rather than panic.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        match listener.accept().await {
            Ok((stream, peer)) => {
                if backoff.take().is_some() {
                    tracing::info!(server = name, failures, "accepting connections again");
                    failures = 0;
                }
                let connection = handle(stream, peer);
                tokio::spawn(async move {
                    connection.await;
                    drop(slot);
                });
            }
            Err(err) => {
                // Once per streak: when file descriptors run out, every accept fails.
                if backoff.is_none() {
                    tracing::warn!(server = name, error = %err, "accept failed; retrying with a backoff up to 1s");
                }
                failures += 1;
                let pause = next_accept_backoff(backoff);
                backoff = Some(pause);
                drop(slot);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 (whichever the client speaks) on one connection, with
/// `limits.header_read_timeout` applied to the first request head of either protocol and, by
/// hyper, to every later HTTP/1 request head.
///
/// hyper's own HTTP/1 timeout does not cover the bytes read to tell the protocols apart, nor
/// HTTP/2, so the first request is also raced against a deadline here. Later HTTP/2 requests are
/// not: an API server keeps its HTTP/2 connections open between calls.
pub async fn serve_connection<I, S, B>(io: I, service: S, limits: ServerLimits) -> Result<(), ConnectionError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<ConnectionError>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<ConnectionError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    // Pings find a peer that vanished without closing (a node gone), whose connection would
    // otherwise hold its slot for good.
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(H2_KEEP_ALIVE_INTERVAL);
    let first_request = Arc::new(Notify::new());
    let connection =
        builder.serve_connection(io, FirstRequest { inner: service, seen: first_request.clone() });
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result,
        () = first_request.notified() => {}
        () = tokio::time::sleep(limits.header_read_timeout) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no request head within {:?}", limits.header_read_timeout),
            )
            .into());
        }
    }
    connection.await
}

/// How often an idle HTTP/2 connection is pinged; hyper closes it when a ping goes unanswered
/// for 20 s.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// A service that announces its first request: hyper calls the service once a request head has
/// been read.
struct FirstRequest<S> {
    inner: S,
    seen: Arc<Notify>,
}

impl<S, R> Service<R> for FirstRequest<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, request: R) -> Self::Future {
        // A stored permit: the deadline's waiter may not be polled yet, or any more.
        self.seen.notify_one();
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_from_10ms_to_1s() {
        let mut pause = None;
        let mut pauses = Vec::new();
        for _ in 0..10 {
            let next = next_accept_backoff(pause);
            pauses.push(next.as_millis());
            pause = Some(next);
        }
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
    }

    #[test]
    fn accept_backoff_stays_in_bounds_for_any_previous_pause() {
        assert_eq!(next_accept_backoff(Some(Duration::ZERO)), ACCEPT_BACKOFF_MIN);
        assert_eq!(next_accept_backoff(Some(Duration::from_millis(600))), ACCEPT_BACKOFF_MAX);
        assert_eq!(next_accept_backoff(Some(Duration::MAX)), ACCEPT_BACKOFF_MAX);
    }
}
