//! The generated CRD on a real API server: it is accepted (within the CEL cost budget), valid
//! specs are stored, and every invalid spec of the shared fixture is rejected with a message that
//! names the field. kube-cel checks the same fixture client-side; this checks Kubernetes itself,
//! whose `duration()` is Go's parser.

use kube::{
    Api,
    api::{ApiResource, DynamicObject, PostParams},
};
use lameduck_api::ShutdownPolicy;
use lameduck_e2e::{TestNamespace, client, install_crd};
use serde_json::{Value, json};

#[tokio::test]
async fn api_server_enforces_every_rule_with_a_message_naming_the_field() {
    install_crd(client().await).await;
    let ns = TestNamespace::new("crd").await;
    let resource = ApiResource::erase::<ShutdownPolicy>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
    // The same fixture crates/api/tests/cel_rules.rs evaluates with kube-cel.
    let fixture: Value =
        serde_json::from_str(include_str!("../../../crates/api/tests/fixtures/policy-validation.json"))
            .unwrap();
    let valid = fixture["valid"].as_array().expect("fixture has valid specs");
    let invalid = fixture["invalid"].as_array().expect("fixture has invalid specs");
    let object = |name: String, spec: &Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "lameduck.io/v1alpha1",
            "kind": "ShutdownPolicy",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .unwrap()
    };

    for (i, spec) in valid.iter().enumerate() {
        if let Err(err) = api.create(&PostParams::default(), &object(format!("valid-{i}"), spec)).await {
            ns.fail(&format!("valid spec {spec} was refused: {err}")).await;
        }
    }
    // Defaults are applied by the API server, as the types say.
    let stored = api.get("valid-0").await.unwrap();
    assert_eq!(
        stored.data["spec"]["completion"]["methods"],
        json!(["Exec", "PortForward", "EphemeralContainer", "Signal"])
    );
    assert_eq!(stored.data["spec"]["proxy"]["profile"], "Linkerd");

    let mut problems = Vec::new();
    for (i, case) in invalid.iter().enumerate() {
        let (spec, field, message) =
            (&case["spec"], case["field"].as_str().unwrap(), case["message"].as_str().unwrap());
        match api.create(&PostParams::default(), &object(format!("invalid-{i}"), spec)).await {
            Ok(_) => problems.push(format!("accepted: {spec}")),
            Err(kube::Error::Api(status)) => {
                let named = status.message.contains(field);
                let explained = status.message.contains(message);
                if status.code != 422 || !named || !explained {
                    problems.push(format!(
                        "{spec}: wanted 422 naming {field:?} with {message:?}, got {} {:?}",
                        status.code, status.message
                    ));
                }
            }
            Err(other) => problems.push(format!("{spec}: {other}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    ns.finish().await;
}
