//! What to do with one pod: `decide(pod, terms, attempts, now) -> Action`. Pure: no client, no
//! clock; the caller performs the action and records it, then decides again.
//!
//! A run-to-completion pod (`restartPolicy` `Never` or `OnFailure`, whatever owns it) is *stuck*
//! when every main container has terminated for good while a sidecar still runs. The main
//! containers are all but the policy's sidecars and the sidecars known by name
//! (`lameduck_api::shape`). The policy's sidecars are stopped in the order it lists them, each
//! verified exited before the next; native sidecars are left to the kubelet.
//!
//! For the sidecar being stopped, its methods are tried in order, one attempt at a time: each is
//! given `attemptTimeout` for the sidecar to exit (less when the call itself failed), then the
//! next is tried. Methods that go through the shutdown endpoint are skipped when the pod shows
//! the endpoint is off (`lameduck_api::endpoint`), and a 404 from it jumps to `Signal`. When a
//! round has tried every method, the next round waits a backoff that doubles up to 5 minutes.
//! After `completion.maxRounds` rounds, or when no method is left, the operator gives up on the
//! pod until that sidecar restarts or the policy's spec changes.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::{Container, ContainerStatus, Pod},
    jiff::{SignedDuration, Timestamp},
};
use lameduck_api::{
    ShutdownMethod, ShutdownPolicySpec, Sidecar,
    admin::EXIT_ENDPOINT_DISABLED,
    endpoint::{Endpoint, shutdown_endpoint},
    policy::MAX_ATTEMPT_TIMEOUT_SECONDS,
    shape::{Mains, Placement, PodShape, status_of, terminated},
};

use crate::controller::attempts::{Attempt, AttemptLog, Epoch, Outcome, in_epoch};

/// The first pause between rounds; it doubles each round.
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// The longest pause between rounds.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The most attempts on one pod, whatever its epochs and sidecars: the record stays bounded.
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

/// When the pod's main containers and its sidecars ended, for the latency metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ends {
    /// When the last main container exited.
    pub last_main_exit: Option<Timestamp>,
    /// When the last sidecar exited.
    pub last_sidecar_exit: Option<Timestamp>,
}

/// What to do with a pod now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// lameduck has nothing to do with this pod.
    Ignore(Ignored),
    /// Nothing to do until the pod changes, or until `until` when given.
    Wait { reason: Waiting, until: Option<Timestamp> },
    /// Record attempt `number` (round `round`, under `epoch`) on `sidecar` with `method`, then
    /// make the call.
    Attempt {
        sidecar: Box<Sidecar>,
        method: ShutdownMethod,
        number: u32,
        round: u32,
        epoch: Epoch,
        last_main_exit: Timestamp,
    },
    /// Attempt `number` is under way: look again at `deadline` if the pod has not changed.
    Verify { number: u32, method: ShutdownMethod, deadline: Timestamp },
    /// The ephemeral container of attempt `number` exited and says how the call went: record it.
    RecordOutcome { number: u32, method: ShutdownMethod, outcome: Outcome },
    /// Every sidecar exited 0 after lameduck's attempts: the pod completes. `sidecars` are the
    /// policy's sidecars the pod has, in the order they were stopped.
    Done { attempts: u32, ends: Ends, sidecars: Vec<String> },
    /// A sidecar exited non-zero after lameduck's attempts: the pod fails, and its owner may
    /// count a failure. `container` is the first such sidecar in the policy's order.
    SidecarFailed { container: String, exit_code: i32, attempts: u32, ends: Ends },
    /// Every method of round `round` failed; round `round + 1` starts at `retry_at`.
    Exhausted { container: String, round: u32, retry_at: Timestamp },
    /// lameduck stops trying: no further calls until the sidecar restarts or the policy changes.
    GiveUp { container: String, reason: GaveUp, attempts: u32 },
}

/// Why lameduck gave up on a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GaveUp {
    /// `completion.maxRounds` rounds failed.
    Rounds(u32),
    /// No method of the policy can work on this sidecar; the text says why.
    NoMethod(String),
    /// The pod has had [`MAX_ATTEMPTS`] attempts.
    Attempts,
}

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rounds(rounds) => {
                write!(f, "{rounds} round(s) of its methods failed (completion.maxRounds)")
            }
            Self::NoMethod(why) => write!(f, "no method of its methods can stop it: {why}"),
            Self::Attempts => write!(f, "the pod has had {MAX_ATTEMPTS} attempts, the most lameduck makes"),
        }
    }
}

/// Why a pod is none of lameduck's business, or why lameduck cannot help it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// The policy turns completion off.
    CompletionDisabled,
    /// The pod has none of the policy's sidecars as a regular container.
    NoProxy,
    /// The policy's sidecars in the pod are all native: the kubelet stops them after the main
    /// containers.
    NativeSidecar,
    /// `restartPolicy: Always` never lets a pod finish.
    RestartsAlways,
    /// The sidecars exited with no attempt of lameduck's (e.g. the app ran `lameduck-await -S`).
    ProxyExitedByItself { exit_code: i32 },
    /// The main containers have exited, but a sidecar known by its name that the policy does
    /// not list still runs: lameduck cannot finish the pod, and stops nothing.
    UnlistedSidecar { container: String },
}

/// Why there is nothing to do yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// A main container has not terminated.
    MainContainersRunning,
    /// A main container exited and the kubelet will restart it.
    WillRestart { container: String },
    /// The main containers are done, but `completion.delay` has not passed.
    Delay,
    /// The sidecar to stop next is not running (starting, or restarting).
    ProxyNotRunning,
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
    let Some(shape) = PodShape::of_pod(pod) else {
        return Action::Ignore(Ignored::NoProxy);
    };
    if !shape.runs_to_completion {
        return Action::Ignore(Ignored::RestartsAlways);
    }
    let sidecars = policy.sidecars();
    let names: Vec<&str> = sidecars.iter().map(|s| s.proxy.container_name.as_str()).collect();
    // The listed sidecars that are regular containers: the ones lameduck stops, in order.
    let classic: Vec<(&Sidecar, &Container)> = sidecars
        .iter()
        .filter_map(|s| {
            let placed = shape.container(&s.proxy.container_name)?;
            (placed.placement == Placement::Classic).then_some((s, placed.container))
        })
        .collect();
    if classic.is_empty() {
        let native = sidecars.iter().any(|s| shape.container(&s.proxy.container_name).is_some());
        return Action::Ignore(if native { Ignored::NativeSidecar } else { Ignored::NoProxy });
    }

    // The sidecars that ended, in order, and the first that has not.
    let mut next: Option<(&Sidecar, &Container, Option<&ContainerStatus>)> = None;
    let mut ended = Vec::new();
    for &(sidecar, container) in &classic {
        match terminated(pod, &container.name) {
            Some(t) => ended.push((container.name.as_str(), t)),
            None => {
                next = Some((sidecar, container, status_of(pod, &container.name)));
                break;
            }
        }
    }
    let mains = shape.mains(pod, &names);
    let Some((sidecar, container, status)) = next else {
        let ends = Ends {
            last_main_exit: match mains {
                Mains::Exited { last_exit } => last_exit,
                _ => None,
            },
            last_sidecar_exit: ended.iter().filter_map(|(_, t)| t.finished_at.as_ref().map(|f| f.0)).max(),
        };
        let failed = ended.iter().find(|(_, t)| t.exit_code != 0);
        return match (log.len(), failed) {
            (0, failed) => Action::Ignore(Ignored::ProxyExitedByItself {
                exit_code: failed.map_or(0, |(_, t)| t.exit_code),
            }),
            (attempts, None) => {
                let sidecars = ended.iter().map(|(name, _)| (*name).to_owned()).collect();
                Action::Done { attempts, ends, sidecars }
            }
            (attempts, Some((name, t))) => Action::SidecarFailed {
                container: (*name).to_owned(),
                exit_code: t.exit_code,
                attempts,
                ends,
            },
        };
    };

    // Every main container must have terminated for good; the last one's end starts the clock.
    let last_exit = match mains {
        Mains::Running => return Action::Wait { reason: Waiting::MainContainersRunning, until: None },
        Mains::WillRestart { container } => {
            return Action::Wait { reason: Waiting::WillRestart { container }, until: None };
        }
        Mains::Exited { last_exit } => last_exit.unwrap_or(now),
    };
    // A known sidecar the policy leaves out would keep the pod running whatever lameduck stops.
    if let Some(unlisted) = shape.unlisted_sidecars(&names).find(|c| terminated(pod, &c.name).is_none()) {
        return Action::Ignore(Ignored::UnlistedSidecar { container: unlisted.name.clone() });
    }
    let ready_at = plus(last_exit, policy.completion.delay.as_std());
    if now < ready_at {
        return Action::Wait { reason: Waiting::Delay, until: Some(ready_at) };
    }
    if status.and_then(|s| s.state.as_ref()).and_then(|s| s.running.as_ref()).is_none() {
        return Action::Wait { reason: Waiting::ProxyNotRunning, until: None };
    }

    let situation = Situation {
        terms,
        sidecar,
        // Records from before `sidecars` name no container: they were the proxy's, the first.
        unnamed: &sidecars[0].proxy.container_name,
        endpoint: shutdown_endpoint(container, shape.annotations, &sidecar.proxy),
        epoch: Epoch { generation: terms.generation, proxy_restarts: status.map_or(0, |s| s.restart_count) },
        last_exit,
    };
    situation.next_attempt(log, pod, now)
}

/// What an attempt came to: its recorded outcome, corrected by the exit code of the ephemeral
/// container it added, which runs after the call that created it has returned.
fn effective_outcome(attempt: &Attempt, pod: &Pod) -> Option<Outcome> {
    if !attempt.method.adds_container() || !matches!(attempt.outcome, None | Some(Outcome::Sent)) {
        return attempt.outcome.clone();
    }
    let name = attempt.ephemeral_container_name();
    let statuses = pod.status.as_ref().and_then(|s| s.ephemeral_container_statuses.as_ref());
    let terminated = statuses
        .and_then(|ss| ss.iter().find(|s| s.name == name))
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
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
    /// The sidecar being stopped.
    sidecar: &'a Sidecar,
    /// The container an attempt without one was made on.
    unnamed: &'a str,
    endpoint: Endpoint,
    epoch: Epoch,
    last_exit: Timestamp,
}

impl Situation<'_> {
    /// The sidecar still runs: the next step in its methods, given what was already tried.
    fn next_attempt(&self, log: &AttemptLog, pod: &Pod, now: Timestamp) -> Action {
        let methods = &self.sidecar.methods;
        let proxy = &self.sidecar.proxy;
        let container = || proxy.container_name.clone();
        let number = log.len().saturating_add(1);
        // This sidecar's attempts: the newest ones, back to one on another container.
        let mine = log.trailing(&proxy.container_name, self.unnamed);

        // Wait out an attempt that may still work. A failed call needs no waiting.
        let mut ended = None;
        let mut outcome = None;
        if let Some(last) = mine.last() {
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
            return Action::GiveUp { container: container(), reason: GaveUp::Attempts, attempts: log.len() };
        }

        // A 404 seen in this epoch rules the endpoint out as surely as the pod spec does.
        let current = in_epoch(mine, self.epoch);
        let endpoint = if current.iter().any(|a| a.outcome == Some(Outcome::EndpointDisabled)) {
            Endpoint::Disabled("its shutdown endpoint answered 404".into())
        } else {
            self.endpoint.clone()
        };
        let containers_left = self.terms.max_ephemeral_containers.saturating_sub(log.ephemeral_containers());
        let usable = |m: &ShutdownMethod| {
            let no_container_left = m.adds_container() && containers_left == 0;
            !(endpoint.rules_out(*m, proxy) || no_container_left)
        };
        let attempt = |method, round| Action::Attempt {
            sidecar: Box::new(self.sidecar.clone()),
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
            if why.is_empty() {
                why.push(format!("{} lists no method", self.sidecar.field));
            }
            Action::GiveUp {
                container: container(),
                reason: GaveUp::NoMethod(why.join("; ")),
                attempts: log.len(),
            }
        };

        let Some(last) = current.last() else {
            // A fresh start: nothing tried yet, or a new policy spec or sidecar restart since.
            let round = mine.last().map_or(1, |l| l.round + 1);
            return match first_usable() {
                Some(method) => attempt(method, round),
                None => no_method(),
            };
        };
        let ended = ended.unwrap_or(last.started);
        let tried: Vec<ShutdownMethod> =
            current.iter().filter(|a| a.round == last.round).map(|a| a.method).collect();
        let next = if outcome == Some(Outcome::EndpointDisabled) {
            // Only a signal can stop a sidecar whose quit endpoint is off.
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
            return Action::GiveUp {
                container: container(),
                reason: GaveUp::Rounds(rounds),
                attempts: log.len(),
            };
        }
        let Some(method) = first_usable() else { return no_method() };
        let retry_at = plus(ended, backoff(rounds));
        if now >= retry_at {
            attempt(method, last.round + 1)
        } else {
            Action::Exhausted { container: container(), round: last.round, retry_at }
        }
    }
}

#[cfg(test)]
mod tests;
