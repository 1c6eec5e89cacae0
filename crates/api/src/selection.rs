//! Which `ShutdownPolicy` applies to a pod: the oldest one that selects it.

use std::collections::BTreeMap;

use kube::{
    ResourceExt,
    core::{Selector, SelectorExt},
};

use crate::policy::ShutdownPolicy;

/// The policies that select one pod.
#[derive(Debug, Default, PartialEq)]
pub struct Selection<'a> {
    /// The oldest selecting policy: the one that applies.
    pub winner: Option<&'a ShutdownPolicy>,
    /// Younger policies that also select the pod; they report a `Conflict` condition.
    pub losers: Vec<&'a ShutdownPolicy>,
    /// Policies whose selector could not be understood, with the reason.
    pub invalid: Vec<(&'a ShutdownPolicy, String)>,
}

/// Whether `policy` selects a pod with these labels in `namespace`.
///
/// A policy selects pods of its own namespace only; a policy with no namespace (as read from a
/// manifest file) applies to any namespace.
pub fn selects(
    policy: &ShutdownPolicy,
    namespace: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    if let (Some(own), Some(pod)) = (policy.metadata.namespace.as_deref(), namespace)
        && own != pod
    {
        return Ok(false);
    }
    let selector = Selector::try_from(policy.spec.selector.clone())
        .map_err(|err| format!("spec.selector of ShutdownPolicy {}: {err}", policy.name_any()))?;
    Ok(selector.matches(labels))
}

/// Orders policies oldest first, by creation time, then by name so the choice is stable when two
/// were created in the same second. A policy not yet created (no timestamp) is the youngest.
pub fn oldest_first(a: &ShutdownPolicy, b: &ShutdownPolicy) -> std::cmp::Ordering {
    let age = |p: &ShutdownPolicy| p.metadata.creation_timestamp.clone().map(|t| t.0);
    match (age(a), age(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
    .then_with(|| a.name_any().cmp(&b.name_any()))
}

/// Sorts the policies that select a pod: oldest first, by creation time, then by name so the
/// choice is stable when two were created in the same second.
pub fn select<'a>(
    policies: impl IntoIterator<Item = &'a ShutdownPolicy>,
    namespace: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> Selection<'a> {
    let mut selection = Selection::default();
    let mut matching = Vec::new();
    for policy in policies {
        match selects(policy, namespace, labels) {
            Ok(true) => matching.push(policy),
            Ok(false) => {}
            Err(reason) => selection.invalid.push((policy, reason)),
        }
    }
    matching.sort_by(|a, b| oldest_first(a, b));
    let mut matching = matching.into_iter();
    selection.winner = matching.next();
    selection.losers = matching.collect();
    selection
}
