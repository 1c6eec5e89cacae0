//! The proxy admin server's `/shutdown` contract, shared by everything that calls or serves it:
//! `lameduck-proxy` (server and `shutdown` subcommand), `lameduck-await -S`, and the operator.
//!
//! The answers are Linkerd's, so a tool that speaks to one proxy speaks to both.

/// Body of a `200` answer to `POST /shutdown`.
pub const ACCEPTED_BODY: &str = "shutdown";

/// Exit code of `lameduck-proxy shutdown` when the proxy answered 404 (endpoint disabled), so a
/// caller that sees only the exit code (the operator, reading an ephemeral container's status or
/// an exec's result) knows that only a signal can stop this proxy. Other failures exit 1.
pub const EXIT_ENDPOINT_DISABLED: i32 = 3;

/// How to turn the endpoint on, for messages shown when it answers 404.
pub const ENABLE_HINT: &str = "the proxy's /shutdown endpoint is disabled; enable it with \
    --enable-shutdown-endpoint (LAMEDUCK_PROXY_ENABLE_SHUTDOWN_ENDPOINT=true) or a ShutdownPolicy's \
    drain.enableShutdownEndpoint: true for lameduck-proxy, or LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED=true \
    (pod annotation config.linkerd.io/proxy-admin-shutdown: enabled) for Linkerd's proxy";

/// What an answer to `POST /shutdown` means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownAnswer {
    /// 200: the proxy is shutting down.
    Accepted,
    /// 404: the endpoint is disabled.
    Disabled,
    /// 403: the request did not come from loopback.
    Forbidden,
    /// 405: not a POST.
    MethodNotAllowed,
    /// Anything else.
    Unexpected(u16),
}

impl ShutdownAnswer {
    /// Classifies an HTTP status code.
    pub const fn from_status(status: u16) -> Self {
        match status {
            200 => Self::Accepted,
            404 => Self::Disabled,
            403 => Self::Forbidden,
            405 => Self::MethodNotAllowed,
            other => Self::Unexpected(other),
        }
    }

    /// Whether the proxy accepted the request.
    pub const fn is_accepted(self) -> bool {
        matches!(self, Self::Accepted)
    }

    /// A sentence for logs, events and error messages.
    pub fn describe(self) -> String {
        match self {
            Self::Accepted => "the proxy is shutting down".to_owned(),
            Self::Disabled => ENABLE_HINT.to_owned(),
            Self::Forbidden => {
                "the proxy refused the request: /shutdown only accepts loopback clients".to_owned()
            }
            Self::MethodNotAllowed => "the proxy refused the request: /shutdown only accepts POST".to_owned(),
            Self::Unexpected(status) => format!("the proxy answered HTTP {status} to POST /shutdown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_linkerd_meanings() {
        assert!(ShutdownAnswer::from_status(200).is_accepted());
        assert_eq!(ShutdownAnswer::from_status(404), ShutdownAnswer::Disabled);
        assert_eq!(ShutdownAnswer::from_status(403), ShutdownAnswer::Forbidden);
        assert_eq!(ShutdownAnswer::from_status(405), ShutdownAnswer::MethodNotAllowed);
        assert_eq!(ShutdownAnswer::from_status(500), ShutdownAnswer::Unexpected(500));
    }

    #[test]
    fn disabled_says_how_to_enable_for_both_proxies() {
        let text = ShutdownAnswer::Disabled.describe();
        assert!(text.contains("LAMEDUCK_PROXY_ENABLE_SHUTDOWN_ENDPOINT"), "{text}");
        assert!(text.contains("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED"), "{text}");
        assert!(ShutdownAnswer::Unexpected(502).describe().contains("502"));
    }
}
