//! Arbitrary bytes as a client's request head: the relay's framing must agree with the reference
//! decoder, and hyper must serve what the relay accepts the same way. A disagreement panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lameduck_proxy::framing::differential::check_request_head(data);
});
