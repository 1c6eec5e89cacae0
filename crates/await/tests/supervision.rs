//! Running the app, with and without `-S`: exit codes, death by signal, signal forwarding, a
//! program that cannot start, and what the proxy's `/shutdown` sees (exactly one POST).

mod support;

use std::{fs, os::unix::process::ExitStatusExt};

use lameduck_api::admin::ShutdownAnswer;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use support::{AdminServer, Ready, eventually, lameduck_await, run, scratch_dir, sh, start};

#[test]
fn exit_codes_pass_through_with_and_without_shutdown() {
    for code in [0, 7] {
        let server = AdminServer::start(Ready::Now);
        let mut command = lameduck_await(server.port());
        command.args(["-S", "--"]).args(sh(&format!("exit {code}")));
        let finished = run(command);
        assert_eq!(finished.code(), code, "-S: {}", finished.stderr);
        assert_eq!(server.shutdown_posts(), 1, "-S must POST /shutdown exactly once");

        let server = AdminServer::start(Ready::Now);
        let mut command = lameduck_await(server.port());
        command.arg("--").args(sh(&format!("exit {code}")));
        let finished = run(command);
        assert_eq!(finished.code(), code, "exec: {}", finished.stderr);
        assert_eq!(server.shutdown_posts(), 0);
    }
}

#[test]
fn death_by_signal_is_128_plus_n_under_shutdown_and_the_signal_itself_under_exec() {
    let server = AdminServer::start(Ready::Now);
    let mut command = lameduck_await(server.port());
    command.args(["-S", "--"]).args(sh("kill -TERM $$"));
    let finished = run(command);
    assert_eq!(finished.code(), 128 + Signal::SIGTERM as i32, "{}", finished.stderr);
    assert_eq!(server.shutdown_posts(), 1);

    // Without -S the app is this very process, so its death is ours.
    let mut command = lameduck_await(server.port());
    command.arg("--").args(sh("kill -TERM $$"));
    let finished = run(command);
    assert_eq!(finished.status.signal(), Some(Signal::SIGTERM as i32), "{:?}", finished.status);
}

#[test]
fn exec_replaces_the_process() {
    // `$PPID` of the app is the test itself only if lameduck-await became the app.
    let server = AdminServer::start(Ready::Now);
    let mut command = lameduck_await(server.port());
    command.arg("--").args(sh("echo $PPID"));
    let finished = run(command);
    assert_eq!(finished.code(), 0, "{}", finished.stderr);
    assert_eq!(finished.stdout.trim(), std::process::id().to_string());
}

#[test]
fn signals_are_forwarded_to_the_app() {
    let dir = scratch_dir("signals");
    let (log, up) = (dir.join("received"), dir.join("up"));
    let caught = ["HUP", "INT", "QUIT", "USR1", "USR2"];
    let mut script = String::new();
    for name in caught {
        script.push_str(&format!("trap 'echo {name} >> \"{}\"' {name}\n", log.display()));
    }
    script.push_str(&format!("trap 'echo TERM >> \"{}\"; exit 3' TERM\n", log.display()));
    script.push_str(&format!("touch '{}'\nwhile :; do sleep 0.02; done\n", up.display()));

    let server = AdminServer::start(Ready::Now);
    let mut command = lameduck_await(server.port());
    command.args(["-S", "--"]).args(sh(&script));
    let running = start(command);
    let pid = Pid::from_raw(running.child.id() as i32);
    eventually("the app to install its traps", || up.exists());

    let received = || fs::read_to_string(&log).unwrap_or_default();
    let signals =
        [Signal::SIGHUP, Signal::SIGINT, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGTERM];
    for (count, signal) in signals.into_iter().enumerate() {
        kill(pid, signal).expect("signal lameduck-await");
        let name = signal.as_str().trim_start_matches("SIG");
        eventually(&format!("the app to receive {name}"), || received().lines().count() == count + 1);
        assert_eq!(received().lines().last(), Some(name));
    }

    let finished = running.finish();
    assert_eq!(finished.code(), 3, "the app's exit code after its TERM trap: {}", finished.stderr);
    assert_eq!(server.shutdown_posts(), 1);
}

#[test]
fn a_program_that_cannot_start_exits_71_and_still_shuts_the_proxy_down() {
    let server = AdminServer::start(Ready::Now);
    let mut command = lameduck_await(server.port());
    command.args(["-S", "--", "/nonexistent/app", "arg"]);
    let finished = run(command);
    assert_eq!(finished.code(), 71, "{}", finished.stderr);
    assert!(finished.stderr.contains("/nonexistent/app"), "{}", finished.stderr);
    assert_eq!(server.shutdown_posts(), 1, "the Job would hang without the POST");

    let mut command = lameduck_await(server.port());
    command.args(["--", "/nonexistent/app"]);
    let finished = run(command);
    assert_eq!(finished.code(), 71, "{}", finished.stderr);
    assert_eq!(server.shutdown_posts(), 1, "exec mode never shuts the proxy down");
}

#[test]
fn disabled_shutdown_endpoint_logs_how_to_enable_it_and_keeps_the_apps_code() {
    let server = AdminServer::start_with(Ready::Now, 404);
    let mut command = lameduck_await(server.port());
    command.args(["-S", "--"]).args(sh("exit 7"));
    let finished = run(command);

    assert_eq!(finished.code(), 7, "{}", finished.stderr);
    assert_eq!(server.shutdown_posts(), 1, "a 404 is an answer; it must not be retried");
    assert!(
        finished.stderr.contains(&ShutdownAnswer::Disabled.describe()),
        "the enable hint is missing from stderr:\n{}",
        finished.stderr
    );
}
