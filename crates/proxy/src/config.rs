//! The proxy's flags, each with a `LAMEDUCK_PROXY_*` env var, validated all at once.
//!
//! Flags are taken as text and checked here, not by clap's value parsers, so that one run
//! reports every bad flag together (exit 64) instead of stopping at the first.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use lameduck_api::{GoDuration, names::env};

/// Flags of the proxy itself (no subcommand).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunArgs {
    /// Where meshed clients connect.
    #[arg(long, env = env::PROXY_INBOUND_ADDR, default_value = "0.0.0.0:4143", value_name = "ADDR")]
    pub(crate) inbound_addr: String,
    /// The app, on loopback: where inbound traffic goes.
    #[arg(long, env = env::PROXY_INBOUND_TARGET, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub(crate) inbound_target: String,
    /// The app's outbound proxy: HTTP forward proxy, `CONNECT` for opaque TCP.
    #[arg(long, env = env::PROXY_OUTBOUND_ADDR, default_value = "127.0.0.1:4140", value_name = "ADDR")]
    pub(crate) outbound_addr: String,
    /// Let `--outbound-addr` be a non-loopback address. The outbound proxy goes wherever a request
    /// says, the pod's loopback-only services (the admin `/shutdown` among them) included, so on
    /// a pod address it is an open proxy to them for any peer.
    #[arg(
        long,
        env = env::PROXY_ALLOW_OPEN_OUTBOUND,
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub(crate) allow_open_outbound: String,
    /// `/ready`, `/live`, `/metrics`, `/shutdown`.
    #[arg(long, env = env::PROXY_ADMIN_ADDR, default_value = "0.0.0.0:4191", value_name = "ADDR")]
    pub(crate) admin_addr: String,
    /// After draining this long, open connections are closed and the proxy exits.
    #[arg(long, env = env::PROXY_SHUTDOWN_GRACE_PERIOD, default_value = "120s", value_name = "DURATION")]
    pub(crate) shutdown_grace_period: String,
    /// Serve `POST /shutdown` (loopback clients only); otherwise it answers 404.
    #[arg(
        long,
        env = env::PROXY_ENABLE_SHUTDOWN_ENDPOINT,
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub(crate) enable_shutdown_endpoint: String,
    /// A downward-API annotations file, re-read while running; its `lameduck.io/shutdown-grace-period`
    /// and `lameduck.io/enable-shutdown-endpoint` override the flags.
    #[arg(long, env = env::PROXY_SETTINGS_FILE, value_name = "PATH")]
    pub(crate) settings_file: Option<PathBuf>,
    /// How often the settings file is re-read.
    #[arg(long, env = env::PROXY_SETTINGS_POLL_INTERVAL, default_value = "1s", value_name = "DURATION")]
    pub(crate) settings_poll_interval: String,
    /// An HTTP/1 request head must arrive within this time (slowloris guard).
    #[arg(long, env = env::PROXY_HEADER_READ_TIMEOUT, default_value = "10s", value_name = "DURATION")]
    pub(crate) header_read_timeout: String,
    /// Connections to the app open at once, all kinds together (HTTP/1, HTTP/2, opaque TCP):
    /// past it, a request that needs a new one gets a 503 from the proxy.
    #[arg(long, env = env::PROXY_MAX_APP_CONNECTIONS, default_value = "1024", value_name = "N")]
    pub(crate) max_app_connections: String,
    /// An inbound HTTP/1 keep-alive connection waiting for its next request, or an HTTP/2
    /// connection with no request open, is closed after this long (HTTP/2: with GOAWAY).
    #[arg(long, env = env::PROXY_INBOUND_IDLE_TIMEOUT, default_value = "10m", value_name = "DURATION")]
    pub(crate) inbound_idle_timeout: String,
    /// Inbound connections open at once; one past it is accepted and closed at once.
    #[arg(long, env = env::PROXY_MAX_INBOUND_CONNECTIONS, default_value = "10000", value_name = "N")]
    pub(crate) max_inbound_connections: String,
    /// Worker threads: 1 runs everything on one thread, like one nginx worker; more use tokio's
    /// multi-thread scheduler.
    #[arg(long, env = env::PROXY_CORES, default_value = "1", value_name = "N")]
    pub(crate) cores: String,
    /// Log format: `plain` or `json`.
    #[arg(long, env = env::PROXY_LOG_FORMAT, default_value = "plain", value_name = "FORMAT")]
    pub(crate) log_format: String,
    /// Log filter, e.g. `info` or `lameduck_proxy=debug`.
    #[arg(long, env = env::PROXY_LOG_LEVEL, default_value = "info", value_name = "FILTER")]
    pub(crate) log_level: String,
}

/// More worker threads than this is a typo rather than a sidecar's size.
const MAX_CORES: usize = 64;

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Plain,
    Json,
}

/// Validated settings.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Config {
    pub(crate) inbound_addr: SocketAddr,
    pub(crate) inbound_target: SocketAddr,
    pub(crate) outbound_addr: SocketAddr,
    pub(crate) admin_addr: SocketAddr,
    pub(crate) shutdown_grace_period: Duration,
    pub(crate) enable_shutdown_endpoint: bool,
    pub(crate) settings_file: Option<PathBuf>,
    pub(crate) settings_poll_interval: Duration,
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_app_connections: usize,
    pub(crate) inbound_idle_timeout: Duration,
    pub(crate) max_inbound_connections: usize,
    pub(crate) cores: usize,
    pub(crate) log_format: LogFormat,
    pub(crate) log_level: String,
}

/// Parses a boolean the way people write them in env vars.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

impl RunArgs {
    /// Checks every flag; on failure returns one message per bad flag, each naming it.
    pub(crate) fn validate(&self) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        let mut addr = |flag: &str, var: &str, text: &str| -> SocketAddr {
            text.trim().parse().unwrap_or_else(|_| {
                errors.push(format!("--{flag} ({var}): {text:?} is not an address such as 127.0.0.1:4143"));
                SocketAddr::from(([0, 0, 0, 0], 0))
            })
        };
        let inbound_addr = addr("inbound-addr", env::PROXY_INBOUND_ADDR, &self.inbound_addr);
        let inbound_target = addr("inbound-target", env::PROXY_INBOUND_TARGET, &self.inbound_target);
        let outbound_addr = addr("outbound-addr", env::PROXY_OUTBOUND_ADDR, &self.outbound_addr);
        let admin_addr = addr("admin-addr", env::PROXY_ADMIN_ADDR, &self.admin_addr);

        let mut duration = |flag: &str, var: &str, text: &str| -> Duration {
            match text.trim().parse::<GoDuration>() {
                Ok(d) => d.as_std(),
                Err(err) => {
                    errors.push(format!("--{flag} ({var}): {err}"));
                    Duration::ZERO
                }
            }
        };
        let shutdown_grace_period =
            duration("shutdown-grace-period", env::PROXY_SHUTDOWN_GRACE_PERIOD, &self.shutdown_grace_period);
        let settings_poll_interval = duration(
            "settings-poll-interval",
            env::PROXY_SETTINGS_POLL_INTERVAL,
            &self.settings_poll_interval,
        );
        let header_read_timeout =
            duration("header-read-timeout", env::PROXY_HEADER_READ_TIMEOUT, &self.header_read_timeout);
        let inbound_idle_timeout =
            duration("inbound-idle-timeout", env::PROXY_INBOUND_IDLE_TIMEOUT, &self.inbound_idle_timeout);
        for (flag, var, value) in [
            ("settings-poll-interval", env::PROXY_SETTINGS_POLL_INTERVAL, settings_poll_interval),
            ("header-read-timeout", env::PROXY_HEADER_READ_TIMEOUT, header_read_timeout),
            ("inbound-idle-timeout", env::PROXY_INBOUND_IDLE_TIMEOUT, inbound_idle_timeout),
        ] {
            if value.is_zero() && !errors.iter().any(|e| e.contains(flag)) {
                errors.push(format!("--{flag} ({var}): must be longer than 0s"));
            }
        }

        let enable_shutdown_endpoint = parse_bool(&self.enable_shutdown_endpoint).unwrap_or_else(|| {
            errors.push(format!(
                "--enable-shutdown-endpoint ({}): {:?} is not true or false",
                env::PROXY_ENABLE_SHUTDOWN_ENDPOINT,
                self.enable_shutdown_endpoint
            ));
            false
        });
        let allow_open_outbound = parse_bool(&self.allow_open_outbound).unwrap_or_else(|| {
            errors.push(format!(
                "--allow-open-outbound ({}): {:?} is not true or false",
                env::PROXY_ALLOW_OPEN_OUTBOUND,
                self.allow_open_outbound
            ));
            false
        });
        let outbound_parsed = self.outbound_addr.trim().parse::<SocketAddr>().is_ok();
        if outbound_parsed && !outbound_addr.ip().is_loopback() && !allow_open_outbound {
            errors.push(format!(
                "--outbound-addr ({}): {outbound_addr} is not a loopback address, so any peer could \
                 send requests through it to the pod's loopback-only services, /shutdown included; \
                 use 127.0.0.1, or pass --allow-open-outbound ({}) if that is intended",
                env::PROXY_OUTBOUND_ADDR,
                env::PROXY_ALLOW_OPEN_OUTBOUND
            ));
        }
        let mut count = |flag: &str, var: &str, text: &str| -> usize {
            match text.trim().parse::<usize>() {
                Ok(n) if n > 0 && u32::try_from(n).is_ok() => n,
                _ => {
                    errors.push(format!(
                        "--{flag} ({var}): {text:?} is not a whole number from 1 to {}",
                        u32::MAX
                    ));
                    1
                }
            }
        };
        let max_app_connections =
            count("max-app-connections", env::PROXY_MAX_APP_CONNECTIONS, &self.max_app_connections);
        let max_inbound_connections = count(
            "max-inbound-connections",
            env::PROXY_MAX_INBOUND_CONNECTIONS,
            &self.max_inbound_connections,
        );
        let cores = match self.cores.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_CORES).contains(&n) => n,
            _ => {
                errors.push(format!(
                    "--cores ({}): {:?} is not a whole number from 1 to {MAX_CORES}",
                    env::PROXY_CORES,
                    self.cores
                ));
                1
            }
        };
        let log_format = match self.log_format.trim() {
            "plain" => LogFormat::Plain,
            "json" => LogFormat::Json,
            other => {
                errors.push(format!(
                    "--log-format ({}): {other:?} is not plain or json",
                    env::PROXY_LOG_FORMAT
                ));
                LogFormat::Plain
            }
        };
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            errors.push(format!("--log-level ({}): {:?}: {err}", env::PROXY_LOG_LEVEL, self.log_level));
        }

        // Two listeners on one address would fail at bind with a less helpful message.
        let listeners =
            [("inbound-addr", inbound_addr), ("outbound-addr", outbound_addr), ("admin-addr", admin_addr)];
        for (i, (a_flag, a)) in listeners.iter().enumerate() {
            for (b_flag, b) in &listeners[i + 1..] {
                if a == b && a.port() != 0 {
                    errors.push(format!(
                        "--{a_flag} and --{b_flag} are both {a}; each listener needs its own port"
                    ));
                }
            }
        }
        if inbound_target == inbound_addr {
            errors.push(format!("--inbound-target {inbound_target} is the proxy's own --inbound-addr"));
        }

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Config {
            inbound_addr,
            inbound_target,
            outbound_addr,
            admin_addr,
            shutdown_grace_period,
            enable_shutdown_endpoint,
            settings_file: self.settings_file.clone(),
            settings_poll_interval,
            header_read_timeout,
            max_app_connections,
            inbound_idle_timeout,
            max_inbound_connections,
            cores,
            log_format,
            log_level: self.log_level.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use lameduck_api::names::ports;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: RunArgs,
    }

    #[test]
    fn a_non_loopback_outbound_address_needs_its_flag() {
        let errors = args(&["--outbound-addr", "0.0.0.0:4140"]).validate().unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "--outbound-addr (LAMEDUCK_PROXY_OUTBOUND_ADDR): 0.0.0.0:4140 is not a loopback address"
            ),
            "{errors:?}"
        );
        assert!(
            errors[0].contains("--allow-open-outbound (LAMEDUCK_PROXY_ALLOW_OPEN_OUTBOUND)"),
            "{errors:?}"
        );
        for flags in [
            &["--outbound-addr", "0.0.0.0:4140", "--allow-open-outbound"][..],
            &["--outbound-addr", "10.0.0.7:4140", "--allow-open-outbound", "true"],
            &["--outbound-addr", "[::1]:4140"],
            &["--outbound-addr", "127.0.0.2:4140"],
        ] {
            assert!(args(flags).validate().is_ok(), "{flags:?}");
        }
    }

    fn args(flags: &[&str]) -> RunArgs {
        Wrapper::try_parse_from(std::iter::once("lameduck-proxy").chain(flags.iter().copied())).unwrap().args
    }

    #[test]
    fn defaults_are_the_contract() {
        let config = args(&[]).validate().unwrap();
        assert_eq!(config.inbound_addr, SocketAddr::from(([0, 0, 0, 0], ports::INBOUND)));
        assert_eq!(config.inbound_target, SocketAddr::from(([127, 0, 0, 1], ports::APP)));
        assert_eq!(config.outbound_addr, SocketAddr::from(([127, 0, 0, 1], ports::OUTBOUND)));
        assert_eq!(config.admin_addr, SocketAddr::from(([0, 0, 0, 0], ports::ADMIN)));
        assert_eq!(config.shutdown_grace_period, Duration::from_secs(120));
        assert!(!config.enable_shutdown_endpoint);
        assert_eq!(config.cores, 1);
        assert_eq!(config.max_app_connections, 1024);
        assert_eq!(config.inbound_idle_timeout, Duration::from_secs(600));
        assert_eq!(config.max_inbound_connections, 10_000);
        assert_eq!(config.log_format, LogFormat::Plain);
    }

    #[test]
    fn every_bad_flag_is_reported_at_once() {
        let errors = args(&[
            "--inbound-addr",
            "nowhere",
            "--shutdown-grace-period",
            "2 minutes",
            "--enable-shutdown-endpoint",
            "maybe",
            "--log-format",
            "xml",
            "--settings-poll-interval",
            "0s",
            "--cores",
            "0",
            "--max-app-connections",
            "none",
            "--inbound-idle-timeout",
            "0s",
            "--max-inbound-connections",
            "0",
        ])
        .validate()
        .unwrap_err();
        let joined = errors.join("\n");
        assert_eq!(errors.len(), 9, "{joined}");
        for needle in [
            "--inbound-addr (LAMEDUCK_PROXY_INBOUND_ADDR): \"nowhere\"",
            "--shutdown-grace-period (LAMEDUCK_PROXY_SHUTDOWN_GRACE_PERIOD)",
            "--enable-shutdown-endpoint",
            "--log-format",
            "--settings-poll-interval",
            "--cores (LAMEDUCK_PROXY_CORES): \"0\" is not a whole number from 1 to 64",
            "--max-app-connections (LAMEDUCK_PROXY_MAX_APP_CONNECTIONS): \"none\" is not a whole number",
            "--inbound-idle-timeout (LAMEDUCK_PROXY_INBOUND_IDLE_TIMEOUT): must be longer than 0s",
            "--max-inbound-connections (LAMEDUCK_PROXY_MAX_INBOUND_CONNECTIONS): \"0\" is not a whole number",
        ] {
            assert!(joined.contains(needle), "{needle} missing from {joined}");
        }
    }

    #[test]
    fn bare_flag_enables_the_endpoint() {
        assert!(args(&["--enable-shutdown-endpoint"]).validate().unwrap().enable_shutdown_endpoint);
        assert!(!args(&["--enable-shutdown-endpoint=false"]).validate().unwrap().enable_shutdown_endpoint);
    }

    #[test]
    fn shared_listener_addresses_are_refused() {
        let errors = args(&["--admin-addr", "127.0.0.1:4140"]).validate().unwrap_err();
        assert!(errors[0].contains("--outbound-addr and --admin-addr are both 127.0.0.1:4140"), "{errors:?}");
    }
}
