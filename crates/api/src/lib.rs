//! The shared vocabulary of lameduck: the `ShutdownPolicy` custom resource, the well-known names
//! every component uses, and the pure rules that say whether a pod's shutdown timing is right.
//!
//! Nothing here does I/O.
#![forbid(unsafe_code)]

pub mod admin;
pub mod build;
pub mod carry;
pub mod drain;
pub mod duration;
pub mod endpoint;
pub mod names;
pub mod policy;
pub mod powers;
pub mod prestop;
pub mod profile;
pub mod selection;
pub mod shape;
pub mod timing;

pub use duration::{GoDuration, ParseDurationError};
pub use policy::{
    CompletionSpec, DrainSpec, Enforce, ProxyProfile, ProxySpec, ShutdownCounts, ShutdownMethod,
    ShutdownPolicy, ShutdownPolicySpec, ShutdownPolicyStatus, SidecarSpec,
};
pub use profile::{ResolvedProxy, Sidecar};
