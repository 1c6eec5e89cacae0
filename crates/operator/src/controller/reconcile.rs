//! The shell around `decide`: for one pod, read the policy and the attempt record, decide, and
//! carry the action out (record the attempt, make the call, publish events, count metrics).
//! This is the one place that acts on pods.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures::FutureExt;

use k8s_openapi::{
    api::core::v1::{Namespace, Pod},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action as Requeue, reflector::Store},
};
use lameduck_api::{
    ShutdownMethod, ShutdownPolicy, Sidecar,
    names::{annotations, events, shutdown_result},
    shape::owner_kind,
};
use serde_json::json;
use tokio::sync::watch;

use crate::{
    controller::applied::{Applied, applied},
    controller::attempts::{Attempt, AttemptLog, AttemptLogError, Outcome},
    controller::books::{Bookkeeping, Ending, MAX_ERROR_BACKOFF, Slots, error_backoff, seed},
    controller::decide::{Action, Ends, GaveUp, Terms, decide},
    controller::methods::{self, Call},
    controller::pod::SlimPod,
    controller::settings::Settings,
    events::{EventType, Publisher},
    metrics::{Metrics, owner_label},
    powers::refusal,
    review::Check,
};

/// Shared by every reconcile of one watch scope.
pub struct Context {
    pub client: Client,
    pub policies: Store<ShutdownPolicy>,
    pub settings: Settings,
    pub leader: watch::Receiver<bool>,
    pub metrics: Metrics,
    pub publisher: Publisher,
    pub books: Arc<Bookkeeping>,
    pub slots: Arc<Slots>,
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
    /// A bug: the reconcile panicked. Caught, so that one pod cannot take the process (and its
    /// webhook) down; the pod is looked at again after the usual backoff.
    #[error("reconcile panicked: {0}")]
    Panic(String),
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::AttemptLog(_) => "attempt_log",
            Self::Kube(_) => "kube_api",
            Self::Panic(_) => "panic",
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
        let slots = Slots::new(settings.concurrency_per_namespace);
        Self { client, policies, settings, leader, metrics, publisher, books, slots }
    }

    /// A context for tests: the command line's defaults, `client` (a mock API server, say)
    /// and `policies`. The leader flag it returns starts true.
    pub fn test(client: Client, policies: Store<ShutdownPolicy>) -> (Self, watch::Sender<bool>) {
        let (leader_tx, leader) = watch::channel(true);
        let publisher = Publisher::new(client.clone(), "test".into());
        let books = Arc::new(Bookkeeping::default());
        let ctx =
            Self::new(client, policies, Settings::for_tests(None), leader, Metrics::new(), publisher, books);
        (ctx, leader_tx)
    }

    fn policy_for(&self, pod: &Pod) -> Option<Applied> {
        let namespace = pod.namespace();
        let policies: Vec<Arc<ShutdownPolicy>> =
            self.policies.state().into_iter().filter(|p| p.namespace() == namespace).collect();
        applied(pod, &policies, &self.settings.default)
    }

    fn pods(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default())
    }

    async fn publish(&self, pod: &Pod, type_: EventType, reason: &str, note: String) {
        self.publisher.send(pod.object_ref(&()), type_, reason, note).await;
    }

    /// Whether this is the first time `key` is announced.
    fn first_announcement(&self, pod: &Pod, round: u32) -> bool {
        self.books.announced.first(uid_of(pod), round)
    }
}

fn uid_of(pod: &Pod) -> String {
    pod.uid().unwrap_or_else(|| pod.name_any())
}

/// Writes `annotations` onto the pod if it is still at the cached `resourceVersion`. `false`:
/// another writer (another replica, the kubelet) came first; the newer pod is on its way.
async fn patch_if_unchanged(
    pods: &Api<Pod>,
    pod: &Pod,
    annotations: serde_json::Value,
) -> Result<bool, kube::Error> {
    let patch = json!({ "metadata": {
        "resourceVersion": pod.resource_version(),
        "annotations": annotations,
    }});
    match pods.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// Runs `work`, turning a panic into its message.
pub async fn guarded<T>(work: impl std::future::Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(work).catch_unwind().await.map_err(|panic| panic_message(panic.as_ref()))
}

/// What a caught panic said, bounded (it goes into an event).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    crate::events::shorten(&text, 256)
}

/// How soon to look again at a pod whose write lost a race.
const AFTER_CONFLICT: Duration = Duration::from_millis(500);

/// Decides about one pod and acts.
pub async fn reconcile(cached: Arc<SlimPod>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let _timer = ctx.metrics.reconcile_duration.start_timer();
    if !*ctx.leader.borrow() {
        // Followers keep their caches warm; the new leader reconciles everything on election.
        return Ok(Requeue::await_change());
    }
    let pod = cached.to_pod();
    // kube-runtime re-raises a reconcile's panic, which would end the process; one policy or pod
    // that trips a bug must not stop every namespace's shutdowns and the webhook with them.
    let result = match guarded(act(&ctx, &pod)).await {
        Ok(result) => result,
        Err(message) => {
            tracing::error!(pod = %pod.name_any(), namespace = ?pod.namespace(), panic = %message, "reconcile panicked");
            ctx.publish(
                &pod,
                EventType::Warning,
                events::RECONCILE_PANICKED,
                format!(
                    "lameduck hit a bug deciding about this pod ({message}); it looks again after a backoff"
                ),
            )
            .await;
            Err(Error::Panic(message))
        }
    };
    if result.is_ok() {
        ctx.books.failures.clear(&uid_of(&pod));
    }
    result
}

async fn act(ctx: &Context, pod: &Pod) -> Result<Requeue, Error> {
    let Some(applied) = ctx.policy_for(pod) else {
        return Ok(Requeue::await_change());
    };
    if let Some(name) = &applied.policy {
        let namespace = pod.namespace().unwrap_or_default();
        match ctx.settings.review.check(&namespace, name, &applied.spec, applied.stamp.as_deref()) {
            Check::Pass => {}
            // The key comes from the webhook's Secret within seconds of the start.
            Check::Wait => return Ok(Requeue::requeue(Duration::from_secs(2))),
            Check::NotReviewed(refused) => {
                // The status loop reports it on the policy; the pod is left alone.
                tracing::debug!(pod = %pod.name_any(), policy = %name, field = %refused.field, "policy not reviewed");
                return Ok(Requeue::await_change());
            }
        }
    }
    if let Some(refused) = refusal(&applied.spec, &ctx.settings.limits) {
        // The status loop reports it on the policy; the pod is left alone.
        tracing::debug!(pod = %pod.name_any(), policy = ?applied.policy, reason = refused.reason, "policy refused");
        return Ok(Requeue::await_change());
    }
    let log = match AttemptLog::from_annotations(pod.metadata.annotations.as_ref()) {
        Ok(log) => log,
        Err(err) => {
            ctx.publish(
                pod,
                EventType::Warning,
                events::INVALID_ATTEMPT_LOG,
                format!("{err}; lameduck leaves this pod alone"),
            )
            .await;
            return Err(err.into());
        }
    };
    let now = Timestamp::now();
    let terms = ctx.settings.terms(&applied.spec, applied.generation);
    let action = decide(pod, &terms, &log, now);
    tracing::debug!(pod = %pod.name_any(), namespace = ?pod.namespace(), ?action, "decided");
    match action {
        Action::Ignore(_) | Action::Wait { until: None, .. } => Ok(Requeue::await_change()),
        Action::Wait { until: Some(at), .. } => Ok(Requeue::requeue(until(at, now))),
        Action::Verify { deadline, .. } => Ok(Requeue::requeue(until(deadline, now))),
        Action::Attempt { sidecar, method, number, round, epoch, last_main_exit } => {
            if ctx.settings.dry_run {
                dry_run(ctx, pod, &sidecar, method, number, last_main_exit, now).await;
                return Ok(Requeue::await_change());
            }
            let namespace = pod.namespace().unwrap_or_default();
            let Some(_slot) = ctx.slots.try_take(&namespace) else {
                // This namespace's share of calls is in use; the rest stays for the others.
                let wait = Duration::from_millis(1000 + seed(&uid_of(pod), number) % 1000);
                return Ok(Requeue::requeue(wait));
            };
            let container = Some(sidecar.proxy.container_name.clone());
            let attempt = Attempt { number, round, method, container, started: now, outcome: None, epoch };
            self::attempt(ctx, pod, &terms, &sidecar, log, attempt, last_main_exit).await
        }
        Action::RecordOutcome { number, method, outcome } => {
            let pods = ctx.pods(pod);
            if record_outcome(&pods, pod, number, outcome.clone()).await? {
                let (type_, reason) = event_for(&outcome);
                let detail = match &outcome {
                    Outcome::Failed { message } => message.clone(),
                    Outcome::EndpointDisabled => {
                        "the shutdown endpoint answered 404; only Signal can stop this proxy".into()
                    }
                    Outcome::Sent => "its ephemeral container exited 0".into(),
                };
                ctx.publish(pod, type_, reason, format!("attempt {number}, {method}: {detail}")).await;
            }
            Ok(Requeue::requeue(Duration::from_secs(1)))
        }
        Action::Done { attempts, ends, sidecars } => {
            report(ctx, pod, &applied, Ok(sidecars), attempts, ends).await
        }
        Action::SidecarFailed { container, exit_code, attempts, ends } => {
            report(ctx, pod, &applied, Err((container, exit_code)), attempts, ends).await
        }
        Action::Exhausted { container, round, retry_at } => {
            if ctx.first_announcement(pod, round) {
                let owner = owner_label(owner_kind(pod));
                ctx.metrics.shutdowns.with_label_values(&["exhausted", owner]).inc();
                ctx.publish(
                    pod,
                    EventType::Warning,
                    events::SHUTDOWN_EXHAUSTED,
                    format!(
                        "every method of round {round} failed to stop {container}; round {} starts at {retry_at}",
                        round + 1
                    ),
                )
                .await;
            }
            Ok(Requeue::requeue(until(retry_at, now)))
        }
        Action::GiveUp { container, reason, .. } if ctx.settings.dry_run => {
            // Nothing is written in a dry run: the decision is only said, once.
            if ctx.first_announcement(pod, 0) {
                let note =
                    format!("without --dry-run lameduck would give up on sidecar {container}: {reason}");
                ctx.publish(pod, EventType::Normal, events::DRY_RUN, note).await;
            }
            Ok(Requeue::await_change())
        }
        Action::GiveUp { container, reason, attempts } => {
            give_up(ctx, pod, &applied, &container, &reason, attempts).await
        }
    }
}

fn event_for(outcome: &Outcome) -> (EventType, &'static str) {
    match outcome {
        Outcome::Sent => (EventType::Normal, events::SHUTDOWN_REQUESTED),
        Outcome::EndpointDisabled => (EventType::Warning, events::SHUTDOWN_ENDPOINT_DISABLED),
        Outcome::Failed { .. } => (EventType::Warning, events::SHUTDOWN_CALL_FAILED),
    }
}

async fn dry_run(
    ctx: &Context,
    pod: &Pod,
    sidecar: &Sidecar,
    method: ShutdownMethod,
    number: u32,
    last_main_exit: Timestamp,
    now: Timestamp,
) {
    if !ctx.first_announcement(pod, 0) {
        return;
    }
    ctx.metrics.shutdown_attempts.with_label_values(&[method.as_str(), "dry_run"]).inc();
    ctx.metrics.action_latency.observe(seconds_between(last_main_exit, now));
    let proxy = &sidecar.proxy;
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
    terms: &Terms<'_>,
    sidecar: &Sidecar,
    mut log: AttemptLog,
    attempt: Attempt,
    last_main_exit: Timestamp,
) -> Result<Requeue, Error> {
    let pods = ctx.pods(pod);
    log.0.push(attempt.clone());
    // The resourceVersion makes the write conditional: should another replica (or this one,
    // from a stale cache) have recorded something meanwhile, this write fails and nothing runs.
    // A result left from giving up under an older epoch no longer holds.
    let record = json!({
        annotations::SHUTDOWN_ATTEMPTS: log.to_annotation(),
        annotations::SHUTDOWN_RESULT: serde_json::Value::Null,
    });
    if !patch_if_unchanged(&pods, pod, record).await? {
        return Ok(Requeue::requeue(AFTER_CONFLICT));
    }
    if attempt.number == 1 {
        ctx.metrics.action_latency.observe(seconds_between(last_main_exit, attempt.started));
    }

    let proxy = &sidecar.proxy;
    let timeout = terms.attempt_timeout();
    let image =
        terms.spec.completion.ephemeral_image.clone().unwrap_or_else(|| ctx.settings.ephemeral_image.clone());
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let result = methods::call(Call {
        pods: &pods,
        namespaces: &namespaces,
        pod,
        proxy,
        field: &sidecar.field,
        attempt: &attempt,
        image: &image,
        timeout,
    })
    .await;
    ctx.metrics.shutdown_attempts.with_label_values(&[attempt.method.as_str(), result.label()]).inc();
    tracing::info!(pod = %pod.name_any(), namespace = ?pod.namespace(), container = %proxy.container_name, method = %attempt.method,
        number = attempt.number, outcome = result.label(), detail = %result.detail, "shutdown attempt");

    let (type_, reason) = match &result.outcome {
        Some(outcome) => event_for(outcome),
        None => (EventType::Normal, events::SHUTDOWN_REQUESTED),
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
            "attempt {} (round {}) on {}, {}: {}{next}",
            attempt.number, attempt.round, proxy.container_name, attempt.method, result.detail
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
/// `false` when it was not written (someone else moved on, or the pod kept changing).
async fn record_outcome(pods: &Api<Pod>, pod: &Pod, number: u32, outcome: Outcome) -> Result<bool, Error> {
    for _ in 0..5 {
        let fresh = pods.get(&pod.name_any()).await?;
        let mut log = AttemptLog::from_annotations(fresh.metadata.annotations.as_ref())?;
        match log.0.last_mut() {
            Some(last) if last.number == number => last.outcome = Some(outcome.clone()),
            // Someone else moved on; their record stands.
            _ => return Ok(false),
        }
        let record = json!({ annotations::SHUTDOWN_ATTEMPTS: log.to_annotation() });
        if patch_if_unchanged(pods, &fresh, record).await? {
            return Ok(true);
        }
    }
    // Left without an outcome, the attempt is given its full timeout: slower, never wrong.
    Ok(false)
}

/// Writes the pod's result once (conditional, so two replicas cannot both count it), then
/// counts it. `Some(requeue)` when it was not written: already there (nothing more to do), or a
/// lost race (look again soon).
async fn record_result(
    ctx: &Context,
    pod: &Pod,
    applied: &Applied,
    ending: Ending,
) -> Result<Option<Requeue>, Error> {
    let owner = owner_label(owner_kind(pod));
    if pod.annotations().contains_key(annotations::SHUTDOWN_RESULT) {
        return Ok(Some(Requeue::await_change()));
    }
    let value = match ending {
        Ending::Succeeded => shutdown_result::SUCCEEDED,
        Ending::Failed => shutdown_result::FAILED,
        Ending::GaveUp => shutdown_result::GAVE_UP,
    };
    if !patch_if_unchanged(&ctx.pods(pod), pod, json!({ annotations::SHUTDOWN_RESULT: value })).await? {
        return Ok(Some(Requeue::requeue(AFTER_CONFLICT)));
    }
    let label = match ending {
        Ending::Succeeded => "succeeded",
        Ending::Failed => "failed",
        Ending::GaveUp => "gave_up",
    };
    ctx.metrics.shutdowns.with_label_values(&[label, owner]).inc();
    if let Some(uid) = &applied.uid {
        ctx.books.pending.add(uid.clone(), ending);
    }
    Ok(None)
}

/// Reports, once per pod, how lameduck's attempts ended: the sidecars that all exited 0, or the
/// first that did not, with its code.
async fn report(
    ctx: &Context,
    pod: &Pod,
    applied: &Applied,
    ended: Result<Vec<String>, (String, i32)>,
    attempts: u32,
    ends: Ends,
) -> Result<Requeue, Error> {
    let ending = if ended.is_ok() { Ending::Succeeded } else { Ending::Failed };
    if let Some(requeue) = record_result(ctx, pod, applied, ending).await? {
        return Ok(requeue);
    }
    let latency = match (ends.last_main_exit, ends.last_sidecar_exit) {
        (Some(main), Some(sidecar)) => {
            let seconds = seconds_between(main, sidecar);
            ctx.metrics.shutdown_latency.observe(seconds);
            // Both times come from container statuses, which have one-second resolution.
            format!(" {seconds:.0}s after the last main container exited,")
        }
        _ => String::new(),
    };
    let owner = match owner_kind(pod) {
        Some(kind) => format!("its {kind}"),
        None => "nothing (a bare pod)".to_owned(),
    };
    let (type_, reason, note) = match &ended {
        Ok(sidecars) => (
            EventType::Normal,
            events::PROXY_STOPPED,
            format!(
                "{} exited with code 0{latency} after {attempts} attempt(s); the pod can complete (owned by {owner})",
                sidecars.join(", then ")
            ),
        ),
        Err((container, exit_code)) => (
            EventType::Warning,
            events::PROXY_FAILED,
            format!(
                "sidecar {container} exited with code {exit_code}{latency} after {attempts} attempt(s); \
                 the pod fails, and {owner} may count a failure. A quit endpoint that exits 0 \
                 (a profile's, before Signal) avoids this"
            ),
        ),
    };
    ctx.publish(pod, type_, reason, note).await;
    Ok(Requeue::await_change())
}

/// Stops trying, once per pod and epoch: the result, one event, the counts.
async fn give_up(
    ctx: &Context,
    pod: &Pod,
    applied: &Applied,
    container: &str,
    reason: &GaveUp,
    attempts: u32,
) -> Result<Requeue, Error> {
    if let Some(requeue) = record_result(ctx, pod, applied, Ending::GaveUp).await? {
        return Ok(requeue);
    }
    let policy = match &applied.policy {
        Some(name) => format!("ShutdownPolicy {name}'s spec changes"),
        None => "a ShutdownPolicy selects it".to_owned(),
    };
    ctx.publish(
        pod,
        EventType::Warning,
        events::SHUTDOWN_GAVE_UP,
        format!(
            "lameduck gave up on sidecar {container} after {attempts} attempt(s): {reason}; it tries again if {container} restarts or {policy}"
        ),
    )
    .await;
    Ok(Requeue::await_change())
}

/// What to do after a failed reconcile: look again after a backoff that grows with each
/// failure of this pod in a row.
pub fn error_policy(pod: Arc<SlimPod>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.reconcile_errors.with_label_values(&[error.reason()]).inc();
    let uid = pod.metadata.uid.clone().unwrap_or_else(|| pod.name_any());
    let failures = ctx.books.failures.add(&uid);
    let delay = match error {
        // Nothing will fix a bad record but a person; look again now and then.
        Error::AttemptLog(_) => MAX_ERROR_BACKOFF,
        Error::Kube(_) | Error::Panic(_) => error_backoff(failures, seed(&uid, failures)),
    };
    tracing::warn!(pod = %pod.name_any(), namespace = ?pod.namespace(), %error, failures,
        retry_in = ?delay, "reconcile failed");
    Requeue::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_error_with_its_message() {
        assert_eq!(guarded(async { 7 }).await, Ok(7));
        let caught = guarded(async {
            let path: Option<&str> = None;
            path.map(str::len).unwrap_or_else(|| panic!("a bug on {}", "/a b"))
        })
        .await;
        assert_eq!(caught, Err("a bug on /a b".to_owned()));
        let long = guarded(async { std::panic::panic_any(vec![1]) }).await;
        assert_eq!(long, Err("a panic without a message".to_owned()));
    }
}
