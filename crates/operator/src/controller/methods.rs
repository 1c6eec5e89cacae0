//! The four ways of asking a proxy to shut down. Each makes one call and reports what the call
//! said; whether the proxy then exits is read from the pod's status by `decide`.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::{
    api::core::v1::{Namespace, Pod},
    apimachinery::pkg::apis::meta::v1::Status,
};
use kube::{
    Api, ResourceExt,
    api::{AttachParams, Patch, PatchParams},
};
use lameduck_api::{
    ResolvedProxy, ShutdownMethod,
    admin::{EXIT_ENDPOINT_DISABLED, ShutdownAnswer},
};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{
    controller::attempts::{Attempt, Outcome},
    controller::ephemeral::{self, ENFORCE_LABEL, PodSecurity},
};

/// Events carry at most 1 kB; outputs are cut well below that.
const MAX_DETAIL: usize = 512;
/// What is kept of an exec's output or a `/shutdown` answer: a pod can write without end, and
/// the operator keeps only what an event can show.
const MAX_READ: usize = 4096;

/// Reads `input` to its end, keeping the first [`MAX_READ`] bytes and dropping the rest as it
/// comes (the writer must not block on a full pipe, nor the operator hold what it sends).
pub async fn read_bounded(mut input: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match input.read(&mut chunk).await {
            // A read error only shortens the output shown in the event.
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = MAX_READ.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

/// Collects a response body, keeping the first [`MAX_READ`] bytes and dropping the rest.
async fn collect_bounded<B>(mut body: B) -> Vec<u8>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let mut kept = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            let room = MAX_READ.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    kept
}

/// Exit statuses of a process killed by SIGKILL or SIGTERM. An exec'd shutdown command dies this
/// way when the proxy it stopped was its container's PID 1: the runtime stops the container, and
/// everything in it, as soon as the proxy exits.
const KILLED_WITH_CONTAINER: [i32; 2] = [137, 143];

/// What one call came to: the outcome to record (`None`: unknown) and a line for the event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallResult {
    pub outcome: Option<Outcome>,
    pub detail: String,
}

impl CallResult {
    fn sent(detail: String) -> Self {
        Self { outcome: Some(Outcome::Sent), detail }
    }

    fn failed(message: String) -> Self {
        let detail = cut(&message);
        Self { outcome: Some(Outcome::failed(&detail)), detail }
    }

    fn disabled(detail: String) -> Self {
        Self { outcome: Some(Outcome::EndpointDisabled), detail }
    }

    /// The outcome's label in `lameduck_shutdown_attempts_total`.
    pub fn label(&self) -> &'static str {
        match self.outcome {
            Some(Outcome::Sent) => "sent",
            Some(Outcome::EndpointDisabled) => "endpoint_disabled",
            Some(Outcome::Failed { .. }) => "failed",
            None => "unknown",
        }
    }
}

/// Output and errors quoted in an event, bounded.
fn cut(text: &str) -> String {
    crate::events::shorten(text, MAX_DETAIL)
}

/// Everything a call needs.
#[derive(Debug)]
pub struct Call<'a> {
    pub pods: &'a Api<Pod>,
    /// Read for a namespace's Pod Security level, when a `Signal` container needs it.
    pub namespaces: &'a Api<Namespace>,
    pub pod: &'a Pod,
    pub proxy: &'a ResolvedProxy,
    /// The policy field the sidecar came from (`spec.proxy`, `spec.sidecars[1]`), for messages.
    pub field: &'a str,
    pub attempt: &'a Attempt,
    /// Image of the ephemeral containers.
    pub image: &'a str,
    pub timeout: Duration,
}

/// Makes the attempt's call, within its timeout.
pub async fn call(call: Call<'_>) -> CallResult {
    let work = async {
        match call.attempt.method {
            ShutdownMethod::Exec => exec(&call).await,
            ShutdownMethod::PortForward => port_forward(&call).await,
            ShutdownMethod::EphemeralContainer | ShutdownMethod::Signal => add_container(&call).await,
        }
    };
    match tokio::time::timeout(call.timeout, work).await {
        Ok(result) => result,
        Err(_) => CallResult::failed(format!(
            "{} gave no answer within {}s",
            call.attempt.method,
            call.timeout.as_secs_f64()
        )),
    }
}

async fn exec(call: &Call<'_>) -> CallResult {
    let Some(command) = call.proxy.exec_command.clone() else {
        return CallResult::failed(format!(
            "profile {:?} has no exec command; set spec.proxy.execCommand",
            call.proxy.profile
        ));
    };
    let params = AttachParams::default()
        .container(call.proxy.container_name.clone())
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let mut process = match call.pods.exec(&call.pod.name_any(), command.clone(), &params).await {
        Ok(process) => process,
        Err(err) => return CallResult::failed(format!("exec {command:?}: {err}")),
    };
    let (mut stdout, mut stderr) = (process.stdout(), process.stderr());
    let status = process.take_status();
    let read = |half: Option<tokio::io::ReadHalf<tokio::io::SimplexStream>>| async move {
        let text = match half {
            Some(half) => read_bounded(half).await,
            None => Vec::new(),
        };
        String::from_utf8_lossy(&text).into_owned()
    };
    let (out, err, status) = tokio::join!(read(stdout.take()), read(stderr.take()), async {
        match status {
            Some(status) => status.await,
            None => None,
        }
    });
    // The connection's end is all that is left; its errors say nothing the status did not.
    let _ = process.join().await;
    let output = cut(&format!("{out}{err}"));
    exec_result(status.as_ref(), output)
}

/// Reads an exec's final status. Pure, for tests.
fn exec_result(status: Option<&Status>, output: String) -> CallResult {
    let Some(status) = status else {
        // The stream ended without a status: the container went away mid-call, as it does when
        // the proxy exits. Whether it did is for the pod's status to say.
        return CallResult {
            outcome: None,
            detail: format!("exec ended without a status; output: {output}"),
        };
    };
    if status.status.as_deref() == Some("Success") {
        return CallResult::sent(format!("exec exited 0: {output}"));
    }
    let code = status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|causes| causes.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.as_deref())
        .and_then(|m| m.trim().parse::<i32>().ok());
    match code {
        Some(code) if KILLED_WITH_CONTAINER.contains(&code) => {
            CallResult::sent(format!("exec was killed (exit {code}) as its container stopped: {output}"))
        }
        Some(EXIT_ENDPOINT_DISABLED) => {
            CallResult::disabled(format!("exec exited {EXIT_ENDPOINT_DISABLED}: {output}"))
        }
        Some(code) => CallResult::failed(format!("exec exited {code}: {output}")),
        None => CallResult::failed(format!(
            "exec failed: {}: {output}",
            status.message.as_deref().unwrap_or("no message")
        )),
    }
}

async fn port_forward(call: &Call<'_>) -> CallResult {
    let port = call.proxy.admin_port;
    // The CRD schema admits only valid paths, but a policy stored before that rule, or with the
    // webhook and the schema bypassed, still reaches here: it is the attempt's error, never a panic.
    let request = match Request::builder()
        .method(Method::POST)
        .uri(call.proxy.shutdown_path.as_str())
        .header(header::HOST, format!("127.0.0.1:{port}"))
        .body(Empty::<Bytes>::new())
    {
        Ok(request) => request,
        Err(err) => {
            return CallResult::failed(format!(
                "{}.shutdownPath {:?} is not a URI path: {err}",
                call.field, call.proxy.shutdown_path
            ));
        }
    };
    let mut forwarder = match call.pods.portforward(&call.pod.name_any(), &[port]).await {
        Ok(forwarder) => forwarder,
        Err(err) => return CallResult::failed(format!("port-forward to {port}: {err}")),
    };
    let Some(stream) = forwarder.take_stream(port) else {
        return CallResult::failed(format!("port-forward to {port}: no stream"));
    };
    let port_error = forwarder.take_error(port);
    let exchange = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = collect_bounded(response.into_body()).await;
        Ok::<_, hyper::Error>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    let result = tokio::select! {
        result = exchange => result.map_err(|err| err.to_string()),
        Some(Some(message)) = async { match port_error { Some(e) => Some(e.await), None => None } } => Err(message),
    };
    forwarder.abort();
    match result {
        Ok((status, body)) => {
            let answer = ShutdownAnswer::from_status(status);
            let detail = format!(
                "POST {} through port-forward to {port}: {status} {}",
                call.proxy.shutdown_path,
                cut(&body)
            );
            match answer {
                ShutdownAnswer::Accepted => CallResult::sent(detail),
                ShutdownAnswer::Disabled => CallResult::disabled(format!("{detail}; {}", answer.describe())),
                _ => CallResult::failed(format!("{detail}; {}", answer.describe())),
            }
        }
        Err(message) => CallResult::failed(format!("port-forward to {port}: {message}")),
    }
}

/// The Pod Security level of the pod's namespace; when it cannot be read (no `get namespaces`
/// in a namespaced install), the strictest.
async fn pod_security(call: &Call<'_>) -> PodSecurity {
    let namespace = call.pod.metadata.namespace.as_deref().unwrap_or("default");
    match call.namespaces.get(namespace).await {
        Ok(ns) => PodSecurity::from_label(
            ns.metadata.labels.as_ref().and_then(|l| l.get(ENFORCE_LABEL)).map(String::as_str),
        ),
        Err(err) => {
            tracing::debug!(namespace, error = %err, "cannot read the namespace's Pod Security level");
            PodSecurity::Restricted
        }
    }
}

async fn add_container(call: &Call<'_>) -> CallResult {
    // Only a signal needs the proxy's user; the loopback container runs as its image's.
    let signal = if call.attempt.method == ShutdownMethod::Signal {
        let proxy = &call.proxy.container_name;
        let level = if ephemeral::needs_pod_security(call.pod, proxy) {
            Some(pod_security(call).await)
        } else {
            None
        };
        match ephemeral::signal_as(call.pod, proxy, level) {
            Ok(signal) => Some(signal),
            Err(message) => return CallResult::failed(message),
        }
    } else {
        None
    };
    let Some(container) = ephemeral::shutdown_container(call.attempt, call.proxy, call.image, signal) else {
        return CallResult::failed(format!("{} adds no container", call.attempt.method));
    };
    let name = container.name.clone();
    let patch = json!({ "spec": { "ephemeralContainers": [container] } });
    let added = call
        .pods
        .patch_subresource(
            "ephemeralcontainers",
            &call.pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await;
    match added {
        Ok(_) => CallResult::sent(format!("added ephemeral container {name} ({})", call.image)),
        // Names are unique per attempt and attempts are never repeated; a duplicate means an
        // earlier, interrupted write of this same attempt got through.
        Err(kube::Error::Api(status)) if status.message.contains("Duplicate value") => {
            CallResult::sent(format!("ephemeral container {name} was already added"))
        }
        Err(err) => CallResult::failed(format!("adding ephemeral container {name}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(yaml: &str) -> Status {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn exec_statuses_map_to_outcomes() {
        let ok = status("{status: Success}");
        assert_eq!(exec_result(Some(&ok), "done".into()).outcome, Some(Outcome::Sent));

        let exit = |code: &str| {
            status(&format!(
                "{{status: Failure, reason: NonZeroExitCode, message: 'command terminated with non-zero exit code',
                  details: {{causes: [{{reason: ExitCode, message: '{code}'}}]}}}}"
            ))
        };
        assert_eq!(exec_result(Some(&exit("137")), String::new()).outcome, Some(Outcome::Sent));
        assert_eq!(exec_result(Some(&exit("3")), String::new()).outcome, Some(Outcome::EndpointDisabled));
        let failed = exec_result(Some(&exit("1")), "error: cannot reach".into());
        assert!(
            matches!(&failed.outcome, Some(Outcome::Failed { message }) if message.contains("cannot reach"))
        );
        assert_eq!(failed.label(), "failed");
        assert_eq!(exec_result(None, String::new()).outcome, None);

        let no_code = status("{status: Failure, message: 'container not found'}");
        let result = exec_result(Some(&no_code), String::new());
        assert!(result.detail.contains("container not found"), "{}", result.detail);
    }

    #[tokio::test]
    async fn reads_keep_a_few_kib_of_an_endless_output() {
        // 64 MiB through a small pipe: the reader keeps draining (the writer never blocks) and
        // keeps only MAX_READ bytes.
        let (reader, mut writer) = tokio::io::simplex(64 * 1024);
        let write = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let block = vec![b'y'; 1 << 20];
            for _ in 0..64 {
                writer.write_all(&block).await.unwrap();
            }
            writer.shutdown().await.unwrap();
        });
        let kept = read_bounded(reader).await;
        write.await.unwrap();
        assert_eq!(kept.len(), MAX_READ);

        let body = http_body_util::StreamBody::new(futures::stream::iter((0..1000).map(|_| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![b'x'; 8192])))
        })));
        assert_eq!(collect_bounded(body).await.len(), MAX_READ);
    }

    #[test]
    fn long_outputs_are_cut_on_a_character_boundary() {
        let long = "é".repeat(600);
        let cut = cut(&long);
        assert!(cut.len() <= MAX_DETAIL && cut.ends_with("..."), "{}", cut.len());
    }
}
