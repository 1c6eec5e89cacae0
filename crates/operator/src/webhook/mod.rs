//! The admission webhook: [`admission`] decides each verdict (pure), [`https`] serves them, and
//! [`certs`] (pure) and [`secret`] keep its certificates without a cert-manager.

pub mod admission;
pub mod certs;
pub mod https;
pub mod secret;
