//! `--shutdown` mode: run the app as a child and pass the signals a container receives on to it.

use std::{
    io,
    process::ExitStatus,
    task::{Context, Poll},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{
    process::Command,
    signal::unix::{SignalKind, signal},
};
use tracing::{debug, info, warn};

/// Signals forwarded to the app: what kubelet, a terminal or an operator may send to PID 1.
pub const FORWARDED: [Signal; 6] =
    [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2];

/// Why the app did not run.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The signal handlers could not be installed.
    #[error("cannot listen for {signal}: {source}")]
    Signal {
        /// The signal.
        signal: Signal,
        /// The OS error.
        source: io::Error,
    },
    /// The program could not be started.
    #[error("cannot run {program:?}: {source}")]
    Spawn {
        /// The program as given.
        program: String,
        /// The OS error.
        source: io::Error,
    },
    /// Waiting for the app failed (the OS lost track of it).
    #[error("cannot wait for {program:?}: {source}")]
    Wait {
        /// The program as given.
        program: String,
        /// The OS error.
        source: io::Error,
    },
}

/// Runs `argv` to completion, forwarding [`FORWARDED`] signals to it, and returns how it ended.
pub async fn run_app(argv: &[String]) -> Result<ExitStatus, SupervisorError> {
    let (program, args) = argv.split_first().expect("clap requires CMD with --shutdown");

    // Listen before spawning: a signal that arrives in between is then queued and forwarded,
    // instead of killing this process by its default action and orphaning the app.
    let mut listeners = Vec::with_capacity(FORWARDED.len());
    for sig in FORWARDED {
        let listener = signal(SignalKind::from_raw(sig as i32))
            .map_err(|source| SupervisorError::Signal { signal: sig, source })?;
        listeners.push((sig, listener));
    }

    let mut child = Command::new(program)
        .args(args)
        .spawn()
        .map_err(|source| SupervisorError::Spawn { program: program.clone(), source })?;
    let pid = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
    info!("started {program:?} as pid {}", pid.map(|pid| pid.as_raw()).unwrap_or_default());

    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|source| SupervisorError::Wait { program: program.clone(), source })?;
                info!("{program:?} ended: {status}");
                return Ok(status);
            }
            sig = next_signal(&mut listeners) => {
                // `pid` stays valid until `wait` above reaps the child, which has not happened yet.
                let Some(pid) = pid else { continue };
                match kill(pid, sig) {
                    Ok(()) => debug!("forwarded {sig} to {program:?}"),
                    Err(error) => warn!("could not forward {sig} to {program:?}: {error}"),
                }
            }
        }
    }
}

/// The next signal any listener receives.
async fn next_signal(listeners: &mut [(Signal, tokio::signal::unix::Signal)]) -> Signal {
    std::future::poll_fn(|cx: &mut Context<'_>| {
        for (sig, listener) in listeners.iter_mut() {
            if let Poll::Ready(Some(())) = listener.poll_recv(cx) {
                return Poll::Ready(*sig);
            }
        }
        Poll::Pending
    })
    .await
}
