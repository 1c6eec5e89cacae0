//! Inbound HTTP/1 exchanges byte by byte, as a client and the app see them: keep-alive across body
//! framings, pipelining, streamed and large bodies, hop-by-hop headers, who closes the connection
//! and when, `Expect: 100-continue`, split request heads, and the request metrics. The client side
//! is raw bytes over TCP, so every framing detail the proxy sends is checked, not smoothed over by
//! an HTTP client library.

mod support;

use std::{net::SocketAddr, time::Duration};

use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

const SECOND: Duration = Duration::from_secs(1);
/// How long one response may take to arrive in full (4 MiB through a debug build included).
const RESPONSE_DEADLINE: Duration = Duration::from_secs(10);

/// How a response body was delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body by definition: a response to HEAD, 1xx, 204 or 304.
    None,
    ContentLength,
    Chunked,
    /// Read until the proxy closed the connection.
    Close,
}

/// A response as it came over the wire.
#[derive(Debug)]
struct RawResponse {
    /// `HTTP/1.1` or `HTTP/1.0`.
    version: String,
    status: u16,
    /// In order, names as sent.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    framing: Framing,
}

impl RawResponse {
    /// The first value of a header, by name in any case.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether `Connection` lists `token` (any case).
    fn connection_has(&self, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that writes raw bytes and parses responses itself.
struct RawClient {
    stream: TcpStream,
    /// Bytes read but not yet parsed.
    buf: Vec<u8>,
}

impl RawClient {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect to the proxy");
        Self { stream, buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(RESPONSE_DEADLINE, self.stream.write_all(bytes))
            .await
            .expect("the proxy took the request within the deadline")
            .expect("the request was written");
    }

    /// Reads more into `buf`: `Ok(0)` at EOF. Cancellation-safe: nothing read is lost.
    async fn fill(&mut self, deadline: Instant) -> std::io::Result<usize> {
        // Reads straight into `buf`: a big array held across `.await` overflows test stacks.
        self.buf.reserve(64 * 1024);
        let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await;
        read.unwrap_or_else(|_| panic!("no bytes from the proxy in time; have {:?}", self.shown()))
    }

    /// Like [`Self::fill`], for when the connection must stay open.
    async fn more(&mut self, deadline: Instant) {
        let n = self.fill(deadline).await.expect("read from the proxy");
        assert!(n > 0, "the proxy closed the connection mid-response; have {:?}", self.shown());
    }

    /// What is buffered, for failure messages.
    fn shown(&self) -> String {
        String::from_utf8_lossy(&self.buf[..self.buf.len().min(512)]).into_owned()
    }

    /// Takes bytes up to and including the next CRLF, without it.
    async fn line(&mut self, deadline: Instant) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..at].to_vec();
                self.buf.drain(..at + 2);
                return line;
            }
            self.more(deadline).await;
        }
    }

    async fn exactly(&mut self, n: usize, deadline: Instant) -> Vec<u8> {
        while self.buf.len() < n {
            self.more(deadline).await;
        }
        self.buf.drain(..n).collect()
    }

    /// Reads a response head; consumes nothing until it is complete, so it can be timed out.
    async fn head(&mut self, deadline: Instant) -> (String, u16, Vec<(String, String)>) {
        let end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            self.more(deadline).await;
        };
        let head = String::from_utf8(self.buf.drain(..end + 4).collect()).expect("the head is text");
        let mut lines = head.trim_end_matches("\r\n").split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap().to_owned();
        assert!(version == "HTTP/1.1" || version == "HTTP/1.0", "status line {status_line:?}");
        let status = parts.next().and_then(|s| s.parse().ok()).expect("a status code");
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("header line {line:?}"));
                assert!(!name.ends_with(' '), "whitespace before the colon in {line:?}");
                (name.to_owned(), value.trim().to_owned())
            })
            .collect();
        (version, status, headers)
    }

    /// Reads one response, interim (1xx) ones included; `to_head`: it answers a HEAD request.
    async fn response(&mut self, to_head: bool) -> RawResponse {
        let deadline = Instant::now() + RESPONSE_DEADLINE;
        let (version, status, headers) = self.head(deadline).await;
        let mut response = RawResponse { version, status, headers, body: Vec::new(), framing: Framing::None };
        if to_head || status < 200 || status == 204 || status == 304 {
            return response;
        }
        let chunked =
            response.header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
        if chunked {
            assert!(response.header("content-length").is_none(), "both framings: {:?}", response.headers);
            response.framing = Framing::Chunked;
            loop {
                let size_line = String::from_utf8(self.line(deadline).await).unwrap();
                let size = size_line.split(';').next().unwrap().trim();
                let size = usize::from_str_radix(size, 16)
                    .unwrap_or_else(|_| panic!("chunk size line {size_line:?}"));
                if size == 0 {
                    // Trailers, if any, end with an empty line.
                    while !self.line(deadline).await.is_empty() {}
                    break;
                }
                let data = self.exactly(size, deadline).await;
                response.body.extend_from_slice(&data);
                assert_eq!(self.exactly(2, deadline).await, b"\r\n", "CRLF after chunk data");
            }
        } else if let Some(length) = response.header("content-length") {
            let length: usize = length.parse().expect("a numeric content-length");
            response.framing = Framing::ContentLength;
            response.body = self.exactly(length, deadline).await;
        } else {
            response.framing = Framing::Close;
            while self.fill(deadline).await.expect("read a close-delimited body") > 0 {}
            response.body = std::mem::take(&mut self.buf);
        }
        response
    }

    /// Sends `request` and reads its response.
    async fn exchange(&mut self, request: &[u8]) -> RawResponse {
        self.send(request).await;
        self.response(request.starts_with(b"HEAD ")).await
    }

    /// Asserts that the proxy closes the connection within `within`, sending nothing more.
    async fn expect_closed(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        // A reset counts as closed: it is how a close looks when unread bytes were left behind.
        while let Ok(n) = self.fill(deadline).await {
            if n == 0 {
                break;
            }
        }
        assert!(self.buf.is_empty(), "bytes after the last response: {:?}", self.shown());
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").into_bytes()
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request =
        format!("POST {path} HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n", body.len())
            .into_bytes();
    request.extend_from_slice(body);
    request
}

/// A chunked POST of `body` in pieces of `piece` bytes.
fn post_chunked(path: &str, body: &[u8], piece: usize) -> Vec<u8> {
    let mut request =
        format!("POST {path} HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    for chunk in body.chunks(piece) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

/// A 200 whose body came with a Content-Length that matches it.
fn assert_ok_with_length(response: &RawResponse, body: &[u8]) {
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.framing, Framing::ContentLength, "{:?}", response.headers);
    assert!(
        response.body == body,
        "body {:?}, expected {:?}",
        response.text(),
        String::from_utf8_lossy(body)
    );
}

/// The first index at which `got` differs from `expected`, for a readable failure on big bodies.
fn first_difference(got: &[u8], expected: &[u8]) -> Option<usize> {
    got.iter().zip(expected).position(|(a, b)| a != b).or((got.len() != expected.len()).then_some(0))
}

#[tokio::test]
async fn one_keep_alive_connection_carries_every_body_framing_and_head() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let mut client = RawClient::connect(proxy.inbound).await;

    let first = client.exchange(&get("/first")).await;
    assert_ok_with_length(&first, b"hello from /first over HTTP/1.1");
    assert_eq!(first.version, "HTTP/1.1");
    assert!(!first.connection_has("close"), "{:?}", first.headers);

    let with_length = client.exchange(&post("/echo", b"hello world")).await;
    assert_ok_with_length(&with_length, b"hello world");
    assert_eq!(with_length.header("x-seen-method"), Some("POST"));
    assert_eq!(with_length.header("x-seen-length"), Some("11"));

    // A chunk extension, an upper-case size, a one-byte chunk and a trailer: the app gets the data.
    let chunked = client
        .exchange(
            b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;x=1\r\nhello\r\n1\r\n \r\nB\r\nchunked wor\r\n2\r\nld\r\n0\r\nX-Checksum: 42\r\n\r\n",
        )
        .await;
    assert_ok_with_length(&chunked, b"hello chunked world");
    assert_eq!(chunked.header("x-seen-length"), Some("19"));

    // No body follows a HEAD response, whatever its Content-Length says: were one sent, the next
    // response would not parse.
    let head = client.exchange(b"HEAD / HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("content-length"), Some("26"), "the length a GET would have: {:?}", head.headers);

    let last = client.exchange(&get("/last")).await;
    assert_ok_with_length(&last, b"hello from /last over HTTP/1.1");
    assert_eq!(upstream.received(), 5);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let mut client = RawClient::connect(proxy.inbound).await;
    // Three requests in one write; the POST's body must not be taken for the next request.
    let mut requests = get("/one");
    requests.extend(post("/echo", b"abc"));
    requests.extend(get("/two"));
    client.send(&requests).await;

    assert_ok_with_length(&client.response(false).await, b"hello from /one over HTTP/1.1");
    assert_ok_with_length(&client.response(false).await, b"abc");
    assert_ok_with_length(&client.response(false).await, b"hello from /two over HTTP/1.1");
    assert_ok_with_length(&client.exchange(&get("/three")).await, b"hello from /three over HTTP/1.1");
    assert_eq!(upstream.received(), 4);
}

#[tokio::test]
async fn a_streamed_response_arrives_whole_and_the_connection_is_reused() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let mut client = RawClient::connect(proxy.inbound).await;

    let streamed = client.exchange(&get("/stream?chunks=16&size=1000")).await;
    assert_eq!(streamed.status, 200, "{streamed:?}");
    // Close-delimited would also deliver the body, but would cost the connection.
    assert_eq!(streamed.framing, Framing::Chunked, "{:?}", streamed.headers);
    assert_eq!(streamed.body.len(), 16_000);
    assert_eq!(first_difference(&streamed.body, &pattern(16_000)), None);

    assert_ok_with_length(&client.exchange(&get("/after")).await, b"hello from /after over HTTP/1.1");
}

#[tokio::test]
async fn four_mib_bodies_both_ways_over_one_connection() {
    const SIZE: usize = 4 * 1024 * 1024;
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let mut client = RawClient::connect(proxy.inbound).await;
    let body = pattern(SIZE);

    let echoed = client.exchange(&post("/echo", &body)).await;
    assert_eq!((echoed.status, echoed.framing), (200, Framing::ContentLength), "{:?}", echoed.headers);
    assert_eq!(echoed.header("x-seen-length"), Some(SIZE.to_string().as_str()));
    assert_eq!(first_difference(&echoed.body, &body), None, "echoed {} bytes", echoed.body.len());

    // Odd-sized chunks, so chunk boundaries fall anywhere in the proxy's reads.
    let echoed = client.exchange(&post_chunked("/echo", &body, 100_003)).await;
    assert_eq!(echoed.status, 200);
    assert_eq!(echoed.header("x-seen-length"), Some(SIZE.to_string().as_str()));
    assert_eq!(first_difference(&echoed.body, &body), None, "echoed {} bytes", echoed.body.len());

    let sent = client.exchange(&get(&format!("/bytes?n={SIZE}"))).await;
    assert_eq!((sent.status, sent.framing), (200, Framing::ContentLength), "{:?}", sent.headers);
    assert_eq!(first_difference(&sent.body, &body), None, "got {} bytes", sent.body.len());

    let streamed = client.exchange(&get(&format!("/stream?chunks=64&size={}", SIZE / 64))).await;
    assert_eq!((streamed.status, streamed.framing), (200, Framing::Chunked), "{:?}", streamed.headers);
    assert_eq!(first_difference(&streamed.body, &body), None, "got {} bytes", streamed.body.len());
    assert_eq!(upstream.received(), 4);
}

#[tokio::test]
async fn hop_by_hop_headers_stay_on_their_hop_both_ways() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let mut client = RawClient::connect(proxy.inbound).await;

    let seen = client
        .exchange(
            b"GET /headers HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, x-private\r\n\
              X-Private: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic x\r\nTE: trailers\r\n\
              X-Request-Id: r-1\r\nAccept: */*\r\n\r\n",
        )
        .await;
    assert_eq!(seen.status, 200, "{seen:?}");
    let names = seen.text();
    let names: Vec<&str> = names.lines().collect();
    for hop in ["connection", "x-private", "keep-alive", "proxy-authorization", "te"] {
        assert!(!names.contains(&hop), "{hop} reached the app: {names:?}");
    }
    for end_to_end in ["host", "x-request-id", "accept"] {
        assert!(names.contains(&end_to_end), "{end_to_end} did not reach the app: {names:?}");
    }
    // `Connection: keep-alive` was for the proxy: the connection stays open.
    assert!(!seen.connection_has("close"));

    // The app really sends the header it names as hop-by-hop, so the proxy has something to strip.
    let mut direct = RawClient::connect(upstream.addr).await;
    let from_app = direct.exchange(&get("/private-header")).await;
    assert_eq!(from_app.header("x-internal"), Some("1"), "{:?}", from_app.headers);
    assert!(from_app.connection_has("x-internal"), "{:?}", from_app.headers);

    let through = client.exchange(&get("/private-header")).await;
    assert_ok_with_length(&through, b"ok");
    assert_eq!(through.header("x-internal"), None, "{:?}", through.headers);
    assert!(!through.connection_has("x-internal"), "{:?}", through.headers);
}

#[tokio::test]
async fn connection_close_from_the_client_is_honoured_after_the_response() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let mut client = RawClient::connect(proxy.inbound).await;
    let answer = client.exchange(b"GET /bye HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n").await;
    assert_ok_with_length(&answer, b"hello from /bye over HTTP/1.1");
    assert!(answer.connection_has("close"), "{:?}", answer.headers);
    client.expect_closed(2 * SECOND).await;
}

/// Five requests on one client connection to an app that closes every connection after one
/// response without saying so; `pause` between them. Each must be a 200, not a 502 from reusing
/// a connection the app has closed.
async fn requests_to_an_app_that_closes_after_each_response(pause: Duration) {
    let upstream = OneShotUpstream::start(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let mut client = RawClient::connect(proxy.inbound).await;
    for i in 0..5 {
        let answer = client.exchange(&get(&format!("/{i}"))).await;
        assert_eq!((answer.status, answer.text().as_str()), (200, "ok"), "request {i}: {answer:?}");
        // The app's close is between it and the proxy; the client keeps its connection.
        assert!(!answer.connection_has("close"), "request {i}: {:?}", answer.headers);
        tokio::time::sleep(pause).await;
    }
    assert_eq!(upstream.received(), 5, "each request reached the app once");
}

#[tokio::test]
async fn an_app_that_closes_idle_connections_costs_no_request() {
    // The pause lets the app's FIN reach the proxy before the next request.
    requests_to_an_app_that_closes_after_each_response(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn an_app_that_closes_idle_connections_costs_no_request_back_to_back() {
    requests_to_an_app_that_closes_after_each_response(Duration::ZERO).await;
}

#[tokio::test]
async fn a_close_delimited_app_response_reaches_the_client_whole() {
    let upstream = OneShotUpstream::start(b"HTTP/1.1 200 OK\r\n\r\nbody-until-close").await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let mut client = RawClient::connect(proxy.inbound).await;
    let answer = client.exchange(&get("/")).await;
    assert_eq!((answer.status, answer.text().as_str()), (200, "body-until-close"), "{answer:?}");
    match answer.framing {
        // Reading to EOF already proved the proxy closed the connection after the body.
        Framing::Close => {}
        // Re-framed: the connection must still be good for another request.
        Framing::Chunked | Framing::ContentLength => {
            assert!(!answer.connection_has("close"), "{:?}", answer.headers);
            let again = client.exchange(&get("/")).await;
            assert_eq!((again.status, again.text().as_str()), (200, "body-until-close"), "{again:?}");
        }
        Framing::None => panic!("no body framing: {answer:?}"),
    }
}

#[tokio::test]
async fn an_http_1_0_request_is_answered_and_then_closed() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let mut client = RawClient::connect(proxy.inbound).await;
    let answer = client.exchange(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    // An HTTP/1.0 client cannot decode chunked: the body has a length or ends with the connection.
    assert_ne!(answer.framing, Framing::Chunked, "{:?}", answer.headers);
    assert_eq!(answer.text(), "hello from / over HTTP/1.1", "the proxy speaks HTTP/1.1 to the app");
    client.expect_closed(2 * SECOND).await;

    // A body of unknown length, which an HTTP/1.1 client would get chunked.
    let mut client = RawClient::connect(proxy.inbound).await;
    let answer = client.exchange(b"GET /stream?chunks=4&size=1000 HTTP/1.0\r\nHost: x\r\n\r\n").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_ne!(answer.framing, Framing::Chunked, "{:?}", answer.headers);
    assert_eq!(first_difference(&answer.body, &pattern(4000)), None, "got {} bytes", answer.body.len());
    client.expect_closed(2 * SECOND).await;
}

#[tokio::test]
async fn expect_100_continue_gets_the_body_through() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let mut client = RawClient::connect(proxy.inbound).await;
    // Not the connection's first request: whatever served that one must handle this one too.
    assert_ok_with_length(&client.exchange(&get("/before")).await, b"hello from /before over HTTP/1.1");
    client
        .send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
        .await;
    // A client waits a little for 100 Continue, then sends the body anyway (RFC 9110 10.1.1).
    let far = Instant::now() + RESPONSE_DEADLINE;
    if let Ok((_, status, headers)) = tokio::time::timeout(2 * SECOND, client.head(far)).await {
        assert_eq!(status, 100, "only 100 Continue may come before the body: {headers:?}");
    }
    client.send(b"hello world").await;
    let answer = client.response(false).await;
    assert_ok_with_length(&answer, b"hello world");
    assert_eq!(answer.header("x-seen-length"), Some("11"));
    assert_ok_with_length(&client.exchange(&get("/next")).await, b"hello from /next over HTTP/1.1");
}

#[tokio::test]
async fn a_request_head_split_across_writes_is_answered() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let mut client = RawClient::connect(proxy.inbound).await;
    // Split inside the method, inside a header name, and before the final CRLF.
    for piece in [&b"GE"[..], b"T /headers HTTP/1.1\r\nHost: app.test\r\nX-Req", b"uest-Id: r-2\r\n", b"\r\n"]
    {
        client.send(piece).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = client.response(false).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.text().lines().any(|name| name == "x-request-id"), "{}", answer.text());
    assert_eq!(upstream.received(), 1);
}

#[tokio::test]
async fn inbound_requests_and_responses_are_counted() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let mut client = RawClient::connect(proxy.inbound).await;
    assert_eq!(client.exchange(&get("/")).await.status, 200);
    assert_eq!(client.exchange(&post("/echo", b"x")).await.status, 200);
    assert_eq!(client.exchange(&post_chunked("/echo", b"xyz", 2)).await.status, 200);
    assert_eq!(client.exchange(b"HEAD / HTTP/1.1\r\nHost: app.test\r\n\r\n").await.status, 200);
    // Counted when answered: the responses are all in, so the counters must be too.
    let metrics = proxy.metrics().await;
    let lines: Vec<&str> = metrics.lines().collect();
    for expected in [
        "lameduck_proxy_requests_total{direction=\"inbound\"} 4",
        "lameduck_proxy_responses_total{direction=\"inbound\",status_class=\"2xx\"} 4",
        "lameduck_proxy_connections_total{direction=\"inbound\",protocol=\"http1\"} 1",
        "lameduck_proxy_responses_total{direction=\"inbound\",status_class=\"5xx\"} 0",
        "lameduck_proxy_open_connections{direction=\"inbound\"} 1",
        "lameduck_proxy_requests_total{direction=\"outbound\"} 0",
    ] {
        assert!(lines.contains(&expected), "{expected} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn an_app_answer_that_cannot_be_relayed_is_a_502_and_the_client_connection_survives() {
    // Not HTTP, and a transfer coding the client could not be told about once the header goes.
    for reply in [&b"SSH-2.0-OpenSSH\r\n\r\n"[..], b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nxx"] {
        let upstream = OneShotUpstream::start(reply).await;
        let proxy = Proxy::start(upstream.addr, &[]).await;
        let mut client = RawClient::connect(proxy.inbound).await;
        for i in 0..2 {
            let answer = client.exchange(&get("/")).await;
            assert_eq!(answer.status, 502, "request {i} to an app answering {reply:?}: {answer:?}");
            assert!(answer.text().contains(&upstream.addr.to_string()), "{}", answer.text());
            assert!(!answer.connection_has("close"), "{:?}", answer.headers);
        }
        let metrics = proxy.metrics().await;
        for expected in [
            "lameduck_proxy_refused_connections_total{direction=\"inbound\",reason=\"upstream-error\"} 2",
            "lameduck_proxy_responses_total{direction=\"inbound\",status_class=\"5xx\"} 2",
        ] {
            assert!(metrics.lines().any(|line| line == expected), "{expected} missing from\n{metrics}");
        }
    }
}

#[tokio::test]
async fn an_app_that_answers_before_the_body_has_arrived_is_relayed_and_the_connection_closes() {
    // The app reads the head only and refuses the upload, as a size limit would.
    let upstream = OneShotUpstream::start(
        b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large",
    )
    .await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let mut client = RawClient::connect(proxy.inbound).await;
    // A megabyte announced, a few bytes sent: the rest never comes, so only an answer that does
    // not wait for the body can arrive.
    client
        .send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000000\r\n\r\nfirst bytes")
        .await;
    let answer = client.response(false).await;
    assert_eq!((answer.status, answer.text().as_str()), (413, "too large"), "{answer:?}");
    // The unread rest of the body would be taken for the next request, so the proxy closes.
    assert!(answer.connection_has("close"), "{:?}", answer.headers);
    client.expect_closed(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_plain_keep_alive_exchange_keeps_the_apps_header_case_as_nginx_does() {
    // hyper's server writes header names in lower case; the relay passes the app's names on as
    // they came. So this also shows that plain requests take the relay, not the general path.
    let upstream =
        OneShotUpstream::start(b"HTTP/1.1 200 OK\r\nX-Request-Trace: abc\r\nContent-Length: 2\r\n\r\nok")
            .await;
    let proxy = Proxy::start(upstream.addr, &[]).await;
    let mut client = RawClient::connect(proxy.inbound).await;
    for i in 0..2 {
        let answer = client.exchange(&get("/")).await;
        assert_eq!((answer.status, answer.text().as_str()), (200, "ok"), "request {i}: {answer:?}");
        let names: Vec<&str> = answer.headers.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["X-Request-Trace", "Content-Length"], "request {i}");
    }
}
