//! Exit codes: the app's own when there is one, else the BSD `sysexits.h` codes linkerd-await uses.

use std::{os::unix::process::ExitStatusExt, process::ExitStatus};

/// The proxy did not become ready before `--timeout` (`EX_UNAVAILABLE`).
pub const PROXY_UNAVAILABLE: u8 = 69;
/// The app could not be started, or the OS refused something else we needed (`EX_OSERR`).
pub const OS_ERROR: u8 = 71;

/// The code a shell would report for `status`: the exit code, or 128+N for death by signal N.
pub fn of_status(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        // A Unix exit code is one byte; `code()` never goes beyond it.
        u8::try_from(code & 0xff).unwrap_or(OS_ERROR)
    } else if let Some(signal) = status.signal() {
        u8::try_from(128 + signal).unwrap_or(OS_ERROR)
    } else {
        OS_ERROR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_pass_through_and_signals_add_128() {
        // Raw wait statuses: exit code in the second byte, terminating signal in the low bits.
        assert_eq!(of_status(ExitStatus::from_raw(0)), 0);
        assert_eq!(of_status(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(of_status(ExitStatus::from_raw(255 << 8)), 255);
        assert_eq!(of_status(ExitStatus::from_raw(15)), 143);
        assert_eq!(of_status(ExitStatus::from_raw(9)), 137);
    }
}
