//! Strict HTTP/1.1 framing (RFC 9112) as pure functions over bytes. The relay passes bodies
//! through unchanged on app connections that serve many clients, so where its idea of a message's
//! end differed from the app's, one client's bytes would become another's request: anything
//! outside the grammar is refused here rather than guessed at.

pub mod body;
#[cfg(any(test, fuzzing))]
pub mod differential;
pub mod head;
pub mod hop_by_hop;
#[cfg(any(test, fuzzing))]
pub mod reference;
