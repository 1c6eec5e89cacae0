//! The generated CRD on a real API server: it is accepted (within the CEL cost budget), valid
//! specs are stored, and every invalid spec of the shared fixture is rejected with a message that
//! names the field. kube-cel checks the same fixture client-side; this checks Kubernetes itself,
//! whose `duration()` is Go's parser.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
    runtime::{conditions, wait::await_condition},
};
use lameduck_api::{ShutdownPolicy, policy::shutdown_policy_crd};
use lameduck_e2e::{TestNamespace, client};
use serde_json::{Value, json};

/// Installs (or updates) the CRD the way `lameduck crds | kubectl apply` would, and waits for it.
async fn install_crd() {
    let crds: Api<CustomResourceDefinition> = Api::all(client().await);
    let crd = shutdown_policy_crd();
    let name = crd.name_any();
    crds.patch(&name, &PatchParams::apply("lameduck-e2e").force(), &Patch::Apply(&crd))
        .await
        .expect("the API server accepts the generated CRD");
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(crds, &name, conditions::is_crd_established()),
    )
    .await
    .expect("CRD established within a minute")
    .expect("CRD watch");
}

#[tokio::test]
async fn api_server_enforces_every_rule_with_a_message_naming_the_field() {
    install_crd().await;
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
