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
    pub started: Timestamp,
    /// What the call reported; `None` while it is under way or when its result was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

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
        serde_json::to_string(self).expect("an attempt log serializes")
    }

    pub fn last(&self) -> Option<&Attempt> {
        self.0.last()
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
                started: "2026-11-21T08:00:00Z".parse().unwrap(),
                outcome: Some(Outcome::EndpointDisabled),
            },
            Attempt {
                number: 2,
                round: 1,
                method: ShutdownMethod::Signal,
                started: "2026-11-21T08:00:01Z".parse().unwrap(),
                outcome: None,
            },
        ]);
        let text = log.to_annotation();
        assert!(text.contains(r#""kind":"endpointDisabled""#), "{text}");
        let annotations = BTreeMap::from([(annotations::SHUTDOWN_ATTEMPTS.to_owned(), text)]);
        assert_eq!(AttemptLog::from_annotations(Some(&annotations)).unwrap(), log);
        assert_eq!(log.0[1].ephemeral_container_name(), "lameduck-shutdown-2");
    }

    #[test]
    fn missing_is_empty_and_garbage_is_an_error_naming_the_annotation() {
        assert_eq!(AttemptLog::from_annotations(None).unwrap(), AttemptLog::default());
        let annotations = BTreeMap::from([(annotations::SHUTDOWN_ATTEMPTS.to_owned(), "{oops".to_owned())]);
        let err = AttemptLog::from_annotations(Some(&annotations)).unwrap_err().to_string();
        assert!(err.contains("lameduck.io/shutdown-attempts"), "{err}");
    }
}
