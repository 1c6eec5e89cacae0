//! Arbitrary bytes as a chunked body (what follows a head): the relay's framing must agree with
//! the reference decoder, and hyper must read what the relay accepts the same way. A
//! disagreement panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lameduck_proxy::framing::differential::check_chunked(data);
});
