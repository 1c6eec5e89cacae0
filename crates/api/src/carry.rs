//! Carrying a change made on typed objects back onto the raw JSON they were read from.
//!
//! The webhook and `lameduck inject` change pods through `k8s-openapi` types, which know the
//! fields of the Kubernetes version lameduck was built against and nothing newer. Serializing the
//! typed result would drop every field the types do not know. Instead the difference between the
//! typed object before and after the change is replayed on the raw object, so a field the types
//! never saw is kept where it was.
//!
//! Lists whose items have a `name` (containers, env vars, volumes, mounts, ports) are matched by
//! name, not position: moving the proxy from `containers` to the head of `initContainers` shifts
//! every other item, and matching by position would hand one container's unknown fields to its
//! neighbour.

use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};

/// Reads `raw` as a `T`, lets `change` edit it, and returns `raw` with that edit carried over,
/// with what `change` returned. Fails when `raw` is not a `T`; the error names the field.
pub fn edit<T, R>(raw: &Value, change: impl FnOnce(&mut T) -> R) -> Result<(Value, R), serde_json::Error>
where
    T: Serialize + DeserializeOwned,
{
    let mut typed: T = serde_json::from_value(raw.clone())?;
    let before = serde_json::to_value(&typed)?;
    let result = change(&mut typed);
    let after = serde_json::to_value(&typed)?;
    Ok((carry(raw, &before, &after), result))
}

/// `raw` with the change from `before` to `after` applied. `before` is `raw` as the typed object
/// saw it (deserialized, then serialized again).
pub fn carry(raw: &Value, before: &Value, after: &Value) -> Value {
    match (raw, before, after) {
        (Value::Object(raw), Value::Object(before), Value::Object(after)) => {
            Value::Object(carry_object(raw, before, after))
        }
        (Value::Array(raw), Value::Array(before), Value::Array(after)) => carry_array(raw, before, after),
        // A scalar, or a value whose type changed: the typed side is the truth.
        _ if before == after => raw.clone(),
        _ => after.clone(),
    }
}

fn carry_object(
    raw: &Map<String, Value>,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
) -> Map<String, Value> {
    let mut out = Map::new();
    // Keep the raw order; keys the types dropped (`before` lacks them) stay untouched.
    for (key, raw_value) in raw {
        match (before.get(key), after.get(key)) {
            (Some(b), Some(a)) => {
                out.insert(key.clone(), carry(raw_value, b, a));
            }
            (Some(_), None) => {} // removed by the change
            (None, Some(a)) if is_empty(raw_value) => {
                // The types serialize an empty value as absent; the change filled it in.
                out.insert(key.clone(), a.clone());
            }
            (None, _) => {
                out.insert(key.clone(), raw_value.clone());
            }
        }
    }
    for (key, value) in after {
        if !raw.contains_key(key) {
            out.insert(key.clone(), value.clone());
        }
    }
    out
}

/// `null`, `{}` and `[]`: what the types read as "not set" and leave out when they write.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

fn name_of(value: &Value) -> Option<&str> {
    value.get("name")?.as_str()
}

fn carry_array(raw: &[Value], before: &[Value], after: &[Value]) -> Value {
    let named = |items: &[Value]| items.iter().all(|item| name_of(item).is_some());
    if named(raw) && named(before) && named(after) && !after.is_empty() {
        let find =
            |items: &'_ [Value], name: &str| items.iter().find(|item| name_of(item) == Some(name)).cloned();
        let items = after
            .iter()
            .map(|a| {
                let name = name_of(a).expect("checked above");
                match (find(raw, name), find(before, name)) {
                    (Some(r), Some(b)) => carry(&r, &b, a),
                    _ => a.clone(),
                }
            })
            .collect();
        return Value::Array(items);
    }
    if raw.len() == before.len() && before.len() == after.len() {
        return Value::Array(raw.iter().zip(before).zip(after).map(|((r, b), a)| carry(r, b, a)).collect());
    }
    Value::Array(after.to_vec())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::carry;

    #[test]
    fn unknown_fields_survive_a_change_next_to_them() {
        let raw = json!({"spec": {"futureField": 1, "terminationGracePeriodSeconds": 30}});
        let before = json!({"spec": {"terminationGracePeriodSeconds": 30}});
        let after = json!({"spec": {"terminationGracePeriodSeconds": 45}});
        assert_eq!(
            carry(&raw, &before, &after),
            json!({"spec": {"futureField": 1, "terminationGracePeriodSeconds": 45}})
        );
    }

    #[test]
    fn named_items_keep_their_own_unknown_fields_when_they_shift() {
        let raw = json!({
            "initContainers": [{"name": "init", "future": "init's"}],
            "containers": [{"name": "app", "future": "app's"}, {"name": "proxy", "future": "proxy's"}],
        });
        let before = json!({
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "app"}, {"name": "proxy"}],
        });
        let after = json!({
            "initContainers": [{"name": "proxy", "restartPolicy": "Always"}, {"name": "init"}],
            "containers": [{"name": "app"}],
        });
        let carried = carry(&raw, &before, &after);
        assert_eq!(
            carried,
            json!({
                // The moved proxy is new to this list: it comes from the typed side.
                "initContainers": [
                    {"name": "proxy", "restartPolicy": "Always"},
                    {"name": "init", "future": "init's"},
                ],
                "containers": [{"name": "app", "future": "app's"}],
            })
        );
    }

    #[test]
    fn removals_additions_and_empty_values() {
        let raw = json!({"a": 1, "b": {}, "c": [], "keep": "x", "list": [1, 2]});
        let before = json!({"a": 1, "keep": "x", "list": [1, 2]});
        let after = json!({"b": {"k": "v"}, "c": ["new"], "keep": "x", "list": [1, 2, 3], "d": true});
        assert_eq!(
            carry(&raw, &before, &after),
            json!({"b": {"k": "v"}, "c": ["new"], "keep": "x", "list": [1, 2, 3], "d": true})
        );
    }

    #[test]
    fn no_change_is_the_raw_object() {
        let raw = json!({"spec": {"containers": [{"name": "a", "x": 1}], "y": [1, {"z": 2}]}});
        let typed = json!({"spec": {"containers": [{"name": "a"}], "y": [1, {"z": 2}]}});
        assert_eq!(carry(&raw, &typed, &typed), raw);
    }
}
