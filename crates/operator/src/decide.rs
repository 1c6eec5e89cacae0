//! What to do with one pod: `decide(pod, policy, attempts, now) -> Action`. Pure: no client, no
//! clock; the caller performs the action and records it, then decides again.
//!
//! A Job pod is *stuck* when every main container (every regular container but the proxy) has
//! terminated for good while the proxy still runs. The policy's methods are then tried in order,
//! one attempt at a time: each is given `attemptTimeout` for the proxy to exit (less when the
//! call itself failed), then the next is tried. A 404 from `/shutdown` jumps to `Signal`. When a
//! round has tried every method, the next round waits a backoff that doubles up to 5 minutes.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::{Container, ContainerStatus, Pod},
    jiff::{SignedDuration, Timestamp},
};
use lameduck_api::{ShutdownMethod, ShutdownPolicySpec, admin::EXIT_ENDPOINT_DISABLED};

use crate::attempts::{Attempt, AttemptLog, Outcome};

/// The first pause between rounds; it doubles each round.
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// The longest pause between rounds.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What to do with a pod now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// lameduck has nothing to do with this pod.
    Ignore(Ignored),
    /// Nothing to do until the pod changes, or until `until` when given.
    Wait { reason: Waiting, until: Option<Timestamp> },
    /// Record attempt `number` (round `round`) with `method`, then make the call.
    Attempt { method: ShutdownMethod, number: u32, round: u32 },
    /// Attempt `number` is under way: look again at `deadline` if the pod has not changed.
    Verify { number: u32, method: ShutdownMethod, deadline: Timestamp },
    /// The proxy exited 0 after lameduck's attempts: the pod completes.
    Done { attempts: u32 },
    /// The proxy exited non-zero after lameduck's attempts: the pod fails, and the Job with it.
    ProxyFailed { exit_code: i32, attempts: u32 },
    /// Every method of round `round` failed; round `round + 1` starts at `retry_at`.
    Exhausted { round: u32, retry_at: Timestamp },
}

/// Why a pod is none of lameduck's business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// The policy turns completion off.
    CompletionDisabled,
    /// Not owned by a Job (CronJob pods are Job pods).
    NotAJobPod,
    /// The pod has no container with the policy's proxy name.
    NoProxy,
    /// The proxy is a native sidecar: the kubelet stops it after the main containers.
    NativeSidecar,
    /// `restartPolicy: Always` never lets a pod finish.
    RestartsAlways,
    /// The proxy exited with no attempt of lameduck's (e.g. the app ran `lameduck-await -S`).
    ProxyExitedByItself { exit_code: i32 },
}

/// Why there is nothing to do yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// A main container has not terminated.
    MainContainersRunning,
    /// A main container failed and `restartPolicy: OnFailure` will restart it.
    WillRestart { container: String },
    /// The main containers are done, but `completion.delay` has not passed.
    Delay,
    /// The proxy container is not running (starting, or restarting).
    ProxyNotRunning,
}

fn status_of<'a>(statuses: Option<&'a Vec<ContainerStatus>>, name: &str) -> Option<&'a ContainerStatus> {
    statuses?.iter().find(|s| s.name == name)
}

fn plus(at: Timestamp, duration: Duration) -> Timestamp {
    SignedDuration::try_from(duration).ok().and_then(|d| at.checked_add(d).ok()).unwrap_or(Timestamp::MAX)
}

/// The pause before round `round + 1`.
pub fn backoff(round: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1 << round.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

/// Decides what to do with `pod` under `policy`, given the attempts already recorded on it.
pub fn decide(pod: &Pod, policy: &ShutdownPolicySpec, log: &AttemptLog, now: Timestamp) -> Action {
    if !policy.completion.enabled {
        return Action::Ignore(Ignored::CompletionDisabled);
    }
    let owned_by_job = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.kind == "Job" && owner.api_version.starts_with("batch/"));
    if !owned_by_job {
        return Action::Ignore(Ignored::NotAJobPod);
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Action::Ignore(Ignored::NoProxy);
    };
    let proxy = policy.proxy.resolve().container_name;
    let is_proxy = |c: &Container| c.name == proxy;
    if spec
        .init_containers
        .iter()
        .flatten()
        .any(|c| is_proxy(c) && c.restart_policy.as_deref() == Some("Always"))
    {
        return Action::Ignore(Ignored::NativeSidecar);
    }
    if !spec.containers.iter().any(is_proxy) {
        return Action::Ignore(Ignored::NoProxy);
    }
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if restart_policy == "Always" {
        return Action::Ignore(Ignored::RestartsAlways);
    }

    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    let attempts = u32::try_from(log.0.len()).unwrap_or(u32::MAX);
    let proxy_state = status_of(statuses, &proxy).and_then(|s| s.state.as_ref());
    if let Some(terminated) = proxy_state.and_then(|s| s.terminated.as_ref()) {
        return match (attempts, terminated.exit_code) {
            (0, exit_code) => Action::Ignore(Ignored::ProxyExitedByItself { exit_code }),
            (attempts, 0) => Action::Done { attempts },
            (attempts, exit_code) => Action::ProxyFailed { exit_code, attempts },
        };
    }
    if proxy_state.and_then(|s| s.running.as_ref()).is_none() {
        return Action::Wait { reason: Waiting::ProxyNotRunning, until: None };
    }

    // Every main container must have terminated for good; the last one's end starts the clock.
    let mut last_exit: Option<Timestamp> = None;
    for container in spec.containers.iter().filter(|c| !is_proxy(c)) {
        let terminated = status_of(statuses, &container.name)
            .and_then(|s| s.state.as_ref())
            .and_then(|s| s.terminated.as_ref());
        let Some(terminated) = terminated else {
            return Action::Wait { reason: Waiting::MainContainersRunning, until: None };
        };
        if terminated.exit_code != 0 && restart_policy == "OnFailure" {
            return Action::Wait {
                reason: Waiting::WillRestart { container: container.name.clone() },
                until: None,
            };
        }
        let finished = terminated.finished_at.as_ref().map_or(now, |t| t.0);
        last_exit = Some(last_exit.map_or(finished, |at| at.max(finished)));
    }
    let Some(last_exit) = last_exit else {
        // A pod of only the proxy has no app to wait for.
        return Action::Wait { reason: Waiting::MainContainersRunning, until: None };
    };
    let ready_at = plus(last_exit, policy.completion.delay.as_std());
    if now < ready_at {
        return Action::Wait { reason: Waiting::Delay, until: Some(ready_at) };
    }

    next_attempt(policy, log, pod, now)
}

/// When the last main container exited, if every main container has: the moment lameduck's
/// latency metrics count from.
pub fn last_main_exit(pod: &Pod, proxy: &str) -> Option<Timestamp> {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    let mut last: Option<Timestamp> = None;
    for container in pod.spec.as_ref()?.containers.iter().filter(|c| c.name != proxy) {
        let terminated = status_of(statuses, &container.name)?.state.as_ref()?.terminated.as_ref()?;
        let finished = terminated.finished_at.as_ref()?.0;
        last = Some(last.map_or(finished, |at| at.max(finished)));
    }
    last
}

/// What an attempt came to: its recorded outcome, corrected by the exit code of the ephemeral
/// container it added, which runs after the call that created it has returned.
fn effective_outcome(attempt: &Attempt, pod: &Pod) -> Option<Outcome> {
    let adds_container =
        matches!(attempt.method, ShutdownMethod::EphemeralContainer | ShutdownMethod::Signal);
    if !adds_container || attempt.outcome != Some(Outcome::Sent) {
        return attempt.outcome.clone();
    }
    let name = attempt.ephemeral_container_name();
    let statuses = pod.status.as_ref().and_then(|s| s.ephemeral_container_statuses.as_ref());
    let exit_code = status_of(statuses, &name)
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    match exit_code {
        None | Some(0) => attempt.outcome.clone(),
        Some(EXIT_ENDPOINT_DISABLED) => Some(Outcome::EndpointDisabled),
        Some(code) => {
            Some(Outcome::Failed { message: format!("ephemeral container {name} exited with code {code}") })
        }
    }
}

/// The pod is stuck: the next step in the policy's methods, given what was already tried.
fn next_attempt(policy: &ShutdownPolicySpec, log: &AttemptLog, pod: &Pod, now: Timestamp) -> Action {
    let methods = &policy.completion.methods;
    let timeout = policy.completion.attempt_timeout.as_std();
    let number = u32::try_from(log.0.len()).unwrap_or(u32::MAX).saturating_add(1);
    let Some(last) = log.last() else {
        return match methods.first() {
            Some(&method) => Action::Attempt { method, number, round: 1 },
            None => Action::Exhausted { round: 0, retry_at: Timestamp::MAX },
        };
    };

    // Wait out an attempt that may still work. A failed call needs no waiting.
    let deadline = plus(last.started, timeout);
    let outcome = effective_outcome(last, pod);
    let ended = match &outcome {
        Some(Outcome::Failed { .. } | Outcome::EndpointDisabled) => last.started,
        None | Some(Outcome::Sent) if now < deadline => {
            return Action::Verify { number: last.number, method: last.method, deadline };
        }
        None | Some(Outcome::Sent) => deadline,
    };

    let tried: Vec<ShutdownMethod> =
        log.0.iter().filter(|a| a.round == last.round).map(|a| a.method).collect();
    let next = if outcome == Some(Outcome::EndpointDisabled) {
        // Only a signal can stop a proxy whose /shutdown is off.
        Some(ShutdownMethod::Signal).filter(|m| methods.contains(m) && !tried.contains(m))
    } else {
        methods.iter().skip_while(|m| **m != last.method).skip(1).find(|m| !tried.contains(m)).copied()
    };
    match next {
        Some(method) => Action::Attempt { method, number, round: last.round },
        None => {
            let retry_at = plus(ended, backoff(last.round));
            match methods.first() {
                Some(&method) if now >= retry_at => Action::Attempt { method, number, round: last.round + 1 },
                _ => Action::Exhausted { round: last.round, retry_at },
            }
        }
    }
}

#[cfg(test)]
mod tests;
