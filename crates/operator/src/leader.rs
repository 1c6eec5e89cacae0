//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager). Every replica watches
//! and keeps its caches warm; only the holder of the Lease acts. When the holder stops (or
//! stops renewing), another replica takes the Lease within its duration.

use futures::Stream;
use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::{sync::watch, task::JoinHandle};

use crate::metrics::Metrics;

/// Where the Lease is and who this replica is.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// Seconds a Lease stays held without renewal.
    pub duration_secs: u64,
}

/// The election. `is_leader` follows this replica's state; [`Election::resign`] stops taking
/// part and releases the Lease, so that on shutdown the next replica need not wait it out.
#[derive(Debug)]
pub struct Election {
    pub is_leader: watch::Receiver<bool>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Result<(), LeaseManagerError>>,
}

impl Election {
    /// Stops renewing and releases the Lease if this replica holds it.
    pub async fn resign(self) -> Result<(), LeaseManagerError> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(Ok(()))
    }
}

/// Joins the election.
pub async fn join(
    client: Client,
    settings: &LeaseSettings,
    metrics: Metrics,
) -> Result<Election, LeaseManagerError> {
    // Renew a third of the duration ahead, as client-go's leader election does.
    let grace = (settings.duration_secs / 3).max(1);
    let manager = LeaseManagerBuilder::new(client, settings.name.clone())
        .with_namespace(settings.namespace.clone())
        .with_identity(settings.identity.clone())
        .with_duration(settings.duration_secs)
        .with_grace(grace)
        .build()
        .await?;
    let (state, is_leader) = watch::channel(false);
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let identity = settings.identity.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                changed = manager.changed() => match changed {
                    Ok(leading) => {
                        metrics.leader.set(i64::from(leading));
                        tracing::info!(%identity, leading, "leader election");
                        state.send_replace(leading);
                    }
                    Err(err) => {
                        // Still the holder until the Lease expires for the others; keep trying.
                        tracing::warn!(%identity, error = %err, "cannot renew or read the leader Lease");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                },
            }
        }
        state.send_replace(false);
        metrics.leader.set(0);
        manager.release().await
    });
    Ok(Election { is_leader, stop, task })
}

/// Yields once each time this replica becomes the leader: the trigger to look at every pod.
/// (At start-up the first list of pods triggers every pod anyway.)
pub fn elected(is_leader: watch::Receiver<bool>) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(is_leader, |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            if *rx.borrow_and_update() {
                return Some(((), rx));
            }
        }
    })
}
