//! `docs/shutdownpolicy.md` against the generated schema: every field documented, nothing
//! documented that the schema lacks, and the documented defaults the schema's.

use std::collections::BTreeMap;

use kube::CustomResourceExt;
use lameduck_api::ShutdownPolicy;
use serde_json::Value;

/// Field path -> default, for every property under `spec` and `status` (not inside the
/// Kubernetes types `LabelSelector` expressions and `Condition`).
fn schema_fields() -> BTreeMap<String, Option<Value>> {
    fn walk(node: &Value, path: &str, out: &mut BTreeMap<String, Option<Value>>) {
        let Some(properties) = node.get("properties").and_then(Value::as_object) else { return };
        for (name, child) in properties {
            let here = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
            out.insert(here.clone(), child.get("default").cloned());
            if here.starts_with("spec.selector.") || here == "status.conditions" {
                continue;
            }
            walk(child, &here, out);
        }
    }
    let crd = serde_json::to_value(ShutdownPolicy::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut out = BTreeMap::new();
    walk(schema, "", &mut out);
    out.retain(|path, _| path.contains('.'));
    out
}

/// Field path -> the default column, from the reference table.
fn documented() -> BTreeMap<String, String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/shutdownpolicy.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let field = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            (field.starts_with("spec.") || field.starts_with("status."))
                .then(|| (field.to_owned(), cells.get(3).copied().unwrap_or_default().to_owned()))
        })
        .collect()
}

#[test]
fn every_field_is_documented_and_nothing_else() {
    let schema = schema_fields();
    let docs = documented();
    let missing: Vec<&String> = schema.keys().filter(|k| !docs.contains_key(*k)).collect();
    let extra: Vec<&String> = docs.keys().filter(|k| !schema.contains_key(*k)).collect();
    assert!(missing.is_empty(), "fields missing from docs/shutdownpolicy.md: {missing:?}");
    assert!(extra.is_empty(), "docs/shutdownpolicy.md documents fields the schema lacks: {extra:?}");
}

#[test]
fn documented_scalar_defaults_are_the_schema_defaults() {
    let schema = schema_fields();
    for (field, column) in documented() {
        match schema.get(&field).cloned().flatten() {
            Some(Value::String(text)) => assert_eq!(column, format!("`{text}`"), "default of {field}"),
            Some(Value::Bool(flag)) => assert_eq!(column, format!("`{flag}`"), "default of {field}"),
            Some(Value::Number(n)) => assert_eq!(column, format!("`{n}`"), "default of {field}"),
            Some(Value::Array(items)) => {
                let names: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                assert_eq!(column, format!("`[{}]`", names.join(", ")), "default of {field}");
            }
            // Objects' defaults are their fields'; no default is written as prose.
            _ => {}
        }
    }
}
