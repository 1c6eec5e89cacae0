//! `lameduck inject` as a user runs it: the real binary over the files in `examples/inject`
//! and stdin, asserting on exit codes, the manifests printed and the messages.

mod common;

use common::text;
use std::{path::PathBuf, process::Output};

use serde::Deserialize;
use serde_json::Value;

fn examples() -> PathBuf {
    common::examples("inject")
}

fn lameduck(args: &[&str], envs: &[(&str, &str)], stdin: Option<&str>) -> Output {
    common::run(&examples(), args, envs, stdin)
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml).map(|doc| Value::deserialize(doc).unwrap()).collect()
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .into_iter()
        .flatten()
        .find(|item| item["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

const DRAIN: [&str; 4] = ["--wait-before-exit-seconds", "20", "--shutdown-grace-period", "30s"];

fn inject_web(extra: &[&str]) -> Output {
    let args = [&["inject", "-f", "web.yaml"], &DRAIN[..], extra].concat();
    lameduck(&args, &[], None)
}

#[test]
fn deployment_gets_a_proxy_and_the_service_is_printed_as_written() {
    let out = inject_web(&[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "1 of 2 documents changed\n", "no warnings for this example");

    let docs = documents(&stdout);
    assert_eq!(docs.len(), 2, "{stdout}");
    let spec = &docs[0]["spec"]["template"]["spec"];
    let proxy = named(&spec["containers"], "lameduck-proxy");
    assert_eq!(proxy["image"], "localhost/lameduck/proxy:dev");
    assert_eq!(named(&proxy["env"], "LAMEDUCK_PROXY_INBOUND_TARGET")["value"], "127.0.0.1:9000");
    assert_eq!(named(&proxy["env"], "LAMEDUCK_PROXY_SHUTDOWN_GRACE_PERIOD")["value"], "30s");
    assert_eq!(proxy["lifecycle"]["preStop"]["exec"]["command"][3], "20");
    assert_eq!(docs[0]["spec"]["replicas"], 2);

    let original = std::fs::read_to_string(examples().join("web.yaml")).unwrap();
    let service = &original[original.find("apiVersion: v1\nkind: Service").unwrap()..];
    assert!(
        stdout.ends_with(&format!("---\n{service}")),
        "the Service keeps its text and comment:\n{stdout}"
    );
    assert!(stdout.starts_with("# A web app with no mesh yet"), "{stdout}");
    // The added container reads as people write one: its name first.
    assert!(stdout.contains("\n      - name: lameduck-proxy\n"), "{stdout}");
}

#[test]
fn injected_output_injects_to_the_same_bytes_and_passes_check() {
    for extra in [&[][..], &["--native-sidecar", "--await"][..]] {
        let once = inject_web(extra);
        assert_eq!(once.status.code(), Some(0), "{}", text(&once.stderr));
        let stdout = text(&once.stdout);
        let args = [&["inject", "-f", "-"], &DRAIN[..], extra].concat();
        let twice = lameduck(&args, &[], Some(&stdout));
        assert_eq!(twice.status.code(), Some(0), "{}", text(&twice.stderr));
        assert_eq!(text(&twice.stdout), stdout, "with {extra:?}");
        assert_eq!(text(&twice.stderr), "0 of 2 documents changed\n");

        let check = lameduck(&["check", "-f", "-"], &[], Some(&stdout));
        assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
        assert!(text(&check.stdout).contains("proxy \"lameduck-proxy\""), "{}", text(&check.stdout));
    }
}

#[test]
fn job_linkerd_injects_at_admission_is_awaited_and_completes() {
    let out = lameduck(&["inject", "-f", "linkerd-job.yaml", "--await"], &[], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let docs = documents(&text(&out.stdout));
    let template = &docs[0]["spec"]["template"];
    let migrate = named(&template["spec"]["containers"], "migrate");
    let command: Vec<&str> =
        migrate["command"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(command, ["lameduck-await", "-S", "--", "/bin/migrate", "--all"]);
    assert_eq!(
        template["spec"]["containers"].as_array().unwrap().len(),
        1,
        "Linkerd adds the proxy, not inject"
    );
    assert_eq!(template["metadata"]["annotations"]["config.linkerd.io/proxy-admin-shutdown"], "enabled");

    // Without --await `check` warns that the meshed Job never completes; with it, nothing to say.
    let check = lameduck(&["check", "--strict", "-f", "-"], &[], Some(&text(&out.stdout)));
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    assert_eq!(lameduck(&["check", "--strict", "-f", "linkerd-job.yaml"], &[], None).status.code(), Some(1));
}

#[test]
fn flags_can_come_from_the_environment() {
    let envs = [
        ("LAMEDUCK_INJECT_FILES", "linkerd-job.yaml"),
        ("LAMEDUCK_INJECT_AWAIT", "true"),
        ("LAMEDUCK_INJECT_SHUTDOWN_GRACE_PERIOD", "45s"),
        ("LAMEDUCK_INJECT_NATIVE_SIDECAR", "true"),
    ];
    let out = lameduck(&["inject"], &envs, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let annotations = &documents(&text(&out.stdout))[0]["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["config.linkerd.io/shutdown-grace-period"], "45s");
    assert_eq!(annotations["config.beta.linkerd.io/proxy-enable-native-sidecar"], "true");
    assert_eq!(annotations["config.linkerd.io/proxy-admin-shutdown"], "enabled");
}

#[test]
fn await_without_a_command_and_with_the_endpoint_off_warns_on_stderr() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: a, command: [/a]}, {name: b, image: b}]}\n";
    let out = lameduck(&["inject", "-f", "-", "--await", "--enable-shutdown-endpoint=false"], &[], Some(pod));
    assert_eq!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: -: document 1 (line 1): Pod \"p\": container \"b\" has no command"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: -: document 1 (line 1): Pod \"p\": --enable-shutdown-endpoint=false"),
        "{stderr}"
    );
    let docs = documents(&text(&out.stdout));
    let proxy = named(&docs[0]["spec"]["containers"], "lameduck-proxy");
    assert_eq!(named(&proxy["env"], "LAMEDUCK_PROXY_ENABLE_SHUTDOWN_ENDPOINT")["value"], "false");
}

#[test]
fn bad_yaml_names_document_and_line_exits_2_and_prints_nothing() {
    let good = std::fs::read_to_string(examples().join("web.yaml")).unwrap();
    let input = format!("{good}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: broken\n");
    let out = lameduck(&["inject", "-f", "-"], &[], Some(&input));
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("error: -: document 3, line "), "{stderr}");
    let line: usize =
        stderr["error: -: document 3, line ".len()..].split(',').next().unwrap().parse().unwrap();
    assert!((good.lines().count() + 2..=good.lines().count() + 5).contains(&line), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing is written when any document is bad");

    // A bad document in a later file stops the earlier, good file from being printed too.
    let out =
        lameduck(&["inject", "-f", "web.yaml", "-f", "-"], &[], Some("kind: Job\nspec: {template: 3}\n"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("-: document 1 (line 1): Job"), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_flag_values_name_the_flag() {
    for (args, flag) in [
        (&["--shutdown-grace-period", "30 seconds"][..], "--shutdown-grace-period"),
        (&["--wait-before-exit-seconds", "soon"][..], "--wait-before-exit-seconds"),
        (&["--wait-before-exit-seconds", "-1"][..], "--wait-before-exit-seconds"),
        (&["--enable-shutdown-endpoint=maybe"][..], "--enable-shutdown-endpoint"),
        (&["--proxy-image", ""][..], "--proxy-image"),
    ] {
        let out = lameduck(&[&["inject", "-f", "web.yaml"], args].concat(), &[], None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains(flag), "{args:?}: {}", text(&out.stderr));
        assert!(out.stdout.is_empty());
    }
    // The rule the ShutdownPolicy schema has: the wait ends before the drain would.
    let out = lameduck(
        &["inject", "-f", "web.yaml", "--wait-before-exit-seconds", "30", "--shutdown-grace-period", "30s"],
        &[],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr
            .contains("--wait-before-exit-seconds (30s) must be shorter than --shutdown-grace-period (30s)"),
        "{stderr}"
    );
}

#[test]
fn missing_file_is_bad_input_and_proxy_image_is_used() {
    let out = lameduck(&["inject", "-f", "no-such-file.yaml"], &[], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read no-such-file.yaml"), "{}", text(&out.stderr));

    let out = lameduck(
        &["inject", "-f", "web.yaml", "--proxy-image", "registry.example/lameduck/proxy:1.2"],
        &[],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let docs = documents(&text(&out.stdout));
    let proxy = named(&docs[0]["spec"]["template"]["spec"]["containers"], "lameduck-proxy");
    assert_eq!(proxy["image"], "registry.example/lameduck/proxy:1.2");
}
