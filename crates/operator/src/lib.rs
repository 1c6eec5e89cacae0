//! lameduck's operator: finishes meshed Job and CronJob pods whose main containers exited while
//! the proxy keeps running.
//!
//! The pure core (`decide`, `summary`, `ephemeral`, `job_pod`, `applied`) has no client and no
//! clock; `reconcile` is the one component that acts on pods, `status` the one that writes
//! `ShutdownPolicy` status.
#![forbid(unsafe_code)]

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
pub mod powers;
pub mod reconcile;
pub mod server;
pub mod status;
pub mod summary;
pub mod webhook;
pub mod webhook_certs;
