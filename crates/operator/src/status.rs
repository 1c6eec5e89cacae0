//! Every few seconds: sums up the cached pods, sets the gauges, and (on the leader) writes each
//! `ShutdownPolicy`'s status when it changed or shutdowns were counted.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::Store,
};
use lameduck_api::{ShutdownCounts, ShutdownPolicy, ShutdownPolicySpec};
use serde_json::json;
use tokio::sync::watch;

use crate::{
    job_pod::JobPod,
    metrics::Metrics,
    reconcile::{Bookkeeping, PendingCounts},
    summary::{Summary, desired_status, same_status, summarize},
};

/// The caches of one watch scope (all namespaces, or one).
#[derive(Clone)]
pub struct Scope {
    pub pods: Store<JobPod>,
    pub policies: Store<ShutdownPolicy>,
    pub books: Arc<Bookkeeping>,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope").finish_non_exhaustive()
    }
}

/// Runs forever.
pub async fn run(
    client: Client,
    scopes: Vec<Scope>,
    default: Option<ShutdownPolicySpec>,
    metrics: Metrics,
    leader: watch::Receiver<bool>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = Timestamp::now();
        let mut total = Summary::default();
        let is_leader = *leader.borrow();
        for scope in &scopes {
            let policies = scope.policies.state();
            let pods = scope.pods.state();
            let live = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
            scope.books.announced.retain_pods(&live);
            let summary = summarize(&policies, pods.iter().map(|p| p.to_pod()), default.as_ref(), now);
            total.observed += summary.observed;
            total.stuck += summary.stuck;
            if is_leader {
                write_statuses(&client, &policies, &summary.policies, &scope.books.pending, now).await;
            }
        }
        metrics.pods_observed.set(total.observed);
        metrics.stuck_pods.set(total.stuck);
    }
}

async fn write_statuses(
    client: &Client,
    policies: &[Arc<ShutdownPolicy>],
    summaries: &BTreeMap<(String, String), crate::summary::PolicySummary>,
    pending: &PendingCounts,
    now: Timestamp,
) {
    for policy in policies {
        let key = (policy.namespace().unwrap_or_default(), policy.name_any());
        let Some(summary) = summaries.get(&key) else { continue };
        let add = pending.take(&key);
        let current = policy.status.clone().unwrap_or_default();
        let shutdowns = ShutdownCounts {
            succeeded: current.shutdowns.succeeded + add.succeeded,
            failed: current.shutdowns.failed + add.failed,
        };
        let desired = desired_status(policy, summary, shutdowns, now);
        if same_status(&current, &desired) && add == ShutdownCounts::default() {
            continue;
        }
        let api: Api<ShutdownPolicy> = Api::namespaced(client.clone(), &key.0);
        // Conditional on the cached version: the counts add to what that version says, so a
        // stale cache must not overwrite a newer count.
        let patch =
            json!({ "metadata": { "resourceVersion": policy.resource_version() }, "status": desired });
        if let Err(err) = api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch)).await {
            tracing::debug!(policy = %key.1, namespace = %key.0, error = %err, "status not written; next time");
            pending.put_back(key, add);
        }
    }
}
