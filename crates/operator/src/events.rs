//! Publishes `events.k8s.io/v1` Events on pods. Not kube's `Recorder`: it keeps every event it
//! published for six minutes to aggregate repeats into series, which with ten thousand pods is
//! tens of MiB. The operator publishes each of its events once per pod and round (the attempt
//! record and its own dedupe say when), so it has no repeats to aggregate.

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use std::sync::Arc;

use kube::{Api, Client, api::PostParams};
use lameduck_api::names::events;
use tokio::sync::Semaphore;

/// The API's limit on an event's note.
const MAX_NOTE: usize = 1024;

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// Who publishes.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    /// This replica (`--identity`).
    instance: String,
    /// Events being written in the background by [`Publisher::send`].
    in_flight: Arc<Semaphore>,
}

/// Events [`Publisher::send`] writes at once; the next send waits for one of them to finish.
const MAX_IN_FLIGHT: usize = 64;

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("instance", &self.instance).finish_non_exhaustive()
    }
}

/// `text` trimmed and cut on a character boundary to at most `max` bytes, ending in `...` when
/// cut: command output and API errors quoted in events can be long.
pub fn shorten(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The event object. Pure, for tests.
pub fn event(
    regarding: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
    instance: &str,
    now: Timestamp,
) -> Event {
    let note = shorten(note, MAX_NOTE);
    Event {
        metadata: ObjectMeta {
            // Unique per pod and moment, as kubectl and client-go name theirs.
            name: Some(format!("{}.{:x}", regarding.name.as_deref().unwrap_or("pod"), now.as_nanosecond())),
            namespace: regarding.namespace.clone(),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(match type_ {
            EventType::Normal => "Normal".to_owned(),
            EventType::Warning => "Warning".to_owned(),
        }),
        reason: Some(reason.to_owned()),
        action: Some(
            if reason == events::ADMITTED_UNMUTATED { events::ACTION_ADMIT } else { events::ACTION }
                .to_owned(),
        ),
        note: Some(note),
        regarding: Some(regarding.clone()),
        reporting_controller: Some(events::REPORTER.to_owned()),
        reporting_instance: Some(instance.to_owned()),
        ..Event::default()
    }
}

impl Publisher {
    pub fn new(client: Client, instance: String) -> Self {
        Self { client, instance, in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)) }
    }

    /// Writes one event in the background, timed now: the caller goes on at once unless
    /// [`MAX_IN_FLIGHT`] writes are still under way. A reconcile that waited for its event to be
    /// written held one of the controller's workers for the API server's round trip: under load
    /// (290 decisions/s here) the workers fell behind and decisions waited tens of seconds.
    pub async fn send(&self, regarding: ObjectReference, type_: EventType, reason: &str, note: String) {
        let event = event(&regarding, type_, reason, &note, &self.instance, Timestamp::now());
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else { return };
        let api: Api<Event> =
            Api::namespaced(self.client.clone(), regarding.namespace.as_deref().unwrap_or("default"));
        tokio::spawn(async move {
            if let Err(err) = api.create(&PostParams::default(), &event).await {
                // An event lost is a message lost, not a reason to stop acting.
                tracing::warn!(object = ?regarding.name, reason = ?event.reason, error = %err, "cannot publish event");
            }
            drop(permit);
        });
    }

    /// Publishes one event about the object.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let event = event(regarding, type_, reason, note, &self.instance, Timestamp::now());
        let api: Api<Event> =
            Api::namespaced(self.client.clone(), regarding.namespace.as_deref().unwrap_or("default"));
        api.create(&PostParams::default(), &event).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_the_pod_the_reporter_and_stay_under_the_note_limit() {
        let pod = ObjectReference {
            kind: Some("Pod".into()),
            name: Some("report-abc".into()),
            namespace: Some("jobs".into()),
            ..ObjectReference::default()
        };
        let now: Timestamp = "2026-11-21T08:00:00Z".parse().unwrap();
        let e = event(&pod, EventType::Warning, events::PROXY_FAILED, &"é".repeat(2000), "replica-a", now);
        assert_eq!(e.metadata.namespace.as_deref(), Some("jobs"));
        assert!(e.metadata.name.as_deref().unwrap().starts_with("report-abc."));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reporting_controller.as_deref(), Some("lameduck-operator"));
        assert_eq!(e.reporting_instance.as_deref(), Some("replica-a"));
        assert_eq!(e.regarding, Some(pod));
        let note = e.note.unwrap();
        assert!(note.len() <= MAX_NOTE && note.ends_with("..."), "{}", note.len());
    }
}
