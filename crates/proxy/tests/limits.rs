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
    // An HTTP/1.0 request takes hyper's path, whose client has the same budget.
    let (reply, _) = raw_exchange(proxy.inbound, b"GET / HTTP/1.0\r\nHost: app\r\n\r\n", 5 * SECOND).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.0 503") && reply.contains("--max-app-connections"), "{reply}");
    // Opaque TCP cannot be told why: the connection is closed.
    let (reply, closed) = raw_exchange(proxy.inbound, b"\x00\x01opaque", 5 * SECOND).await;
    assert!(reply.is_empty() && closed, "{reply:?}");
    let metrics = proxy.metrics().await;
    assert_eq!(metric(&metrics, APP_LIMIT_REFUSED), 4.0, "{metrics}");
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

/// Reads until the peer closes: `Some(bytes)`, or `None` when it stays open for `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut read = Vec::new();
    let reading = tokio::io::AsyncReadExt::read_to_end(stream, &mut read);
    match tokio::time::timeout(within, reading).await {
        Ok(_) => Some(read),
        Err(_) => None,
    }
}

/// An idle keep-alive connection is closed after `--inbound-idle-timeout`; one whose request
/// takes longer than that is not idle, and gets its answer.
#[tokio::test]
async fn an_idle_http1_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &["--inbound-idle-timeout", "300ms"]).await;
    let mut slow = TcpStream::connect(proxy.inbound).await.unwrap();
    slow.write_all(b"GET /slow?ms=900 HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
    let mut idle = TcpStream::connect(proxy.inbound).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let read = closed_within(&mut idle, 3 * SECOND).await.expect("the idle connection is closed");
    assert!(String::from_utf8_lossy(&read).starts_with("HTTP/1.1 200"), "answered first");
    assert!(started.elapsed() >= Duration::from_millis(300), "closed after {:?}", started.elapsed());
    let read = closed_within(&mut slow, 3 * SECOND).await.expect("closed once idle after its answer");
    let read = String::from_utf8_lossy(&read);
    assert!(read.starts_with("HTTP/1.1 200") && read.ends_with("slept 900ms"), "{read}");
}

/// An HTTP/2 connection with no request open gets GOAWAY after `--inbound-idle-timeout`; a
/// request that takes longer than that is not cut.
#[tokio::test]
async fn an_idle_http2_connection_gets_goaway_after_the_idle_timeout() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &["--inbound-idle-timeout", "300ms"]).await;
    let stream = TcpStream::connect(proxy.inbound).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut closed = tokio::spawn(conn);
    let mut sender: hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> = sender;
    let request = http::Request::get("http://app/slow?ms=900").body(http_body_util::Empty::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200, "a request longer than the idle timeout is served");
    assert!(!closed.is_finished(), "the connection was not idle");
    let ended = tokio::time::timeout(3 * SECOND, &mut closed).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "closed gracefully once idle: {ended:?}");
    assert!(started.elapsed() >= Duration::from_millis(1200), "closed after {:?}", started.elapsed());
}

const CONNECTION_LIMIT_REFUSED: &str =
    "lameduck_proxy_refused_connections_total{direction=\"inbound\",reason=\"connection-limit\"}";

/// Past `--max-inbound-connections`, a new connection is accepted and closed at once, counted;
/// the open ones keep being served, and a slot that frees up takes a new connection again.
#[tokio::test]
async fn past_the_inbound_connection_limit_a_new_connection_is_closed_at_once() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &["--max-inbound-connections", "2"]).await;
    let mut first = H1::connect(proxy.inbound).await.unwrap();
    let mut second = H1::connect(proxy.inbound).await.unwrap();
    assert_eq!(first.get("/").await.unwrap().status, 200);
    assert_eq!(second.get("/").await.unwrap().status, 200);

    let mut third = TcpStream::connect(proxy.inbound).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n").await;
    let read = closed_within(&mut third, SECOND).await.expect("closed at once");
    assert!(read.is_empty(), "{:?}", String::from_utf8_lossy(&read));
    assert_eq!(metric(&proxy.metrics().await, CONNECTION_LIMIT_REFUSED), 1.0);
    assert_eq!(first.get("/").await.unwrap().status, 200, "open connections are still served");

    drop(second);
    eventually("a freed slot to take a new connection", 5 * SECOND, async || {
        (get(proxy.inbound, "/").await.ok()?.0 == 200).then_some(())
    })
    .await;
}
