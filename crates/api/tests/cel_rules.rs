//! Every CEL rule of the generated `ShutdownPolicy` schema, evaluated client-side with kube-cel
//! the way the API server evaluates it (defaults applied first), so a bad spec is shown to be
//! rejected with a message that names the field, and a good one to pass.

use std::collections::BTreeSet;

use kube::{
    CustomResourceExt,
    core::cel::{ValidationError, Validator, WarningKind, compile_schema, estimate_rule_cost},
};
use lameduck_api::{GoDuration, ShutdownPolicy};
use serde_json::{Value, json};

fn schema() -> Value {
    let crd = serde_json::to_value(ShutdownPolicy::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn object(spec: Value) -> Value {
    json!({
        "apiVersion": "lameduck.io/v1alpha1",
        "kind": "ShutdownPolicy",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": spec,
    })
}

fn errors(spec: Value) -> Vec<ValidationError> {
    match Validator::new().validate(&schema(), &object(spec), None) {
        Ok(()) => vec![],
        Err(errs) => errs.into_vec(),
    }
}

/// Asserts the spec is rejected by exactly one rule, whose message contains `message` and whose
/// field path or message names `field`. Returns the rule, so the suite can prove it covered all.
fn rejected(spec: Value, field: &str, message: &str) -> String {
    let errs = errors(spec.clone());
    assert_eq!(errs.len(), 1, "spec {spec} gave {errs:#?}");
    let err = &errs[0];
    assert!(err.message.contains(message), "spec {spec}: message {:?} lacks {message:?}", err.message);
    let named = format!("{} {}", err.field_path, err.message);
    assert!(named.contains(field), "spec {spec}: {named:?} does not name {field:?}");
    err.rule.clone()
}

fn all_rules(node: &Value, out: &mut BTreeSet<String>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                for rule in rules {
                    out.insert(rule["rule"].as_str().unwrap().to_owned());
                }
            }
            map.values().for_each(|v| all_rules(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| all_rules(v, out)),
        _ => {}
    }
}

#[derive(serde::Deserialize)]
struct Fixture {
    valid: Vec<Value>,
    invalid: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    spec: Value,
    field: String,
    message: String,
}

/// The specs shared with the end-to-end test that sends them to a real API server.
fn fixture() -> Fixture {
    serde_json::from_str(include_str!("fixtures/policy-validation.json")).expect("fixture parses")
}

#[test]
fn good_specs_pass() {
    for spec in fixture().valid {
        let errs = errors(spec.clone());
        assert!(errs.is_empty(), "{spec}: {errs:#?}");
    }
}

#[test]
fn every_rule_rejects_its_bad_spec_and_names_the_field() {
    let mut covered = BTreeSet::new();
    for case in fixture().invalid {
        covered.insert(rejected(case.spec, &case.field, &case.message));
    }
    let mut in_schema = BTreeSet::new();
    all_rules(&schema(), &mut in_schema);
    let untested: Vec<_> = in_schema.difference(&covered).collect();
    assert!(untested.is_empty(), "rules without a failing case: {untested:#?}");
}

#[test]
fn schema_and_parser_agree_on_durations() {
    let samples = [
        "0",
        "0s",
        "20s",
        "2m",
        "1h30m",
        "1.5s",
        ".5s",
        "5.s",
        "250ms",
        "10us",
        "10µs",
        "7ns",
        "2562047h",
        "2562047h0m1s",
        "3m2s1ms",
        "",
        "-5s",
        "+5s",
        "20",
        "s",
        ".s",
        "20 s",
        " 20s",
        "20d",
        "1e3s",
        "NaNs",
        "1..5s",
        "garbage",
        "1h30",
    ];
    for sample in samples {
        let by_schema = errors(json!({"completion": {"delay": sample}})).is_empty();
        let by_parser = sample.parse::<GoDuration>().is_ok();
        assert_eq!(by_schema, by_parser, "{sample:?}: schema {by_schema}, parser {by_parser}");
    }
}

#[test]
fn overflowing_durations_are_rejected_by_the_schema_too() {
    // The pattern alone would accept these; a controller that then failed to parse the policy
    // would drop it from its cache. The schema must refuse them.
    for sample in ["2562048h", "2562047h1m", "9223372036854775808ns", "99999999999999999999s"] {
        assert!(sample.parse::<GoDuration>().is_err(), "{sample}");
        let errs = errors(json!({"completion": {"delay": sample}}));
        assert!(!errs.is_empty(), "{sample} passed the schema");
    }
}

#[test]
fn every_rule_fits_the_api_server_cost_budget() {
    fn walk(node: &Value, problems: &mut Vec<String>) {
        let Value::Object(map) = node else {
            if let Value::Array(items) = node {
                items.iter().for_each(|v| walk(v, problems));
            }
            return;
        };
        if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
            let compiled = compile_schema(node);
            for rule in rules {
                let text = rule["rule"].as_str().unwrap();
                for warning in estimate_rule_cost(text, &compiled) {
                    if matches!(warning.kind, WarningKind::CostExceeded) {
                        problems.push(format!("{text}: {}", warning.message));
                    }
                }
            }
        }
        map.values().for_each(|v| walk(v, problems));
    }
    let mut problems = Vec::new();
    walk(&schema(), &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
}
