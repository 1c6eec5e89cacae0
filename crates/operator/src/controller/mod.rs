//! Finishing run-to-completion pods: [`decide`] says what to do with one pod (pure: no client,
//! no clock), [`reconcile`] is the one component that does it, through [`methods`] and
//! [`ephemeral`] containers, and keeps the record of [`attempts`] on the pod. [`applied`] says
//! which policy's settings apply to a pod, and [`pod`] is the slim pod the watch caches.

pub mod applied;
pub mod attempts;
pub mod books;
pub mod decide;
pub mod ephemeral;
pub mod methods;
pub mod pod;
pub mod reconcile;
pub mod settings;
