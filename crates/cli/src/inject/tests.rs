use serde::Deserialize;

use super::*;

fn run(input: &str, options: &Options) -> Injected {
    inject(&[("in.yaml".to_owned(), input.to_owned())], options).expect("input is good")
}

/// The output's documents, as JSON for `pointer` lookups.
fn documents_of(output: &str) -> Vec<Json> {
    serde_yaml_ng::Deserializer::from_str(output).map(|doc| Json::deserialize(doc).unwrap()).collect()
}

fn only_document(output: &str) -> Json {
    let mut docs = documents_of(output);
    assert_eq!(docs.len(), 1, "{output}");
    docs.remove(0)
}

/// The container named `name` in `containers` or `initContainers` of the pod spec at `spec`.
fn container<'a>(spec: &'a Json, name: &str) -> &'a Json {
    ["containers", "initContainers"]
        .iter()
        .filter_map(|list| spec.get(list)?.as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {spec}"))
}

fn names(list: &Json) -> Vec<&str> {
    list.as_array().into_iter().flatten().map(|c| c["name"].as_str().unwrap()).collect()
}

fn env_value<'a>(container: &'a Json, name: &str) -> Option<&'a str> {
    container["env"].as_array()?.iter().find(|v| v["name"] == name)?["value"].as_str()
}

fn strings(value: &Json) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

const DEPLOYMENT: &str = "\
# The shop's web front.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      futureField: 1
      terminationGracePeriodSeconds: 60
      containers:
      - name: app
        image: shop/web:1.0
        command: [/bin/web, --listen, ':9000']
        futureThing: {keep: me}
        ports:
        - containerPort: 9000
";

const LINKERD_POD: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: meshed
  annotations: {linkerd.io/inject: enabled}
spec:
  terminationGracePeriodSeconds: 90
  containers:
  - name: app
    image: app:1
  - name: linkerd-proxy
    image: cr.l5d.io/linkerd/proxy:edge
    env:
    - {name: LINKERD2_PROXY_LOG, value: warn}
status:
  phase: Running
";

fn drain_flags() -> Options {
    Options {
        wait_before_exit: Some(GoDuration::from_secs(20)),
        shutdown_grace_period: Some(GoDuration::from_secs(30)),
        enable_shutdown_endpoint: Some(true),
        ..Options::default()
    }
}

#[test]
fn deployment_without_a_proxy_gets_a_lameduck_proxy_and_keeps_unknown_fields() {
    let injected = run(DEPLOYMENT, &drain_flags());
    assert_eq!(injected.warnings, Vec::<String>::new());
    assert_eq!((injected.documents, injected.changed), (1, 1));
    assert!(
        injected.output.starts_with("# The shop's web front.\n"),
        "heading comment kept: {}",
        injected.output
    );
    let doc = only_document(&injected.output);
    let spec = &doc["spec"]["template"]["spec"];
    assert_eq!(names(&spec["containers"]), ["app", "lameduck-proxy"]);

    let proxy = container(spec, "lameduck-proxy");
    assert_eq!(proxy["image"], images::PROXY);
    let ports: Vec<_> =
        proxy["ports"].as_array().unwrap().iter().map(|p| p["containerPort"].clone()).collect();
    assert_eq!(ports, [4143, 4191]);
    assert_eq!(env_value(proxy, env::PROXY_INBOUND_TARGET), Some("127.0.0.1:9000"), "the app's port");
    assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(proxy["livenessProbe"]["httpGet"]["path"], "/live");
    assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 4191);
    let security = &proxy["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");

    // The flags, through drain::apply.
    assert_eq!(
        strings(&proxy["lifecycle"]["preStop"]["exec"]["command"]),
        ["lameduck-proxy", "wait", "--seconds", "20"]
    );
    assert_eq!(env_value(proxy, env::PROXY_SHUTDOWN_GRACE_PERIOD), Some("30s"));
    assert_eq!(env_value(proxy, env::PROXY_ENABLE_SHUTDOWN_ENDPOINT), Some("true"));
    let template_annotations = &doc["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(template_annotations[annotations::POLICY], "lameduck-inject");
    assert_eq!(template_annotations[annotations::WAIT_BEFORE_EXIT], "20s");

    // What k8s-openapi does not know, and everything else, is as it was.
    assert_eq!(spec["futureField"], 1);
    let app = container(spec, "app");
    assert_eq!(app["futureThing"]["keep"], "me");
    assert_eq!(strings(&app["command"]), ["/bin/web", "--listen", ":9000"], "no --await, no wrapping");
    assert_eq!(spec["terminationGracePeriodSeconds"], 60);
    assert_eq!(doc["metadata"]["namespace"], "shop");
    assert_eq!(doc["spec"]["selector"]["matchLabels"]["app"], "web");
    assert_eq!(doc["metadata"].get("annotations"), None, "the Deployment's own metadata is not the pod's");
}

#[test]
fn the_proxy_forwards_to_8080_when_the_app_declares_no_port() {
    let input = "kind: Job\nmetadata: {name: j}\nspec: {template: {spec: {restartPolicy: Never, containers: [{name: main, image: m}]}}}\n";
    let doc = only_document(&run(input, &Options::default()).output);
    let proxy = container(&doc["spec"]["template"]["spec"], "lameduck-proxy");
    assert_eq!(env_value(proxy, env::PROXY_INBOUND_TARGET), Some("127.0.0.1:8080"));
}

#[test]
fn linkerd_proxy_is_adjusted_with_its_own_env_and_a_shell_free_sleep() {
    let injected = run(LINKERD_POD, &drain_flags());
    assert_eq!(injected.warnings, Vec::<String>::new());
    let doc = only_document(&injected.output);
    let spec = &doc["spec"];
    assert_eq!(names(&spec["containers"]), ["app", "linkerd-proxy"], "no second proxy");
    let proxy = container(spec, "linkerd-proxy");
    assert_eq!(strings(&proxy["lifecycle"]["preStop"]["exec"]["command"]), ["/bin/sleep", "20"]);
    assert_eq!(env_value(proxy, env::LINKERD_SHUTDOWN_GRACE_PERIOD), Some("30s"));
    assert_eq!(env_value(proxy, env::LINKERD_SHUTDOWN_ENDPOINT_ENABLED), Some("true"));
    assert_eq!(env_value(proxy, "LINKERD2_PROXY_LOG"), Some("warn"));
    assert_eq!(proxy["image"], "cr.l5d.io/linkerd/proxy:edge");
    assert_eq!(doc["metadata"]["annotations"][annotations::POLICY], "lameduck-inject");
    assert_eq!(doc["status"]["phase"], "Running", "a Pod's other fields stay");
}

#[test]
fn template_linkerd_injects_at_admission_gets_linkerd_annotations_not_a_container() {
    let input = "\
kind: Deployment
metadata: {name: web}
spec:
  template:
    metadata:
      annotations: {linkerd.io/inject: enabled}
    spec:
      terminationGracePeriodSeconds: 10
      containers: [{name: app, image: app}]
";
    let injected = run(input, &drain_flags());
    let doc = only_document(&injected.output);
    assert_eq!(names(&doc["spec"]["template"]["spec"]["containers"]), ["app"]);
    let got = &doc["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(got[annotations::LINKERD_WAIT_BEFORE_EXIT_SECONDS], "20");
    assert_eq!(got[annotations::LINKERD_SHUTDOWN_GRACE_PERIOD], "30s");
    assert_eq!(got[annotations::LINKERD_ADMIN_SHUTDOWN], "enabled");
    assert_eq!(got[annotations::POLICY], "lameduck-inject");
    assert_eq!(got[annotations::LINKERD_INJECT], "enabled");
    assert_eq!(got.get(annotations::LINKERD_NATIVE_SIDECAR), None);
    // Waiting 20s does not fit in the 10s the pod is given: the timing rules say so.
    assert_eq!(injected.warnings.len(), 1, "{:?}", injected.warnings);
    assert!(injected.warnings[0].starts_with("in.yaml: document 1 (line 1): Deployment \"web\": "));
    assert!(
        injected.warnings[0].contains("proxy-wait-not-below-termination-grace"),
        "{:?}",
        injected.warnings
    );

    // A native sidecar is stopped after the app: it gets no wait, as drain::apply does it.
    let native = only_document(&run(input, &Options { native_sidecar: true, ..drain_flags() }).output);
    let got = &native["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(got[annotations::LINKERD_NATIVE_SIDECAR], "true");
    assert_eq!(got.get(annotations::LINKERD_WAIT_BEFORE_EXIT_SECONDS), None);
    assert_eq!(got[annotations::LINKERD_SHUTDOWN_GRACE_PERIOD], "30s");
}

#[test]
fn template_with_an_istio_sidecar_is_left_alone_with_a_warning() {
    let input = "kind: Pod\nmetadata: {name: i}\nspec: {containers: [{name: app, command: [/app]}, {name: istio-proxy}]}\n";
    let injected = run(input, &Options { await_app: true, ..drain_flags() });
    assert_eq!(injected.output, input);
    assert_eq!(injected.warnings.len(), 1, "{:?}", injected.warnings);
    assert!(
        injected.warnings[0].contains("\"istio-proxy\" container: left as it is"),
        "{:?}",
        injected.warnings
    );
}

#[test]
fn timing_errors_are_warned_without_a_policy_name() {
    // A 40s wait does not fit in the default 30s terminationGracePeriodSeconds.
    let input = "kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: app}]}\n";
    let injected =
        run(input, &Options { wait_before_exit: Some(GoDuration::from_secs(40)), ..Options::default() });
    assert_eq!(injected.warnings.len(), 1, "{:?}", injected.warnings);
    let warning = &injected.warnings[0];
    assert!(
        warning
            .starts_with("in.yaml: document 1 (line 1): Pod \"p\": proxy-wait-not-below-termination-grace: "),
        "{warning}"
    );
    assert!(warning.contains("40s") && warning.contains("30s"), "{warning}");
}

#[test]
fn native_sidecar_moves_the_proxy_to_the_init_containers_only_when_asked() {
    let classic = only_document(&run(DEPLOYMENT, &drain_flags()).output);
    let spec = &classic["spec"]["template"]["spec"];
    assert_eq!(spec.get("initContainers"), None);
    assert_eq!(container(spec, "lameduck-proxy").get("restartPolicy"), None);

    let native = only_document(&run(DEPLOYMENT, &Options { native_sidecar: true, ..drain_flags() }).output);
    let spec = &native["spec"]["template"]["spec"];
    assert_eq!(names(&spec["containers"]), ["app"]);
    assert_eq!(names(&spec["initContainers"]), ["lameduck-proxy"]);
    let proxy = container(spec, "lameduck-proxy");
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(proxy.get("lifecycle"), None, "a native sidecar stops after the app: no preStop wait");
    assert_eq!(proxy["image"], images::PROXY, "one proxy, moved whole");
    assert_eq!(env_value(proxy, env::PROXY_INBOUND_TARGET), Some("127.0.0.1:9000"));

    let linkerd = only_document(&run(LINKERD_POD, &Options { native_sidecar: true, ..drain_flags() }).output);
    assert_eq!(names(&linkerd["spec"]["initContainers"]), ["linkerd-proxy"]);
    assert_eq!(names(&linkerd["spec"]["containers"]), ["app"]);
}

#[test]
fn already_injected_documents_are_written_back_verbatim() {
    for options in [drain_flags(), Options { native_sidecar: true, await_app: true, ..drain_flags() }] {
        let once = run(&format!("{DEPLOYMENT}---\n{LINKERD_POD}"), &options);
        let twice = run(&once.output, &options);
        assert_eq!(twice.output, once.output, "inject is idempotent");
        assert_eq!((twice.documents, twice.changed), (2, 0));
    }
    // Hand-written, odd formatting and comments included: nothing to do, so nothing touched.
    let written = "\
apiVersion: v1
kind: Pod
metadata:
  name: done   # set up by hand
  annotations: {'lameduck.io/policy': lameduck-inject}
spec:
  containers:
  - {name: app, image: app}
  - name: lameduck-proxy
    image: \"proxy\"
";
    let injected = run(written, &Options::default());
    assert_eq!(injected.output, written);
    assert_eq!(injected.changed, 0);
}

#[test]
fn unknown_kinds_and_policies_pass_through_as_written() {
    let input = "\
--- # config
kind: ConfigMap
apiVersion: v1
metadata: {name: cm}
data:
  on: yes     # YAML 1.1 would read these as booleans; untouched text stays strings to kubectl
  when: 12:30
---
apiVersion: lameduck.io/v1alpha1
kind: ShutdownPolicy
metadata: {name: p}
spec: {drain: {waitBeforeExit: 5s}}
--- {kind: Service, apiVersion: v1, metadata: {name: s}}
...
";
    let injected = run(input, &drain_flags());
    assert_eq!(injected.changed, 0);
    let expected = input.strip_suffix("...\n").unwrap();
    assert_eq!(injected.output, expected);
}

#[test]
fn cronjob_template_is_injected_and_await_wraps_the_command() {
    let input = "\
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: '@daily'
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - name: report
            image: report:1
            command: [/bin/report]
            args: [--all]
          - name: helper
            image: helper:1
          - name: tool
            image: tool:1
            command: [/usr/lib/linkerd/linkerd-await, --, /bin/tool]
";
    let injected = run(input, &Options { await_app: true, ..Options::default() });
    let doc = only_document(&injected.output);
    let spec = &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(names(&spec["containers"]), ["report", "helper", "tool", "lameduck-proxy"]);
    let report = container(spec, "report");
    assert_eq!(strings(&report["command"]), ["lameduck-await", "-S", "--", "/bin/report"]);
    assert_eq!(strings(&report["args"]), ["--all"], "args follow the command unchanged");
    assert_eq!(container(spec, "helper").get("command"), None);
    assert_eq!(
        strings(&container(spec, "tool")["command"])[0],
        "/usr/lib/linkerd/linkerd-await",
        "already wrapped"
    );
    assert_eq!(container(spec, "lameduck-proxy").get("command"), None, "the proxy is not an app");
    // lameduck-await -S stops the proxy through /shutdown: --await turns it on.
    assert_eq!(
        env_value(container(spec, "lameduck-proxy"), env::PROXY_ENABLE_SHUTDOWN_ENDPOINT),
        Some("true")
    );
    assert_eq!(injected.warnings.len(), 1, "{:?}", injected.warnings);
    let warning = &injected.warnings[0];
    assert!(
        warning.starts_with(
            "in.yaml: document 1 (line 1): CronJob \"nightly\": container \"helper\" has no command"
        ),
        "{warning}"
    );
}

#[test]
fn await_with_the_shutdown_endpoint_explicitly_off_is_warned() {
    let options = Options { await_app: true, enable_shutdown_endpoint: Some(false), ..Options::default() };
    let injected = run(DEPLOYMENT, &options);
    let doc = only_document(&injected.output);
    let proxy = container(&doc["spec"]["template"]["spec"], "lameduck-proxy");
    assert_eq!(env_value(proxy, env::PROXY_ENABLE_SHUTDOWN_ENDPOINT), Some("false"));
    assert_eq!(injected.warnings.len(), 1, "{:?}", injected.warnings);
    assert!(injected.warnings[0].contains("--enable-shutdown-endpoint=false"), "{:?}", injected.warnings);
    assert!(injected.warnings[0].contains("container \"app\""), "{:?}", injected.warnings);

    // Without --await the endpoint stays at the proxy's default.
    let doc = only_document(&run(DEPLOYMENT, &Options::default()).output);
    let proxy = container(&doc["spec"]["template"]["spec"], "lameduck-proxy");
    assert_eq!(env_value(proxy, env::PROXY_ENABLE_SHUTDOWN_ENDPOINT), None);
}

#[test]
fn list_items_are_injected_one_by_one() {
    let input = "\
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: cm}, data: {k: v}}
- apiVersion: apps/v1
  kind: StatefulSet
  metadata: {name: db}
  spec:
    serviceName: db
    selector: {matchLabels: {app: db}}
    template:
      metadata: {labels: {app: db}}
      spec: {containers: [{name: db, image: db}]}
- apiVersion: apps/v1
  kind: DaemonSet
  metadata: {name: agent}
  spec:
    selector: {matchLabels: {app: agent}}
    template:
      metadata: {labels: {app: agent}}
      spec: {containers: [{name: agent, image: agent}]}
";
    let injected = run(input, &Options { await_app: true, ..Options::default() });
    let doc = only_document(&injected.output);
    let items = doc["items"].as_array().unwrap();
    assert_eq!(
        items[0],
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"k": "v"}})
    );
    for item in &items[1..] {
        assert_eq!(names(&item["spec"]["template"]["spec"]["containers"])[1], "lameduck-proxy", "{item}");
    }
    // Neither app has a command: each warning names its own item.
    assert_eq!(injected.warnings.len(), 2, "{:?}", injected.warnings);
    assert!(injected.warnings[0].starts_with("in.yaml: document 1 (line 1), item 2: StatefulSet \"db\": "));
    assert!(injected.warnings[1].starts_with("in.yaml: document 1 (line 1), item 3: DaemonSet \"agent\": "));
    assert_eq!(
        run(&injected.output, &Options { await_app: true, ..Options::default() }).output,
        injected.output
    );
}

#[test]
fn bad_input_is_refused_whole_naming_document_and_line() {
    let good = format!("{DEPLOYMENT}---\n");
    let input = format!("{good}kind: Pod\nmetadata: {{name: broken\n");
    let err = inject(&[("in.yaml".to_owned(), input)], &Options::default()).unwrap_err().to_string();
    assert!(err.starts_with("in.yaml: document 2, line "), "{err}");

    // A later file's wrong field type fails the run as `lameduck check` reports it.
    let bad = "kind: ReplicaSet\nmetadata: {name: rs}\nspec: {template: {spec: {containers: [{name: 7, image: [x]}]}}}\n";
    let inputs = [("a.yaml".to_owned(), DEPLOYMENT.to_owned()), ("-".to_owned(), bad.to_owned())];
    let err = inject(&inputs, &Options::default()).unwrap_err().to_string();
    assert!(err.starts_with("-: document 1 (line 1): ReplicaSet \"rs\": "), "{err}");
}

#[test]
fn documents_from_several_inputs_are_joined_in_order() {
    let inputs = [
        ("a.yaml".to_owned(), "kind: Secret\nmetadata: {name: s}".to_owned()),
        ("b.yaml".to_owned(), DEPLOYMENT.to_owned()),
    ];
    let injected = inject(&inputs, &Options::default()).unwrap();
    assert!(injected.output.starts_with("kind: Secret\nmetadata: {name: s}\n---\n# The shop's web front.\n"));
    let docs = documents_of(&injected.output);
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1]["kind"], "Deployment");
}

#[test]
fn changed_strings_keep_their_type_for_kubernetes_yaml_readers() {
    // kubectl reads YAML 1.1, where unquoted `on`, `yes` and `12:30` are not strings.
    let input = "\
kind: Deployment
metadata: {name: web, labels: {flag: 'on', answer: 'yes', time: '12:30', octal: '0755', n: '1e3'}}
spec: {template: {spec: {containers: [{name: app, image: app}]}}}
";
    let output = run(input, &Options::default()).output;
    for word in ["on", "yes", "12:30", "0755", "1e3"] {
        assert!(
            output.contains(&format!("'{word}'")) || output.contains(&format!("\"{word}\"")),
            "{word} lost its quotes:\n{output}"
        );
    }
}
