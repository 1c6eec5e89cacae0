//! What the operator reports: [`summary`] sums up cached pods under the policies (pure), and
//! [`writer`] sets the gauges and writes each `ShutdownPolicy`'s status from it.

pub mod summary;
pub mod writer;
