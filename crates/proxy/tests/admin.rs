//! The admin server as the kubelet, Prometheus and `lameduck-proxy shutdown` see it, including a
//! non-loopback client from a network namespace this test creates, and live settings reload.

mod support;

use std::{process::Command, time::Duration};

use support::*;

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn shutdown_endpoint_is_404_unless_enabled_and_post_only() {
    let upstream = Upstream::start().await;
    let mut disabled = Proxy::start(upstream.addr, &[]).await;
    assert_eq!(post(disabled.admin, "/shutdown").await.unwrap().0, 404);
    assert!(disabled.is_running());

    let enabled = Proxy::start(upstream.addr, &["--enable-shutdown-endpoint=true"]).await;
    assert_eq!(get(enabled.admin, "/shutdown").await.unwrap().0, 405);
    assert_eq!(get(enabled.admin, "/live").await.unwrap(), (200, "live\n".to_owned()));
    assert_eq!(get(enabled.admin, "/ready").await.unwrap(), (200, "ready\n".to_owned()));
    assert_eq!(get(enabled.admin, "/nope").await.unwrap().0, 404);
}

#[tokio::test]
async fn ipv4_mapped_loopback_client_may_shut_down_a_dual_stack_admin() {
    let upstream = Upstream::start().await;
    let port = free_port();
    let mut proxy = Proxy::start_with_admin(
        upstream.addr,
        &format!("[::]:{port}"),
        local(port),
        &["--enable-shutdown-endpoint"],
    )
    .await;
    // Connecting to 127.0.0.1 on a [::] socket: the proxy sees ::ffff:127.0.0.1.
    assert_eq!(post(local(port), "/shutdown").await.unwrap().0, 200);
    assert_eq!(proxy.exit_within(2 * SECOND).await.code(), Some(0));
}

/// A network namespace joined to this one by a veth pair, removed when dropped.
struct Netns {
    name: String,
    host_if: String,
    pub host_ip: String,
}

impl Netns {
    fn create() -> Self {
        let id = std::process::id() % 10_000;
        let octet = 1 + id % 250;
        let ns = Self {
            name: format!("ldproxy{id}"),
            host_if: format!("ldh{id}"),
            host_ip: format!("10.254.{octet}.1"),
        };
        let peer_if = format!("ldn{id}");
        let peer_ip = format!("10.254.{octet}.2/30");
        let host_cidr = format!("{}/30", ns.host_ip);
        let steps: &[&[&str]] = &[
            &["netns", "add", &ns.name],
            &["link", "add", &ns.host_if, "type", "veth", "peer", "name", &peer_if],
            &["link", "set", &peer_if, "netns", &ns.name],
            &["addr", "add", &host_cidr, "dev", &ns.host_if],
            &["link", "set", &ns.host_if, "up"],
            &["netns", "exec", &ns.name, "ip", "addr", "add", &peer_ip, "dev", &peer_if],
            &["netns", "exec", &ns.name, "ip", "link", "set", &peer_if, "up"],
            &["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"],
        ];
        for step in steps {
            let out = Command::new("ip").args(*step).output().expect("iproute2's `ip` is installed");
            assert!(
                out.status.success(),
                "`ip {}` failed (this test needs root to create a network namespace): {}",
                step.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

#[tokio::test]
async fn non_loopback_client_gets_403_and_the_proxy_keeps_running() {
    let netns = Netns::create();
    let upstream = Upstream::start().await;
    let port = free_port();
    let mut proxy = Proxy::start_with_admin(
        upstream.addr,
        &format!("0.0.0.0:{port}"),
        local(port),
        &["--enable-shutdown-endpoint"],
    )
    .await;

    let from_netns = tokio::task::spawn_blocking({
        let target = format!("{}:{port}", netns.host_ip);
        let name = netns.name.clone();
        move || {
            Command::new("ip")
                .args(["netns", "exec", &name, Proxy::binary(), "shutdown", "--admin-addr", &target])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&from_netns.stderr);
    assert_eq!(from_netns.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("only accepts loopback clients"), "{stderr}");
    assert!(proxy.is_running(), "a refused shutdown must not stop the proxy");
    assert_eq!(post(local(port), "/shutdown").await.unwrap().0, 200, "loopback is still allowed");
    assert_eq!(proxy.exit_within(2 * SECOND).await.code(), Some(0));
}

#[tokio::test]
async fn settings_file_changes_reach_the_running_proxy() {
    let upstream = Upstream::start().await;
    let dir = std::env::temp_dir().join(format!("lameduck-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("annotations");
    std::fs::write(&file, "lameduck.io/enable-shutdown-endpoint=\"false\"\n").unwrap();
    let path = file.to_str().unwrap();
    let mut proxy = Proxy::start(
        upstream.addr,
        &["--settings-file", path, "--settings-poll-interval", "50ms", "--shutdown-grace-period", "60s"],
    )
    .await;
    assert_eq!(post(proxy.admin, "/shutdown").await.unwrap().0, 404);

    // Enable the endpoint and shorten the grace period, as a policy change would.
    std::fs::write(
        &file,
        "lameduck.io/enable-shutdown-endpoint=\"true\"\nlameduck.io/shutdown-grace-period=\"1s\"\n",
    )
    .unwrap();
    eventually("the new settings to apply", 5 * SECOND, async || {
        (get(proxy.admin, "/shutdown").await.ok()?.0 == 405).then_some(())
    })
    .await;

    // The file's 1s grace period, not the flag's 60s, bounds the drain of a hanging request.
    let mut client = H1::connect(proxy.inbound).await.unwrap();
    let _hanging = tokio::spawn(async move { client.get("/hang").await });
    eventually("the request to reach the app", 5 * SECOND, async || (upstream.received() == 1).then_some(()))
        .await;
    assert_eq!(post(proxy.admin, "/shutdown").await.unwrap().0, 200);
    assert_eq!(proxy.exit_within(4 * SECOND).await.code(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn bad_settings_values_are_counted_not_fatal() {
    let upstream = Upstream::start().await;
    let file = std::env::temp_dir().join(format!("lameduck-bad-settings-{}", std::process::id()));
    std::fs::write(&file, "lameduck.io/shutdown-grace-period=\"soon\"\n").unwrap();
    let proxy = Proxy::start(upstream.addr, &["--settings-file", file.to_str().unwrap()]).await;
    let metrics = proxy.metrics().await;
    assert!(metrics.contains("lameduck_proxy_settings_errors_total 1"), "{metrics}");
    assert!(proxy.logs().contains("ignoring a settings-file value"), "{}", proxy.logs());
    std::fs::remove_file(&file).unwrap();
}

#[tokio::test]
async fn metrics_carry_build_info_and_pass_promtool() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    assert_eq!(get(proxy.inbound, "/").await.unwrap().0, 200);
    let metrics = proxy.metrics().await;
    let build_info = metrics
        .lines()
        .find(|l| l.starts_with("lameduck_build_info{"))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(build_info.ends_with("} 1"), "{build_info}");
    assert!(build_info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{build_info}");
    promtool_check_metrics(&metrics);
}
