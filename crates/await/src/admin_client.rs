//! A minimal HTTP/1.1 client for the proxy's admin server: `GET /ready` and `POST /shutdown`.
//!
//! One connection per request, closed afterwards: the requests are rare, and a fresh connection
//! never trips over a proxy that closed an idle one.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use lameduck_api::names::paths;
use tokio::{net::TcpStream, time::timeout};

use crate::cli::AdminUri;

/// Why a request to the admin server got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host as given.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// No address accepted a connection (refused, unreachable, or no answer in time).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The addresses tried.
        addr: String,
        /// Why it failed.
        source: io::Error,
    },
    /// Connected, but the HTTP exchange failed.
    #[error("request to {uri} failed: {source}")]
    Http {
        /// What was requested.
        uri: String,
        /// hyper's error.
        source: hyper::Error,
    },
    /// Connected, but no answer came in time.
    #[error("no answer from {uri} within {timeout:?}")]
    NoAnswer {
        /// What was requested.
        uri: String,
        /// How long it waited.
        timeout: Duration,
    },
}

impl AdminError {
    /// Whether the request certainly never reached the server, so sending it again cannot make
    /// the server act twice.
    pub fn is_before_request(&self) -> bool {
        matches!(self, Self::Resolve { .. } | Self::Connect { .. })
    }
}

/// Talks to one admin server.
#[derive(Clone, Debug)]
pub struct AdminClient {
    uri: AdminUri,
    request_timeout: Duration,
}

impl AdminClient {
    /// A client for `uri`; each connect and each answer may take up to `request_timeout`.
    pub fn new(uri: AdminUri, request_timeout: Duration) -> Self {
        Self { uri, request_timeout }
    }

    /// The admin server's base URI, for messages.
    pub fn uri(&self) -> &AdminUri {
        &self.uri
    }

    /// `GET /ready`: the answer's status.
    pub async fn ready(&self) -> Result<StatusCode, AdminError> {
        self.send(Method::GET, paths::READY).await
    }

    /// `POST /shutdown`: the answer's status.
    pub async fn shutdown(&self) -> Result<StatusCode, AdminError> {
        self.send(Method::POST, paths::SHUTDOWN).await
    }

    async fn send(&self, method: Method, path: &str) -> Result<StatusCode, AdminError> {
        let uri = self.uri.path(path);
        let stream = self.connect().await?;
        let no_answer = || AdminError::NoAnswer { uri: uri.clone(), timeout: self.request_timeout };
        let http_error = |source| AdminError::Http { uri: uri.clone(), source };

        let exchange = async {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http_error)?;
            // The connection task ends when the server closes or the sender is dropped.
            tokio::spawn(connection);
            let request = Request::builder()
                .method(method)
                .uri(format!("{}{}", self.uri.prefix, path))
                .header(header::HOST, self.uri.authority.as_str())
                .header(header::CONNECTION, "close")
                .body(Empty::<Bytes>::new())
                .expect("method, path and headers come from valid parts");
            let response = sender.send_request(request).await.map_err(http_error)?;
            Ok(response.status())
        };
        timeout(self.request_timeout, exchange).await.unwrap_or_else(|_| Err(no_answer()))
    }

    /// Connects to the first address that accepts. `localhost` means 127.0.0.1 then ::1 without
    /// asking a resolver: scratch and distroless images often have no `/etc/hosts`.
    async fn connect(&self) -> Result<TcpStream, AdminError> {
        let addrs: Vec<SocketAddr> = if self.uri.host.eq_ignore_ascii_case("localhost") {
            vec![
                SocketAddr::from((Ipv4Addr::LOCALHOST, self.uri.port)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, self.uri.port)),
            ]
        } else if let Ok(ip) = self.uri.host.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, self.uri.port)]
        } else {
            let resolve_error = |source| AdminError::Resolve { host: self.uri.host.clone(), source };
            tokio::net::lookup_host((self.uri.host.as_str(), self.uri.port))
                .await
                .map_err(resolve_error)?
                .collect()
        };

        // Report the first failure: for localhost that is IPv4's, the usual listener.
        let mut first_error = None;
        for addr in &addrs {
            let source = match timeout(self.request_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    // Requests are tiny; do not let Nagle hold one back.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(source)) => source,
                Err(_) => io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            };
            first_error.get_or_insert(source);
        }
        let tried: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
        Err(AdminError::Connect {
            addr: tried.join(" or "),
            source: first_error.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no addresses")),
        })
    }
}
