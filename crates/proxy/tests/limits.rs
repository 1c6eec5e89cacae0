//! What bounds a client: how many connections to the app clients can make the proxy open.

mod support;

use std::time::Duration;

use http::Method;
use support::*;
use tokio::{io::AsyncWriteExt, net::TcpStream};

const SECOND: Duration = Duration::from_secs(1);

/// A metric's value from an exposition, 0 when absent.
fn metric(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

const APP_LIMIT_REFUSED: &str =
    "lameduck_proxy_refused_connections_total{direction=\"inbound\",reason=\"app-connection-limit\"}";

/// HTTP/2 clients choose `:authority`; the proxy keeps it for the app, but it must not decide how
/// many connections reach the app.
#[tokio::test]
async fn http2_requests_for_400_authorities_share_one_app_connection() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let client = H2::connect(proxy.inbound).await;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..400 {
        let client = client.clone();
        requests.spawn(async move {
            let authority = format!("host-{i}.example");
            (client.send(Method::GET, &authority, "/host").await, authority)
        });
    }
    while let Some(done) = requests.join_next().await {
        let (answer, authority) = done.unwrap();
        assert_eq!(answer, Ok((200, authority.clone())), "the app sees the client's :authority");
    }
    assert_eq!(upstream.received(), 400);
    assert_eq!(upstream.accepted(), 1, "one app connection for every authority");
    assert_eq!(metric(&proxy.metrics().await, "lameduck_proxy_app_connections"), 1.0);
}

/// The same for HTTP/1 `Host`s, on the relay (one client connection after another) and on
/// hyper's path (HTTP/1.0 requests, which the relay hands over).
#[tokio::test]
async fn http1_requests_for_many_hosts_share_the_app_connections() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    for i in 0..100 {
        let (reply, _) = raw_exchange(
            proxy.inbound,
            format!("GET /host HTTP/1.1\r\nHost: host-{i}.example\r\nConnection: close\r\n\r\n").as_bytes(),
            5 * SECOND,
        )
        .await;
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.starts_with("HTTP/1.1 200") && reply.ends_with(&format!("host-{i}.example")),
            "{reply}"
        );
        let (reply, _) = raw_exchange(
            proxy.inbound,
            format!("GET /host HTTP/1.0\r\nHost: old-{i}.example\r\n\r\n").as_bytes(),
            5 * SECOND,
        )
        .await;
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.0 200") && reply.ends_with(&format!("old-{i}.example")), "{reply}");
    }
    assert_eq!(upstream.received(), 200);
    // One for the relay's pool, one for hyper's.
    assert_eq!(upstream.accepted(), 2, "the app connections are reused whatever the Host");
}

/// Past `--max-app-connections`, a request that needs a new app connection gets a 503 that says
/// why, counted; once connections are free again, requests are served, an idle connection of the
/// relay's pool making room for the HTTP/2 connection.
#[tokio::test]
async fn past_the_app_connection_limit_a_request_gets_a_503_that_says_why() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &["--max-app-connections", "2"]).await;
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(proxy.inbound).await.unwrap();
        stream.write_all(b"GET /slow?ms=1500 HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
        busy.push(stream);
    }
    eventually("both slow requests to reach the app", 5 * SECOND, async || {
        (upstream.received() == 2).then_some(())
    })
    .await;

    let (status, body) = get(proxy.inbound, "/").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("2 connections to the app are open, the --max-app-connections limit"), "{body}");
    let h2 = H2::connect(proxy.inbound).await;
    let (status, body) = h2.send(Method::GET, "app", "/").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("--max-app-connections"), "{body}");
    let metrics = proxy.metrics().await;
    assert_eq!(metric(&metrics, APP_LIMIT_REFUSED), 2.0, "{metrics}");
    assert_eq!(metric(&metrics, "lameduck_proxy_app_connections"), 2.0, "{metrics}");
    assert_eq!(upstream.received(), 2, "nothing more reached the app");

    for mut stream in busy {
        let mut reply = vec![0u8; 12];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut reply).await.unwrap();
        assert_eq!(&reply, b"HTTP/1.1 200");
    }
    assert_eq!(get(proxy.inbound, "/").await.unwrap().0, 200);
    assert_eq!(h2.status("/").await, 200);
    assert_eq!(upstream.accepted(), 3, "the HTTP/2 connection took an idle one's place");
    assert!(metric(&proxy.metrics().await, "lameduck_proxy_app_connections") <= 2.0);
}
