//! Every metric the proxy exports, registered in one place. Labels stay bounded: direction,
//! protocol and status class only.

use lameduck_api::build;
use prometheus::{
    Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Which side of the proxy a connection or request is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// The proxy's metrics.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// Metrics named alike on every lameduck program: `lameduck_build_info`.
    unprefixed: Registry,
    /// Requests received, by direction.
    pub(crate) requests: IntCounterVec,
    /// Responses sent, by direction and status class (`2xx`...).
    pub(crate) responses: IntCounterVec,
    /// Connections accepted, by direction and detected protocol.
    pub(crate) connections: IntCounterVec,
    /// Connections open now, by direction.
    pub(crate) open_connections: IntGaugeVec,
    /// Requests being served now, by direction.
    pub(crate) in_flight: IntGaugeVec,
    /// 1 while draining.
    pub(crate) draining: IntGauge,
    /// Seconds since draining started (0 before).
    pub(crate) drain_seconds: Gauge,
    /// Connections closed at the grace deadline.
    pub(crate) forced_closes: IntCounter,
    /// Connections and requests refused, by direction and reason (`not-http`, `upstream`,
    /// `upstream-error`, `app-connection-limit`).
    pub(crate) refused: IntCounterVec,
    /// Settings-file values that could not be used.
    pub(crate) settings_errors: IntCounter,
    /// Connections to the app open now (inbound), against `--max-app-connections`.
    pub(crate) app_connections: IntGauge,
}

fn must<T>(result: prometheus::Result<T>) -> T {
    // Names and labels are constants, registered at start in every test; nothing from a client
    // reaches here.
    #[allow(clippy::expect_used)]
    result.expect("metric definition is valid") // ok: constants only
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let registry = must(Registry::new_custom(Some("lameduck_proxy".to_owned()), None));
        // `lameduck_build_info`, named as on every lameduck program, so outside the prefix.
        let build_info = must(IntGaugeVec::new(
            Opts::new(build::BUILD_INFO_METRIC, build::BUILD_INFO_HELP).namespace(build::METRICS_NAMESPACE),
            &["version", "revision"],
        ));
        build_info.with_label_values(&[build::VERSION, build::REVISION]).set(1);
        let unprefixed = must(Registry::new_custom(None, None));
        must(unprefixed.register(Box::new(build_info)));
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(metric.clone())));
            metric
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = must(IntGaugeVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(metric.clone())));
            metric
        };
        let requests = counter_vec("requests_total", "HTTP requests received.", &["direction"]);
        let responses = counter_vec(
            "responses_total",
            "HTTP responses sent, by status class.",
            &["direction", "status_class"],
        );
        let connections = counter_vec(
            "connections_total",
            "Connections accepted, by detected protocol.",
            &["direction", "protocol"],
        );
        let open_connections = gauge_vec("open_connections", "Connections open now.", &["direction"]);
        let in_flight = gauge_vec("in_flight_requests", "HTTP requests being served now.", &["direction"]);
        let refused = counter_vec(
            "refused_connections_total",
            "Connections and requests the proxy refused: not HTTP on outbound, upstream unreachable or failed, a connection limit reached.",
            &["direction", "reason"],
        );
        let draining = must(IntGauge::new("draining", "1 while the proxy drains."));
        must(registry.register(Box::new(draining.clone())));
        let drain_seconds = must(Gauge::new("drain_duration_seconds", "Seconds since draining started."));
        must(registry.register(Box::new(drain_seconds.clone())));
        let forced_closes = must(IntCounter::new(
            "forced_closes_total",
            "Connections closed at the shutdown grace deadline.",
        ));
        must(registry.register(Box::new(forced_closes.clone())));
        let settings_errors =
            must(IntCounter::new("settings_errors_total", "Settings-file values that could not be used."));
        must(registry.register(Box::new(settings_errors.clone())));
        let app_connections = must(IntGauge::new(
            "app_connections",
            "Connections to the app open now, idle ones included, against --max-app-connections.",
        ));
        must(registry.register(Box::new(app_connections.clone())));
        // Pre-create the common series so dashboards see zeros rather than gaps.
        for direction in [Direction::Inbound, Direction::Outbound] {
            open_connections.with_label_values(&[direction.as_str()]).set(0);
            in_flight.with_label_values(&[direction.as_str()]).set(0);
            requests.with_label_values(&[direction.as_str()]);
        }
        Self {
            registry,
            unprefixed,
            requests,
            responses,
            connections,
            open_connections,
            in_flight,
            draining,
            drain_seconds,
            forced_closes,
            refused,
            settings_errors,
            app_connections,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let mut families = self.registry.gather();
        families.extend(self.unprefixed.gather());
        let _ = TextEncoder::new().encode(&families, &mut out);
        out
    }
}

/// Metric handles resolved once, so a request does no label lookups.
#[derive(Debug)]
pub(crate) struct RequestMetrics {
    requests: prometheus::IntCounter,
    in_flight: prometheus::IntGauge,
    /// By status class: 1xx to 5xx.
    responses: [prometheus::IntCounter; 5],
    pub(crate) refused_upstream: prometheus::IntCounter,
    pub(crate) upstream_errors: prometheus::IntCounter,
}

impl RequestMetrics {
    pub(crate) fn new(metrics: &Metrics, direction: Direction) -> Self {
        let d = direction.as_str();
        Self {
            requests: metrics.requests.with_label_values(&[d]),
            in_flight: metrics.in_flight.with_label_values(&[d]),
            responses: STATUS_CLASSES.map(|class| metrics.responses.with_label_values(&[d, class])),
            refused_upstream: metrics.refused.with_label_values(&[d, "upstream"]),
            upstream_errors: metrics.refused.with_label_values(&[d, "upstream-error"]),
        }
    }

    /// Counts a request received; it stays in flight until the guard is dropped.
    pub(crate) fn start(&self) -> InFlight<'_> {
        self.requests.inc();
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    pub(crate) fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].inc();
    }
}

/// Counts a request as in flight until dropped, even if the client goes away mid-request.
pub(crate) struct InFlight<'a>(&'a prometheus::IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The `status_class` label values, in order: bounded, unlike raw status codes.
pub(crate) const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_renders_with_the_prefix() {
        let metrics = Metrics::new();
        metrics.responses.with_label_values(&["inbound", STATUS_CLASSES[4]]).inc();
        metrics.forced_closes.inc();
        let text = String::from_utf8(metrics.render()).unwrap();
        for name in [
            "lameduck_proxy_requests_total",
            "lameduck_proxy_responses_total{direction=\"inbound\",status_class=\"5xx\"} 1",
            "lameduck_proxy_open_connections",
            "lameduck_proxy_in_flight_requests",
            "lameduck_proxy_draining 0",
            "lameduck_proxy_drain_duration_seconds 0",
            "lameduck_proxy_forced_closes_total 1",
            "lameduck_proxy_app_connections 0",
            "lameduck_build_info{revision=\"",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
