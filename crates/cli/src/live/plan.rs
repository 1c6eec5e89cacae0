//! What `fetch` must ask the cluster once it has read the operator's Deployment, decided by pure
//! functions: the permissions its ServiceAccount needs (the chart's RBAC files, rule by rule),
//! and where a dry-run pod shows whether the mutating webhook answers.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Container, Pod, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext},
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};
use kube::{
    CustomResourceExt, ResourceExt,
    core::{Selector, SelectorExt},
};
use lameduck_api::{ShutdownPolicy, names::images, selection};

use super::facts::{MethodRbac, Need, ProbePlan, Purpose, Scope, Settings, WebhookEntry};

/// One rule of the chart's RBAC files (`deploy/lameduck/files/rbac/`): `resource` may carry a
/// subresource (`pods/exec`); `named` rules carry `resourceNames` there, which the chart narrows
/// to the release's own object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) group: &'static str,
    pub(crate) resource: &'static str,
    pub(crate) verbs: &'static [&'static str],
    pub(crate) named: bool,
}

const fn rule(group: &'static str, resource: &'static str, verbs: &'static [&'static str]) -> Rule {
    Rule { group, resource, verbs, named: false }
}

const fn named(group: &'static str, resource: &'static str, verbs: &'static [&'static str]) -> Rule {
    Rule { group, resource, verbs, named: true }
}

/// `operator.yaml`: where the operator watches.
pub(crate) const CORE: &[Rule] = &[
    rule("", "pods", &["get", "list", "watch", "patch"]),
    rule("events.k8s.io", "events", &["create"]),
    rule("lameduck.io", "shutdownpolicies", &["get", "list", "watch"]),
    rule("lameduck.io", "shutdownpolicies/status", &["patch"]),
];
/// `exec.yaml`.
pub(crate) const EXEC: &[Rule] = &[rule("", "pods/exec", &["get", "create"])];
/// `portforward.yaml`.
pub(crate) const PORT_FORWARD: &[Rule] = &[rule("", "pods/portforward", &["get", "create"])];
/// `ephemeral-containers.yaml`.
pub(crate) const EPHEMERAL_CONTAINERS: &[Rule] = &[rule("", "pods/ephemeralcontainers", &["patch"])];
/// `leader-election.yaml`: in the Lease's namespace.
pub(crate) const LEADER_ELECTION: &[Rule] = &[
    rule("coordination.k8s.io", "leases", &["create"]),
    named("coordination.k8s.io", "leases", &["get", "list", "watch", "patch"]),
];
/// `webhook-secret.yaml`: in the Secret's namespace.
pub(crate) const WEBHOOK_SECRET: &[Rule] =
    &[rule("", "secrets", &["create"]), named("", "secrets", &["get", "update"])];
/// `webhook-configurations.yaml`: cluster-wide, on each configuration by name.
pub(crate) const WEBHOOK_CONFIGURATIONS: &[Rule] = &[
    named("admissionregistration.k8s.io", "mutatingwebhookconfigurations", &["get", "patch"]),
    named("admissionregistration.k8s.io", "validatingwebhookconfigurations", &["get", "patch"]),
];
/// `crd.yaml`: cluster-wide, on the ShutdownPolicy CRD by name.
pub(crate) const CRD: &[Rule] =
    &[named("apiextensions.k8s.io", "customresourcedefinitions", &["get", "patch"])];
/// `subject-access-reviews.yaml`: cluster-wide.
pub(crate) const SUBJECT_ACCESS_REVIEWS: &[Rule] =
    &[rule("authorization.k8s.io", "subjectaccessreviews", &["create"])];

impl MethodRbac {
    pub(crate) const ALL: [Self; 3] = [Self::Exec, Self::PortForward, Self::EphemeralContainers];

    pub(crate) fn rules(self) -> &'static [Rule] {
        match self {
            Self::Exec => EXEC,
            Self::PortForward => PORT_FORWARD,
            Self::EphemeralContainers => EPHEMERAL_CONTAINERS,
        }
    }

    /// The chart value that grants it.
    pub(crate) fn chart_value(self) -> &'static str {
        match self {
            Self::Exec => "rbac.methods.exec",
            Self::PortForward => "rbac.methods.portForward",
            Self::EphemeralContainers => "rbac.methods.ephemeralContainers",
        }
    }

    /// The methods that need it.
    pub(crate) fn methods(self) -> &'static [lameduck_api::ShutdownMethod] {
        use lameduck_api::ShutdownMethod as M;
        match self {
            Self::Exec => &[M::Exec],
            Self::PortForward => &[M::PortForward],
            Self::EphemeralContainers => &[M::EphemeralContainer, M::Signal],
        }
    }

    /// For messages: `Exec`, `EphemeralContainer and Signal`.
    pub(crate) fn describe(self) -> String {
        self.methods().iter().map(|m| m.as_str()).collect::<Vec<_>>().join(" and ")
    }
}

/// Every (verb, resource) of `rules`, as needs in `namespace`, for `purpose`; named rules are
/// limited to `name`.
fn expand(purpose: Purpose, namespace: Option<&str>, rules: &[Rule], name: Option<&str>) -> Vec<Need> {
    let mut needs = Vec::new();
    for rule in rules {
        let (resource, subresource) = match rule.resource.split_once('/') {
            Some((resource, sub)) => (resource, Some(sub.to_owned())),
            None => (rule.resource, None),
        };
        for verb in rule.verbs {
            needs.push(Need {
                purpose,
                namespace: namespace.map(str::to_owned),
                group: rule.group.to_owned(),
                resource: resource.to_owned(),
                subresource: subresource.clone(),
                verb: (*verb).to_owned(),
                name: if rule.named { name.map(str::to_owned) } else { None },
            });
        }
    }
    needs
}

/// Every permission the operator run with `settings` needs: the core rules and each method's
/// where it watches (each watched namespace, or cluster-wide), its Lease's, and the webhook's.
pub(crate) fn needs(settings: &Settings) -> Vec<Need> {
    let scope = settings.scope();
    let watched: Vec<Option<&str>> = match &scope {
        Scope::All { .. } => vec![None],
        Scope::Namespaces(namespaces) => namespaces.iter().map(|ns| Some(ns.as_str())).collect(),
    };
    let mut needs = Vec::new();
    for namespace in &watched {
        needs.extend(expand(Purpose::Core, *namespace, CORE, None));
        for method in MethodRbac::ALL {
            needs.extend(expand(Purpose::Method(method), *namespace, method.rules(), None));
        }
    }
    needs.extend(expand(
        Purpose::LeaderElection,
        Some(&settings.lease_namespace),
        LEADER_ELECTION,
        Some(&settings.lease_name),
    ));
    if let Some(webhook) = &settings.webhook {
        needs.extend(expand(
            Purpose::Webhook,
            Some(&webhook.namespace),
            WEBHOOK_SECRET,
            Some(&webhook.secret),
        ));
        for (rule, name) in WEBHOOK_CONFIGURATIONS.iter().zip([&webhook.mutating, &webhook.validating]) {
            if !name.is_empty() {
                needs.extend(expand(Purpose::Webhook, None, std::slice::from_ref(rule), Some(name)));
            }
        }
        needs.extend(expand(Purpose::Webhook, None, SUBJECT_ACCESS_REVIEWS, None));
    }
    if settings.upgrade_crd {
        needs.extend(expand(Purpose::CrdUpgrade, None, CRD, Some(ShutdownPolicy::crd_name())));
    }
    needs
}

/// The name the probe pods are generated from.
pub(crate) const PROBE_NAME: &str = "lameduck-check-";
/// The probe pod's main container (not a name any proxy profile uses).
const PROBE_CONTAINER: &str = "lameduck-check";

/// Labels that every selector matches, built from their `matchLabels` and `In`/`Exists`
/// expressions; `None` when no such labels are found that way.
fn labels_for(selectors: &[&LabelSelector]) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for selector in selectors {
        for (key, value) in selector.match_labels.iter().flatten() {
            if labels.insert(key.clone(), value.clone()).is_some_and(|before| before != *value) {
                return None;
            }
        }
    }
    for selector in selectors {
        for expression in selector.match_expressions.iter().flatten() {
            let value = match expression.operator.as_str() {
                "In" => expression.values.iter().flatten().next().cloned(),
                "Exists" => Some("lameduck-check".to_owned()),
                _ => None,
            };
            if let Some(value) = value {
                labels.entry(expression.key.clone()).or_insert(value);
            }
        }
    }
    let all_match = selectors
        .iter()
        .all(|s| Selector::try_from((*s).clone()).is_ok_and(|selector| selector.matches(&labels)));
    all_match.then_some(labels)
}

/// A pod that Pod Security's `restricted` level admits, with a main container and, when given,
/// the proxy container a policy drains (the webhook changes only pods that have one). Never run:
/// it is created with `dryRun`.
pub(crate) fn probe_pod(labels: BTreeMap<String, String>, proxy: Option<&str>) -> Pod {
    let container = |name: &str| Container {
        name: name.to_owned(),
        image: Some(images::PROXY.to_owned()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let mut containers = vec![container(PROBE_CONTAINER)];
    containers.extend(proxy.map(container));
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(PROBE_NAME.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers,
            restart_policy: Some("Never".to_owned()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// Where a dry-run pod shows whether the mutating webhook `entry` answers, or why nowhere does.
///
/// The webhook changes only pods a ShutdownPolicy selects, marking them with the policy's name;
/// so the probe goes to a namespace the webhook selects and the operator watches, labelled for
/// one of its policies, with that policy's proxy container. Without such a policy a plain pod
/// tells something only under `failurePolicy: Fail` (admitted means answered); under `Ignore`
/// an unanswered pod is admitted just the same.
pub(crate) fn probe(
    entry: &WebhookEntry,
    namespaces: &[(String, BTreeMap<String, String>)],
    scope: &Scope,
    policies: &[ShutdownPolicy],
) -> Result<ProbePlan, String> {
    let selector = Selector::try_from(entry.namespace_selector.clone())
        .map_err(|err| format!("the webhook's namespaceSelector cannot be read: {err}"))?;
    let candidates: Vec<&str> = namespaces
        .iter()
        .filter(|(name, labels)| scope.contains(name) && selector.matches(labels))
        .map(|(name, _)| name.as_str())
        .collect();
    if candidates.is_empty() {
        return Err(format!(
            "the webhook's namespaceSelector selects no namespace the operator watches ({})",
            scope.describe()
        ));
    }
    for namespace in &candidates {
        let mut own: Vec<&ShutdownPolicy> =
            policies.iter().filter(|p| p.namespace().as_deref() == Some(*namespace)).collect();
        own.sort_by(|a, b| selection::oldest_first(a, b));
        for policy in &own {
            let Some(labels) = labels_for(&[&policy.spec.selector, &entry.object_selector]) else { continue };
            let Some(winner) = selection::select(own.iter().copied(), Some(namespace), &labels).winner else {
                continue;
            };
            let proxy = winner.spec.mesh_proxy().resolve().container_name;
            return Ok(ProbePlan {
                namespace: (*namespace).to_owned(),
                policy: Some(winner.name_any()),
                webhook: entry.name.clone(),
                failure_policy: entry.failure_policy.clone(),
                pod: probe_pod(labels, Some(&proxy)),
            });
        }
    }
    if entry.failure_policy == "Fail"
        && let Some(labels) = labels_for(&[&entry.object_selector])
    {
        return Ok(ProbePlan {
            namespace: candidates[0].to_owned(),
            policy: None,
            webhook: entry.name.clone(),
            failure_policy: entry.failure_policy.clone(),
            pod: probe_pod(labels, None),
        });
    }
    Err(format!(
        "no ShutdownPolicy in a namespace the webhook selects ({}) selects a pod it could be sent: \
         the webhook changes only pods a policy selects, and with failurePolicy {} a pod it does not \
         answer for is admitted the same way",
        candidates.join(", "),
        entry.failure_policy
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each rule table is what the chart's file of the same purpose grants, so the check asks
    /// for exactly what the chart gives.
    #[test]
    fn the_rule_tables_are_the_charts_rbac_files() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/lameduck/files/rbac");
        for (file, table) in [
            ("operator.yaml", CORE),
            ("exec.yaml", EXEC),
            ("portforward.yaml", PORT_FORWARD),
            ("ephemeral-containers.yaml", EPHEMERAL_CONTAINERS),
            ("leader-election.yaml", LEADER_ELECTION),
            ("webhook-secret.yaml", WEBHOOK_SECRET),
            ("webhook-configurations.yaml", WEBHOOK_CONFIGURATIONS),
            ("subject-access-reviews.yaml", SUBJECT_ACCESS_REVIEWS),
            ("crd.yaml", CRD),
        ] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let rules: Vec<serde_json::Value> = serde_yaml_ng::from_str(&text).unwrap();
            let mut from_file = Vec::new();
            for rule in &rules {
                for group in rule["apiGroups"].as_array().unwrap() {
                    for resource in rule["resources"].as_array().unwrap() {
                        let verbs: Vec<&str> =
                            rule["verbs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
                        // The chart narrows every rule of these files to the release's two
                        // configurations, or to the one CRD, by name (templates/rbac.yaml).
                        let named = rule.get("resourceNames").is_some()
                            || ["webhook-configurations.yaml", "crd.yaml"].contains(&file);
                        from_file.push((
                            group.as_str().unwrap().to_owned(),
                            resource.as_str().unwrap().to_owned(),
                            verbs,
                            named,
                        ));
                    }
                }
            }
            let ours: Vec<_> = table
                .iter()
                .map(|r| (r.group.to_owned(), r.resource.to_owned(), r.verbs.to_vec(), r.named))
                .collect();
            assert_eq!(ours, from_file, "{file}");
        }
    }

    fn settings(args: &str) -> Settings {
        let container: Container = serde_yaml_ng::from_str(&format!("name: operator\nargs: {args}")).unwrap();
        Settings::of_container(&container, "lameduck-system")
    }

    #[test]
    fn needs_cover_each_watched_namespace_the_lease_and_the_webhook() {
        let namespaced = needs(&settings("['--namespace=a,b', '--lease-namespace=sys', '--lease-name=l']"));
        let in_ns = |ns: &str| namespaced.iter().filter(|n| n.namespace.as_deref() == Some(ns)).count();
        // Core: 4 + 1 + 3 + 1 verbs; methods: 2 + 2 + 1.
        assert_eq!((in_ns("a"), in_ns("b")), (14, 14));
        assert_eq!(in_ns("sys"), 5);
        assert!(namespaced.iter().all(|n| n.purpose != Purpose::Webhook));
        let exec: Vec<String> = namespaced
            .iter()
            .filter(|n| n.purpose == Purpose::Method(MethodRbac::Exec) && n.namespace.as_deref() == Some("a"))
            .map(Need::describe)
            .collect();
        assert_eq!(exec, ["get pods/exec", "create pods/exec"]);
        let lease: Vec<String> =
            namespaced.iter().filter(|n| n.purpose == Purpose::LeaderElection).map(Need::describe).collect();
        assert_eq!(lease[0], "create leases.coordination.k8s.io");
        assert_eq!(lease[1], "get leases.coordination.k8s.io l");

        let cluster = needs(&settings("['--webhook-addr=0.0.0.0:9443', '--exclude-namespace=kube-system']"));
        assert_eq!(cluster.iter().filter(|n| n.purpose == Purpose::Core).count(), 9);
        assert!(cluster.iter().all(|n| n.purpose != Purpose::CrdUpgrade));
        let upgrading = needs(&settings("['--upgrade-crd']"));
        let crd: Vec<String> =
            upgrading.iter().filter(|n| n.purpose == Purpose::CrdUpgrade).map(Need::describe).collect();
        assert_eq!(
            crd,
            [
                "get customresourcedefinitions.apiextensions.k8s.io shutdownpolicies.lameduck.io",
                "patch customresourcedefinitions.apiextensions.k8s.io shutdownpolicies.lameduck.io"
            ]
        );
        assert!(cluster.iter().filter(|n| n.purpose == Purpose::Core).all(|n| n.namespace.is_none()));
        let webhook: Vec<String> =
            cluster.iter().filter(|n| n.purpose == Purpose::Webhook).map(Need::describe).collect();
        assert_eq!(
            webhook,
            [
                "create secrets",
                "get secrets lameduck-webhook-tls",
                "update secrets lameduck-webhook-tls",
                "get mutatingwebhookconfigurations.admissionregistration.k8s.io lameduck",
                "patch mutatingwebhookconfigurations.admissionregistration.k8s.io lameduck",
                "get validatingwebhookconfigurations.admissionregistration.k8s.io lameduck",
                "patch validatingwebhookconfigurations.admissionregistration.k8s.io lameduck",
                "create subjectaccessreviews.authorization.k8s.io",
            ]
        );
    }

    fn entry(namespace_selector: &str, failure_policy: &str) -> WebhookEntry {
        WebhookEntry {
            name: "pods.lameduck.io".into(),
            has_ca_bundle: true,
            service: None,
            failure_policy: failure_policy.into(),
            namespace_selector: serde_yaml_ng::from_str(namespace_selector).unwrap(),
            object_selector: LabelSelector::default(),
        }
    }

    fn namespace(name: &str) -> (String, BTreeMap<String, String>) {
        (name.to_owned(), BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), name.to_owned())]))
    }

    fn policy(namespace: &str, name: &str, spec: &str) -> ShutdownPolicy {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: lameduck.io/v1alpha1\nkind: ShutdownPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}"
        ))
        .unwrap()
    }

    const NOT_SYSTEM: &str = "{matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, lameduck-system]}]}";

    #[test]
    fn the_probe_goes_where_a_policy_selects_it_with_the_policys_proxy() {
        let namespaces =
            [namespace("kube-system"), namespace("lameduck-system"), namespace("shop"), namespace("web")];
        let policies = [
            policy("kube-system", "p", "{}"),
            policy(
                "web",
                "jobs",
                "{selector: {matchLabels: {app: job}, matchExpressions: [{key: tier, operator: In, values: [batch, x]}, {key: canary, operator: DoesNotExist}]}, proxy: {profile: Lameduck}}",
            ),
        ];
        let plan = probe(&entry(NOT_SYSTEM, "Ignore"), &namespaces, &Scope::everywhere(), &policies).unwrap();
        assert_eq!((plan.namespace.as_str(), plan.policy.as_deref()), ("web", Some("jobs")));
        let labels = plan.pod.metadata.labels.clone().unwrap();
        assert_eq!(labels, BTreeMap::from([("app".into(), "job".into()), ("tier".into(), "batch".into())]));
        let names: Vec<&str> =
            plan.pod.spec.as_ref().unwrap().containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["lameduck-check", "lameduck-proxy"]);
        assert_eq!(plan.pod.metadata.generate_name.as_deref(), Some(PROBE_NAME));
    }

    #[test]
    fn without_a_policy_only_failure_policy_fail_can_tell() {
        let namespaces = [namespace("shop")];
        let fail = probe(&entry("{}", "Fail"), &namespaces, &Scope::everywhere(), &[]).unwrap();
        assert_eq!((fail.namespace.as_str(), fail.policy.as_deref()), ("shop", None));
        assert_eq!(fail.pod.spec.as_ref().unwrap().containers.len(), 1);
        let ignore = probe(&entry("{}", "Ignore"), &namespaces, &Scope::everywhere(), &[]).unwrap_err();
        assert!(
            ignore.starts_with("no ShutdownPolicy in a namespace the webhook selects (shop)"),
            "{ignore}"
        );
    }

    #[test]
    fn no_namespace_selected_or_watched_is_said() {
        let namespaces = [namespace("kube-system"), namespace("shop")];
        let only = Scope::Namespaces(["other".to_owned()].into());
        let err = probe(&entry("{}", "Fail"), &namespaces, &only, &[]).unwrap_err();
        assert_eq!(
            err,
            "the webhook's namespaceSelector selects no namespace the operator watches (namespace other)"
        );
        let bad = probe(
            &entry("{matchExpressions: [{key: a, operator: Bogus}]}", "Fail"),
            &namespaces,
            &Scope::everywhere(),
            &[],
        );
        assert!(bad.unwrap_err().starts_with("the webhook's namespaceSelector cannot be read"));
    }

    #[test]
    fn labels_that_cannot_satisfy_every_selector_are_none() {
        let a: LabelSelector = serde_yaml_ng::from_str("{matchLabels: {app: a}}").unwrap();
        let b: LabelSelector = serde_yaml_ng::from_str("{matchLabels: {app: b}}").unwrap();
        let not_in: LabelSelector =
            serde_yaml_ng::from_str("{matchExpressions: [{key: app, operator: NotIn, values: [a]}]}")
                .unwrap();
        assert_eq!(labels_for(&[&a, &b]), None);
        assert_eq!(labels_for(&[&a, &not_in]), None);
        assert_eq!(labels_for(&[&not_in]), Some(BTreeMap::new()));
    }
}
