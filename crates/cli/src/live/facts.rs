//! The facts `lameduck check --cluster` reads from a cluster, as plain data: `fetch` fills them
//! with a client, `checks` judges them without one, so every check is tested on fixture facts.
//!
//! Anything that could not be read is kept as the API server's message ([`Fetched`]), so a
//! forbidden list or an unreachable Service becomes a finding instead of ending the run.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
        batch::v1::{CronJob, Job},
        core::v1::{Container, Pod},
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
    jiff::Timestamp,
};
use kube::ResourceExt;
use lameduck_api::{
    ShutdownPolicy,
    names::{env, labels, operator, webhook},
};

/// A fact, or why it could not be read (the API server's message).
pub(crate) type Fetched<T> = Result<T, String>;

/// Everything the checks look at.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    /// The API server's version (`gitVersion`), or why it cannot be reached.
    pub(crate) api: Fetched<String>,
    /// The rest, read only when the API server answered.
    pub(crate) cluster: Option<Cluster>,
}

/// What was read once the API server answered.
#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    pub(crate) nodes: Fetched<Vec<NodeVersion>>,
    /// `None`: the ShutdownPolicy CRD is not installed.
    pub(crate) crd: Fetched<Option<Crd>>,
    /// `--operator-namespace`: only operators there were looked for.
    pub(crate) operator_namespace: Option<String>,
    pub(crate) operators: Fetched<Vec<Operator>>,
    /// Where policies and workloads were read: where the operators act.
    pub(crate) scope: Scope,
    pub(crate) policies: Fetched<Vec<ShutdownPolicy>>,
    pub(crate) workloads: Fetched<Workloads>,
}

/// A node and the kubelet it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeVersion {
    pub(crate) name: String,
    /// `status.nodeInfo.kubeletVersion`; empty for a node whose kubelet never reported.
    pub(crate) kubelet: String,
}

/// The ShutdownPolicy CRD as installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Crd {
    pub(crate) name: String,
    /// Its `lameduck.io/version` annotation.
    pub(crate) version: Option<String>,
}

/// The namespaces some operator acts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every namespace but these.
    All { except: BTreeSet<String> },
    /// These only.
    Namespaces(BTreeSet<String>),
}

impl Scope {
    /// Every namespace.
    pub(crate) fn everywhere() -> Self {
        Self::All { except: BTreeSet::new() }
    }

    pub(crate) fn contains(&self, namespace: &str) -> bool {
        match self {
            Self::All { except } => !except.contains(namespace),
            Self::Namespaces(these) => these.contains(namespace),
        }
    }

    /// The namespaces either scope covers.
    pub(crate) fn union(self, other: Self) -> Self {
        match (self, other) {
            (Self::All { except: a }, Self::All { except: b }) => {
                Self::All { except: a.intersection(&b).cloned().collect() }
            }
            (Self::All { except }, Self::Namespaces(these))
            | (Self::Namespaces(these), Self::All { except }) => {
                Self::All { except: except.difference(&these).cloned().collect() }
            }
            (Self::Namespaces(mut a), Self::Namespaces(b)) => {
                a.extend(b);
                Self::Namespaces(a)
            }
        }
    }

    /// For messages: `namespace a`, `namespaces a, b`, `all namespaces but kube-system`.
    pub(crate) fn describe(&self) -> String {
        let list = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(", ");
        match self {
            Self::All { except } if except.is_empty() => "all namespaces".to_owned(),
            Self::All { except } => format!("all namespaces but {}", list(except)),
            Self::Namespaces(these) if these.len() == 1 => format!("namespace {}", list(these)),
            Self::Namespaces(these) => format!("namespaces {}", list(these)),
        }
    }
}

/// The live objects that carry pod templates, in the scope.
#[derive(Debug, Clone, Default)]
pub(crate) struct Workloads {
    pub(crate) deployments: Vec<Deployment>,
    pub(crate) stateful_sets: Vec<StatefulSet>,
    pub(crate) daemon_sets: Vec<DaemonSet>,
    pub(crate) replica_sets: Vec<ReplicaSet>,
    pub(crate) jobs: Vec<Job>,
    pub(crate) cron_jobs: Vec<CronJob>,
    /// Every pod: the bare ones are workloads, and any may be stuck.
    pub(crate) pods: Vec<Pod>,
}

/// An operator Deployment the chart installed, and what was read about it.
#[derive(Debug, Clone)]
pub(crate) struct Operator {
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// The Helm release (`app.kubernetes.io/instance`), for the hints' `helm upgrade`.
    pub(crate) release: Option<String>,
    /// `app.kubernetes.io/version`.
    pub(crate) version: Option<String>,
    pub(crate) replicas: i32,
    pub(crate) ready_replicas: i32,
    /// The pods' ServiceAccount: whose permissions are checked.
    pub(crate) service_account: String,
    pub(crate) settings: Settings,
    /// `None`: there is no such Lease.
    pub(crate) lease: Fetched<Option<Lease>>,
    /// `None` when the operator serves no webhook.
    pub(crate) webhook: Option<Webhook>,
    /// Each permission the operator needs, and whether its ServiceAccount has it.
    pub(crate) access: Vec<(Need, Fetched<bool>)>,
}

impl Operator {
    /// The Deployment as read, before the Lease, the webhook and the permissions are.
    pub(crate) fn of_deployment(deployment: &Deployment) -> Self {
        let namespace = deployment.namespace().unwrap_or_default();
        let pod_spec = deployment.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        let container = pod_spec.and_then(|spec| {
            spec.containers.iter().find(|c| c.name == operator::CONTAINER).or(spec.containers.first())
        });
        Self {
            settings: container
                .map(|c| Settings::of_container(c, &namespace))
                .unwrap_or_else(|| Settings::of_container(&Container::default(), &namespace)),
            name: deployment.name_any(),
            release: deployment.labels().get(labels::INSTANCE).cloned(),
            version: deployment.labels().get(labels::VERSION).cloned(),
            replicas: deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            ready_replicas: deployment.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0),
            service_account: pod_spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".to_owned()),
            namespace,
            lease: Ok(None),
            webhook: None,
            access: Vec::new(),
        }
    }

    /// `NAMESPACE/NAME`.
    pub(crate) fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What the operator's flags (or their environment variables) say, as its Deployment runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// `--namespace`: the namespaces it watches; empty for all.
    pub(crate) namespaces: Vec<String>,
    /// `--exclude-namespace`.
    pub(crate) exclude_namespaces: Vec<String>,
    pub(crate) lease_name: String,
    pub(crate) lease_namespace: String,
    /// `--default-profile`: `auto`, `linkerd`, `lameduck`, or none.
    pub(crate) default_profile: Option<String>,
    /// `None` without `--webhook-addr`.
    pub(crate) webhook: Option<WebhookSettings>,
    /// `--upgrade-crd`: the operator applies its release's CRD at start.
    pub(crate) upgrade_crd: bool,
}

/// The webhook's objects, as the operator's flags name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebhookSettings {
    pub(crate) service: String,
    /// The Secret's and the Service's namespace.
    pub(crate) namespace: String,
    pub(crate) secret: String,
    /// Empty: the operator keeps no such configuration.
    pub(crate) mutating: String,
    pub(crate) validating: String,
}

/// A container's command line and literal environment, read as the operator's clap parser reads
/// them: a flag given on the command line wins over its environment variable.
struct Flags<'a> {
    tokens: Vec<&'a str>,
    env: BTreeMap<&'a str, Option<&'a str>>,
}

impl<'a> Flags<'a> {
    fn of(container: &'a Container) -> Self {
        let tokens = lameduck_api::shape::argv(container).collect();
        let env =
            container.env.iter().flatten().map(|var| (var.name.as_str(), var.value.as_deref())).collect();
        Self { tokens, env }
    }

    /// Every value `--flag` is given, as `--flag=v` or `--flag v`, else its environment variable's.
    fn values(&self, flag: &str, env: &str) -> Vec<&'a str> {
        let mut out: Vec<&'a str> = Vec::new();
        let mut tokens = self.tokens.iter().copied();
        while let Some(token) = tokens.next() {
            let Some(rest) = token.strip_prefix("--").and_then(|t| t.strip_prefix(flag)) else { continue };
            if let Some(value) = rest.strip_prefix('=') {
                out.push(value);
            } else if rest.is_empty()
                && let Some(value) = tokens.next()
            {
                out.push(value);
            }
        }
        if out.is_empty()
            && let Some(Some(value)) = self.env.get(env)
        {
            out.push(value);
        }
        out
    }

    /// Whether a switch is on: given bare or `=true`, else its environment variable is `true`.
    fn switch(&self, flag: &str, env: &str) -> bool {
        let given = self.tokens.iter().rev().find_map(|token| {
            let rest = token.strip_prefix("--")?.strip_prefix(flag)?;
            match rest {
                "" => Some(true),
                _ => Some(rest.strip_prefix('=')? == "true"),
            }
        });
        given.unwrap_or_else(|| matches!(self.env.get(env), Some(Some("true" | "1" | "yes" | "on"))))
    }

    /// The last value of a flag.
    fn value(&self, flag: &str, env: &str) -> Option<String> {
        self.values(flag, env).last().map(|v| (*v).to_owned())
    }

    /// Every value of a list flag, split at commas.
    fn list(&self, flag: &str, env: &str) -> Vec<String> {
        let values = self.values(flag, env);
        values.iter().flat_map(|v| v.split(',')).filter(|v| !v.is_empty()).map(str::to_owned).collect()
    }
}

impl Settings {
    /// Reads the operator's flags from its container in a Deployment in `namespace`, with the
    /// operator's defaults for what is not given.
    pub(crate) fn of_container(container: &Container, namespace: &str) -> Self {
        let flags = Flags::of(container);
        let namespaces = flags.list("namespace", env::OPERATOR_NAMESPACE);
        // As the operator does: --lease-namespace, else its pod's namespace ($POD_NAMESPACE, which
        // the chart sets from the downward API), else the first watched namespace.
        let pod_namespace = flags.env.get(env::POD_NAMESPACE).map(|v| v.unwrap_or(namespace).to_owned());
        let lease_namespace = flags
            .value("lease-namespace", env::OPERATOR_LEASE_NAMESPACE)
            .or(pod_namespace)
            .or_else(|| namespaces.first().cloned())
            .unwrap_or_else(|| "default".to_owned());
        let webhook = flags.value("webhook-addr", env::OPERATOR_WEBHOOK_ADDR).map(|_| WebhookSettings {
            service: flags
                .value("webhook-service", env::OPERATOR_WEBHOOK_SERVICE)
                .unwrap_or_else(|| webhook::SERVICE.to_owned()),
            namespace: flags
                .value("webhook-secret-namespace", env::OPERATOR_WEBHOOK_SECRET_NAMESPACE)
                .unwrap_or_else(|| lease_namespace.clone()),
            secret: flags
                .value("webhook-secret", env::OPERATOR_WEBHOOK_SECRET)
                .unwrap_or_else(|| webhook::SECRET.to_owned()),
            mutating: flags
                .value("mutating-webhook-configuration", env::OPERATOR_MUTATING_CONFIGURATION)
                .unwrap_or_else(|| webhook::CONFIGURATION.to_owned()),
            validating: flags
                .value("validating-webhook-configuration", env::OPERATOR_VALIDATING_CONFIGURATION)
                .unwrap_or_else(|| webhook::CONFIGURATION.to_owned()),
        });
        Self {
            exclude_namespaces: flags.list("exclude-namespace", env::OPERATOR_EXCLUDE_NAMESPACES),
            lease_name: flags
                .value("lease-name", env::OPERATOR_LEASE_NAME)
                .unwrap_or_else(|| operator::LEASE_NAME.to_owned()),
            default_profile: flags
                .value("default-profile", env::OPERATOR_DEFAULT_PROFILE)
                .filter(|p| !p.is_empty()),
            upgrade_crd: flags.switch("upgrade-crd", env::OPERATOR_UPGRADE_CRD),
            namespaces,
            lease_namespace,
            webhook,
        }
    }

    /// Where the operator acts: its watched namespaces (or all) but the excluded ones.
    pub(crate) fn scope(&self) -> Scope {
        let except: BTreeSet<String> = self.exclude_namespaces.iter().cloned().collect();
        if self.namespaces.is_empty() {
            Scope::All { except }
        } else {
            Scope::Namespaces(self.namespaces.iter().filter(|ns| !except.contains(*ns)).cloned().collect())
        }
    }
}

/// The operator's leader-election Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) holder: Option<String>,
    pub(crate) renewed: Option<Timestamp>,
    pub(crate) duration_seconds: Option<i32>,
    /// The API server's clock when it answered (its `Date`), so that a CLI machine whose clock
    /// is off does not misjudge a fresh renewal.
    pub(crate) read_at: Timestamp,
}

/// The admission webhook's objects.
#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    /// `None`: not found.
    pub(crate) mutating: Fetched<Option<WebhookConfiguration>>,
    pub(crate) validating: Fetched<Option<WebhookConfiguration>>,
    /// Each Service the configurations point to.
    pub(crate) services: Vec<ServiceState>,
    pub(crate) probe: Probe,
}

/// A Mutating- or ValidatingWebhookConfiguration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WebhookConfiguration {
    pub(crate) name: String,
    pub(crate) webhooks: Vec<WebhookEntry>,
}

/// One webhook of a configuration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WebhookEntry {
    pub(crate) name: String,
    /// Whether its `clientConfig.caBundle` is set (the operator's leader patches it in).
    pub(crate) has_ca_bundle: bool,
    /// `None` for a webhook called by URL.
    pub(crate) service: Option<ServiceRef>,
    /// `Fail` or `Ignore` (Kubernetes' default is `Fail`).
    pub(crate) failure_policy: String,
    pub(crate) namespace_selector: LabelSelector,
    pub(crate) object_selector: LabelSelector,
}

/// A Service, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ServiceRef {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// Whether a webhook's Service is there and has somewhere to send requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceState {
    pub(crate) service: ServiceRef,
    pub(crate) exists: Fetched<bool>,
    /// Ready endpoints in its EndpointSlices.
    pub(crate) ready_endpoints: Fetched<usize>,
}

/// The dry-run pod sent through the mutating webhook, and what came back.
#[derive(Debug, Clone)]
pub(crate) enum Probe {
    /// None was sent, and why.
    NotSent(String),
    Sent {
        plan: Box<ProbePlan>,
        outcome: Fetched<Admission>,
    },
}

/// Where the probe pod goes and what it should come back with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProbePlan {
    pub(crate) namespace: String,
    /// The ShutdownPolicy that selects the pod: the webhook marks the pod with its name.
    pub(crate) policy: Option<String>,
    /// The webhook's name, as the API server's messages quote it.
    pub(crate) webhook: String,
    /// The webhook's `failurePolicy`.
    pub(crate) failure_policy: String,
    pub(crate) pod: Pod,
}

/// What the API server answered to the dry-run create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Admitted; the `lameduck.io/policy` annotation the webhook sets, if it came back with it.
    Admitted { policy: Option<String> },
    /// Refused, with the API server's message.
    Refused(String),
}

/// What a permission is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Purpose {
    /// Watching pods and policies, patching pods, events, policy status: every install.
    Core,
    /// One set of the chart's `rbac.methods`.
    Method(MethodRbac),
    /// The leader-election Lease.
    LeaderElection,
    /// The webhook's Secret, its configurations' CA bundle, and its SubjectAccessReviews.
    Webhook,
    /// Reading and applying the ShutdownPolicy CRD (`--upgrade-crd`).
    CrdUpgrade,
}

/// The chart's `rbac.methods`: the permissions of one or two shutdown methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum MethodRbac {
    Exec,
    PortForward,
    /// `EphemeralContainer` and `Signal`.
    EphemeralContainers,
}

/// One permission the operator's ServiceAccount needs, as a SubjectAccessReview asks it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Need {
    pub(crate) purpose: Purpose,
    /// `None`: cluster-wide.
    pub(crate) namespace: Option<String>,
    pub(crate) group: String,
    pub(crate) resource: String,
    pub(crate) subresource: Option<String>,
    pub(crate) verb: String,
    /// The one object the permission is limited to, for rules with `resourceNames`.
    pub(crate) name: Option<String>,
}

impl Need {
    /// As `kubectl auth can-i` names it: `create pods/exec`, `patch leases/NAME`.
    pub(crate) fn describe(&self) -> String {
        let group = if self.group.is_empty() { String::new() } else { format!(".{}", self.group) };
        let sub = self.subresource.as_deref().map(|s| format!("/{s}")).unwrap_or_default();
        let name = self.name.as_deref().map(|n| format!(" {n}")).unwrap_or_default();
        format!("{} {}{group}{sub}{name}", self.verb, self.resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(yaml: &str) -> Container {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn the_charts_flags_are_read_with_the_operators_defaults() {
        let chart = container(
            "name: operator
args:
  - --lease-name=rel-lameduck
  - --exclude-namespace=kube-system,lameduck-system
  - --namespace=a,b
  - --default-profile=auto
  - --webhook-addr=0.0.0.0:9443
  - --webhook-secret=rel-lameduck-webhook-tls
  - --webhook-service=rel-lameduck-webhook
  - --mutating-webhook-configuration=rel-lameduck
  - --validating-webhook-configuration=rel-lameduck
  - --upgrade-crd
env:
  - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}",
        );
        let settings = Settings::of_container(&chart, "lameduck-system");
        assert_eq!(settings.namespaces, ["a", "b"]);
        assert_eq!(settings.exclude_namespaces, ["kube-system", "lameduck-system"]);
        assert_eq!(
            (settings.lease_namespace.as_str(), settings.lease_name.as_str()),
            ("lameduck-system", "rel-lameduck")
        );
        assert_eq!(settings.default_profile.as_deref(), Some("auto"));
        assert!(settings.upgrade_crd);
        let webhook = settings.webhook.unwrap();
        assert_eq!(webhook.service, "rel-lameduck-webhook");
        assert_eq!(webhook.namespace, "lameduck-system");
        assert_eq!(
            (webhook.mutating.as_str(), webhook.validating.as_str()),
            ("rel-lameduck", "rel-lameduck")
        );
    }

    #[test]
    fn flags_as_separate_words_and_env_vars_count_too_and_the_command_line_wins() {
        let c = container(
            "name: operator
args: [--namespace, a, --namespace, b, --lease-name, x]
env:
  - {name: LAMEDUCK_OPERATOR_NAMESPACE, value: ignored}
  - {name: LAMEDUCK_OPERATOR_LEASE_NAME, value: ignored}
  - {name: LAMEDUCK_OPERATOR_EXCLUDE_NAMESPACES, value: 'c,d'}",
        );
        let settings = Settings::of_container(&c, "ns");
        assert_eq!(settings.namespaces, ["a", "b"]);
        assert_eq!(settings.lease_name, "x");
        assert_eq!(settings.exclude_namespaces, ["c", "d"]);
        // No $POD_NAMESPACE: the first watched namespace, as the operator chooses.
        assert_eq!(settings.lease_namespace, "a");
        assert_eq!(settings.webhook, None);
        assert!(!settings.upgrade_crd);
        let switched = |yaml: &str| Settings::of_container(&container(yaml), "ns").upgrade_crd;
        assert!(switched("name: o\nenv: [{name: LAMEDUCK_OPERATOR_UPGRADE_CRD, value: 'true'}]"));
        assert!(!switched(
            "name: o\nargs: ['--upgrade-crd=false']\nenv: [{name: LAMEDUCK_OPERATOR_UPGRADE_CRD, value: 'true'}]"
        ));
    }

    #[test]
    fn defaults_without_flags() {
        let settings = Settings::of_container(&container("name: operator"), "ns");
        assert_eq!(settings.lease_name, operator::LEASE_NAME);
        assert_eq!(settings.lease_namespace, "default");
        assert_eq!(settings.scope(), Scope::everywhere());
        let hooked = Settings::of_container(&container("name: o\nargs: ['--webhook-addr=0.0.0.0:1']"), "ns");
        let webhook = hooked.webhook.unwrap();
        assert_eq!(
            (webhook.service.as_str(), webhook.mutating.as_str()),
            (webhook::SERVICE, webhook::CONFIGURATION)
        );
        // A flag whose name only starts like another's is not it.
        let other = Settings::of_container(&container("name: o\nargs: ['--namespaces-extra=x']"), "ns");
        assert!(other.namespaces.is_empty());
    }

    #[test]
    fn scopes_join_and_describe_themselves() {
        let set = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<BTreeSet<_>>();
        let all_but = |names: &[&str]| Scope::All { except: set(names) };
        assert_eq!(all_but(&["a", "b"]).union(all_but(&["b", "c"])), all_but(&["b"]));
        assert_eq!(all_but(&["a", "b"]).union(Scope::Namespaces(set(&["a"]))), all_but(&["b"]));
        assert_eq!(
            Scope::Namespaces(set(&["a"])).union(Scope::Namespaces(set(&["b"]))),
            Scope::Namespaces(set(&["a", "b"]))
        );
        assert_eq!(all_but(&["kube-system"]).describe(), "all namespaces but kube-system");
        assert_eq!(Scope::Namespaces(set(&["a"])).describe(), "namespace a");
        assert!(!all_but(&["a"]).contains("a") && all_but(&["a"]).contains("b"));
        let settings = Settings {
            namespaces: vec!["a".into(), "x".into()],
            exclude_namespaces: vec!["x".into()],
            ..Settings::of_container(&Container::default(), "ns")
        };
        assert_eq!(settings.scope(), Scope::Namespaces(set(&["a"])));
    }

    #[test]
    fn needs_read_as_kubectl_auth_can_i() {
        let need = |resource: &str, sub: Option<&str>, group: &str, name: Option<&str>| Need {
            purpose: Purpose::Core,
            namespace: None,
            group: group.into(),
            resource: resource.into(),
            subresource: sub.map(Into::into),
            verb: "create".into(),
            name: name.map(Into::into),
        };
        assert_eq!(need("pods", Some("exec"), "", None).describe(), "create pods/exec");
        assert_eq!(
            need("leases", None, "coordination.k8s.io", Some("l")).describe(),
            "create leases.coordination.k8s.io l"
        );
    }
}
