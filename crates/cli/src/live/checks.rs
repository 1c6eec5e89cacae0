//! The checks of `lameduck check --cluster`: pure functions from [`Facts`] to sections of
//! results, each with a message that names what is wrong and a hint that says how to fix it.

use k8s_openapi::api::core::v1::Pod;
use kube::{Resource, ResourceExt};
use lameduck_api::{
    ShutdownMethod, ShutdownPolicy, build,
    names::{accounts, annotations, labels, shutdown_result},
    selection,
    shape::{PodShape, known_sidecar, terminated},
    timing::Severity,
};
use serde::Serialize;

use super::facts::{
    Admission, Cluster, Facts, Fetched, MethodRbac, Need, Operator, Probe, Purpose, ServiceState,
    WebhookConfiguration, Workloads,
};
use crate::{
    check,
    manifest::{self, Manifests, Origin},
    version::operator_selector,
};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Outcome {
    Pass,
    Warn,
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Check {
    /// What is checked, phrased as what should hold.
    pub(crate) description: String,
    pub(crate) result: Outcome,
    /// What was found; for a warning or a failure, what it means.
    pub(crate) message: String,
    /// How to fix it (warnings and failures).
    pub(crate) hint: Option<String>,
}

impl Check {
    fn pass(description: impl Into<String>, message: impl Into<String>) -> Self {
        Self { description: description.into(), result: Outcome::Pass, message: message.into(), hint: None }
    }

    fn warn(description: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            result: Outcome::Warn,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    fn fail(description: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            result: Outcome::Fail,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

/// A group of checks under one header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Section {
    pub(crate) name: String,
    pub(crate) checks: Vec<Check>,
}

impl Section {
    fn new(name: impl Into<String>, checks: Vec<Check>) -> Self {
        Self { name: name.into(), checks }
    }
}

/// Every section, and whether the run succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Report {
    pub(crate) sections: Vec<Section>,
    /// No failure (and, with `--strict`, no warning).
    pub(crate) success: bool,
}

impl Report {
    pub(crate) fn new(sections: Vec<Section>, strict: bool) -> Self {
        let worst = sections.iter().flat_map(|s| &s.checks).map(|c| c.result).max().unwrap_or(Outcome::Pass);
        let success = match worst {
            Outcome::Pass => true,
            Outcome::Warn => !strict,
            Outcome::Fail => false,
        };
        Self { sections, success }
    }

    /// How many checks came out `outcome`.
    pub(crate) fn count(&self, outcome: Outcome) -> usize {
        self.sections.iter().flat_map(|s| &s.checks).filter(|c| c.result == outcome).count()
    }
}

/// The oldest kubelet that runs native sidecars (restartPolicy: Always init containers) by
/// default: beta and on from 1.29, GA in 1.33.
pub(crate) const NATIVE_SIDECARS: (u32, u32) = (1, 29);
/// How many pods or workloads one section lists before it counts the rest.
pub(crate) const MAX_LISTED: usize = 20;
/// How many names one message lists before it counts the rest.
const MAX_NAMES: usize = 10;

/// Where the chart is, in the hints (this repository's layout; users pass their own copy).
const CHART: &str = "deploy/lameduck";

/// Every check over `facts`, in sections.
pub(crate) fn sections(facts: &Facts) -> Vec<Section> {
    let mut out = vec![Section::new("Kubernetes API", kubernetes(facts))];
    let Some(cluster) = &facts.cluster else { return out };
    out.push(Section::new("CRD", crd(cluster)));
    out.extend(operators(cluster));
    out.push(Section::new("Workloads", workloads(cluster)));
    out.push(Section::new("Stuck pods", stuck_pods(cluster)));
    out
}

/// `a, b, c and 4 more`.
fn names(list: &[String]) -> String {
    let shown = list.iter().take(MAX_NAMES).cloned().collect::<Vec<_>>().join(", ");
    match list.len().saturating_sub(MAX_NAMES) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `(1, 29)` from `v1.29.3`, `v1.29.1-gke.1589017`, `1.30+`.
pub(crate) fn minor_version(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.strip_prefix('v').unwrap_or(version).split(['.', '-', '+']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn kubernetes(facts: &Facts) -> Vec<Check> {
    const REACH: &str = "can reach the API server";
    let mut checks = vec![match &facts.api {
        Ok(version) => Check::pass(REACH, format!("Kubernetes {version}")),
        Err(err) => Check::fail(
            REACH,
            err.clone(),
            "check --kubeconfig and --context (read as kubectl reads them), and that `kubectl version` answers",
        ),
    }];
    if let Some(cluster) = &facts.cluster {
        checks.push(kubelets(&cluster.nodes));
    }
    checks
}

fn kubelets(nodes: &Fetched<Vec<super::facts::NodeVersion>>) -> Check {
    const WHAT: &str = "nodes run native sidecars (kubelet v1.29 or newer)";
    let nodes = match nodes {
        Ok(nodes) => nodes,
        Err(err) => {
            return Check::fail(WHAT, format!("cannot list nodes: {err}"), "this check needs `list nodes`");
        }
    };
    let mut old = Vec::new();
    let mut unknown = Vec::new();
    for node in nodes {
        match minor_version(&node.kubelet) {
            Some(version) if version < NATIVE_SIDECARS => {
                old.push(format!("{} ({})", node.name, node.kubelet))
            }
            Some(_) => {}
            None => unknown.push(node.name.clone()),
        }
    }
    let (major, minor) = NATIVE_SIDECARS;
    if !old.is_empty() {
        return Check::warn(
            WHAT,
            format!(
                "a kubelet older than v{major}.{minor} on {} of {} nodes: {}. There, native sidecars \
                 (init containers with restartPolicy: Always) are off, so a run-to-completion pod \
                 with a classic sidecar finishes only when lameduck's operator (or lameduck-await -S) stops it",
                old.len(),
                nodes.len(),
                names(&old)
            ),
            format!(
                "upgrade those nodes to Kubernetes {major}.{minor} or newer to use native sidecars \
                 (`lameduck inject --native-sidecar`, a policy's drain.nativeSidecar); until then keep the operator running"
            ),
        );
    }
    let mut message =
        format!("{} at v{major}.{minor} or newer", plural(nodes.len() - unknown.len(), "node", "nodes"));
    if !unknown.is_empty() {
        message.push_str(&format!(
            "; {} no kubelet version: {}",
            plural(unknown.len(), "reports", "report"),
            names(&unknown)
        ));
    }
    Check::pass(WHAT, message)
}

fn crd(cluster: &Cluster) -> Vec<Check> {
    const INSTALLED: &str = "the ShutdownPolicy CRD is installed";
    let hint = "lameduck crds | kubectl apply -f -   (or install the chart, which carries it)";
    let crd = match &cluster.crd {
        Ok(Some(crd)) => crd,
        Ok(None) => {
            return vec![Check::fail(
                INSTALLED,
                "not installed: ShutdownPolicies cannot be created and the operator cannot start",
                hint,
            )];
        }
        Err(err) => return vec![Check::fail(INSTALLED, format!("cannot read it: {err}"), hint)],
    };
    let matches = format!("the CRD's version matches this CLI's ({})", build::VERSION);
    let hint = "apply the CRD of the operator's version: `lameduck crds | kubectl apply -f -` with that \
                version's CLI (helm installs a chart's CRD only on first install)";
    let version = match crd.version.as_deref() {
        Some(version) if version == build::VERSION => Check::pass(&matches, version),
        Some(version) => Check::warn(
            &matches,
            format!(
                "the CRD is lameduck {version}'s, this CLI is {}: fields one knows may be missing from the other",
                build::VERSION
            ),
            hint,
        ),
        None => Check::warn(
            &matches,
            format!(
                "the CRD has no {} annotation: it was installed from a lameduck older than this CLI",
                annotations::CRD_VERSION
            ),
            hint,
        ),
    };
    vec![Check::pass(INSTALLED, crd.name.clone()), version]
}

/// `helm upgrade RELEASE deploy/lameduck -n NS --reuse-values [--set VALUE]`.
fn helm_upgrade(op: &Operator, set: Option<&str>) -> String {
    let release = op.release.as_deref().unwrap_or("RELEASE");
    let set = set.map(|s| format!(" --set {s}")).unwrap_or_default();
    format!("helm upgrade {release} {CHART} -n {} --reuse-values{set}", op.namespace)
}

fn logs_hint(op: &Operator) -> String {
    format!(
        "kubectl -n {ns} get pods -l {label}={release}; kubectl -n {ns} logs deploy/{name}",
        label = labels::INSTANCE,
        ns = op.namespace,
        release = op.release.as_deref().unwrap_or("RELEASE"),
        name = op.name
    )
}

fn operators(cluster: &Cluster) -> Vec<Section> {
    const FOUND: &str = "the operator's Deployment is there";
    let operators = match &cluster.operators {
        Ok(operators) => operators,
        Err(err) => {
            let check = Check::fail(
                FOUND,
                format!("cannot list Deployments: {err}"),
                "this check needs `list deployments`",
            );
            return vec![Section::new("Operator", vec![check])];
        }
    };
    if operators.is_empty() {
        let place = cluster
            .operator_namespace
            .as_deref()
            .map_or_else(|| "in any namespace".to_owned(), |ns| format!("in namespace {ns}"));
        let check = Check::fail(
            FOUND,
            format!(
                "no Deployment labelled {} {place}: nothing finishes stuck pods or applies drain settings",
                operator_selector()
            ),
            format!("helm install lameduck {CHART} --namespace lameduck-system --create-namespace"),
        );
        return vec![Section::new("Operator", vec![check])];
    }
    let mut sections = Vec::new();
    for op in operators {
        let suffix = if operators.len() > 1 { format!(" {}", op.id()) } else { String::new() };
        sections.push(Section::new(format!("Operator{suffix}"), operator(op)));
        sections.push(Section::new(format!("Webhooks{suffix}"), webhooks(op, cluster)));
        sections.push(Section::new(format!("Permissions{suffix}"), permissions(op, cluster)));
    }
    sections
}

fn operator(op: &Operator) -> Vec<Check> {
    let release = op.release.as_deref().map(|r| format!(", Helm release {r}")).unwrap_or_default();
    let mut checks = vec![Check::pass("the operator's Deployment is there", format!("{}{release}", op.id()))];

    let matches = format!("the operator's version matches this CLI's ({})", build::VERSION);
    let hint = "use the CLI of the operator's version, or upgrade the chart";
    checks.push(match op.version.as_deref() {
        Some(version) if version == build::VERSION => Check::pass(&matches, version),
        Some(version) => {
            Check::warn(&matches, format!("the operator is {version}, this CLI {}", build::VERSION), hint)
        }
        None => Check::warn(&matches, "the Deployment has no app.kubernetes.io/version label", hint),
    });

    const READY: &str = "the operator's replicas are ready";
    checks.push(if op.replicas == 0 {
        Check::fail(
            READY,
            "scaled to 0 replicas: nothing finishes stuck pods, and the webhook does not answer",
            format!("kubectl -n {} scale deploy/{} --replicas=2", op.namespace, op.name),
        )
    } else if op.ready_replicas == 0 {
        Check::fail(
            READY,
            format!(
                "0 of {} ready: nothing finishes stuck pods, and the webhook does not answer",
                op.replicas
            ),
            logs_hint(op),
        )
    } else if op.ready_replicas < op.replicas {
        Check::warn(READY, format!("{} of {} ready", op.ready_replicas, op.replicas), logs_hint(op))
    } else {
        Check::pass(READY, format!("{}/{} ready", op.ready_replicas, op.replicas))
    });
    checks.push(leader(op));
    checks
}

fn leader(op: &Operator) -> Check {
    let settings = &op.settings;
    let what = format!("a replica leads (Lease {}/{})", settings.lease_namespace, settings.lease_name);
    let lease = match &op.lease {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            return Check::fail(
                what,
                "the Lease does not exist: no replica has ever led, so none acts",
                logs_hint(op),
            );
        }
        Err(err) => {
            return Check::fail(
                what,
                format!("cannot read the Lease: {err}"),
                "this check needs `get leases` there",
            );
        }
    };
    let Some(holder) = lease.holder.as_deref().filter(|h| !h.is_empty()) else {
        return Check::fail(
            what,
            "nobody holds the Lease: no replica leads, so no stuck pod is finished and no policy status is written",
            logs_hint(op),
        );
    };
    let duration = i64::from(lease.duration_seconds.unwrap_or(15));
    let Some(renewed) = lease.renewed else {
        return Check::fail(what, format!("{holder} holds the Lease but it has no renewTime"), logs_hint(op));
    };
    let age = lease.read_at.duration_since(renewed).as_secs();
    if age > duration {
        return Check::fail(
            what,
            format!(
                "{holder} holds the Lease but last renewed it {age}s ago, longer than it lasts ({duration}s): \
                 the leader stopped renewing, and no replica took over"
            ),
            logs_hint(op),
        );
    }
    Check::pass(what, format!("{holder}, renewed {}s ago (the Lease lasts {duration}s)", age.max(0)))
}

/// The policies in the namespaces `op` watches.
fn policies_of<'c>(op: &Operator, cluster: &'c Cluster) -> Vec<&'c ShutdownPolicy> {
    let scope = op.settings.scope();
    let policies = cluster.policies.as_ref().map(Vec::as_slice).unwrap_or_default();
    policies.iter().filter(|p| p.namespace().is_some_and(|ns| scope.contains(&ns))).collect()
}

fn webhooks(op: &Operator, cluster: &Cluster) -> Vec<Check> {
    const ENABLED: &str = "the admission webhook is served";
    let (Some(settings), Some(webhook)) = (&op.settings.webhook, &op.webhook) else {
        let policies = policies_of(op, cluster);
        if policies.is_empty() {
            return vec![Check::pass(
                ENABLED,
                "not enabled (no --webhook-addr), and no ShutdownPolicy needs it",
            )];
        }
        return vec![Check::warn(
            ENABLED,
            format!(
                "not enabled (no --webhook-addr): the drain settings of {} are not applied to pods at admission",
                plural(policies.len(), "ShutdownPolicy", "ShutdownPolicies")
            ),
            helm_upgrade(op, Some("webhook.enabled=true")),
        )];
    };
    let mut checks = Vec::new();
    for (kind, name, configuration) in [
        ("MutatingWebhookConfiguration", &settings.mutating, &webhook.mutating),
        ("ValidatingWebhookConfiguration", &settings.validating, &webhook.validating),
    ] {
        if !name.is_empty() {
            checks.push(configuration_check(op, kind, name, configuration));
        }
    }
    checks.extend(webhook.services.iter().map(|service| service_check(op, service)));
    checks.push(probe_check(op, &webhook.probe));
    checks
}

fn configuration_check(
    op: &Operator,
    kind: &str,
    name: &str,
    configuration: &Fetched<Option<WebhookConfiguration>>,
) -> Check {
    let what = format!("{kind} {name} has a CA bundle");
    let configuration = match configuration {
        Ok(Some(configuration)) => configuration,
        Ok(None) => {
            return Check::fail(
                what,
                "not found: the API server sends the operator no admission requests",
                format!("{} (recreates it)", helm_upgrade(op, None)),
            );
        }
        Err(err) => {
            return Check::fail(
                what,
                format!("cannot read it: {err}"),
                format!("this check needs `get {kind}`"),
            );
        }
    };
    if configuration.webhooks.is_empty() {
        return Check::fail(what, "it has no webhooks", format!("{} (restores it)", helm_upgrade(op, None)));
    }
    let missing: Vec<String> =
        configuration.webhooks.iter().filter(|w| !w.has_ca_bundle).map(|w| w.name.clone()).collect();
    if !missing.is_empty() {
        return Check::fail(
            what,
            format!(
                "no caBundle on {}: the API server cannot trust the webhook. The operator's leader patches \
                 its CA in: is a replica leading (above)?",
                names(&missing)
            ),
            logs_hint(op),
        );
    }
    Check::pass(what, plural(configuration.webhooks.len(), "webhook", "webhooks"))
}

fn service_check(op: &Operator, state: &ServiceState) -> Check {
    let service = &state.service;
    let what = format!("the webhook's Service {}/{} has ready endpoints", service.namespace, service.name);
    match (&state.exists, &state.ready_endpoints) {
        (Err(err), _) => Check::fail(
            what,
            format!("cannot read the Service: {err}"),
            "this check needs `get services` there",
        ),
        (Ok(false), _) => Check::fail(
            what,
            "the Service does not exist: the API server can open no new connection to the webhook \
             (one it has open may still serve a while), so pods will be admitted without their drain \
             settings (failurePolicy Ignore) or refused (Fail)",
            format!("{} (recreates it)", helm_upgrade(op, None)),
        ),
        (Ok(true), Err(err)) => Check::fail(
            what,
            format!("cannot list its EndpointSlices: {err}"),
            "this check needs `list endpointslices` there",
        ),
        (Ok(true), Ok(0)) => Check::fail(
            what,
            "no ready endpoint: no operator replica is ready to answer the API server",
            logs_hint(op),
        ),
        (Ok(true), Ok(ready)) => Check::pass(what, plural(*ready, "ready endpoint", "ready endpoints")),
    }
}

fn probe_check(op: &Operator, probe: &Probe) -> Check {
    const WHAT: &str = "the mutating webhook answers";
    let (plan, outcome) = match probe {
        Probe::NotSent(why) => {
            return Check::warn(
                WHAT,
                format!("not checked: {why}"),
                "create a ShutdownPolicy in a namespace the webhook selects (see the chart's webhook.namespaceSelector \
                 and watchNamespaces) so that this check can send it a dry-run pod",
            );
        }
        Probe::Sent { plan, outcome } => (plan, outcome),
    };
    let namespace = &plan.namespace;
    match outcome {
        Err(err) => Check::warn(
            WHAT,
            format!("could not send a dry-run pod to namespace {namespace}: {err}"),
            "this check needs `create pods` there",
        ),
        Ok(Admission::Admitted { policy: Some(policy) }) => Check::pass(
            WHAT,
            format!("a dry-run pod in {namespace} came back marked with ShutdownPolicy {policy}'s settings"),
        ),
        Ok(Admission::Admitted { policy: None }) => match &plan.policy {
            Some(policy) => Check::fail(
                WHAT,
                format!(
                    "a dry-run pod in {namespace} that ShutdownPolicy {policy} selects came back without the {} \
                     annotation: the webhook did not answer, and failurePolicy {} let the pod in without its drain settings",
                    annotations::POLICY,
                    plan.failure_policy
                ),
                format!("check the Service and the replicas above; {}", logs_hint(op)),
            ),
            None => Check::pass(
                WHAT,
                format!(
                    "a dry-run pod in {namespace} was admitted under failurePolicy {}: the webhook answered",
                    plan.failure_policy
                ),
            ),
        },
        Ok(Admission::Refused(message))
            if message.contains(&format!("admission webhook \"{}\" denied", plan.webhook)) =>
        {
            Check::pass(WHAT, format!("it refused a dry-run pod in {namespace}, so it answers: {message}"))
        }
        Ok(Admission::Refused(message))
            if message.contains(&format!("failed calling webhook \"{}\"", plan.webhook)) =>
        {
            Check::fail(
                WHAT,
                format!("the API server could not call it for a dry-run pod in {namespace}: {message}"),
                format!("check the Service and the replicas above; {}", logs_hint(op)),
            )
        }
        Ok(Admission::Refused(message)) => Check::warn(
            WHAT,
            format!(
                "something else refused the dry-run pod in {namespace}, before the answer could be seen: {message}"
            ),
            "see what the message names (Pod Security, a quota, another webhook)",
        ),
    }
}

/// Where a permission applies, for messages.
fn place(namespace: Option<&str>) -> String {
    namespace.map_or_else(|| "all namespaces".to_owned(), |ns| format!("namespace {ns}"))
}

/// Why a method's permissions matter in `namespace` (`None`: anywhere `op` watches): the
/// policies there that use one of `methods`, and the operator's `--default-profile`.
fn users(
    op: &Operator,
    cluster: &Cluster,
    namespace: Option<&str>,
    methods: &[ShutdownMethod],
) -> Vec<String> {
    let mut out = Vec::new();
    let default = match op.settings.default_profile.as_deref() {
        Some("auto") => &[ShutdownMethod::PortForward][..],
        Some(_) => &ShutdownMethod::ALL[..],
        None => &[],
    };
    if let Some(profile) = &op.settings.default_profile
        && methods.iter().any(|m| default.contains(m))
    {
        out.push(format!("--default-profile {profile}"));
    }
    for policy in policies_of(op, cluster) {
        if namespace.is_some_and(|ns| policy.namespace().as_deref() != Some(ns)) {
            continue;
        }
        let spec = &policy.spec;
        if spec.completion.enabled
            && spec.sidecars().iter().any(|s| s.methods.iter().any(|m| methods.contains(m)))
        {
            out.push(format!(
                "ShutdownPolicy {}/{}",
                policy.namespace().unwrap_or_default(),
                policy.name_any()
            ));
        }
    }
    out
}

/// Permissions asked for one purpose in one place, with their answers.
type PermissionGroup<'a> = ((Purpose, Option<String>), Vec<(&'a Need, &'a Fetched<bool>)>);

fn permissions(op: &Operator, cluster: &Cluster) -> Vec<Check> {
    let user = format!("{}{}:{}", accounts::USER_PREFIX, op.namespace, op.service_account);
    // Grouped by what they are for and where, in the order they were asked.
    let mut groups: Vec<PermissionGroup<'_>> = Vec::new();
    for (need, allowed) in &op.access {
        let key =
            (need.purpose, if need.purpose == Purpose::Webhook { None } else { need.namespace.clone() });
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push((need, allowed)),
            None => groups.push((key, vec![(need, allowed)])),
        }
    }
    let mut checks = Vec::new();
    for ((purpose, namespace), list) in groups {
        let namespace = namespace.as_deref();
        let what = match purpose {
            Purpose::Core => format!("core permissions in {}", place(namespace)),
            Purpose::Method(method) => format!("{} permissions in {}", method.describe(), place(namespace)),
            Purpose::LeaderElection => format!("leader-election permissions in {}", place(namespace)),
            Purpose::Webhook => "webhook permissions".to_owned(),
            Purpose::CrdUpgrade => "CRD upgrade permissions (--upgrade-crd)".to_owned(),
        };
        let errors: Vec<String> = list
            .iter()
            .filter_map(|(need, allowed)| allowed.as_ref().err().map(|e| format!("{}: {e}", need.describe())))
            .collect();
        if !errors.is_empty() {
            checks.push(Check::fail(
                what,
                format!("cannot ask the API server: {}", names(&errors)),
                "this check needs `create subjectaccessreviews`",
            ));
            continue;
        }
        let missing: Vec<String> = list
            .iter()
            .filter(|(_, allowed)| matches!(allowed, Ok(false)))
            .map(|(need, _)| match (purpose, need.namespace.as_deref()) {
                (Purpose::Webhook, ns) => format!("{} in {}", need.describe(), place(ns)),
                _ => need.describe(),
            })
            .collect();
        if missing.is_empty() {
            checks.push(Check::pass(
                what,
                format!("{} granted to {user}", plural(list.len(), "permission", "permissions")),
            ));
            continue;
        }
        let lacks = match purpose {
            // A CRD is cluster-scoped: no namespace to name.
            Purpose::CrdUpgrade => format!("{user} lacks {}", names(&missing)),
            _ => format!("{user} lacks {} in {}", names(&missing), place(namespace)),
        };
        let check = match purpose {
            Purpose::Method(method) => method_check(op, cluster, method, namespace, what, lacks),
            Purpose::Core => Check::fail(
                what,
                format!("{lacks}: the operator cannot watch or act on the pods and policies there"),
                format!("{} (restores the chart's Roles and bindings)", helm_upgrade(op, None)),
            ),
            Purpose::LeaderElection => Check::fail(
                what,
                format!("{lacks}: no replica can lead, so none acts"),
                format!("{} (restores the chart's Roles and bindings)", helm_upgrade(op, None)),
            ),
            Purpose::CrdUpgrade => Check::fail(
                what,
                format!(
                    "{lacks}: the operator cannot apply its release's CRD at start, so new fields are missing until it is applied by hand"
                ),
                format!(
                    "{} (restores the chart's ClusterRoles), or `lameduck crds | kubectl apply -f -`",
                    helm_upgrade(op, None)
                ),
            ),
            Purpose::Webhook => Check::fail(
                what,
                format!(
                    "{} lacks {}: the webhook cannot keep its certificate, its CA bundle or its policy checks",
                    user,
                    names(&missing)
                ),
                format!("{} (restores the chart's Roles and bindings)", helm_upgrade(op, None)),
            ),
        };
        checks.push(check);
    }
    checks
}

fn method_check(
    op: &Operator,
    cluster: &Cluster,
    method: MethodRbac,
    namespace: Option<&str>,
    what: String,
    lacks: String,
) -> Check {
    let used_by = users(op, cluster, namespace, method.methods());
    let hint = format!(
        "{}, or remove {} from the policies' completion.methods",
        helm_upgrade(op, Some(&format!("{}=true", method.chart_value()))),
        method.describe()
    );
    if used_by.is_empty() {
        Check::warn(
            what,
            format!("{lacks}: {} fails with 403 if a policy asks for it (none does now)", method.describe()),
            hint,
        )
    } else {
        Check::fail(
            what,
            format!(
                "{lacks}, and {} uses {}: each attempt fails with 403 and the next method is tried",
                names(&used_by),
                method.describe()
            ),
            hint,
        )
    }
}

/// The live objects as the file path of `lameduck check` reads manifests: each serialised and
/// read by [`manifest::read`], with its status and managed fields left out. Objects another
/// object owns (a Deployment's ReplicaSets, a CronJob's Jobs, every controller's pods) are left
/// out too: their owner's template is checked. Also returns what could not be read.
pub(crate) fn manifests(workloads: &Workloads, policies: &[ShutdownPolicy]) -> (Manifests, Vec<String>) {
    fn add<K: Resource + Serialize>(
        objects: &[K],
        keep: impl Fn(&K) -> bool,
        out: &mut Manifests,
        bad: &mut Vec<String>,
    ) where
        K::DynamicType: Default,
    {
        for object in objects.iter().filter(|o| keep(o)) {
            let id = format!(
                "{} {}/{}",
                K::kind(&K::DynamicType::default()),
                object.namespace().unwrap_or_default(),
                object.name_any()
            );
            let mut value = match serde_yaml_ng::to_value(object) {
                Ok(value) => value,
                Err(err) => {
                    bad.push(format!("{id}: {err}"));
                    continue;
                }
            };
            if let Some(map) = value.as_mapping_mut() {
                map.remove("status");
                if let Some(metadata) = map.get_mut("metadata").and_then(|m| m.as_mapping_mut()) {
                    metadata.remove("managedFields");
                }
            }
            let origin =
                Origin { source: "cluster".into(), document: out.workloads.len() + 1, line: 0, item: None };
            if let Err(err) = manifest::read(value, origin, out) {
                bad.push(format!("{id}: {err}"));
            }
        }
    }
    let owned = |refs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
        refs.is_some_and(|refs| !refs.is_empty())
    };
    let mut out = Manifests { policies: policies.to_vec(), ..Manifests::default() };
    let mut bad = Vec::new();
    add(&workloads.deployments, |_| true, &mut out, &mut bad);
    add(&workloads.stateful_sets, |_| true, &mut out, &mut bad);
    add(&workloads.daemon_sets, |_| true, &mut out, &mut bad);
    add(&workloads.replica_sets, |o| !owned(o.metadata.owner_references.as_ref()), &mut out, &mut bad);
    add(&workloads.cron_jobs, |_| true, &mut out, &mut bad);
    add(&workloads.jobs, |o| !o.owner_references().iter().any(|r| r.kind == "CronJob"), &mut out, &mut bad);
    add(&workloads.pods, |o| !owned(o.metadata.owner_references.as_ref()), &mut out, &mut bad);
    (out, bad)
}

fn workloads(cluster: &Cluster) -> Vec<Check> {
    let what = format!("workloads in {} follow the timing rules", cluster.scope.describe());
    let policies = match &cluster.policies {
        Ok(policies) => policies,
        Err(err) => {
            return vec![Check::fail(
                what,
                format!("cannot list ShutdownPolicies: {err}"),
                "this check needs `list shutdownpolicies`",
            )];
        }
    };
    let objects = match &cluster.workloads {
        Ok(objects) => objects,
        Err(err) => {
            return vec![Check::fail(
                what,
                format!("cannot list workloads: {err}"),
                "this check needs `list` on pods and the workload kinds",
            )];
        }
    };
    let (manifests, unreadable) = manifests(objects, policies);
    let report = check::check(&manifests);
    let mut found: Vec<Check> = Vec::new();
    for entry in report.workloads.iter().filter(|e| !e.findings.is_empty()) {
        let namespace = entry.namespace.as_deref().unwrap_or_default();
        let mut lines: Vec<String> = entry
            .findings
            .iter()
            .map(|f| {
                let severity = if f.severity == Severity::Error { "error" } else { "warning" };
                format!("{severity}[{}]: {}", f.rule, f.message)
            })
            .collect();
        if let Some(policy) = &entry.policy {
            lines.push(format!("ShutdownPolicy {policy} applies"));
        }
        lines.push(format!("timeline: {}", entry.timeline.summary()));
        let description = format!("{} {namespace}/{}", entry.kind, entry.name);
        let hint = format!(
            "kubectl get -n {namespace} {} {} -o yaml | lameduck check -f -   shows its timeline; fix the manifest's timing",
            entry.kind.to_lowercase(),
            entry.name
        );
        found.push(if entry.findings.iter().any(|f| f.severity == Severity::Error) {
            Check::fail(description, lines.join("\n"), hint)
        } else {
            Check::warn(description, lines.join("\n"), hint)
        });
    }
    // Failures first, then in the order listed.
    found.sort_by_key(|c| std::cmp::Reverse(c.result));
    let mut checks = cap(found, "workloads", "lameduck check -f on their manifests lists each");
    if checks.is_empty() {
        checks.push(Check::pass(
            what,
            format!(
                "{} checked under {}: no timing mistakes",
                plural(report.workloads.len(), "workload", "workloads"),
                plural(policies.len(), "ShutdownPolicy", "ShutdownPolicies")
            ),
        ));
    }
    if !report.notes.is_empty() {
        checks.push(Check::warn(
            "ShutdownPolicies select without conflicts",
            report.notes.iter().take(MAX_LISTED).cloned().collect::<Vec<_>>().join("\n"),
            "give the policies selectors that do not overlap, and fix the invalid ones",
        ));
    }
    if !unreadable.is_empty() {
        checks.push(Check::warn(
            "every workload could be read",
            unreadable.iter().take(MAX_LISTED).cloned().collect::<Vec<_>>().join("\n"),
            "these objects were not checked",
        ));
    }
    checks
}

/// The first [`MAX_LISTED`] checks, and one more that counts the rest, as bad as the worst.
fn cap(mut checks: Vec<Check>, what: &str, hint: &str) -> Vec<Check> {
    if checks.len() <= MAX_LISTED {
        return checks;
    }
    let rest = checks.split_off(MAX_LISTED);
    let failed = rest.iter().filter(|c| c.result == Outcome::Fail).count();
    let worst = rest.iter().map(|c| c.result).max().unwrap_or(Outcome::Warn);
    checks.push(Check {
        description: format!("and {} more {what}", rest.len()),
        result: worst,
        message: format!("{failed} failing, {} warned", rest.len() - failed),
        hint: Some(hint.to_owned()),
    });
    checks
}

/// Why a pod is stuck.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stuck {
    /// The operator gave up on it.
    GaveUp,
    /// A sidecar the operator stopped exited non-zero.
    Failed,
    /// A policy (or the default profile) applies and an operator watches: it is being stopped.
    Stopping(String),
    /// A policy applies but no operator watches its namespace.
    NoOperator(String),
    /// Nothing applies.
    NoPolicy,
}

fn is_done(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        || matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn stuck_pods(cluster: &Cluster) -> Vec<Check> {
    let what = format!("no run-to-completion pod in {} is stuck", cluster.scope.describe());
    let pods = match &cluster.workloads {
        Ok(workloads) => &workloads.pods,
        Err(err) => {
            return vec![Check::fail(
                what,
                format!("cannot list pods: {err}"),
                "this check needs `list pods`",
            )];
        }
    };
    let policies = cluster.policies.as_ref().map(Vec::as_slice).unwrap_or_default();
    let operators = cluster.operators.as_ref().map(Vec::as_slice).unwrap_or_default();
    let mut stuck: Vec<(Stuck, &Pod, Vec<String>)> = Vec::new();
    for pod in pods.iter().filter(|p| !is_done(p)) {
        let Some(shape) = PodShape::of_pod(pod) else { continue };
        let namespace = pod.namespace().unwrap_or_default();
        let chosen = selection::select(policies, Some(&namespace), pod.labels());
        let sidecars = chosen.winner.map(|p| p.spec.sidecars()).unwrap_or_default();
        let listed: Vec<&str> = sidecars.iter().map(|s| s.proxy.container_name.as_str()).collect();
        if !shape.stuck(pod, &listed) {
            continue;
        }
        let running: Vec<String> = shape
            .spec
            .containers
            .iter()
            .filter(|c| {
                (listed.contains(&c.name.as_str()) || known_sidecar(&c.name).is_some())
                    && terminated(pod, &c.name).is_none()
            })
            .map(|c| c.name.clone())
            .collect();
        let watcher = operators.iter().find(|o| o.settings.scope().contains(&namespace));
        let default = watcher
            .and_then(|o| o.settings.default_profile.as_deref())
            .filter(|profile| *profile != "auto" || shape.injected_mesh().is_some());
        let reason = match pod.annotations().get(annotations::SHUTDOWN_RESULT).map(String::as_str) {
            Some(shutdown_result::GAVE_UP) => Stuck::GaveUp,
            Some(shutdown_result::FAILED) => Stuck::Failed,
            _ => match (chosen.winner, default) {
                (Some(policy), _) if watcher.is_some() => {
                    Stuck::Stopping(format!("ShutdownPolicy {}", policy.name_any()))
                }
                (Some(policy), _) => Stuck::NoOperator(format!("ShutdownPolicy {}", policy.name_any())),
                (None, Some(profile)) => {
                    Stuck::Stopping(format!("the operator's --default-profile {profile}"))
                }
                (None, None) => Stuck::NoPolicy,
            },
        };
        stuck.push((reason, pod, running));
    }
    if stuck.is_empty() {
        let count = pods.iter().filter(|p| !is_done(p)).count();
        return vec![Check::pass(
            what,
            format!("{} looked at", plural(count, "running pod", "running pods")),
        )];
    }
    stuck.sort_by_key(|(reason, pod, _)| (*reason != Stuck::GaveUp, pod.namespace(), pod.name_any()));
    let checks = stuck.iter().map(|(reason, pod, running)| stuck_check(reason, pod, running)).collect();
    cap(
        checks,
        "stuck pods",
        "kubectl get sdp -A and the operator's lameduck_stuck_pods{reason} metric count them all",
    )
}

fn stuck_check(reason: &Stuck, pod: &Pod, running: &[String]) -> Check {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let what = format!("pod {namespace}/{name}");
    let sidecars = if running.len() == 1 {
        format!("sidecar {} still runs", running[0])
    } else {
        format!("sidecars {} still run", running.join(", "))
    };
    let head = format!("its main containers have exited, but {sidecars}");
    let events = format!("kubectl events -n {namespace} --for pod/{name}");
    match reason {
        Stuck::GaveUp => Check::fail(
            what,
            format!("gaveUp: {head}, and the operator gave up stopping it (a ShutdownGaveUp event says why)"),
            format!(
                "{events} says why (docs/troubleshooting.md); the operator tries again when the policy's spec changes or the sidecar restarts"
            ),
        ),
        Stuck::Failed => Check::warn(
            what,
            format!("failed: {head}; a sidecar the operator stopped exited non-zero"),
            format!("{events} shows the exit codes"),
        ),
        Stuck::Stopping(by) => Check::warn(
            what,
            format!("stopping: {head}; {by} applies, and the operator is stopping it"),
            format!("{events} shows the operator's attempts"),
        ),
        Stuck::NoOperator(by) => Check::warn(
            what,
            format!(
                "no_operator: {head}; {by} applies, but no lameduck operator watches namespace {namespace}"
            ),
            format!("install the operator, or add {namespace} to its watchNamespaces"),
        ),
        Stuck::NoPolicy => Check::warn(
            what,
            format!(
                "no_policy: {head}, and no ShutdownPolicy selects it (nor the operator's --default-profile): nothing will stop it"
            ),
            format!(
                "create a ShutdownPolicy in {namespace} that selects it (docs/shutdownpolicy.md), or run its app under lameduck-await -S"
            ),
        ),
    }
}

#[cfg(test)]
mod tests;
