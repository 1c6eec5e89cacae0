//! lameduck's operator: finishes meshed Job and CronJob pods whose main containers exited while
//! the proxy keeps running.
//!
//! The pure core (`decide`, `summary`, `ephemeral`, `job_pod`, `applied`) has no client and no
//! clock; `reconcile` is the one component that acts on pods, `status` the one that writes
//! `ShutdownPolicy` status.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod admitted;
pub mod admitted_pod;
pub mod applied;
pub mod attempts;
pub mod certs;
pub mod cli;
pub mod decide;
pub mod ephemeral;
pub mod events;
pub mod job_pod;
pub mod leader;
pub mod methods;
pub mod metrics;
pub mod reconcile;
pub mod status;
pub mod summary;
pub mod webhook;
pub mod webhook_certs;
