use super::*;
use k8s_openapi::api::core::v1::PodTemplateSpec;

/// A pod template from YAML, as users write them.
fn template(yaml: &str) -> PodTemplateSpec {
    serde_yaml_ng::from_str(yaml).expect("fixture parses")
}

fn timeline_with(yaml: &str, policy: Option<&ShutdownPolicySpec>, runs_to_completion: bool) -> Timeline {
    let t = template(yaml);
    let annotations = t.metadata.as_ref().and_then(|m| m.annotations.clone()).unwrap_or_default();
    let spec = t.spec.expect("fixture has a spec");
    Timeline::of(&PodShape { spec: &spec, annotations: &annotations, runs_to_completion }, policy)
}

fn findings(yaml: &str) -> Vec<Finding> {
    timeline_with(yaml, None, false).findings()
}

fn rules(findings: &[Finding]) -> Vec<Rule> {
    findings.iter().map(|f| f.rule).collect()
}

/// The seed document's example, with Linkerd's injected proxy waiting `proxy_wait` seconds.
fn seed(proxy_wait: u64) -> String {
    format!(
        r#"
spec:
  terminationGracePeriodSeconds: 160
  containers:
  - name: app
    image: app
    lifecycle:
      preStop:
        exec:
          command: ["/bin/bash", "-c", "sleep 20"]
  - name: linkerd-proxy
    image: proxy
    lifecycle:
      preStop:
        exec:
          command: ["/bin/sleep", "{proxy_wait}"]
"#
    )
}

#[test]
fn seed_example_with_proxy_wait_between_passes() {
    let timeline = timeline_with(&seed(40), None, false);
    assert_eq!(timeline.termination_grace_period, Duration::from_secs(160));
    assert_eq!(timeline.apps.len(), 1);
    assert_eq!(timeline.apps[0].pre_stop.known(), Some(Duration::from_secs(20)));
    let proxy = timeline.proxy.as_ref().unwrap();
    assert_eq!((proxy.name.as_str(), proxy.placement), ("linkerd-proxy", Placement::Classic));
    assert_eq!(proxy.wait_before_exit.known(), Some(Duration::from_secs(40)));
    assert_eq!(timeline.findings(), vec![]);
}

#[test]
fn proxy_wait_shorter_than_app_prestop_is_an_error_naming_both() {
    let found = findings(&seed(10));
    assert_eq!(rules(&found), [Rule::AppPreStopNotBelowProxyWait]);
    let f = &found[0];
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(f.container.as_deref(), Some("app"));
    for needle in ["\"app\"", "20s", "\"linkerd-proxy\"", "10s", "preStop hook"] {
        assert!(f.message.contains(needle), "{needle:?} missing from {}", f.message);
    }
}

#[test]
fn equal_waits_are_an_error_too() {
    assert_eq!(rules(&findings(&seed(20))), [Rule::AppPreStopNotBelowProxyWait]);
}

#[test]
fn proxy_wait_longer_than_termination_grace_is_an_error() {
    let found = findings(&seed(200));
    assert_eq!(rules(&found), [Rule::ProxyWaitNotBelowTerminationGrace]);
    assert!(found[0].message.contains("200s") && found[0].message.contains("160s"), "{}", found[0].message);
}

#[test]
fn app_prestop_without_proxy_wait_is_an_error() {
    let yaml = r#"
spec:
  containers:
  - name: web
    lifecycle: {preStop: {sleep: {seconds: 5}}}
  - name: lameduck-proxy
"#;
    let found = findings(yaml);
    assert_eq!(rules(&found), [Rule::AppPreStopNotBelowProxyWait]);
    assert!(found[0].message.contains("no wait-before-exit"), "{}", found[0].message);
    assert!(found[0].message.contains("30s, the default"), "{}", found[0].message);
}

#[test]
fn linkerd_annotations_before_injection_are_read() {
    let yaml = r#"
metadata:
  annotations:
    linkerd.io/inject: enabled
    config.alpha.linkerd.io/proxy-wait-before-exit-seconds: "25"
    config.linkerd.io/shutdown-grace-period: 150s
spec:
  terminationGracePeriodSeconds: 160
  containers:
  - name: app
    lifecycle: {preStop: {exec: {command: [sh, -c, sleep 20]}}}
"#;
    let timeline = timeline_with(yaml, None, false);
    let proxy = timeline.proxy.as_ref().unwrap();
    assert!(!proxy.present);
    assert_eq!(proxy.wait_source, Source::Annotation(annotations::LINKERD_WAIT_BEFORE_EXIT_SECONDS));
    assert_eq!(proxy.shutdown_grace_period, Some(Duration::from_secs(150)));
    // 150s of grace does not fit in the 135s left after a 25s wait.
    let found = timeline.findings();
    assert_eq!(rules(&found), [Rule::ProxyGraceExceedsRemaining]);
    assert_eq!(found[0].severity, Severity::Warning);
    assert!(found[0].message.contains("150s") && found[0].message.contains("135s"), "{}", found[0].message);
}

#[test]
fn default_proxy_grace_is_not_reported() {
    // Linkerd's default 120s is longer than the default 30s termination grace on every pod;
    // flagging it everywhere would drown the findings that matter.
    let yaml = "spec:\n  containers:\n  - name: app\n  - name: linkerd-proxy\n";
    assert_eq!(findings(yaml), vec![]);
}

#[test]
fn proxy_grace_from_env_is_read_and_bad_values_are_reported() {
    let yaml = r#"
spec:
  containers:
  - name: app
  - name: linkerd-proxy
    env:
    - {name: LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD, value: 45s}
"#;
    let found = findings(yaml);
    assert_eq!(rules(&found), [Rule::ProxyGraceExceedsRemaining]);
    assert!(found[0].message.contains("env LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD"), "{}", found[0].message);

    let bad = yaml.replace("45s", "soon");
    assert_eq!(rules(&findings(&bad)), [Rule::UnknownProxyGrace]);
}

#[test]
fn unknown_hooks_are_warnings_not_errors() {
    let yaml = r#"
spec:
  containers:
  - name: app
    lifecycle: {preStop: {httpGet: {path: /drain, port: 8080}}}
  - name: linkerd-proxy
    lifecycle: {preStop: {exec: {command: [/bin/drain-proxy]}}}
"#;
    let found = findings(yaml);
    assert_eq!(rules(&found), [Rule::UnknownAppPreStop, Rule::UnknownProxyWait]);
    assert!(found.iter().all(|f| f.severity == Severity::Warning));
}

#[test]
fn bad_wait_annotation_is_unknown() {
    let yaml = r#"
metadata:
  annotations:
    config.alpha.linkerd.io/proxy-wait-before-exit-seconds: 20s
spec:
  containers: [{name: app}, {name: linkerd-proxy}]
"#;
    let found = findings(yaml);
    assert_eq!(rules(&found), [Rule::UnknownProxyWait]);
    assert!(found[0].message.contains("\"20s\""), "{}", found[0].message);
}

#[test]
fn every_app_container_is_checked() {
    let yaml = r#"
spec:
  terminationGracePeriodSeconds: 60
  containers:
  - name: fast
    lifecycle: {preStop: {sleep: {seconds: 5}}}
  - name: slow
    lifecycle: {preStop: {sleep: {seconds: 90}}}
  - name: linkerd-proxy
    lifecycle: {preStop: {exec: {command: [/bin/sleep, "30"]}}}
"#;
    let found = findings(yaml);
    let mut got = rules(&found);
    got.sort();
    assert_eq!(got, [Rule::AppPreStopNotBelowProxyWait, Rule::AppPreStopNotBelowTerminationGrace]);
    assert!(found.iter().all(|f| f.container.as_deref() == Some("slow")));
}

#[test]
fn native_sidecar_skips_the_ordering_but_flags_a_useless_wait() {
    let yaml = r#"
spec:
  initContainers:
  - name: linkerd-proxy
    restartPolicy: Always
    lifecycle: {preStop: {exec: {command: [/bin/sleep, "10"]}}}
  containers:
  - name: app
    lifecycle: {preStop: {sleep: {seconds: 20}}}
"#;
    let timeline = timeline_with(yaml, None, true);
    assert_eq!(timeline.proxy.as_ref().unwrap().placement, Placement::NativeSidecar);
    assert_eq!(timeline.apps.len(), 1);
    // No ordering error and no Job warning: native sidecars stop after the app.
    assert_eq!(rules(&timeline.findings()), [Rule::NativeSidecarWait]);
}

#[test]
fn linkerd_native_sidecar_annotations_are_honoured() {
    for key in [annotations::LINKERD_NATIVE_SIDECAR, annotations::LINKERD_NATIVE_SIDECAR_ALPHA] {
        let yaml = format!(
            "metadata:\n  annotations:\n    linkerd.io/inject: enabled\n    {key}: \"true\"\nspec:\n  containers: [{{name: app}}]\n"
        );
        let timeline = timeline_with(&yaml, None, true);
        assert_eq!(timeline.proxy.unwrap().placement, Placement::NativeSidecar, "{key}");
    }
}

#[test]
fn pod_without_proxy_only_checks_app_against_termination_grace() {
    let ok = "spec:\n  containers:\n  - name: app\n    lifecycle: {preStop: {sleep: {seconds: 10}}}\n";
    let timeline = timeline_with(ok, None, true);
    assert!(timeline.proxy.is_none());
    assert_eq!(timeline.findings(), vec![]);
    let bad = ok.replace("10", "30");
    assert_eq!(rules(&findings(&bad)), [Rule::AppPreStopNotBelowTerminationGrace]);
}

#[test]
fn job_with_classic_proxy_and_nothing_to_stop_it_is_warned() {
    let yaml = "spec:\n  restartPolicy: Never\n  containers: [{name: main}, {name: linkerd-proxy}]\n";
    let found = timeline_with(yaml, None, true).findings();
    assert_eq!(rules(&found), [Rule::JobNeverCompletes]);
    assert!(found[0].message.contains("ShutdownPolicy"), "{}", found[0].message);

    let policy = ShutdownPolicySpec::default();
    assert_eq!(timeline_with(yaml, Some(&policy), true).findings(), vec![]);

    let mut disabled = ShutdownPolicySpec::default();
    disabled.completion.enabled = false;
    assert_eq!(rules(&timeline_with(yaml, Some(&disabled), true).findings()), [Rule::JobNeverCompletes]);
}

#[test]
fn await_wrapped_app_counts_as_handled() {
    for (argv, handled) in [
        (r#"command: [lameduck-await, -S, --, ./job]"#, true),
        (r#"command: [/usr/lib/linkerd/linkerd-await, --shutdown, --, ./job]"#, true),
        (r#"command: [lameduck-await, --, ./job, -S]"#, false),
        (r#"command: [./job, -S]"#, false),
    ] {
        let yaml = format!("spec:\n  containers:\n  - name: main\n    {argv}\n  - name: linkerd-proxy\n");
        let timeline = timeline_with(&yaml, None, true);
        assert_eq!(timeline.completion_handled, handled, "{argv}");
    }
}

#[test]
fn policy_settings_override_the_pod() {
    let policy: ShutdownPolicySpec = serde_yaml_ng::from_str(
        "proxy: {profile: Lameduck}\ndrain: {waitBeforeExit: 30s, shutdownGracePeriod: 2m}\n",
    )
    .unwrap();
    let yaml = r#"
spec:
  terminationGracePeriodSeconds: 60
  containers:
  - name: app
    lifecycle: {preStop: {sleep: {seconds: 20}}}
  - name: lameduck-proxy
    lifecycle: {preStop: {exec: {command: [lameduck-proxy, wait, --seconds, "5"]}}}
  - name: linkerd-proxy
"#;
    let timeline = timeline_with(yaml, Some(&policy), false);
    let proxy = timeline.proxy.as_ref().unwrap();
    assert_eq!(proxy.name, "lameduck-proxy");
    assert_eq!(proxy.wait_before_exit.known(), Some(Duration::from_secs(30)));
    assert_eq!(proxy.wait_source, Source::Policy("spec.drain.waitBeforeExit"));
    // linkerd-proxy is not this policy's proxy, so it counts as an app container here.
    assert_eq!(timeline.apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["app", "linkerd-proxy"]);
    let found = timeline.findings();
    assert_eq!(rules(&found), [Rule::ProxyGraceExceedsRemaining]);
    assert!(
        found[0].message.contains("ShutdownPolicy spec.drain.shutdownGracePeriod"),
        "{}",
        found[0].message
    );
}

#[test]
fn policy_native_sidecar_counts_as_native() {
    let mut policy = ShutdownPolicySpec::default();
    policy.drain.native_sidecar = true;
    let yaml = "spec:\n  containers: [{name: main}, {name: linkerd-proxy}]\n";
    let timeline = timeline_with(yaml, Some(&policy), true);
    assert_eq!(timeline.proxy.unwrap().placement, Placement::NativeSidecar);
}

#[test]
fn zero_termination_grace_breaks_any_wait() {
    let yaml = r#"
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: app
  - name: linkerd-proxy
    lifecycle: {preStop: {exec: {command: [/bin/sleep, "5"]}}}
"#;
    assert_eq!(rules(&findings(yaml)), [Rule::ProxyWaitNotBelowTerminationGrace]);
}

#[test]
fn rule_ids_serialize_as_their_names() {
    for rule in [Rule::AppPreStopNotBelowProxyWait, Rule::JobNeverCompletes, Rule::ProxyGraceExceedsRemaining]
    {
        assert_eq!(serde_json::to_value(rule).unwrap(), rule.as_str());
    }
}

#[test]
fn summary_states_every_number() {
    let summary = timeline_with(&seed(40), None, false).summary();
    assert_eq!(
        summary,
        "terminationGracePeriodSeconds 160s (pod spec); app \"app\" preStop 20s; proxy \"linkerd-proxy\" (classic sidecar) waits 40s (preStop hook), drains up to 120s (default)"
    );
}

#[test]
fn timeline_serializes_durations_as_seconds() {
    let json = serde_json::to_value(timeline_with(&seed(40), None, false)).unwrap();
    assert_eq!(json["terminationGracePeriodSeconds"], 160.0);
    assert_eq!(json["apps"][0]["preStop"]["seconds"], 20.0);
    assert_eq!(json["proxy"]["waitBeforeExit"]["kind"], "known");
    assert_eq!(json["proxy"]["shutdownGracePeriodSeconds"], 120.0);
}

#[test]
fn sidecars_that_lameduck_will_signal_are_warned_of_in_pods_that_finish() {
    let pod = "
spec:
  restartPolicy: Never
  containers: [{name: app}, {name: log-agent}, {name: cloud-sql-proxy}, {name: lameduck-proxy}]
";
    let policy: ShutdownPolicySpec = serde_yaml_ng::from_str(
        "{sidecars: [
           {profile: Custom, containerName: log-agent, methods: [PortForward, Signal]},
           {profile: CloudSqlProxy, methods: [Signal, PortForward]},
           {profile: Lameduck, methods: [EphemeralContainer, Signal]}]}",
    )
    .unwrap();
    let found = timeline_with(pod, Some(&policy), true).findings();
    let signalled: Vec<(&str, &str)> = found
        .iter()
        .filter(|f| f.rule == Rule::SidecarStoppedBySignal)
        .map(|f| (f.container.as_deref().unwrap(), f.severity))
        .map(|(c, s)| (c, if s == Severity::Warning { "warning" } else { "error" }))
        .collect();
    // A Custom sidecar has no quit endpoint; cloud-sql-proxy gets Signal first; the proxy's
    // endpoint comes before Signal.
    assert_eq!(signalled, [("log-agent", "warning"), ("cloud-sql-proxy", "warning")]);
    assert!(
        found[found.len() - 1].message.contains("spec.sidecars[1].methods"),
        "{}",
        found[found.len() - 1].message
    );
    // A pod that does not finish never has its sidecars stopped by lameduck.
    let service = timeline_with(pod, Some(&policy), false).findings();
    assert!(service.iter().all(|f| f.rule != Rule::SidecarStoppedBySignal));
}
