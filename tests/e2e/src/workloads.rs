//! The workloads the tests run: Jobs of lameduck's test app, with or without a proxy, and the
//! `ShutdownPolicy` that tells the operator about them.

use std::time::Duration;

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{Api, api::ListParams};
use lameduck_api::{
    ShutdownPolicy,
    names::{containers, images, labels},
};
use serde_json::json;

use crate::TestNamespace;

const MINUTE: Duration = Duration::from_secs(60);

/// Creates a ShutdownPolicy named `jobs` with this spec (no selector: it selects every pod of
/// the namespace).
pub async fn shutdown_policy(ns: &TestNamespace, spec: serde_json::Value) -> ShutdownPolicy {
    ns.create(json!({
        "apiVersion": "lameduck.io/v1alpha1",
        "kind": "ShutdownPolicy",
        "metadata": {"name": "jobs"},
        "spec": spec,
    }))
    .await
}

/// Whether the Job has a condition of this type with status True (`Complete`, `Failed`).
pub fn job_has(job: Option<&Job>, type_: &str) -> bool {
    job.and_then(|j| j.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Whether the Job has completed.
pub fn job_complete(job: Option<&Job>) -> bool {
    job_has(job, "Complete")
}

/// A Job whose `main` container serves for `seconds` and exits 0, with extra pod spec fields.
pub fn job(name: &str, seconds: u32, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 5,
        "containers": [{
            "name": "main",
            "image": images::TESTAPP,
            "imagePullPolicy": "IfNotPresent",
            "command": ["lameduck-testapp", "--listen", "0.0.0.0:8080", "--exit-after", format!("{seconds}s")],
        }],
    });
    for (key, value) in extra.as_object().unwrap() {
        if key == "containers" {
            spec["containers"].as_array_mut().unwrap().extend(value.as_array().unwrap().iter().cloned());
        } else {
            spec[key] = value.clone();
        }
    }
    json!({
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": spec}},
    })
}

/// lameduck's proxy as a classic sidecar, or as a native one.
pub fn proxy_container(native: bool) -> serde_json::Value {
    let mut container = json!({
        "name": containers::LAMEDUCK_PROXY,
        "image": images::PROXY,
        "imagePullPolicy": "IfNotPresent",
        "args": ["--inbound-target", "127.0.0.1:8080", "--enable-shutdown-endpoint"],
    });
    if native {
        container["restartPolicy"] = json!("Always");
    }
    container
}

/// The single pod of a Job, once it exists.
pub async fn job_pod(ns: &TestNamespace, job: &str) -> Pod {
    let pods: Api<Pod> = ns.api();
    let selector = ListParams::default().labels(&format!("{}={job}", labels::JOB_NAME));
    let deadline = tokio::time::Instant::now() + MINUTE;
    loop {
        if let Some(pod) = pods.list(&selector).await.expect("pods listed").items.into_iter().next() {
            return pod;
        }
        if tokio::time::Instant::now() > deadline {
            ns.fail(&format!("no pod for Job {job} within a minute")).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
