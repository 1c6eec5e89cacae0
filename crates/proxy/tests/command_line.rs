//! The binary's command line: config errors (exit 64, all at once), `wait`, and `shutdown` over
//! HTTP and by signal, as the operator runs them by exec or in an ephemeral container.

mod support;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use support::*;

const SECOND: Duration = Duration::from_secs(1);

fn run(args: &[&str]) -> std::process::Output {
    Command::new(Proxy::binary()).args(args).output().unwrap()
}

#[test]
fn bad_flags_are_all_reported_with_exit_64() {
    let out = Command::new(Proxy::binary())
        .args(["--inbound-addr", "nowhere", "--log-format", "xml"])
        .env("LAMEDUCK_PROXY_SHUTDOWN_GRACE_PERIOD", "-1s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 3, "{stderr}");
    assert!(stderr.contains("--inbound-addr (LAMEDUCK_PROXY_INBOUND_ADDR): \"nowhere\""), "{stderr}");
    assert!(stderr.contains("--shutdown-grace-period (LAMEDUCK_PROXY_SHUTDOWN_GRACE_PERIOD)"), "{stderr}");
    assert!(stderr.contains("--log-format"), "{stderr}");

    let unknown = run(&["--no-such-flag"]);
    assert_eq!(unknown.status.code(), Some(64));
    assert_eq!(run(&["--help"]).status.code(), Some(0));
}

#[tokio::test]
async fn an_outbound_proxy_on_a_pod_address_needs_its_flag() {
    // Through an outbound proxy listening beyond loopback, any peer could reach the pod's
    // loopback-only services, the admin /shutdown among them.
    let [outbound] = free_ports::<1>();
    let open = format!("0.0.0.0:{outbound}");
    let refused = run(&["--outbound-addr", &open]);
    assert_eq!(refused.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            "--outbound-addr (LAMEDUCK_PROXY_OUTBOUND_ADDR): {open} is not a loopback address"
        )),
        "{stderr}"
    );

    let [inbound, admin] = free_ports::<2>();
    let mut allowed = Command::new(Proxy::binary())
        .args(["--outbound-addr", &open, "--allow-open-outbound"])
        .args(["--inbound-addr", &local(inbound).to_string(), "--admin-addr", &local(admin).to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = eventually("the proxy allowed an open outbound to be ready", 10 * SECOND, async || {
        (get(local(admin), "/ready").await.ok()?.0 == 200).then_some(())
    })
    .await;
    allowed.kill().unwrap();
    let _ = allowed.wait();
    assert_eq!(ready, ());
}

#[test]
fn wait_sleeps_then_exits_zero() {
    let started = Instant::now();
    let out = run(&["wait", "--seconds", "1"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(started.elapsed() >= SECOND);
}

#[test]
fn shutdown_without_a_proxy_fails_clearly() {
    let out = run(&["shutdown", "--admin-addr", &local(free_port()).to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the proxy admin server"));
}

#[tokio::test]
async fn shutdown_reports_a_disabled_endpoint_with_the_fix() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(upstream.addr, &[]).await;
    let out = run(&["shutdown", "--admin-addr", &proxy.admin.to_string()]);
    // Its own exit code, so the operator can tell "disabled" from "failed" by the code alone.
    assert_eq!(out.status.code(), Some(lameduck_api::admin::EXIT_ENDPOINT_DISABLED));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("disabled") && stderr.contains("--enable-shutdown-endpoint"), "{stderr}");
    assert!(proxy.is_running());
}

#[tokio::test]
async fn shutdown_over_http_and_by_signal_both_drain_the_proxy() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(upstream.addr, &["--enable-shutdown-endpoint"]).await;
    let out = run(&["shutdown", "--admin-addr", &proxy.admin.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("shutting down"));
    assert_eq!(proxy.exit_within(2 * SECOND).await.code(), Some(0));

    // What the Signal method's ephemeral container runs, aimed at this proxy's PID.
    let mut proxy = Proxy::start(upstream.addr, &[]).await;
    let out = run(&["shutdown", "--signal", "TERM", "--pid", &proxy.pid().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(proxy.exit_within(2 * SECOND).await.code(), Some(0));
    assert!(proxy.logs().contains("reason=\"SIGTERM\""), "{}", proxy.logs());
}

#[test]
fn busy_port_fails_to_start_with_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&[
        "--inbound-addr",
        &addr,
        "--outbound-addr",
        &local(free_port()).to_string(),
        "--admin-addr",
        &local(free_port()).to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr), "{}", String::from_utf8_lossy(&out.stderr));
}
