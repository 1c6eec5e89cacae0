//! What the admitted-pods watch reads of every pod: identity, labels, the annotations the timing
//! rules and the webhook's mark use, and the spec kept as raw JSON. Status and managed fields are
//! never parsed; the spec is parsed only when it (or the labels, or the policies) changed, which
//! for a running pod is almost never: most pod events are status updates.

use std::{
    collections::BTreeMap,
    hash::{Hash, Hasher},
};

use k8s_openapi::{
    api::core::v1::{Pod, PodSpec},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// A pod as the admitted-pods watch sees it.
#[derive(Clone, Debug, Deserialize)]
pub struct AdmittedPod {
    #[serde(deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<Box<RawValue>>,
}

/// Whether an annotation can matter: lameduck's own, and Linkerd's proxy settings that the timing
/// rules read. Others (such as kubectl's last-applied configuration) can be large.
fn kept_annotation(key: &str) -> bool {
    key.starts_with("lameduck.io/") || key.contains("linkerd.io/")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<Time>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

fn slim_meta<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    let slim = SlimMeta::deserialize(deserializer)?;
    Ok(ObjectMeta {
        name: slim.name,
        namespace: slim.namespace,
        uid: slim.uid,
        resource_version: slim.resource_version,
        creation_timestamp: slim.creation_timestamp,
        labels: slim.labels,
        annotations: slim
            .annotations
            .map(|all| all.into_iter().filter(|(k, _)| kept_annotation(k)).collect()),
        ..ObjectMeta::default()
    })
}

slim_pod_resource!(AdmittedPod);

impl AdmittedPod {
    /// A digest of what the assessment depends on in the pod, mixed with `policies` (a digest of
    /// the policy set): equal fingerprints give equal assessments.
    pub fn fingerprint(&self, policies: u64) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        policies.hash(&mut hasher);
        self.metadata.labels.hash(&mut hasher);
        self.metadata.annotations.hash(&mut hasher);
        self.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).hash(&mut hasher);
        self.spec.as_ref().map(|s| s.get()).hash(&mut hasher);
        hasher.finish()
    }

    /// The pod with its spec parsed, for the assessment.
    pub fn to_pod(&self) -> Result<Pod, serde_json::Error> {
        let spec: Option<PodSpec> =
            self.spec.as_ref().map(|raw| serde_json::from_str(raw.get())).transpose()?;
        Ok(Pod { metadata: self.metadata.clone(), spec, status: None })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(phase: &str, image: &str) -> AdmittedPod {
        serde_json::from_str(
            &json!({
                "metadata": {
                    "name": "web-1", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                    "labels": {"app": "web"},
                    "annotations": {"lameduck.io/policy": "web", "config.alpha.linkerd.io/proxy-wait-before-exit-seconds": "5",
                                    "kubectl.kubernetes.io/last-applied-configuration": "{...big...}"},
                    "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}],
                },
                "spec": {"containers": [{"name": "app", "image": image}]},
                "status": {"phase": phase},
            })
            .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn keeps_what_assessments_read_and_status_changes_keep_the_fingerprint() {
        let running = pod("Running", "app:1");
        let annotations = running.metadata.annotations.as_ref().unwrap();
        assert!(annotations.contains_key("lameduck.io/policy"));
        assert!(annotations.contains_key("config.alpha.linkerd.io/proxy-wait-before-exit-seconds"));
        assert!(!annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert!(running.metadata.managed_fields.is_none());
        assert_eq!(running.to_pod().unwrap().spec.unwrap().containers[0].image.as_deref(), Some("app:1"));

        assert_eq!(running.fingerprint(1), pod("Succeeded", "app:1").fingerprint(1));
        assert_ne!(running.fingerprint(1), pod("Running", "app:2").fingerprint(1));
        assert_ne!(running.fingerprint(1), running.fingerprint(2), "a policy change re-assesses");
    }
}
