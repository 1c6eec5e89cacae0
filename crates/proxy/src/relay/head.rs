//! Request and response heads for the inbound HTTP/1 relay, as pure functions over bytes: how a
//! message's body is framed, whether the relay carries it or hands the connection to the general
//! HTTP/1 server, and the head rewritten for the next hop without hop-by-hop headers.

use std::io::Write as _;

use crate::forward::is_hop_by_hop;

/// Header lines read per message, as many as hyper allows.
const MAX_HEADERS: usize = 100;
/// Names a `Connection` header may list; a message that lists more goes to the general server.
const MAX_CONNECTION_NAMES: usize = 16;

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// What to do with the bytes read from a client so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RequestPlan {
    /// The head is not complete yet.
    Partial,
    /// Relay it; the rewritten head is in the output buffer.
    Relay(RequestHead),
    /// Something the relay leaves to the general HTTP/1 server (HTTP/1.0, upgrades, `Expect`,
    /// transfer codings other than chunked, absolute-form targets): hand it the connection.
    Fallback,
    /// Answer with this status and close.
    Reject(u16, &'static str),
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RequestHead {
    /// Bytes of the client's head.
    pub(crate) len: usize,
    pub(crate) framing: Framing,
    /// The client asked to close after this exchange.
    pub(crate) close: bool,
    /// A HEAD request: its response has no body whatever its headers say.
    pub(crate) is_head: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ResponsePlan {
    Partial,
    Relay(ResponseHead),
    /// The app's answer cannot be relayed: a 502.
    Invalid(&'static str),
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub(crate) len: usize,
    pub(crate) status: u16,
    pub(crate) framing: Framing,
    /// The app will close its side: the upstream connection is not reused.
    pub(crate) upstream_close: bool,
    /// The rewritten head tells the client the connection closes after this response.
    pub(crate) client_close: bool,
    /// A 1xx: another head follows.
    pub(crate) informational: bool,
}

/// Header names listed in a `Connection` header, which are hop-by-hop too.
#[derive(Default)]
struct ConnectionOptions<'a> {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    names: Vec<&'a [u8]>,
    overflow: bool,
}

impl<'a> ConnectionOptions<'a> {
    fn add(&mut self, value: &'a [u8]) {
        for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty()) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else {
                self.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                if self.names.len() == MAX_CONNECTION_NAMES {
                    self.overflow = true;
                } else {
                    self.names.push(token);
                }
            }
        }
    }

    /// Whether a header goes no further than this hop.
    fn drops(&self, name: &str) -> bool {
        is_hop_by_hop(name) || self.names.iter().any(|listed| listed.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// A `Content-Length` value: digits only, as RFC 9110 section 8.6 says.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn write_headers(out: &mut Vec<u8>, headers: &[httparse::Header<'_>], options: &ConnectionOptions<'_>) {
    for header in headers.iter().filter(|h| !options.drops(h.name)) {
        out.extend_from_slice(header.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(header.value);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses a client's request head from `buf` and, when the relay carries it, writes the head for
/// the app into `out` (cleared first).
pub(crate) fn request(buf: &[u8], out: &mut Vec<u8>) -> RequestPlan {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return RequestPlan::Partial,
        Err(httparse::Error::TooManyHeaders) => return RequestPlan::Reject(431, "too many headers\n"),
        Err(_) => return RequestPlan::Reject(400, "malformed request head\n"),
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return RequestPlan::Fallback;
    };
    if method == "CONNECT" || !path.starts_with('/') {
        return RequestPlan::Fallback;
    }
    let mut options = ConnectionOptions::default();
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut host = false;
    for header in req.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            match (content_length(header.value), length) {
                (None, _) => return RequestPlan::Reject(400, "invalid content-length\n"),
                (Some(n), None) => length = Some(n),
                (Some(_), Some(_)) => return RequestPlan::Fallback,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !header.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return RequestPlan::Fallback;
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            options.add(header.value);
        } else if name.eq_ignore_ascii_case("host") {
            host = true;
        } else if name.eq_ignore_ascii_case("upgrade") || name.eq_ignore_ascii_case("expect") {
            return RequestPlan::Fallback;
        }
    }
    if !host || (chunked && length.is_some()) || options.upgrade || options.overflow {
        return RequestPlan::Fallback;
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) if n > 0 => Framing::Length(n),
        _ => Framing::Empty,
    };
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_headers(out, req.headers, &options);
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    RequestPlan::Relay(RequestHead { len, framing, close: options.close, is_head: method == "HEAD" })
}

/// Parses the app's response head and writes the head for the client into `out` (cleared first).
/// `close_client`: the client connection closes after this exchange whatever the app says.
pub(crate) fn response(buf: &[u8], is_head: bool, close_client: bool, out: &mut Vec<u8>) -> ResponsePlan {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return ResponsePlan::Partial,
        Err(_) => return ResponsePlan::Invalid("malformed response head"),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return ResponsePlan::Invalid("malformed response head");
    };
    if status == 101 {
        return ResponsePlan::Invalid("unexpected 101 Switching Protocols");
    }
    let mut options = ConnectionOptions::default();
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for header in resp.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            match (content_length(header.value), length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return ResponsePlan::Invalid("invalid content-length"),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !header.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return ResponsePlan::Invalid("unsupported transfer-encoding");
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            options.add(header.value);
        }
    }
    if options.overflow {
        return ResponsePlan::Invalid("too many connection options");
    }
    let informational = (100..200).contains(&status);
    let framing = if informational || is_head || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    // HTTP/1.0 closes unless it says otherwise; HTTP/1.1 keeps alive unless it says otherwise.
    let upstream_close =
        options.close || (version == 0 && !options.keep_alive) || framing == Framing::UntilClose;
    let client_close = !informational && (close_client || framing == Framing::UntilClose);

    out.clear();
    // An HTTP/1.1 status line goes as it came; an HTTP/1.0 one is rewritten for the client.
    match buf.iter().position(|b| *b == b'\n') {
        Some(end) if version == 1 => out.extend_from_slice(&buf[..=end]),
        _ => {
            let _ = write!(out, "HTTP/1.1 {status} {}\r\n", resp.reason.unwrap_or_default());
        }
    }
    write_headers(out, resp.headers, &options);
    if chunked && framing == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if client_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    ResponsePlan::Relay(ResponseHead { len, status, framing, upstream_close, client_close, informational })
}

/// A response of the proxy's own: plain text, closing the connection when `close`.
pub(crate) fn local_response(out: &mut Vec<u8>, status: u16, body: &str, close: bool) {
    let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "connection: close\r\n" } else { "" },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(raw: &str) -> (RequestPlan, String) {
        let mut out = Vec::new();
        let plan = request(raw.as_bytes(), &mut out);
        (plan, String::from_utf8(out).unwrap())
    }

    fn relayed(raw: &str) -> (RequestHead, String) {
        match plan(raw) {
            (RequestPlan::Relay(head), out) => (head, out),
            (other, _) => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn a_plain_get_is_relayed_as_it_came() {
        let raw = "GET /a?b=1 HTTP/1.1\r\nHost: web:80\r\nAccept: */*\r\n\r\nGET /next";
        let (head, out) = relayed(raw);
        assert_eq!(
            head,
            RequestHead { len: raw.len() - 9, framing: Framing::Empty, close: false, is_head: false }
        );
        assert_eq!(out, "GET /a?b=1 HTTP/1.1\r\nHost: web:80\r\nAccept: */*\r\n\r\n");
    }

    #[test]
    fn request_framing_comes_from_content_length_or_chunked() {
        assert_eq!(
            relayed("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n").0.framing,
            Framing::Length(12)
        );
        assert_eq!(
            relayed("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").0.framing,
            Framing::Empty
        );
        let (head, out) = relayed("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(head.framing, Framing::Chunked);
        assert_eq!(out, "POST / HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\n\r\n");
        assert!(relayed("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").0.is_head);
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_stay_behind() {
        let (head, out) = relayed(
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close, X-Private\r\nX-Private: 1\r\nKeep-Alive: 5\r\n\
             Proxy-Authorization: Basic x\r\nTE: trailers\r\nX-Request-Id: 7\r\n\r\n",
        );
        assert!(head.close);
        assert_eq!(out, "GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: 7\r\n\r\n");
    }

    #[test]
    fn what_the_relay_does_not_carry_goes_to_the_general_server() {
        for raw in [
            "GET / HTTP/1.0\r\nHost: x\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        ] {
            assert_eq!(plan(raw).0, RequestPlan::Fallback, "{raw:?}");
        }
    }

    #[test]
    fn malformed_requests_are_rejected_and_partial_ones_wait() {
        assert_eq!(
            plan("GET / HTTP/1.1\r\nnot a header\r\n\r\n").0,
            RequestPlan::Reject(400, "malformed request head\n")
        );
        assert_eq!(
            plan("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n").0,
            RequestPlan::Reject(400, "invalid content-length\n")
        );
        assert_eq!(
            plan("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n").0,
            RequestPlan::Reject(400, "invalid content-length\n")
        );
        assert!(matches!(
            plan(&format!("GET / HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(101))).0,
            RequestPlan::Reject(431, _)
        ));
        assert_eq!(plan("GET / HTTP/1.1\r\nHost: x\r\n").0, RequestPlan::Partial);
    }

    fn answer(raw: &str, is_head: bool, close_client: bool) -> (ResponseHead, String) {
        let mut out = Vec::new();
        match response(raw.as_bytes(), is_head, close_client, &mut out) {
            ResponsePlan::Relay(head) => (head, String::from_utf8(out).unwrap()),
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn response_framing_and_reuse() {
        let (head, out) = answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, false);
        assert_eq!(
            (head.len, head.framing, head.upstream_close, head.client_close),
            (38, Framing::Length(5), false, false)
        );
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        let (head, out) = answer(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            false,
            false,
        );
        assert_eq!((head.framing, head.upstream_close, head.client_close), (Framing::Chunked, true, false));
        assert_eq!(out, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(
            answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, false).0.framing,
            Framing::Empty
        );
        assert_eq!(
            answer("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", false, false).0.framing,
            Framing::Empty
        );
        let (head, out) = answer("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false, false);
        assert!(head.upstream_close, "HTTP/1.0 closes by default");
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n");
        let (head, _) =
            answer("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", false, false);
        assert!(!head.upstream_close);
    }

    #[test]
    fn a_body_ended_by_close_closes_the_client_too() {
        let (head, out) = answer("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", false, false);
        assert_eq!((head.framing, head.upstream_close, head.client_close), (Framing::UntilClose, true, true));
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nconnection: close\r\n\r\n");
    }

    #[test]
    fn draining_adds_connection_close_but_not_to_interim_responses() {
        let (head, out) = answer(
            "HTTP/1.1 204 No Content\r\nConnection: keep-alive, x-internal\r\nX-Internal: 1\r\n\r\n",
            false,
            true,
        );
        assert!(head.client_close);
        assert_eq!(out, "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
        let (head, out) = answer("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false, true);
        assert!(head.informational && !head.client_close);
        assert_eq!(out, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
    }

    #[test]
    fn responses_the_relay_cannot_carry_are_invalid() {
        for raw in [
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
        ] {
            assert!(
                matches!(response(raw.as_bytes(), false, false, &mut Vec::new()), ResponsePlan::Invalid(_)),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn local_responses_are_complete_messages() {
        let mut out = Vec::new();
        local_response(&mut out, 502, "down\n", true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\ndown\n"
        );
    }
}
