//! The inbound HTTP/1 relay. Meshed clients mostly send plain keep-alive requests to the app; the
//! relay carries those with one parse per head, in the client connection's own task, over pooled
//! app connections, which costs far less CPU than a general server and client pair (see the
//! crate README's benchmark). Anything unusual (HTTP/1.0, upgrades, `Expect`, transfer codings
//! other than chunked, absolute-form targets) is handed to hyper's server together with the bytes
//! read so far, so it is served exactly as on the general path.

mod pool;

use std::{
    fmt, io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::{Buf, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

use lameduck_proxy::framing::{
    body::{ChunkedError, Remaining},
    head::{self, MAX_HEAD_BYTES, RequestHead, RequestPlan, ResponseHead, ResponsePlan},
};

use self::pool::{Checkout, CheckoutError, Pool, Upstream};
use crate::{
    app::{AppConnections, IdleConnections, LimitReached},
    lifecycle::Lifecycle,
    metrics::{Direction, Metrics, RequestMetrics},
    upstream::{CONNECT_TIMEOUT, POOL_IDLE_TIMEOUT, POOL_MAX_IDLE},
};

/// A client's read buffer starts this small (most request heads fit, and an allocation this
/// size is cheap) and doubles as a head needs.
const READ_CHUNK: usize = 1024;
/// Room made before each read while copying a body.
const COPY_CHUNK: usize = 16 * 1024;

/// Serves inbound HTTP/1 connections to one app.
#[derive(Debug)]
pub(crate) struct Relay {
    pool: Arc<Pool>,
    slots: Arc<AppConnections>,
    lifecycle: Arc<Lifecycle>,
    metrics: RequestMetrics,
    header_read_timeout: Duration,
    /// A keep-alive connection waiting this long for its next request is closed.
    idle_timeout: Duration,
}

/// How a client connection left the relay.
#[derive(Debug)]
pub(crate) enum Ended {
    Closed,
    /// Continue with the general HTTP/1 server, reading these bytes first.
    Fallback(BytesMut),
}

/// Why the app's answer could not be had.
#[derive(Debug)]
enum UpstreamError {
    /// No connection to the app: counted as refused rather than as a failed exchange.
    Connect(io::Error),
    /// No slot left for a new app connection: a 503.
    Limit(LimitReached),
    /// Closed before sending anything: a pooled connection the app had closed.
    Closed,
    Invalid(&'static str),
    Io(io::Error),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(err) | Self::Io(err) => err.fmt(f),
            Self::Limit(limit) => limit.fmt(f),
            Self::Closed => f.write_str("connection closed before a response"),
            Self::Invalid(why) => f.write_str(why),
        }
    }
}

/// A response relay that failed: before anything reached the client (a 502 is still possible)
/// or after (the client connection can only be closed).
enum Failed {
    BeforeResponse(UpstreamError),
    AfterResponse(io::Error),
    /// The client's body turned out malformed while it streamed to the app.
    Client(ChunkedError),
}

/// A body copy that failed, by side.
enum CopyError {
    Read(io::Error),
    Write(io::Error),
    Body(ChunkedError),
}

/// The end of a relayed response.
struct Relayed {
    upstream_reusable: bool,
    client_close: bool,
}

/// What each half of an exchange knows of the other.
#[derive(Debug, Default)]
struct Progress {
    /// The whole request has reached the app; an answer before that closes the client connection.
    sent: AtomicBool,
    /// Some of the response has reached the client, so the proxy can no longer answer itself.
    answering: AtomicBool,
}

/// Whether the client's request body has been read to its end when the app fails: if not, the
/// client connection cannot carry another request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientBody {
    Read,
    Unread,
}

/// Copies the rest of a body from `from` to `to`, reading through `carry`, which may already hold
/// some of it and keeps whatever follows it (a pipelined request, say).
async fn copy_body<R, W>(
    from: &mut R,
    carry: &mut BytesMut,
    to: &mut W,
    body: &mut Remaining,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let n = body.take(carry).map_err(CopyError::Body)?;
        if n > 0 {
            to.write_all(&carry[..n]).await.map_err(CopyError::Write)?;
            carry.advance(n);
        }
        if body.is_done() {
            return Ok(());
        }
        carry.reserve(COPY_CHUNK);
        match from.read_buf(carry).await {
            Ok(0) if body.ends_at_close() => return Ok(()),
            Ok(0) => return Err(CopyError::Read(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(err) => return Err(CopyError::Read(err)),
        }
    }
}

/// The app's side of one exchange: reads its answer to one request and relays it to the client.
struct Answer<'a, R> {
    relay: &'a Relay,
    upstream: &'a mut R,
    /// The upstream connection's read buffer, which may hold the start of the next head.
    ubuf: &'a mut BytesMut,
    request: &'a RequestHead,
    /// Each head rewritten for the client.
    back: &'a mut Vec<u8>,
    progress: &'a Progress,
}

impl<R: AsyncRead + Unpin> Answer<'_, R> {
    /// Reads one response head from the app and writes the client's version into `back`.
    async fn head(&mut self) -> Result<ResponseHead, UpstreamError> {
        loop {
            if !self.ubuf.is_empty() {
                // Decided when the answer comes: a drain that started meanwhile closes too.
                let close = self.request.close
                    || self.relay.lifecycle.is_draining()
                    || !self.progress.sent.load(Ordering::Relaxed);
                match head::response(self.ubuf, self.request.is_head, close, self.back) {
                    ResponsePlan::Relay(response) => return Ok(response),
                    ResponsePlan::Invalid(why) => return Err(UpstreamError::Invalid(why)),
                    ResponsePlan::Partial if self.ubuf.len() >= MAX_HEAD_BYTES => {
                        return Err(UpstreamError::Invalid("response head too large"));
                    }
                    ResponsePlan::Partial => {}
                }
            }
            self.ubuf.reserve(READ_CHUNK);
            match self.upstream.read_buf(self.ubuf).await {
                Ok(0) if self.ubuf.is_empty() => return Err(UpstreamError::Closed),
                Ok(0) => return Err(UpstreamError::Invalid("connection closed mid-head")),
                Ok(_) => {}
                Err(err)
                    if self.ubuf.is_empty()
                        && matches!(
                            err.kind(),
                            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                        ) =>
                {
                    return Err(UpstreamError::Closed);
                }
                Err(err) => return Err(UpstreamError::Io(err)),
            }
        }
    }

    /// Relays the response from its first head on: 1xx heads as they come, then the final one
    /// with its body.
    async fn relay<W: AsyncWrite + Unpin>(
        &mut self,
        mut response: ResponseHead,
        client: &mut W,
    ) -> Result<Relayed, Failed> {
        self.progress.answering.store(true, Ordering::Relaxed);
        while response.informational {
            client.write_all(self.back).await.map_err(Failed::AfterResponse)?;
            self.ubuf.advance(response.len);
            response = self.head().await.map_err(Failed::BeforeResponse)?;
        }
        self.ubuf.advance(response.len);
        let mut body = Remaining::new(response.framing);
        // A malformed start of the body is found before anything reaches the client: a 502.
        let taken = body
            .take(self.ubuf)
            .map_err(|err| Failed::BeforeResponse(UpstreamError::Invalid(err.reason())))?;
        self.relay.metrics.response(response.status);
        self.back.extend_from_slice(&self.ubuf[..taken]);
        self.ubuf.advance(taken);
        client.write_all(self.back).await.map_err(Failed::AfterResponse)?;
        if !body.is_done() {
            copy_body(self.upstream, self.ubuf, client, &mut body).await.map_err(|err| {
                Failed::AfterResponse(match err {
                    CopyError::Read(err) | CopyError::Write(err) => err,
                    CopyError::Body(err) => io::Error::new(io::ErrorKind::InvalidData, err),
                })
            })?;
        }
        // Bytes after the response would be a protocol error on the app's part: do not reuse.
        Ok(Relayed {
            upstream_reusable: !response.upstream_close && self.ubuf.is_empty(),
            client_close: response.client_close,
        })
    }
}

impl Relay {
    pub(crate) fn new(
        target: SocketAddr,
        lifecycle: Arc<Lifecycle>,
        metrics: &Metrics,
        header_read_timeout: Duration,
        idle_timeout: Duration,
        slots: Arc<AppConnections>,
    ) -> Self {
        let pool = Arc::new(Pool::new(
            target,
            POOL_MAX_IDLE,
            POOL_IDLE_TIMEOUT,
            CONNECT_TIMEOUT,
            Arc::clone(&slots),
        ));
        let idle: Arc<dyn IdleConnections> = pool.clone();
        slots.set_idle(Arc::downgrade(&idle));
        Self {
            pool,
            slots,
            lifecycle,
            metrics: RequestMetrics::new(metrics, Direction::Inbound),
            header_read_timeout,
            idle_timeout,
        }
    }

    /// Serves a client connection until it closes or needs the general server.
    pub(crate) async fn serve(&self, client: &mut TcpStream) -> Ended {
        let idle = AtomicBool::new(false);
        let exchanges = self.exchanges(client, &idle);
        tokio::pin!(exchanges);
        // Once the drain's linger is over, a connection waiting for its next request is closed.
        // One still busy gets `Connection: close` on its response and ends after it.
        let result = tokio::select! {
            biased;
            result = &mut exchanges => result,
            () = self.lifecycle.linger_over() => {
                if idle.load(Ordering::Relaxed) {
                    return Ended::Closed;
                }
                exchanges.await
            }
        };
        result.unwrap_or_else(|err| {
            tracing::debug!(error = %err, "inbound HTTP/1 connection ended with an error");
            Ended::Closed
        })
    }

    async fn exchanges(&self, client: &mut TcpStream, idle: &AtomicBool) -> io::Result<Ended> {
        // Request bytes from the client; the heads for the app and for the client.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut back = Vec::new();
        loop {
            if buf.is_empty() {
                // Hold no read buffer while idle, nor a large head buffer (one that carried the
                // start of a big body), so idle keep-alive clients cost little memory.
                buf = BytesMut::new();
                for head in [&mut out, &mut back] {
                    if head.capacity() > READ_CHUNK {
                        *head = Vec::new();
                    }
                }
                idle.store(true, Ordering::Relaxed);
                // Closing races with a request the client may be sending, so the timeout is long
                // (see --inbound-idle-timeout): a client's own pool normally closes first.
                match tokio::time::timeout(self.idle_timeout, client.readable()).await {
                    Ok(readable) => readable?,
                    Err(_) => {
                        tracing::debug!(
                            "inbound keep-alive connection idle past --inbound-idle-timeout; closing"
                        );
                        let _ = client.shutdown().await;
                        return Ok(Ended::Closed);
                    }
                }
                idle.store(false, Ordering::Relaxed);
            }
            let request = match self.read_head(client, &mut buf, &mut out).await? {
                Ok(request) => request,
                Err(ended) => return Ok(ended),
            };
            buf.advance(request.len);
            if !self.exchange(client, &mut buf, &mut out, &mut back, &request).await? {
                let _ = client.shutdown().await;
                return Ok(Ended::Closed);
            }
        }
    }

    /// Reads a request head, which must be complete within the header read timeout (the
    /// slowloris guard). `Err(ended)`: no request to relay on this connection.
    async fn read_head(
        &self,
        client: &mut TcpStream,
        buf: &mut BytesMut,
        out: &mut Vec<u8>,
    ) -> io::Result<Result<RequestHead, Ended>> {
        let deadline = Instant::now() + self.header_read_timeout;
        loop {
            if !buf.is_empty() {
                let reject = match head::request(buf, out) {
                    RequestPlan::Relay(request) => return Ok(Ok(request)),
                    RequestPlan::Fallback => return Ok(Err(Ended::Fallback(std::mem::take(buf)))),
                    RequestPlan::Reject(status, why) => Some((status, why)),
                    RequestPlan::Partial if buf.len() >= MAX_HEAD_BYTES => {
                        Some((431, "request head too large"))
                    }
                    RequestPlan::Partial => None,
                };
                if let Some((status, why)) = reject {
                    tracing::debug!(status, why, "request refused; closing");
                    self.metrics.response(status);
                    head::local_response(out, status, why, true);
                    let _ = client.write_all(out).await;
                    let _ = client.shutdown().await;
                    return Ok(Err(Ended::Closed));
                }
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 2 {
                buf.reserve(buf.capacity().max(READ_CHUNK));
            }
            match tokio::time::timeout_at(deadline, client.read_buf(buf)).await {
                Ok(Ok(0)) => return Ok(Err(Ended::Closed)),
                Ok(Ok(_)) => {}
                Ok(Err(err)) => return Err(err),
                Err(_) => {
                    tracing::debug!("request head not complete within the header read timeout; closing");
                    return Ok(Err(Ended::Closed));
                }
            }
        }
    }

    /// One request and its response. `Ok(true)`: the client connection carries another.
    async fn exchange(
        &self,
        client: &mut TcpStream,
        buf: &mut BytesMut,
        out: &mut Vec<u8>,
        back: &mut Vec<u8>,
        request: &RequestHead,
    ) -> io::Result<bool> {
        let _in_flight = self.metrics.start();
        // Whatever of the body has arrived goes with the head, in one write.
        let mut body = Remaining::new(request.framing);
        let taken = match body.take(buf) {
            Ok(taken) => taken,
            Err(err) => {
                // Nothing of this request has left the proxy.
                tracing::debug!(error = %err, "request refused; closing");
                head::local_response(back, 400, err.reason(), true);
                self.metrics.response(400);
                client.write_all(back).await?;
                return Ok(false);
            }
        };
        out.extend_from_slice(&buf[..taken]);
        buf.advance(taken);
        if body.is_done() {
            self.exchange_whole(client, out, back, request).await
        } else {
            self.exchange_streaming(client, buf, out, back, request, body).await
        }
    }

    /// The common case: the whole request is in `out`. When a reused app connection turns out
    /// closed, a replayable request (idempotent, no body) is sent again on a new connection;
    /// anything else gets a 502, since the app may have acted on it.
    async fn exchange_whole(
        &self,
        client: &mut TcpStream,
        out: &[u8],
        back: &mut Vec<u8>,
        request: &RequestHead,
    ) -> io::Result<bool> {
        let progress = Progress { sent: AtomicBool::new(true), ..Progress::default() };
        let mut allow_reuse = true;
        let (mut upstream, response) = loop {
            let (mut upstream, reused) = match self.send_head(out, allow_reuse, request.replayable).await {
                Ok(sent_to) => sent_to,
                Err(err) => return self.bad_gateway(client, back, request, &err, ClientBody::Read).await,
            };
            let Upstream { stream, buf: ubuf, .. } = &mut upstream;
            let mut answer =
                Answer { relay: self, upstream: stream, ubuf, request, back, progress: &progress };
            match answer.head().await {
                Ok(response) => break (upstream, response),
                Err(UpstreamError::Closed) if reused && request.replayable => allow_reuse = false,
                Err(err) => return self.bad_gateway(client, back, request, &err, ClientBody::Read).await,
            }
        };
        let Upstream { stream, buf: ubuf, .. } = &mut upstream;
        let mut answer = Answer { relay: self, upstream: stream, ubuf, request, back, progress: &progress };
        match answer.relay(response, client).await {
            Ok(relayed) => {
                if relayed.upstream_reusable {
                    self.pool.put(upstream);
                }
                Ok(!relayed.client_close)
            }
            Err(Failed::BeforeResponse(err)) => {
                self.bad_gateway(client, back, request, &err, ClientBody::Read).await
            }
            Err(Failed::AfterResponse(err)) => Err(err),
            // A whole request's body was checked before it was sent; nothing to answer here.
            Err(Failed::Client(err)) => Err(io::Error::new(io::ErrorKind::InvalidData, err)),
        }
    }

    /// A body still arriving from the client: it is copied to the app while the response is
    /// read, so an app that answers early (a 413, say) is relayed rather than deadlocked.
    async fn exchange_streaming(
        &self,
        client: &mut TcpStream,
        buf: &mut BytesMut,
        out: &[u8],
        back: &mut Vec<u8>,
        request: &RequestHead,
        mut body: Remaining,
    ) -> io::Result<bool> {
        let mut upstream = match self.send_head(out, true, false).await {
            Ok((upstream, _)) => upstream,
            Err(err) => return self.bad_gateway(client, back, request, &err, ClientBody::Unread).await,
        };
        let progress = Progress::default();
        let result = {
            let (mut client_read, mut client_write) = client.split();
            let Upstream { stream, buf: ubuf, .. } = &mut upstream;
            let (mut upstream_read, mut upstream_write) = stream.split();
            let send = async {
                let result = copy_body(&mut client_read, buf, &mut upstream_write, &mut body).await;
                progress.sent.store(result.is_ok(), Ordering::Relaxed);
                result
            };
            let mut answer = Answer {
                relay: self,
                upstream: &mut upstream_read,
                ubuf,
                request,
                back: &mut *back,
                progress: &progress,
            };
            let respond = async {
                let response = answer.head().await.map_err(Failed::BeforeResponse)?;
                answer.relay(response, &mut client_write).await
            };
            tokio::pin!(send, respond);
            let mut sending = true;
            loop {
                tokio::select! {
                    copied = &mut send, if sending => {
                        sending = false;
                        // The app may stop reading and still answer (413 and close); the client
                        // going away or sending a broken body ends the exchange.
                        match copied {
                            Err(CopyError::Read(_)) => break None,
                            Err(CopyError::Body(err)) => break Some(Err(Failed::Client(err))),
                            Ok(()) | Err(CopyError::Write(_)) => {}
                        }
                    }
                    relayed = &mut respond => break Some(relayed),
                }
            }
        };
        let complete = progress.sent.load(Ordering::Relaxed);
        match result {
            None => {
                tracing::debug!("client went away mid-request");
                Ok(false)
            }
            Some(Err(Failed::Client(err))) => {
                // What the app has of this request ends mid-message, and its connection is
                // dropped here: it never sees bytes after the malformed ones.
                tracing::debug!(error = %err, "malformed request body; closing");
                if !progress.answering.load(Ordering::Relaxed) {
                    head::local_response(back, 400, err.reason(), true);
                    self.metrics.response(400);
                    client.write_all(back).await?;
                }
                Ok(false)
            }
            Some(Ok(relayed)) => {
                if relayed.upstream_reusable && complete {
                    self.pool.put(upstream);
                }
                // A body the app did not wait for is still arriving: only closing skips it.
                Ok(!relayed.client_close && complete)
            }
            Some(Err(Failed::BeforeResponse(err))) => {
                self.bad_gateway(client, back, request, &err, ClientBody::Unread).await
            }
            Some(Err(Failed::AfterResponse(err))) => Err(err),
        }
    }

    /// Checks out a connection and writes `out` to it. When a reused one fails the write (the app
    /// had closed it), a `replayable` request moves to a new connection. `Ok((upstream, reused))`.
    async fn send_head(
        &self,
        out: &[u8],
        mut allow_reuse: bool,
        replayable: bool,
    ) -> Result<(Upstream, bool), UpstreamError> {
        loop {
            let Checkout { mut upstream, reused } =
                self.pool.checkout(allow_reuse).await.map_err(|err| match err {
                    CheckoutError::Limit(limit) => UpstreamError::Limit(limit),
                    CheckoutError::Connect(err) => UpstreamError::Connect(err),
                })?;
            match upstream.stream.write_all(out).await {
                Ok(()) => return Ok((upstream, reused)),
                Err(_) if reused && replayable => allow_reuse = false,
                Err(err) => return Err(UpstreamError::Io(err)),
            }
        }
    }

    /// Answers 502 for an app that could not be reached or did not answer properly, or 503 when
    /// the app connection budget is spent. `Ok(true)`: the client connection carries another
    /// request.
    async fn bad_gateway(
        &self,
        client: &mut TcpStream,
        back: &mut Vec<u8>,
        request: &RequestHead,
        err: &UpstreamError,
        body: ClientBody,
    ) -> io::Result<bool> {
        let target = self.pool.target();
        tracing::debug!(direction = "inbound", %target, error = %err, "upstream request failed");
        let close = body == ClientBody::Unread || request.close || self.lifecycle.is_draining();
        let status = match err {
            UpstreamError::Limit(limit) => {
                self.slots.refused();
                head::local_response(back, 503, &format!("lameduck-proxy: {limit}; try again later"), close);
                503
            }
            _ => {
                let counter = match err {
                    UpstreamError::Connect(_) => &self.metrics.refused_upstream,
                    _ => &self.metrics.upstream_errors,
                };
                counter.inc();
                head::local_response(
                    back,
                    502,
                    &format!("lameduck-proxy: {target} unavailable: {err}"),
                    close,
                );
                502
            }
        };
        self.metrics.response(status);
        client.write_all(back).await?;
        Ok(!close)
    }
}
