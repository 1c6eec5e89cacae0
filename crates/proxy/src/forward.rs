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
    lifecycle::Lifecycle,
    metrics::{Direction, Metrics, RequestMetrics},
    opaque::copy_until_forced,
    response_body::{ProxyBody, local_response},
    upstream::{self, CONNECT_TIMEOUT, Connector, POOL_IDLE_TIMEOUT, POOL_MAX_IDLE},
};

/// What goes to the app: the client's body, or none at all for a request kept to send again.
type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// How many times a request the app refused unprocessed is sent again: a new connection takes
/// it, and an app that keeps refusing gets a 502 rather than a loop.
const MAX_RESENDS: usize = 2;

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
    http1: Client<Connector, UpstreamBody>,
    /// HTTP/2 is multiplexed, so one upstream connection serves many requests.
    http2: Client<Connector, UpstreamBody>,
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
    request_metrics: RequestMetrics,
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
        // An HTTP/2 app refuses streams it will not process (a GOAWAY that does not cover them,
        // or REFUSED_STREAM: nginx does so after `keepalive_requests`). RFC 9113 section 8.7 lets
        // such a request go again on a new connection, whatever its method; this proxy resends
        // only idempotent ones (RFC 9110 section 9.2.2), as its HTTP/1 relay does, so that an app
        // whose GOAWAY under-reports what it processed cannot be made to act twice on a POST. A
        // copy of a bodyless one is kept to rebuild it. HTTP/1 has no such signal; hyper's client
        // itself resends a request it never started to write.
        let (client, resend) = if req.version() == Version::HTTP_2 {
            let replayable = req.method().is_idempotent() && hyper::body::Body::is_end_stream(req.body());
            let resend = replayable.then(|| Resend::of(&req));
            (&self.http2, resend)
        } else {
            *req.version_mut() = Version::HTTP_11;
            (&self.http1, None)
        };
        let req = req.map(|body| match resend {
            Some(_) => Either::Right(Empty::new()),
            None => Either::Left(body),
        });
        let mut outcome = client.request(req).await;
        for _ in 0..MAX_RESENDS {
            match (&outcome, &resend) {
                (Err(err), Some(resend)) if upstream::never_processed(err) => {
                    tracing::debug!(direction = self.direction.as_str(), %authority, error = with_causes(err), "the app refused a request unprocessed; sending it again");
                    outcome = client.request(resend.request()).await;
                }
                _ => break,
            }
        }
        let result = outcome.map_err(|err| UpstreamFailure {
            status: StatusCode::BAD_GATEWAY,
            connect: err.is_connect(),
            message: with_causes(&err),
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
