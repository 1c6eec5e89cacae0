//! lameduck's operator: finishes run-to-completion pods whose main containers exited while their
//! sidecars keep running, checks and mutates pods at admission, and reports what it sees.
//!
//! One folder per subsystem:
//! - [`controller`]: what to do with one pod (`decide`, pure) and the one component that does it
//!   (`reconcile`), with the shutdown methods and the record kept on the pod.
//! - [`status`]: the gauges and each `ShutdownPolicy`'s status, summed up from the cache
//!   (`summary`, pure) and written by one loop.
//! - [`webhook`]: the admission webhook: its verdicts (`admission`, pure), its HTTPS server and
//!   its certificates.
//! - [`audit`]: the watch of admitted pods that finds the ones the webhook missed.
//!
//! Beside them: the command line, metrics, events, leader election, the servers' shared limits,
//! [`powers`], what a policy may make the operator do, and [`review`], the webhook's stamp on the
//! policies it reviewed.
#![forbid(unsafe_code)]
// Nothing that came from the API server, a pod, a policy or a client may panic this process: no
// unwrap or expect outside tests (clippy.toml allows them there).
#![deny(clippy::unwrap_used, clippy::expect_used)]

/// Makes a slim pod type (a struct with a `metadata: ObjectMeta` field that deserializes only
/// part of a Pod) a `kube::Resource` for core/v1 pods, so kube's watches can read pods as it.
macro_rules! slim_pod_resource {
    ($type:ty) => {
        impl kube::Resource for $type {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed("Pod")
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed("")
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed("v1")
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed("pods")
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

pub mod admin;
pub mod audit;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod packed_labels;
pub mod powers;
pub mod review;
pub mod server;
pub mod status;
pub mod webhook;
