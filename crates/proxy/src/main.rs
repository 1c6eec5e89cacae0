//! `lameduck-proxy`: a sidecar proxy that drains without dropping an accepted request.
#![forbid(unsafe_code)]
// Nothing a client or the app sends may panic the proxy: no unwrap or expect outside tests
// (clippy.toml allows them there).
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod app;
mod config;
mod control;
mod detect;
mod forward;
mod lifecycle;
mod metrics;
mod opaque;
mod prefixed;
mod relay;
mod response_body;
mod serve;
mod settings;
mod upstream;

use std::{
    process::ExitCode,
    sync::{Arc, atomic::Ordering},
};

use clap::{Parser, Subcommand};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, mpsc},
};

use crate::{
    admin::Admin,
    config::{Config, LogFormat, RunArgs},
    forward::Forwarder,
    lifecycle::{Lifecycle, Triggers},
    metrics::{Direction, Metrics},
    relay::Relay,
    serve::Listener,
    settings::Settings,
};

/// Exit code for bad flags (EX_USAGE), as the contract says.
const EXIT_CONFIG: u8 = 64;
/// Exit code when the proxy cannot start (a listener cannot bind).
const EXIT_START: u8 = 1;

/// A sidecar proxy that drains without dropping an accepted request.
///
/// Run without a subcommand to proxy. Every flag also reads LAMEDUCK_PROXY_<FLAG>.
#[derive(Debug, Parser)]
#[command(name = "lameduck-proxy", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask a running proxy to shut down (POST /shutdown), or signal it with --signal.
    Shutdown(control::ShutdownArgs),
    /// Sleep, then exit 0: a preStop wait that needs no shell.
    Wait(control::WaitArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Some(Command::Wait(args)) => {
            std::thread::sleep(std::time::Duration::from_secs(args.seconds));
            ExitCode::SUCCESS
        }
        Some(Command::Shutdown(args)) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            let Ok(runtime) = runtime else {
                eprintln!("error: cannot start the async runtime");
                return ExitCode::FAILURE;
            };
            match runtime.block_on(control::shutdown(&args)) {
                Ok(message) => {
                    println!("{message}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    if err.is_endpoint_disabled() {
                        ExitCode::from(lameduck_api::admin::EXIT_ENDPOINT_DISABLED as u8)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
        None => match cli.run.validate() {
            Ok(config) => start(config),
            Err(errors) => {
                for error in errors {
                    eprintln!("error: {error}");
                }
                ExitCode::from(EXIT_CONFIG)
            }
        },
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log_level);
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Lets one process hold many connections: the soft descriptor limit goes up to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %err, soft, hard, "cannot raise the open-file limit");
    }
}

fn start(config: Config) -> ExitCode {
    init_logging(&config);
    raise_fd_limit();
    // One thread, like one nginx worker: a sidecar gets about a core, and keeping each connection
    // and its upstream on one event loop avoids cross-thread wakeups. Measured on 2 cores, this
    // used about 15% less CPU per request than tokio's multi-thread scheduler (crate README).
    // One thread costs the least CPU per request; more let a busy proxy use more cores.
    let built = match config.cores {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    };
    let runtime = match built {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::from(EXIT_START);
        }
    };
    let code = runtime.block_on(run(config));
    // Connections still open at exit were counted as forced; nothing below may wait on them.
    runtime.shutdown_background();
    code
}

async fn bind(addr: std::net::SocketAddr, flag: &str) -> Result<TcpListener, ExitCode> {
    TcpListener::bind(addr).await.map_err(|err| {
        tracing::error!(%addr, error = %err, "cannot listen on {flag}");
        ExitCode::from(EXIT_START)
    })
}

async fn run(config: Config) -> ExitCode {
    let metrics = Arc::new(Metrics::new());
    let lifecycle = Lifecycle::new();
    let base = Settings {
        shutdown_grace_period: config.shutdown_grace_period,
        enable_shutdown_endpoint: config.enable_shutdown_endpoint,
    };
    let settings = settings::watch(
        base,
        config.settings_file.clone(),
        config.settings_poll_interval,
        Arc::clone(&metrics),
    )
    .await;

    let (inbound, outbound, admin_listener) = match (
        bind(config.inbound_addr, "--inbound-addr").await,
        bind(config.outbound_addr, "--outbound-addr").await,
        bind(config.admin_addr, "--admin-addr").await,
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => return ExitCode::from(EXIT_START),
    };

    let (shutdown_tx, shutdown_rx) = mpsc::channel(1);
    let admin = Arc::new(Admin {
        lifecycle: Arc::clone(&lifecycle),
        metrics: Arc::clone(&metrics),
        settings: settings.clone(),
        listening: false.into(),
        shutdown: shutdown_tx,
        header_read_timeout: config.header_read_timeout,
    });
    tokio::spawn(Arc::clone(&admin).serve(admin_listener));
    // Every connection to the app, whatever opened it, counts against one budget.
    let app_connections = app::AppConnections::new(config.max_app_connections, &metrics);
    for (direction, target, listener) in [
        (Direction::Inbound, Some((config.inbound_target, app_connections)), inbound),
        (Direction::Outbound, None, outbound),
    ] {
        let forwarder =
            Arc::new(Forwarder::new(direction, target.clone(), Arc::clone(&lifecycle), Arc::clone(&metrics)));
        let inbound = direction == Direction::Inbound;
        let relay = target.clone().map(|(target, slots)| {
            Relay::new(
                target,
                Arc::clone(&lifecycle),
                &metrics,
                config.header_read_timeout,
                config.inbound_idle_timeout,
                slots,
            )
        });
        let listener_state = Arc::new(Listener {
            direction,
            target,
            forwarder,
            relay,
            lifecycle: Arc::clone(&lifecycle),
            metrics: Arc::clone(&metrics),
            header_read_timeout: config.header_read_timeout,
            idle_timeout: inbound.then_some(config.inbound_idle_timeout),
            connection_slots: inbound.then(|| Arc::new(Semaphore::new(config.max_inbound_connections))),
        });
        tokio::spawn(listener_state.accept_loop(listener));
    }

    let mut triggers = match Triggers::new(shutdown_rx) {
        Ok(triggers) => triggers,
        Err(err) => {
            tracing::error!(error = %err, "cannot install signal handlers");
            return ExitCode::from(EXIT_START);
        }
    };
    admin.listening.store(true, Ordering::Release);
    tracing::info!(
        inbound = %config.inbound_addr,
        target = %config.inbound_target,
        outbound = %config.outbound_addr,
        admin = %config.admin_addr,
        "lameduck-proxy ready"
    );
    lifecycle.shut_down(&mut triggers, || settings.borrow().shutdown_grace_period, &metrics.draining).await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use lameduck_api::{ProxyProfile, prestop};

    /// What crates/api writes for this binary (the Lameduck profile's exec command, the preStop
    /// wait it reads) must parse here, or the operator's Exec method and the timing rules break.
    #[test]
    fn the_commands_the_api_crate_writes_parse_here() {
        let exec =
            ProxyProfile::Lameduck.exec_command(4191).expect("the Lameduck profile has an exec command");
        match Cli::try_parse_from(&exec).expect("the exec command parses").command {
            Some(Command::Shutdown(args)) => assert_eq!(args.admin_addr, "127.0.0.1:4191"),
            other => panic!("{exec:?} parsed as {other:?}"),
        }
        let wait = ["lameduck-proxy", prestop::PROXY_WAIT_SUBCOMMAND, prestop::PROXY_WAIT_SECONDS_FLAG, "20"];
        match Cli::try_parse_from(wait).expect("the preStop wait parses").command {
            Some(Command::Wait(args)) => assert_eq!(args.seconds, 20),
            other => panic!("{wait:?} parsed as {other:?}"),
        }
        assert_eq!(
            prestop::exec_delay(&wait.map(String::from)).known(),
            Some(std::time::Duration::from_secs(20))
        );
    }
}
