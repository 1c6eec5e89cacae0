//! The record of shutdown attempts kept on the pod itself (annotation
//! `lameduck.io/shutdown-attempts`), so a restarted operator or a new leader continues where the
//! last one stopped and never repeats an attempt that may have succeeded.
//!
//! An attempt is written *before* its call is made, and its outcome after; an attempt without an
//! outcome is one whose result is unknown, and it is given its full timeout before the next.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use lameduck_api::{ShutdownMethod, names::annotations};
use serde::{Deserialize, Serialize};

/// Every attempt on one pod, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AttemptLog(pub Vec<Attempt>);

/// One try at shutting the proxy down.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1-based, across the pod's life: names ephemeral containers uniquely.
    pub number: u32,
    /// 1-based: a round tries each of the policy's methods once, in order.
    pub round: u32,
    pub method: ShutdownMethod,
    /// The sidecar it tried to stop; absent in records from before `spec.sidecars`, whose
    /// attempts were all on the policy's proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub started: Timestamp,
    /// What the call reported; `None` while it is under way or when its result was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// What the attempt was made under; rounds are counted afresh when it changes.
    #[serde(flatten)]
    pub epoch: Epoch,
}

/// What the operator's attempts on a pod are counted against: a new policy spec or a restarted
/// proxy is a new situation, and earns a fresh `completion.maxRounds`. lameduck's own writes
/// (the attempt record, policy status) change neither.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Epoch {
    /// The policy's `metadata.generation` (0 for `--default-profile`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: i64,
    /// The proxy container's restart count.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub proxy_restarts: i32,
}

fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The longest failure message kept in the record; the event carries the longer text.
const MAX_RECORDED_MESSAGE: usize = 160;

/// What one call reported. Whether the proxy then exits is seen in the pod's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Outcome {
    /// The proxy accepted (200 from `/shutdown`, signal delivered, exec ran).
    Sent,
    /// `/shutdown` answered 404: only `Signal` can work.
    EndpointDisabled,
    /// The call failed; the message goes into an event.
    Failed { message: String },
}

impl Outcome {
    /// A failure, its message cut so that the record on the pod stays small.
    pub fn failed(message: &str) -> Self {
        Self::Failed { message: crate::events::shorten(message, MAX_RECORDED_MESSAGE) }
    }
}

/// Of `attempts`, those made under `epoch`: the newest ones, back to one made under another.
pub fn in_epoch(attempts: &[Attempt], epoch: Epoch) -> &[Attempt] {
    let start = attempts.iter().rposition(|a| a.epoch != epoch).map_or(0, |i| i + 1);
    &attempts[start..]
}

/// The annotation holds something that is not an attempt log.
#[derive(Debug, thiserror::Error)]
#[error("annotation {key} is not a valid attempt log: {source}")]
pub struct AttemptLogError {
    key: &'static str,
    source: serde_json::Error,
}

impl AttemptLog {
    /// Reads the log from a pod's annotations; no annotation is an empty log.
    pub fn from_annotations(annotations: Option<&BTreeMap<String, String>>) -> Result<Self, AttemptLogError> {
        match annotations.and_then(|a| a.get(annotations::SHUTDOWN_ATTEMPTS)) {
            None => Ok(Self::default()),
            Some(text) => serde_json::from_str(text)
                .map_err(|source| AttemptLogError { key: annotations::SHUTDOWN_ATTEMPTS, source }),
        }
    }

    /// The annotation value.
    pub fn to_annotation(&self) -> String {
        // Plain structs of strings and numbers: serializing cannot fail, and an empty record
        // (which the next reconcile reads as "no attempt yet") is the safe answer if it did.
        serde_json::to_string(self).unwrap_or_else(|_| "[]".to_owned())
    }

    pub fn last(&self) -> Option<&Attempt> {
        self.0.last()
    }

    /// The attempts on `container`: the newest ones, back to one on another. Sidecars are
    /// stopped one after the other, so these are all of that sidecar's. An attempt that names
    /// no container was on `unnamed`.
    pub fn trailing(&self, container: &str, unnamed: &str) -> &[Attempt] {
        let on = |a: &Attempt| a.container.as_deref().unwrap_or(unnamed) == container;
        let start = self.0.iter().rposition(|a| !on(a)).map_or(0, |i| i + 1);
        &self.0[start..]
    }

    /// How many ephemeral containers the attempts added to the pod (they are never removed).
    pub fn ephemeral_containers(&self) -> u32 {
        let count = self.0.iter().filter(|a| a.method.adds_container()).count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// The number of attempts.
    pub fn len(&self) -> u32 {
        u32::try_from(self.0.len()).unwrap_or(u32::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Attempt {
    /// The name of the ephemeral container this attempt adds. Ephemeral containers can never be
    /// removed or renamed, so each attempt needs a name of its own.
    pub fn ephemeral_container_name(&self) -> String {
        format!("lameduck-shutdown-{}", self.number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_annotation() {
        let log = AttemptLog(vec![
            Attempt {
                number: 1,
                round: 1,
                method: ShutdownMethod::PortForward,
                container: None,
                started: "2026-11-21T08:00:00Z".parse().unwrap(),
                outcome: Some(Outcome::EndpointDisabled),
                epoch: Epoch::default(),
            },
            Attempt {
                number: 2,
                round: 1,
                method: ShutdownMethod::Signal,
                container: Some("log-agent".into()),
                started: "2026-11-21T08:00:01Z".parse().unwrap(),
                outcome: None,
                epoch: Epoch { generation: 2, proxy_restarts: 1 },
            },
        ]);
        let text = log.to_annotation();
        assert!(text.contains(r#""kind":"endpointDisabled""#), "{text}");
        assert!(text.contains(r#""generation":2,"proxyRestarts":1"#), "{text}");
        assert_eq!(text.matches("generation").count(), 1, "a zero epoch is left out: {text}");
        let annotations = BTreeMap::from([(annotations::SHUTDOWN_ATTEMPTS.to_owned(), text)]);
        assert_eq!(AttemptLog::from_annotations(Some(&annotations)).unwrap(), log);
        assert_eq!(log.0[1].ephemeral_container_name(), "lameduck-shutdown-2");
        assert_eq!(log.ephemeral_containers(), 1);
        assert_eq!(in_epoch(&log.0, Epoch { generation: 2, proxy_restarts: 1 }).len(), 1);
        assert_eq!(in_epoch(&log.0, Epoch::default()).len(), 0);
        assert!(log.to_annotation().contains(r#""container":"log-agent""#));
        assert_eq!(log.trailing("log-agent", "linkerd-proxy").len(), 1);
        assert_eq!(log.trailing("linkerd-proxy", "linkerd-proxy").len(), 0, "only the newest run counts");
        assert_eq!(
            AttemptLog(log.0[..1].to_vec()).trailing("linkerd-proxy", "linkerd-proxy").len(),
            1,
            "unnamed"
        );
    }

    #[test]
    fn recorded_failures_are_short() {
        let Outcome::Failed { message } = Outcome::failed(&"x".repeat(5000)) else { unreachable!() };
        assert!(message.len() <= MAX_RECORDED_MESSAGE, "{}", message.len());
    }

    #[test]
    fn missing_is_empty_and_garbage_is_an_error_naming_the_annotation() {
        assert_eq!(AttemptLog::from_annotations(None).unwrap(), AttemptLog::default());
        let annotations = BTreeMap::from([(annotations::SHUTDOWN_ATTEMPTS.to_owned(), "{oops".to_owned())]);
        let err = AttemptLog::from_annotations(Some(&annotations)).unwrap_err().to_string();
        assert!(err.contains("lameduck.io/shutdown-attempts"), "{err}");
    }
}
