//! Watching what was admitted: every pod of the watched namespaces, to find those a policy
//! selects that the webhook did not mutate (it was down, or timed out, and `failurePolicy:
//! Ignore` let the pod in), and to count pods whose shutdown timing breaks a rule.
//!
//! Only a small record per pod is kept (name, labels, findings); the pod itself is dropped once
//! assessed. The labels also serve the validating webhook's overlap warnings.

use std::sync::PoisonError;
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::{
    ResourceExt,
    runtime::{reflector::Store, watcher},
};
use lameduck_api::{
    ShutdownPolicy,
    names::{annotations, events},
    selection,
    shape::PodShape,
    timing::{Rule, Severity, Timeline},
};
use tokio::sync::watch;

use crate::{
    audit::pod::AdmittedPod,
    events::{EventType, Publisher},
    metrics::Metrics,
    packed_labels::PackedLabels,
    webhook::admission::PodLabels,
};

/// What a policy should have done to a pod, and what the pod's timing looks like.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assessment {
    /// The policy that applies to the pod.
    pub policy: Option<String>,
    /// The policy selects the pod, the pod has its proxy and was created after the policy, and
    /// yet it does not carry the webhook's mark.
    pub unmutated: bool,
    /// Timing rules the pod breaks.
    pub violations: Vec<Rule>,
}

/// Assesses one pod against the policies (any namespace; only the pod's own count).
pub fn assess(pod: &Pod, policies: &[Arc<ShutdownPolicy>]) -> Assessment {
    let Some(spec) = pod.spec.as_ref() else { return Assessment::default() };
    let chosen =
        selection::select(policies.iter().map(AsRef::as_ref), pod.namespace().as_deref(), pod.labels());
    let Some(winner) = chosen.winner else { return Assessment::default() };
    let proxy = winner.spec.mesh_proxy().resolve();
    let shape = PodShape::new(spec, pod.metadata.annotations.as_ref(), false);
    let has_proxy = shape.container(&proxy.container_name).is_some();
    // Marked by this policy: a mark from another (or from `lameduck inject`) is not its settings.
    let marked = pod.annotations().get(annotations::POLICY) == Some(&winner.name_any());
    // Same-second creations are left out: the pod may have been admitted just before the policy.
    let after_policy = match (&pod.metadata.creation_timestamp, &winner.metadata.creation_timestamp) {
        (Some(pod), Some(policy)) => pod.0 > policy.0,
        _ => false,
    };
    let mut violations: Vec<Rule> = if has_proxy {
        Timeline::of(&shape, marked.then_some(&winner.spec))
            .findings()
            .into_iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.rule)
            .collect()
    } else {
        Vec::new()
    };
    violations.sort();
    violations.dedup();
    Assessment {
        policy: Some(winner.name_any()),
        unmutated: has_proxy && !marked && after_policy,
        violations,
    }
}

#[derive(Clone, Debug)]
struct Record {
    namespace: String,
    name: String,
    labels: PackedLabels,
    assessment: Assessment,
    /// An `AdmittedUnmutated` event was published for it.
    announced: bool,
    /// What the assessment was made from ([`AdmittedPod::fingerprint`]).
    fingerprint: u64,
}

/// The records of the watched pods, by UID.
#[derive(Debug, Default)]
pub struct PodIndex {
    records: Mutex<Records>,
}

#[derive(Debug, Default)]
struct Records {
    by_uid: HashMap<String, Record>,
    /// Unmutated pods not announced yet, so that announcing never scans every pod.
    unannounced: HashSet<String>,
}

/// How many events one pass publishes, so that a flood of unmutated pods (the webhook was down
/// during a big rollout) does not hold up the watch.
const ANNOUNCE_BATCH: usize = 16;

impl PodIndex {
    /// Names and labels of the pods of one namespace.
    pub fn labels_in(&self, namespace: &str) -> Vec<PodLabels> {
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        records
            .by_uid
            .values()
            .filter(|r| r.namespace == namespace)
            .map(|r| PodLabels { name: r.name.clone(), labels: r.labels.unpack().unwrap_or_default() })
            .collect()
    }

    /// (pods admitted unmutated, pods breaking each rule).
    pub fn totals(&self) -> (i64, BTreeMap<Rule, i64>) {
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let mut by_rule = BTreeMap::new();
        let mut unmutated = 0;
        for record in records.by_uid.values() {
            unmutated += i64::from(record.assessment.unmutated);
            for rule in &record.assessment.violations {
                *by_rule.entry(*rule).or_insert(0) += 1;
            }
        }
        (unmutated, by_rule)
    }

    /// Records a pod, keeping whether it was announced.
    fn put(&self, uid: String, mut record: Record) {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        record.announced = records.by_uid.get(&uid).is_some_and(|r| r.announced && r.assessment.unmutated);
        if record.assessment.unmutated && !record.announced {
            records.unannounced.insert(uid.clone());
        } else {
            records.unannounced.remove(&uid);
        }
        records.by_uid.insert(uid, record);
    }

    /// Up to `most` unmutated pods not announced yet: (uid, namespace, name, policy).
    fn to_announce(&self, most: usize) -> Vec<(String, String, String, String)> {
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        records
            .unannounced
            .iter()
            .take(most)
            .filter_map(|uid| {
                let r = records.by_uid.get(uid)?;
                let policy = r.assessment.policy.clone().unwrap_or_default();
                Some((uid.clone(), r.namespace.clone(), r.name.clone(), policy))
            })
            .collect()
    }

    fn mark_announced(&self, uid: &str) {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        records.unannounced.remove(uid);
        if let Some(record) = records.by_uid.get_mut(uid) {
            record.announced = true;
        }
    }

    /// Whether the pod's record was made from this fingerprint.
    fn is_current(&self, uid: &str, fingerprint: u64) -> bool {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_uid
            .get(uid)
            .is_some_and(|r| r.fingerprint == fingerprint)
    }

    fn remove(&self, uid: &str) {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        records.by_uid.remove(uid);
        records.unannounced.remove(uid);
    }

    /// Drops the pods a re-list did not return.
    fn keep_only(&self, seen: &HashSet<String>) {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        records.by_uid.retain(|uid, _| seen.contains(uid));
        records.unannounced.retain(|uid| seen.contains(uid));
    }
}

/// Sets the gauges from the index: on the leader only, as the other gauges are, so that a sum
/// over replicas counts each pod once.
pub fn export(index: &PodIndex, metrics: &Metrics, is_leader: bool) {
    let (unmutated, by_rule) = index.totals();
    metrics.unmutated_pods.set(if is_leader { unmutated } else { 0 });
    // Every rule, so that a gauge drops to 0 rather than disappearing when its last pod goes.
    for rule in Rule::ALL {
        let count = if is_leader { by_rule.get(&rule).copied().unwrap_or(0) } else { 0 };
        metrics.policy_timing_violations.with_label_values(&[rule.as_str()]).set(count);
    }
}

/// Follows one pod watch until it ends. `policies` reads the policy caches. The leader
/// publishes one `AdmittedUnmutated` event per such pod, including those found before it led.
pub async fn follow(
    pods: impl Stream<Item = Result<watcher::Event<AdmittedPod>, watcher::Error>>,
    policies: Vec<Store<ShutdownPolicy>>,
    index: Arc<PodIndex>,
    publisher: Publisher,
    mut leader: watch::Receiver<bool>,
) {
    let mut seen = HashSet::new();
    let mut listing = false;
    let mut pods = std::pin::pin!(pods);
    loop {
        let event = tokio::select! {
            event = pods.next() => match event {
                Some(event) => Some(event),
                None => return,
            },
            changed = leader.changed() => {
                if changed.is_err() {
                    return;
                }
                None
            }
        };
        match event {
            None => {}
            Some(Ok(watcher::Event::Init)) => {
                listing = true;
                seen.clear();
            }
            Some(Ok(watcher::Event::InitDone)) => {
                listing = false;
                index.keep_only(&seen);
                seen.clear();
            }
            Some(Ok(watcher::Event::Delete(pod))) => index.remove(pod.uid().as_deref().unwrap_or_default()),
            Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                let Some(uid) = pod.uid() else { continue };
                if listing {
                    seen.insert(uid.clone());
                }
                let all: Vec<Arc<ShutdownPolicy>> = policies.iter().flat_map(Store::state).collect();
                let fingerprint = pod.fingerprint(policy_digest(&all));
                if index.is_current(&uid, fingerprint) {
                    continue;
                }
                let assessment = match pod.to_pod() {
                    Ok(full) => assess(&full, &all),
                    Err(err) => {
                        tracing::debug!(pod = %pod.name_any(), error = %err, "pod spec not readable; not assessed");
                        Assessment::default()
                    }
                };
                let record = Record {
                    namespace: pod.namespace().unwrap_or_default(),
                    name: pod.name_any(),
                    labels: PackedLabels::pack(pod.labels()),
                    assessment,
                    announced: false,
                    fingerprint,
                };
                index.put(uid, record);
            }
            Some(Err(err)) => tracing::warn!(error = %err, "pod watch (admission check) failed; retrying"),
        }
        let is_leader = *leader.borrow();
        if is_leader {
            announce(&index, &publisher).await;
        }
    }
}

/// A digest of the policy set: a policy created, deleted or changed re-assesses the pods.
fn policy_digest(policies: &[Arc<ShutdownPolicy>]) -> u64 {
    let mut keys: Vec<(Option<String>, Option<i64>, Option<String>)> = policies
        .iter()
        .map(|p| {
            (
                p.metadata.uid.clone(),
                p.metadata.generation,
                p.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
            )
        })
        .collect();
    keys.sort();
    let mut hasher = std::hash::DefaultHasher::new();
    keys.hash(&mut hasher);
    hasher.finish()
}

async fn announce(index: &PodIndex, publisher: &Publisher) {
    for (uid, namespace, name, policy) in index.to_announce(ANNOUNCE_BATCH) {
        let note = format!(
            "ShutdownPolicy {policy} selects this pod, but it was admitted without the policy's drain \
             settings: the lameduck webhook was not reached (failurePolicy Ignore let the pod in). \
             Recreate the pod once the webhook is back."
        );
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(namespace),
            name: Some(name.clone()),
            uid: Some(uid.clone()),
            ..ObjectReference::default()
        };
        match publisher.publish(&reference, EventType::Warning, events::ADMITTED_UNMUTATED, &note).await {
            Ok(()) => index.mark_announced(&uid),
            Err(err) => tracing::debug!(pod = %name, error = %err, "event not published; next time"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policy() -> Arc<ShutdownPolicy> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"selector": {"matchLabels": {"app": "web"}}, "proxy": {"profile": "Lameduck"},
                         "drain": {"waitBeforeExit": "20s"}},
            }))
            .unwrap(),
        )
    }

    fn pod(created: &str, annotations: serde_json::Value, grace: i64) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1", "creationTimestamp": created,
                         "labels": {"app": "web"}, "annotations": annotations},
            "spec": {"terminationGracePeriodSeconds": grace,
                     "containers": [{"name": "app"}, {"name": "lameduck-proxy"}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_created_after_its_policy_without_the_mark_is_unmutated() {
        let found = assess(&pod("2026-02-01T00:00:00Z", json!({}), 30), &[policy()]);
        assert_eq!(found.policy.as_deref(), Some("web"));
        assert!(found.unmutated);

        let marked =
            assess(&pod("2026-02-01T00:00:00Z", json!({"lameduck.io/policy": "web"}), 30), &[policy()]);
        assert!(!marked.unmutated);
        let injected = assess(
            &pod("2026-02-01T00:00:00Z", json!({"lameduck.io/policy": "lameduck-inject"}), 30),
            &[policy()],
        );
        assert!(injected.unmutated, "inject's mark is not the policy's");
        // Older than the policy: nothing the webhook could have done.
        assert!(!assess(&pod("2025-12-01T00:00:00Z", json!({}), 30), &[policy()]).unmutated);
        // No proxy: nothing to mutate.
        let mut bare = pod("2026-02-01T00:00:00Z", json!({}), 30);
        bare.spec.as_mut().unwrap().containers.truncate(1);
        assert!(!assess(&bare, &[policy()]).unmutated);
        // Not selected.
        let mut other = pod("2026-02-01T00:00:00Z", json!({}), 30);
        other.metadata.labels = Some(BTreeMap::from([("app".into(), "db".into())]));
        assert_eq!(assess(&other, &[policy()]), Assessment::default());
    }

    #[test]
    fn violations_are_counted_by_rule_and_records_go_with_their_pods() {
        // Marked as mutated, with the policy's 20s wait and only 10s of grace.
        let tight = pod("2026-02-01T00:00:00Z", json!({"lameduck.io/policy": "web"}), 10);
        let found = assess(&tight, &[policy()]);
        assert_eq!(found.violations, [Rule::ProxyWaitNotBelowTerminationGrace]);

        let index = PodIndex::default();
        let record = |assessment: Assessment| Record {
            namespace: "shop".into(),
            name: "web-1".into(),
            labels: PackedLabels::default(),
            assessment,
            announced: false,
            fingerprint: 0,
        };
        index.put("a".into(), record(found));
        index.put("b".into(), record(Assessment { unmutated: true, ..Assessment::default() }));
        let due = index.to_announce(ANNOUNCE_BATCH);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, "b");
        index.mark_announced("b");
        // Seen again (any pod update): still announced, so no second event.
        index.put("b".into(), record(Assessment { unmutated: true, ..Assessment::default() }));
        assert!(index.to_announce(ANNOUNCE_BATCH).is_empty());
        let (unmutated, by_rule) = index.totals();
        assert_eq!(unmutated, 1);
        assert_eq!(by_rule.get(&Rule::ProxyWaitNotBelowTerminationGrace), Some(&1));
        assert_eq!(index.labels_in("shop").len(), 2);
        assert!(index.labels_in("other").is_empty());
        index.keep_only(&HashSet::from(["a".to_owned()]));
        assert_eq!(index.totals().0, 0);
        index.remove("a");
        assert!(index.totals().1.is_empty());

        let metrics = Metrics::new();
        index.put("c".into(), record(Assessment { unmutated: true, ..Assessment::default() }));
        export(&index, &metrics, true);
        assert_eq!(metrics.unmutated_pods.get(), 1);
        export(&index, &metrics, false);
        assert_eq!(metrics.unmutated_pods.get(), 0);
    }
}
