//! `lameduck check` and `lameduck crds` as a user runs them: the real binary, real files and
//! stdin, asserting on exit codes and what is printed.

mod common;

use common::text;
use std::{path::PathBuf, process::Output};

fn examples() -> PathBuf {
    common::examples("check")
}

fn lameduck(args: &[&str], stdin: Option<&str>) -> Output {
    common::run(&examples(), args, &[], stdin)
}

/// The seed example with the proxy's wait set to `seconds`.
fn slow_clients(seconds: u32) -> String {
    let original = std::fs::read_to_string(examples().join("slow-clients.yaml")).unwrap();
    let replaced = original
        .replace("wait-before-exit-seconds: \"40\"", &format!("wait-before-exit-seconds: \"{seconds}\""));
    assert_ne!(original, replaced, "fixture no longer has the line this test edits");
    replaced
}

#[test]
fn seed_example_passes() {
    let out = lameduck(&["check", "-f", "slow-clients.yaml"], None);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("Deployment web in shop (slow-clients.yaml: document 1 (line 6))"), "{stdout}");
    assert!(stdout.contains("app \"app\" preStop 20s"), "{stdout}");
    assert!(
        stdout.contains("proxy \"linkerd-proxy\" (classic sidecar, injected at admission) waits 40s"),
        "{stdout}"
    );
    assert!(stdout.contains("terminationGracePeriodSeconds 160s"), "{stdout}");
    assert!(stdout.contains("  ok\n"), "{stdout}");
}

#[test]
fn proxy_wait_shorter_than_app_prestop_fails_naming_the_numbers() {
    let out = lameduck(&["check", "-f", "-"], Some(&slow_clients(10)));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("error[app-pre-stop-not-below-proxy-wait]: container \"app\": preStop waits 20s but proxy \"linkerd-proxy\" waits only 10s before exit"),
        "{stdout}"
    );
}

#[test]
fn proxy_wait_longer_than_termination_grace_fails_naming_the_numbers() {
    let out = lameduck(&["check", "-f", "-"], Some(&slow_clients(200)));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("error[proxy-wait-not-below-termination-grace]: proxy \"linkerd-proxy\": waits 200s before exit (annotation config.alpha.linkerd.io/proxy-wait-before-exit-seconds), not less than terminationGracePeriodSeconds (160s)"),
        "{stdout}"
    );
}

#[test]
fn meshed_job_is_warned_until_a_policy_selects_it() {
    let alone = lameduck(&["check", "-f", "meshed-job.yaml"], None);
    let stdout = text(&alone.stdout);
    assert_eq!(alone.status.code(), Some(0), "warnings alone do not fail: {stdout}");
    assert!(stdout.contains("warning[job-never-completes]"), "{stdout}");
    assert_eq!(lameduck(&["check", "--strict", "-f", "meshed-job.yaml"], None).status.code(), Some(1));

    let with_policy =
        lameduck(&["check", "--strict", "-f", "meshed-job.yaml", "-f", "job-policy.yaml"], None);
    let stdout = text(&with_policy.stdout);
    assert_eq!(with_policy.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("ShutdownPolicy batch-jobs"), "{stdout}");
}

#[test]
fn json_output_is_one_document_for_scripts() {
    let out = lameduck(&["check", "-o", "json", "-f", "-"], Some(&slow_clients(10)));
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(report["errors"], 1);
    let workload = &report["workloads"][0];
    assert_eq!((workload["kind"].as_str(), workload["name"].as_str()), (Some("Deployment"), Some("web")));
    assert_eq!((workload["document"].as_u64(), workload["line"].as_u64()), (Some(1), Some(6)));
    assert_eq!(workload["findings"][0]["rule"], "app-pre-stop-not-below-proxy-wait");
    assert_eq!(workload["findings"][0]["severity"], "error");
    assert_eq!(workload["timeline"]["terminationGracePeriodSeconds"], 160.0);
    assert_eq!(workload["timeline"]["proxy"]["waitBeforeExit"]["seconds"], 10.0);
}

#[test]
fn bad_yaml_names_document_and_line_and_exits_2() {
    let input = format!("{}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: broken\n", slow_clients(30));
    let out = lameduck(&["check", "-f", "-"], Some(&input));
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("error: -: document 2, line "), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing is checked when the input is bad");
}

#[test]
fn wrong_field_types_name_the_object() {
    let input = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec: {template: {spec: {containers: [{name: 7, image: [x]}]}}}\n";
    let out = lameduck(&["check", "-f", "-"], Some(input));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("document 1 (line 1): Job \"j\": "), "{}", text(&out.stderr));
}

#[test]
fn invalid_policy_in_the_input_is_refused_with_its_field() {
    let policy = "apiVersion: lameduck.io/v1alpha1\nkind: ShutdownPolicy\nmetadata: {name: p}\nspec: {drain: {waitBeforeExit: 20 seconds}}\n";
    let out = lameduck(&["check", "-f", "-"], Some(policy));
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("ShutdownPolicy \"p\"") && stderr.contains("\"20 seconds\""), "{stderr}");
}

#[test]
fn missing_file_and_missing_flag_are_usage_errors() {
    let out = lameduck(&["check", "-f", "no-such-file.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read no-such-file.yaml"), "{}", text(&out.stderr));
    let out = lameduck(&["check"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--filename"), "{}", text(&out.stderr));
}

#[test]
fn crds_prints_the_committed_yaml() {
    let out = lameduck(&["crds"], None);
    assert_eq!(out.status.code(), Some(0));
    let committed =
        std::fs::read_to_string(examples().join("../../crds/shutdownpolicies.lameduck.io.yaml")).unwrap();
    // The committed file carries the workspace's version; a build given LAMEDUCK_VERSION prints its own.
    use lameduck_api::{build, names::annotations::CRD_VERSION};
    let committed = committed.replace(
        &format!("{CRD_VERSION}: {}\n", build::PACKAGE_VERSION),
        &format!("{CRD_VERSION}: {}\n", build::VERSION),
    );
    assert_eq!(text(&out.stdout), committed);
}

#[test]
fn cluster_mode_excludes_files_and_needs_a_cluster() {
    let both = lameduck(&["check", "--cluster", "-f", "meshed-job.yaml"], None);
    assert_eq!(both.status.code(), Some(2));
    assert!(
        text(&both.stderr).contains("'--cluster' cannot be used with '--filename <FILE>'"),
        "{}",
        text(&both.stderr)
    );
    let stray = lameduck(&["check", "--operator-namespace", "x", "-f", "meshed-job.yaml"], None);
    assert_eq!(stray.status.code(), Some(2));
    assert!(text(&stray.stderr).contains("--operator-namespace needs --cluster"), "{}", text(&stray.stderr));

    // A kubeconfig that cannot be read fails the first check, and nothing else is checked.
    let out = lameduck(&["check", "--cluster", "--kubeconfig", "no-such-kubeconfig", "-o", "json"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(report["success"], false);
    let sections = report["sections"].as_array().unwrap();
    assert_eq!(sections.len(), 1, "{report}");
    let check = &sections[0]["checks"][0];
    assert_eq!(
        (check["description"].as_str(), check["result"].as_str()),
        (Some("can reach the API server"), Some("fail"))
    );
    assert!(check["message"].as_str().unwrap().contains("--kubeconfig no-such-kubeconfig"), "{check}");

    let out = lameduck(&["check", "--cluster", "--kubeconfig", "no-such-kubeconfig"], None);
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("Kubernetes API\n--------------\n× can reach the API server\n    "),
        "{stdout}"
    );
    assert!(stdout.ends_with("Status check results are × (0 passed, 0 warnings, 1 failed)\n"), "{stdout}");
}
