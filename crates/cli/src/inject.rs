//! `lameduck inject`: sets up graceful shutdown in the pod templates of some manifests, the way
//! `linkerd inject` sets up Linkerd's proxy.
//!
//! Each pod template gets a proxy with the drain settings of the flags, through the same
//! `drain::apply` the admission webhook runs: an existing `linkerd-proxy` is adjusted, a template
//! Linkerd will inject at admission (`linkerd.io/inject: enabled`) gets Linkerd's annotations,
//! and any other template gets a `lameduck-proxy` container. With `--await` the app's command is
//! wrapped with `lameduck-await -S`, so the proxy stops when the app exits.
//!
//! Edits go through `carry::edit`, so fields the Kubernetes types do not know are kept. A
//! document that needs no change is written back as it was written, comments included, which
//! makes a second run over the output print the same bytes.

use std::{borrow::Cow, collections::BTreeMap};

use k8s_openapi::{
    api::core::v1::{
        Capabilities, Container, ContainerPort, EnvVar, HTTPGetAction, Pod, PodSpec, PodTemplateSpec, Probe,
        SeccompProfile, SecurityContext,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use lameduck_api::{
    DrainSpec, Enforce, GoDuration, ProxyProfile, ProxySpec, ShutdownPolicySpec, carry, drain,
    names::{annotations, containers, env, images, inject::POLICY, paths, ports},
    shape::PodShape,
    timing::{Severity, Timeline},
};
use serde_json::Value as Json;

use crate::{
    manifest::{self, Document, ManifestError, Origin, WorkloadKind},
    yaml,
};

/// The program `--await` wraps app commands with.
const AWAIT: &str = "lameduck-await";
/// Linkerd's equivalent: a command it already wraps is left as it is.
const LINKERD_AWAIT: &str = "linkerd-await";
/// Container names that are proxies, never apps to wrap.
const PROXIES: [&str; 3] = [containers::LAMEDUCK_PROXY, containers::LINKERD_PROXY, containers::ISTIO_PROXY];

/// What the flags ask for.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// The proxy's preStop wait.
    pub(crate) wait_before_exit: Option<GoDuration>,
    /// How long the proxy drains before it closes what is left.
    pub(crate) shutdown_grace_period: Option<GoDuration>,
    /// `None` leaves the proxy's own default (off) unless `--await` needs it on.
    pub(crate) enable_shutdown_endpoint: Option<bool>,
    /// Move a classic proxy to the init containers with `restartPolicy: Always`.
    pub(crate) native_sidecar: bool,
    /// The image of an added `lameduck-proxy`.
    pub(crate) proxy_image: String,
    /// Wrap app commands with `lameduck-await -S`.
    pub(crate) await_app: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            wait_before_exit: None,
            shutdown_grace_period: None,
            enable_shutdown_endpoint: None,
            native_sidecar: false,
            proxy_image: images::PROXY.to_owned(),
            await_app: false,
        }
    }
}

/// The result of a run.
#[derive(Debug, Default)]
pub(crate) struct Injected {
    /// Every document, changed or as written, in input order, separated by `---` lines.
    pub(crate) output: String,
    /// Things to look at, each starting with the document it is about.
    pub(crate) warnings: Vec<String>,
    /// How many documents were read.
    pub(crate) documents: usize,
    /// How many of them changed.
    pub(crate) changed: usize,
}

/// Injects every document of `inputs` (pairs of a source name, a path or `-`, and its text).
/// Every document of every input is read and checked before any is changed: bad input fails
/// the whole run.
pub(crate) fn inject(inputs: &[(String, String)], options: &Options) -> Result<Injected, ManifestError> {
    let mut documents = Vec::new();
    for (source, text) in inputs {
        documents.extend(manifest::documents(source, text)?);
    }
    // The same field checks as `lameduck check`, with the same messages.
    let mut checked = manifest::Manifests::default();
    for document in &documents {
        manifest::read(document.value.clone(), document.origin.clone(), &mut checked)?;
    }

    let mut injected = Injected { documents: documents.len(), ..Injected::default() };
    let mut texts = Vec::with_capacity(documents.len());
    for document in &documents {
        let text = inject_document(document, options, &mut injected.warnings)?;
        if matches!(text, Cow::Owned(_)) {
            injected.changed += 1;
        }
        texts.push(text);
    }
    for text in texts {
        // A document that starts on its marker line (`--- {kind: Pod}`) brings its own.
        if !injected.output.is_empty() && !text.starts_with("---") {
            injected.output.push_str("---\n");
        }
        injected.output.push_str(&text);
        if !text.ends_with('\n') {
            injected.output.push('\n');
        }
    }
    Ok(injected)
}

/// The document's new text, or its text as written (borrowed) when nothing changed.
fn inject_document<'d>(
    document: &'d Document,
    options: &Options,
    warnings: &mut Vec<String>,
) -> Result<Cow<'d, str>, ManifestError> {
    let kind = manifest::kind_of(&document.value);
    if kind != "List" && WorkloadKind::of(kind).is_none() {
        return Ok(Cow::Borrowed(&document.text));
    }
    let mut object = serde_json::to_value(&document.value).map_err(|e| {
        ManifestError::shape(document.origin.clone(), kind, manifest::name_of(&document.value), e.to_string())
    })?;
    let before = object.clone();
    inject_object(&mut object, &document.origin, options, warnings)?;
    if object == before {
        return Ok(Cow::Borrowed(&document.text));
    }
    // Comments inside a changed document are lost; the ones heading it are kept.
    Ok(Cow::Owned(format!("{}{}", document.preamble(), yaml::to_string(&object))))
}

fn str_at<'v>(value: &'v Json, keys: &[&str]) -> &'v str {
    keys.iter().try_fold(value, |at, key| at.get(key)).and_then(Json::as_str).unwrap_or_default()
}

/// Injects one object, or each item of a `List`.
fn inject_object(
    object: &mut Json,
    origin: &Origin,
    options: &Options,
    warnings: &mut Vec<String>,
) -> Result<(), ManifestError> {
    let kind = str_at(object, &["kind"]).to_owned();
    if kind == "List" {
        for (index, item) in
            object.get_mut("items").and_then(Json::as_array_mut).into_iter().flatten().enumerate()
        {
            let item_origin = Origin { item: Some(index + 1), ..origin.clone() };
            inject_object(item, &item_origin, options, warnings)?;
        }
        return Ok(());
    }
    let Some(workload) = WorkloadKind::of(&kind) else { return Ok(()) };
    let name = [&["metadata", "name"][..], &["metadata", "generateName"]]
        .iter()
        .map(|keys| str_at(object, keys))
        .find(|name| !name.is_empty())
        .unwrap_or("<unnamed>")
        .to_owned();
    // `manifest::read` has checked that the template is there.
    let Some(template) = workload.template_path().iter().try_fold(object, |at, key| at.get_mut(*key)) else {
        return Ok(());
    };
    let (mut edited, notes) = carry::edit::<PodTemplateSpec, _>(template, |t| inject_template(t, options))
        .map_err(|e| ManifestError::shape(origin.clone(), &kind, &name, e.to_string()))?;
    name_new_items_first(&mut edited, Some(template));
    *template = edited;
    warnings.extend(notes.into_iter().map(|note| format!("{origin}: {kind} {name:?}: {note}")));
    Ok(())
}

/// A named item new to its list (the added proxy, a container moved to the init containers, a
/// volume) comes from the typed side, whose keys are in alphabetical order: its `name` goes
/// first, where people and kubectl write it. Items that were there keep their order.
fn name_new_items_first(after: &mut Json, before: Option<&Json>) {
    match after {
        Json::Object(fields) => {
            for (key, value) in fields.iter_mut() {
                name_new_items_first(value, before.and_then(|b| b.get(key)));
            }
        }
        Json::Array(items) => {
            for item in items {
                let Some(name) = item.get("name").and_then(Json::as_str) else { continue };
                let prior = before.and_then(Json::as_array).and_then(|list| {
                    list.iter().find(|b| b.get("name").and_then(Json::as_str) == Some(name))
                });
                if let (None, Json::Object(fields)) = (prior, &mut *item)
                    && let Some(name) = fields.shift_remove("name")
                {
                    let mut reordered = serde_json::Map::with_capacity(fields.len() + 1);
                    reordered.insert("name".to_owned(), name);
                    reordered.append(fields);
                    *fields = reordered;
                }
                name_new_items_first(item, prior);
            }
        }
        _ => {}
    }
}

/// Where a template's proxy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proxy {
    /// A container of this profile, classic or native sidecar.
    Present(ProxyProfile),
    /// None yet, but Linkerd adds one at admission: its annotations carry the settings.
    LinkerdAtAdmission,
    /// Istio's sidecar: inject adds no second proxy and leaves the template alone.
    Istio,
    /// None: inject adds a `lameduck-proxy`.
    Missing,
}

/// Finds a proxy where `drain::apply` looks for it: in `containers`, or in `initContainers` as
/// a native sidecar.
fn find_proxy(spec: &PodSpec, pod_annotations: Option<&BTreeMap<String, String>>) -> Proxy {
    let shape = PodShape::new(spec, pod_annotations, false);
    let has = |name: &str| shape.container(name).is_some();
    if has(containers::LINKERD_PROXY) {
        Proxy::Present(ProxyProfile::Linkerd)
    } else if has(containers::LAMEDUCK_PROXY) {
        Proxy::Present(ProxyProfile::Lameduck)
    } else if has(containers::ISTIO_PROXY) {
        Proxy::Istio
    } else if pod_annotations.and_then(|a| a.get(annotations::LINKERD_INJECT)).map(String::as_str)
        == Some("enabled")
    {
        Proxy::LinkerdAtAdmission
    } else {
        Proxy::Missing
    }
}

/// Sets up one pod template; returns warnings about it.
fn inject_template(template: &mut PodTemplateSpec, options: &Options) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(spec) = template.spec.as_mut() else { return notes };
    let proxy = find_proxy(spec, template.metadata.as_ref().and_then(|m| m.annotations.as_ref()));
    let profile = match proxy {
        Proxy::Present(profile) => profile,
        Proxy::LinkerdAtAdmission => ProxyProfile::Linkerd,
        Proxy::Missing => ProxyProfile::Lameduck,
        Proxy::Istio => {
            notes.push(format!(
                "has an {:?} container: left as it is (no second proxy is added; a ShutdownPolicy \
                 with profile Istio sets Istio's drain up)",
                containers::ISTIO_PROXY
            ));
            return notes;
        }
    };

    let awaited = if options.await_app { wrap_with_await(spec, &mut notes) } else { Vec::new() };
    // `lameduck-await -S` stops the proxy through its /shutdown endpoint, which is off by default.
    let enable_shutdown_endpoint = match options.enable_shutdown_endpoint {
        Some(false) if !awaited.is_empty() => {
            notes.push(format!(
                "--enable-shutdown-endpoint=false: the proxy's /shutdown answers 404, so {AWAIT} -S in \
                 {} cannot stop it when the app exits",
                containers_named(&awaited)
            ));
            Some(false)
        }
        None if !awaited.is_empty() => Some(true),
        explicit => explicit,
    };
    let policy = ShutdownPolicySpec {
        proxy: ProxySpec { profile, ..ProxySpec::default() },
        drain: DrainSpec {
            wait_before_exit: options.wait_before_exit,
            shutdown_grace_period: options.shutdown_grace_period,
            enable_shutdown_endpoint,
            native_sidecar: options.native_sidecar,
            enforce: Enforce::Warn,
        },
        ..ShutdownPolicySpec::default()
    };

    if proxy == Proxy::LinkerdAtAdmission {
        annotate_for_linkerd(template, &policy, &mut notes);
        return notes;
    }
    if proxy == Proxy::Missing {
        // Appended as a classic sidecar; `drain::apply` moves it when `--native-sidecar` asks.
        let container = lameduck_proxy(spec, &options.proxy_image);
        spec.containers.push(container);
    }
    let mut pod = Pod {
        metadata: template.metadata.take().unwrap_or_default(),
        spec: template.spec.take(),
        status: None,
    };
    match drain::apply(&mut pod, POLICY, &policy) {
        Ok(applied) => {
            // drain::apply names the policy, which here is the flags: the prefix says nothing.
            let prefix = format!("ShutdownPolicy {POLICY}: ");
            let unprefixed = |w: String| w.strip_prefix(&prefix).map(str::to_owned).unwrap_or(w);
            notes.extend(applied.warnings.into_iter().map(unprefixed));
        }
        // `enforce: Warn` never rejects; should that change, the reason is still reported.
        Err(rejected) => notes.push(rejected.to_string()),
    }
    template.metadata = Some(pod.metadata);
    template.spec = pod.spec;
    notes
}

fn containers_named(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    format!("{} {}", if names.len() == 1 { "container" } else { "containers" }, quoted.join(", "))
}

/// Whether `program` (a path or a bare name) is lameduck's or Linkerd's await.
fn is_await(program: &str) -> bool {
    let base = program.rsplit('/').next().unwrap_or(program);
    base == AWAIT || base == LINKERD_AWAIT
}

/// Wraps the command of every app container with `lameduck-await -S --`; returns the app
/// containers that run under an await afterwards, wrapped now or before.
fn wrap_with_await(spec: &mut PodSpec, notes: &mut Vec<String>) -> Vec<String> {
    let mut awaited = Vec::new();
    for container in spec.containers.iter_mut().filter(|c| !PROXIES.contains(&c.name.as_str())) {
        match container.command.as_mut().filter(|command| !command.is_empty()) {
            Some(command) => {
                if !is_await(&command[0]) {
                    command.splice(0..0, [AWAIT, "-S", "--"].map(str::to_owned));
                }
                awaited.push(container.name.clone());
            }
            None => notes.push(format!(
                "container {:?} has no command, so its image's entrypoint is not known here: not \
                 wrapped with {AWAIT}; set its command to have it wrapped",
                container.name
            )),
        }
    }
    awaited
}

fn http_probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(i32::from(ports::ADMIN)),
            ..HTTPGetAction::default()
        }),
        ..Probe::default()
    }
}

/// A `lameduck-proxy` container that forwards to the first port of the first container.
fn lameduck_proxy(spec: &PodSpec, image: &str) -> Container {
    let app_port = spec
        .containers
        .first()
        .and_then(|c| c.ports.as_ref())
        .and_then(|ports| ports.first())
        .map_or(i32::from(ports::APP), |p| p.container_port);
    let port = |name: &str, number: u16| ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(number),
        ..ContainerPort::default()
    };
    Container {
        name: containers::LAMEDUCK_PROXY.to_owned(),
        image: Some(image.to_owned()),
        // Port names are at most 15 characters.
        ports: Some(vec![port("lameduck-proxy", ports::INBOUND), port("lameduck-admin", ports::ADMIN)]),
        env: Some(vec![EnvVar {
            name: env::PROXY_INBOUND_TARGET.to_owned(),
            value: Some(format!("127.0.0.1:{app_port}")),
            value_from: None,
        }]),
        readiness_probe: Some(http_probe(paths::READY)),
        liveness_probe: Some(http_probe(paths::LIVE)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), add: None }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// Puts the drain settings into the annotations Linkerd's injector reads, for a template Linkerd
/// adds its proxy to at admission, then runs the timing rules as `drain::apply` does.
fn annotate_for_linkerd(
    template: &mut PodTemplateSpec,
    policy: &ShutdownPolicySpec,
    notes: &mut Vec<String>,
) {
    let drain = &policy.drain;
    let metadata = template.metadata.get_or_insert_with(Default::default);
    let pod_annotations = metadata.annotations.get_or_insert_with(BTreeMap::new);
    // Read as `lameduck check` reads them.
    let truthy = |key: &str| {
        pod_annotations.get(key).is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "enabled")
    };
    let native = drain.native_sidecar
        || truthy(annotations::LINKERD_NATIVE_SIDECAR)
        || truthy(annotations::LINKERD_NATIVE_SIDECAR_ALPHA);
    let mut set = |key: &str, value: String| pod_annotations.insert(key.to_owned(), value);
    set(annotations::POLICY, POLICY.to_owned());
    // As `drain::apply` drops a native sidecar's preStop: the kubelet stops it after the app.
    if let Some(wait) = drain.wait_before_exit.filter(|_| !native) {
        set(annotations::LINKERD_WAIT_BEFORE_EXIT_SECONDS, wait.as_secs_ceil().to_string());
    }
    if let Some(grace) = drain.shutdown_grace_period {
        set(annotations::LINKERD_SHUTDOWN_GRACE_PERIOD, grace.to_string());
    }
    if let Some(enabled) = drain.enable_shutdown_endpoint {
        set(annotations::LINKERD_ADMIN_SHUTDOWN, if enabled { "enabled" } else { "disabled" }.to_owned());
    }
    if drain.native_sidecar {
        set(annotations::LINKERD_NATIVE_SIDECAR, "true".to_owned());
    }

    let (Some(spec), Some(pod_annotations)) = (template.spec.as_ref(), metadata.annotations.as_ref()) else {
        return;
    };
    let shape = PodShape::new(spec, Some(pod_annotations), false);
    for finding in Timeline::of(&shape, Some(policy)).findings() {
        if finding.severity == Severity::Error {
            notes.push(format!("{}: {}", finding.rule.as_str(), finding.message));
        }
    }
}

#[cfg(test)]
mod tests;
