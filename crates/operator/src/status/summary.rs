//! What the operator reports about the pods it watches: the gauges, and each `ShutdownPolicy`'s
//! status (matched and stuck pods, `Ready`, `Conflict`). Pure: computed from cached pods and
//! policies; the status writer only compares and patches.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::core::v1::Pod,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::ResourceExt;
use lameduck_api::{
    ShutdownCounts, ShutdownPolicy, ShutdownPolicyStatus,
    names::annotations,
    policy::{PolicyId, conditions},
    selection,
    shape::PodShape,
};

use crate::{
    controller::attempts::AttemptLog,
    controller::decide::{Action, Ignored, Waiting, decide},
    controller::settings::Settings,
    powers::{Refusal, refusal},
    review::Check,
};

/// Why a pod is stuck: the label of `lameduck_stuck_pods{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StuckReason {
    /// lameduck is stopping its sidecars (or waiting out `completion.delay` to).
    Stopping,
    /// lameduck gave up on it.
    GaveUp,
    /// A sidecar known by its name that the policy does not list still runs.
    UnlistedSidecar,
    /// The policy turns completion off.
    CompletionDisabled,
    /// The operator refuses the policy that selects it.
    Refused,
    /// No policy selects it (and `--default-profile` does not cover it).
    NoPolicy,
}

impl StuckReason {
    pub const ALL: [Self; 6] = [
        Self::Stopping,
        Self::GaveUp,
        Self::UnlistedSidecar,
        Self::CompletionDisabled,
        Self::Refused,
        Self::NoPolicy,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Stopping => "stopping",
            Self::GaveUp => "gave_up",
            Self::UnlistedSidecar => "unlisted_sidecar",
            Self::CompletionDisabled => "completion_disabled",
            Self::Refused => "refused",
            Self::NoPolicy => "no_policy",
        }
    }
}

/// Why `pod`, under a policy that lists `sidecars` and a decision `action`, is stuck; `None`
/// when it is not.
pub fn stuck_reason(pod: &Pod, sidecars: &[&str], action: &Action) -> Option<StuckReason> {
    let stuck = || PodShape::of_pod(pod).is_some_and(|shape| shape.stuck(pod, sidecars));
    match action {
        Action::Attempt { .. }
        | Action::Verify { .. }
        | Action::RecordOutcome { .. }
        | Action::Exhausted { .. }
        | Action::Wait { reason: Waiting::Delay, .. } => Some(StuckReason::Stopping),
        Action::GiveUp { .. } => Some(StuckReason::GaveUp),
        Action::Ignore(Ignored::UnlistedSidecar { .. }) => Some(StuckReason::UnlistedSidecar),
        // None of the policy's sidecars is there, but another one runs.
        Action::Ignore(Ignored::NoProxy) => stuck().then_some(StuckReason::UnlistedSidecar),
        Action::Ignore(Ignored::CompletionDisabled) => stuck().then_some(StuckReason::CompletionDisabled),
        _ => None,
    }
}

/// One policy's share of the pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicySummary {
    pub matched: i32,
    pub stuck: i32,
    /// A pod this policy selects but an older policy wins.
    pub conflict: Option<Conflict>,
    /// Why the selector could not be used.
    pub invalid: Option<String>,
    /// Why the operator will not act on this policy.
    pub refused: Option<Refusal>,
}

/// A pod that two policies select: the older one applies to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub pod: String,
    /// The older policy's name (it is in the same namespace).
    pub winner: String,
}

/// The pods of one watch scope, summed up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Unfinished run-to-completion pods that a policy (or `--default-profile`) applies to.
    pub observed: i64,
    /// Stuck pods, whether a policy applies or not, by reason.
    pub stuck: BTreeMap<StuckReason, i64>,
    /// By policy namespace and name; every policy given appears.
    pub policies: BTreeMap<PolicyId, PolicySummary>,
}

fn is_finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// Sums up `pods` under `policies`, as the operator run with `settings` sees them.
pub fn summarize(
    policies: &[Arc<ShutdownPolicy>],
    pods: impl IntoIterator<Item = Pod>,
    settings: &Settings,
    now: Timestamp,
) -> Summary {
    let mut summary = Summary {
        policies: policies
            .iter()
            .map(|p| {
                let refused = refusal(&p.spec, &settings.limits).or_else(|| {
                    match settings.review.check(
                        p.metadata.namespace.as_deref().unwrap_or_default(),
                        p.metadata.name.as_deref().unwrap_or_default(),
                        &p.spec,
                        p.annotations().get(annotations::POLICY_REVIEW).map(String::as_str),
                    ) {
                        Check::NotReviewed(refused) => Some(refused),
                        // Until the key is loaded nothing is said: it comes within seconds.
                        Check::Pass | Check::Wait => None,
                    }
                });
                (PolicyId::of(p), PolicySummary { refused, ..PolicySummary::default() })
            })
            .collect(),
        ..Summary::default()
    };
    for pod in pods.into_iter().filter(|pod| !is_finished(pod)) {
        let selection =
            selection::select(policies.iter().map(Arc::as_ref), pod.namespace().as_deref(), pod.labels());
        for (policy, reason) in &selection.invalid {
            summary.policies.entry(PolicyId::of(policy)).or_default().invalid = Some(reason.clone());
        }
        // Borrowed, not cloned: this runs for every cached pod on every status tick.
        let (spec, generation) = match (selection.winner, settings.default.for_pod(&pod)) {
            (Some(winner), _) => (&winner.spec, winner.metadata.generation.unwrap_or(0)),
            (None, Some(spec)) => (spec, 0),
            (None, None) => {
                if PodShape::of_pod(&pod).is_some_and(|shape| shape.stuck(&pod, &[])) {
                    *summary.stuck.entry(StuckReason::NoPolicy).or_default() += 1;
                }
                continue;
            }
        };
        let sidecars = spec.sidecars();
        let names: Vec<&str> = sidecars.iter().map(|s| s.proxy.container_name.as_str()).collect();
        let refused = selection
            .winner
            .is_some_and(|w| summary.policies.get(&PolicyId::of(w)).is_some_and(|p| p.refused.is_some()));
        let log = AttemptLog::from_annotations(pod.metadata.annotations.as_ref()).unwrap_or_default();
        let action = decide(&pod, &settings.terms(spec, generation), &log, now);
        let reason = match stuck_reason(&pod, &names, &action) {
            Some(_) if refused => Some(StuckReason::Refused),
            reason => reason,
        };
        if matches!(action, Action::Ignore(_)) && reason.is_none() {
            continue;
        }
        summary.observed += 1;
        if let Some(reason) = reason {
            *summary.stuck.entry(reason).or_default() += 1;
        }
        if let Some(winner) = selection.winner {
            let entry = summary.policies.entry(PolicyId::of(winner)).or_default();
            entry.matched += 1;
            entry.stuck += i32::from(reason.is_some());
            for loser in &selection.losers {
                let entry = summary.policies.entry(PolicyId::of(loser)).or_default();
                entry
                    .conflict
                    .get_or_insert_with(|| Conflict { pod: pod.name_any(), winner: winner.name_any() });
            }
        }
    }
    summary
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// The status `policy` should have, given its summary and its shutdown counts. Conditions keep
/// their `lastTransitionTime` while their status does not change.
pub fn desired_status(
    policy: &ShutdownPolicy,
    summary: &PolicySummary,
    shutdowns: ShutdownCounts,
    now: Timestamp,
) -> ShutdownPolicyStatus {
    let generation = policy.metadata.generation;
    let ready = match (&summary.invalid, &summary.refused) {
        (Some(reason), _) => {
            condition(conditions::READY, false, "InvalidSelector", reason.clone(), generation, now)
        }
        (None, Some(refused)) => {
            condition(conditions::READY, false, refused.condition, refused.message.clone(), generation, now)
        }
        (None, None) => condition(
            conditions::READY,
            true,
            "Accepted",
            format!("applies to {} pod(s), {} stuck", summary.matched, summary.stuck),
            generation,
            now,
        ),
    };
    let conflict = match &summary.conflict {
        Some(Conflict { pod, winner }) => condition(
            conditions::CONFLICT,
            true,
            "OlderPolicyWins",
            format!(
                "pod {pod} is also selected by ShutdownPolicy {winner}, which is older and applies to it"
            ),
            generation,
            now,
        ),
        None => condition(
            conditions::CONFLICT,
            false,
            "NoOverlap",
            "no older policy selects the same pods".into(),
            generation,
            now,
        ),
    };
    let previous = policy.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let conditions = [ready, conflict]
        .into_iter()
        .map(|mut c| {
            if let Some(old) = previous.iter().find(|o| o.type_ == c.type_ && o.status == c.status) {
                c.last_transition_time = old.last_transition_time.clone();
            }
            c
        })
        .collect();
    ShutdownPolicyStatus {
        observed_generation: generation,
        matched_pods: summary.matched,
        stuck_pods: summary.stuck,
        shutdowns,
        conditions,
    }
}

/// Whether two statuses say the same, ignoring only condition timestamps.
pub fn same_status(a: &ShutdownPolicyStatus, b: &ShutdownPolicyStatus) -> bool {
    let strip = |s: &ShutdownPolicyStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests;
