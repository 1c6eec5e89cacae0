//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager). Every replica watches
//! and keeps its caches warm; only the holder of the Lease acts. When the holder stops (or
//! stops renewing), another replica takes the Lease within its duration.
//!
//! A holder cut off from the API server learns it lost the Lease only when a call fails, which
//! can take longer than the Lease lasts. So this replica also watches its own Lease and acts
//! only while the last renewal it saw is fresh: it stops a margin before any other replica
//! could take over, whether or not its renewals fail loudly.

use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
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

/// How long before the Lease could pass to another replica this one stops acting: a fifth of
/// its duration, at least a second, for the delay of the watch and clocks that differ.
pub fn margin(duration: Duration) -> Duration {
    (duration / 5).max(Duration::from_secs(1))
}

/// Whether a replica acts now: the election says it leads, and the last renewal of its own
/// that it saw (`renewed`) leaves more than `margin` of the Lease's `duration`. Also when to
/// look again if nothing changes (the moment it would stop). Pure.
pub fn acting(
    leading: bool,
    renewed: Option<Timestamp>,
    now: Timestamp,
    duration: Duration,
    margin: Duration,
) -> (bool, Option<Timestamp>) {
    let Some(renewed) = renewed.filter(|_| leading) else { return (false, None) };
    let until = duration.saturating_sub(margin);
    let stop_at = jiff_plus(renewed, until);
    (now < stop_at, (now < stop_at).then_some(stop_at))
}

fn jiff_plus(at: Timestamp, duration: Duration) -> Timestamp {
    k8s_openapi::jiff::SignedDuration::try_from(duration)
        .ok()
        .and_then(|d| at.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// How long before the Lease expires its holder renews it: two thirds of the duration, so that a
/// renewal follows a third of the way in, and one that is slow to be written or seen (a busy API
/// server) still lands well before [`acting`] stops at `duration - margin`. (A third, the first
/// choice, renewed two thirds of the way in and left 2 s of a 15 s Lease to see the renewal: under
/// the 10,000-pod benchmark the leader fenced itself off and decided nothing.)
pub fn renew_grace(duration_secs: u64) -> u64 {
    (duration_secs * 2 / 3).clamp(1, duration_secs.saturating_sub(1).max(1))
}

/// This replica's renewals of the Lease as the API server holds them.
fn own_renewals(
    client: Client,
    settings: &LeaseSettings,
) -> impl Stream<Item = Option<Timestamp>> + Send + 'static {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", settings.name));
    let identity = settings.identity.clone();
    watcher(api, config).default_backoff().applied_objects().filter_map(move |lease| {
        let renewed = lease.ok().and_then(|lease| {
            let spec = lease.spec?;
            (spec.holder_identity.as_deref() == Some(identity.as_str())).then_some(spec.renew_time?.0)
        });
        futures::future::ready(Some(renewed))
    })
}

/// Joins the election.
pub async fn join(
    client: Client,
    settings: &LeaseSettings,
    metrics: Metrics,
) -> Result<Election, LeaseManagerError> {
    let grace = renew_grace(settings.duration_secs);
    let client_for_watch = client.clone();
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
    let duration = Duration::from_secs(settings.duration_secs);
    let margin = margin(duration);
    let renewals = own_renewals(client_for_watch, settings);
    // The manager renews from inside `changed()`, which must never be dropped half-way through a
    // renewal: it runs in a task of its own and reports its answers here.
    let manager = std::sync::Arc::new(manager);
    let (answers_tx, mut answers) = tokio::sync::mpsc::channel(4);
    let elector = {
        let manager = manager.clone();
        tokio::spawn(async move {
            loop {
                let answer = manager.changed().await;
                let failed = answer.is_err();
                if answers_tx.send(answer).await.is_err() {
                    return;
                }
                if failed {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        })
    };
    let task = tokio::spawn(async move {
        tokio::pin!(renewals);
        let (mut leading, mut renewed) = (false, None);
        let mut recheck: Option<Timestamp> = None;
        loop {
            let wake = recheck.map(|at| {
                let wait = Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or_default();
                tokio::time::Instant::now() + wait
            });
            tokio::select! {
                _ = &mut stopped => break,
                Some(answer) = answers.recv() => match answer {
                    Ok(now_leading) => {
                        tracing::info!(%identity, leading = now_leading, "leader election");
                        leading = now_leading;
                    }
                    // Renewals may still succeed later; the fence below stops acting in time.
                    Err(err) => tracing::warn!(%identity, error = %err, "cannot renew or read the leader Lease"),
                },
                Some(seen) = renewals.next() => renewed = seen,
                _ = tokio::time::sleep_until(wake.unwrap_or_else(|| tokio::time::Instant::now() + duration)) => {}
            }
            let (act, until) = acting(leading, renewed, Timestamp::now(), duration, margin);
            recheck = until;
            if *state.borrow() != act {
                if !act && leading {
                    tracing::warn!(%identity, "no renewal of the leader Lease seen in time; not acting until one is");
                }
                state.send_replace(act);
                metrics.leader.set(i64::from(act));
            }
        }
        state.send_replace(false);
        metrics.leader.set(0);
        // Stopped between renewals or in one: either way no renewal follows the release.
        elector.abort();
        let _ = elector.await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn renewals_leave_room_before_the_fence() {
        // From 5 s up: shorter Leases leave no room for any margin.
        for duration in [5, 15, 60, 137] {
            let grace = renew_grace(duration);
            assert!(grace >= 1 && grace < duration, "{duration}: {grace}");
            let renew_after = duration - grace;
            let fence = Duration::from_secs(duration) - margin(Duration::from_secs(duration));
            assert!(
                Duration::from_secs(renew_after * 2) <= fence,
                "{duration}: a second renewal ({}s) still falls before the fence ({fence:?})",
                renew_after * 2
            );
        }
    }

    #[test]
    fn a_leader_acts_only_while_its_last_renewal_is_fresh() {
        let duration = Duration::from_secs(15);
        let m = margin(duration);
        assert_eq!(m, Duration::from_secs(3));
        // Renewed at 0: acts until 12, three seconds before another replica could take over.
        assert_eq!(acting(true, Some(at(0)), at(5), duration, m), (true, Some(at(12))));
        assert_eq!(acting(true, Some(at(0)), at(12), duration, m), (false, None));
        // Cut off from the API server, renewals stop arriving: it stops by itself.
        assert!(!acting(true, Some(at(0)), at(14), duration, m).0);
        // A renewal seen brings it back.
        assert!(acting(true, Some(at(10)), at(14), duration, m).0);
        // Not the leader, or no renewal of its own seen yet: no action.
        assert_eq!(acting(false, Some(at(0)), at(1), duration, m), (false, None));
        assert_eq!(acting(true, None, at(1), duration, m), (false, None));
        assert_eq!(margin(Duration::from_secs(2)), Duration::from_secs(1));
    }
}
