//! The watch of what was admitted: [`index`] assesses every pod against the policies and the
//! timing rules and keeps what it found; [`pod`] is what that watch reads of a pod.

pub mod index;
pub mod pod;
