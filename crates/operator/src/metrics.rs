//! Every metric the operator exports, registered in one place under the `lameduck_` prefix.
//! Labels stay bounded: method, outcome and reason, never a pod or policy name.

use lameduck_api::build;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Seconds, from a fraction of a second (port-forward on an idle cluster) to the 5-minute backoff.
const LATENCY_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// The operator's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Unfinished run-to-completion pods a policy (or `--default-profile`) applies to.
    pub pods_observed: IntGauge,
    /// Run-to-completion pods whose main containers are done while a sidecar runs, by reason
    /// (`status::summary::StuckReason`), whether lameduck can act on them or not.
    pub stuck_pods: IntGaugeVec,
    /// Shutdown calls by method and outcome (`sent`, `endpoint_disabled`, `failed`, `unknown`,
    /// `dry_run`).
    pub shutdown_attempts: IntCounterVec,
    /// How pods under lameduck's care ended: `succeeded`, `failed` (proxy exited non-zero),
    /// `gave_up`, and `exhausted` for each round in which every method failed.
    pub shutdowns: IntCounterVec,
    /// Last main container exit to proxy exit.
    pub shutdown_latency: Histogram,
    /// Last main container exit to the first shutdown call (or, with `--dry-run`, the decision).
    pub action_latency: Histogram,
    /// Time spent in one reconcile of one pod.
    pub reconcile_duration: Histogram,
    /// Failed reconciles, by reason.
    pub reconcile_errors: IntCounterVec,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
    /// Admission reviews answered, by resource (`pods`, `shutdownpolicies`) and result.
    pub webhook_admissions: IntCounterVec,
    /// Live pods a policy selects that were admitted without its drain settings (leader only).
    pub unmutated_pods: IntGauge,
    /// Live pods selected by a policy whose shutdown timing breaks a rule, by rule (leader only).
    pub policy_timing_violations: IntGaugeVec,
    /// When the webhook's serving certificate expires (Unix seconds); 0 until one is loaded.
    pub webhook_certificate_expiry: IntGauge,
    /// Policies the operator will not act on, by reason (`ephemeral_image`, `exec_command`).
    pub policies_refused: IntGaugeVec,
}

/// The bounded `owner` label of `lameduck_shutdowns_total` for a pod's controller kind: `Job`,
/// `None` (a bare pod), or `Other` for any other kind.
pub fn owner_label(kind: Option<&str>) -> &'static str {
    match kind {
        Some("Job") => "Job",
        None => "None",
        Some(_) => "Other",
    }
}

fn must<T>(result: prometheus::Result<T>) -> T {
    // Names and labels are constants, checked at start by `Metrics::new` in every test; no value
    // from outside reaches here.
    #[allow(clippy::expect_used)]
    result.expect("metric definition is valid") // ok: constants only
}

impl Metrics {
    pub fn new() -> Self {
        let registry = must(Registry::new_custom(Some(build::METRICS_NAMESPACE.to_owned()), None));
        let gauge = |name: &str, help: &str| {
            let metric = must(IntGauge::new(name, help));
            must(registry.register(Box::new(metric.clone())));
            metric
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(metric.clone())));
            metric
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let metric = must(Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)));
            must(registry.register(Box::new(metric.clone())));
            metric
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = must(IntGaugeVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(metric.clone())));
            metric
        };
        // `lameduck_build_info`: a constant 1, labelled with what this binary was built from.
        gauge_vec(build::BUILD_INFO_METRIC, build::BUILD_INFO_HELP, &["version", "revision"])
            .with_label_values(&[build::VERSION, build::REVISION])
            .set(1);
        let this = Self {
            pods_observed: gauge(
                "pods_observed",
                "Unfinished run-to-completion pods that a ShutdownPolicy applies to",
            ),
            stuck_pods: gauge_vec(
                "stuck_pods",
                "Run-to-completion pods whose main containers have exited while a sidecar runs, by reason",
                &["reason"],
            ),
            shutdown_attempts: counter_vec(
                "shutdown_attempts_total",
                "Proxy shutdown calls, by method and outcome",
                &["method", "outcome"],
            ),
            shutdowns: counter_vec(
                "shutdowns_total",
                "Pods lameduck finished, by outcome and owner kind (Job, None, Other)",
                &["outcome", "owner"],
            ),
            shutdown_latency: histogram(
                "shutdown_latency_seconds",
                "From the last main container's exit to the proxy's exit",
                LATENCY_BUCKETS.to_vec(),
            ),
            action_latency: histogram(
                "action_latency_seconds",
                "From the last main container's exit to the first shutdown call",
                LATENCY_BUCKETS.to_vec(),
            ),
            reconcile_duration: histogram(
                "reconcile_duration_seconds",
                "Time spent deciding about and acting on one pod",
                prometheus::DEFAULT_BUCKETS.to_vec(),
            ),
            reconcile_errors: counter_vec(
                "reconcile_errors_total",
                "Failed reconciles, by reason",
                &["reason"],
            ),
            leader: gauge("leader", "1 while this replica holds the leader Lease"),
            webhook_admissions: counter_vec(
                "webhook_admissions_total",
                "Admission reviews answered, by resource and result",
                &["resource", "result"],
            ),
            unmutated_pods: gauge(
                "unmutated_pods",
                "Live pods a ShutdownPolicy selects that were admitted without its drain settings",
            ),
            policy_timing_violations: gauge_vec(
                "policy_timing_violations",
                "Live pods selected by a ShutdownPolicy whose shutdown timing breaks a rule, by rule",
                &["rule"],
            ),
            policies_refused: gauge_vec(
                "policies_refused",
                "ShutdownPolicies the operator will not act on, by reason",
                &["reason"],
            ),
            webhook_certificate_expiry: gauge(
                "webhook_certificate_expiry_timestamp_seconds",
                "When the webhook's serving certificate expires, in Unix seconds",
            ),
            registry,
        };
        // Every reason shows from the start, at 0: an alert on it needs the series to exist.
        for reason in crate::powers::REFUSAL_REASONS {
            this.policies_refused.with_label_values(&[reason]).set(0);
        }
        for reason in crate::status::summary::StuckReason::ALL {
            this.stuck_pods.with_label_values(&[reason.as_str()]).set(0);
        }
        this
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        must(TextEncoder::new().encode(&self.registry.gather(), &mut out));
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_the_names_in_the_design() {
        let metrics = Metrics::new();
        // Vectors appear once they have a child.
        metrics.shutdown_attempts.with_label_values(&["Exec", "sent"]).inc();
        metrics.shutdowns.with_label_values(&["succeeded", "None"]).inc();
        metrics.reconcile_errors.with_label_values(&["kube_api"]).inc();
        metrics.webhook_admissions.with_label_values(&["pods", "mutated"]).inc();
        metrics.policy_timing_violations.with_label_values(&["job-never-completes"]).set(2);
        metrics.policies_refused.with_label_values(&["exec_command"]).set(1);
        let text = metrics.encode();
        for name in [
            "lameduck_pods_observed",
            "lameduck_stuck_pods{reason=\"no_policy\"} 0",
            "lameduck_shutdown_attempts_total{method=\"Exec\",outcome=\"sent\"} 1",
            "lameduck_shutdowns_total{outcome=\"succeeded\",owner=\"None\"} 1",
            "lameduck_shutdown_latency_seconds_bucket",
            "lameduck_action_latency_seconds_bucket",
            "lameduck_reconcile_duration_seconds_bucket",
            "lameduck_reconcile_errors_total{reason=\"kube_api\"} 1",
            "lameduck_leader 0",
            "lameduck_webhook_admissions_total{resource=\"pods\",result=\"mutated\"} 1",
            "lameduck_unmutated_pods 0",
            "lameduck_policy_timing_violations{rule=\"job-never-completes\"} 2",
            "lameduck_webhook_certificate_expiry_timestamp_seconds 0",
            "lameduck_policies_refused{reason=\"exec_command\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
