//! The subcommands that control a running proxy: `shutdown` (over HTTP or by signal) and `wait`
//! (a preStop sleep that needs no shell in the image).

use std::{net::SocketAddr, str::FromStr, time::Duration};

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use lameduck_api::{
    GoDuration,
    admin::ShutdownAnswer,
    names::{env, paths},
};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::net::TcpStream;

/// `lameduck-proxy shutdown`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ShutdownArgs {
    /// The proxy's admin address. An unspecified address (0.0.0.0) means this host's loopback,
    /// so the variable the proxy itself reads works here too.
    #[arg(long, env = env::PROXY_ADMIN_ADDR, default_value = "127.0.0.1:4191", value_name = "ADDR")]
    pub(crate) admin_addr: String,
    /// The path to POST: `/shutdown` for lameduck's and Linkerd's proxies.
    #[arg(long, default_value = paths::SHUTDOWN, value_name = "PATH")]
    pub(crate) path: String,
    /// Send this signal (TERM, INT, KILL, ...) to `--pid` instead of calling `/shutdown`.
    #[arg(long, value_name = "SIGNAL")]
    pub(crate) signal: Option<String>,
    /// The process to signal: PID 1 is the proxy in an ephemeral container that targets it.
    #[arg(long, default_value_t = 1, requires = "signal")]
    pub(crate) pid: i32,
    /// Give up on the HTTP request after this long.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub(crate) timeout: String,
}

/// `lameduck-proxy wait`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WaitArgs {
    /// How long to sleep.
    #[arg(long, value_name = "N")]
    pub(crate) seconds: u64,
}

/// Why `shutdown` failed; the message is what the user (or the operator's event) sees.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ShutdownError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the proxy admin server at {addr}: {source}")]
    Unreachable { addr: SocketAddr, source: std::io::Error },
    #[error("no answer from the proxy admin server at {addr} within {timeout}")]
    Timeout { addr: SocketAddr, timeout: GoDuration },
    #[error("HTTP exchange with {addr} failed: {source}")]
    Http { addr: SocketAddr, source: hyper::Error },
    #[error("proxy at {addr}: {}", answer.describe())]
    Refused { addr: SocketAddr, answer: ShutdownAnswer },
    #[error("cannot send {signal} to PID {pid}: {source}")]
    Signal { signal: Signal, pid: i32, source: nix::Error },
}

impl ShutdownError {
    /// The proxy answered 404: its `/shutdown` is off, so only a signal can stop it.
    pub(crate) fn is_endpoint_disabled(&self) -> bool {
        matches!(self, Self::Refused { answer: ShutdownAnswer::Disabled, .. })
    }
}

/// Parses `TERM`, `SIGTERM` or `15`.
pub(crate) fn parse_signal(text: &str) -> Result<Signal, String> {
    let text = text.trim();
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| format!("--signal: {number} is not a signal number"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    Signal::from_str(&name)
        .map_err(|_| format!("--signal: {text:?} is not a signal name such as TERM or INT"))
}

fn admin_target(text: &str) -> Result<SocketAddr, String> {
    let mut addr: SocketAddr = text.trim().parse().map_err(|_| {
        format!("--admin-addr ({}): {text:?} is not an address such as 127.0.0.1:4191", env::PROXY_ADMIN_ADDR)
    })?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(addr)
}

/// POSTs `/shutdown` and reports what the proxy answered.
pub(crate) async fn post_shutdown(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<ShutdownAnswer, ShutdownError> {
    let exchange = async {
        let stream =
            TcpStream::connect(addr).await.map_err(|source| ShutdownError::Unreachable { addr, source })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ShutdownError::Http { addr, source })?;
        tokio::spawn(conn);
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|err| ShutdownError::Usage(format!("--path {path:?}: {err}")))?;
        let response =
            sender.send_request(request).await.map_err(|source| ShutdownError::Http { addr, source })?;
        Ok(ShutdownAnswer::from_status(response.status().as_u16()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(ShutdownError::Timeout { addr, timeout: GoDuration::from(timeout) }))
}

/// Runs `lameduck-proxy shutdown`; `Ok` carries the line to print.
pub(crate) async fn shutdown(args: &ShutdownArgs) -> Result<String, ShutdownError> {
    if let Some(signal) = &args.signal {
        let signal = parse_signal(signal).map_err(ShutdownError::Usage)?;
        nix::sys::signal::kill(Pid::from_raw(args.pid), signal).map_err(|source| ShutdownError::Signal {
            signal,
            pid: args.pid,
            source,
        })?;
        return Ok(format!("sent {signal} to PID {}", args.pid));
    }
    let addr = admin_target(&args.admin_addr).map_err(ShutdownError::Usage)?;
    let timeout = args
        .timeout
        .parse::<GoDuration>()
        .map_err(|err| ShutdownError::Usage(format!("--timeout: {err}")))?
        .as_std();
    if !args.path.starts_with('/') {
        return Err(ShutdownError::Usage(format!("--path: {:?} must start with /", args.path)));
    }
    let answer = post_shutdown(addr, &args.path, timeout).await?;
    if answer.is_accepted() {
        Ok(format!("proxy at {addr}: {}", answer.describe()))
    } else {
        Err(ShutdownError::Refused { addr, answer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_in_every_spelling() {
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("sigint"), Ok(Signal::SIGINT));
        assert_eq!(parse_signal("9"), Ok(Signal::SIGKILL));
        assert!(parse_signal("NOPE").unwrap_err().contains("--signal"));
        assert!(parse_signal("999").is_err());
    }

    #[test]
    fn unspecified_admin_address_means_loopback() {
        assert_eq!(admin_target("0.0.0.0:4191").unwrap(), "127.0.0.1:4191".parse().unwrap());
        assert_eq!(admin_target("[::]:4191").unwrap(), "[::1]:4191".parse().unwrap());
        assert!(admin_target("localhost").unwrap_err().contains("--admin-addr"));
    }
}
