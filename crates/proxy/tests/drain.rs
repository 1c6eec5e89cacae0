//! Draining, as a client of the proxy and the kubelet would see it: SIGTERM (or POST /shutdown)
//! makes `/ready` 503 and refuses new connections at once, lets accepted requests finish, closes
//! keep-alive and HTTP/2 connections politely, keeps outbound serving, and exits 0 as soon as
//! nothing is open, or at the grace deadline.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use nix::sys::signal::Signal;
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn in_flight_request_completes_while_new_connections_are_refused() {
    in_flight_request_completes_while_new_connections_are_refused_with("1").await;
}

#[tokio::test]
async fn with_two_cores_an_in_flight_request_completes_while_new_connections_are_refused() {
    in_flight_request_completes_while_new_connections_are_refused_with("2").await;
}

async fn in_flight_request_completes_while_new_connections_are_refused_with(cores: &str) {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(upstream.addr, &["--shutdown-grace-period", "30s", "--cores", cores]).await;
    // One thread, or the main thread and the workers (a blocking-pool thread may come on top).
    let threads = std::fs::read_dir(format!("/proc/{}/task", proxy.pid())).unwrap().count();
    let workers: usize = cores.parse().unwrap();
    let expected = if workers == 1 { 1..=2 } else { workers + 1..=workers + 2 };
    assert!(expected.contains(&threads), "--cores {cores}: {threads} threads");

    // A keep-alive client: one quick request, then a slow one that is in flight at SIGTERM.
    let mut client = H1::connect(proxy.inbound).await.unwrap();
    let first = client.get("/").await.unwrap();
    assert_eq!((first.status, first.connection_close), (200, false));
    let slow = tokio::spawn(async move {
        let answer = client.get("/slow?ms=1500").await;
        (answer, client)
    });
    eventually("the slow request to reach the app", 5 * SECOND, async || {
        (upstream.received() == 2).then_some(())
    })
    .await;

    let signalled = Instant::now();
    proxy.signal(Signal::SIGTERM);
    eventually("new connections to be refused", SECOND, async || refused(proxy.inbound).await.then_some(()))
        .await;
    assert_eq!(get(proxy.admin, "/ready").await.unwrap().0, 503, "readiness must flip at once");
    assert!(proxy.is_running(), "a request is still in flight");

    let (answer, mut client) = slow.await.unwrap();
    let answer = answer.expect("the accepted request completes");
    assert_eq!((answer.status, answer.body.as_str()), (200, "slept 1500ms"));
    assert!(answer.connection_close, "the response during drain carries Connection: close");
    assert!(client.get("/").await.is_err(), "the connection is closed after that response");
    assert_eq!(upstream.received(), 2, "nothing new reached the app after SIGTERM");

    let status = proxy.exit_within(2 * SECOND).await;
    assert_eq!(status.code(), Some(0));
    assert!(signalled.elapsed() < 5 * SECOND);
    assert!(proxy.logs().contains("drained; exiting"), "{}", proxy.logs());
}

#[tokio::test]
async fn proxy_with_no_connection_exits_at_once() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(upstream.addr, &[]).await;
    assert_eq!(get(proxy.inbound, "/").await.unwrap().0, 200);
    let started = Instant::now();
    proxy.signal(Signal::SIGINT);
    assert_eq!(proxy.exit_within(2 * SECOND).await.code(), Some(0));
    assert!(started.elapsed() < Duration::from_millis(500), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn idle_keepalive_connection_is_closed_after_a_short_linger() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(upstream.addr, &[]).await;
    let mut idle = H1::connect(proxy.inbound).await.unwrap();
    assert_eq!(idle.get("/").await.unwrap().status, 200);
    let started = Instant::now();
    proxy.signal(Signal::SIGTERM);
    assert_eq!(proxy.exit_within(3 * SECOND).await.code(), Some(0));
    let took = started.elapsed();
    assert!(took < 2 * SECOND, "an idle keep-alive connection held the proxy for {took:?}");
    tokio::time::timeout(SECOND, idle.closed).await.expect("the client saw the close").unwrap();
}

#[tokio::test]
async fn request_on_a_keepalive_connection_just_after_sigterm_is_answered_not_reset() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(upstream.addr, &["--shutdown-grace-period", "30s"]).await;
    let mut client = H1::connect(proxy.inbound).await.unwrap();
    assert_eq!(client.get("/").await.unwrap().status, 200);
    proxy.signal(Signal::SIGTERM);
    eventually("draining to start", SECOND, async || refused(proxy.inbound).await.then_some(())).await;
    // The connection was idle when draining began; the client does not know yet and reuses it.
    let answer = client.get("/again").await.expect("answered, not reset");
    assert_eq!(answer.status, 200);
    assert!(answer.connection_close);
    assert_eq!(proxy.exit_within(2 * SECOND).await.code(), Some(0));
}

#[tokio::test]
async fn http2_gets_goaway_and_open_streams_finish() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(upstream.addr, &["--shutdown-grace-period", "30s"]).await;

    let stream = TcpStream::connect(proxy.inbound).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    let conn_done = tokio::spawn(conn);
    let mut streams = Vec::new();
    for ms in [800, 1200] {
        let mut sender = sender.clone();
        streams.push(tokio::spawn(async move {
            let request =
                Request::get(format!("http://app.test/slow?ms={ms}")).body(Empty::<Bytes>::new()).unwrap();
            let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let version = response.version();
            let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((status, version, String::from_utf8_lossy(&body).into_owned()))
        }));
    }
    eventually("both streams to reach the app", 5 * SECOND, async || {
        (upstream.received() == 2).then_some(())
    })
    .await;
    proxy.signal(Signal::SIGTERM);

    for (stream, ms) in streams.into_iter().zip([800, 1200]) {
        let (status, version, body) = stream.await.unwrap().expect("open stream completes");
        assert_eq!((status, version), (200, http::Version::HTTP_2));
        assert_eq!(body, format!("slept {ms}ms"));
    }
    // GOAWAY then close: the client connection ends by itself once its streams are done.
    tokio::time::timeout(2 * SECOND, conn_done)
        .await
        .expect("connection closed after GOAWAY")
        .unwrap()
        .unwrap();
    assert_eq!(proxy.exit_within(2 * SECOND).await.code(), Some(0));
}

#[tokio::test]
async fn grace_deadline_closes_a_hanging_request_and_exits_zero_on_time() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(upstream.addr, &["--shutdown-grace-period", "1s"]).await;
    let mut client = H1::connect(proxy.inbound).await.unwrap();
    let hanging = tokio::spawn(async move { client.get("/hang").await });
    eventually("the hanging request to reach the app", 5 * SECOND, async || {
        (upstream.received() == 1).then_some(())
    })
    .await;

    let signalled = Instant::now();
    proxy.signal(Signal::SIGTERM);
    let status = proxy.exit_within(5 * SECOND).await;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(took >= SECOND, "exited after {took:?}, before the grace period ended");
    assert!(took < 3 * SECOND, "exited after {took:?}, long after the 1s grace period");
    assert!(hanging.await.unwrap().is_err(), "the hanging request was cut at the deadline");
    assert!(proxy.logs().contains("shutdown grace period is over"), "{}", proxy.logs());
}

#[tokio::test]
async fn second_signal_exits_at_once() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(upstream.addr, &["--shutdown-grace-period", "60s"]).await;
    let mut client = H1::connect(proxy.inbound).await.unwrap();
    let _hanging = tokio::spawn(async move { client.get("/hang").await });
    eventually("the hanging request to reach the app", 5 * SECOND, async || {
        (upstream.received() == 1).then_some(())
    })
    .await;
    proxy.signal(Signal::SIGTERM);
    eventually("draining to start", SECOND, async || refused(proxy.inbound).await.then_some(())).await;
    assert!(proxy.is_running());
    let second = Instant::now();
    proxy.signal(Signal::SIGTERM);
    assert_eq!(proxy.exit_within(2 * SECOND).await.code(), Some(0));
    assert!(second.elapsed() < SECOND);
}

#[tokio::test]
async fn outbound_keeps_serving_the_app_while_draining() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(upstream.addr, &["--shutdown-grace-period", "30s"]).await;
    // An inbound request holds the drain open, as a slow client would.
    let mut inbound = H1::connect(proxy.inbound).await.unwrap();
    let held = tokio::spawn(async move { inbound.get("/slow?ms=2000").await });
    eventually("the inbound request to reach the app", 5 * SECOND, async || {
        (upstream.received() == 1).then_some(())
    })
    .await;
    proxy.signal(Signal::SIGTERM);
    eventually("inbound to be refused", SECOND, async || refused(proxy.inbound).await.then_some(())).await;

    // The app calls out through the forward proxy (absolute-form request).
    let mut outbound = H1::connect(proxy.outbound).await.expect("outbound still accepts");
    let uri = format!("http://{}/from-app", upstream.addr);
    let answer = outbound.get(&uri).await.unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "hello from /from-app over HTTP/1.1"));
    assert!(answer.connection_close, "outbound responses during drain close their connection");

    // CONNECT tunnels work during drain too.
    let mut tunnel = TcpStream::connect(proxy.outbound).await.unwrap();
    let connect = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", upstream.addr);
    tunnel.write_all(connect.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    tunnel.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    drop(tunnel);

    assert_eq!(held.await.unwrap().unwrap().status, 200);
    assert_eq!(proxy.exit_within(3 * SECOND).await.code(), Some(0));
}

#[tokio::test]
async fn opaque_tcp_is_forwarded_and_left_to_finish_while_draining() {
    let echo = echo_server().await;
    let mut proxy = Proxy::start(echo, &["--shutdown-grace-period", "30s"]).await;
    let mut stream = TcpStream::connect(proxy.inbound).await.unwrap();
    // Not HTTP: binary bytes, so the proxy forwards raw TCP.
    stream.write_all(b"\x00\x01opaque").await.unwrap();
    let mut buf = [0u8; 8];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"\x00\x01opaque");

    proxy.signal(Signal::SIGTERM);
    eventually("inbound to be refused", SECOND, async || refused(proxy.inbound).await.then_some(())).await;
    stream.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here", "an open opaque connection keeps working while draining");
    assert!(proxy.is_running());
    drop(stream);
    assert_eq!(proxy.exit_within(2 * SECOND).await.code(), Some(0));
}

#[tokio::test]
async fn post_shutdown_drains_like_sigterm() {
    let upstream = Upstream::start().await;
    let mut proxy = Proxy::start(upstream.addr, &["--enable-shutdown-endpoint"]).await;
    let (status, body) = post(proxy.admin, "/shutdown").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "shutdown\n"));
    assert_eq!(proxy.exit_within(2 * SECOND).await.code(), Some(0));
    assert!(proxy.logs().contains("POST /shutdown"), "{}", proxy.logs());
}
