//! Every check of `lameduck check --cluster` on fixture facts: a healthy cluster passes them all,
//! and each is broken alone to see it warn or fail with what to do.

use std::collections::BTreeMap;

use k8s_openapi::{api::apps::v1::Deployment, jiff::Timestamp};

use super::*;
use crate::live::{
    facts::{
        Crd, Lease, NodeVersion, ProbePlan, Scope, ServiceRef, Webhook, WebhookConfiguration, WebhookEntry,
    },
    plan,
};

const NOW: &str = "2026-12-01T10:00:00Z";

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

/// The chart's operator Deployment, namespaced to `shop`, with the webhook and `auto`.
fn deployment() -> Deployment {
    serde_yaml_ng::from_str(
        "metadata:
  name: rel-lameduck
  namespace: lameduck-system
  labels: {app.kubernetes.io/instance: rel, app.kubernetes.io/version: VERSION}
spec:
  replicas: 2
  selector: {}
  template:
    spec:
      serviceAccountName: rel-lameduck
      containers:
        - name: operator
          args:
            - --lease-name=rel-lameduck
            - --exclude-namespace=kube-system,lameduck-system
            - --namespace=shop
            - --default-profile=auto
            - --webhook-addr=0.0.0.0:9443
            - --webhook-secret=rel-lameduck-webhook-tls
            - --webhook-service=rel-lameduck-webhook
            - --mutating-webhook-configuration=rel-lameduck
            - --validating-webhook-configuration=rel-lameduck
            - --upgrade-crd
          env:
            - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
status: {readyReplicas: 2}
"
        .replace("VERSION", build::VERSION)
        .as_str(),
    )
    .unwrap()
}

fn webhook_entry(name: &str) -> WebhookEntry {
    WebhookEntry {
        name: name.into(),
        has_ca_bundle: true,
        service: Some(service_ref()),
        failure_policy: "Ignore".into(),
        namespace_selector: Default::default(),
        object_selector: Default::default(),
    }
}

fn service_ref() -> ServiceRef {
    ServiceRef { namespace: "lameduck-system".into(), name: "rel-lameduck-webhook".into() }
}

fn policy(namespace: &str, name: &str, spec: &str) -> ShutdownPolicy {
    serde_yaml_ng::from_str(&format!(
        "apiVersion: lameduck.io/v1alpha1\nkind: ShutdownPolicy\nmetadata: {{name: {name}, namespace: {namespace}, creationTimestamp: '2026-11-01T00:00:00Z'}}\nspec: {spec}"
    ))
    .unwrap()
}

/// The webhook's probe plan for `policy` in shop.
fn probe_plan(policy: Option<&str>) -> ProbePlan {
    ProbePlan {
        namespace: "shop".into(),
        policy: policy.map(Into::into),
        webhook: "pods.lameduck.io".into(),
        failure_policy: "Ignore".into(),
        pod: plan::probe_pod(BTreeMap::new(), Some("lameduck-proxy")),
    }
}

fn healthy_operator() -> Operator {
    let mut op = Operator::of_deployment(&deployment());
    op.lease = Ok(Some(Lease {
        namespace: "lameduck-system".into(),
        name: "rel-lameduck".into(),
        holder: Some("rel-lameduck-abc".into()),
        renewed: Some(at("2026-12-01T09:59:57Z")),
        duration_seconds: Some(15),
        read_at: at(NOW),
    }));
    let configuration = |hook: &str| {
        Ok(Some(WebhookConfiguration { name: "rel-lameduck".into(), webhooks: vec![webhook_entry(hook)] }))
    };
    op.webhook = Some(Webhook {
        mutating: configuration("pods.lameduck.io"),
        validating: configuration("shutdownpolicies.lameduck.io"),
        services: vec![ServiceState { service: service_ref(), exists: Ok(true), ready_endpoints: Ok(2) }],
        probe: Probe::Sent {
            plan: Box::new(probe_plan(Some("default"))),
            outcome: Ok(Admission::Admitted { policy: Some("default".into()) }),
        },
    });
    op.access = plan::needs(&op.settings).into_iter().map(|need| (need, Ok(true))).collect();
    op
}

fn healthy() -> Cluster {
    let op = healthy_operator();
    Cluster {
        nodes: Ok(vec![NodeVersion { name: "node-a".into(), kubelet: "v1.34.4".into() }]),
        crd: Ok(Some(Crd {
            name: "shutdownpolicies.lameduck.io".into(),
            version: Some(build::VERSION.into()),
        })),
        operator_namespace: None,
        scope: op.settings.scope(),
        operators: Ok(vec![op]),
        policies: Ok(vec![policy(
            "shop",
            "default",
            "{proxy: {profile: Lameduck}, completion: {methods: [Exec, PortForward]}}",
        )]),
        workloads: Ok(Workloads::default()),
    }
}

fn facts(cluster: Cluster) -> Facts {
    Facts { api: Ok("v1.34.4".into()), cluster: Some(cluster) }
}

fn run(cluster: Cluster) -> Vec<Section> {
    sections(&facts(cluster))
}

/// The one check whose description starts with `prefix`.
fn find<'s>(sections: &'s [Section], prefix: &str) -> &'s Check {
    let found: Vec<&Check> =
        sections.iter().flat_map(|s| &s.checks).filter(|c| c.description.starts_with(prefix)).collect();
    assert_eq!(found.len(), 1, "{prefix:?} in {sections:#?}");
    found[0]
}

/// Every check that is not a pass, as (description, result).
fn not_passing(sections: &[Section]) -> Vec<(String, Outcome)> {
    sections
        .iter()
        .flat_map(|s| &s.checks)
        .filter(|c| c.result != Outcome::Pass)
        .map(|c| (c.description.clone(), c.result))
        .collect()
}

fn operator_mut(cluster: &mut Cluster) -> &mut Operator {
    &mut cluster.operators.as_mut().unwrap()[0]
}

fn webhook_mut(cluster: &mut Cluster) -> &mut Webhook {
    operator_mut(cluster).webhook.as_mut().unwrap()
}

#[test]
fn a_healthy_cluster_passes_every_check() {
    let sections = run(healthy());
    let names: Vec<&str> = sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["Kubernetes API", "CRD", "Operator", "Webhooks", "Permissions", "Workloads", "Stuck pods"]
    );
    assert_eq!(not_passing(&sections), []);
    assert!(Report::new(sections.clone(), true).success);
    assert_eq!(
        find(&sections, "a replica leads").message,
        "rel-lameduck-abc, renewed 3s ago (the Lease lasts 15s)"
    );
    assert_eq!(find(&sections, "can reach the API server").message, "Kubernetes v1.34.4");
    assert_eq!(
        find(&sections, "Exec permissions in namespace shop").message,
        "2 permissions granted to system:serviceaccount:lameduck-system:rel-lameduck"
    );
}

#[test]
fn an_unreachable_api_server_is_the_only_finding() {
    let facts = Facts { api: Err("connection refused".into()), cluster: None };
    let sections = sections(&facts);
    assert_eq!(sections.len(), 1);
    let check = find(&sections, "can reach the API server");
    assert_eq!((check.result, check.message.as_str()), (Outcome::Fail, "connection refused"));
    assert!(check.hint.as_deref().unwrap().contains("--kubeconfig"));
    assert!(!Report::new(sections, false).success);
}

#[test]
fn report_success_follows_failures_and_with_strict_warnings() {
    let warn = Section::new("S", vec![Check::warn("w", "m", "h")]);
    assert!(Report::new(vec![warn.clone()], false).success);
    assert!(!Report::new(vec![warn], true).success);
    let fail = Section::new("S", vec![Check::fail("f", "m", "h")]);
    assert!(!Report::new(vec![fail], false).success);
}

#[test]
fn kubelet_versions_are_read_from_every_form() {
    assert_eq!(minor_version("v1.29.3"), Some((1, 29)));
    assert_eq!(minor_version("v1.28.1-gke.1589017"), Some((1, 28)));
    assert_eq!(minor_version("1.30+"), Some((1, 30)));
    assert_eq!(minor_version(""), None);
}

#[test]
fn kubelets_older_than_1_29_warn_that_only_the_operator_finishes_pods_there() {
    const WHAT: &str = "nodes run native sidecars";
    let mut cluster = healthy();
    cluster.nodes = Ok(vec![
        NodeVersion { name: "new".into(), kubelet: "v1.33.0".into() },
        NodeVersion { name: "ghost".into(), kubelet: String::new() },
    ]);
    let pass = run(cluster.clone());
    assert_eq!(find(&pass, WHAT).result, Outcome::Pass);
    assert_eq!(find(&pass, WHAT).message, "1 node at v1.29 or newer; 1 reports no kubelet version: ghost");

    cluster.nodes = Ok(vec![NodeVersion { name: "old".into(), kubelet: "v1.28.5".into() }]);
    let warned = run(cluster.clone());
    let check = find(&warned, WHAT);
    assert_eq!(check.result, Outcome::Warn);
    assert!(
        check.message.starts_with("a kubelet older than v1.29 on 1 of 1 nodes: old (v1.28.5)."),
        "{}",
        check.message
    );
    assert!(
        check.message.contains("only when lameduck's operator (or lameduck-await -S) stops it"),
        "{}",
        check.message
    );
    assert!(check.hint.as_deref().unwrap().contains("upgrade those nodes"));

    cluster.nodes = Err("nodes is forbidden".into());
    assert_eq!(find(&run(cluster), WHAT).result, Outcome::Fail);
}

#[test]
fn the_crd_must_be_there_and_should_be_this_version() {
    let mut cluster = healthy();
    cluster.crd = Ok(None);
    let missing = run(cluster.clone());
    let check = find(&missing, "the ShutdownPolicy CRD is installed");
    assert_eq!(check.result, Outcome::Fail);
    assert!(check.hint.as_deref().unwrap().starts_with("lameduck crds | kubectl apply -f -"));

    cluster.crd =
        Ok(Some(Crd { name: "shutdownpolicies.lameduck.io".into(), version: Some("0.0.1".into()) }));
    let old = run(cluster.clone());
    let check = find(&old, "the CRD's version matches");
    assert_eq!(check.result, Outcome::Warn);
    assert!(check.message.starts_with("the CRD is lameduck 0.0.1's"), "{}", check.message);

    cluster.crd = Ok(Some(Crd { name: "shutdownpolicies.lameduck.io".into(), version: None }));
    let unmarked = run(cluster.clone());
    assert!(
        find(&unmarked, "the CRD's version matches").message.contains("no lameduck.io/version annotation")
    );

    cluster.crd = Err("forbidden".into());
    assert_eq!(find(&run(cluster), "the ShutdownPolicy CRD is installed").result, Outcome::Fail);
}

#[test]
fn no_operator_fails_and_says_where_it_looked() {
    let mut cluster = healthy();
    cluster.operators = Ok(vec![]);
    cluster.operator_namespace = Some("lameduck-system".into());
    let sections = run(cluster.clone());
    let check = find(&sections, "the operator's Deployment is there");
    assert_eq!(check.result, Outcome::Fail);
    assert!(check.message.contains("app.kubernetes.io/component=operator,app.kubernetes.io/name=lameduck in namespace lameduck-system"), "{}", check.message);
    assert!(check.hint.as_deref().unwrap().starts_with("helm install"));
    // No operator: no webhook or permission sections to show.
    assert!(sections.iter().all(|s| s.name != "Webhooks" && s.name != "Permissions"));

    cluster.operators = Err("deployments.apps is forbidden".into());
    assert_eq!(find(&run(cluster), "the operator's Deployment is there").result, Outcome::Fail);
}

#[test]
fn replicas_scaled_to_zero_or_not_ready_fail_and_a_partial_rollout_warns() {
    const READY: &str = "the operator's replicas are ready";
    let mut cluster = healthy();
    operator_mut(&mut cluster).replicas = 0;
    operator_mut(&mut cluster).ready_replicas = 0;
    let scaled = run(cluster.clone());
    let check = find(&scaled, READY);
    assert_eq!(check.result, Outcome::Fail);
    assert!(check.message.starts_with("scaled to 0 replicas"));
    assert_eq!(
        check.hint.as_deref(),
        Some("kubectl -n lameduck-system scale deploy/rel-lameduck --replicas=2")
    );

    operator_mut(&mut cluster).replicas = 2;
    let down = run(cluster.clone());
    let check = find(&down, READY);
    assert_eq!((check.result, check.message.starts_with("0 of 2 ready")), (Outcome::Fail, true));
    assert!(check.hint.as_deref().unwrap().contains("kubectl -n lameduck-system logs deploy/rel-lameduck"));

    operator_mut(&mut cluster).ready_replicas = 1;
    assert_eq!(find(&run(cluster), READY).result, Outcome::Warn);
}

#[test]
fn another_operator_version_warns() {
    let mut cluster = healthy();
    operator_mut(&mut cluster).version = Some("0.0.1".into());
    let check = run(cluster.clone());
    assert_eq!(find(&check, "the operator's version matches").result, Outcome::Warn);
    operator_mut(&mut cluster).version = None;
    assert_eq!(find(&run(cluster), "the operator's version matches").result, Outcome::Warn);
}

#[test]
fn the_leader_must_hold_a_fresh_lease() {
    const LEADS: &str = "a replica leads (Lease lameduck-system/rel-lameduck)";
    fn lease(cluster: &mut Cluster) -> &mut Lease {
        operator_mut(cluster).lease.as_mut().unwrap().as_mut().unwrap()
    }
    let mut cluster = healthy();
    lease(&mut cluster).renewed = Some(at("2026-12-01T09:59:40Z"));
    let expired = run(cluster.clone());
    let check = find(&expired, LEADS);
    assert_eq!(check.result, Outcome::Fail);
    assert!(
        check.message.contains("last renewed it 20s ago, longer than it lasts (15s)"),
        "{}",
        check.message
    );

    lease(&mut cluster).holder = None;
    let released = run(cluster.clone());
    assert!(find(&released, LEADS).message.starts_with("nobody holds the Lease"));

    lease(&mut cluster).holder = Some("x".into());
    lease(&mut cluster).renewed = None;
    assert_eq!(find(&run(cluster.clone()), LEADS).result, Outcome::Fail);

    operator_mut(&mut cluster).lease = Ok(None);
    assert!(find(&run(cluster.clone()), LEADS).message.starts_with("the Lease does not exist"));
    operator_mut(&mut cluster).lease = Err("forbidden".into());
    assert_eq!(find(&run(cluster), LEADS).result, Outcome::Fail);
}

#[test]
fn webhook_configurations_need_their_ca_bundle() {
    const MUTATING: &str = "MutatingWebhookConfiguration rel-lameduck has a CA bundle";
    let mut cluster = healthy();
    if let Ok(Some(configuration)) = &mut webhook_mut(&mut cluster).mutating {
        configuration.webhooks[0].has_ca_bundle = false;
    }
    let unpatched = run(cluster.clone());
    let check = find(&unpatched, MUTATING);
    assert_eq!(check.result, Outcome::Fail);
    assert!(check.message.starts_with("no caBundle on pods.lameduck.io"), "{}", check.message);

    webhook_mut(&mut cluster).mutating = Ok(None);
    let gone = run(cluster.clone());
    let check = find(&gone, MUTATING);
    assert!(check.message.starts_with("not found"));
    assert_eq!(
        check.hint.as_deref(),
        Some("helm upgrade rel deploy/lameduck -n lameduck-system --reuse-values (recreates it)")
    );

    webhook_mut(&mut cluster).validating =
        Ok(Some(WebhookConfiguration { name: "rel-lameduck".into(), webhooks: vec![] }));
    assert_eq!(find(&run(cluster), "ValidatingWebhookConfiguration").result, Outcome::Fail);
}

#[test]
fn a_deleted_webhook_service_or_one_without_endpoints_fails() {
    const SERVICE: &str = "the webhook's Service lameduck-system/rel-lameduck-webhook has ready endpoints";
    let mut cluster = healthy();
    webhook_mut(&mut cluster).services[0].exists = Ok(false);
    let deleted = run(cluster.clone());
    let check = find(&deleted, SERVICE);
    assert_eq!(check.result, Outcome::Fail);
    assert!(check.message.starts_with("the Service does not exist"));
    assert!(
        check
            .hint
            .as_deref()
            .unwrap()
            .starts_with("helm upgrade rel deploy/lameduck -n lameduck-system --reuse-values")
    );

    webhook_mut(&mut cluster).services[0].exists = Ok(true);
    webhook_mut(&mut cluster).services[0].ready_endpoints = Ok(0);
    let empty = run(cluster.clone());
    assert!(find(&empty, SERVICE).message.starts_with("no ready endpoint"));

    webhook_mut(&mut cluster).services[0].ready_endpoints = Err("forbidden".into());
    assert_eq!(find(&run(cluster), SERVICE).result, Outcome::Fail);
}

#[test]
fn the_probe_pod_shows_whether_the_webhook_answers() {
    const ANSWERS: &str = "the mutating webhook answers";
    let outcome = |cluster: &mut Cluster, plan: ProbePlan, outcome: Fetched<Admission>| {
        webhook_mut(cluster).probe = Probe::Sent { plan: Box::new(plan), outcome };
    };
    let mut cluster = healthy();
    let result = |cluster: &Cluster| {
        let sections = run(cluster.clone());
        let check = find(&sections, ANSWERS);
        (check.result, check.message.clone())
    };

    outcome(&mut cluster, probe_plan(Some("default")), Ok(Admission::Admitted { policy: None }));
    let (res, message) = result(&cluster);
    assert_eq!(res, Outcome::Fail);
    assert!(message.contains("came back without the lameduck.io/policy annotation: the webhook did not answer, and failurePolicy Ignore"), "{message}");

    let denied = "admission webhook \"pods.lameduck.io\" denied the request: ShutdownPolicy default (enforce: Reject): ...";
    outcome(&mut cluster, probe_plan(Some("default")), Ok(Admission::Refused(denied.into())));
    assert_eq!(result(&cluster).0, Outcome::Pass);

    let unreachable =
        "Internal error occurred: failed calling webhook \"pods.lameduck.io\": connection refused";
    outcome(&mut cluster, probe_plan(Some("default")), Ok(Admission::Refused(unreachable.into())));
    assert_eq!(result(&cluster).0, Outcome::Fail);

    outcome(
        &mut cluster,
        probe_plan(Some("default")),
        Ok(Admission::Refused("pods \"x\" is forbidden: violates PodSecurity".into())),
    );
    assert_eq!(result(&cluster).0, Outcome::Warn);

    outcome(&mut cluster, probe_plan(Some("default")), Err("connection reset".into()));
    assert_eq!(result(&cluster).0, Outcome::Warn);

    let mut plain = probe_plan(None);
    plain.failure_policy = "Fail".into();
    outcome(&mut cluster, plain, Ok(Admission::Admitted { policy: None }));
    let (res, message) = result(&cluster);
    assert_eq!(
        (res, message.as_str()),
        (Outcome::Pass, "a dry-run pod in shop was admitted under failurePolicy Fail: the webhook answered")
    );

    webhook_mut(&mut cluster).probe =
        Probe::NotSent("no ShutdownPolicy in a namespace the webhook selects".into());
    let (res, message) = result(&cluster);
    assert_eq!(
        (res, message.as_str()),
        (Outcome::Warn, "not checked: no ShutdownPolicy in a namespace the webhook selects")
    );
}

#[test]
fn a_disabled_webhook_warns_only_when_policies_want_their_drain_settings_applied() {
    const SERVED: &str = "the admission webhook is served";
    let mut cluster = healthy();
    operator_mut(&mut cluster).settings.webhook = None;
    operator_mut(&mut cluster).webhook = None;
    let check = run(cluster.clone());
    assert_eq!(find(&check, SERVED).result, Outcome::Warn);
    assert!(find(&check, SERVED).hint.as_deref().unwrap().ends_with("--set webhook.enabled=true"));
    cluster.policies = Ok(vec![]);
    assert_eq!(find(&run(cluster), SERVED).result, Outcome::Pass);
}

/// The healthy cluster with every permission of `purpose` in `namespace` refused.
fn without(mut cluster: Cluster, purpose: Purpose, verb: &str) -> Cluster {
    for (need, allowed) in &mut operator_mut(&mut cluster).access {
        if need.purpose == purpose && need.verb == verb {
            *allowed = Ok(false);
        }
    }
    cluster
}

#[test]
fn a_missing_method_permission_fails_when_a_policy_uses_the_method_and_warns_otherwise() {
    let exec = without(healthy(), Purpose::Method(MethodRbac::Exec), "create");
    let sections = run(exec.clone());
    let check = find(&sections, "Exec permissions in namespace shop");
    assert_eq!(check.result, Outcome::Fail);
    assert_eq!(
        check.message,
        "system:serviceaccount:lameduck-system:rel-lameduck lacks create pods/exec in namespace shop, and \
         ShutdownPolicy shop/default uses Exec: each attempt fails with 403 and the next method is tried"
    );
    assert_eq!(
        check.hint.as_deref(),
        Some(
            "helm upgrade rel deploy/lameduck -n lameduck-system --reuse-values --set rbac.methods.exec=true, or remove Exec from the policies' completion.methods"
        )
    );

    let ephemeral = without(healthy(), Purpose::Method(MethodRbac::EphemeralContainers), "patch");
    let check = run(ephemeral);
    let check = find(&check, "EphemeralContainer and Signal permissions in namespace shop");
    assert_eq!(check.result, Outcome::Warn, "no policy uses them: {}", check.message);

    // --default-profile auto uses PortForward, with no policy at all.
    let mut forward = without(healthy(), Purpose::Method(MethodRbac::PortForward), "get");
    forward.policies = Ok(vec![]);
    let check = run(forward);
    let check = find(&check, "PortForward permissions in namespace shop");
    assert_eq!(check.result, Outcome::Fail);
    assert!(check.message.contains("--default-profile auto uses PortForward"), "{}", check.message);
}

#[test]
fn missing_core_leader_or_webhook_permissions_fail_and_errors_fail() {
    let core = run(without(healthy(), Purpose::Core, "watch"));
    let check = find(&core, "core permissions in namespace shop");
    assert_eq!(check.result, Outcome::Fail);
    assert!(
        check.message.contains("lacks watch pods, watch shutdownpolicies.lameduck.io in namespace shop"),
        "{}",
        check.message
    );

    let lease = run(without(healthy(), Purpose::LeaderElection, "patch"));
    let check = find(&lease, "leader-election permissions in namespace lameduck-system");
    assert!(check.message.contains("patch leases.coordination.k8s.io rel-lameduck"), "{}", check.message);

    let webhook = run(without(healthy(), Purpose::Webhook, "patch"));
    let check = find(&webhook, "webhook permissions");
    assert_eq!(check.result, Outcome::Fail);
    assert!(
        check.message.contains(
            "patch mutatingwebhookconfigurations.admissionregistration.k8s.io rel-lameduck in all namespaces"
        ),
        "{}",
        check.message
    );

    let crd = run(without(healthy(), Purpose::CrdUpgrade, "patch"));
    let check = find(&crd, "CRD upgrade permissions (--upgrade-crd)");
    assert_eq!(check.result, Outcome::Fail);
    assert!(
        check.message.contains(
            "lacks patch customresourcedefinitions.apiextensions.k8s.io shutdownpolicies.lameduck.io"
        ),
        "{}",
        check.message
    );

    let mut errored = healthy();
    operator_mut(&mut errored).access[0].1 = Err("subjectaccessreviews is forbidden".into());
    let check = run(errored);
    let check = find(&check, "core permissions in namespace shop");
    assert_eq!(check.result, Outcome::Fail);
    assert!(
        check.message.starts_with("cannot ask the API server: get pods: subjectaccessreviews is forbidden")
    );
}

#[test]
fn several_operators_get_a_section_each() {
    let mut cluster = healthy();
    let mut other = healthy_operator();
    other.namespace = "other".into();
    cluster.operators.as_mut().unwrap().push(other);
    let names: Vec<String> = run(cluster).iter().map(|s| s.name.clone()).collect();
    assert!(names.contains(&"Operator lameduck-system/rel-lameduck".to_owned()), "{names:?}");
    assert!(names.contains(&"Permissions other/rel-lameduck".to_owned()), "{names:?}");
}

fn workloads_of(yaml: &str) -> Workloads {
    let mut workloads = Workloads::default();
    for document in yaml.split("\n---\n") {
        let value: serde_json::Value = serde_yaml_ng::from_str(document).unwrap();
        match value["kind"].as_str().unwrap() {
            "Deployment" => workloads.deployments.push(serde_json::from_value(value).unwrap()),
            "ReplicaSet" => workloads.replica_sets.push(serde_json::from_value(value).unwrap()),
            "Job" => workloads.jobs.push(serde_json::from_value(value).unwrap()),
            "CronJob" => workloads.cron_jobs.push(serde_json::from_value(value).unwrap()),
            "Pod" => workloads.pods.push(serde_json::from_value(value).unwrap()),
            other => panic!("{other}"),
        }
    }
    workloads
}

const BAD_DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, managedFields: [{manager: kubectl}]}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {config.alpha.linkerd.io/proxy-wait-before-exit-seconds: '40'}
    spec: {terminationGracePeriodSeconds: 30, containers: [{name: app}, {name: linkerd-proxy}]}
status: {replicas: 1}";

/// A Job no policy covers: its proxy is never stopped.
const LONELY_JOB: &str = "apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: other}
spec: {template: {spec: {restartPolicy: Never, containers: [{name: main}, {name: linkerd-proxy}]}}}";

#[test]
fn workloads_with_timing_errors_fail_warnings_warn_and_none_pass_with_a_count() {
    const WHAT: &str = "workloads in namespace shop follow the timing rules";
    let mut cluster = healthy();
    cluster.workloads = Ok(workloads_of(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: fine, namespace: shop}\nspec: {containers: [{name: app}]}",
    ));
    let fine = run(cluster.clone());
    assert_eq!(find(&fine, WHAT).message, "1 workload checked under 1 ShutdownPolicy: no timing mistakes");

    cluster.workloads = Ok(workloads_of(&format!("{BAD_DEPLOYMENT}\n---\n{LONELY_JOB}")));
    cluster.policies = Ok(vec![]);
    let found = run(cluster);
    let bad = find(&found, "Deployment shop/web");
    assert_eq!(bad.result, Outcome::Fail);
    assert!(bad.message.starts_with("error[proxy-wait-not-below-termination-grace]: "), "{}", bad.message);
    assert!(bad.message.contains("\ntimeline: "), "{}", bad.message);
    assert_eq!(
        bad.hint.as_deref().unwrap(),
        "kubectl get -n shop deployment web -o yaml | lameduck check -f -   shows its timeline; fix the manifest's timing"
    );
    let job = find(&found, "Job other/migrate");
    assert_eq!(job.result, Outcome::Warn);
    assert!(job.message.starts_with("warning[job-never-completes]: "), "{}", job.message);
    assert!(found.iter().flat_map(|s| &s.checks).all(|c| !c.description.starts_with("workloads in")));
}

#[test]
fn owned_objects_are_checked_through_their_owner() {
    let owned = |kind: &str| {
        format!("ownerReferences: [{{apiVersion: v1, kind: {kind}, name: o, uid: u, controller: true}}]")
    };
    let yaml = format!(
        "{BAD_DEPLOYMENT}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: web-1, namespace: shop, {}}}
spec: {{selector: {{}}, template: {{spec: {{containers: [{{name: c}}]}}}}}}
---
{}
---
apiVersion: v1
kind: Pod
metadata: {{name: web-1-x, namespace: shop, {}}}
spec: {{containers: [{{name: c}}]}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: nightly, namespace: shop}}
spec: {{schedule: '@daily', jobTemplate: {{spec: {{template: {{spec: {{restartPolicy: Never, containers: [{{name: c}}]}}}}}}}}}}",
        owned("Deployment"),
        LONELY_JOB.replace("metadata: {name: migrate, namespace: other}", &format!("metadata: {{name: nightly-1, namespace: shop, {}}}", owned("CronJob"))),
        owned("ReplicaSet"),
    );
    let (manifests, unreadable) = manifests(&workloads_of(&yaml), &[]);
    let kinds: Vec<(&str, &str)> =
        manifests.workloads.iter().map(|w| (w.kind.as_str(), w.name.as_str())).collect();
    assert_eq!(kinds, [("Deployment", "web"), ("CronJob", "nightly")]);
    assert!(unreadable.is_empty(), "{unreadable:?}");
}

#[test]
fn long_lists_are_cut_and_the_rest_counted() {
    let many: Vec<String> =
        (0..25).map(|i| LONELY_JOB.replace("name: migrate", &format!("name: job-{i:02}"))).collect();
    let mut cluster = healthy();
    cluster.workloads = Ok(workloads_of(&many.join("\n---\n")));
    cluster.policies = Ok(vec![]);
    let sections = run(cluster);
    let workloads = sections.iter().find(|s| s.name == "Workloads").unwrap();
    assert_eq!(workloads.checks.len(), MAX_LISTED + 1);
    let last = workloads.checks.last().unwrap();
    assert_eq!((last.description.as_str(), last.result), ("and 5 more workloads", Outcome::Warn));
}

#[test]
fn conflicting_policies_warn() {
    let mut cluster = healthy();
    let mut younger = policy("shop", "younger", "{}");
    younger.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(NOW)));
    cluster.policies.as_mut().unwrap().push(younger);
    cluster.workloads = Ok(workloads_of(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\nspec: {containers: [{name: app}]}",
    ));
    let sections = run(cluster);
    let check = find(&sections, "ShutdownPolicies select without conflicts");
    assert_eq!(check.result, Outcome::Warn);
    assert_eq!(check.message, "Pod p: ShutdownPolicy younger also selects it; the oldest, default, applies");
}

/// A pod in `namespace` whose main container exited while `linkerd-proxy` runs.
fn stuck_pod(namespace: &str, name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, annotations: {annotations}}}
spec: {{restartPolicy: Never, containers: [{{name: main}}, {{name: linkerd-proxy}}]}}
status:
  phase: Running
  containerStatuses:
    - {{name: main, ready: false, restartCount: 0, image: x, imageID: '', state: {{terminated: {{exitCode: 0}}}}}}
    - {{name: linkerd-proxy, ready: true, restartCount: 0, image: x, imageID: '', state: {{running: {{}}}}}}"
    )
}

#[test]
fn stuck_pods_warn_with_their_reason_and_given_up_ones_fail_first() {
    const NONE: &str = "no run-to-completion pod in namespace shop is stuck";
    let mut cluster = healthy();
    cluster.workloads = Ok(workloads_of(
        &stuck_pod("shop", "done", "{}")
            .replace("state: {running: {}}", "state: {terminated: {exitCode: 0}}"),
    ));
    let none = run(cluster.clone());
    assert_eq!(find(&none, NONE).result, Outcome::Pass);

    let pods = [
        stuck_pod("shop", "a-stopping", "{}"),
        stuck_pod("shop", "b-gave-up", "{lameduck.io/shutdown-result: gaveUp}"),
        stuck_pod("shop", "c-failed", "{lameduck.io/shutdown-result: failed}"),
    ];
    cluster.workloads = Ok(workloads_of(&pods.join("\n---\n")));
    let sections = run(cluster.clone());
    let stuck = sections.iter().find(|s| s.name == "Stuck pods").unwrap();
    let order: Vec<(&str, Outcome)> =
        stuck.checks.iter().map(|c| (c.description.as_str(), c.result)).collect();
    assert_eq!(
        order,
        [
            ("pod shop/b-gave-up", Outcome::Fail),
            ("pod shop/a-stopping", Outcome::Warn),
            ("pod shop/c-failed", Outcome::Warn)
        ]
    );
    let stopping = find(&sections, "pod shop/a-stopping");
    assert_eq!(
        stopping.message,
        "stopping: its main containers have exited, but sidecar linkerd-proxy still runs; ShutdownPolicy default applies, and the operator is stopping it"
    );
    assert_eq!(
        stopping.hint.as_deref(),
        Some("kubectl events -n shop --for pod/a-stopping shows the operator's attempts")
    );
    assert!(find(&sections, "pod shop/b-gave-up").message.starts_with("gaveUp: "));
    assert!(find(&sections, "pod shop/c-failed").message.starts_with("failed: "));
}

#[test]
fn a_stuck_pod_no_policy_selects_is_no_policy_unless_the_default_profile_covers_it() {
    let mut cluster = healthy();
    cluster.policies = Ok(vec![]);
    cluster.workloads = Ok(workloads_of(&stuck_pod("shop", "lonely", "{}")));
    let sections = run(cluster.clone());
    let check = find(&sections, "pod shop/lonely");
    assert_eq!(check.result, Outcome::Warn);
    assert!(check.message.starts_with("no_policy: "), "{}", check.message);
    assert!(check.hint.as_deref().unwrap().starts_with("create a ShutdownPolicy in shop"));

    // Linkerd's injector marked it: --default-profile auto stops it.
    cluster.workloads = Ok(workloads_of(&stuck_pod("shop", "injected", "{linkerd.io/proxy-version: edge}")));
    let sections = run(cluster.clone());
    assert!(
        find(&sections, "pod shop/injected")
            .message
            .contains("the operator's --default-profile auto applies")
    );

    // A policy, but no operator found to act on it.
    cluster.operators = Ok(vec![]);
    cluster.scope = Scope::everywhere();
    cluster.policies = Ok(vec![policy("shop", "default", "{}")]);
    let sections = run(cluster);
    assert!(find(&sections, "pod shop/injected").message.starts_with("no_operator: "));
}

#[test]
fn failures_to_list_fail_the_workload_and_stuck_pod_checks() {
    let mut cluster = healthy();
    cluster.workloads = Err("pods is forbidden".into());
    let sections = run(cluster.clone());
    assert_eq!(find(&sections, "workloads in").result, Outcome::Fail);
    assert_eq!(find(&sections, "no run-to-completion pod").result, Outcome::Fail);
    cluster.policies = Err("forbidden".into());
    assert!(find(&run(cluster), "workloads in").message.starts_with("cannot list ShutdownPolicies"));
}
