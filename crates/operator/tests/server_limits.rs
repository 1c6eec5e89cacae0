//! The limits the webhook and admin servers put on their clients, over real sockets on loopback:
//! clients that connect and stall are dropped after the handshake or header deadline, a capped
//! server leaves the connection over the cap unanswered until a slot frees, and admissions are
//! still answered while slow clients hold connections.

mod support;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use lameduck_operator::{
    admin,
    metrics::Metrics,
    server::ServerLimits,
    webhook::certs::Bundle,
    webhook::https::{self as webhook, ServingCert},
};
use rustls::pki_types::ServerName;
use support::{Fixed, bundle, pod_review, trusting};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

/// Short enough for the tests, long enough that loopback handshakes never hit it by accident.
const SHORT: Duration = Duration::from_millis(300);
/// A deadline no test reaches.
const LONG: Duration = Duration::from_secs(30);
/// The time to wait for what must happen, or to be sure what must not happen has not.
const PATIENCE: Duration = Duration::from_secs(2);

async fn start_webhook(bundle: &Bundle, limits: ServerLimits) -> SocketAddr {
    let serving = Arc::new(ServingCert::default());
    serving.load(&bundle.cert, &bundle.key).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(webhook::serve_with_limits(
        listener,
        webhook::tls_config(serving).unwrap(),
        Arc::new(Fixed),
        Metrics::new(),
        limits,
    ));
    addr
}

async fn start_admin(limits: ServerLimits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_, ready_rx) = watch::channel(true);
    tokio::spawn(admin::serve_with_limits(listener, ready_rx, Metrics::new(), limits));
    addr
}

/// A TLS client that trusts `bundle`'s CA and offers `alpn`.
fn connector(bundle: &Bundle, alpn: &[u8]) -> TlsConnector {
    TlsConnector::from(Arc::new(trusting(&bundle.ca_bundle(), alpn)))
}

async fn tls_connect(addr: SocketAddr, connector: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector.connect(ServerName::IpAddress(addr.ip().into()), tcp).await.unwrap()
}

/// How long the server took to close `stream` (EOF or reset), reading and discarding whatever
/// it sends; `None` if it is still open after `within`.
async fn closed_after(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// Reads until the bytes read contain `needle`; `None` if they do not within `within` or the
/// connection ends first.
async fn read_until(stream: &mut (impl AsyncRead + Unpin), needle: &str, within: Duration) -> Option<String> {
    let mut seen = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            if text.contains(needle) {
                return Some(text.into_owned());
            }
        }
    })
    .await
    .ok()
    .flatten()
}

async fn send(stream: &mut (impl AsyncWrite + Unpin), bytes: &str) {
    stream.write_all(bytes.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
}

/// POSTs a pod review over TLS with HTTP/1.1 or HTTP/2; the status code.
async fn post_review(addr: SocketAddr, bundle: &Bundle, http2: bool) -> u16 {
    let tls = tls_connect(addr, &connector(bundle, if http2 { b"h2" } else { b"http/1.1" })).await;
    let request = http::Request::post(format!("https://{addr}/mutate-pods"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(&pod_review("11111111-1111-4111-8111-111111111111")).unwrap(),
        )))
        .unwrap();
    let response = if http2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await.unwrap()
    };
    let status = response.status().as_u16();
    response.into_body().collect().await.unwrap();
    status
}

const PARTIAL_POST: &str = "POST /mutate-pods HTTP/1.1\r\nHost: lameduck-webhook\r\nContent-Type: appl";
const LIVE: &str = "GET /live HTTP/1.1\r\nHost: admin\r\n\r\n";

fn limits(
    max_connections: usize,
    handshake_timeout: Duration,
    header_read_timeout: Duration,
) -> ServerLimits {
    ServerLimits { max_connections, handshake_timeout, header_read_timeout }
}

#[tokio::test]
async fn webhook_drops_a_client_that_never_sends_a_client_hello() {
    let bundle = bundle();
    let addr = start_webhook(&bundle, limits(16, SHORT, LONG)).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let after = closed_after(&mut silent, PATIENCE).await.expect("closed within the handshake timeout");
    assert!(after >= SHORT - Duration::from_millis(50), "closed after {after:?}, before the deadline");

    // A client that sends part of a ClientHello and stops is no different.
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    assert!(closed_after(&mut partial, PATIENCE).await.is_some(), "a half ClientHello is dropped");
}

#[tokio::test]
async fn webhook_drops_a_client_whose_request_head_stalls_after_tls() {
    let bundle = bundle();
    let addr = start_webhook(&bundle, limits(16, LONG, SHORT)).await;
    let h1 = connector(&bundle, b"http/1.1");

    let mut partial = tls_connect(addr, &h1).await;
    send(&mut partial, PARTIAL_POST).await;
    let after = closed_after(&mut partial, PATIENCE).await.expect("closed within the header timeout");
    assert!(after >= SHORT - Duration::from_millis(50), "closed after {after:?}, before the deadline");

    // Nothing at all after the handshake: hyper is still reading to tell HTTP/1 from HTTP/2.
    let mut silent = tls_connect(addr, &h1).await;
    assert!(closed_after(&mut silent, PATIENCE).await.is_some(), "a silent TLS client is dropped");

    // An HTTP/2 client that sends the preface and no request.
    let mut h2 = tls_connect(addr, &connector(&bundle, b"h2")).await;
    send(&mut h2, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(closed_after(&mut h2, PATIENCE).await.is_some(), "an HTTP/2 client with no request is dropped");
}

#[tokio::test]
async fn webhook_answers_408_and_closes_when_a_body_stalls() {
    let bundle = bundle();
    let addr = start_webhook(&bundle, limits(16, LONG, SHORT)).await;
    let mut stream = tls_connect(addr, &connector(&bundle, b"http/1.1")).await;
    // A whole head, then ten bytes of the hundred it announces, then nothing.
    send(&mut stream, "POST /mutate-pods HTTP/1.1\r\nHost: lameduck-webhook\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"apiVers").await;
    let answer = read_until(&mut stream, "408", PATIENCE).await.expect("a 408 within the deadline");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(closed_after(&mut stream, PATIENCE).await.is_some(), "the connection is closed after the 408");
}

#[tokio::test]
async fn admin_drops_clients_whose_request_head_stalls() {
    let addr = start_admin(limits(16, LONG, SHORT)).await;

    let mut partial = TcpStream::connect(addr).await.unwrap();
    send(&mut partial, "GET /metrics HTTP/1.1\r\nHost: adm").await;
    let after = closed_after(&mut partial, PATIENCE).await.expect("closed within the header timeout");
    assert!(after >= SHORT - Duration::from_millis(50), "closed after {after:?}, before the deadline");

    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(closed_after(&mut silent, PATIENCE).await.is_some(), "a silent client is dropped");

    // After a first request, hyper's own HTTP/1 timeout covers the next head.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    send(&mut kept, LIVE).await;
    read_until(&mut kept, "live\n", PATIENCE).await.expect("/live answered");
    send(&mut kept, "GET /live HTTP/1.1\r\n").await;
    assert!(closed_after(&mut kept, PATIENCE).await.is_some(), "a stalled second head is dropped");
}

#[tokio::test]
async fn a_connection_over_the_cap_waits_until_one_closes() {
    const CAP: usize = 4;
    let addr = start_admin(limits(CAP, LONG, LONG)).await;

    // CAP keep-alive connections, each answered once (so certainly accepted), then idle.
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        send(&mut stream, LIVE).await;
        read_until(&mut stream, "live\n", PATIENCE).await.expect("a connection under the cap is served");
        held.push(stream);
    }

    // The kernel completes the TCP handshake (the backlog), but the server does not accept it.
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    send(&mut waiting, LIVE).await;
    let mut waiting = tokio::spawn(async move {
        let answer = read_until(&mut waiting, "live\n", LONG).await;
        (Instant::now(), answer)
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting).await.is_err(),
        "a connection over the cap was served while {CAP} connections were open"
    );

    let closed_at = Instant::now();
    drop(held.pop());
    let (served_at, answer) =
        tokio::time::timeout(PATIENCE, waiting).await.expect("served once a slot freed").unwrap();
    assert!(answer.is_some_and(|a| a.starts_with("HTTP/1.1 200")), "answered 200");
    assert!(served_at >= closed_at, "served only after a held connection closed");
}

#[tokio::test]
async fn admissions_are_answered_while_slow_clients_hang() {
    let bundle = bundle();
    // Deadlines longer than the test: the slow clients stay for all of it.
    let addr = start_webhook(&bundle, limits(64, LONG, LONG)).await;
    let connector = connector(&bundle, b"http/1.1");

    let mut slow = Vec::new();
    for _ in 0..25 {
        // Connected, no ClientHello.
        slow.push(Box::new(TcpStream::connect(addr).await.unwrap()) as Box<dyn AsyncRead + Unpin + Send>);
    }
    for _ in 0..25 {
        // TLS done, half a request head.
        let mut stream = tls_connect(addr, &connector).await;
        send(&mut stream, PARTIAL_POST).await;
        slow.push(Box::new(stream));
    }

    for http2 in [false, true] {
        let status = tokio::time::timeout(Duration::from_secs(1), post_review(addr, &bundle, http2))
            .await
            .unwrap_or_else(|_| panic!("no answer within 1s while 50 slow clients hang (http2: {http2})"));
        assert_eq!(status, 200);
    }

    // The slow clients were held, not dropped, all along.
    for stream in &mut slow {
        assert!(closed_after(stream, Duration::from_millis(10)).await.is_none(), "a slow client was dropped");
    }
}
