//! The readiness wait, against a fake admin server on 127.0.0.1: delays, timeouts, an absent
//! proxy, the switches that skip the wait, and flags given through the environment.

mod support;

use std::{
    net::TcpListener,
    time::{Duration, Instant},
};

use lameduck_api::names::env;
use support::{
    AdminServer, Ready, bare_lameduck_await, eventually, lameduck_await, run, scratch_dir, sh, start,
    unused_port,
};

#[test]
fn waits_for_readiness_then_runs_the_app() {
    let dir = scratch_dir("delay");
    let marker = dir.join("ran");
    let delay = Duration::from_millis(300);
    let server = AdminServer::start(Ready::After(delay));

    let begun = Instant::now();
    let mut command = lameduck_await(server.port());
    command.arg("--").args(sh(&format!("echo ran > '{}'", marker.display())));
    let finished = run(command);

    assert_eq!(finished.code(), 0, "{}", finished.stderr);
    assert!(marker.exists(), "the app did not run");
    assert!(begun.elapsed() >= delay, "the app ran before the proxy was ready");
    assert!(server.ready_gets() >= 2, "expected retries, saw {} checks", server.ready_gets());
    assert_eq!(server.shutdown_posts(), 0, "without -S the proxy must be left alone");
    assert!(finished.stderr.is_empty(), "quiet by default, got:\n{}", finished.stderr);
}

#[test]
fn a_check_that_gets_no_answer_times_out_and_is_retried() {
    let server = AdminServer::start_stalling_first_check();
    let begun = Instant::now();
    let mut command = lameduck_await(server.port());
    command.args(["--", "true"]);
    let finished = run(command);

    assert_eq!(finished.code(), 0, "{}", finished.stderr);
    assert_eq!(server.ready_gets(), 2, "the stalled check must be abandoned and retried once");
    // The per-request timeout is 1s; the whole wait must not hang on the stalled check.
    assert!(begun.elapsed() >= Duration::from_secs(1), "gave up on the stalled check too early");
}

#[test]
fn never_ready_times_out_with_69_and_does_not_run_the_app() {
    let dir = scratch_dir("never");
    let marker = dir.join("ran");
    let server = AdminServer::start(Ready::Never);

    let mut command = lameduck_await(server.port());
    command.args(["-t", "300ms", "-S", "--"]).args(sh(&format!("touch '{}'", marker.display())));
    let finished = run(command);

    assert_eq!(finished.code(), 69, "{}", finished.stderr);
    assert!(!marker.exists(), "the app ran although the timeout is fatal");
    assert!(server.ready_gets() >= 2);
    assert_eq!(server.shutdown_posts(), 0);
    assert!(finished.stderr.contains("not ready within 300ms"), "{}", finished.stderr);
}

#[test]
fn never_ready_with_non_fatal_timeout_runs_the_app_and_shuts_down() {
    let dir = scratch_dir("nonfatal");
    let marker = dir.join("ran");
    let server = AdminServer::start(Ready::Never);

    let mut command = lameduck_await(server.port());
    command
        .args(["-t", "200ms", "--timeout-fatal=false", "-S", "--"])
        .args(sh(&format!("touch '{}'; exit 7", marker.display())));
    let finished = run(command);

    assert_eq!(finished.code(), 7, "{}", finished.stderr);
    assert!(marker.exists(), "the app did not run");
    assert_eq!(server.shutdown_posts(), 1);
    assert!(finished.stderr.contains("running the command anyway"), "{}", finished.stderr);
}

#[test]
fn absent_proxy_with_timeout_exits_69() {
    let mut command = lameduck_await(unused_port());
    command.args(["-t", "200ms", "--", "true"]);
    let finished = run(command);
    assert_eq!(finished.code(), 69, "{}", finished.stderr);
}

#[test]
fn absent_proxy_with_non_fatal_timeout_still_exits_with_the_apps_code() {
    // The shutdown POST finds nobody either; after its brief retries the app's code stands.
    let mut command = lameduck_await(unused_port());
    command.args(["-t", "100ms", "--timeout-fatal", "false", "-S", "--"]).args(sh("exit 5"));
    let finished = run(command);
    assert_eq!(finished.code(), 5, "{}", finished.stderr);
    assert!(finished.stderr.contains("could not shut the proxy down"), "{}", finished.stderr);
}

#[test]
fn absent_proxy_without_timeout_waits_until_it_appears() {
    let dir = scratch_dir("absent");
    let marker = dir.join("ran");
    let port = unused_port();

    let mut command = lameduck_await(port);
    command.args(["-v", "-S", "--"]).args(sh(&format!("touch '{}'", marker.display())));
    let running = start(command);

    eventually("two refused readiness checks", || {
        running.stderr().matches("Connection refused").count() >= 2
    });
    assert!(!marker.exists(), "the app ran before the proxy existed");

    let listener = TcpListener::bind(("127.0.0.1", port)).expect("re-bind the reserved port");
    let server = AdminServer::serve(listener, Ready::Now, 200);
    let finished = running.finish();

    assert_eq!(finished.code(), 0, "{}", finished.stderr);
    assert!(marker.exists(), "the app did not run once the proxy appeared");
    assert_eq!(server.shutdown_posts(), 1);
}

#[test]
fn disable_variables_skip_the_wait_but_not_the_shutdown() {
    for name in [env::AWAIT_DISABLED, env::LINKERD_AWAIT_DISABLED, env::LINKERD_DISABLED] {
        let server = AdminServer::start(Ready::Never);
        let mut command = lameduck_await(server.port());
        command.env(name, "no proxy here").args(["-v", "-S", "--"]).args(sh("exit 3"));
        let finished = run(command);

        assert_eq!(finished.code(), 3, "{name}: {}", finished.stderr);
        assert_eq!(server.ready_gets(), 0, "{name} did not skip the wait");
        assert_eq!(server.shutdown_posts(), 1, "{name} must not skip the shutdown");
        assert!(finished.stderr.contains(&format!("{name}=\"no proxy here\"")), "{}", finished.stderr);
    }
}

#[test]
fn empty_disable_variable_does_not_disable() {
    let server = AdminServer::start(Ready::Never);
    let mut command = lameduck_await(server.port());
    command.env(env::AWAIT_DISABLED, "").args(["-t", "100ms", "--", "true"]);
    assert_eq!(run(command).code(), 69);
    assert!(server.ready_gets() >= 1);
}

#[test]
fn flags_can_come_from_the_environment() {
    let server = AdminServer::start(Ready::After(Duration::from_millis(100)));
    let mut command = bare_lameduck_await();
    command
        .env(env::AWAIT_PORT, server.port().to_string())
        .env(env::AWAIT_BACKOFF, "10ms")
        .env(env::AWAIT_TIMEOUT, "10s")
        .env(env::AWAIT_SHUTDOWN, "true")
        .arg("true");
    let finished = run(command);

    assert_eq!(finished.code(), 0, "{}", finished.stderr);
    assert!(server.ready_gets() >= 2);
    assert_eq!(server.shutdown_posts(), 1, "LAMEDUCK_AWAIT_SHUTDOWN=true did not enable -S");
}

#[test]
fn uri_points_at_another_admin_address() {
    let server = AdminServer::start(Ready::Now);
    let mut command = lameduck_await(1);
    command.args(["--uri", &format!("http://127.0.0.1:{}", server.port()), "-S", "--", "true"]);
    let finished = run(command);

    assert_eq!(finished.code(), 0, "{}", finished.stderr);
    assert_eq!((server.ready_gets(), server.shutdown_posts()), (1, 1));
}

#[test]
fn without_a_command_it_only_waits() {
    let server = AdminServer::start(Ready::After(Duration::from_millis(100)));
    let finished = run(lameduck_await(server.port()));
    assert_eq!(finished.code(), 0, "{}", finished.stderr);
    assert!(server.ready_gets() >= 2);
    assert_eq!(server.shutdown_posts(), 0);
}

#[test]
fn shutdown_without_a_command_is_a_usage_error() {
    let finished = run({
        let mut command = lameduck_await(1);
        command.arg("-S");
        command
    });
    assert_eq!(finished.code(), 2, "{}", finished.stderr);
}
