//! Arbitrary bytes as an app's response head, answering a HEAD request and any other: the
//! relay's framing must agree with the reference decoder. A disagreement panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lameduck_proxy::framing::differential::check_response_head(data);
});
