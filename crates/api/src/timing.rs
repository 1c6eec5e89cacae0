//! The shutdown timeline of a pod and the rules it must follow.
//!
//! When a pod is deleted the kubelet runs every container's `preStop` hook, then sends SIGTERM,
//! and kills what is left when `terminationGracePeriodSeconds` (counted from the start of the
//! hooks) runs out. For a meshed pod to lose no request:
//!
//! `every app preStop delay  <  the proxy's wait-before-exit  <  terminationGracePeriodSeconds`
//!
//! and the proxy's own shutdown grace period should fit in what is left after its wait. Linkerd
//! documents this ordering but enforces none of it; [`Timeline::findings`] does.

use std::{collections::BTreeMap, fmt, time::Duration};

use k8s_openapi::api::core::v1::Container;
use serde::Serialize;

use crate::{
    duration::GoDuration,
    names::{annotations, containers, defaults, env},
    policy::{ProxyProfile, ShutdownMethod, ShutdownPolicySpec},
    prestop::{self, HookDelay},
    shape::{Placed, Placement, PodShape},
};

/// Where a setting came from, for messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "name")]
pub enum Source {
    /// Nothing sets it; the value is the default.
    Default,
    /// The pod spec itself (`terminationGracePeriodSeconds`).
    PodSpec,
    /// The proxy container's `preStop` hook.
    PreStop,
    /// An annotation on the pod.
    Annotation(&'static str),
    /// An environment variable of the proxy container.
    Env(&'static str),
    /// The selecting `ShutdownPolicy`, applied at admission.
    Policy(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::PodSpec => f.write_str("pod spec"),
            Self::PreStop => f.write_str("preStop hook"),
            Self::Annotation(key) => write!(f, "annotation {key}"),
            Self::Env(name) => write!(f, "env {name}"),
            Self::Policy(field) => write!(f, "ShutdownPolicy {field}"),
        }
    }
}

/// One app (non-proxy) container's part of the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStop {
    /// Container name.
    pub name: String,
    /// Its `preStop` delay.
    pub pre_stop: HookDelay,
}

/// The proxy's part of the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStop {
    /// Container name.
    pub name: String,
    /// Whether the container is in the manifest (`false`: Linkerd will inject it at admission).
    pub present: bool,
    /// Classic or native sidecar.
    pub placement: Placement,
    /// Its wait before it starts draining, and where that came from.
    pub wait_before_exit: HookDelay,
    /// Where [`Self::wait_before_exit`] came from.
    pub wait_source: Source,
    /// How long it drains before closing what is left; `None` when the value cannot be read.
    #[serde(
        rename = "shutdownGracePeriodSeconds",
        serialize_with = "crate::duration::serialize_opt_seconds"
    )]
    pub shutdown_grace_period: Option<Duration>,
    /// Where [`Self::shutdown_grace_period`] came from.
    pub grace_source: Source,
}

/// A pod's shutdown timeline, as far as the manifest tells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// `terminationGracePeriodSeconds`, or Kubernetes' default of 30s.
    #[serde(rename = "terminationGracePeriodSeconds", serialize_with = "crate::duration::serialize_seconds")]
    pub termination_grace_period: Duration,
    /// Where [`Self::termination_grace_period`] came from.
    pub termination_source: Source,
    /// App containers, in spec order.
    pub apps: Vec<AppStop>,
    /// The proxy, if the pod has one (or will have one injected).
    pub proxy: Option<ProxyStop>,
    /// Whether the pod is meant to finish.
    pub runs_to_completion: bool,
    /// Whether something shuts the proxy down once the app has finished: a policy with
    /// completion enabled, or an app wrapped with `lameduck-await -S` / `linkerd-await -S`.
    pub completion_handled: bool,
    /// The policy's classic sidecars in a pod meant to finish that lameduck will stop with
    /// SIGTERM (`Signal` comes first among their methods, or they have no quit endpoint), and
    /// the field that says so.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signalled_sidecars: Vec<(String, String)>,
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; the pod will still shut down.
    Warning,
    /// Requests will fail or the pod will be killed mid-drain.
    Error,
}

/// Which rule a finding comes from. Stable identifiers, for `-o json` and admission warnings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// An app's preStop is not shorter than the proxy's wait-before-exit.
    AppPreStopNotBelowProxyWait,
    /// The proxy's wait-before-exit is not shorter than `terminationGracePeriodSeconds`.
    ProxyWaitNotBelowTerminationGrace,
    /// An app's preStop is not shorter than `terminationGracePeriodSeconds`.
    AppPreStopNotBelowTerminationGrace,
    /// The proxy's shutdown grace period is longer than what is left after its wait.
    ProxyGraceExceedsRemaining,
    /// An app's preStop duration cannot be read.
    UnknownAppPreStop,
    /// The proxy's wait-before-exit cannot be read.
    UnknownProxyWait,
    /// The proxy's shutdown grace period cannot be read.
    UnknownProxyGrace,
    /// A native-sidecar proxy has a wait-before-exit, which only delays termination.
    NativeSidecarWait,
    /// A pod meant to finish has a classic proxy and nothing shuts it down.
    JobNeverCompletes,
    /// A sidecar of a pod meant to finish will be stopped with SIGTERM, on which many programs
    /// exit 143 and so fail the pod.
    SidecarStoppedBySignal,
}

impl Rule {
    /// Every rule, for reports that list each one (a metric per rule that drops to 0).
    pub const ALL: [Self; 10] = [
        Self::AppPreStopNotBelowProxyWait,
        Self::ProxyWaitNotBelowTerminationGrace,
        Self::AppPreStopNotBelowTerminationGrace,
        Self::ProxyGraceExceedsRemaining,
        Self::UnknownAppPreStop,
        Self::UnknownProxyWait,
        Self::UnknownProxyGrace,
        Self::NativeSidecarWait,
        Self::JobNeverCompletes,
        Self::SidecarStoppedBySignal,
    ];

    /// The rule's stable identifier.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AppPreStopNotBelowProxyWait => "app-pre-stop-not-below-proxy-wait",
            Self::ProxyWaitNotBelowTerminationGrace => "proxy-wait-not-below-termination-grace",
            Self::AppPreStopNotBelowTerminationGrace => "app-pre-stop-not-below-termination-grace",
            Self::ProxyGraceExceedsRemaining => "proxy-grace-exceeds-remaining",
            Self::UnknownAppPreStop => "unknown-app-pre-stop",
            Self::UnknownProxyWait => "unknown-proxy-wait",
            Self::UnknownProxyGrace => "unknown-proxy-grace",
            Self::NativeSidecarWait => "native-sidecar-wait",
            Self::JobNeverCompletes => "job-never-completes",
            Self::SidecarStoppedBySignal => "sidecar-stopped-by-signal",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One broken or doubtful rule, with a message that names containers and numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// Which rule.
    pub rule: Rule,
    /// The container it is about, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// What is wrong and what to do, with the numbers.
    pub message: String,
}

/// Durations in messages: `20s`, `1.5s`, `2m0s` as Go prints them, but plain seconds below a
/// minute and for whole numbers people wrote as seconds (`160s`).
fn show(d: Duration) -> String {
    if d.subsec_nanos() == 0 { format!("{}s", d.as_secs()) } else { GoDuration::from(d).to_string() }
}

fn truthy(annotations: &BTreeMap<String, String>, key: &str) -> bool {
    annotations.get(key).is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "enabled")
}

/// Finds the proxy: a named container (regular or native sidecar), else Linkerd's inject
/// annotation, which means a `linkerd-proxy` will be added at admission.
fn find_proxy<'a>(
    pod: &PodShape<'a>,
    wanted: Option<&str>,
) -> Option<(String, Option<&'a Container>, Placement)> {
    let found = match wanted {
        Some(name) => pod.container(name),
        None => pod.known_proxy().map(|(_, placed)| placed),
    };
    if let Some(Placed { container, placement }) = found {
        return Some((container.name.clone(), Some(container), placement));
    }
    let linkerd_wanted = wanted.is_none_or(|name| name == containers::LINKERD_PROXY);
    if linkerd_wanted
        && pod.annotations.get(annotations::LINKERD_INJECT).map(String::as_str) == Some("enabled")
    {
        let native = truthy(pod.annotations, annotations::LINKERD_NATIVE_SIDECAR)
            || truthy(pod.annotations, annotations::LINKERD_NATIVE_SIDECAR_ALPHA);
        let placement = if native { Placement::NativeSidecar } else { Placement::Classic };
        return Some((containers::LINKERD_PROXY.to_owned(), None, placement));
    }
    None
}

fn proxy_wait(
    pod: &PodShape<'_>,
    container: Option<&Container>,
    policy: Option<&ShutdownPolicySpec>,
) -> (HookDelay, Source) {
    if let Some(wait) = policy.and_then(|p| p.drain.wait_before_exit) {
        let delay = HookDelay::Known { delay: wait.as_std(), form: format!("waitBeforeExit {wait}") };
        return (delay, Source::Policy("spec.drain.waitBeforeExit"));
    }
    if let Some(c) = container {
        let delay = prestop::pre_stop_delay(c);
        if delay != HookDelay::None {
            return (delay, Source::PreStop);
        }
    }
    let key = annotations::LINKERD_WAIT_BEFORE_EXIT_SECONDS;
    match pod.annotations.get(key) {
        Some(value) => {
            let delay = match value.trim().parse::<u64>() {
                Ok(secs) => {
                    HookDelay::Known { delay: Duration::from_secs(secs), form: format!("{key}: {value}") }
                }
                Err(_) => HookDelay::Unknown {
                    reason: format!("annotation {key} is {value:?}, not a whole number of seconds"),
                },
            };
            (delay, Source::Annotation(key))
        }
        None => (HookDelay::None, Source::Default),
    }
}

fn proxy_grace(
    pod: &PodShape<'_>,
    container: Option<&Container>,
    policy: Option<&ShutdownPolicySpec>,
) -> (Option<Duration>, Source) {
    if let Some(grace) = policy.and_then(|p| p.drain.shutdown_grace_period) {
        return (Some(grace.as_std()), Source::Policy("spec.drain.shutdownGracePeriod"));
    }
    let env_vars = container.and_then(|c| c.env.as_ref()).into_iter().flatten();
    for var in env_vars {
        for name in [env::LINKERD_SHUTDOWN_GRACE_PERIOD, env::PROXY_SHUTDOWN_GRACE_PERIOD] {
            if var.name == name {
                let value = var.value.as_deref().and_then(|v| v.parse::<GoDuration>().ok());
                return (value.map(GoDuration::as_std), Source::Env(name));
            }
        }
    }
    let key = annotations::LINKERD_SHUTDOWN_GRACE_PERIOD;
    if let Some(value) = pod.annotations.get(key) {
        return (value.parse::<GoDuration>().ok().map(GoDuration::as_std), Source::Annotation(key));
    }
    (Some(Duration::from_secs(defaults::PROXY_SHUTDOWN_GRACE_PERIOD_SECONDS)), Source::Default)
}

/// Whether a container's command wraps the app with an await that shuts the proxy down after.
fn wrapped_with_await_shutdown(container: &Container) -> bool {
    let argv = crate::shape::argv(container);
    let mut saw_await = false;
    for arg in argv {
        let base = arg.rsplit('/').next().unwrap_or(arg);
        if base == "lameduck-await" || base == "linkerd-await" {
            saw_await = true;
        } else if saw_await && arg == "--" {
            return false;
        } else if saw_await && (arg == "-S" || arg == "--shutdown") {
            return true;
        }
    }
    false
}

impl Timeline {
    /// Builds the timeline of `pod`, with the drain settings of the policy that selects it, if any.
    pub fn of(pod: &PodShape<'_>, policy: Option<&ShutdownPolicySpec>) -> Self {
        let spec = pod.spec;
        let (termination_grace_period, termination_source) = match spec.termination_grace_period_seconds {
            Some(secs) => (Duration::from_secs(u64::try_from(secs).unwrap_or(0)), Source::PodSpec),
            None => (Duration::from_secs(defaults::TERMINATION_GRACE_PERIOD_SECONDS as u64), Source::Default),
        };

        let resolved = policy.map(|p| p.mesh_proxy().resolve());
        let found = find_proxy(pod, resolved.as_ref().map(|r| r.container_name.as_str()));
        let proxy = found.as_ref().map(|(name, container, placement)| {
            let placement = if policy.is_some_and(|p| p.drain.native_sidecar) {
                Placement::NativeSidecar
            } else {
                *placement
            };
            let (wait_before_exit, wait_source) = proxy_wait(pod, *container, policy);
            let (shutdown_grace_period, grace_source) = proxy_grace(pod, *container, policy);
            ProxyStop {
                name: name.clone(),
                present: container.is_some(),
                placement,
                wait_before_exit,
                wait_source,
                shutdown_grace_period,
                grace_source,
            }
        });
        let proxy_name = proxy.as_ref().filter(|p| p.present).map(|p| p.name.as_str());

        let apps: Vec<AppStop> = spec
            .containers
            .iter()
            .filter(|c| Some(c.name.as_str()) != proxy_name)
            .map(|c| AppStop { name: c.name.clone(), pre_stop: prestop::pre_stop_delay(c) })
            .collect();

        let completion_handled = policy.is_some_and(|p| p.completion.enabled)
            || spec.containers.iter().any(wrapped_with_await_shutdown);
        let signalled_sidecars = match policy.filter(|p| p.completion.enabled && pod.runs_to_completion) {
            None => Vec::new(),
            Some(policy) => policy
                .sidecars()
                .into_iter()
                .filter(|s| {
                    pod.container(&s.proxy.container_name).is_some_and(|c| c.placement == Placement::Classic)
                })
                .filter(|s| {
                    let signal_first = s.methods.first() == Some(&ShutdownMethod::Signal);
                    let no_endpoint = s.proxy.profile == ProxyProfile::Custom;
                    signal_first || (no_endpoint && s.methods.contains(&ShutdownMethod::Signal))
                })
                .map(|s| (s.proxy.container_name, format!("{}.methods", s.field)))
                .collect(),
        };

        Self {
            termination_grace_period,
            termination_source,
            apps,
            proxy,
            runs_to_completion: pod.runs_to_completion,
            completion_handled,
            signalled_sidecars,
        }
    }

    /// One line that states the timeline with its numbers, for reports.
    pub fn summary(&self) -> String {
        let hook = |d: &HookDelay| match d {
            HookDelay::None => "none".to_owned(),
            HookDelay::Known { delay, .. } => show(*delay),
            HookDelay::Unknown { .. } => "unknown".to_owned(),
        };
        let mut parts = vec![format!(
            "terminationGracePeriodSeconds {} ({})",
            show(self.termination_grace_period),
            self.termination_source
        )];
        for app in &self.apps {
            parts.push(format!("app {:?} preStop {}", app.name, hook(&app.pre_stop)));
        }
        match &self.proxy {
            None => parts.push("no proxy".to_owned()),
            Some(p) => {
                let placement = match p.placement {
                    Placement::Classic => "classic sidecar",
                    Placement::NativeSidecar => "native sidecar",
                };
                let injected = if p.present { "" } else { ", injected at admission" };
                let grace = p.shutdown_grace_period.map_or_else(|| "unknown".to_owned(), show);
                let wait = match &p.wait_before_exit {
                    HookDelay::None => "has no wait-before-exit".to_owned(),
                    other => format!("waits {} ({})", hook(other), p.wait_source),
                };
                parts.push(format!(
                    "proxy {:?} ({placement}{injected}) {wait}, drains up to {grace} ({})",
                    p.name, p.grace_source
                ));
            }
        }
        parts.join("; ")
    }

    /// Every rule this timeline breaks or cannot be checked against, errors first.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        let t = self.termination_grace_period;
        let t_text = match self.termination_source {
            Source::Default => format!("terminationGracePeriodSeconds ({}, the default)", show(t)),
            _ => format!("terminationGracePeriodSeconds ({})", show(t)),
        };
        let mut push = |severity, rule, container: Option<&str>, message: String| {
            out.push(Finding { severity, rule, container: container.map(str::to_owned), message });
        };

        for app in &self.apps {
            match &app.pre_stop {
                HookDelay::Unknown { reason } => push(
                    Severity::Warning,
                    Rule::UnknownAppPreStop,
                    Some(&app.name),
                    format!(
                        "container {:?}: cannot tell how long its preStop lasts ({reason}); its order against the proxy is not checked",
                        app.name
                    ),
                ),
                HookDelay::Known { delay, form } if *delay >= t => push(
                    Severity::Error,
                    Rule::AppPreStopNotBelowTerminationGrace,
                    Some(&app.name),
                    format!(
                        "container {:?}: preStop waits {} ({form}), not less than {t_text}; the kubelet kills the pod before the app stops",
                        app.name,
                        show(*delay)
                    ),
                ),
                _ => {}
            }
        }

        if let Some(proxy) = &self.proxy {
            let name = &proxy.name;
            let wait = proxy.wait_before_exit.known();
            match (proxy.placement, &proxy.wait_before_exit) {
                (_, HookDelay::Unknown { reason }) => push(
                    Severity::Warning,
                    Rule::UnknownProxyWait,
                    Some(name),
                    format!(
                        "proxy {name:?}: cannot tell its wait-before-exit ({reason}); the shutdown order is not checked"
                    ),
                ),
                (Placement::NativeSidecar, HookDelay::Known { delay, .. }) if !delay.is_zero() => push(
                    Severity::Warning,
                    Rule::NativeSidecarWait,
                    Some(name),
                    format!(
                        "proxy {name:?} runs as a native sidecar, which Kubernetes stops after the app containers; its wait-before-exit of {} ({}) only delays pod termination",
                        show(*delay),
                        proxy.wait_source
                    ),
                ),
                _ => {}
            }

            if proxy.placement == Placement::Classic
                && let Some(w) = wait
            {
                for app in &self.apps {
                    let Some(a) = app.pre_stop.known().filter(|a| !a.is_zero()) else { continue };
                    if a < w {
                        continue;
                    }
                    let message = if w.is_zero() {
                        format!(
                            "container {:?}: preStop waits {} but proxy {name:?} has no wait-before-exit, so it drains at once and the app's requests during its preStop fail; give the proxy a wait longer than {} and shorter than {t_text}",
                            app.name,
                            show(a),
                            show(a),
                        )
                    } else {
                        format!(
                            "container {:?}: preStop waits {} but proxy {name:?} waits only {} before exit ({}); the proxy must wait longer than every app container",
                            app.name,
                            show(a),
                            show(w),
                            proxy.wait_source,
                        )
                    };
                    push(Severity::Error, Rule::AppPreStopNotBelowProxyWait, Some(&app.name), message);
                }
                if !w.is_zero() && w >= t {
                    push(
                        Severity::Error,
                        Rule::ProxyWaitNotBelowTerminationGrace,
                        Some(name),
                        format!(
                            "proxy {name:?}: waits {} before exit ({}), not less than {t_text}; the kubelet kills the pod before the proxy drains",
                            show(w),
                            proxy.wait_source
                        ),
                    );
                }
                if w < t
                    && proxy.grace_source != Source::Default
                    && let Some(g) = proxy.shutdown_grace_period
                    && g > t - w
                {
                    push(
                        Severity::Warning,
                        Rule::ProxyGraceExceedsRemaining,
                        Some(name),
                        format!(
                            "proxy {name:?}: shutdown grace period {} ({}) is longer than the {} left of {t_text} after its {} wait; connections still open then are killed, not closed",
                            show(g),
                            proxy.grace_source,
                            show(t - w),
                            show(w),
                        ),
                    );
                }
            }
            if proxy.shutdown_grace_period.is_none() {
                push(
                    Severity::Warning,
                    Rule::UnknownProxyGrace,
                    Some(name),
                    format!(
                        "proxy {name:?}: cannot read its shutdown grace period from {}",
                        proxy.grace_source
                    ),
                );
            }
            if self.runs_to_completion && proxy.placement == Placement::Classic && !self.completion_handled {
                push(
                    Severity::Warning,
                    Rule::JobNeverCompletes,
                    Some(name),
                    format!(
                        "proxy {name:?} is a classic sidecar in a pod that should finish: it keeps running after the app exits and the pod never completes; select the pod with a ShutdownPolicy, wrap the app with `lameduck-await -S`, or run the proxy as a native sidecar",
                    ),
                );
            }
        }
        for (name, field) in &self.signalled_sidecars {
            out.push(Finding {
                severity: Severity::Warning,
                rule: Rule::SidecarStoppedBySignal,
                container: Some(name.clone()),
                message: format!(
                    "sidecar {name:?} will be stopped with SIGTERM ({field}); many programs exit 143 on SIGTERM, which fails the pod: prefer a quit endpoint (a profile's, with PortForward or EphemeralContainer first) or make it exit 0 on SIGTERM"
                ),
            });
        }
        out.sort_by_key(|f| std::cmp::Reverse(f.severity));
        out
    }
}

#[cfg(test)]
mod tests;
