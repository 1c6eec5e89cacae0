//! The shell around `decide`: for one pod, read the policy and the attempt record, decide, and
//! carry the action out (record the attempt, make the call, publish events, count metrics).
//! This is the one place that acts on pods.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action as Requeue, reflector::Store},
};
use lameduck_api::{
    ShutdownCounts, ShutdownMethod, ShutdownPolicy, ShutdownPolicySpec,
    names::{annotations, events},
};
use serde_json::json;
use tokio::sync::watch;

use crate::{
    applied::{Applied, applied},
    attempts::{Attempt, AttemptLog, AttemptLogError, Outcome},
    decide::{Action, decide, last_main_exit},
    events::{EventType, Publisher},
    job_pod::JobPod,
    methods::{self, Call},
    metrics::Metrics,
};

/// What the operator was told on its command line that reconciles need.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Observe and report, never act.
    pub dry_run: bool,
    /// Built-in settings for Job pods that no policy selects (`--default-profile`).
    pub default: Option<ShutdownPolicySpec>,
    /// Image of the ephemeral containers when the policy names none.
    pub ephemeral_image: String,
}

/// Shutdowns counted since the status writer last wrote them, by policy namespace and name.
#[derive(Debug, Default)]
pub struct PendingCounts(Mutex<HashMap<(String, String), ShutdownCounts>>);

impl PendingCounts {
    fn add(&self, key: (String, String), succeeded: bool) {
        let mut map = self.0.lock().expect("pending counts lock");
        let counts = map.entry(key).or_default();
        if succeeded {
            counts.succeeded += 1;
        } else {
            counts.failed += 1;
        }
    }

    /// Takes what is pending for one policy.
    pub fn take(&self, key: &(String, String)) -> ShutdownCounts {
        self.0.lock().expect("pending counts lock").remove(key).unwrap_or_default()
    }

    /// Puts back counts that could not be written.
    pub fn put_back(&self, key: (String, String), counts: ShutdownCounts) {
        let mut map = self.0.lock().expect("pending counts lock");
        let entry = map.entry(key).or_default();
        entry.succeeded += counts.succeeded;
        entry.failed += counts.failed;
    }
}

/// Events published once per pod and round without a record on the pod (dry-run decisions,
/// exhausted rounds). After a restart they may be published once more. Entries of pods that
/// are gone are dropped by the status loop, so the set does not grow without bound.
#[derive(Debug, Default)]
pub struct Announced(Mutex<HashSet<(String, u32)>>);

impl Announced {
    /// Whether this is the first announcement for this pod and round.
    fn first(&self, uid: String, round: u32) -> bool {
        self.0.lock().expect("announced lock").insert((uid, round))
    }

    /// Keeps only the pods still cached.
    pub fn retain_pods(&self, live: &HashSet<String>) {
        self.0.lock().expect("announced lock").retain(|(uid, _)| live.contains(uid));
    }
}

/// What reconciles note for the status loop of their watch scope.
#[derive(Debug, Default)]
pub struct Bookkeeping {
    /// Shutdowns not yet written into policy statuses.
    pub pending: PendingCounts,
    /// Events published once without a record on the pod.
    pub announced: Announced,
}

/// Shared by every reconcile of one watch scope.
pub struct Context {
    pub client: Client,
    pub policies: Store<ShutdownPolicy>,
    pub settings: Settings,
    pub leader: watch::Receiver<bool>,
    pub metrics: Metrics,
    pub publisher: Publisher,
    pub books: Arc<Bookkeeping>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Why a reconcile failed; the label of `lameduck_reconcile_errors_total`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    AttemptLog(#[from] AttemptLogError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::AttemptLog(_) => "attempt_log",
            Self::Kube(_) => "kube_api",
        }
    }
}

/// How long from `now` until `at`, never negative. A little slack so that the pod is looked at
/// once the moment has surely passed.
fn until(at: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or_default() + Duration::from_millis(50)
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64().max(0.0)
}

impl Context {
    pub fn new(
        client: Client,
        policies: Store<ShutdownPolicy>,
        settings: Settings,
        leader: watch::Receiver<bool>,
        metrics: Metrics,
        publisher: Publisher,
        books: Arc<Bookkeeping>,
    ) -> Self {
        Self { client, policies, settings, leader, metrics, publisher, books }
    }

    fn policy_for(&self, pod: &Pod) -> Option<Applied> {
        let namespace = pod.namespace();
        let policies: Vec<Arc<ShutdownPolicy>> =
            self.policies.state().into_iter().filter(|p| p.namespace() == namespace).collect();
        applied(pod, &policies, self.settings.default.as_ref())
    }

    fn pods(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default())
    }

    async fn publish(&self, pod: &Pod, type_: EventType, reason: &str, note: String) {
        if let Err(err) = self.publisher.publish(&pod.object_ref(&()), type_, reason, &note).await {
            // An event lost is a message lost, not a reason to stop acting.
            tracing::warn!(pod = %pod.name_any(), reason, error = %err, "cannot publish event");
        }
    }

    /// Whether this is the first time `key` is announced.
    fn first_announcement(&self, pod: &Pod, round: u32) -> bool {
        let uid = pod.uid().unwrap_or_else(|| pod.name_any());
        self.books.announced.first(uid, round)
    }
}

/// Decides about one pod and acts.
pub async fn reconcile(cached: Arc<JobPod>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let _timer = ctx.metrics.reconcile_duration.start_timer();
    if !*ctx.leader.borrow() {
        // Followers keep their caches warm; the new leader reconciles everything on election.
        return Ok(Requeue::await_change());
    }
    let pod = cached.to_pod();
    let Some(applied) = ctx.policy_for(&pod) else {
        return Ok(Requeue::await_change());
    };
    let log = match AttemptLog::from_annotations(pod.metadata.annotations.as_ref()) {
        Ok(log) => log,
        Err(err) => {
            ctx.publish(
                &pod,
                EventType::Warning,
                events::INVALID_ATTEMPT_LOG,
                format!("{err}; lameduck leaves this pod alone"),
            )
            .await;
            return Err(err.into());
        }
    };
    let now = Timestamp::now();
    let action = decide(&pod, &applied.spec, &log, now);
    tracing::debug!(pod = %pod.name_any(), namespace = ?pod.namespace(), ?action, "decided");
    match action {
        Action::Ignore(_) | Action::Wait { until: None, .. } => Ok(Requeue::await_change()),
        Action::Wait { until: Some(at), .. } => Ok(Requeue::requeue(until(at, now))),
        Action::Verify { deadline, .. } => Ok(Requeue::requeue(until(deadline, now))),
        Action::Attempt { method, number, round } => {
            if ctx.settings.dry_run {
                dry_run(&ctx, &pod, &applied, method, number, now).await;
                Ok(Requeue::await_change())
            } else {
                attempt(
                    &ctx,
                    &pod,
                    &applied,
                    log,
                    Attempt { number, round, method, started: now, outcome: None },
                )
                .await
            }
        }
        Action::Done { attempts } => report(&ctx, &pod, &applied, 0, attempts).await,
        Action::ProxyFailed { exit_code, attempts } => {
            report(&ctx, &pod, &applied, exit_code, attempts).await
        }
        Action::Exhausted { round, retry_at } => {
            if ctx.first_announcement(&pod, round) {
                ctx.metrics.shutdowns.with_label_values(&["exhausted"]).inc();
                ctx.publish(
                    &pod,
                    EventType::Warning,
                    events::SHUTDOWN_EXHAUSTED,
                    format!(
                        "every method of round {round} ({}) failed to stop the proxy; round {} starts at {retry_at}",
                        method_list(&applied.spec.completion.methods),
                        round + 1
                    ),
                )
                .await;
            }
            Ok(Requeue::requeue(until(retry_at, now)))
        }
    }
}

fn method_list(methods: &[ShutdownMethod]) -> String {
    methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
}

async fn dry_run(
    ctx: &Context,
    pod: &Pod,
    applied: &Applied,
    method: ShutdownMethod,
    number: u32,
    now: Timestamp,
) {
    if !ctx.first_announcement(pod, 0) {
        return;
    }
    ctx.metrics.shutdown_attempts.with_label_values(&[method.as_str(), "dry_run"]).inc();
    let proxy = applied.spec.proxy.resolve();
    if let Some(exit) = last_main_exit(pod, &proxy.container_name) {
        ctx.metrics.action_latency.observe(seconds_between(exit, now));
    }
    ctx.publish(
        pod,
        EventType::Normal,
        events::DRY_RUN,
        format!(
            "the main containers have exited and {} still runs; without --dry-run lameduck would now try {method} (attempt {number})",
            proxy.container_name
        ),
    )
    .await;
}

/// Records the attempt on the pod, then makes its call and records what it said.
async fn attempt(
    ctx: &Context,
    pod: &Pod,
    applied: &Applied,
    mut log: AttemptLog,
    attempt: Attempt,
) -> Result<Requeue, Error> {
    let pods = ctx.pods(pod);
    log.0.push(attempt.clone());
    // The resourceVersion makes the write conditional: should another replica (or this one,
    // from a stale cache) have recorded something meanwhile, this write fails and nothing runs.
    let patch = json!({ "metadata": {
        "resourceVersion": pod.resource_version(),
        "annotations": { annotations::SHUTDOWN_ATTEMPTS: log.to_annotation() },
    }});
    match pods.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // The cache is behind; the newer pod is on its way and triggers another look.
            return Ok(Requeue::requeue(Duration::from_millis(500)));
        }
        Err(err) => return Err(err.into()),
    }

    let proxy = applied.spec.proxy.resolve();
    if attempt.number == 1
        && let Some(exit) = last_main_exit(pod, &proxy.container_name)
    {
        ctx.metrics.action_latency.observe(seconds_between(exit, attempt.started));
    }
    let timeout = applied.spec.completion.attempt_timeout.as_std();
    let image = applied
        .spec
        .completion
        .ephemeral_image
        .clone()
        .unwrap_or_else(|| ctx.settings.ephemeral_image.clone());
    let result =
        methods::call(Call { pods: &pods, pod, proxy: &proxy, attempt: &attempt, image: &image, timeout })
            .await;
    ctx.metrics.shutdown_attempts.with_label_values(&[attempt.method.as_str(), result.label()]).inc();
    tracing::info!(pod = %pod.name_any(), namespace = ?pod.namespace(), method = %attempt.method,
        number = attempt.number, outcome = result.label(), detail = %result.detail, "shutdown attempt");

    let (type_, reason) = match &result.outcome {
        Some(Outcome::Sent) | None => (EventType::Normal, events::SHUTDOWN_REQUESTED),
        Some(Outcome::EndpointDisabled) => (EventType::Warning, events::SHUTDOWN_ENDPOINT_DISABLED),
        Some(Outcome::Failed { .. }) => (EventType::Warning, events::SHUTDOWN_CALL_FAILED),
    };
    let next = if result.outcome == Some(Outcome::EndpointDisabled) {
        "; only Signal can stop this proxy"
    } else {
        ""
    };
    ctx.publish(
        pod,
        type_,
        reason,
        format!(
            "attempt {} (round {}), {}: {}{next}",
            attempt.number, attempt.round, attempt.method, result.detail
        ),
    )
    .await;

    if let Some(outcome) = result.outcome.clone() {
        record_outcome(&pods, pod, attempt.number, outcome).await?;
    }
    Ok(match result.outcome {
        Some(Outcome::Sent) | None => Requeue::requeue(timeout),
        // The recorded outcome changes the pod, which brings the next decision; this is a backstop.
        _ => Requeue::requeue(Duration::from_secs(1)),
    })
}

/// Writes the outcome of attempt `number` into the record, from a fresh read of the pod: the
/// kubelet has likely updated its status (and resourceVersion) since the attempt was written.
async fn record_outcome(pods: &Api<Pod>, pod: &Pod, number: u32, outcome: Outcome) -> Result<(), Error> {
    for _ in 0..5 {
        let fresh = pods.get(&pod.name_any()).await?;
        let mut log = AttemptLog::from_annotations(fresh.metadata.annotations.as_ref())?;
        match log.0.last_mut() {
            Some(last) if last.number == number => last.outcome = Some(outcome.clone()),
            // Someone else moved on; their record stands.
            _ => return Ok(()),
        }
        let patch = json!({ "metadata": {
            "resourceVersion": fresh.resource_version(),
            "annotations": { annotations::SHUTDOWN_ATTEMPTS: log.to_annotation() },
        }});
        match pods.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(err) => return Err(err.into()),
        }
    }
    // Left without an outcome, the attempt is given its full timeout: slower, never wrong.
    Ok(())
}

/// Reports, once per pod, how lameduck's attempts ended.
async fn report(
    ctx: &Context,
    pod: &Pod,
    applied: &Applied,
    exit_code: i32,
    attempts: u32,
) -> Result<Requeue, Error> {
    if pod.annotations().contains_key(annotations::SHUTDOWN_RESULT) {
        return Ok(Requeue::await_change());
    }
    let succeeded = exit_code == 0;
    let result = if succeeded { "succeeded" } else { "failed" };
    let patch = json!({ "metadata": { "annotations": { annotations::SHUTDOWN_RESULT: result } } });
    ctx.pods(pod).patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;

    let proxy = applied.spec.proxy.resolve();
    let proxy_exit = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|ss| ss.iter().find(|s| s.name == proxy.container_name))
        .and_then(|s| s.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0);
    let latency = match (last_main_exit(pod, &proxy.container_name), proxy_exit) {
        (Some(main), Some(proxy)) => {
            let seconds = seconds_between(main, proxy);
            ctx.metrics.shutdown_latency.observe(seconds);
            // Both times come from container statuses, which have one-second resolution.
            format!(" {seconds:.0}s after the last main container exited,")
        }
        _ => String::new(),
    };
    ctx.metrics.shutdowns.with_label_values(&[result]).inc();
    if let Some(policy) = &applied.policy {
        ctx.books.pending.add((pod.namespace().unwrap_or_default(), policy.clone()), succeeded);
    }
    let (type_, reason, what) = if succeeded {
        (EventType::Normal, events::PROXY_STOPPED, "the pod can complete".to_owned())
    } else {
        (EventType::Warning, events::PROXY_FAILED, "the pod fails, and its Job counts a failure".to_owned())
    };
    ctx.publish(
        pod,
        type_,
        reason,
        format!(
            "{} exited with code {exit_code}{latency} after {attempts} attempt(s); {what}",
            proxy.container_name
        ),
    )
    .await;
    Ok(Requeue::await_change())
}

/// What to do after a failed reconcile.
pub fn error_policy(pod: Arc<JobPod>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.reconcile_errors.with_label_values(&[error.reason()]).inc();
    tracing::warn!(pod = %pod.name_any(), namespace = ?pod.namespace(), %error, "reconcile failed");
    match error {
        // Nothing will fix a bad record but a person; look again now and then.
        Error::AttemptLog(_) => Requeue::requeue(Duration::from_secs(300)),
        Error::Kube(_) => Requeue::requeue(Duration::from_secs(5)),
    }
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
        let key = ("jobs".to_owned(), "policy".to_owned());
        pending.add(key.clone(), true);
        pending.add(key.clone(), false);
        let taken = pending.take(&key);
        assert_eq!(taken, ShutdownCounts { succeeded: 1, failed: 1 });
        assert_eq!(pending.take(&key), ShutdownCounts::default());
        pending.put_back(key.clone(), taken);
        pending.add(key.clone(), true);
        assert_eq!(pending.take(&key), ShutdownCounts { succeeded: 2, failed: 1 });
    }
}
