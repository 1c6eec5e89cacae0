//! How long a container's `preStop` hook delays its SIGTERM, when that can be known statically.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};

/// The delay a `preStop` hook adds before the container receives SIGTERM.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum HookDelay {
    /// No `preStop` hook (or one that does nothing, such as the unsupported `tcpSocket`).
    None,
    /// The hook sleeps this long; `form` says how it was written, for messages.
    Known {
        /// The delay.
        #[serde(rename = "seconds", serialize_with = "crate::duration::serialize_seconds")]
        delay: Duration,
        /// `sleep 20`, `sh -c "sleep 20"`, `sleep action`, ...
        form: String,
    },
    /// The hook does something whose duration cannot be read from the manifest.
    Unknown {
        /// What the hook does, for messages.
        reason: String,
    },
}

impl HookDelay {
    /// The delay if known, zero when there is no hook.
    pub fn known(&self) -> Option<Duration> {
        match self {
            Self::None => Some(Duration::ZERO),
            Self::Known { delay, .. } => Some(*delay),
            Self::Unknown { .. } => None,
        }
    }
}

/// The subcommand of `lameduck-proxy` that sleeps, so a preStop needs no shell:
/// `lameduck-proxy wait --seconds N`.
pub const PROXY_WAIT_SUBCOMMAND: &str = "wait";
/// The flag of [`PROXY_WAIT_SUBCOMMAND`] that takes the number of seconds.
pub const PROXY_WAIT_SECONDS_FLAG: &str = "--seconds";

/// Shells whose `-c` script lameduck reads.
const SHELLS: &[&str] = &["sh", "bash", "ash", "dash", "zsh", "ksh"];

/// The delay of `container`'s `preStop` hook.
pub fn pre_stop_delay(container: &Container) -> HookDelay {
    match container.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
        None => HookDelay::None,
        Some(handler) => handler_delay(handler),
    }
}

/// The delay of one lifecycle handler.
pub fn handler_delay(handler: &LifecycleHandler) -> HookDelay {
    if let Some(sleep) = &handler.sleep {
        return match u64::try_from(sleep.seconds) {
            Ok(secs) => HookDelay::Known {
                delay: Duration::from_secs(secs),
                form: format!("sleep action of {secs}s"),
            },
            Err(_) => {
                HookDelay::Unknown { reason: format!("sleep action with negative seconds {}", sleep.seconds) }
            }
        };
    }
    if let Some(exec) = &handler.exec {
        let argv = exec.command.as_deref().unwrap_or_default();
        return exec_delay(argv);
    }
    if let Some(http) = &handler.http_get {
        return HookDelay::Unknown {
            reason: format!(
                "httpGet hook on {} takes as long as the server answers",
                http.path.as_deref().unwrap_or("/")
            ),
        };
    }
    // `tcpSocket` is accepted by the API for compatibility but the kubelet does not run it.
    HookDelay::None
}

fn basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// The delay of an exec hook's argv.
pub fn exec_delay(argv: &[String]) -> HookDelay {
    let Some(program) = argv.first() else {
        return HookDelay::Unknown { reason: "exec hook with an empty command".into() };
    };
    let args = &argv[1..];
    let shown = || argv.join(" ");
    match basename(program) {
        "sleep" => match sleep_args(args.iter().map(String::as_str)) {
            Some(delay) => HookDelay::Known { delay, form: shown() },
            None => HookDelay::Unknown {
                reason: format!("exec hook `{}` has sleep arguments lameduck cannot read", shown()),
            },
        },
        "lameduck-proxy" if args.first().map(String::as_str) == Some(PROXY_WAIT_SUBCOMMAND) => {
            match proxy_wait_seconds(&args[1..]) {
                Some(secs) => HookDelay::Known { delay: Duration::from_secs(secs), form: shown() },
                None => HookDelay::Unknown {
                    reason: format!("exec hook `{}` has no readable {PROXY_WAIT_SECONDS_FLAG}", shown()),
                },
            }
        }
        shell if SHELLS.contains(&shell) => match args {
            [flag, script, ..] if flag == "-c" => match script_delay(script) {
                Some(delay) => HookDelay::Known { delay, form: format!("{shell} -c {script:?}") },
                None => HookDelay::Unknown {
                    reason: format!("exec hook runs a shell script lameduck cannot time: {script:?}"),
                },
            },
            _ => HookDelay::Unknown { reason: format!("exec hook `{}` runs a shell without -c", shown()) },
        },
        _ => HookDelay::Unknown {
            reason: format!("exec hook `{}` takes as long as that command runs", shown()),
        },
    }
}

fn proxy_wait_seconds(args: &[String]) -> Option<u64> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == PROXY_WAIT_SECONDS_FLAG {
            return iter.next()?.parse().ok();
        }
        if let Some(value) = arg.strip_prefix(PROXY_WAIT_SECONDS_FLAG).and_then(|v| v.strip_prefix('=')) {
            return value.parse().ok();
        }
    }
    None
}

/// A script made only of `sleep` commands joined by `;`, `&&` or newlines. Anything else (even
/// `sleep 5 && nginx -s quit`) is unknown: the rest may take any time.
fn script_delay(script: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut commands = 0;
    for command in script.split(['\n', ';']).flat_map(|part| part.split("&&")) {
        let mut words = command.split_whitespace();
        let Some(program) = words.next() else { continue };
        let program = if program == "exec" { words.next()? } else { program };
        if basename(program) != "sleep" {
            return None;
        }
        total = total.checked_add(sleep_args(words)?)?;
        commands += 1;
    }
    (commands > 0).then_some(total)
}

/// GNU/busybox `sleep` arguments: numbers with an optional `s`, `m`, `h` or `d` suffix, summed.
fn sleep_args<'a>(args: impl IntoIterator<Item = &'a str>) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut count = 0;
    for arg in args {
        let (number, unit) = match arg.char_indices().last()? {
            (i, c @ ('s' | 'm' | 'h' | 'd')) => (&arg[..i], c),
            _ => (arg, 's'),
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let scale = match unit {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            _ => 86_400.0,
        };
        total = total.checked_add(Duration::try_from_secs_f64(value * scale).ok()?)?;
        count += 1;
    }
    (count > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, SleepAction, TCPSocketAction};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn exec(argv: &[&str]) -> HookDelay {
        handler_delay(&LifecycleHandler {
            exec: Some(ExecAction { command: Some(argv.iter().map(|s| s.to_string()).collect()) }),
            ..Default::default()
        })
    }

    fn secs(d: &HookDelay) -> Option<f64> {
        d.known().map(|d| d.as_secs_f64())
    }

    #[test]
    fn reads_the_common_sleep_forms() {
        assert_eq!(secs(&exec(&["sleep", "20"])), Some(20.0));
        assert_eq!(secs(&exec(&["/bin/sleep", "20"])), Some(20.0));
        assert_eq!(secs(&exec(&["/bin/bash", "-c", "sleep 20"])), Some(20.0));
        assert_eq!(secs(&exec(&["sh", "-c", "  sleep 5; sleep 10\n"])), Some(15.0));
        assert_eq!(secs(&exec(&["sh", "-c", "exec sleep 3"])), Some(3.0));
        assert_eq!(secs(&exec(&["sleep", "1m", "30"])), Some(90.0));
        assert_eq!(secs(&exec(&["sleep", "1.5"])), Some(1.5));
        assert_eq!(secs(&exec(&["lameduck-proxy", "wait", "--seconds", "25"])), Some(25.0));
        assert_eq!(secs(&exec(&["/lameduck-proxy", "wait", "--seconds=7"])), Some(7.0));
        let action = handler_delay(&LifecycleHandler {
            sleep: Some(SleepAction { seconds: 12 }),
            ..Default::default()
        });
        assert_eq!(secs(&action), Some(12.0));
    }

    #[test]
    fn anything_else_is_unknown_with_a_reason() {
        for argv in [
            &["nginx", "-s", "quit"][..],
            &["sh", "-c", "sleep 5 && nginx -s quit"],
            &["sh", "-c", "sleep $DELAY"],
            &["sh", "script.sh"],
            &["sleep", "abc"],
            &["sleep"],
            &["sleep", "-5"],
            &["lameduck-proxy", "wait"],
            &[],
        ] {
            let delay = exec(argv);
            assert!(
                matches!(&delay, HookDelay::Unknown { reason } if !reason.is_empty()),
                "{argv:?}: {delay:?}"
            );
        }
        let http = handler_delay(&LifecycleHandler {
            http_get: Some(HTTPGetAction {
                path: Some("/drain".into()),
                port: IntOrString::Int(8080),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(matches!(&http, HookDelay::Unknown { reason } if reason.contains("/drain")));
    }

    #[test]
    fn tcp_socket_and_no_hook_delay_nothing() {
        let tcp = handler_delay(&LifecycleHandler {
            tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(1), ..Default::default() }),
            ..Default::default()
        });
        assert_eq!(tcp, HookDelay::None);
        assert_eq!(pre_stop_delay(&Container::default()), HookDelay::None);
    }
}
