//! Waiting for the proxy: poll `/ready` until it answers 2xx, sleeping `backoff` between tries.

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::admin_client::AdminClient;

/// After this long without readiness, say so once even when not verbose: a wait without
/// `--timeout` can last forever, and silence would hide why the app never starts.
const SLOW_WAIT_WARNING: Duration = Duration::from_secs(10);

/// How the wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// `/ready` answered 2xx.
    Ready,
    /// The timeout fired first.
    TimedOut,
}

/// Polls until the proxy is ready or `limit` has passed.
pub async fn wait_until_ready(client: &AdminClient, backoff: Duration, limit: Option<Duration>) -> Readiness {
    let poll = poll_until_ready(client, backoff);
    match limit {
        Some(limit) => tokio::time::timeout(limit, poll).await.unwrap_or(Readiness::TimedOut),
        None => poll.await,
    }
}

async fn poll_until_ready(client: &AdminClient, backoff: Duration) -> Readiness {
    let started = Instant::now();
    let mut warned = false;
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        let why = match client.ready().await {
            Ok(status) if status.is_success() => {
                info!(attempt, elapsed = ?started.elapsed(), "proxy at {} is ready", client.uri());
                return Readiness::Ready;
            }
            Ok(status) => format!("/ready answered {status}"),
            Err(error) => error.to_string(),
        };
        debug!(attempt, "proxy not ready yet: {why}; next check in {backoff:?}");
        if !warned && started.elapsed() >= SLOW_WAIT_WARNING {
            warned = true;
            warn!("still waiting for the proxy at {} after {:?}: {why}", client.uri(), started.elapsed());
        }
        tokio::time::sleep(backoff).await;
    }
}
