//! How the proxy reaches upstreams: the limits both paths share (the relay's own pool and hyper's
//! client pool) and the connector hyper's client uses.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper_util::{
    client::legacy::connect::{Connected, Connection, HttpConnector},
    rt::TokioIo,
};
use tokio::net::TcpStream;

use crate::app::{AppConnections, Slot};

/// Idle upstream HTTP/1 connections kept per destination, like nginx's `keepalive 64`: enough for
/// steady load, bounded so many idle clients do not hold as many idle connections to the app.
pub(crate) const POOL_MAX_IDLE: usize = 64;
/// How long to wait for an upstream TCP connection before answering 502.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle upstream connections are kept this long for reuse.
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Connects to a fixed address (inbound: the app) or to the URI's authority (outbound). Inbound,
/// each connection takes a slot of the app connection budget.
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    inner: HttpConnector,
    fixed: Option<Uri>,
    slots: Option<Arc<AppConnections>>,
}

impl Connector {
    pub(crate) fn new(fixed: Option<SocketAddr>, slots: Option<Arc<AppConnections>>) -> Self {
        let mut inner = HttpConnector::new();
        inner.set_nodelay(true);
        inner.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // A socket address always makes a valid authority; were it not to, requests would keep
        // their own URI rather than panic.
        let fixed = fixed.and_then(|addr| format!("http://{addr}/").parse::<Uri>().ok());
        Self { inner, fixed, slots }
    }
}

/// A connection made by [`Connector`]; inbound, it holds its budget slot until it is dropped.
#[derive(Debug)]
pub(crate) struct UpstreamIo {
    io: TokioIo<TcpStream>,
    _slot: Option<Slot>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = UpstreamIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let uri = self.fixed.clone().unwrap_or(uri);
        // The slot is taken before connecting, so connects in progress count against the limit.
        let slot = match self.slots.as_ref().map(|slots| slots.take()).transpose() {
            Ok(slot) => slot,
            Err(limit) => return Box::pin(std::future::ready(Err(limit.into()))),
        };
        let connecting = self.inner.call(uri);
        Box::pin(async move { Ok(UpstreamIo { io: connecting.await?, _slot: slot }) })
    }
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// Whether a request surely did not reach the app, so sending it again cannot act twice:
/// - the app refused it unprocessed (RFC 9113 section 8.7): an HTTP/2 stream reset with
///   REFUSED_STREAM, or left out of a graceful GOAWAY (h2 fails only the streams above the
///   GOAWAY's last stream ID that way);
/// - it was still queued in hyper's client when that connection's task ended (a GOAWAY closes
///   the connection while requests wait for one of its streams). hyper tells this apart only by
///   its text; should the text change, such requests get a 502 again rather than a resend.
///
/// Anything else, a reset connection included, may have reached the app.
pub(crate) fn never_processed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && match h2.reason() {
                    Some(h2::Reason::REFUSED_STREAM) => h2.is_reset(),
                    Some(h2::Reason::NO_ERROR) => h2.is_go_away(),
                    _ => false,
                };
        }
        if let Some(hyper) = err.downcast_ref::<hyper::Error>()
            && hyper.is_user()
            && hyper.to_string() == HYPER_DISPATCH_GONE
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// hyper's text for a request dropped from its queue when the connection's task ended.
const HYPER_DISPATCH_GONE: &str = "dispatch task is gone";
