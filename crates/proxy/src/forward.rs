//! Forwarding one HTTP request: to the app (inbound) or to where the app asked (outbound).

use std::{
    borrow::Cow,
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tokio::net::TcpStream;

use crate::{
    lifecycle::Lifecycle,
    metrics::{Direction, Metrics, STATUS_CLASSES},
};

/// The body of every response the proxy sends: the upstream's, streamed, or one of its own.
/// An enum rather than a boxed body, so a forwarded response costs no allocation.
#[derive(Debug)]
pub(crate) enum ProxyBody {
    Upstream(Incoming),
    Local(Full<Bytes>),
}

impl hyper::body::Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Upstream(body) => std::pin::Pin::new(body).poll_frame(cx),
            Self::Local(body) => std::pin::Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream(body) => body.is_end_stream(),
            Self::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Self::Upstream(body) => body.size_hint(),
            Self::Local(body) => body.size_hint(),
        }
    }
}

/// Idle upstream HTTP/1 connections kept per destination, like nginx's `keepalive 64`: enough for
/// steady load, bounded so many idle clients do not hold as many idle connections to the app.
pub(crate) const POOL_MAX_IDLE: usize = 64;
/// How long to wait for an upstream TCP connection before answering 502.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle upstream connections are kept this long for reuse.
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A response made by the proxy itself.
pub(crate) fn local_response(status: StatusCode, text: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Local(Full::new(text.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Connects to a fixed address (inbound: the app) or to the URI's authority (outbound).
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    inner: HttpConnector,
    fixed: Option<Uri>,
}

impl Connector {
    fn new(fixed: Option<SocketAddr>) -> Self {
        let mut inner = HttpConnector::new();
        inner.set_nodelay(true);
        inner.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let fixed = fixed.map(|addr| {
            Uri::builder()
                .scheme("http")
                .authority(addr.to_string())
                .path_and_query("/")
                .build()
                .expect("valid URI")
        });
        Self { inner, fixed }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = <HttpConnector as tower_service::Service<Uri>>::Response;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = <HttpConnector as tower_service::Service<Uri>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let uri = self.fixed.clone().unwrap_or(uri);
        self.inner.call(uri)
    }
}

/// Headers that belong to one hop and must not be forwarded (RFC 9110 section 7.6.1), with the
/// pre-standard `keep-alive` and `proxy-connection`.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
    "proxy-connection",
];

/// Whether a header (by name, any case) belongs to one hop only.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|hop| hop.eq_ignore_ascii_case(name))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have no Connection header; only then is there a list to collect.
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<header::HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| header::HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in &listed {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Metric handles resolved once, so a request does no label lookups.
#[derive(Debug)]
pub(crate) struct RequestMetrics {
    requests: prometheus::IntCounter,
    in_flight: prometheus::IntGauge,
    /// By status class: 1xx to 5xx.
    responses: [prometheus::IntCounter; 5],
    pub(crate) refused_upstream: prometheus::IntCounter,
    pub(crate) upstream_errors: prometheus::IntCounter,
}

impl RequestMetrics {
    pub(crate) fn new(metrics: &Metrics, direction: Direction) -> Self {
        let d = direction.as_str();
        Self {
            requests: metrics.requests.with_label_values(&[d]),
            in_flight: metrics.in_flight.with_label_values(&[d]),
            responses: STATUS_CLASSES.map(|class| metrics.responses.with_label_values(&[d, class])),
            refused_upstream: metrics.refused.with_label_values(&[d, "upstream"]),
            upstream_errors: metrics.refused.with_label_values(&[d, "upstream-error"]),
        }
    }

    /// Counts a request received; it stays in flight until the guard is dropped.
    pub(crate) fn start(&self) -> InFlight<'_> {
        self.requests.inc();
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    pub(crate) fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].inc();
    }
}

/// Why a request could not be forwarded: it becomes a 502 or 504.
struct UpstreamFailure {
    status: StatusCode,
    /// `upstream` (could not connect) or `upstream-error` (the exchange failed).
    connect: bool,
    message: String,
}

/// Forwards requests for one direction.
#[derive(Debug)]
pub(crate) struct Forwarder {
    direction: Direction,
    /// Inbound: the app as `host:port`, formatted once rather than per request.
    target_authority: Option<String>,
    /// Pooled upstream HTTP/1 connections.
    http1: Client<Connector, Incoming>,
    /// HTTP/2 is multiplexed, so one upstream connection serves many requests.
    http2: Client<Connector, Incoming>,
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
    request_metrics: RequestMetrics,
}

/// Counts a request as in flight until dropped, even if the client goes away mid-request.
pub(crate) struct InFlight<'a>(&'a prometheus::IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Forwarder {
    /// `target`: inbound sends everything there; outbound (`None`) goes where each request says.
    pub(crate) fn new(
        direction: Direction,
        target: Option<SocketAddr>,
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let http1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .build(Connector::new(target));
        let http2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(Connector::new(target));
        let request_metrics = RequestMetrics::new(&metrics, direction);
        let target_authority = target.map(|t| t.to_string());
        Self { direction, target_authority, http1, http2, lifecycle, metrics, request_metrics }
    }

    /// Serves one request; never fails, so one bad request cannot break its connection's others.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let m = &self.request_metrics;
        let _in_flight = m.start();

        let version = req.version();
        let mut response = if req.method() == Method::CONNECT {
            match self.direction {
                Direction::Outbound => self.tunnel(req).await,
                Direction::Inbound => {
                    local_response(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is for the outbound proxy\n")
                }
            }
        } else {
            self.forward(req).await
        };
        // Tell HTTP/1 clients this connection closes, so they send their next request elsewhere.
        if self.lifecycle.is_draining() && version < Version::HTTP_2 {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        m.response(response.status().as_u16());
        Ok(response)
    }

    /// Where the request goes (`host:port`); why not (a 400) when it cannot tell.
    fn upstream_authority<'a>(&'a self, req: &'a Request<Incoming>) -> Result<Cow<'a, str>, String> {
        let uri = req.uri();
        if let Some(target) = &self.target_authority {
            // Inbound HTTP/1 always goes to the app. Inbound HTTP/2 keeps :authority so the app
            // sees the name the client used; its connector goes to the app whatever it says.
            return Ok(match uri.authority() {
                Some(authority) if req.version() == Version::HTTP_2 => Cow::Borrowed(authority.as_str()),
                _ => Cow::Borrowed(target.as_str()),
            });
        }
        if uri.scheme_str().is_some_and(|s| s != "http") {
            return Err("use CONNECT for TLS through the outbound proxy\n".into());
        }
        let authority = match uri.authority() {
            Some(authority) => authority.as_str(),
            None => match req.headers().get(header::HOST).and_then(|h| h.to_str().ok()) {
                Some(host) => host,
                None => return Err("outbound requests need an absolute URI or a Host header\n".into()),
            },
        };
        // Outbound to a bare host means port 80, as for any HTTP client.
        Ok(if authority.contains(':') {
            Cow::Borrowed(authority)
        } else {
            Cow::Owned(format!("{authority}:80"))
        })
    }

    async fn forward(&self, mut req: Request<Incoming>) -> Response<ProxyBody> {
        let authority = match self.upstream_authority(&req) {
            Ok(authority) => authority.into_owned(),
            Err(reason) => return local_response(StatusCode::BAD_REQUEST, reason),
        };
        // gRPC needs `te: trailers` end to end over HTTP/2; every other hop-by-hop header goes.
        let keeps_trailers = req.version() == Version::HTTP_2
            && req
                .headers()
                .get(header::TE)
                .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
        strip_hop_by_hop(req.headers_mut());
        if keeps_trailers {
            req.headers_mut().insert(header::TE, HeaderValue::from_static("trailers"));
        }
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        match Uri::builder().scheme("http").authority(authority.as_str()).path_and_query(path).build() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(err) => {
                return local_response(StatusCode::BAD_REQUEST, format!("bad request target: {err}\n"));
            }
        }
        let client = if req.version() == Version::HTTP_2 {
            &self.http2
        } else {
            *req.version_mut() = Version::HTTP_11;
            &self.http1
        };
        let result = client.request(req).await.map_err(|err| UpstreamFailure {
            status: StatusCode::BAD_GATEWAY,
            connect: err.is_connect(),
            message: err.to_string(),
        });
        match result {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, ProxyBody::Upstream(body))
            }
            Err(failure) => {
                let counter = if failure.connect {
                    &self.request_metrics.refused_upstream
                } else {
                    &self.request_metrics.upstream_errors
                };
                counter.inc();
                tracing::debug!(direction = self.direction.as_str(), %authority, error = %failure.message, "upstream request failed");
                local_response(
                    failure.status,
                    format!("lameduck-proxy: {authority} unavailable: {}\n", failure.message),
                )
            }
        }
    }

    /// `CONNECT host:port`: connect first (so failure is a 502, not a broken tunnel), then answer
    /// 200 and copy bytes both ways. The tunnel counts as an open connection until it ends.
    async fn tunnel(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let Some(authority) = req.uri().authority().map(ToString::to_string) else {
            return local_response(StatusCode::BAD_REQUEST, "CONNECT needs host:port\n");
        };
        let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&authority)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                self.request_metrics.refused_upstream.inc();
                return local_response(
                    StatusCode::BAD_GATEWAY,
                    format!("lameduck-proxy: {authority} unavailable: {err}\n"),
                );
            }
            Err(_) => {
                self.request_metrics.refused_upstream.inc();
                return local_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("lameduck-proxy: {authority} did not answer\n"),
                );
            }
        };
        let open = self.lifecycle.open();
        let lifecycle = Arc::clone(&self.lifecycle);
        let metrics = Arc::clone(&self.metrics);
        tokio::spawn(async move {
            let _open = open;
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(upgraded) => upgraded,
                Err(err) => {
                    tracing::debug!(error = %err, "CONNECT upgrade failed");
                    return;
                }
            };
            copy_until_forced(TokioIo::new(upgraded), upstream, &lifecycle, &metrics).await;
        });
        Response::new(ProxyBody::Local(Full::new(Bytes::new())))
    }
}

/// Copies both ways until either side closes, or until the grace deadline forces a close.
pub(crate) async fn copy_until_forced<A, B>(mut a: A, mut b: B, lifecycle: &Lifecycle, metrics: &Metrics)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut a, &mut b) => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "opaque stream ended with an error");
            }
        }
        () = lifecycle.forced_signal() => metrics.forced_closes.inc(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("Basic x"));
        headers.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }
}
