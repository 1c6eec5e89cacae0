//! What the admission webhook answers, as pure functions of the request and what the operator
//! knows (its policy cache, the labels of the namespace's pods). No client, no clock.
//!
//! - Pods: the oldest `ShutdownPolicy` that selects the pod has its drain settings applied
//!   (`lameduck_api::drain`), answered as a JSON Patch computed against the pod exactly as the
//!   API server sent it, so fields lameduck's types do not know are never touched. Pods that no
//!   policy selects get no patch at all.
//! - ShutdownPolicies: a spec the types cannot read is refused with the field's path; overlaps
//!   with other policies and timing problems come back as warnings. Reviewed through the
//!   mutating path, an allowed policy also gets the review stamp (`crate::review`) that lets
//!   the operator honour its power-bearing fields.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::{
    ResourceExt,
    core::{
        DynamicObject,
        admission::{AdmissionRequest, AdmissionResponse, Operation},
    },
};
use lameduck_api::{
    ShutdownPolicy, carry, drain,
    selection::{self, selects},
    shape::PodShape,
    timing::{Severity, Timeline},
};

use crate::powers::{self, Request as PowerRequest};

/// How a review ended, for the `webhook_admissions_total{result}` metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A policy applied and changed the pod.
    Mutated,
    /// A policy applied and the pod already had its settings (or has no proxy).
    Unchanged,
    /// No policy selects the pod, or the operation is not one lameduck looks at.
    NotSelected,
    /// Allowed, with warnings (policies).
    Warned,
    /// Allowed as is (policies).
    Accepted,
    /// Refused: a timing rule under `enforce: Reject`, or a malformed policy.
    Rejected,
    /// The request could not be read; the object is allowed unchanged.
    Error,
}

impl Verdict {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutated => "mutated",
            Self::Unchanged => "unchanged",
            Self::NotSelected => "not_selected",
            Self::Warned => "warned",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Error => "error",
        }
    }
}

/// A pod as the policy review needs it: its name and labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodLabels {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

fn with_warnings(mut response: AdmissionResponse, warnings: Vec<String>) -> AdmissionResponse {
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response
}

fn namespace_of(request: &AdmissionRequest<DynamicObject>, object: &DynamicObject) -> Option<String> {
    request.namespace.clone().or_else(|| object.metadata.namespace.clone())
}

/// Reviews a Pod CREATE. `policies` are the cached policies (any namespace; only the pod's own
/// namespace's are considered).
pub fn review_pod(
    request: &AdmissionRequest<DynamicObject>,
    policies: &[Arc<ShutdownPolicy>],
) -> (AdmissionResponse, Verdict) {
    let response = AdmissionResponse::from(request);
    let Some(object) = request.object.as_ref().filter(|_| request.operation == Operation::Create) else {
        return (response, Verdict::NotSelected);
    };
    let namespace = namespace_of(request, object);
    let labels = object.metadata.labels.clone().unwrap_or_default();
    let chosen = selection::select(policies.iter().map(AsRef::as_ref), namespace.as_deref(), &labels);
    let Some(winner) = chosen.winner else { return (response, Verdict::NotSelected) };
    let name = winner.name_any();
    let mut warnings: Vec<String> = chosen
        .losers
        .iter()
        .map(|loser| {
            format!("ShutdownPolicy {} also selects this pod; {name} is older and applies", loser.name_any())
        })
        .collect();

    let raw = match serde_json::to_value(object) {
        Ok(raw) => raw,
        Err(err) => return error(response, warnings, &err),
    };
    match carry::edit::<Pod, _>(&raw, |pod| drain::apply(pod, &name, &winner.spec)) {
        Err(err) => error(response, warnings, &err),
        Ok((_, Err(rejected))) => (response.deny(rejected), Verdict::Rejected),
        Ok((mutated, Ok(applied))) => {
            warnings.extend(applied.warnings);
            let patch = json_patch::diff(&raw, &mutated);
            if patch.0.is_empty() {
                return (with_warnings(response, warnings), Verdict::Unchanged);
            }
            match response.clone().with_patch(patch) {
                Ok(patched) => (with_warnings(patched, warnings), Verdict::Mutated),
                Err(err) => error(response, warnings, &err),
            }
        }
    }
}

/// Lets the pod in unchanged: with `failurePolicy: Ignore` that is what the API server would do
/// anyway, and this way the reason reaches the user as a warning.
fn error(
    response: AdmissionResponse,
    mut warnings: Vec<String>,
    err: &dyn std::fmt::Display,
) -> (AdmissionResponse, Verdict) {
    warnings.push(format!("lameduck could not apply drain settings to this pod: {err}"));
    (with_warnings(response, warnings), Verdict::Error)
}

/// Reviews a ShutdownPolicy CREATE or UPDATE. `policies` are the cached policies, `pods` the
/// pods of the policy's namespace.
pub fn review_policy(
    request: &AdmissionRequest<DynamicObject>,
    policies: &[Arc<ShutdownPolicy>],
    pods: &[PodLabels],
) -> (AdmissionResponse, Verdict) {
    let response = AdmissionResponse::from(request);
    let Some(object) = request
        .object
        .as_ref()
        .filter(|_| matches!(request.operation, Operation::Create | Operation::Update))
    else {
        return (response, Verdict::Accepted);
    };
    let raw = match serde_json::to_value(object) {
        Ok(raw) => raw,
        Err(err) => {
            return (response.deny(format!("cannot read the ShutdownPolicy: {err}")), Verdict::Rejected);
        }
    };
    let policy: ShutdownPolicy = match serde_path_to_error::deserialize(&raw) {
        Ok(policy) => policy,
        Err(err) => {
            let message = format!("{}: {}", err.path(), err.inner());
            return (response.deny(message), Verdict::Rejected);
        }
    };
    if let Err(reason) = selects(&policy, None, &BTreeMap::new()) {
        return (response.deny(reason), Verdict::Rejected);
    }
    let name = policy.name_any();
    let namespace = namespace_of(request, object);
    let mut warnings = Vec::new();

    for other in policies.iter().filter(|p| p.namespace() == namespace && p.name_any() != name) {
        let both: Vec<&PodLabels> = pods
            .iter()
            .filter(|pod| {
                selects(&policy, None, &pod.labels).unwrap_or(false)
                    && selects(other, None, &pod.labels).unwrap_or(false)
            })
            .collect();
        let older = match selection::oldest_first(other, &policy) {
            std::cmp::Ordering::Greater => name.clone(),
            _ => other.name_any(),
        };
        if let Some(example) = both.first() {
            warnings.push(format!(
                "ShutdownPolicy {} also selects {} of this namespace's pods (such as {}); the older policy, {older}, applies to them",
                other.name_any(),
                both.len(),
                example.name
            ));
        } else if other.spec.selector == policy.spec.selector {
            warnings.push(format!(
                "ShutdownPolicy {} has the same selector; the older policy, {older}, applies to the pods both select",
                other.name_any()
            ));
        }
    }
    warnings.extend(timing_warnings(&policy));
    let verdict = if warnings.is_empty() { Verdict::Accepted } else { Verdict::Warned };
    (with_warnings(response, warnings), verdict)
}

/// Adds the review stamp to a policy the webhook allowed: `stamp(namespace, name, spec)` makes
/// it. A policy that asks for a power cannot be admitted without one (no key yet, or no name to
/// bind it to); one that asks for none is admitted as it is then. The warnings are left to the
/// validating path, which reviews the same policy after every mutation: said once, not twice.
pub fn stamp_policy(
    request: &AdmissionRequest<DynamicObject>,
    mut response: AdmissionResponse,
    stamp: impl FnOnce(&str, &str, &lameduck_api::ShutdownPolicySpec) -> Option<String>,
) -> (AdmissionResponse, Verdict) {
    response.warnings = None;
    let verdict = Verdict::Unchanged;
    let Some(object) = request.object.as_ref() else { return (response, verdict) };
    let Ok(raw) = serde_json::to_value(object) else { return (response, verdict) };
    let Ok(policy) = serde_json::from_value::<ShutdownPolicy>(raw.clone()) else {
        return (response, verdict);
    };
    let asks = !powers::requested(&policy.spec).is_empty();
    let namespace = namespace_of(request, object).unwrap_or_default();
    let name = policy.metadata.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| request.name.clone());
    let refuse = |response: AdmissionResponse, why: &str| (response.deny(why.to_owned()), Verdict::Rejected);
    if name.is_empty() {
        if asks {
            return refuse(
                response,
                "metadata.name: a ShutdownPolicy that asks for powers needs a name, not generateName (its review stamp is bound to it)",
            );
        }
        return (response, verdict);
    }
    let Some(value) = stamp(&namespace, &name, &policy.spec) else {
        if asks {
            return refuse(
                response,
                "lameduck's webhook has not loaded its review key yet; try again in a few seconds",
            );
        }
        return (response, verdict);
    };
    let mut mutated = raw.clone();
    let Some(metadata) = mutated.get_mut("metadata").and_then(|m| m.as_object_mut()) else {
        return (response, verdict);
    };
    let annotations = metadata.entry("annotations").or_insert_with(|| serde_json::json!({}));
    if !annotations.is_object() {
        *annotations = serde_json::json!({});
    }
    if let Some(map) = annotations.as_object_mut() {
        map.insert(lameduck_api::names::annotations::POLICY_REVIEW.to_owned(), value.into());
    }
    let patch = json_patch::diff(&raw, &mutated);
    if patch.0.is_empty() {
        return (response, verdict);
    }
    match response.clone().with_patch(patch) {
        Ok(patched) => (patched, Verdict::Mutated),
        Err(err) => refuse(response, &format!("cannot write the review stamp: {err}")),
    }
}

/// The powers a ShutdownPolicy CREATE or UPDATE asks the operator to use for its author (none
/// for a spec the types cannot read: `review_policy` refuses it already).
pub fn requested_powers(request: &AdmissionRequest<DynamicObject>) -> Vec<PowerRequest> {
    let Some(object) = request.object.as_ref() else { return Vec::new() };
    let policy =
        serde_json::to_value(object).ok().and_then(|raw| serde_json::from_value::<ShutdownPolicy>(raw).ok());
    policy.map(|p| powers::requested(&p.spec)).unwrap_or_default()
}

/// Refuses the policy: each field that asks for a power `user` lacks (or that could not be
/// checked), with the permission, as `kubectl auth can-i` would name it.
pub fn refuse_powers(
    response: AdmissionResponse,
    user: &UserInfo,
    namespace: &str,
    lacking: &[(PowerRequest, Option<String>)],
) -> AdmissionResponse {
    let who = user.username.as_deref().unwrap_or("the requesting user");
    let reasons: Vec<String> = lacking
        .iter()
        .map(|(asked, error)| match error {
            None => format!(
                "{}: needs {} in namespace {namespace}, which {who} does not have; lameduck's operator would use it on their behalf",
                asked.field,
                asked.power.describe()
            ),
            Some(error) => format!(
                "{}: needs {} in namespace {namespace}, and lameduck could not check that {who} has it: {error}",
                asked.field,
                asked.power.describe()
            ),
        })
        .collect();
    response.deny(reasons.join("; "))
}

/// The timing rules for a pod that leaves everything to the policy: one app container without a
/// preStop hook, the proxy, and the default `terminationGracePeriodSeconds`.
fn timing_warnings(policy: &ShutdownPolicy) -> Vec<String> {
    let proxy = policy.spec.mesh_proxy().resolve();
    let spec = PodSpec {
        containers: vec![
            Container { name: "app".into(), ..Container::default() },
            Container { name: proxy.container_name.clone(), ..Container::default() },
        ],
        ..PodSpec::default()
    };
    let shape = PodShape::new(&spec, None, false);
    let consequence = match policy.spec.drain.enforce {
        lameduck_api::Enforce::Warn => "pods are admitted with a warning",
        lameduck_api::Enforce::Fix => "pods get a longer terminationGracePeriodSeconds at admission",
        lameduck_api::Enforce::Reject => "such pods are refused at admission",
    };
    Timeline::of(&shape, Some(&policy.spec))
        .findings()
        .into_iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| {
            format!(
                "for a pod with the default terminationGracePeriodSeconds: {}: {} ({consequence})",
                f.rule.as_str(),
                f.message
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
