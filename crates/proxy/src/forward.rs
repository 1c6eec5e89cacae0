//! Forwarding one HTTP request: to the app (inbound) or to where the app asked (outbound).

use std::{borrow::Cow, convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use lameduck_proxy::framing::hop_by_hop::strip_hop_by_hop;
use tokio::net::TcpStream;

use crate::{
    app::{self, AppConnections, AppH2, UpstreamBody},
    lifecycle::Lifecycle,
    metrics::{Direction, Metrics, RequestMetrics},
    opaque::copy_until_forced,
    response_body::{ProxyBody, local_response},
    upstream::{self, CONNECT_TIMEOUT, Connector, POOL_IDLE_TIMEOUT, POOL_MAX_IDLE},
};

/// How many times a request the app refused unprocessed is sent again: a new connection takes
/// it, and an app that keeps refusing gets a 502 rather than a loop.
const MAX_RESENDS: usize = 2;

/// Why a request could not be forwarded.
struct SendError {
    /// No connection could be had (counted as `upstream`), rather than a failed exchange
    /// (`upstream-error`).
    connect: bool,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl From<hyper_util::client::legacy::Error> for SendError {
    fn from(err: hyper_util::client::legacy::Error) -> Self {
        Self { connect: err.is_connect(), error: err.into() }
    }
}

impl From<app::H2Error> for SendError {
    fn from(err: app::H2Error) -> Self {
        let connect = err.is_connect();
        match err {
            // hyper's own error heads the chain, where `upstream::never_processed` looks for it.
            app::H2Error::Request(err) => Self { connect, error: err.into() },
            err => Self { connect, error: err.into() },
        }
    }
}

/// Where HTTP/2 requests go: inbound, the one connection to the app; outbound, hyper's pool,
/// one connection per destination.
#[derive(Debug)]
enum Http2 {
    App(AppH2),
    Pooled(Box<Client<Connector, UpstreamBody>>),
}

/// Forwards requests for one direction.
#[derive(Debug)]
pub(crate) struct Forwarder {
    direction: Direction,
    /// Inbound: the app as `host:port`, formatted once rather than per request.
    target_authority: Option<String>,
    /// Pooled upstream HTTP/1 connections.
    http1: Client<Connector, UpstreamBody>,
    /// HTTP/2 is multiplexed, so one upstream connection serves many requests.
    http2: Http2,
    /// Inbound: the app connection budget, for its 503s.
    slots: Option<Arc<AppConnections>>,
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
    request_metrics: RequestMetrics,
}

impl Forwarder {
    /// `target`: inbound sends everything there, within the `slots` budget; outbound (`None`)
    /// goes where each request says.
    pub(crate) fn new(
        direction: Direction,
        target: Option<(SocketAddr, Arc<AppConnections>)>,
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (address, slots) = target.map_or((None, None), |(address, slots)| (Some(address), Some(slots)));
        let http1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .build(Connector::new(address, slots.clone()));
        let http2 = match (address, &slots) {
            (Some(address), Some(slots)) => {
                Http2::App(AppH2::new(address, CONNECT_TIMEOUT, Arc::clone(slots)))
            }
            _ => Http2::Pooled(Box::new(
                Client::builder(TokioExecutor::new())
                    .http2_only(true)
                    .timer(TokioTimer::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .build(Connector::new(None, None)),
            )),
        };
        let request_metrics = RequestMetrics::new(&metrics, direction);
        let target_authority = address.map(|t| t.to_string());
        Self { direction, target_authority, http1, http2, slots, lifecycle, metrics, request_metrics }
    }

    /// Sends a request on the client for its version.
    async fn send(&self, req: Request<UpstreamBody>) -> Result<Response<Incoming>, SendError> {
        if req.version() < Version::HTTP_2 {
            return Ok(self.http1.request(req).await?);
        }
        match &self.http2 {
            Http2::App(app) => Ok(app.request(req).await?),
            Http2::Pooled(client) => Ok(client.request(req).await?),
        }
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
            // sees the name the client used; it goes on the one app connection whatever it says.
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
        // An HTTP/2 app refuses streams it will not process (a GOAWAY that does not cover them,
        // or REFUSED_STREAM: nginx does so after `keepalive_requests`). RFC 9113 section 8.7 lets
        // such a request go again on a new connection, whatever its method; this proxy resends
        // only idempotent ones (RFC 9110 section 9.2.2), as its HTTP/1 relay does, so that an app
        // whose GOAWAY under-reports what it processed cannot be made to act twice on a POST. A
        // copy of a bodyless one is kept to rebuild it. HTTP/1 has no such signal; hyper's client
        // itself resends a request it never started to write.
        let resend = if req.version() == Version::HTTP_2 {
            let replayable = req.method().is_idempotent() && hyper::body::Body::is_end_stream(req.body());
            replayable.then(|| Resend::of(&req))
        } else {
            *req.version_mut() = Version::HTTP_11;
            None
        };
        let req = req.map(|body| match resend {
            Some(_) => Either::Right(Empty::new()),
            None => Either::Left(body),
        });
        let mut outcome = self.send(req).await;
        for _ in 0..MAX_RESENDS {
            match (&outcome, &resend) {
                (Err(err), Some(resend)) if upstream::never_processed(&*err.error) => {
                    tracing::debug!(direction = self.direction.as_str(), %authority, error = with_causes(&*err.error), "the app refused a request unprocessed; sending it again");
                    outcome = self.send(resend.request()).await;
                }
                _ => break,
            }
        }
        match outcome {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, ProxyBody::Upstream(body))
            }
            Err(failure) => {
                let message = with_causes(&*failure.error);
                tracing::debug!(direction = self.direction.as_str(), %authority, error = %message, "upstream request failed");
                if let (Some(slots), Some(limit)) = (&self.slots, app::limit_reached(&*failure.error)) {
                    slots.refused();
                    return local_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("lameduck-proxy: {limit}; try again later\n"),
                    );
                }
                let counter = if failure.connect {
                    &self.request_metrics.refused_upstream
                } else {
                    &self.request_metrics.upstream_errors
                };
                counter.inc();
                local_response(
                    StatusCode::BAD_GATEWAY,
                    format!("lameduck-proxy: {authority} unavailable: {message}\n"),
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

/// An error with its causes: hyper's own text ("client error (SendRequest)") says little alone.
fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A bodyless request's head, kept so the request can be sent again.
struct Resend {
    method: Method,
    uri: Uri,
    version: Version,
    headers: http::HeaderMap,
}

impl Resend {
    fn of<B>(req: &Request<B>) -> Self {
        Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        }
    }

    fn request(&self) -> Request<UpstreamBody> {
        let mut req = Request::new(Either::Right(Empty::new()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}
