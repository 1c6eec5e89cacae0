//! Strict HTTP/1 framing on the inbound relay, as the app sees it. The relay carries many clients'
//! requests over the same pooled app connections, so a message whose end the relay and the app
//! could judge differently must never reach the app: each test records the exact bytes the app
//! received, not only the status the client got.

mod support;

use std::time::Duration;

use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const SECOND: Duration = Duration::from_secs(1);
const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// The status code of a raw response.
fn status(raw: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(raw);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// Reads one response with a Content-Length from a keep-alive connection: `(status, body)`.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |n| n.trim().parse().unwrap());
            if bytes.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&bytes[end + 4..end + 4 + length]).into_owned();
                return (status(&bytes), body);
            }
        }
        let n = tokio::time::timeout(5 * SECOND, stream.read(&mut buf)).await.expect("a response").unwrap();
        assert!(n > 0, "closed mid-response: {:?}", String::from_utf8_lossy(&bytes));
        bytes.extend_from_slice(&buf[..n]);
    }
}

/// Requests whose framing a next hop could read differently, each with what is wrong with it.
/// The last two go to hyper's general server if they pass (HTTP/1.0, `Expect`): they are checked
/// the same way first.
const MALFORMED_REQUESTS: [(&str, &str); 27] = [
    (
        "chunk size 0x5",
        "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "chunk line ended by a bare LF",
        "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    ),
    (
        "chunk size with a sign",
        "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "chunk size of 17 digits",
        "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "whitespace before a chunk line's CRLF",
        "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
    ),
    (
        "chunk extension outside the grammar",
        "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5;a b\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "chunk data longer than its size",
        "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "folded trailer",
        "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx-a: 1\r\n folded\r\n\r\n",
    ),
    (
        "trailer ended by a bare LF",
        "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx-a: 1\n\r\n",
    ),
    (
        "last chunk ended by a bare LF",
        "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n",
    ),
    ("head lines ended by a bare LF", "GET / HTTP/1.1\nHost: app\n\n"),
    ("folded header", "GET / HTTP/1.1\r\nHost: app\r\nX-A: 1\r\n folded\r\n\r\n"),
    ("whitespace before a header's colon", "GET / HTTP/1.1\r\nHost : app\r\n\r\n"),
    ("two Host headers", "GET / HTTP/1.1\r\nHost: app\r\nHost: other\r\n\r\n"),
    ("no Host header", "GET / HTTP/1.1\r\n\r\n"),
    ("Content-Length not digits", "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: +5\r\n\r\nhello"),
    ("Content-Length as a list", "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5, 5\r\n\r\nhello"),
    (
        "Content-Length twice",
        "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    ),
    (
        "Content-Length with Transfer-Encoding",
        "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    ),
    (
        "Transfer-Encoding with Content-Length",
        "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    ),
    (
        "chunked listed twice",
        "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "codings not ending in chunked",
        "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    ),
    ("a NUL in a header value", "GET / HTTP/1.1\r\nHost: app\r\nX-A: a\0b\r\n\r\n"),
    (
        "Content-Length named in Connection",
        "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\nhello",
    ),
    ("obs-text in the request target", "GET /caf\u{e9} HTTP/1.1\r\nHost: app\r\n\r\n"),
    (
        "Transfer-Encoding in HTTP/1.0",
        "POST / HTTP/1.0\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "Expect with both lengths",
        "POST / HTTP/1.1\r\nHost: app\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    ),
];

#[tokio::test]
async fn malformed_requests_get_400_and_close_and_nothing_of_them_reaches_the_app() {
    let app = RecordingApp::start(|_, _| Reply::Answer(OK)).await;
    let proxy = Proxy::start(app.addr, &[]).await;
    // A valid exchange first leaves an app connection in the pool: the one a smuggled request
    // would ride.
    let warm = b"GET /warm HTTP/1.1\r\nHost: app\r\n\r\n";
    let mut client = TcpStream::connect(proxy.inbound).await.unwrap();
    client.write_all(warm).await.unwrap();
    assert_eq!(read_response(&mut client).await, (200, "ok".to_owned()));

    for (what, raw) in MALFORMED_REQUESTS {
        let (answer, closed) = raw_exchange(proxy.inbound, raw.as_bytes(), 5 * SECOND).await;
        assert!(!answer.is_empty(), "{what}: no answer");
        assert_eq!(status(&answer), 400, "{what}: {}", String::from_utf8_lossy(&answer));
        assert!(closed, "{what}: the connection must close after a 400");
    }
    // The same on the keep-alive connection that carried the warm request.
    client.write_all(MALFORMED_REQUESTS[0].1.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut client).await.0, 400);

    let received = app.all_bytes();
    assert_eq!(
        String::from_utf8_lossy(&received),
        String::from_utf8_lossy(warm),
        "the app received only the valid request"
    );
}

#[tokio::test]
async fn a_malformed_chunk_after_the_body_started_ends_the_app_connection_mid_message() {
    let app = RecordingApp::start(|_, _| Reply::Answer(OK)).await;
    let proxy = Proxy::start(app.addr, &[]).await;
    let head = "POST /upload HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut client = TcpStream::connect(proxy.inbound).await.unwrap();
    client.write_all(format!("{head}5\r\nhello\r\n").as_bytes()).await.unwrap();
    // The head and the first chunk stream on to the app before the rest arrives.
    eventually("the first chunk to reach the app", 5 * SECOND, async || {
        app.all_bytes().ends_with(b"hello\r\n").then_some(())
    })
    .await;
    client.write_all(b"0x5\r\nworld\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(5 * SECOND, client.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert_eq!(status(&answer), 400, "{}", String::from_utf8_lossy(&answer));

    let connections = eventually("the app connection to close", 5 * SECOND, async || {
        let connections = app.connections();
        connections.iter().all(|c| c.closed).then_some(connections)
    })
    .await;
    assert_eq!(connections.len(), 1);
    // The relay writes the framing header itself, in lower case.
    let relayed_head = head.replace("Transfer-Encoding", "transfer-encoding");
    assert_eq!(
        String::from_utf8_lossy(&connections[0].bytes),
        format!("{relayed_head}5\r\nhello\r\n"),
        "nothing after the malformed chunk line reached the app"
    );
    assert!(connections[0].requests.is_empty(), "the app never had a whole request");
}

/// App answers the relay must not pass on, each with what is wrong with it.
const MALFORMED_RESPONSES: [(&str, &[u8]); 9] = [
    ("head lines ended by a bare LF", b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok"),
    (
        "Transfer-Encoding with Content-Length",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ),
    ("Content-Length twice", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok"),
    ("chunk size 0x2", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0x2\r\nok\r\n0\r\n\r\n"),
    (
        "chunk line ended by a bare LF",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n",
    ),
    ("folded header", b"HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 2\r\n\r\nok"),
    ("whitespace before a header's colon", b"HTTP/1.1 200 OK\r\ncontent-length : 2\r\n\r\nok"),
    (
        "Content-Length named in Connection",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: content-length\r\n\r\nok",
    ),
    ("status code below 100", b"HTTP/1.0 002 x\r\ncontent-length: 2\r\n\r\nok"),
];

#[tokio::test]
async fn malformed_app_responses_are_502_and_their_connection_is_not_reused() {
    // Connection N of the app answers its first request with malformed response N.
    let app = RecordingApp::start(|connection, _| match MALFORMED_RESPONSES.get(connection) {
        Some((_, response)) => Reply::Answer(response),
        None => Reply::Answer(OK),
    })
    .await;
    let proxy = Proxy::start(app.addr, &[]).await;
    let mut client = TcpStream::connect(proxy.inbound).await.unwrap();
    for (what, _) in MALFORMED_RESPONSES {
        client.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
        let (status, body) = read_response(&mut client).await;
        assert_eq!(status, 502, "{what}: {body}");
    }
    // Each malformed answer cost its app connection: every request went out on a new one.
    client.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut client).await, (200, "ok".to_owned()));
    let connections = app.connections();
    assert_eq!(connections.len(), MALFORMED_RESPONSES.len() + 1);
    assert!(connections.iter().all(|c| c.requests.len() == 1), "{connections:?}");
}

/// The app answers the first request on each connection and closes the connection, without a
/// word, on the second: a reused connection dying under a request.
fn answer_once_then_close(_connection: usize, request: usize) -> Reply {
    if request == 0 { Reply::Answer(OK) } else { Reply::CloseSilently }
}

#[tokio::test]
async fn a_post_is_not_sent_again_when_a_reused_app_connection_closes_without_answering() {
    let app = RecordingApp::start(answer_once_then_close).await;
    let proxy = Proxy::start(app.addr, &[]).await;
    let mut client = TcpStream::connect(proxy.inbound).await.unwrap();
    client.write_all(b"GET /first HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut client).await.0, 200);
    let post = "POST /order HTTP/1.1\r\nHost: app\r\nContent-Length: 7\r\n\r\nitem=42";
    client.write_all(post.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut client).await;
    assert_eq!(status, 502, "{body}");

    let posts: Vec<_> = app
        .connections()
        .iter()
        .flat_map(|c| c.requests.clone())
        .filter(|r| r.starts_with(b"POST"))
        .collect();
    assert_eq!(posts.len(), 1, "the POST reached the app once: {posts:?}");
    assert_eq!(String::from_utf8_lossy(&posts[0]), post);
    assert_eq!(app.connections().len(), 1, "no second connection was opened for it");
}

#[tokio::test]
async fn an_idempotent_request_without_a_body_is_sent_again_on_a_new_connection() {
    let app = RecordingApp::start(answer_once_then_close).await;
    let proxy = Proxy::start(app.addr, &[]).await;
    let mut client = TcpStream::connect(proxy.inbound).await.unwrap();
    client.write_all(b"GET /first HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut client).await.0, 200);
    client.write_all(b"GET /again HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut client).await, (200, "ok".to_owned()));
    let connections = app.connections();
    assert_eq!(connections.len(), 2, "{connections:?}");
    assert!(connections[1].requests[0].starts_with(b"GET /again "), "{connections:?}");
}

/// A method outside the common few, or a lowercase one (methods are case-sensitive tokens, so
/// `get` is a method of its own), starts an HTTP/1 request like any other: its framing is
/// checked, and a smuggling-style head is refused rather than tunnelled to the app as opaque TCP.
#[tokio::test]
async fn any_token_method_is_checked_as_http_not_tunnelled() {
    let app = RecordingApp::start(|_, _| Reply::Answer(OK)).await;
    let proxy = Proxy::start(app.addr, &[]).await;
    for method in ["PROPFIND", "get", "M-SEARCH"] {
        let raw = format!(
            "{method} / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n"
        );
        let (answer, closed) = raw_exchange(proxy.inbound, raw.as_bytes(), 5 * SECOND).await;
        assert!(!answer.is_empty(), "{method}: no answer");
        assert_eq!(status(&answer), 400, "{method}: {}", String::from_utf8_lossy(&answer));
        assert!(closed, "{method}: the connection must close after a 400");
    }
    assert!(app.all_bytes().is_empty(), "{:?}", String::from_utf8_lossy(&app.all_bytes()));
    // A valid one is relayed as HTTP: the app gets the relay's rewritten head (hop-by-hop
    // headers dropped), which a tunnel would not have done.
    let raw = "PROPFIND /dav HTTP/1.1\r\nHost: app\r\nConnection: x-hop\r\nX-Hop: 1\r\nDepth: 0\r\n\r\n";
    let mut client = TcpStream::connect(proxy.inbound).await.unwrap();
    client.write_all(raw.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut client).await, (200, "ok".to_owned()));
    assert_eq!(
        String::from_utf8_lossy(&app.all_bytes()),
        "PROPFIND /dav HTTP/1.1\r\nHost: app\r\nDepth: 0\r\n\r\n"
    );
}

/// A client that sent the start of a request line and then stalls is HTTP/1, bounded by the
/// header read timeout, not an opaque tunnel that would carry the rest unchecked.
#[tokio::test]
async fn a_request_line_that_stalls_past_detection_is_still_checked() {
    let app = RecordingApp::start(|_, _| Reply::Answer(OK)).await;
    let proxy = Proxy::start(app.addr, &[]).await;
    let mut client = TcpStream::connect(proxy.inbound).await.unwrap();
    client.write_all(b"POS").await.unwrap();
    // Past the 1 s the proxy waits for a connection's first bytes to decide.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let raw = "T / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    client.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(5 * SECOND, client.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert_eq!(status(&answer), 400, "{}", String::from_utf8_lossy(&answer));
    assert!(app.all_bytes().is_empty(), "{:?}", String::from_utf8_lossy(&app.all_bytes()));
}
