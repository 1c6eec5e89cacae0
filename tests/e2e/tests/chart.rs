//! The Helm chart (`deploy/lameduck`) rendered with `helm template` over several value sets,
//! asserting on the objects it renders; `helm lint`; and the schema refusing bad values. Needs
//! `helm` on PATH (`source tests/cluster/env.sh`), not the cluster.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use clap::Parser;
use lameduck_api::names;
use lameduck_operator::cli::Cli;
use serde_yaml_ng::Value;

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/lameduck")
}

fn helm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("helm")
        .args(args)
        .output()
        .expect("helm on PATH (source tests/cluster/env.sh; tests/cluster/build.sh builds it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Renders the chart as release `ld` in namespace `lameduck` with `--set` values.
fn render(sets: &[&str], extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args =
        vec!["template", "ld", chart.to_str().unwrap(), "-n", "lameduck", "--kube-version", "1.34.0"];
    for set in sets {
        args.extend(["--set", set]);
    }
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = helm(&args);
    assert!(ok, "helm template {sets:?} failed:\n{stderr}");
    serde_yaml_ng::Deserializer::from_str(&stdout)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects.iter().filter_map(|o| o["kind"].as_str().map(str::to_owned)).collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// `resource/verb` pairs granted by a role's rules.
fn grants(role: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_sequence().into_iter().flatten() {
        for resource in strings(&rule["resources"]) {
            for verb in strings(&rule["verbs"]) {
                out.insert(format!("{resource}/{verb}"));
            }
        }
    }
    out
}

fn operator_args(objects: &[Value]) -> Vec<String> {
    let deployment = find(objects, "Deployment", "ld-lameduck").expect("the operator Deployment");
    strings(&deployment["spec"]["template"]["spec"]["containers"][0]["args"])
}

/// The value of the rendered `--<flag>=VALUE` argument, if there is one (the chart passes each once).
fn flag(args: &[String], name: &str) -> Option<String> {
    let prefix = format!("--{name}=");
    let mut found = args.iter().filter_map(|a| a.strip_prefix(&prefix));
    let value = found.next().map(str::to_owned);
    assert!(found.next().is_none(), "--{name} passed twice: {args:?}");
    value
}

/// The operator parses and validates the rendered flags, as its pod would.
fn operator_accepts(args: &[String]) {
    let cli =
        Cli::try_parse_from(std::iter::once("lameduck-operator".to_owned()).chain(args.iter().cloned()))
            .unwrap_or_else(|e| panic!("the chart passes flags the operator refuses: {e}\n{args:?}"));
    if let Err(e) = cli.validate(Some("ld-lameduck-0".into()), Some("lameduck".into())) {
        panic!("the operator refuses the chart's flags: {e:?}\n{args:?}");
    }
}

/// The rules of a role that grant `verb` on `resource`.
fn rules_granting<'a>(role: &'a Value, resource: &str, verb: &str) -> Vec<&'a Value> {
    role["rules"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter(|r| {
            strings(&r["resources"]).iter().any(|x| x == resource)
                && strings(&r["verbs"]).iter().any(|x| x == verb)
        })
        .collect()
}

/// Every role (Role or ClusterRole) of the release granting `verb` on `resource`, as `Kind/name`.
fn roles_granting(objects: &[Value], resource: &str, verb: &str) -> Vec<String> {
    objects
        .iter()
        .filter(|o| matches!(o["kind"].as_str(), Some("Role" | "ClusterRole")))
        .filter(|o| !rules_granting(o, resource, verb).is_empty())
        .map(|o| format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap()))
        .collect()
}

/// The ServiceAccounts a ClusterRoleBinding of `name` binds to the ClusterRole of the same name.
fn bound_accounts(objects: &[Value], name: &str) -> Vec<String> {
    let binding =
        find(objects, "ClusterRoleBinding", name).unwrap_or_else(|| panic!("no ClusterRoleBinding {name}"));
    assert_eq!(binding["roleRef"]["kind"].as_str(), Some("ClusterRole"));
    assert_eq!(binding["roleRef"]["name"].as_str(), Some(name));
    binding["subjects"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|s| format!("{}/{}", s["namespace"].as_str().unwrap_or(""), s["name"].as_str().unwrap_or("")))
        .collect()
}

#[test]
fn defaults_render_an_ha_operator_with_its_webhook_and_cluster_wide_rbac() {
    let objects = render(&[], &[]);
    let deployment = find(&objects, "Deployment", "ld-lameduck").unwrap();
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(2));
    let container = &spec["containers"][0];
    assert_eq!(container["image"].as_str(), Some("localhost/lameduck/operator:dev"));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"].as_str(), Some("/ready"));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"].as_str(), Some("/live"));
    // Restricted Pod Security.
    assert_eq!(spec["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(spec["securityContext"]["seccompProfile"]["type"].as_str(), Some("RuntimeDefault"));
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(strings(&container["securityContext"]["capabilities"]["drop"]), ["ALL"]);
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert_eq!(spec["topologySpreadConstraints"][0]["topologyKey"].as_str(), Some("kubernetes.io/hostname"));
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(annotations["prometheus.io/port"].as_str(), Some("9090"));

    let pdb = find(&objects, "PodDisruptionBudget", "ld-lameduck").expect("a PDB with 2 replicas");
    assert_eq!(pdb["spec"]["minAvailable"].as_i64(), Some(1));
    let metrics = find(&objects, "Service", "ld-lameduck-metrics").unwrap();
    assert_eq!(metrics["metadata"]["annotations"]["prometheus.io/scrape"].as_str(), Some("true"));

    // The webhook: service-backed, after Linkerd's injector, failing open, never the release's own
    // namespace or kube-system, no caBundle (the operator patches it).
    let mutating = find(&objects, "MutatingWebhookConfiguration", "ld-lameduck").unwrap();
    let hook = &mutating["webhooks"][0];
    assert_eq!(hook["name"].as_str(), Some("pods.lameduck.io"));
    assert_eq!(hook["reinvocationPolicy"].as_str(), Some("IfNeeded"));
    assert_eq!(hook["failurePolicy"].as_str(), Some("Ignore"));
    assert_eq!(hook["clientConfig"]["service"]["name"].as_str(), Some("ld-lameduck-webhook"));
    assert!(hook["clientConfig"]["caBundle"].is_null());
    let excluded = &hook["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(excluded["operator"].as_str(), Some("NotIn"));
    assert_eq!(strings(&excluded["values"]), ["lameduck", "kube-system"]);
    // Policies: reviewed and stamped on the mutating path, checked again on the validating one,
    // both failing closed (the pods' webhook keeps its own failurePolicy).
    let stamping = &mutating["webhooks"][1];
    assert_eq!(stamping["name"].as_str(), Some(names::webhook::STAMPING_WEBHOOK));
    assert_eq!(
        stamping["clientConfig"]["service"]["path"].as_str(),
        Some(names::webhook::MUTATE_POLICIES_PATH)
    );
    assert_eq!(stamping["failurePolicy"].as_str(), Some("Fail"));
    assert_eq!(stamping["rules"][0]["resources"][0].as_str(), Some("shutdownpolicies"));
    let validating = find(&objects, "ValidatingWebhookConfiguration", "ld-lameduck").unwrap();
    assert_eq!(validating["webhooks"][0]["failurePolicy"].as_str(), Some("Fail"));
    assert!(find(&objects, "Service", "ld-lameduck-webhook").is_some());

    // RBAC: the watch rules cluster-wide with every method; the Lease and the Secret only in the
    // release namespace; the webhook configurations only by name.
    let cluster = grants(find(&objects, "ClusterRole", "ld-lameduck").unwrap());
    for grant in [
        "pods/watch",
        "pods/patch",
        "pods/exec/create",
        "pods/portforward/get",
        "pods/ephemeralcontainers/patch",
    ] {
        assert!(cluster.contains(grant), "{grant} missing from {cluster:?}");
    }
    assert!(!cluster.iter().any(|g| g.starts_with("secrets") || g.starts_with("leases")), "{cluster:?}");
    let own = find(&objects, "Role", "ld-lameduck-self").unwrap();
    assert_eq!(own["metadata"]["namespace"].as_str(), Some("lameduck"));
    let own = grants(own);
    assert!(own.contains("leases/patch") && own.contains("secrets/create"), "{own:?}");
    let webhook_role = find(&objects, "ClusterRole", "ld-lameduck-webhook").unwrap();
    assert_eq!(strings(&webhook_role["rules"][0]["resourceNames"]), ["ld-lameduck"]);

    // The chart and the binary agree: every rendered flag parses and validates.
    let args = operator_args(&objects);
    let cli = Cli::try_parse_from(std::iter::once("lameduck-operator".to_owned()).chain(args.clone()))
        .unwrap_or_else(|e| panic!("the chart passes flags the operator refuses: {e}\n{args:?}"));
    let config = cli.validate(Some("ld-lameduck-0".into()), Some("lameduck".into())).unwrap();
    let webhook = config.webhook.expect("the webhook is on");
    assert!(webhook.certs.settings.hosts.contains(&"ld-lameduck-webhook.lameduck.svc".to_owned()));
    assert_eq!(webhook.certs.secret_name, "ld-lameduck-webhook-tls");
    assert_eq!(webhook.certs.mutating_configuration.as_deref(), Some("ld-lameduck"));
    assert_eq!(config.lease.name, "ld-lameduck");

    // No monitoring CRDs in the cluster: no ServiceMonitor or PrometheusRule.
    let found = kinds(&objects);
    assert!(!found.contains("ServiceMonitor") && !found.contains("PrometheusRule"), "{found:?}");
}

#[test]
fn namespace_scope_binds_roles_per_namespace_and_methods_switch_their_rules() {
    let objects = render(
        &["rbac.scope=namespaces", "watchNamespaces={jobs,web}", "rbac.methods.exec=false", "replicas=1"],
        &[],
    );
    assert!(find(&objects, "ClusterRole", "ld-lameduck").is_none(), "no cluster-wide watch rules");
    for ns in ["jobs", "web"] {
        let role = objects
            .iter()
            .find(|o| o["kind"].as_str() == Some("Role") && o["metadata"]["namespace"].as_str() == Some(ns))
            .unwrap_or_else(|| panic!("no Role in {ns}"));
        let granted = grants(role);
        assert!(granted.contains("pods/watch") && granted.contains("pods/portforward/create"), "{granted:?}");
        assert!(!granted.iter().any(|g| g.starts_with("pods/exec")), "exec is switched off: {granted:?}");
        assert!(
            objects.iter().any(|o| o["kind"].as_str() == Some("RoleBinding")
                && o["metadata"]["namespace"].as_str() == Some(ns))
        );
    }
    let args = operator_args(&objects);
    assert!(args.contains(&"--namespace=jobs,web".to_owned()), "{args:?}");
    // Only the watched namespaces' pods go to the webhook.
    let mutating = find(&objects, "MutatingWebhookConfiguration", "ld-lameduck").unwrap();
    let expressions = mutating["webhooks"][0]["namespaceSelector"]["matchExpressions"].as_sequence().unwrap();
    assert!(
        expressions
            .iter()
            .any(|e| e["operator"].as_str() == Some("In") && strings(&e["values"]) == ["jobs", "web"])
    );
    assert!(find(&objects, "PodDisruptionBudget", "ld-lameduck").is_none(), "no PDB for one replica");
}

#[test]
fn webhook_off_renders_no_webhook_objects_and_monitoring_crds_turn_on_their_objects() {
    let objects = render(&["webhook.enabled=false"], &[]);
    let found = kinds(&objects);
    assert!(
        !found.contains("MutatingWebhookConfiguration") && !found.contains("ValidatingWebhookConfiguration")
    );
    assert!(find(&objects, "Service", "ld-lameduck-webhook").is_none());
    assert!(find(&objects, "ClusterRole", "ld-lameduck-webhook").is_none());
    assert!(
        !grants(find(&objects, "Role", "ld-lameduck-self").unwrap()).iter().any(|g| g.starts_with("secrets"))
    );
    assert!(!operator_args(&objects).iter().any(|a| a.starts_with("--webhook")));

    let objects = render(
        &[],
        &[
            "--api-versions",
            "monitoring.coreos.com/v1/ServiceMonitor",
            "--api-versions",
            "monitoring.coreos.com/v1/PrometheusRule",
        ],
    );
    let monitor = find(&objects, "ServiceMonitor", "ld-lameduck").expect("a ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"].as_str(), Some("metrics"));
    let rule = find(&objects, "PrometheusRule", "ld-lameduck").expect("a PrometheusRule");
    let groups = rule["spec"]["groups"].as_sequence().expect("rule groups");
    let alerts: Vec<&str> = groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().into_iter().flatten())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert!(alerts.contains(&"LameduckStuckPods") && alerts.contains(&"LameduckUnmutatedPods"), "{alerts:?}");
}

#[test]
fn prometheus_rule_for_overrides_change_only_the_named_alerts() {
    let monitoring = ["--api-versions", "monitoring.coreos.com/v1/PrometheusRule"];
    let rules = |sets: &[&str]| -> Vec<(String, Option<String>, String)> {
        let objects = render(sets, &monitoring);
        let rule = find(&objects, "PrometheusRule", "ld-lameduck").expect("a PrometheusRule");
        rule["spec"]["groups"]
            .as_sequence()
            .expect("rule groups")
            .iter()
            .flat_map(|g| g["rules"].as_sequence().into_iter().flatten())
            .map(|r| {
                let text = |key: &str| r[key].as_str().map(str::to_owned);
                (text("alert").unwrap_or_default(), text("for"), text("expr").unwrap_or_default())
            })
            .collect()
    };
    let shipped = rules(&[]);
    assert!(shipped.contains(&(
        "LameduckStuckPods".into(),
        Some("10m".into()),
        "max by (namespace, reason) (lameduck_stuck_pods) > 0".into()
    )));
    let tuned = rules(&[
        "metrics.prometheusRule.for.LameduckStuckPods=30s",
        "metrics.prometheusRule.for.LameduckShutdownFailures=2m",
    ]);
    assert_eq!(tuned.len(), shipped.len());
    for ((alert, shipped_for, shipped_expr), (tuned_alert, tuned_for, tuned_expr)) in
        shipped.iter().zip(&tuned)
    {
        assert_eq!((alert, shipped_expr), (tuned_alert, tuned_expr), "only `for:` may change");
        let expected = match alert.as_str() {
            "LameduckStuckPods" => Some("30s".to_owned()),
            // It has no `for:` in the file; the override adds one.
            "LameduckShutdownFailures" => Some("2m".to_owned()),
            _ => shipped_for.clone(),
        };
        assert_eq!(tuned_for, &expected, "{alert}");
    }

    let chart = chart();
    let chart = chart.to_str().unwrap();
    for (set, named) in [
        ("metrics.prometheusRule.for.LameduckStuckPod=1m", "LameduckStuckPod"),
        // Prometheus durations have no fractions.
        ("metrics.prometheusRule.for.LameduckStuckPods=1.5m", "LameduckStuckPods"),
    ] {
        let mut args = vec!["template", "ld", chart, "--kube-version", "1.34.0", "--set", set];
        args.extend(monitoring);
        let (ok, _, stderr) = helm(&args);
        assert!(!ok && stderr.contains(named), "{set}: {stderr}");
    }
}

#[test]
fn lease_and_secret_rules_name_the_release_objects_and_only_create_is_unnamed() {
    for (sets, lease, secret) in [
        (vec![], "ld-lameduck", "ld-lameduck-webhook-tls"),
        (vec!["fullnameOverride=ducks"], "ducks", "ducks-webhook-tls"),
    ] {
        let objects = render(&sets, &[]);
        let own = objects
            .iter()
            .find(|o| {
                o["kind"].as_str() == Some("Role")
                    && o["metadata"]["name"].as_str().is_some_and(|n| n.ends_with("-self"))
            })
            .expect("the release namespace's Role");
        for (resource, name, verbs) in [
            ("leases", lease, &["get", "list", "watch", "patch"][..]),
            ("secrets", secret, &["get", "update"][..]),
        ] {
            let create = rules_granting(own, resource, "create");
            assert_eq!(create.len(), 1, "{sets:?}: {resource}/create: {create:?}");
            assert!(
                create[0]["resourceNames"].is_null(),
                "{sets:?}: RBAC cannot narrow create by name: {create:?}"
            );
            assert_eq!(strings(&create[0]["verbs"]), ["create"], "{sets:?}: create is a rule of its own");
            for verb in verbs {
                let rules = rules_granting(own, resource, verb);
                assert!(!rules.is_empty(), "{sets:?}: no {resource}/{verb}");
                for rule in rules {
                    assert_eq!(
                        strings(&rule["resourceNames"]),
                        [name],
                        "{sets:?}: {resource}/{verb}: {rule:?}"
                    );
                }
            }
        }
        // The chart's names are the ones it passes the operator.
        let deployment = objects.iter().find(|o| o["kind"].as_str() == Some("Deployment")).unwrap();
        let args = strings(&deployment["spec"]["template"]["spec"]["containers"][0]["args"]);
        assert_eq!(flag(&args, "lease-name").as_deref(), Some(lease));
        assert_eq!(flag(&args, "webhook-secret").as_deref(), Some(secret));
        // No other role grants Secrets or Leases.
        assert_eq!(roles_granting(&objects, "secrets", "get").len(), 1);
        assert_eq!(roles_granting(&objects, "leases", "get").len(), 1);
    }

    // The files themselves (the e2e tests build their Role from them, running the operator with
    // its default names) name the operator's defaults.
    let defaults = Cli::try_parse_from(["lameduck-operator"]).expect("the operator's defaults");
    let named = |file: &str| -> Vec<String> {
        lameduck_e2e::operator::rules_from(file)
            .into_iter()
            .filter_map(|r| r.resource_names)
            .flatten()
            .collect()
    };
    assert_eq!(named("leader-election.yaml"), [defaults.lease_name]);
    assert_eq!(named("webhook-secret.yaml"), [defaults.webhook_secret]);
    let e2e = lameduck_e2e::operator::rules();
    assert!(
        e2e.iter().any(|r| r.resources.as_deref() == Some(&["leases".to_owned()][..])
            && r.verbs == ["create"]
            && r.resource_names.is_none()),
        "{e2e:?}"
    );
}

#[test]
fn subject_access_reviews_are_granted_only_with_the_webhook() {
    let objects = render(&[], &[]);
    let role =
        find(&objects, "ClusterRole", "ld-lameduck-subjectaccessreviews").expect("the SAR ClusterRole");
    let rules = rules_granting(role, "subjectaccessreviews", "create");
    assert_eq!(rules.len(), 1, "{role:?}");
    assert_eq!(strings(&rules[0]["apiGroups"]), ["authorization.k8s.io"]);
    assert_eq!(grants(role), BTreeSet::from(["subjectaccessreviews/create".to_owned()]));
    assert_eq!(bound_accounts(&objects, "ld-lameduck-subjectaccessreviews"), ["lameduck/ld-lameduck"]);

    for sets in [
        vec!["webhook.enabled=false"],
        vec!["webhook.enabled=false", "rbac.scope=namespaces", "watchNamespaces={a}"],
    ] {
        let objects = render(&sets, &[]);
        assert!(find(&objects, "ClusterRole", "ld-lameduck-subjectaccessreviews").is_none(), "{sets:?}");
        assert!(
            find(&objects, "ClusterRoleBinding", "ld-lameduck-subjectaccessreviews").is_none(),
            "{sets:?}"
        );
        assert!(roles_granting(&objects, "subjectaccessreviews", "create").is_empty(), "{sets:?}");
    }
    // A namespaced install with the webhook still gets it: it is the webhook's, not the watch's.
    let objects = render(&["rbac.scope=namespaces", "watchNamespaces={a}"], &[]);
    assert!(find(&objects, "ClusterRole", "ld-lameduck-subjectaccessreviews").is_some());
}

#[test]
fn namespaces_are_readable_only_cluster_wide() {
    let objects = render(&[], &[]);
    let role = find(&objects, "ClusterRole", "ld-lameduck-namespaces").expect("the namespaces ClusterRole");
    assert_eq!(grants(role), BTreeSet::from(["namespaces/get".to_owned()]));
    assert_eq!(strings(&role["rules"][0]["apiGroups"]), [""]);
    assert_eq!(bound_accounts(&objects, "ld-lameduck-namespaces"), ["lameduck/ld-lameduck"]);
    assert_eq!(roles_granting(&objects, "namespaces", "get"), ["ClusterRole/ld-lameduck-namespaces"]);

    for sets in [
        vec!["rbac.scope=namespaces", "watchNamespaces={jobs,web}"],
        // Only the Signal method needs it.
        vec!["rbac.methods.ephemeralContainers=false"],
    ] {
        let objects = render(&sets, &[]);
        assert!(find(&objects, "ClusterRole", "ld-lameduck-namespaces").is_none(), "{sets:?}");
        assert!(find(&objects, "ClusterRoleBinding", "ld-lameduck-namespaces").is_none(), "{sets:?}");
        assert!(roles_granting(&objects, "namespaces", "get").is_empty(), "{sets:?}");
    }
}

#[test]
fn the_operator_and_its_webhook_leave_kube_system_and_the_release_namespace_alone() {
    let not_in = |objects: &[Value]| -> Vec<String> {
        let mutating = find(objects, "MutatingWebhookConfiguration", "ld-lameduck").unwrap();
        let expressions =
            mutating["webhooks"][0]["namespaceSelector"]["matchExpressions"].as_sequence().unwrap();
        let excluded: Vec<_> = expressions
            .iter()
            .filter(|e| {
                e["key"].as_str() == Some("kubernetes.io/metadata.name")
                    && e["operator"].as_str() == Some("NotIn")
            })
            .collect();
        assert_eq!(excluded.len(), 1, "{expressions:?}");
        strings(&excluded[0]["values"])
    };

    let objects = render(&[], &[]);
    let args = operator_args(&objects);
    assert_eq!(flag(&args, "exclude-namespace").as_deref(), Some("lameduck,kube-system"), "{args:?}");
    assert_eq!(not_in(&objects), ["lameduck", "kube-system"]);

    // The release namespace and kube-system are always added, once; the user's list also keeps
    // the webhook away.
    let objects = render(&["operator.excludeNamespaces={lameduck,tenant-x}"], &[]);
    let args = operator_args(&objects);
    assert_eq!(
        flag(&args, "exclude-namespace").as_deref(),
        Some("lameduck,kube-system,tenant-x"),
        "{args:?}"
    );
    assert_eq!(not_in(&objects), ["lameduck", "kube-system", "tenant-x"]);
    operator_accepts(&args);

    // An empty list still excludes the release namespace and kube-system, for the operator as
    // for the webhook.
    let objects = render(&[], &["--set-json", "operator.excludeNamespaces=[]"]);
    let args = operator_args(&objects);
    assert_eq!(flag(&args, "exclude-namespace").as_deref(), Some("lameduck,kube-system"), "{args:?}");
    assert_eq!(not_in(&objects), ["lameduck", "kube-system"]);

    // The user's selector is kept and the exclusion ANDed to it.
    let objects = render(
        &[],
        &[
            "--set-json",
            r#"webhook.namespaceSelector={"matchLabels":{"mesh":"on"},"matchExpressions":[{"key":"tier","operator":"In","values":["batch"]}]}"#,
        ],
    );
    let mutating = find(&objects, "MutatingWebhookConfiguration", "ld-lameduck").unwrap();
    let selector = &mutating["webhooks"][0]["namespaceSelector"];
    assert_eq!(selector["matchLabels"]["mesh"].as_str(), Some("on"));
    assert_eq!(selector["matchExpressions"][0]["key"].as_str(), Some("tier"));
    assert_eq!(not_in(&objects), ["lameduck", "kube-system"]);
}

#[test]
fn the_grace_period_outlasts_the_operators_shutdown_and_new_values_reach_its_flags() {
    let objects = render(&[], &[]);
    let deployment = find(&objects, "Deployment", "ld-lameduck").unwrap();
    assert_eq!(deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_i64(), Some(90));
    let args = operator_args(&objects);
    // Defaults: only the operator's own image, no custom exec commands, the binary's per-namespace
    // share of --concurrency.
    assert_eq!(flag(&args, "allowed-ephemeral-image"), None, "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--allow-custom-exec-command")), "{args:?}");
    assert_eq!(flag(&args, "max-ephemeral-containers").as_deref(), Some("4"));
    assert_eq!(flag(&args, "concurrency-per-namespace"), None, "{args:?}");

    let objects = render(
        &[
            "terminationGracePeriodSeconds=120",
            "operator.allowedEphemeralImages={registry.example/tools:1.2,ghcr.io/acme/sig:3}",
            "operator.allowCustomExecCommand=true",
            "operator.maxEphemeralContainers=2",
            "operator.concurrency=32",
            "operator.concurrencyPerNamespace=3",
        ],
        &[],
    );
    let deployment = find(&objects, "Deployment", "ld-lameduck").unwrap();
    assert_eq!(deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_i64(), Some(120));
    let args = operator_args(&objects);
    assert_eq!(
        flag(&args, "allowed-ephemeral-image").as_deref(),
        Some("registry.example/tools:1.2,ghcr.io/acme/sig:3"),
        "{args:?}"
    );
    assert_eq!(args.iter().filter(|a| *a == "--allow-custom-exec-command").count(), 1, "{args:?}");
    assert_eq!(flag(&args, "max-ephemeral-containers").as_deref(), Some("2"));
    assert_eq!(flag(&args, "concurrency").as_deref(), Some("32"));
    assert_eq!(flag(&args, "concurrency-per-namespace").as_deref(), Some("3"));
    operator_accepts(&args);
}

#[test]
fn bad_values_are_refused_naming_the_value() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    for (set, named) in [
        ("rbac.scope=galaxy", "scope"),
        ("replicas=0", "replicas"),
        ("webhook.failurePolicy=Sometimes", "failurePolicy"),
        ("operator.statusInterval=soon", "statusInterval"),
        ("unknownValue=1", "unknownValue"),
        ("terminationGracePeriodSeconds=60", "terminationGracePeriodSeconds"),
        ("operator.maxEphemeralContainers=0", "maxEphemeralContainers"),
        ("operator.concurrencyPerNamespace=-1", "concurrencyPerNamespace"),
        ("operator.excludeNamespaces={Kube_System}", "excludeNamespaces"),
        ("operator.allowCustomExecCommand=maybe", "allowCustomExecCommand"),
        ("operator.maxEphemeralContainers=65", "maxEphemeralContainers"),
        ("operator.concurrencyPerNamespace=17", "concurrencyPerNamespace"),
    ] {
        let (ok, _, stderr) = helm(&["template", "ld", chart, "--kube-version", "1.34.0", "--set", set]);
        assert!(!ok, "{set} was accepted");
        assert!(stderr.contains(named), "{set}: the error does not name {named}:\n{stderr}");
    }
    let (ok, _, stderr) =
        helm(&["template", "ld", chart, "--kube-version", "1.34.0", "--set", "rbac.scope=namespaces"]);
    assert!(!ok && stderr.contains("watchNamespaces"), "{stderr}");
    // The operator refuses to watch a namespace it excludes: the chart says so before it starts.
    for watched in ["lameduck", "kube-system"] {
        let (ok, _, stderr) = helm(&[
            "template",
            "ld",
            chart,
            "-n",
            "lameduck",
            "--kube-version",
            "1.34.0",
            "--set",
            "rbac.scope=namespaces",
            "--set",
            &format!("watchNamespaces={{jobs,{watched}}}"),
        ]);
        assert!(!ok && stderr.contains("watchNamespaces") && stderr.contains(watched), "{watched}: {stderr}");
    }
}

#[test]
fn lint_is_clean_and_the_chart_ships_the_generated_crds() {
    let chart = chart();
    for sets in [vec![], vec!["--set", "rbac.scope=namespaces", "--set", "watchNamespaces={a}"]] {
        let mut args = vec!["lint", "--strict", chart.to_str().unwrap(), "--kube-version", "1.34.0"];
        args.extend(sets);
        let (ok, stdout, stderr) = helm(&args);
        assert!(ok, "helm lint failed:\n{stdout}{stderr}");
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let shipped = chart.join("crds").join(path.file_name().unwrap());
        assert_eq!(
            std::fs::read_to_string(&shipped).unwrap_or_default(),
            std::fs::read_to_string(&path).unwrap(),
            "{} differs from {}: copy crds/*.yaml into deploy/lameduck/crds/",
            shipped.display(),
            path.display()
        );
    }
}

#[test]
fn the_operator_may_upgrade_its_own_crd_and_no_other() {
    let objects = render(&[], &[]);
    let role = find(&objects, "ClusterRole", "ld-lameduck-crd").expect("the CRD ClusterRole");
    assert_eq!(
        grants(role),
        BTreeSet::from([
            "customresourcedefinitions/get".to_owned(),
            "customresourcedefinitions/patch".to_owned()
        ])
    );
    for rule in role["rules"].as_sequence().unwrap() {
        assert_eq!(strings(&rule["resourceNames"]), ["shutdownpolicies.lameduck.io"], "{rule:?}");
    }
    assert_eq!(bound_accounts(&objects, "ld-lameduck-crd"), ["lameduck/ld-lameduck"]);
    let args = operator_args(&objects);
    assert!(args.iter().any(|a| a == "--upgrade-crd"), "{args:?}");

    let objects = render(&["crds.upgrade=false"], &[]);
    assert!(find(&objects, "ClusterRole", "ld-lameduck-crd").is_none());
    assert!(roles_granting(&objects, "customresourcedefinitions", "patch").is_empty());
    let args = operator_args(&objects);
    assert!(!args.iter().any(|a| a == "--upgrade-crd"), "{args:?}");
}
