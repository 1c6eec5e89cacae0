//! `lameduck-await`: waits for the mesh proxy to be ready, runs the app, and with `--shutdown`
//! shuts the proxy down when the app exits, so a Job's pod completes by itself.
//! A drop-in for linkerd-await: same flags, defaults and exit codes.
#![forbid(unsafe_code)]

mod admin_client;
mod cli;
mod disabled;
mod exit_code;
mod proxy_shutdown;
mod readiness;
mod supervisor;

use std::{
    io,
    os::unix::process::CommandExt,
    process::{Command, ExitCode},
    time::Duration,
};

use anyhow::Context;
use clap::Parser;
use lameduck_api::{GoDuration, names::env};
use tracing::{error, info, level_filters::LevelFilter, warn};
use tracing_subscriber::{filter::Targets, fmt, prelude::*};

use crate::{admin_client::AdminClient, cli::Args, readiness::Readiness};

/// How long one connect, or one wait for an answer, may take. A proxy on loopback answers in
/// well under a millisecond; this only bounds a wedged one, so the backoff loop keeps going.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// What to do once the async part is over.
enum Next {
    /// Exit with this code.
    Exit(u8),
    /// Replace this process with the command.
    Exec,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.verbose || linkerd_verbose());
    // Prefixes every line, so these logs stand out among the app's on the same stderr.
    let span = tracing::error_span!("lameduck-await");
    let _entered = span.enter();
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            error!("{error:#}");
            ExitCode::from(exit_code::OS_ERROR)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match runtime.block_on(wait_and_supervise(args)) {
        Next::Exit(code) => Ok(code),
        Next::Exec => {
            let (program, rest) = args.cmd.split_first().context("no command to run")?;
            info!("running {program:?}");
            // Only returns on failure; on success the app takes over this process, its PID,
            // its signals and its exit code.
            let error = Command::new(program).args(rest).exec();
            error!("cannot run {program:?}: {error}");
            Ok(exit_code::OS_ERROR)
        }
    }
}

async fn wait_and_supervise(args: &Args) -> Next {
    let client = AdminClient::new(args.admin_uri(), REQUEST_TIMEOUT);

    match disabled::disabled_by(|name| std::env::var(name).ok()) {
        Some((name, reason)) => info!("readiness check skipped: {name}={reason:?}"),
        None => {
            let limit = args.timeout.map(GoDuration::as_std);
            match readiness::wait_until_ready(&client, args.backoff.as_std(), limit).await {
                Readiness::Ready => {}
                Readiness::TimedOut if args.timeout_fatal => {
                    error!("the proxy at {} was not ready within {}", client.uri(), timeout_text(args));
                    return Next::Exit(exit_code::PROXY_UNAVAILABLE);
                }
                Readiness::TimedOut => warn!(
                    "the proxy at {} was not ready within {}; running the command anyway (--timeout-fatal=false)",
                    client.uri(),
                    timeout_text(args)
                ),
            }
        }
    }

    if args.cmd.is_empty() {
        return Next::Exit(0);
    }
    if !args.shutdown {
        return Next::Exec;
    }

    let code = match supervisor::run_app(&args.cmd).await {
        Ok(status) => exit_code::of_status(status),
        Err(error) => {
            error!("{error}");
            exit_code::OS_ERROR
        }
    };
    // Also after a failed start: the proxy must go, or the Job's pod never completes.
    proxy_shutdown::shut_down_proxy(&client).await;
    Next::Exit(code)
}

fn timeout_text(args: &Args) -> String {
    args.timeout.map(|timeout| timeout.to_string()).unwrap_or_default()
}

/// linkerd-await's `LINKERD_AWAIT_VERBOSE`, honoured for drop-in use.
fn linkerd_verbose() -> bool {
    std::env::var(env::LINKERD_AWAIT_VERBOSE)
        .map(|value| matches!(value.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "y" | "on"))
        .unwrap_or(false)
}

/// Plain-text logs on stderr: warnings and errors only, unless `-v`.
fn init_logging(verbose: bool) {
    let ours = if verbose { LevelFilter::DEBUG } else { LevelFilter::WARN };
    // Others (hyper) stay at warnings even with -v; their debug output says nothing useful here.
    let filter = Targets::new().with_target(env!("CARGO_CRATE_NAME"), ours).with_default(LevelFilter::WARN);
    tracing_subscriber::registry()
        .with(fmt::layer().with_writer(io::stderr).with_ansi(false).with_target(false))
        .with(filter)
        .init();
}
