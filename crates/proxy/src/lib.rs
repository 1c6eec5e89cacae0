//! lameduck-proxy's HTTP/1 framing, as a library: pure functions over bytes that decide where a
//! message ends and whether it is valid. The binary's relay uses it; so do the differential tests
//! and the fuzz targets (`fuzz/`), which feed the same bytes to it and to independent parsers.
#![forbid(unsafe_code)]
// Nothing a client or the app sends may panic the proxy: no unwrap or expect outside tests
// (clippy.toml allows them there).
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod framing;
