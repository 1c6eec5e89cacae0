//! The webhook's stamp on the policies it reviewed, and the operator's check of it: the second
//! guard on power-bearing fields, which holds without the first.
//!
//! The policy webhook asks the API server whether a policy's author holds every power the
//! policy's fields ask for (`lameduck_api::powers::requested`) and, when they do, writes
//! [`annotations::POLICY_REVIEW`]: an HMAC-SHA256 over the policy's namespace, name and those
//! fields with their values (`lameduck_api::powers::review_message`), keyed by 32 random bytes
//! in the webhook's Secret, which only the operator reads. The operator honours a policy's
//! power-bearing fields only where the stamp matches. So a policy stored while the webhook was
//! down or removed, copied from another policy, or changed since by anyone bypassing the
//! webhook, makes no call (`Ready=False`, reason `NotReviewed`); one that asks for no power
//! needs no stamp.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    sync::{PoisonError, RwLock},
};

use lameduck_api::{
    ShutdownPolicy, ShutdownPolicySpec,
    names::annotations,
    powers::{requested, review_message},
};
use ring::{
    hmac,
    rand::{SecureRandom, SystemRandom},
};

use crate::powers::Refusal;

/// The stamp's version prefix: a later scheme can tell old stamps apart.
const STAMP_PREFIX: &str = "v1:";
/// Bytes of a review key.
pub const KEY_LEN: usize = 32;

/// Whether the operator requires the stamp (`--policy-review`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Power-bearing fields count only on a policy the webhook stamped.
    #[default]
    Required,
    /// Every stored policy is trusted: only for an operator run without its webhook by whoever
    /// alone writes its policies (tests, a single-tenant cluster).
    Off,
}

/// What the operator knows of a policy's review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// It asks for no power, or its stamp matches (or `--policy-review off`).
    Pass,
    /// It asks for powers and the key is not loaded yet: look again shortly.
    Wait,
    /// It asks for powers and no valid stamp says the webhook reviewed it.
    NotReviewed(Refusal),
}

/// The review key, loaded from the webhook's Secret, and the mode.
pub struct PolicyReview {
    mode: Mode,
    key: RwLock<Option<hmac::Key>>,
    /// Whether a key will come: not when the operator serves no webhook.
    webhook: bool,
}

impl std::fmt::Debug for PolicyReview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyReview").field("mode", &self.mode).field("loaded", &self.has_key()).finish()
    }
}

/// A new review key.
pub fn new_key() -> Result<Vec<u8>, String> {
    let mut key = vec![0u8; KEY_LEN];
    SystemRandom::new().fill(&mut key).map_err(|_| "no random bytes from the system".to_owned())?;
    Ok(key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

impl PolicyReview {
    pub fn new(mode: Mode) -> Self {
        Self { mode, key: RwLock::new(None), webhook: true }
    }

    /// For an operator that serves no webhook: no policy can be reviewed, so none that asks
    /// for a power is honoured under `Mode::Required` (rather than waited on for ever).
    pub fn without_webhook(mode: Mode) -> Self {
        Self { webhook: false, ..Self::new(mode) }
    }

    /// With `key` loaded at once: for tests.
    pub fn with_key(mode: Mode, key: &[u8]) -> Self {
        let review = Self::new(mode);
        review.load_key(key);
        review
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Uses `key` from now on (the Secret's, as every replica reads it).
    pub fn load_key(&self, key: &[u8]) {
        *self.key.write().unwrap_or_else(PoisonError::into_inner) =
            Some(hmac::Key::new(hmac::HMAC_SHA256, key));
    }

    pub fn has_key(&self) -> bool {
        self.key.read().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// The stamp for a policy the webhook reviewed; `None` until the key is loaded.
    pub fn stamp(&self, namespace: &str, name: &str, spec: &ShutdownPolicySpec) -> Option<String> {
        let key = self.key.read().unwrap_or_else(PoisonError::into_inner);
        let tag = hmac::sign(key.as_ref()?, &review_message(namespace, name, spec));
        Some(format!("{STAMP_PREFIX}{}", hex(tag.as_ref())))
    }

    /// Whether the operator may honour the policy `namespace/name` with `spec` and the stamp
    /// `stamp` (its [`annotations::POLICY_REVIEW`]).
    pub fn check(
        &self,
        namespace: &str,
        name: &str,
        spec: &ShutdownPolicySpec,
        stamp: Option<&str>,
    ) -> Check {
        if self.mode == Mode::Off {
            return Check::Pass;
        }
        let asked = requested(spec);
        let Some(first) = asked.first() else { return Check::Pass };
        let key = self.key.read().unwrap_or_else(PoisonError::into_inner);
        let key = match key.as_ref() {
            Some(key) => Some(key),
            // The webhook's Secret is read within seconds of the start.
            None if self.webhook => return Check::Wait,
            None => None,
        };
        let tag = stamp.and_then(|s| s.strip_prefix(STAMP_PREFIX)).and_then(unhex);
        if let (Some(key), Some(tag)) = (key, tag)
            && hmac::verify(key, &review_message(namespace, name, spec), &tag).is_ok()
        {
            return Check::Pass;
        }
        let fields: Vec<String> =
            asked.iter().map(|r| format!("{} ({})", r.field, r.power.describe())).collect();
        let why = if key.is_none() {
            "this operator serves no webhook (--webhook-addr unset), so no policy is reviewed"
        } else if stamp.is_some() {
            "its review stamp does not match it (changed without the webhook, or copied from another policy)"
        } else {
            "no lameduck webhook reviewed it (stored while the webhook was down or removed, or before lameduck checked reviews)"
        };
        Check::NotReviewed(Refusal {
            field: first.field.clone(),
            reason: NOT_REVIEWED_REASON,
            condition: NOT_REVIEWED,
            message: format!(
                "{}: {why}, so lameduck does not use the powers it asks for: {}; write the policy again \
                 (any change, e.g. `kubectl annotate --overwrite shutdownpolicy {name} reviewed-at=now`) with the \
                 webhook running, as an author who holds them",
                first.field,
                fields.join(", "),
            ),
        })
    }
}

/// What of a policy, when it changes, makes the operator look at its pods again: its spec (the
/// generation) and its review stamp. A policy reviewed again after it was stored without the
/// webhook changes only its stamp, and its pods must not wait for a change of their own.
pub fn pods_care_about(policy: &ShutdownPolicy) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    policy.metadata.generation.hash(&mut hasher);
    policy.metadata.annotations.as_ref().and_then(|a| a.get(annotations::POLICY_REVIEW)).hash(&mut hasher);
    Some(hasher.finish())
}

/// The `Ready` condition's reason for a policy the operator will not honour unreviewed.
pub const NOT_REVIEWED: &str = "NotReviewed";
/// Its label in `lameduck_policies_refused{reason}`.
pub const NOT_REVIEWED_REASON: &str = "not_reviewed";

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ShutdownPolicySpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn only_a_matching_stamp_lets_power_bearing_fields_count() {
        let review = PolicyReview::with_key(Mode::Required, &[7; KEY_LEN]);
        let worker =
            spec("{proxy: {profile: Custom, containerName: worker}, completion: {methods: [Signal]}}");
        let stamp = review.stamp("shop", "p", &worker).unwrap();
        assert_eq!(review.check("shop", "p", &worker, Some(&stamp)), Check::Pass);

        let Check::NotReviewed(unstamped) = review.check("shop", "p", &worker, None) else {
            panic!("unstamped")
        };
        assert_eq!(
            (unstamped.field.as_str(), unstamped.condition),
            ("spec.proxy.containerName", NOT_REVIEWED)
        );
        assert!(unstamped.message.contains("patch pods/ephemeralcontainers"), "{}", unstamped.message);
        // Copied to another policy, or with a field changed after the review.
        assert!(matches!(review.check("shop", "q", &worker, Some(&stamp)), Check::NotReviewed(_)));
        let app = spec("{proxy: {profile: Custom, containerName: app}, completion: {methods: [Signal]}}");
        assert!(matches!(review.check("shop", "p", &app, Some(&stamp)), Check::NotReviewed(_)));
        // Made with another key.
        let other =
            PolicyReview::with_key(Mode::Required, &[8; KEY_LEN]).stamp("shop", "p", &worker).unwrap();
        assert!(matches!(review.check("shop", "p", &worker, Some(&other)), Check::NotReviewed(_)));
        for garbage in ["", "v1:", "v1:zz", "v1:abc", "v2:00"] {
            assert!(
                matches!(review.check("shop", "p", &worker, Some(garbage)), Check::NotReviewed(_)),
                "{garbage}"
            );
        }
    }

    #[test]
    fn a_policy_that_asks_for_no_power_needs_no_stamp_and_a_missing_key_waits() {
        let review = PolicyReview::new(Mode::Required);
        assert_eq!(review.check("shop", "p", &spec("{proxy: {profile: Lameduck}}"), None), Check::Pass);
        let custom = spec("{proxy: {profile: Lameduck, adminPort: 9000}}");
        assert_eq!(review.check("shop", "p", &custom, None), Check::Wait);
        assert_eq!(review.stamp("shop", "p", &custom), None);
        assert_eq!(PolicyReview::new(Mode::Off).check("shop", "p", &custom, None), Check::Pass);
        let without = PolicyReview::without_webhook(Mode::Required);
        let Check::NotReviewed(never) = without.check("shop", "p", &custom, None) else {
            panic!("without a webhook nothing is reviewed")
        };
        assert!(never.message.contains("--webhook-addr"), "{}", never.message);
    }

    #[test]
    fn a_new_stamp_or_spec_wakes_the_pods_and_a_status_write_does_not() {
        let policy = |generation: i64, stamp: Option<&str>| -> ShutdownPolicy {
            let mut policy: ShutdownPolicy = serde_json::from_value(serde_json::json!({
                "apiVersion": "lameduck.io/v1alpha1", "kind": "ShutdownPolicy",
                "metadata": {"name": "p", "namespace": "shop", "generation": generation}, "spec": {},
            }))
            .unwrap();
            if let Some(stamp) = stamp {
                policy.metadata.annotations =
                    Some([(annotations::POLICY_REVIEW.to_owned(), stamp.to_owned())].into());
            }
            policy
        };
        let stored = pods_care_about(&policy(1, None));
        assert_ne!(stored, pods_care_about(&policy(1, Some("v1:00"))), "reviewed again");
        assert_ne!(stored, pods_care_about(&policy(2, None)), "its spec changed");
        let mut with_status = policy(1, None);
        with_status.status =
            Some(lameduck_api::ShutdownPolicyStatus { matched_pods: 3, ..Default::default() });
        assert_eq!(stored, pods_care_about(&with_status), "a status write");
    }

    #[test]
    fn keys_are_random_and_stamps_hex() {
        let (a, b) = (new_key().unwrap(), new_key().unwrap());
        assert_eq!(a.len(), KEY_LEN);
        assert_ne!(a, b);
        assert_eq!(unhex(&hex(&a)), Some(a));
    }
}
