//! The monitoring assets lameduck ships: the alert rules (`deploy/lameduck/files/alert-rules.yaml`)
//! pass `promtool check rules` and their unit tests, and the rules, their tests and the Grafana
//! dashboard (`deploy/grafana/lameduck-dashboard.json`) name only metrics the operator exports.
//! No cluster needed; `promtool` comes from Debian's prometheus package
//! (`tests/cluster/install-deps.sh`).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use lameduck_operator::metrics::Metrics;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rules_file() -> PathBuf {
    repo().join("deploy/lameduck/files/alert-rules.yaml")
}

fn rules_test_file() -> PathBuf {
    repo().join("deploy/lameduck/files/alert-rules.test.yaml")
}

fn dashboard_file() -> PathBuf {
    repo().join("deploy/grafana/lameduck-dashboard.json")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs promtool and fails the test with its output unless it succeeds.
fn promtool(args: &[&str], file: &Path) -> String {
    let output = Command::new("promtool").args(args).arg(file).output().unwrap_or_else(|e| {
        panic!("run promtool: {e}; install Debian's prometheus package (bash tests/cluster/install-deps.sh)")
    });
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {args:?} {} failed:\n{text}", file.display());
    text
}

/// Metric families the operator exports, by name, with their type (`counter`, `histogram`, ...).
/// Vectors appear in the exposition only once they have a child, so each gets one first.
fn exported() -> BTreeMap<String, String> {
    let metrics = Metrics::new();
    metrics.shutdown_attempts.with_label_values(&["Exec", "sent"]);
    metrics.shutdowns.with_label_values(&["succeeded", "Job"]);
    metrics.reconcile_errors.with_label_values(&["kube_api"]);
    metrics.webhook_admissions.with_label_values(&["pods", "mutated"]);
    metrics.policy_timing_violations.with_label_values(&["job-never-completes"]);
    let families: BTreeMap<String, String> = metrics
        .encode()
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect();
    // Guards the guard: an empty set would make every name "unknown", a partial one hides vectors.
    assert!(families.contains_key("lameduck_shutdown_attempts_total"), "{families:?}");
    assert!(families.contains_key("lameduck_policy_timing_violations"), "{families:?}");
    families
}

/// The `lameduck_` metric names a PromQL expression mentions, outside string literals (label
/// values such as `"$namespace"` are not names).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            let mut escaped = false;
            for (_, d) in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' && c != '`' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut end = start + c.len_utf8();
            while let Some(&(i, d)) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                    end = i + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let word = &expr[start..end];
            if word.starts_with("lameduck_") {
                names.insert(word.to_owned());
            }
        }
    }
    names
}

/// Whether `name` is a series the operator exports: a family itself, or a histogram's
/// `_bucket`, `_sum` or `_count`.
fn is_exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    families.contains_key(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| families.get(base).is_some_and(|kind| kind == "histogram"))
        })
}

/// Each `(where, expression)` that names a metric the operator does not export, with the name.
fn unknown_names(exprs: &[(String, String)], families: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut unknown = Vec::new();
    for (place, expr) in exprs {
        let names = metric_names(expr);
        if names.is_empty() {
            unknown.push((place.clone(), format!("no lameduck_ metric in {expr:?}")));
        }
        for name in names.into_iter().filter(|name| !is_exported(name, families)) {
            unknown.push((place.clone(), format!("{name} in {expr:?}")));
        }
    }
    unknown
}

/// Every alert and recording rule expression, as (`rule name`, expr).
fn rule_exprs() -> Vec<(String, String)> {
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read(&rules_file())).expect("rules are YAML");
    let mut exprs = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().or(rule["record"].as_str()).expect("alert or record");
            exprs.push((name.to_owned(), rule["expr"].as_str().expect("expr").to_owned()));
        }
    }
    exprs
}

/// Every query of the dashboard, as (`panel title` or `variable name`, expr): panel targets,
/// panels nested in rows, and query variables.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
                out.push((format!("panel {title:?}"), expr.to_owned()));
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] == "query" {
            let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).expect("query");
            out.push((format!("variable {:?}", variable["name"]), query.to_owned()));
        }
    }
    out
}

fn dashboard() -> Value {
    serde_json::from_str(&read(&dashboard_file())).expect("the dashboard is JSON")
}

#[test]
fn alert_rules_pass_promtool_check() {
    let out = promtool(&["check", "rules"], &rules_file());
    println!("{out}");
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    // promtool resolves the test file's `rule_files` relative to the test file.
    let out = promtool(&["test", "rules"], &rules_test_file());
    println!("{out}");
}

#[test]
fn every_alert_has_severity_summary_description_and_runbook() {
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read(&rules_file())).unwrap();
    let mut alerts = BTreeSet::new();
    for rule in rules["groups"].as_sequence().unwrap().iter().flat_map(|g| g["rules"].as_sequence().unwrap())
    {
        let Some(alert) = rule["alert"].as_str() else { continue };
        alerts.insert(alert.to_owned());
        let severity = rule["labels"]["severity"].as_str();
        assert!(matches!(severity, Some("critical" | "warning" | "info")), "{alert}: severity {severity:?}");
        for key in ["summary", "description", "runbook"] {
            assert!(
                rule["annotations"][key].as_str().is_some_and(|s| !s.trim().is_empty()),
                "{alert}: no {key} annotation"
            );
        }
    }
    for expected in [
        "LameduckStuckPods",
        "LameduckShutdownFailures",
        "LameduckUnmutatedPods",
        "LameduckTimingViolations",
        "LameduckNoLeader",
        "LameduckWebhookCertificateExpiring",
    ] {
        assert!(alerts.contains(expected), "{expected} missing from {alerts:?}");
    }
    // Each alert is unit-tested: promtool only checks the alerts a test names.
    let tests = read(&rules_test_file());
    for alert in &alerts {
        assert!(tests.contains(&format!("alertname: {alert}\n")), "{alert} has no promtool unit test");
    }
}

#[test]
fn alert_rules_and_their_tests_name_only_exported_metrics() {
    let families = exported();
    let unknown = unknown_names(&rule_exprs(), &families);
    assert!(unknown.is_empty(), "alert rules name metrics the operator does not export: {unknown:#?}");

    // The unit tests' input series, so that they exercise the real names.
    let tests: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read(&rules_test_file())).unwrap();
    let series: Vec<(String, String)> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["input_series"].as_sequence().unwrap())
        .map(|s| s["series"].as_str().unwrap().to_owned())
        .filter(|s| s.starts_with("lameduck_"))
        .map(|s| ("alert-rules.test.yaml".to_owned(), s))
        .collect();
    assert!(!series.is_empty());
    let unknown = unknown_names(&series, &families);
    assert!(unknown.is_empty(), "rule tests use metrics the operator does not export: {unknown:#?}");
}

#[test]
fn dashboard_queries_name_only_exported_metrics() {
    let families = exported();
    let exprs = dashboard_exprs(&dashboard());
    assert!(exprs.len() >= 12, "expected a query per panel, found {exprs:#?}");
    let unknown = unknown_names(&exprs, &families);
    assert!(unknown.is_empty(), "dashboard queries name metrics the operator does not export: {unknown:#?}");
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool has no "check this expression"; recording rules are checked by the same parser.
    // Grafana's variables become what they stand for at query time.
    let exprs = dashboard_exprs(&dashboard());
    let rules: Vec<Value> = exprs
        .iter()
        .filter(|(place, _)| place.starts_with("panel"))
        .enumerate()
        .map(|(i, (_, expr))| {
            let expr = expr.replace("$__rate_interval", "5m").replace("$namespace", ".*");
            serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr})
        })
        .collect();
    let file = std::env::temp_dir().join(format!("lameduck-dashboard-rules-{}.yaml", std::process::id()));
    let text = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string();
    std::fs::write(&file, text).expect("write the dashboard's queries");
    let result = std::panic::catch_unwind(|| promtool(&["check", "rules"], &file));
    let _ = std::fs::remove_file(&file);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn dashboard_uses_the_datasource_variable_everywhere() {
    let dashboard = dashboard();
    assert_eq!(dashboard["schemaVersion"], 39);
    let variables = dashboard["templating"]["list"].as_array().expect("templating");
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"),
        "no Prometheus datasource variable: {variables:#?}"
    );
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = &panel["title"];
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {title}");
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "panel {title}");
        }
    }
}

/// The checker itself: a misspelt metric, a histogram suffix on a gauge, and names inside label
/// values.
#[test]
fn the_name_check_catches_misspelt_metrics() {
    let families = exported();
    let exprs = |e: &str| vec![("test".to_owned(), e.to_owned())];
    assert!(unknown_names(&exprs("max(lameduck_stuck_pod) > 0"), &families).len() == 1);
    assert!(unknown_names(&exprs("lameduck_stuck_pods_count"), &families).len() == 1);
    assert!(unknown_names(&exprs(r#"up{job="lameduck_nope"}"#), &families).len() == 1, "no metric at all");
    assert!(
        unknown_names(
            &exprs(
                r#"histogram_quantile(0.9, sum by (le) (rate(lameduck_shutdown_latency_seconds_bucket{x="lameduck_nope"}[5m])))"#
            ),
            &families
        )
        .is_empty()
    );
    assert_eq!(
        metric_names(
            r#"lameduck_leader{a="lameduck_x"} or absent(lameduck_leader) + lameduck_unmutated_pods"#
        ),
        BTreeSet::from(["lameduck_leader".to_owned(), "lameduck_unmutated_pods".to_owned()])
    );
}
