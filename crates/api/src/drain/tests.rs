use super::*;

fn pod(yaml: &str) -> Pod {
    serde_yaml_ng::from_str(yaml).expect("fixture pod parses")
}

fn policy(yaml: &str) -> ShutdownPolicySpec {
    serde_yaml_ng::from_str(yaml).expect("fixture policy parses")
}

const LAMEDUCK_POD: &str = "
metadata: {name: web-1, annotations: {team: a}}
spec:
  terminationGracePeriodSeconds: 60
  containers:
  - {name: app, image: app, lifecycle: {preStop: {sleep: {seconds: 5}}}}
  - {name: lameduck-proxy, image: proxy, env: [{name: LAMEDUCK_PROXY_SHUTDOWN_GRACE_PERIOD, value: 99s}]}
";

const LINKERD_POD: &str = "
metadata: {name: web-1}
spec:
  terminationGracePeriodSeconds: 60
  containers:
  - {name: app, image: app}
  - {name: linkerd-proxy, image: cr/linkerd/proxy, env: [{name: LINKERD2_PROXY_LOG, value: warn}]}
";

const DRAIN: &str = "
proxy: {profile: Lameduck}
drain: {waitBeforeExit: 20s, shutdownGracePeriod: 30s, enableShutdownEndpoint: true}
";

fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
    let spec = pod.spec.as_ref().unwrap();
    spec.containers.iter().chain(spec.init_containers.iter().flatten()).find(|c| c.name == name).unwrap()
}

fn env_of(container: &Container, name: &str) -> Option<String> {
    container.env.iter().flatten().find(|v| v.name == name).and_then(|v| v.value.clone())
}

fn pre_stop(container: &Container) -> Option<&LifecycleHandler> {
    container.lifecycle.as_ref()?.pre_stop.as_ref()
}

#[test]
fn lameduck_proxy_gets_a_shell_free_wait_env_and_a_live_settings_file() {
    let mut pod = pod(LAMEDUCK_POD);
    let applied = apply(&mut pod, "web", &policy(DRAIN)).unwrap();
    assert!(applied.changed);
    assert_eq!(applied.warnings, Vec::<String>::new());

    let proxy = container(&pod, "lameduck-proxy");
    let hook = pre_stop(proxy).unwrap().exec.as_ref().unwrap().command.clone().unwrap();
    assert_eq!(hook, ["lameduck-proxy", "wait", "--seconds", "20"]);
    assert_eq!(
        env_of(proxy, env::PROXY_SHUTDOWN_GRACE_PERIOD).as_deref(),
        Some("30s"),
        "replaced, not added"
    );
    assert_eq!(
        proxy.env.as_ref().unwrap().iter().filter(|v| v.name == env::PROXY_SHUTDOWN_GRACE_PERIOD).count(),
        1
    );
    assert_eq!(env_of(proxy, env::PROXY_ENABLE_SHUTDOWN_ENDPOINT).as_deref(), Some("true"));
    assert_eq!(env_of(proxy, env::PROXY_SETTINGS_FILE).as_deref(), Some(settings_file::PATH));
    assert_eq!(proxy.volume_mounts.as_ref().unwrap()[0].mount_path, settings_file::DIR);

    let annotations = pod.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[annotations::POLICY], "web");
    assert_eq!(annotations[annotations::SHUTDOWN_GRACE_PERIOD], "30s");
    assert_eq!(annotations[annotations::ENABLE_SHUTDOWN_ENDPOINT], "true");
    assert_eq!(annotations["team"], "a", "other annotations stay");
    let volume = &pod.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
    assert_eq!(volume.downward_api.as_ref().unwrap().items.as_ref().unwrap()[0].path, settings_file::FILE);
    // The app container is untouched.
    assert_eq!(container(&pod, "app"), container(&self::pod(LAMEDUCK_POD), "app"));
}

#[test]
fn applying_twice_equals_applying_once() {
    for (fixture, native) in [(LAMEDUCK_POD, false), (LAMEDUCK_POD, true), (LINKERD_POD, false)] {
        let mut spec = policy(DRAIN);
        spec.drain.native_sidecar = native;
        if fixture == LINKERD_POD {
            spec.proxy.profile = ProxyProfile::Linkerd;
        }
        let mut once = pod(fixture);
        assert!(apply(&mut once, "web", &spec).unwrap().changed);
        let mut twice = once.clone();
        let again = apply(&mut twice, "web", &spec).unwrap();
        assert!(!again.changed, "second application changed {fixture} (native {native})");
        assert_eq!(once, twice);
    }
}

#[test]
fn linkerd_proxy_gets_sleep_and_linkerd_env() {
    let mut pod = pod(LINKERD_POD);
    let spec = policy(
        "
proxy: {profile: Linkerd}
drain: {waitBeforeExit: 1500ms, shutdownGracePeriod: 45s, enableShutdownEndpoint: true}
",
    );
    apply(&mut pod, "web", &spec).unwrap();
    let proxy = container(&pod, "linkerd-proxy");
    let hook = pre_stop(proxy).unwrap().exec.as_ref().unwrap().command.clone().unwrap();
    assert_eq!(hook, ["/bin/sleep", "2"], "rounded up to whole seconds");
    assert_eq!(env_of(proxy, env::LINKERD_SHUTDOWN_GRACE_PERIOD).as_deref(), Some("45s"));
    assert_eq!(env_of(proxy, env::LINKERD_SHUTDOWN_ENDPOINT_ENABLED).as_deref(), Some("true"));
    assert_eq!(env_of(proxy, "LINKERD2_PROXY_LOG").as_deref(), Some("warn"));
    assert!(pod.spec.as_ref().unwrap().volumes.is_none(), "no settings file for Linkerd's proxy");
}

#[test]
fn a_pod_without_the_proxy_is_left_as_it_was() {
    let original = pod("metadata: {name: p}\nspec: {containers: [{name: app, image: app}]}");
    let mut pod = original.clone();
    let applied = apply(&mut pod, "web", &policy(DRAIN)).unwrap();
    assert_eq!(applied, Applied::default());
    assert_eq!(pod, original);
}

#[test]
fn native_sidecar_moves_the_proxy_first_among_init_containers_without_its_wait() {
    let mut pod = pod(LAMEDUCK_POD);
    pod.spec.as_mut().unwrap().init_containers =
        Some(vec![serde_yaml_ng::from_str("{name: setup, image: x}").unwrap()]);
    let mut spec = policy(DRAIN);
    spec.drain.native_sidecar = true;
    apply(&mut pod, "web", &spec).unwrap();
    let pod_spec = pod.spec.as_ref().unwrap();
    assert!(pod_spec.containers.iter().all(|c| c.name != "lameduck-proxy"));
    let inits = pod_spec.init_containers.as_ref().unwrap();
    assert_eq!(inits.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["lameduck-proxy", "setup"]);
    let proxy = &inits[0];
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    assert!(pre_stop(proxy).is_none(), "a native sidecar's wait only delays the end");
    let probe = proxy.startup_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!((probe.path.as_deref(), &probe.port), (Some("/ready"), &IntOrString::Int(4191)));
}

/// A pod whose grace period (25s) cannot hold the proxy's 20s wait plus its 30s drain.
fn tight_pod() -> Pod {
    let mut pod = pod(LAMEDUCK_POD);
    pod.spec.as_mut().unwrap().termination_grace_period_seconds = Some(15);
    pod
}

#[test]
fn enforce_warn_admits_with_warnings_that_name_the_rule() {
    let mut pod = tight_pod();
    let applied = apply(&mut pod, "web", &policy(DRAIN)).unwrap();
    let text = applied.warnings.join("\n");
    assert!(text.contains("proxy-wait-not-below-termination-grace"), "{text}");
    assert!(text.contains("ShutdownPolicy web"), "{text}");
    assert_eq!(pod.spec.as_ref().unwrap().termination_grace_period_seconds, Some(15), "Warn changes nothing");
}

#[test]
fn enforce_fix_raises_the_grace_period_to_fit_the_wait_and_the_drain() {
    let mut pod = tight_pod();
    let mut spec = policy(DRAIN);
    spec.drain.enforce = Enforce::Fix;
    let applied = apply(&mut pod, "web", &spec).unwrap();
    assert_eq!(
        pod.spec.as_ref().unwrap().termination_grace_period_seconds,
        Some(51),
        "20s wait + 30s drain + 1"
    );
    assert_eq!(applied.warnings, Vec::<String>::new());

    // A grace period that is already long enough is never lowered.
    let mut roomy = pod.clone();
    roomy.spec.as_mut().unwrap().termination_grace_period_seconds = Some(300);
    apply(&mut roomy, "web", &spec).unwrap();
    assert_eq!(roomy.spec.as_ref().unwrap().termination_grace_period_seconds, Some(300));
}

#[test]
fn enforce_fix_still_warns_about_what_it_cannot_fix() {
    // The app's preStop (25s) outlasts the proxy's wait (20s): no grace period fixes that.
    let mut pod = pod(LAMEDUCK_POD);
    pod.spec.as_mut().unwrap().containers[0].lifecycle =
        Some(serde_yaml_ng::from_str("{preStop: {sleep: {seconds: 25}}}").unwrap());
    let mut spec = policy(DRAIN);
    spec.drain.enforce = Enforce::Fix;
    let applied = apply(&mut pod, "web", &spec).unwrap();
    let text = applied.warnings.join("\n");
    assert!(text.contains("app-pre-stop-not-below-proxy-wait") && text.contains("cannot fix"), "{text}");
}

#[test]
fn enforce_reject_refuses_with_the_numbers() {
    let mut pod = tight_pod();
    let mut spec = policy(DRAIN);
    spec.drain.enforce = Enforce::Reject;
    let err = apply(&mut pod, "web", &spec).unwrap_err().to_string();
    assert!(err.contains("ShutdownPolicy web") && err.contains("Reject"), "{err}");
    assert!(err.contains("20s") && err.contains("15s"), "the message names the numbers: {err}");
}

#[test]
fn custom_profiles_get_a_sleep_action_and_a_warning_for_what_they_cannot_take() {
    let mut pod = pod("
metadata: {name: p}
spec:
  containers: [{name: app, image: app}, {name: envoy, image: envoy}]
");
    let spec = policy(
        "
proxy: {profile: Custom, containerName: envoy}
drain: {waitBeforeExit: 10s, shutdownGracePeriod: 20s}
",
    );
    let applied = apply(&mut pod, "mesh", &spec).unwrap();
    let proxy = container(&pod, "envoy");
    assert_eq!(pre_stop(proxy).unwrap().sleep.as_ref().unwrap().seconds, 10);
    assert!(applied.warnings.iter().any(|w| w.contains("not applied")), "{:?}", applied.warnings);
    assert!(proxy.env.is_none());
}
