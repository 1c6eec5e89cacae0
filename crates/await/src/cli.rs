//! Command-line flags. Spellings, defaults and meanings are linkerd-await's, so an image can swap
//! one binary for the other; every flag can also be set through an environment variable.

use std::{fmt, str::FromStr};

use clap::{ArgAction, Parser, builder::BoolishValueParser};
use http::uri::{Authority, Scheme, Uri};
use lameduck_api::{
    GoDuration,
    names::{env, ports},
};

/// Waits for the mesh proxy to be ready, then runs CMD. With --shutdown, runs CMD as a child,
/// forwards signals to it, shuts the proxy down when it exits and exits with its code.
///
/// Exit codes: CMD's own; 128+N when CMD died of signal N; 69 when the proxy was not ready in
/// time (--timeout with --timeout-fatal); 71 when CMD could not be started; 2 on usage errors.
#[derive(Debug, Parser)]
#[command(name = "lameduck-await", version)]
pub struct Args {
    /// Port of the local proxy's admin server.
    #[arg(short = 'p', long, env = env::AWAIT_PORT, default_value_t = ports::ADMIN)]
    pub port: u16,

    /// Base URI of the admin server, for setups other than localhost:PORT (e.g.
    /// http://127.0.0.1:9990). Overrides --port.
    #[arg(long, env = env::AWAIT_URI, value_name = "URI")]
    pub uri: Option<AdminUri>,

    /// Time to wait after a failed readiness check (Go syntax: 500ms, 1s, 1m30s).
    #[arg(short = 'b', long, env = env::AWAIT_BACKOFF, default_value = "1s", value_name = "DURATION")]
    pub backoff: GoDuration,

    /// Give up waiting for readiness after this long. No limit by default.
    #[arg(short = 't', long, env = env::AWAIT_TIMEOUT, value_name = "DURATION")]
    pub timeout: Option<GoDuration>,

    /// When --timeout fires: true exits 69 without running CMD; false runs CMD anyway.
    #[arg(
        long,
        env = env::AWAIT_TIMEOUT_FATAL,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new(),
    )]
    pub timeout_fatal: bool,

    /// Run CMD as a child, forward signals to it, and POST /shutdown to the proxy when it exits.
    #[arg(
        short = 'S',
        long,
        env = env::AWAIT_SHUTDOWN,
        requires = "cmd",
        value_parser = BoolishValueParser::new(),
    )]
    pub shutdown: bool,

    /// Log what happens (info and debug) instead of warnings only. Logs go to stderr.
    #[arg(short = 'v', long, env = env::AWAIT_VERBOSE, value_parser = BoolishValueParser::new())]
    pub verbose: bool,

    /// The command to run, and its arguments. Without one, lameduck-await only waits.
    #[arg(value_name = "CMD", trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

impl Args {
    /// Where the admin server is: `--uri` when given, else `localhost:PORT`.
    pub fn admin_uri(&self) -> AdminUri {
        self.uri.clone().unwrap_or_else(|| AdminUri::localhost(self.port))
    }
}

/// The admin server's base address: plain HTTP, a host, a port and an optional path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminUri {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// What the request's `Host` header carries.
    pub authority: Authority,
    /// Prefix for `/ready` and `/shutdown`, without a trailing slash; usually empty.
    pub prefix: String,
}

/// Why `--uri` was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminUriError {
    /// Not a URI at all.
    #[error("invalid URI {0:?}: {1}")]
    Invalid(String, http::uri::InvalidUri),
    /// Not plain HTTP: the admin server speaks nothing else.
    #[error("invalid URI {0:?}: only http:// is supported (the proxy's admin server has no TLS)")]
    Scheme(String),
    /// No host.
    #[error("invalid URI {0:?}: a host is required, as in http://127.0.0.1:4191")]
    NoHost(String),
    /// A query string, which would make the appended paths meaningless.
    #[error("invalid URI {0:?}: a query string is not allowed")]
    Query(String),
}

impl AdminUri {
    /// `http://localhost:PORT`, linkerd-await's target.
    pub fn localhost(port: u16) -> Self {
        let authority = Authority::try_from(format!("localhost:{port}").as_str())
            .expect("localhost with a u16 port is a valid authority");
        Self { host: "localhost".to_owned(), port, authority, prefix: String::new() }
    }

    /// The full URI of a path on the admin server.
    pub fn path(&self, path: &str) -> String {
        format!("http://{}{}{}", self.authority, self.prefix, path)
    }
}

impl FromStr for AdminUri {
    type Err = AdminUriError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let uri: Uri = input.parse().map_err(|e| AdminUriError::Invalid(input.to_owned(), e))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(AdminUriError::Scheme(input.to_owned()));
        }
        let authority = uri.authority().cloned().ok_or_else(|| AdminUriError::NoHost(input.to_owned()))?;
        if uri.query().is_some() {
            return Err(AdminUriError::Query(input.to_owned()));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(AdminUriError::NoHost(input.to_owned()));
        }
        let port = authority.port_u16().unwrap_or(80);
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Self { host, port, authority, prefix })
    }
}

impl fmt::Display for AdminUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("lameduck-await").chain(argv.iter().copied()))
    }

    #[test]
    fn command_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_are_linkerd_awaits() {
        let args = parse(&["--", "app"]).unwrap();
        assert_eq!(args.port, 4191);
        assert_eq!(args.backoff, GoDuration::from_secs(1));
        assert_eq!(args.timeout, None);
        assert!(args.timeout_fatal);
        assert!(!args.shutdown);
        assert_eq!(args.admin_uri().path("/ready"), "http://localhost:4191/ready");
    }

    #[test]
    fn short_flags_and_go_durations() {
        let args =
            parse(&["-p", "9990", "-b", "250ms", "-t", "1m30s", "-S", "-v", "--", "app", "-x"]).unwrap();
        assert_eq!(args.port, 9990);
        assert_eq!(args.backoff.as_std(), std::time::Duration::from_millis(250));
        assert_eq!(args.timeout.unwrap().as_secs(), 90);
        assert!(args.shutdown && args.verbose);
        assert_eq!(args.cmd, ["app", "-x"]);
    }

    #[test]
    fn timeout_fatal_takes_an_optional_value() {
        assert!(!parse(&["--timeout-fatal=false", "app"]).unwrap().timeout_fatal);
        assert!(!parse(&["--timeout-fatal", "false", "--", "app"]).unwrap().timeout_fatal);
        assert!(parse(&["--timeout-fatal", "--", "app"]).unwrap().timeout_fatal);
    }

    #[test]
    fn shutdown_needs_a_command() {
        assert!(parse(&["-S"]).is_err());
        assert!(parse(&[]).unwrap().cmd.is_empty());
    }

    #[test]
    fn arguments_after_the_command_belong_to_it() {
        let args = parse(&["app", "-p", "1"]).unwrap();
        assert_eq!(args.port, 4191);
        assert_eq!(args.cmd, ["app", "-p", "1"]);
    }

    #[test]
    fn uri_overrides_port_and_keeps_a_prefix() {
        let args = parse(&["-p", "1", "--uri", "http://127.0.0.1:9990/admin/", "app"]).unwrap();
        let uri = args.admin_uri();
        assert_eq!((uri.host.as_str(), uri.port), ("127.0.0.1", 9990));
        assert_eq!(uri.path("/shutdown"), "http://127.0.0.1:9990/admin/shutdown");

        let v6: AdminUri = "http://[::1]:4191".parse().unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 4191));
        assert_eq!(v6.path("/ready"), "http://[::1]:4191/ready");
    }

    #[test]
    fn uri_must_be_plain_http_with_a_host() {
        assert!(matches!("https://127.0.0.1:4191".parse::<AdminUri>(), Err(AdminUriError::Scheme(_))));
        assert!(matches!("127.0.0.1:4191".parse::<AdminUri>(), Err(AdminUriError::Scheme(_))));
        assert!(matches!("http://127.0.0.1:4191/?x=1".parse::<AdminUri>(), Err(AdminUriError::Query(_))));
        assert!(parse(&["--uri", "ftp://x", "app"]).is_err());
    }

    #[test]
    fn bad_durations_are_usage_errors() {
        assert!(parse(&["-b", "1", "app"]).is_err());
        assert!(parse(&["-t", "-5s", "app"]).is_err());
    }
}
