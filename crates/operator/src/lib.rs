//! lameduck's operator. So far its pure core: what to do with one pod, decided from the pod, its
//! policy, the attempts already made and the time, with no client in sight. The component that
//! holds the `kube::Client` and performs the actions comes with the rest of the operator.
#![forbid(unsafe_code)]

pub mod attempts;
pub mod decide;
