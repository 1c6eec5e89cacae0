//! Wires the operator's admission webhook into the local cluster for one test: webhook
//! configurations limited to the test's namespace that point the API server at the operator's
//! port on this machine, and a ClusterRole (from the chart's rules) that lets the operator patch
//! their `caBundle` and create SubjectAccessReviews. Cluster-scoped, so [`Webhook::remove`] deletes them at the end.

use std::{net::TcpListener, time::Duration};

use k8s_openapi::api::{
    admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use lameduck_api::names::webhook as names;
use serde_json::json;

use crate::{
    TestNamespace,
    operator::{ACCOUNT, rules_from},
};

/// The webhook objects of one test.
pub struct Webhook {
    client: Client,
    /// Name of both configurations and of the ClusterRole and its binding.
    pub name: String,
    pub port: u16,
    /// The test's namespace, the only one whose objects are sent to the webhook.
    namespace: String,
}

async fn create<K>(client: &Client, object: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
    <K as kube::Resource>::DynamicType: Default,
{
    let object: K = serde_json::from_value(object).expect("the test's object is valid");
    Api::<K>::all(client.clone()).create(&PostParams::default(), &object).await.expect("object created")
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("name", &self.name).field("port", &self.port).finish_non_exhaustive()
    }
}

impl Webhook {
    /// Creates the configurations (with no `caBundle` yet, as the chart does) and the RBAC.
    pub async fn install(ns: &TestNamespace) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port();
        let name = format!("lameduck-{}", ns.name);
        let client = ns.client.clone();
        let hook = Self { client: client.clone(), name: name.clone(), port, namespace: ns.name.clone() };
        hook.attach().await;
        let mut rules = rules_from("webhook-configurations.yaml");
        for rule in &mut rules {
            rule.resource_names = Some(vec![name.clone()]);
        }
        // The validating webhook asks the API server about each policy's author.
        rules.extend(rules_from("subject-access-reviews.yaml"));
        let _: ClusterRole = create(&client, json!({"metadata": {"name": name}, "rules": rules})).await;
        let _: ClusterRoleBinding = create(
            &client,
            json!({
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": ns.name}],
            }),
        )
        .await;
        hook
    }

    /// Creates the two configurations (again, after [`Webhook::detach`]), pointing at the port.
    pub async fn attach(&self) {
        let (client, name, port) = (&self.client, &self.name, self.port);
        let scope = json!({"matchLabels": {"kubernetes.io/metadata.name": self.namespace}});
        let url = |path: &str| format!("https://127.0.0.1:{port}{path}");
        let _: MutatingWebhookConfiguration = create(
            client,
            json!({
                "metadata": {"name": name},
                "webhooks": [{
                    "name": names::MUTATING_WEBHOOK,
                    "clientConfig": {"url": url(names::MUTATE_PODS_PATH)},
                    "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                               "resources": ["pods"], "scope": "Namespaced"}],
                    "namespaceSelector": scope,
                    "failurePolicy": "Ignore",
                    "reinvocationPolicy": "IfNeeded",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 5,
                }, {
                    // As the chart: policies are reviewed and stamped here. Failing open, unlike
                    // the chart's: tests create policies before their operator is up (an
                    // unstamped policy that asks for powers is then refused by the operator).
                    "name": names::STAMPING_WEBHOOK,
                    "clientConfig": {"url": url(names::MUTATE_POLICIES_PATH)},
                    "rules": [{"apiGroups": ["lameduck.io"], "apiVersions": ["v1alpha1"],
                               "operations": ["CREATE", "UPDATE"], "resources": ["shutdownpolicies"],
                               "scope": "Namespaced"}],
                    "namespaceSelector": scope,
                    "failurePolicy": "Ignore",
                    "reinvocationPolicy": "IfNeeded",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 5,
                }],
            }),
        )
        .await;
        let _: ValidatingWebhookConfiguration = create(
            client,
            json!({
                "metadata": {"name": name},
                "webhooks": [{
                    "name": names::VALIDATING_WEBHOOK,
                    "clientConfig": {"url": url(names::VALIDATE_POLICIES_PATH)},
                    "rules": [{"apiGroups": ["lameduck.io"], "apiVersions": ["v1alpha1"],
                               "operations": ["CREATE", "UPDATE"], "resources": ["shutdownpolicies"],
                               "scope": "Namespaced"}],
                    "namespaceSelector": scope,
                    "failurePolicy": "Ignore",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 5,
                }],
            }),
        )
        .await;
    }

    /// Deletes the two configurations, as a webhook removed from the cluster: the API server
    /// then calls nothing. The RBAC stays, so that [`Webhook::attach`] can bring them back.
    pub async fn detach(&self) {
        let dp = DeleteParams::default();
        let _ = Api::<MutatingWebhookConfiguration>::all(self.client.clone()).delete(&self.name, &dp).await;
        let _ = Api::<ValidatingWebhookConfiguration>::all(self.client.clone()).delete(&self.name, &dp).await;
    }

    /// The operator flags that serve this webhook.
    pub fn operator_args(&self) -> Vec<String> {
        [
            "--webhook-addr",
            &format!("127.0.0.1:{}", self.port),
            "--webhook-host",
            "127.0.0.1",
            "--mutating-webhook-configuration",
            &self.name,
            "--validating-webhook-configuration",
            &self.name,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Waits until the operator has patched its CA into both configurations.
    pub async fn wait_for_ca_bundles(&self) {
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let m = mutating.get(&self.name).await.expect("read the MutatingWebhookConfiguration");
            let v = validating.get(&self.name).await.expect("read the ValidatingWebhookConfiguration");
            let patched = |bundle: Option<&k8s_openapi::ByteString>| {
                bundle.is_some_and(|b| String::from_utf8_lossy(&b.0).contains("BEGIN CERTIFICATE"))
            };
            if m.webhooks.iter().flatten().all(|w| patched(w.client_config.ca_bundle.as_ref()))
                && v.webhooks.iter().flatten().all(|w| patched(w.client_config.ca_bundle.as_ref()))
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "caBundle not patched within 60s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Deletes the cluster-scoped objects.
    pub async fn remove(self) {
        self.detach().await;
        let dp = DeleteParams::default();
        let _ = Api::<ClusterRoleBinding>::all(self.client.clone()).delete(&self.name, &dp).await;
        let _ = Api::<ClusterRole>::all(self.client.clone()).delete(&self.name, &dp).await;
    }
}
