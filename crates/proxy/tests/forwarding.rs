//! Forwarding and robustness, as clients and the app see them.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::net::TcpStream;

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn inbound_http1_reaches_the_app_with_the_clients_host() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let mut client = H1::connect(proxy.inbound).await.unwrap();
    let answer = client
        .send(Request::get("/host").header("host", "web.shop.svc:80").body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "web.shop.svc:80"));
    // Keep-alive works outside of drains.
    assert_eq!(client.get("/").await.unwrap().body, "hello from / over HTTP/1.1");
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("lameduck_proxy_responses_total{direction=\"inbound\",status_class=\"2xx\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lameduck_proxy_connections_total{direction=\"inbound\",protocol=\"http1\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn inbound_http2_prior_knowledge_reaches_the_app_as_http2() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let stream = TcpStream::connect(proxy.inbound).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(Request::get("http://grpc.shop.svc/host").body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "grpc.shop.svc", "the app sees the client's :authority");
    let response =
        sender.send_request(Request::get("http://x/").body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "hello from / over HTTP/2.0");
}

#[tokio::test]
async fn malformed_http_gets_400_and_the_proxy_survives() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    for garbage in [
        &b"GET / HTTP/1.1\r\nthis is not a header\r\n\r\n"[..],
        b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    ] {
        let (reply, closed) = raw_exchange(proxy.inbound, garbage, 2 * SECOND).await;
        let head = String::from_utf8_lossy(&reply);
        assert!(head.starts_with("HTTP/1.1 400"), "{garbage:?} got {head:?}");
        assert!(closed, "the connection is closed after a 400");
    }
    assert_eq!(upstream.received(), 0);
    assert_eq!(get(proxy.inbound, "/").await.unwrap().0, 200, "the proxy still serves");
}

#[tokio::test]
async fn upstream_down_is_a_quick_502() {
    let nothing_there = local(free_port());
    let proxy = Proxy::start(nothing_there, &[]).await;
    let started = Instant::now();
    let (status, body) = get(proxy.inbound, "/").await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains(&nothing_there.to_string()), "{body}");
    assert!(started.elapsed() < SECOND, "502 took {:?}", started.elapsed());
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(
            "lameduck_proxy_refused_connections_total{direction=\"inbound\",reason=\"upstream\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn slowloris_is_cut_off_after_the_header_read_timeout() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &["--header-read-timeout", "300ms"]).await;
    let started = Instant::now();
    // A request head that never ends.
    let (_, closed) =
        raw_exchange(proxy.inbound, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n", 5 * SECOND).await;
    assert!(closed, "the proxy closed the connection");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < 3 * SECOND, "closed after {took:?}");
    assert_eq!(upstream.received(), 0);
}

#[tokio::test]
async fn outbound_serves_origin_form_with_host_and_refuses_raw_tcp() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let mut client = H1::connect(proxy.outbound).await.unwrap();
    let answer = client
        .send(Request::get("/via-host").header("host", upstream.addr.to_string()).body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "hello from /via-host over HTTP/1.1"));

    let (reply, closed) = raw_exchange(proxy.outbound, b"\x16\x03\x01not http", 3 * SECOND).await;
    assert!(reply.is_empty() && closed, "raw TCP on outbound is closed: use CONNECT");
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("refused_connections_total{direction=\"outbound\",reason=\"not-http\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn connect_to_nothing_is_a_502_not_a_broken_tunnel() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let nothing = local(free_port());
    let request = format!("CONNECT {nothing} HTTP/1.1\r\nHost: {nothing}\r\n\r\n");
    let (reply, _) = raw_exchange(proxy.outbound, request.as_bytes(), 2 * SECOND).await;
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 502"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

/// Two requests at once from an HTTP/2 client, which the proxy multiplexes onto one app
/// connection; the app answers the first and treats the second as `second` says.
async fn two_h2_requests(second: SecondStream) -> (H2App, Vec<u16>) {
    two_h2_requests_of(http::Method::GET, second).await
}

/// [`two_h2_requests`] with two bodyless requests of `method`.
async fn two_h2_requests_of(method: http::Method, second: SecondStream) -> (H2App, Vec<u16>) {
    let app = H2App::start(second).await;
    let proxy = Proxy::start(app.addr, &[]).await;
    let client = H2::connect(proxy.inbound).await;
    let both = async {
        tokio::join!(
            client.status_of(method.clone(), "app", "/a"),
            client.status_of(method.clone(), "app", "/b")
        )
    };
    let (a, b) = tokio::time::timeout(5 * SECOND, both).await.expect("both requests are answered");
    let mut statuses = vec![a, b];
    statuses.sort_unstable();
    (app, statuses)
}

/// nginx sends such a GOAWAY after `keepalive_requests`, with streams racing it.
#[tokio::test]
async fn an_h2_request_left_out_of_the_apps_goaway_is_sent_on_a_new_connection() {
    let (app, statuses) = two_h2_requests(SecondStream::GoawayAfterFirst).await;
    assert_eq!(statuses, [200, 200], "the unprocessed request is sent again, not answered 502");
    assert_eq!(app.requests(), [2, 1], "the app's second connection got it");
}

#[tokio::test]
async fn an_h2_request_the_app_refused_is_sent_again() {
    let (app, statuses) = two_h2_requests(SecondStream::Reset(REFUSED_STREAM)).await;
    assert_eq!(statuses, [200, 200], "REFUSED_STREAM means unprocessed: sent again");
    assert_eq!(app.requests().iter().sum::<usize>(), 3, "{:?}", app.requests());
}

#[tokio::test]
async fn an_h2_request_the_app_may_have_processed_is_not_sent_again() {
    for second in [SecondStream::GoawayAfterSecond, SecondStream::Reset(INTERNAL_ERROR)] {
        let (app, statuses) = two_h2_requests(second).await;
        assert_eq!(statuses, [200, 502], "{second:?}: a request the app may have acted on is not replayed");
        assert_eq!(app.requests(), [2], "{second:?}: nothing reached the app twice");
    }
}

/// RFC 9113 would allow it, but a request that is not idempotent is never sent twice: docs/security.md
/// promises so, and the HTTP/1 relay does the same.
#[tokio::test]
async fn a_bodyless_h2_post_left_out_of_the_apps_goaway_is_a_502_not_sent_again() {
    for second in [SecondStream::GoawayAfterFirst, SecondStream::Reset(REFUSED_STREAM)] {
        let (app, statuses) = two_h2_requests_of(http::Method::POST, second).await;
        assert_eq!(statuses, [200, 502], "{second:?}: the POST is answered 502");
        assert_eq!(app.requests(), [2], "{second:?}: no POST reached the app a second time");
    }
}

/// Requests queued in the proxy for an app connection that closes before taking them (here: the
/// app allows one stream at a time, then sends GOAWAY) never reached the app, so they go on a
/// new connection.
#[tokio::test]
async fn h2_requests_queued_for_a_closing_app_connection_are_sent_on_a_new_one() {
    let app = H2App::start(SecondStream::OneAtATime).await;
    let proxy = Proxy::start(app.addr, &[]).await;
    let client = H2::connect(proxy.inbound).await;
    let send = |path: &'static str| {
        let client = client.clone();
        tokio::spawn(async move { client.status(path).await })
    };
    let first = send("/first");
    eventually("the first request to reach the app", 5 * SECOND, async || {
        (app.requests() == [1]).then_some(())
    })
    .await;
    // The app's one stream is taken: these wait in the proxy.
    let queued: Vec<_> = ["/second", "/third", "/fourth"].into_iter().map(send).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(app.requests(), [1], "the app allows one stream at a time");
    app.release();
    let mut statuses = vec![first.await.unwrap()];
    for request in queued {
        statuses.push(tokio::time::timeout(5 * SECOND, request).await.expect("answered").unwrap());
    }
    assert_eq!(
        statuses,
        [200; 4],
        "app connections: {:?}\n{}",
        app.requests(),
        proxy.logs().lines().filter(|l| l.contains("lameduck_proxy::")).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(
        app.requests().iter().sum::<usize>(),
        4,
        "each request reached the app once: {:?}",
        app.requests()
    );
}
