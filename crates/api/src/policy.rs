//! The `ShutdownPolicy` custom resource: which pods, which proxy, how to finish Jobs, how to drain.
//!
//! Validation lives in the schema as CEL rules so the API server rejects a bad spec with a message
//! that names the field; `tests/cel_rules.rs` evaluates every rule against the generated schema.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::duration::GoDuration;

/// Drain and completion settings for the meshed pods of one namespace that `selector` matches.
// kube-derive takes one `printcolumn(...)` per column; clippy reads the repeated keys as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "lameduck.io",
    version = "v1alpha1",
    kind = "ShutdownPolicy",
    plural = "shutdownpolicies",
    singular = "shutdownpolicy",
    shortname = "sdp",
    category = "lameduck",
    namespaced,
    status = "ShutdownPolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "How lameduck shuts down the proxy sidecar of the meshed pods it selects: Job completion and drain settings.",
    printcolumn(name = "Profile", type_ = "string", json_path = ".spec.proxy.profile"),
    printcolumn(name = "Matched", type_ = "integer", json_path = ".status.matchedPods"),
    printcolumn(name = "Stuck", type_ = "integer", json_path = ".status.stuckPods"),
    printcolumn(name = "Succeeded", type_ = "integer", json_path = ".status.shutdowns.succeeded"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.shutdowns.failed"),
    printcolumn(name = "GaveUp", type_ = "integer", json_path = ".status.shutdowns.gaveUp", priority = 1),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Methods", type_ = "string", json_path = ".spec.completion.methods", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.proxy) || !has(self.proxy.profile) || self.proxy.profile != 'Custom' || has(self.proxy.execCommand) || !has(self.completion) || !has(self.completion.methods) || !('Exec' in self.completion.methods)"
).message("spec.proxy.execCommand is required when spec.proxy.profile is Custom and spec.completion.methods includes Exec").field_path(".proxy"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.sidecars) || self.sidecars.all(s, !has(s.profile) || s.profile != 'Custom' || has(s.execCommand) || !('Exec' in (has(s.methods) ? s.methods : (has(self.completion) && has(self.completion.methods) ? self.completion.methods : ['Exec']))))"
).message("spec.sidecars: an entry with profile Custom needs execCommand when its methods (or spec.completion.methods) include Exec").field_path(".sidecars"))]
#[serde(rename_all = "camelCase")]
pub struct ShutdownPolicySpec {
    /// Pods in this policy's namespace that it applies to. Empty selects every pod.
    #[serde(default)]
    pub selector: LabelSelector,
    /// Which container is the proxy and how to reach it: the one-sidecar shorthand of
    /// `sidecars`. Ignored for completion when `sidecars` is given; its drain target is then the
    /// mesh proxy listed there.
    #[serde(default)]
    pub proxy: ProxySpec,
    /// The sidecars to stop once the main containers have exited, in this order, each verified
    /// exited before the next. List the mesh proxy last, so that the others can still drain
    /// through it. Empty: `proxy` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = kube::core::Rule::new(SIDECARS_UNIQUE_RULE)
        .message("spec.sidecars: each container may be listed once (a profile without containerName names its own container)"))]
    #[x_kube(validation = kube::core::Rule::new(SIDECARS_ONE_MESH_RULE)
        .message("spec.sidecars: at most one mesh proxy (profile Lameduck, Linkerd or Istio)"))]
    pub sidecars: Vec<SidecarSpec>,
    /// Finishing run-to-completion pods (any owner) whose main containers have exited.
    #[serde(default)]
    pub completion: CompletionSpec,
    /// Drain settings applied to the proxy container when a pod is admitted.
    #[serde(default)]
    pub drain: DrainSpec,
}

/// A known proxy: it fixes the container name, admin port, shutdown path and exec command.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum ProxyProfile {
    /// lameduck's own proxy, container `lameduck-proxy`.
    Lameduck,
    /// Linkerd's proxy, container `linkerd-proxy` (distroless: no shell).
    #[default]
    Linkerd,
    /// Istio's sidecar, container `istio-proxy`, `/quitquitquit` on port 15020.
    Istio,
    /// Cloud SQL Auth Proxy v2, container `cloud-sql-proxy`, `/quitquitquit` on port 9091 (it
    /// serves it when started with `--quitquitquit`). Not a mesh proxy.
    CloudSqlProxy,
    /// Anything else: `containerName` is required.
    Custom,
}

impl ProxyProfile {
    /// Every profile, for messages and the CRD's CEL rules.
    pub const ALL: [Self; 5] =
        [Self::Lameduck, Self::Linkerd, Self::Istio, Self::CloudSqlProxy, Self::Custom];

    /// Whether this is a service mesh's proxy, which the pod's other sidecars may still need and
    /// which is therefore stopped last.
    pub const fn is_mesh(self) -> bool {
        matches!(self, Self::Lameduck | Self::Linkerd | Self::Istio)
    }

    /// The name used in the CRD and in messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Lameduck => "Lameduck",
            Self::Linkerd => "Linkerd",
            Self::Istio => "Istio",
            Self::CloudSqlProxy => "CloudSqlProxy",
            Self::Custom => "Custom",
        }
    }
}

/// The proxy container of the selected pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.profile) || self.profile != 'Custom' || has(self.containerName)"
).message("containerName is required when profile is Custom").field_path(".containerName"))]
#[serde(rename_all = "camelCase")]
pub struct ProxySpec {
    /// Built-in defaults for a known proxy. The other fields override it.
    #[serde(default)]
    pub profile: ProxyProfile,
    /// Name of the proxy container (a regular container or a native-sidecar init container).
    /// Another name than the profile's needs the policy's author to hold the powers its methods
    /// use on that container (`pods/exec`, `pods/ephemeralcontainers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("containerName must be a DNS label: lower-case letters, digits and '-'"))]
    #[schemars(length(max = 63))]
    pub container_name: Option<String>,
    /// Port of the proxy's admin server (`/shutdown`, `/ready`). Another port than the profile's
    /// needs the policy's author to hold `create pods/portforward`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 65535")
        .message("adminPort must be between 1 and 65535"))]
    pub admin_port: Option<i32>,
    /// Path that shuts the proxy down when POSTed from loopback: an absolute URI path of RFC 3986
    /// characters (unreserved, sub-delims, `:`, `@`, `/` and `%XX` escapes; no query). Another
    /// path than the profile's needs the policy's author to hold `create pods/portforward`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(SHUTDOWN_PATH_RULE)
        .message("shutdownPath must be an absolute URI path: '/' then letters, digits, -._~!$&'()*+,;=:@/ or %XX escapes"))]
    #[schemars(length(max = 256))]
    pub shutdown_path: Option<String>,
    /// Command run in the proxy container by the `Exec` method, instead of the profile's. The
    /// operator runs it only with `--allow-custom-exec-command`, and whoever writes the policy
    /// needs `create` on `pods/exec` in its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("size(self) > 0 && self.all(arg, size(arg) <= 1024)")
        .message("execCommand must name a command (at least one element, each at most 1024 characters)"))]
    #[schemars(length(max = 16))]
    pub exec_command: Option<Vec<String>>,
}

/// One sidecar to stop: the `proxy` fields (a profile, or `Custom` with a container name) and,
/// optionally, its own methods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    #[serde(flatten)]
    pub proxy: ProxySpec,
    /// Methods for this sidecar, in order; default: `completion.methods`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("size(self) > 0 && self.all(m, self.exists_one(n, n == m))")
        .message("spec.sidecars[].methods must list at least one method, each once"))]
    #[schemars(length(max = 4))]
    pub methods: Option<Vec<ShutdownMethod>>,
}

/// The CEL rule for `shutdownPath` (RFC 3986 `path-absolute`, with `%XX` escapes): what the
/// operator then puts in a request line is always a valid URI path.
pub const SHUTDOWN_PATH_RULE: &str =
    r#"self.matches("^/([A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f][0-9A-Fa-f])*$")"#;

// CEL over `spec.sidecars`. An entry's container is its `containerName`, else its profile's
// (`sidecar_names_match_the_profiles` checks the map against `ProxyProfile::container_name`).
const SIDECARS_UNIQUE_RULE: &str = "self.all(a, self.exists_one(b, (has(b.containerName) ? b.containerName : {'Lameduck': 'lameduck-proxy', 'Linkerd': 'linkerd-proxy', 'Istio': 'istio-proxy', 'CloudSqlProxy': 'cloud-sql-proxy', 'Custom': ''}[has(b.profile) ? b.profile : 'Linkerd']) == (has(a.containerName) ? a.containerName : {'Lameduck': 'lameduck-proxy', 'Linkerd': 'linkerd-proxy', 'Istio': 'istio-proxy', 'CloudSqlProxy': 'cloud-sql-proxy', 'Custom': ''}[has(a.profile) ? a.profile : 'Linkerd'])))";
const SIDECARS_ONE_MESH_RULE: &str =
    "self.filter(s, !has(s.profile) || s.profile in ['Lameduck', 'Linkerd', 'Istio']).size() <= 1";

/// A way to make the proxy exit, tried in the order the policy lists them.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, schemars::JsonSchema,
)]
pub enum ShutdownMethod {
    /// Run the profile's command in the proxy container (pods/exec).
    Exec,
    /// POST the shutdown path through pods/portforward: no image, no shell needed.
    PortForward,
    /// An ephemeral container that POSTs the shutdown path over the pod's loopback.
    EphemeralContainer,
    /// An ephemeral container in the proxy's process namespace that sends it SIGTERM.
    Signal,
}

impl ShutdownMethod {
    /// Every method, in the default order: cheapest and least intrusive first.
    pub const ALL: [Self; 4] = [Self::Exec, Self::PortForward, Self::EphemeralContainer, Self::Signal];

    /// Whether the method adds an ephemeral container to the pod (which can never be removed).
    pub const fn adds_container(self) -> bool {
        matches!(self, Self::EphemeralContainer | Self::Signal)
    }

    /// The name used in the CRD, metrics labels and events.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "Exec",
            Self::PortForward => "PortForward",
            Self::EphemeralContainer => "EphemeralContainer",
            Self::Signal => "Signal",
        }
    }
}

impl std::fmt::Display for ShutdownMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_true() -> bool {
    true
}

fn default_methods() -> Vec<ShutdownMethod> {
    ShutdownMethod::ALL.to_vec()
}

fn default_attempt_timeout() -> GoDuration {
    GoDuration::from_secs(30)
}

fn default_max_rounds() -> u32 {
    DEFAULT_MAX_ROUNDS
}

/// Rounds of methods tried before the operator gives up on a pod (`completion.maxRounds`).
pub const DEFAULT_MAX_ROUNDS: u32 = 3;
/// The most rounds a policy may ask for: with four methods, 40 attempts, which keeps the attempt
/// record on the pod well under the API server's limit on annotations.
pub const MAX_ROUNDS: u32 = 10;
/// The longest `completion.attemptTimeout`: a call holds one of the operator's workers this long.
pub const MAX_ATTEMPT_TIMEOUT_SECONDS: u64 = 600;

/// How the operator finishes run-to-completion pods whose main containers have exited.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = kube::core::Rule::new("!has(self.attemptTimeout) || duration(self.attemptTimeout) > duration('0s')")
    .message("spec.completion.attemptTimeout must be longer than 0s").field_path(".attemptTimeout"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.attemptTimeout) || duration(self.attemptTimeout) <= duration('10m')")
    .message("spec.completion.attemptTimeout must be at most 10m").field_path(".attemptTimeout"))]
#[serde(rename_all = "camelCase")]
pub struct CompletionSpec {
    /// Whether the operator shuts proxies down at all for these pods.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Methods to try, in order, until the proxy has exited.
    #[serde(default = "default_methods")]
    #[x_kube(validation = kube::core::Rule::new("size(self) > 0")
        .message("spec.completion.methods must list at least one method"))]
    #[x_kube(validation = kube::core::Rule::new("self.all(m, self.exists_one(n, n == m))")
        .message("spec.completion.methods must not list a method twice"))]
    #[schemars(length(max = 4))]
    pub methods: Vec<ShutdownMethod>,
    /// How long to wait after the last main container exited before the first attempt.
    #[serde(default)]
    pub delay: GoDuration,
    /// How long one attempt may take before the proxy is checked and the next method tried.
    #[serde(default = "default_attempt_timeout")]
    pub attempt_timeout: GoDuration,
    /// Rounds (each tries every method once) before the operator gives up on a pod, with one
    /// `ShutdownGaveUp` event. It tries again only when the proxy container restarts or this
    /// policy's spec changes.
    #[serde(default = "default_max_rounds")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1 && self <= 10")
        .message("spec.completion.maxRounds must be between 1 and 10"))]
    pub max_rounds: u32,
    /// Image for the `EphemeralContainer` and `Signal` methods; defaults to the operator's own
    /// (`--ephemeral-image`). Another image must be on the operator's allowlist, and whoever
    /// writes the policy needs `patch` on `pods/ephemeralcontainers` in its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("size(self) > 0 && !self.contains(' ')")
        .message("spec.completion.ephemeralImage must be an image reference without spaces"))]
    #[schemars(length(max = 512))]
    pub ephemeral_image: Option<String>,
}

impl Default for CompletionSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            methods: default_methods(),
            delay: GoDuration::ZERO,
            attempt_timeout: default_attempt_timeout(),
            max_rounds: DEFAULT_MAX_ROUNDS,
            ephemeral_image: None,
        }
    }
}

/// What to do with a pod whose shutdown timing is wrong (see `lameduck check`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum Enforce {
    /// Admit it with a warning.
    #[default]
    Warn,
    /// Raise `terminationGracePeriodSeconds` so the timing fits, and admit it.
    Fix,
    /// Refuse it, naming the numbers.
    Reject,
}

/// Drain settings applied to the proxy container at admission.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.waitBeforeExit) || !has(self.shutdownGracePeriod) || duration(self.waitBeforeExit) < duration(self.shutdownGracePeriod)"
).message("spec.drain.waitBeforeExit must be shorter than spec.drain.shutdownGracePeriod").field_path(".waitBeforeExit"))]
#[serde(rename_all = "camelCase")]
pub struct DrainSpec {
    /// A preStop delay on the proxy, so slow clients stop sending before it drains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_before_exit: Option<GoDuration>,
    /// How long the proxy drains before it closes what is still open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_period: Option<GoDuration>,
    /// Turn the proxy's `/shutdown` endpoint on (or off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_shutdown_endpoint: Option<bool>,
    /// Run the proxy as a native sidecar (an init container with `restartPolicy: Always`).
    #[serde(default)]
    pub native_sidecar: bool,
    /// What the webhook does with a pod whose shutdown timing is wrong.
    #[serde(default)]
    pub enforce: Enforce,
}

/// What the operator observed for this policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods this policy currently applies to.
    #[serde(default)]
    pub matched_pods: i32,
    /// Pods whose main containers exited while the proxy still runs.
    #[serde(default)]
    pub stuck_pods: i32,
    /// Proxy shutdowns by outcome since the policy was created.
    #[serde(default)]
    pub shutdowns: ShutdownCounts,
    /// `Ready`, and `Conflict` when an older policy selects the same pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Proxy shutdowns by outcome.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownCounts {
    /// The proxy exited 0.
    pub succeeded: i64,
    /// The proxy exited non-zero (the pod fails). Rounds in which every method failed are
    /// reported by events and metrics, and the pod stays in `stuckPods` until it ends.
    pub failed: i64,
    /// Pods the operator gave up on after `completion.maxRounds` (or with no method left).
    #[serde(default)]
    pub gave_up: i64,
}

/// Condition types on `ShutdownPolicy` status.
pub mod conditions {
    /// The policy is valid and being acted on.
    pub const READY: &str = "Ready";
    /// An older policy selects some of the same pods and wins for them.
    pub const CONFLICT: &str = "Conflict";
}

/// Which policy: its namespace and name, the key status counts and summaries are kept under.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyId {
    pub namespace: String,
    pub name: String,
}

impl PolicyId {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    /// The id of a stored policy.
    pub fn of(policy: &ShutdownPolicy) -> Self {
        Self::new(
            policy.metadata.namespace.clone().unwrap_or_default(),
            policy.metadata.name.clone().unwrap_or_default(),
        )
    }
}

impl std::fmt::Display for PolicyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The ShutdownPolicy CRD as lameduck installs it: the generated schema, marked with the release
/// it came from (`lameduck.io/version`), so `lameduck version --cluster` can tell what a cluster
/// runs. `lameduck crds`, the chart's `crds/` and the tests all install this one.
pub fn shutdown_policy_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    let mut crd = <ShutdownPolicy as kube::CustomResourceExt>::crd();
    crd.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(crate::names::annotations::CRD_VERSION.to_owned(), crate::build::VERSION.to_owned());
    crd
}
