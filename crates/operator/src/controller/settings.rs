//! What the operator was told on its command line that reconciles, and the status summary that
//! replays their decisions, need.

use std::sync::Arc;

use lameduck_api::ShutdownPolicySpec;

use crate::{
    controller::applied::Fallback,
    controller::decide::Terms,
    powers::Limits,
    review::{Mode, PolicyReview},
};

/// What the operator was told on its command line that reconciles need.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Observe and report, never act.
    pub dry_run: bool,
    /// What applies to the pods that no policy selects (`--default-profile`).
    pub default: Fallback,
    /// Image of the ephemeral containers when the policy names none.
    pub ephemeral_image: String,
    /// What policies may ask of the operator.
    pub limits: Limits,
    /// The key of the webhook's review stamps, and whether they are required.
    pub review: Arc<PolicyReview>,
    /// The most ephemeral containers lameduck adds to one pod.
    pub max_ephemeral_containers: u32,
    /// Shutdown calls in flight at once in one namespace: one namespace's hanging pods leave
    /// the rest of `--concurrency` to the others.
    pub concurrency_per_namespace: usize,
}

impl Settings {
    /// The terms a decision about a pod under `spec` (at `generation`) is bound by.
    pub fn terms<'a>(&self, spec: &'a ShutdownPolicySpec, generation: i64) -> Terms<'a> {
        Terms { spec, generation, max_ephemeral_containers: self.max_ephemeral_containers }
    }
}

impl Settings {
    /// The defaults of the command line, with `default` for `--default-profile`: for tests.
    pub fn for_tests(default: Option<ShutdownPolicySpec>) -> Self {
        Self {
            dry_run: false,
            default: default.map_or(Fallback::Off, |spec| Fallback::Profile(Box::new(spec))),
            ephemeral_image: lameduck_api::names::images::PROXY.to_owned(),
            limits: Limits {
                allowed_images: vec![lameduck_api::names::images::PROXY.to_owned()],
                allow_custom_exec_command: false,
            },
            review: Arc::new(PolicyReview::new(Mode::Off)),
            max_ephemeral_containers: 4,
            concurrency_per_namespace: 4,
        }
    }
}
