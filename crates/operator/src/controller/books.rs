//! What reconciles keep between runs, apart from the record on each pod: shutdowns not yet
//! written into policy status (the status loop takes them), events announced once, failures in
//! a row for the error backoff, and each namespace's share of the calls in flight.

use std::sync::PoisonError;
use std::{
    collections::{HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use lameduck_api::ShutdownCounts;

/// How lameduck's care of a pod ended, as counted in policy status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Succeeded,
    Failed,
    GaveUp,
}

/// Shutdowns counted since the status writer last wrote them, by policy uid: a policy deleted and
/// created again under the same name starts from nothing, and the status loop drops the counts
/// of policies that are gone.
#[derive(Debug, Default)]
pub struct PendingCounts(Mutex<HashMap<String, ShutdownCounts>>);

impl PendingCounts {
    pub(crate) fn add(&self, key: String, ending: Ending) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = map.entry(key).or_default();
        match ending {
            Ending::Succeeded => counts.succeeded += 1,
            Ending::Failed => counts.failed += 1,
            Ending::GaveUp => counts.gave_up += 1,
        }
    }

    /// Takes what is pending for one policy.
    pub fn take(&self, key: &str) -> ShutdownCounts {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(key).unwrap_or_default()
    }

    /// Puts back counts that could not be written.
    pub fn put_back(&self, key: String, counts: ShutdownCounts) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(key).or_default();
        entry.succeeded += counts.succeeded;
        entry.failed += counts.failed;
        entry.gave_up += counts.gave_up;
    }

    /// Forgets the counts of policies whose uid is not in `live`.
    pub fn retain_policies(&self, live: &HashSet<String>) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).retain(|uid, _| live.contains(uid));
    }
}

/// Events published once per pod and round without a record on the pod (dry-run decisions,
/// exhausted rounds). After a restart they may be published once more. Entries of pods that
/// are gone are dropped by the status loop, so the set does not grow without bound.
#[derive(Debug, Default)]
pub struct Announced(Mutex<HashSet<(String, u32)>>);

impl Announced {
    /// Whether this is the first announcement for this pod and round.
    pub(crate) fn first(&self, uid: String, round: u32) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert((uid, round))
    }

    /// Keeps only the pods still cached.
    pub fn retain_pods(&self, live: &HashSet<String>) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).retain(|(uid, _)| live.contains(uid));
    }
}

/// The first pause after a failed reconcile; it doubles with each failure in a row.
pub(crate) const FIRST_ERROR_BACKOFF: Duration = Duration::from_secs(5);
/// The longest pause after failed reconciles.
pub(crate) const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(300);

/// The pause after the `failures`-th failed reconcile in a row of one pod: doubling from 5s to 5
/// minutes, each cut by up to half at random (`seed`), so that pods that failed together (an API
/// server restart) do not all come back at the same moment.
pub fn error_backoff(failures: u32, seed: u64) -> Duration {
    let full =
        FIRST_ERROR_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(MAX_ERROR_BACKOFF);
    let kept = 0.5 + (seed % 1000) as f64 / 2000.0;
    full.mul_f64(kept)
}

/// Failed reconciles in a row, by pod uid; forgotten on success and when the pod is gone.
#[derive(Debug, Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Counts a failure; returns how many in a row.
    pub(crate) fn add(&self, uid: &str) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = map.entry(uid.to_owned()).or_default();
        *count = count.saturating_add(1);
        *count
    }

    pub(crate) fn clear(&self, uid: &str) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(uid);
    }

    /// Keeps only the pods still cached.
    pub fn retain_pods(&self, live: &HashSet<String>) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).retain(|uid, _| live.contains(uid));
    }
}

/// Shutdown calls in flight, by namespace, each bounded.
#[derive(Debug)]
pub struct Slots {
    limit: usize,
    taken: Mutex<HashMap<String, usize>>,
}

/// One call's place in its namespace's share; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    namespace: String,
}

impl Slots {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit: limit.max(1), taken: Mutex::default() })
    }

    /// A place for one call in `namespace`, if its share is not used up.
    pub fn try_take(self: &Arc<Self>, namespace: &str) -> Option<Slot> {
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let count = taken.entry(namespace.to_owned()).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Slot { slots: self.clone(), namespace: namespace.to_owned() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut taken = self.slots.taken.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = taken.get_mut(&self.namespace) {
            *count -= 1;
            if *count == 0 {
                taken.remove(&self.namespace);
            }
        }
    }
}

/// What reconciles note for the status loop of their watch scope.
#[derive(Debug, Default)]
pub struct Bookkeeping {
    /// Shutdowns not yet written into policy statuses.
    pub pending: PendingCounts,
    /// Events published once without a record on the pod.
    pub announced: Announced,
    /// Failed reconciles in a row, for the backoff.
    pub failures: Failures,
}

pub(crate) fn seed(uid: &str, n: u32) -> u64 {
    let mut hasher = DefaultHasher::new();
    (uid, n).hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_are_once_per_pod_and_round_and_forgotten_with_the_pod() {
        let announced = Announced::default();
        assert!(announced.first("u1".into(), 1));
        assert!(!announced.first("u1".into(), 1));
        assert!(announced.first("u1".into(), 2));
        assert!(announced.first("u2".into(), 1));
        announced.retain_pods(&HashSet::from(["u2".to_owned()]));
        assert!(announced.first("u1".into(), 1), "a gone pod's entries are dropped");
        assert!(!announced.first("u2".into(), 1), "a cached pod's entries stay");
    }

    #[test]
    fn pending_counts_add_up_and_survive_a_failed_write() {
        let pending = PendingCounts::default();
        let key = "policy-uid-1".to_owned();
        pending.add(key.clone(), Ending::Succeeded);
        pending.add(key.clone(), Ending::Failed);
        pending.add(key.clone(), Ending::GaveUp);
        let taken = pending.take(&key);
        assert_eq!(taken, ShutdownCounts { succeeded: 1, failed: 1, gave_up: 1 });
        assert_eq!(pending.take(&key), ShutdownCounts::default());
        pending.put_back(key.clone(), taken);
        pending.add(key.clone(), Ending::Succeeded);
        assert_eq!(pending.take(&key), ShutdownCounts { succeeded: 2, failed: 1, gave_up: 1 });

        // A deleted policy's counts are forgotten: one created again under its name has a new uid.
        pending.add(key.clone(), Ending::Succeeded);
        pending.add("other-uid".to_owned(), Ending::Failed);
        pending.retain_policies(&HashSet::from(["other-uid".to_owned()]));
        assert_eq!(pending.take(&key), ShutdownCounts::default());
        assert_eq!(pending.take("other-uid").failed, 1);
    }

    #[test]
    fn error_backoff_doubles_to_five_minutes_with_jitter_that_spreads_pods() {
        for failures in 1..20 {
            let full = FIRST_ERROR_BACKOFF.saturating_mul(1 << (failures - 1).min(16)).min(MAX_ERROR_BACKOFF);
            for uid in ["a", "b", "c"] {
                let delay = error_backoff(failures, seed(uid, failures));
                assert!(delay <= full && delay >= full / 2, "{failures}: {delay:?} vs {full:?}");
            }
        }
        assert!(error_backoff(30, u64::MAX) <= MAX_ERROR_BACKOFF);
        let spread: HashSet<Duration> =
            (0..50).map(|i| error_backoff(1, seed(&format!("pod-{i}"), 1))).collect();
        assert!(spread.len() > 25, "jitter spreads pods: {} distinct delays", spread.len());
        let failures = Failures::default();
        assert_eq!((failures.add("u"), failures.add("u")), (1, 2));
        failures.clear("u");
        assert_eq!(failures.add("u"), 1);
        failures.retain_pods(&HashSet::new());
        assert_eq!(failures.add("u"), 1, "a gone pod is forgotten");
    }

    #[test]
    fn one_namespace_cannot_take_more_than_its_share_of_calls() {
        let slots = Slots::new(2);
        let a1 = slots.try_take("a").unwrap();
        let _a2 = slots.try_take("a").unwrap();
        assert!(slots.try_take("a").is_none(), "a's share is used up");
        let _b1 = slots.try_take("b").expect("b is not starved by a");
        drop(a1);
        assert!(slots.try_take("a").is_some(), "a slot comes back when its call ends");
    }
}
