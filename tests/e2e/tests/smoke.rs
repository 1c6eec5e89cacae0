//! Proof that the local cluster is real and that the problem lameduck solves exists on it:
//! Jobs complete, a classic proxy sidecar keeps a Job's pod running after its main container
//! exits, a native sidecar does not, and exec, port-forward and ephemeral containers work.

use std::time::Duration;

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api,
    api::{AttachParams, Patch, PatchParams},
};
use lameduck_api::names::{containers, images};
use lameduck_e2e::{
    TestNamespace, exit_code, is_running, phase,
    workloads::{job, job_complete, job_pod, proxy_container},
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn plain_job_completes() {
    let ns = TestNamespace::new("plain-job").await;
    let jobs: Api<Job> = ns.api();
    ns.create::<Job>(job("plain", 1, json!({}))).await;
    ns.wait_for(&jobs, "plain", "Job Complete", 2 * MINUTE, job_complete).await;
    let pod = job_pod(&ns, "plain").await;
    assert_eq!(phase(&pod), "Succeeded");
    assert_eq!(exit_code(&pod, "main"), Some(0));
    ns.finish().await;
}

#[tokio::test]
async fn classic_proxy_sidecar_keeps_the_job_running_until_it_is_shut_down() {
    let ns = TestNamespace::new("classic-sidecar").await;
    let jobs: Api<Job> = ns.api();
    let pods: Api<Pod> = ns.api();
    ns.create::<Job>(job("classic", 1, json!({"containers": [proxy_container(false)]}))).await;
    let pod = job_pod(&ns, "classic").await;
    let name = pod.metadata.name.clone().unwrap();
    ns.wait_for(&pods, &name, "main to exit 0", 2 * MINUTE, |p: Option<&Pod>| {
        p.and_then(|p| exit_code(p, "main")) == Some(0)
    })
    .await;

    // The problem: the app is done, the proxy runs on, and the Job never completes.
    ns.holds_for(
        &pods,
        &name,
        "the pod stays Running with its proxy up",
        Duration::from_secs(10),
        |p: &Pod| phase(p) == "Running" && is_running(p, containers::LAMEDUCK_PROXY),
    )
    .await;
    assert!(!job_complete(Some(&jobs.get("classic").await.unwrap())));

    // What lameduck's operator does by exec: shut the proxy down from inside its container.
    let mut exec = pods
        .exec(
            &name,
            ["lameduck-proxy", "shutdown"],
            &AttachParams::default().container(containers::LAMEDUCK_PROXY).stdout(true).stderr(true),
        )
        .await
        .expect("exec into the proxy container");
    let mut stdout = String::new();
    exec.stdout().unwrap().read_to_string(&mut stdout).await.unwrap();
    let status = exec.take_status().unwrap().await.expect("exec status");
    // The proxy exits as soon as it has answered, and the runtime then kills whatever else runs in
    // its container, so the exec'd command may end with 137 before it can exit by itself. What
    // counts is below: the proxy container's own exit code and the Job's completion.
    let killed_with_its_container =
        status.details.as_ref().and_then(|d| d.causes.as_ref()).is_some_and(|causes| {
            causes
                .iter()
                .any(|c| c.reason.as_deref() == Some("ExitCode") && c.message.as_deref() == Some("137"))
        });
    assert!(status.status.as_deref() == Some("Success") || killed_with_its_container, "{status:?}");
    if status.status.as_deref() == Some("Success") {
        assert!(stdout.contains("shutting down"), "exec printed {stdout:?}");
    }

    ns.wait_for(&jobs, "classic", "Job Complete after the proxy shut down", MINUTE, job_complete).await;
    let pod = pods.get(&name).await.unwrap();
    assert_eq!(phase(&pod), "Succeeded");
    assert_eq!(exit_code(&pod, containers::LAMEDUCK_PROXY), Some(0), "the proxy exits 0 after draining");
    ns.finish().await;
}

#[tokio::test]
async fn native_sidecar_job_completes_by_itself() {
    let ns = TestNamespace::new("native-sidecar").await;
    let jobs: Api<Job> = ns.api();
    ns.create::<Job>(job("native", 1, json!({"initContainers": [proxy_container(true)]}))).await;
    ns.wait_for(&jobs, "native", "Job Complete", 2 * MINUTE, job_complete).await;
    let pod = job_pod(&ns, "native").await;
    assert_eq!(phase(&pod), "Succeeded");
    assert_eq!(exit_code(&pod, "main"), Some(0));
    assert_eq!(exit_code(&pod, containers::LAMEDUCK_PROXY), Some(0), "the kubelet's SIGTERM drains it to 0");
    ns.finish().await;
}

/// A pod serving the test app, once it runs.
async fn serving_pod(ns: &TestNamespace, name: &str) -> Api<Pod> {
    let pods: Api<Pod> = ns.api();
    ns.create::<Pod>(json!({
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app",
                "image": images::TESTAPP,
                "imagePullPolicy": "IfNotPresent",
                "command": ["lameduck-testapp", "--listen", "0.0.0.0:8080"],
            }],
        },
    }))
    .await;
    ns.wait_for(&pods, name, "the app to run", 2 * MINUTE, |p: Option<&Pod>| {
        p.is_some_and(|p| is_running(p, "app"))
    })
    .await;
    pods
}

#[tokio::test]
async fn port_forward_reaches_the_pod_from_loopback() {
    let ns = TestNamespace::new("port-forward").await;
    let pods = serving_pod(&ns, "server").await;
    // The app may be running but not yet listening; retry the request briefly.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let mut forwarder = pods.portforward("server", &[8080]).await.expect("port-forward opened");
        let mut stream = forwarder.take_stream(8080).unwrap();
        stream.write_all(b"GET /peer HTTP/1.1\r\nHost: server\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer).await;
        drop(stream);
        let _ = forwarder.join().await;
        if answer.starts_with("HTTP/1.1 200") || tokio::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let peer = answer.rsplit("\r\n\r\n").next().unwrap();
    assert!(peer.starts_with("127.0.0.1:"), "the server saw {peer:?}, not a loopback peer");
    ns.finish().await;
}

#[tokio::test]
async fn ephemeral_container_can_be_added_and_runs() {
    let ns = TestNamespace::new("ephemeral").await;
    let pods = serving_pod(&ns, "target").await;
    let patch = json!({"spec": {"ephemeralContainers": [{
        "name": "debug-1",
        "image": images::TESTAPP,
        "imagePullPolicy": "IfNotPresent",
        "targetContainerName": "app",
        "command": ["lameduck-testapp", "--listen", "127.0.0.1:9999", "--exit-after", "0s", "--exit-code", "0"],
    }]}});
    pods.patch_subresource(
        "ephemeralcontainers",
        "target",
        &PatchParams::default(),
        &Patch::Strategic(patch),
    )
    .await
    .expect("ephemeral container added");
    let pod = ns
        .wait_for(
            &pods,
            "target",
            "the ephemeral container to run and exit",
            2 * MINUTE,
            |p: Option<&Pod>| p.and_then(|p| exit_code(p, "debug-1")).is_some(),
        )
        .await;
    assert_eq!(exit_code(&pod, "debug-1"), Some(0));
    assert!(is_running(&pod, "app"), "the target keeps running");
    ns.finish().await;
}
