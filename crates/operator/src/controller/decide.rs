//! What to do with one pod: `decide(pod, terms, attempts, now) -> Action`. Pure: no client, no
//! clock; the caller performs the action and records it, then decides again.
//!
//! A Job pod is *stuck* when every main container (every regular container but the proxy) has
//! terminated for good while the proxy still runs. The policy's methods are then tried in order,
//! one attempt at a time: each is given `attemptTimeout` for the proxy to exit (less when the
//! call itself failed), then the next is tried. Methods that go through the shutdown endpoint are
//! skipped when the pod shows the endpoint is off (`lameduck_api::endpoint`), and a 404 from it
//! jumps to `Signal`. When a round has tried every method, the next round waits a backoff that
//! doubles up to 5 minutes. After `completion.maxRounds` rounds, or when no method is left, the
//! operator gives up on the pod until the proxy restarts or the policy's spec changes.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::core::v1::{Container, ContainerStatus, Pod},
    jiff::{SignedDuration, Timestamp},
};
use lameduck_api::{
    ResolvedProxy, ShutdownMethod, ShutdownPolicySpec,
    admin::EXIT_ENDPOINT_DISABLED,
    endpoint::{Endpoint, shutdown_endpoint},
    policy::MAX_ATTEMPT_TIMEOUT_SECONDS,
};

use crate::controller::attempts::{Attempt, AttemptLog, Epoch, Outcome};

/// The first pause between rounds; it doubles each round.
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// The longest pause between rounds.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The most attempts on one pod, whatever its epochs: the record on the pod stays bounded.
pub const MAX_ATTEMPTS: u32 = 48;

/// What a decision is bound by: the policy that applies and the operator's own limits.
#[derive(Clone, Copy, Debug)]
pub struct Terms<'a> {
    pub spec: &'a ShutdownPolicySpec,
    /// The policy's `metadata.generation` (0 for `--default-profile`).
    pub generation: i64,
    /// The most ephemeral containers lameduck adds to one pod (`--max-ephemeral-containers`).
    pub max_ephemeral_containers: u32,
}

impl Terms<'_> {
    /// How long one attempt may take: the policy's, never more than the CRD allows (a policy
    /// stored before that limit existed may say more).
    pub fn attempt_timeout(&self) -> Duration {
        self.spec.completion.attempt_timeout.as_std().min(Duration::from_secs(MAX_ATTEMPT_TIMEOUT_SECONDS))
    }
}

/// What to do with a pod now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// lameduck has nothing to do with this pod.
    Ignore(Ignored),
    /// Nothing to do until the pod changes, or until `until` when given.
    Wait { reason: Waiting, until: Option<Timestamp> },
    /// Record attempt `number` (round `round`, under `epoch`) with `method`, then make the call.
    Attempt { method: ShutdownMethod, number: u32, round: u32, epoch: Epoch, last_main_exit: Timestamp },
    /// Attempt `number` is under way: look again at `deadline` if the pod has not changed.
    Verify { number: u32, method: ShutdownMethod, deadline: Timestamp },
    /// The ephemeral container of attempt `number` exited and says how the call went: record it.
    RecordOutcome { number: u32, method: ShutdownMethod, outcome: Outcome },
    /// The proxy exited 0 after lameduck's attempts: the pod completes.
    Done { attempts: u32 },
    /// The proxy exited non-zero after lameduck's attempts: the pod fails, and the Job with it.
    ProxyFailed { exit_code: i32, attempts: u32 },
    /// Every method of round `round` failed; round `round + 1` starts at `retry_at`.
    Exhausted { round: u32, retry_at: Timestamp },
    /// lameduck stops trying: no further calls until the proxy restarts or the policy changes.
    GiveUp { reason: GaveUp, attempts: u32 },
}

/// Why lameduck gave up on a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GaveUp {
    /// `completion.maxRounds` rounds failed.
    Rounds(u32),
    /// No method of the policy can work on this pod; the text says why.
    NoMethod(String),
    /// The pod has had [`MAX_ATTEMPTS`] attempts.
    Attempts,
}

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rounds(rounds) => {
                write!(f, "{rounds} round(s) of completion.methods failed (completion.maxRounds)")
            }
            Self::NoMethod(why) => write!(f, "no method of completion.methods can stop this proxy: {why}"),
            Self::Attempts => write!(f, "the pod has had {MAX_ATTEMPTS} attempts, the most lameduck makes"),
        }
    }
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

/// Decides what to do with `pod` under `terms`, given the attempts already recorded on it.
pub fn decide(pod: &Pod, terms: &Terms<'_>, log: &AttemptLog, now: Timestamp) -> Action {
    let policy = terms.spec;
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
    let proxy = policy.proxy.resolve();
    let is_proxy = |c: &Container| c.name == proxy.container_name;
    if spec
        .init_containers
        .iter()
        .flatten()
        .any(|c| is_proxy(c) && c.restart_policy.as_deref() == Some("Always"))
    {
        return Action::Ignore(Ignored::NativeSidecar);
    }
    let Some(proxy_container) = spec.containers.iter().find(|c| is_proxy(c)) else {
        return Action::Ignore(Ignored::NoProxy);
    };
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if restart_policy == "Always" {
        return Action::Ignore(Ignored::RestartsAlways);
    }

    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    let attempts = log.len();
    let proxy_status = status_of(statuses, &proxy.container_name);
    let proxy_state = proxy_status.and_then(|s| s.state.as_ref());
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

    let no_annotations = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&no_annotations);
    let situation = Situation {
        terms,
        proxy: &proxy,
        endpoint: shutdown_endpoint(proxy_container, annotations, &proxy),
        epoch: Epoch {
            generation: terms.generation,
            proxy_restarts: proxy_status.map_or(0, |s| s.restart_count),
        },
        last_exit,
    };
    situation.next_attempt(log, pod, now)
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
    if !attempt.method.adds_container() || !matches!(attempt.outcome, None | Some(Outcome::Sent)) {
        return attempt.outcome.clone();
    }
    let name = attempt.ephemeral_container_name();
    let statuses = pod.status.as_ref().and_then(|s| s.ephemeral_container_statuses.as_ref());
    let terminated =
        status_of(statuses, &name).and_then(|s| s.state.as_ref()).and_then(|s| s.terminated.as_ref());
    match terminated {
        None => attempt.outcome.clone(),
        Some(t) if t.exit_code == 0 => Some(Outcome::Sent),
        Some(t) if t.exit_code == EXIT_ENDPOINT_DISABLED => Some(Outcome::EndpointDisabled),
        Some(t) => {
            let said = t.message.as_deref().map(str::trim).filter(|m| !m.is_empty());
            let message = match said {
                Some(said) => format!("ephemeral container {name} exited with code {}: {said}", t.exit_code),
                None => format!("ephemeral container {name} exited with code {}", t.exit_code),
            };
            Some(Outcome::failed(&message))
        }
    }
}

/// A stuck pod, as the choice of the next attempt sees it.
struct Situation<'a> {
    terms: &'a Terms<'a>,
    proxy: &'a ResolvedProxy,
    endpoint: Endpoint,
    epoch: Epoch,
    last_exit: Timestamp,
}

impl Situation<'_> {
    /// The pod is stuck: the next step in the policy's methods, given what was already tried.
    fn next_attempt(&self, log: &AttemptLog, pod: &Pod, now: Timestamp) -> Action {
        let methods = &self.terms.spec.completion.methods;
        let number = log.len().saturating_add(1);

        // Wait out an attempt that may still work. A failed call needs no waiting.
        let mut ended = None;
        let mut outcome = None;
        if let Some(last) = log.last() {
            let effective = effective_outcome(last, pod);
            if let Some(outcome) = effective.clone().filter(|_| effective != last.outcome) {
                return Action::RecordOutcome { number: last.number, method: last.method, outcome };
            }
            let deadline = plus(last.started, self.terms.attempt_timeout());
            ended = Some(match &effective {
                Some(Outcome::Failed { .. } | Outcome::EndpointDisabled) => last.started,
                None | Some(Outcome::Sent) if now < deadline => {
                    return Action::Verify { number: last.number, method: last.method, deadline };
                }
                None | Some(Outcome::Sent) => deadline,
            });
            outcome = effective;
        }
        if log.len() >= MAX_ATTEMPTS {
            return Action::GiveUp { reason: GaveUp::Attempts, attempts: log.len() };
        }

        // A 404 seen in this epoch rules the endpoint out as surely as the pod spec does.
        let current = log.in_epoch(self.epoch);
        let endpoint = if current.iter().any(|a| a.outcome == Some(Outcome::EndpointDisabled)) {
            Endpoint::Disabled("its shutdown endpoint answered 404".into())
        } else {
            self.endpoint.clone()
        };
        let containers_left = self.terms.max_ephemeral_containers.saturating_sub(log.ephemeral_containers());
        let usable = |m: &ShutdownMethod| {
            let no_container_left = m.adds_container() && containers_left == 0;
            !(endpoint.rules_out(*m, self.proxy) || no_container_left)
        };
        let attempt = |method, round| Action::Attempt {
            method,
            number,
            round,
            epoch: self.epoch,
            last_main_exit: self.last_exit,
        };
        let first_usable = || methods.iter().copied().find(|m| usable(m));
        let no_method = || {
            let mut why = Vec::new();
            if let Endpoint::Disabled(reason) = &endpoint {
                why.push(format!("the shutdown endpoint is off ({reason}) and Signal is the only method that does not need it"));
            }
            if containers_left == 0 {
                why.push(format!(
                    "the pod already has {} ephemeral container(s) of lameduck's, the most it adds (--max-ephemeral-containers)",
                    log.ephemeral_containers()
                ));
            }
            Action::GiveUp { reason: GaveUp::NoMethod(why.join("; ")), attempts: log.len() }
        };

        let Some(last) = current.last() else {
            // A fresh start: nothing tried yet, or a new policy spec or proxy since.
            let round = log.last().map_or(1, |l| l.round + 1);
            return match first_usable() {
                Some(method) => attempt(method, round),
                None => no_method(),
            };
        };
        let ended = ended.unwrap_or(last.started);
        let tried: Vec<ShutdownMethod> =
            current.iter().filter(|a| a.round == last.round).map(|a| a.method).collect();
        let next = if outcome == Some(Outcome::EndpointDisabled) {
            // Only a signal can stop a proxy whose /shutdown is off.
            Some(ShutdownMethod::Signal).filter(|m| methods.contains(m) && !tried.contains(m) && usable(m))
        } else {
            methods
                .iter()
                .skip_while(|m| **m != last.method)
                .skip(1)
                .find(|m| !tried.contains(m) && usable(m))
                .copied()
        };
        if let Some(method) = next {
            return attempt(method, last.round);
        }
        let rounds = {
            let mut rounds: Vec<u32> = current.iter().map(|a| a.round).collect();
            rounds.dedup();
            u32::try_from(rounds.len()).unwrap_or(u32::MAX)
        };
        if rounds >= self.terms.spec.completion.max_rounds {
            return Action::GiveUp { reason: GaveUp::Rounds(rounds), attempts: log.len() };
        }
        let Some(method) = first_usable() else { return no_method() };
        let retry_at = plus(ended, backoff(rounds));
        if now >= retry_at {
            attempt(method, last.round + 1)
        } else {
            Action::Exhausted { round: last.round, retry_at }
        }
    }
}

#[cfg(test)]
mod tests;
