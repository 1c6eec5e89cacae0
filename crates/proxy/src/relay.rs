//! The inbound HTTP/1 relay. Meshed clients mostly send plain keep-alive requests to the app; the
//! relay carries those with one parse per head, in the client connection's own task, over pooled
//! app connections, which costs far less CPU than a general server and client pair (see the
//! crate README's benchmark). Anything unusual (HTTP/1.0, upgrades, `Expect`, transfer codings
//! other than chunked, absolute-form targets) is handed to hyper's server together with the bytes
//! read so far, so it is served exactly as on the general path.

mod body;
mod head;
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

use self::{
    body::{ChunkedError, Remaining},
    head::{RequestHead, RequestPlan, ResponseHead, ResponsePlan},
    pool::{Checkout, Pool, Upstream},
};
use crate::{
    forward::{CONNECT_TIMEOUT, POOL_IDLE_TIMEOUT, POOL_MAX_IDLE, RequestMetrics},
    lifecycle::Lifecycle,
    metrics::{Direction, Metrics},
    serve::{HTTP1_DRAIN_LINGER, MAX_HTTP1_BUFFER},
};

/// A client's read buffer starts this small (most request heads fit, and an allocation this
/// size is cheap) and doubles as a head needs.
const READ_CHUNK: usize = 1024;
/// Room made before each read while copying a body.
const COPY_CHUNK: usize = 16 * 1024;

/// Serves inbound HTTP/1 connections to one app.
#[derive(Debug)]
pub(crate) struct Relay {
    pool: Pool,
    lifecycle: Arc<Lifecycle>,
    metrics: RequestMetrics,
    header_read_timeout: Duration,
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
    /// Closed before sending anything: a pooled connection the app had closed can be retried.
    Closed,
    Invalid(&'static str),
    Io(io::Error),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("connection closed before a response"),
            Self::Invalid(why) => f.write_str(why),
            Self::Io(err) => err.fmt(f),
        }
    }
}

/// A response relay that failed: before anything reached the client (a 502 is still possible)
/// or after (the client connection can only be closed).
enum Failed {
    BeforeResponse(UpstreamError),
    AfterResponse(io::Error),
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

impl Relay {
    pub(crate) fn new(
        target: SocketAddr,
        lifecycle: Arc<Lifecycle>,
        metrics: &Metrics,
        header_read_timeout: Duration,
    ) -> Self {
        Self {
            pool: Pool::new(target, POOL_MAX_IDLE, POOL_IDLE_TIMEOUT, CONNECT_TIMEOUT),
            lifecycle,
            metrics: RequestMetrics::new(metrics, Direction::Inbound),
            header_read_timeout,
        }
    }

    /// Serves a client connection until it closes or needs the general server.
    pub(crate) async fn serve(&self, client: &mut TcpStream) -> Ended {
        let idle = AtomicBool::new(false);
        let exchanges = self.exchanges(client, &idle);
        tokio::pin!(exchanges);
        // Once draining has gone on for the linger, a connection waiting for its next request is
        // closed. One still busy gets `Connection: close` on its response and ends after it. A
        // request racing that close would be lost, which the linger makes unlikely: under load,
        // each connection gets a `Connection: close` response well before it ends.
        let linger_over = async {
            self.lifecycle.drained_signal().await;
            let started = self.lifecycle.drain_started().unwrap_or_else(std::time::Instant::now);
            tokio::time::sleep_until(Instant::from_std(started + HTTP1_DRAIN_LINGER)).await;
        };
        let result = tokio::select! {
            biased;
            result = &mut exchanges => result,
            () = linger_over => {
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
                client.readable().await?;
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
                    RequestPlan::Partial if buf.len() >= MAX_HTTP1_BUFFER => {
                        Some((431, "request head too large\n"))
                    }
                    RequestPlan::Partial => None,
                };
                if let Some((status, why)) = reject {
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
        let Ok(taken) = body.take(buf) else {
            head::local_response(back, 400, "malformed chunked body\n", true);
            self.metrics.response(400);
            client.write_all(back).await?;
            return Ok(false);
        };
        out.extend_from_slice(&buf[..taken]);
        buf.advance(taken);
        if body.is_done() {
            self.exchange_whole(client, out, back, request).await
        } else {
            self.exchange_streaming(client, buf, out, back, request, body).await
        }
    }

    /// The common case: the whole request is in `out`, so a pooled connection the app had
    /// closed is retried once on a new one.
    async fn exchange_whole(
        &self,
        client: &mut TcpStream,
        out: &[u8],
        back: &mut Vec<u8>,
        request: &RequestHead,
    ) -> io::Result<bool> {
        let sent = AtomicBool::new(true);
        let mut allow_reuse = true;
        let (mut upstream, response) = loop {
            let (mut upstream, reused) = match self.send_head(out, allow_reuse).await {
                Ok(sent_to) => sent_to,
                Err((err, connect)) => {
                    return self.bad_gateway(client, back, request, &err, connect, false).await;
                }
            };
            let Upstream { stream, buf: ubuf } = &mut upstream;
            match self.read_response_head(stream, ubuf, request, back, &sent).await {
                Ok(response) => break (upstream, response),
                Err(UpstreamError::Closed) if reused => allow_reuse = false,
                Err(err) => return self.bad_gateway(client, back, request, &err, false, false).await,
            }
        };
        let Upstream { stream, buf: ubuf } = &mut upstream;
        match self.relay_response(response, stream, ubuf, client, back, request, &sent).await {
            Ok(relayed) => {
                if relayed.upstream_reusable {
                    self.pool.put(upstream);
                }
                Ok(!relayed.client_close)
            }
            Err(Failed::BeforeResponse(err)) => {
                self.bad_gateway(client, back, request, &err, false, false).await
            }
            Err(Failed::AfterResponse(err)) => Err(err),
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
        let mut upstream = match self.send_head(out, true).await {
            Ok((upstream, _)) => upstream,
            Err((err, connect)) => return self.bad_gateway(client, back, request, &err, connect, true).await,
        };
        let sent = AtomicBool::new(false);
        let result = {
            let (mut client_read, mut client_write) = client.split();
            let Upstream { stream, buf: ubuf } = &mut upstream;
            let (mut upstream_read, mut upstream_write) = stream.split();
            let send = async {
                let result = copy_body(&mut client_read, buf, &mut upstream_write, &mut body).await;
                sent.store(result.is_ok(), Ordering::Relaxed);
                result
            };
            let respond = async {
                let response =
                    match self.read_response_head(&mut upstream_read, ubuf, request, back, &sent).await {
                        Ok(response) => response,
                        Err(err) => return Err(Failed::BeforeResponse(err)),
                    };
                self.relay_response(
                    response,
                    &mut upstream_read,
                    ubuf,
                    &mut client_write,
                    back,
                    request,
                    &sent,
                )
                .await
            };
            tokio::pin!(send, respond);
            let mut sending = true;
            loop {
                tokio::select! {
                    copied = &mut send, if sending => {
                        sending = false;
                        // The app may stop reading and still answer (413 and close); the client
                        // going away or sending a broken body ends the exchange.
                        if matches!(copied, Err(CopyError::Read(_) | CopyError::Body(_))) {
                            break None;
                        }
                    }
                    relayed = &mut respond => break Some(relayed),
                }
            }
        };
        let complete = sent.load(Ordering::Relaxed);
        match result {
            None => {
                tracing::debug!("client went away or sent a malformed body mid-request");
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
                self.bad_gateway(client, back, request, &err, false, true).await
            }
            Some(Err(Failed::AfterResponse(err))) => Err(err),
        }
    }

    /// Checks out a connection and writes `out` to it. A pooled one that fails the write (the app
    /// had closed it) is replaced by a new one. `Ok((upstream, reused))`; `Err((error, while
    /// connecting))`.
    async fn send_head(
        &self,
        out: &[u8],
        mut allow_reuse: bool,
    ) -> Result<(Upstream, bool), (UpstreamError, bool)> {
        loop {
            let Checkout { mut upstream, reused } =
                self.pool.checkout(allow_reuse).await.map_err(|err| (UpstreamError::Io(err), true))?;
            match upstream.stream.write_all(out).await {
                Ok(()) => return Ok((upstream, reused)),
                Err(_) if reused => allow_reuse = false,
                Err(err) => return Err((UpstreamError::Io(err), false)),
            }
        }
    }

    /// Reads one response head from the app and writes the client's version into `back`.
    async fn read_response_head<R: AsyncRead + Unpin>(
        &self,
        upstream: &mut R,
        ubuf: &mut BytesMut,
        request: &RequestHead,
        back: &mut Vec<u8>,
        sent: &AtomicBool,
    ) -> Result<ResponseHead, UpstreamError> {
        loop {
            if !ubuf.is_empty() {
                // Decided when the answer comes: a drain that started meanwhile closes too.
                let close = request.close || self.lifecycle.is_draining() || !sent.load(Ordering::Relaxed);
                match head::response(ubuf, request.is_head, close, back) {
                    ResponsePlan::Relay(response) => return Ok(response),
                    ResponsePlan::Invalid(why) => return Err(UpstreamError::Invalid(why)),
                    ResponsePlan::Partial if ubuf.len() >= MAX_HTTP1_BUFFER => {
                        return Err(UpstreamError::Invalid("response head too large"));
                    }
                    ResponsePlan::Partial => {}
                }
            }
            ubuf.reserve(READ_CHUNK);
            match upstream.read_buf(ubuf).await {
                Ok(0) if ubuf.is_empty() => return Err(UpstreamError::Closed),
                Ok(0) => return Err(UpstreamError::Invalid("connection closed mid-head")),
                Ok(_) => {}
                Err(err)
                    if ubuf.is_empty()
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
    #[allow(clippy::too_many_arguments)]
    async fn relay_response<R, W>(
        &self,
        mut response: ResponseHead,
        upstream: &mut R,
        ubuf: &mut BytesMut,
        client: &mut W,
        back: &mut Vec<u8>,
        request: &RequestHead,
        sent: &AtomicBool,
    ) -> Result<Relayed, Failed>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        while response.informational {
            client.write_all(back).await.map_err(Failed::AfterResponse)?;
            ubuf.advance(response.len);
            response = self
                .read_response_head(upstream, ubuf, request, back, sent)
                .await
                .map_err(Failed::BeforeResponse)?;
        }
        ubuf.advance(response.len);
        let mut body = Remaining::new(response.framing);
        let taken = body
            .take(ubuf)
            .map_err(|_| Failed::BeforeResponse(UpstreamError::Invalid("malformed chunked body")))?;
        self.metrics.response(response.status);
        back.extend_from_slice(&ubuf[..taken]);
        ubuf.advance(taken);
        client.write_all(back).await.map_err(Failed::AfterResponse)?;
        if !body.is_done() {
            copy_body(upstream, ubuf, client, &mut body).await.map_err(|err| {
                Failed::AfterResponse(match err {
                    CopyError::Read(err) | CopyError::Write(err) => err,
                    CopyError::Body(err) => io::Error::new(io::ErrorKind::InvalidData, err),
                })
            })?;
        }
        // Bytes after the response would be a protocol error on the app's part: do not reuse.
        Ok(Relayed {
            upstream_reusable: !response.upstream_close && ubuf.is_empty(),
            client_close: response.client_close,
        })
    }

    /// Answers 502 for an app that could not be reached (`connect`) or did not answer properly.
    /// `Ok(true)`: the client connection carries another request.
    async fn bad_gateway(
        &self,
        client: &mut TcpStream,
        back: &mut Vec<u8>,
        request: &RequestHead,
        err: &UpstreamError,
        connect: bool,
        must_close: bool,
    ) -> io::Result<bool> {
        let counter = if connect { &self.metrics.refused_upstream } else { &self.metrics.upstream_errors };
        counter.inc();
        let target = self.pool.target();
        tracing::debug!(direction = "inbound", %target, error = %err, "upstream request failed");
        let close = must_close || request.close || self.lifecycle.is_draining();
        let text = format!("lameduck-proxy: {target} unavailable: {err}\n");
        head::local_response(back, 502, &text, close);
        self.metrics.response(502);
        client.write_all(back).await?;
        Ok(!close)
    }
}
