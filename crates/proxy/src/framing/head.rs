//! Request and response heads for the inbound HTTP/1 relay, as pure functions over bytes: how a
//! message's body is framed, whether the relay carries it or hands the connection to the general
//! HTTP/1 server, and the head rewritten for the next hop without hop-by-hop headers.

use std::io::Write as _;

use super::hop_by_hop::is_hop_by_hop;

/// Bytes a message head may take, here and on hyper's path; more is a 431 (or a 502 from the app).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Header lines read per message, as many as hyper allows.
const MAX_HEADERS: usize = 100;
/// Names a `Connection` header may list; a message that lists more goes to the general server.
const MAX_CONNECTION_NAMES: usize = 16;

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// What to do with the bytes read from a client so far.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestPlan {
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
pub struct RequestHead {
    /// Bytes of the client's head.
    pub len: usize,
    pub framing: Framing,
    /// The client asked to close after this exchange.
    pub close: bool,
    /// A HEAD request: its response has no body whatever its headers say.
    pub is_head: bool,
    /// Idempotent and without a body: it may be sent again on a new connection when a reused one
    /// closes before answering. Nothing else is, since the app may have acted on it.
    pub replayable: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ResponsePlan {
    Partial,
    Relay(ResponseHead),
    /// The app's answer cannot be relayed: a 502.
    Invalid(&'static str),
}

#[derive(Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The app will close its side: the upstream connection is not reused.
    pub upstream_close: bool,
    /// The rewritten head tells the client the connection closes after this response.
    pub client_close: bool,
    /// A 1xx: another head follows.
    pub informational: bool,
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

/// Whether a head has a line ended by a bare LF. httparse accepts one; RFC 9112 section 2.2 lets
/// a recipient do so, but a next hop that does not would see a different message.
fn has_bare_lf(head: &[u8]) -> bool {
    let mut rest = head;
    let mut offset = 0;
    while let Some(i) = rest.iter().position(|b| *b == b'\n') {
        if offset + i == 0 || head[offset + i - 1] != b'\r' {
            return true;
        }
        offset += i + 1;
        rest = &head[offset..];
    }
    false
}

/// Fields that frame a message or name its target: never hop-by-hop.
const FRAMING_FIELDS: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// The elements of a `#list` (RFC 9110 section 5.6.1), trimmed, empty ones dropped.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|element| !element.is_empty())
}

/// The first line of `buf`, without its CRLF, once it has arrived whole.
fn first_line(buf: &[u8]) -> Option<&[u8]> {
    let end = buf.iter().position(|b| *b == b'\n')?;
    Some(buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]))
}

/// Whether a request line's target (between its two spaces) is visible ASCII only: every form
/// of request-target is, and httparse also takes obs-text.
fn valid_target(line: &[u8]) -> bool {
    line.split(|b| *b == b' ').nth(1).is_some_and(|target| target.iter().all(u8::is_ascii_graphic))
}

/// Whether a status line's code, once its three digits have arrived, is outside 100 to 599 (RFC
/// 9110 section 15).
fn status_out_of_range(buf: &[u8]) -> bool {
    let code = buf.get(9..12).filter(|_| buf.starts_with(b"HTTP/1."));
    code.and_then(|digits| std::str::from_utf8(digits).ok()?.parse::<u16>().ok())
        .is_some_and(|status| !(100..600).contains(&status))
}

/// What the framing headers of one message say, checked as they are read.
#[derive(Default)]
struct FramingHeaders<'a> {
    length: Option<u64>,
    /// A `Transfer-Encoding` header was present.
    encoded: bool,
    /// The transfer codings end with `chunked`, listed once.
    chunked_last: bool,
    /// `chunked` is the only coding.
    chunked_only: bool,
    codings: usize,
    options: ConnectionOptions<'a>,
}

impl<'a> FramingHeaders<'a> {
    /// Reads a header that bears on framing; `Err` names what is wrong with it.
    fn read(&mut self, header: &httparse::Header<'a>) -> Result<(), &'static str> {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            if self.length.is_some() {
                return Err("more than one content-length");
            }
            self.length = Some(content_length(header.value).ok_or("invalid content-length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !header.value.is_ascii() {
                return Err("invalid transfer-encoding");
            }
            self.encoded = true;
            // A list (RFC 9110 section 5.6.1): empty elements are ignored.
            for coding in header.value.split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|c| !c.is_empty())
            {
                if self.chunked_last {
                    return Err("a transfer coding after chunked");
                }
                self.chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                self.codings += 1;
            }
            self.chunked_only = self.chunked_last && self.codings == 1;
        } else if name.eq_ignore_ascii_case("connection") {
            if !header.value.is_ascii() {
                return Err("invalid connection header");
            }
            // A hop-by-hop name is dropped from the head written on; a framing field dropped
            // that way would leave the next hop framing the body differently (RFC 9110 section
            // 7.6.1 lets no sender list these).
            if list_elements(header.value).any(|option| {
                FRAMING_FIELDS.iter().any(|field| option.eq_ignore_ascii_case(field.as_bytes()))
            }) {
                return Err("connection names a framing field");
            }
            self.options.add(header.value);
        }
        Ok(())
    }

    /// RFC 9112 section 6.1 to 6.3: a message with both, or whose codings do not end in chunked,
    /// has no length a next hop would surely agree on.
    fn check(&self) -> Result<(), &'static str> {
        if self.encoded && self.length.is_some() {
            return Err("transfer-encoding with content-length");
        }
        if self.encoded && !self.chunked_last {
            return Err("transfer-encoding does not end in chunked");
        }
        Ok(())
    }
}

/// Parses a client's request head from `buf` and, when the relay carries it, writes the head for
/// the app into `out` (cleared first). Every request is checked here, whichever path then serves
/// it, so hyper's general server only ever sees heads the relay would have accepted.
pub fn request(buf: &[u8], out: &mut Vec<u8>) -> RequestPlan {
    // httparse skips empty lines before the request line (RFC 9112 section 2.2 lets a server);
    // this relay does not, and a bare LF is refused as soon as it arrives.
    if buf.starts_with(b"\r") || buf.starts_with(b"\n") {
        return RequestPlan::Reject(400, "empty line before the request line");
    }
    // Left uninitialised for httparse to fill: zeroing room for 100 headers on every request
    // took a typical head's parse from 180 to 230 ns (measured).
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if has_bare_lf(buf) => {
            return RequestPlan::Reject(400, "request head lines must end with CRLF");
        }
        // A request line already whole is judged now, not when the head is.
        Ok(httparse::Status::Partial) if first_line(buf).is_some_and(|line| !valid_target(line)) => {
            return RequestPlan::Reject(400, "invalid byte in the request target");
        }
        Ok(httparse::Status::Partial) => return RequestPlan::Partial,
        Err(httparse::Error::TooManyHeaders) => return RequestPlan::Reject(431, "too many headers"),
        Err(_) => return RequestPlan::Reject(400, "malformed request head"),
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return RequestPlan::Reject(400, "malformed request head");
    };
    if has_bare_lf(&buf[..len]) {
        return RequestPlan::Reject(400, "request head lines must end with CRLF");
    }
    if len > MAX_HEAD_BYTES {
        return RequestPlan::Reject(431, "request head too large");
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return RequestPlan::Reject(400, "invalid byte in the request target");
    }
    let mut framing = FramingHeaders::default();
    let mut hosts = 0;
    let mut unusual = false;
    for header in req.headers.iter() {
        if let Err(why) = framing.read(header) {
            return RequestPlan::Reject(400, why);
        }
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("upgrade") || name.eq_ignore_ascii_case("expect") {
            unusual = true;
        }
    }
    if let Err(why) = framing.check() {
        return RequestPlan::Reject(400, why);
    }
    // RFC 9112 section 3.2: exactly one Host in HTTP/1.1, never more than one.
    if hosts > 1 || (hosts == 0 && version == 1) {
        return RequestPlan::Reject(400, "a request needs exactly one host header");
    }
    // RFC 9112 section 6.1: HTTP/1.0 has no chunked framing, so its length cannot be trusted.
    if framing.encoded && version == 0 {
        return RequestPlan::Reject(400, "transfer-encoding in an HTTP/1.0 request");
    }
    let options = &framing.options;
    if version == 0
        || method == "CONNECT"
        || !path.starts_with('/')
        || unusual
        || (framing.encoded && !framing.chunked_only)
        || options.upgrade
        || options.overflow
    {
        return RequestPlan::Fallback;
    }
    let body = match (framing.chunked_only, framing.length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) if n > 0 => Framing::Length(n),
        _ => Framing::Empty,
    };
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_headers(out, req.headers, options);
    if body == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    RequestPlan::Relay(RequestHead {
        len,
        framing: body,
        close: options.close,
        is_head: method == "HEAD",
        replayable: replayable(method) && body == Framing::Empty,
    })
}

/// Idempotent methods (RFC 9110 section 9.2.2): sending one twice has the effect of once.
fn replayable(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE")
}

/// Parses the app's response head and writes the head for the client into `out` (cleared first).
/// `close_client`: the client connection closes after this exchange whatever the app says.
pub fn response(buf: &[u8], is_head: bool, close_client: bool, out: &mut Vec<u8>) -> ResponsePlan {
    if buf.starts_with(b"\r") || buf.starts_with(b"\n") {
        return ResponsePlan::Invalid("empty line before the status line");
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if has_bare_lf(buf) => {
            return ResponsePlan::Invalid("response head lines must end with CRLF");
        }
        Ok(httparse::Status::Partial) if status_out_of_range(buf) => {
            return ResponsePlan::Invalid("status code outside 100 to 599");
        }
        Ok(httparse::Status::Partial) => return ResponsePlan::Partial,
        Err(_) => return ResponsePlan::Invalid("malformed response head"),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return ResponsePlan::Invalid("malformed response head");
    };
    if has_bare_lf(&buf[..len]) {
        return ResponsePlan::Invalid("response head lines must end with CRLF");
    }
    if len > MAX_HEAD_BYTES {
        return ResponsePlan::Invalid("response head too large");
    }
    // RFC 9110 section 15: a status code is 100 to 599.
    if !(100..600).contains(&status) {
        return ResponsePlan::Invalid("status code outside 100 to 599");
    }
    if status == 101 {
        return ResponsePlan::Invalid("unexpected 101 Switching Protocols");
    }
    let mut framing = FramingHeaders::default();
    for header in resp.headers.iter() {
        if let Err(why) = framing.read(header) {
            return ResponsePlan::Invalid(why);
        }
    }
    if let Err(why) = framing.check() {
        return ResponsePlan::Invalid(why);
    }
    if framing.encoded && !framing.chunked_only {
        return ResponsePlan::Invalid("unsupported transfer-encoding");
    }
    let options = &framing.options;
    if options.overflow {
        return ResponsePlan::Invalid("too many connection options");
    }
    let informational = (100..200).contains(&status);
    let body = if informational || is_head || status == 204 || status == 304 {
        Framing::Empty
    } else if framing.chunked_only {
        Framing::Chunked
    } else {
        match framing.length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    // HTTP/1.0 closes unless it says otherwise; HTTP/1.1 keeps alive unless it says otherwise.
    let upstream_close =
        options.close || (version == 0 && !options.keep_alive) || body == Framing::UntilClose;
    let client_close = !informational && (close_client || body == Framing::UntilClose);

    out.clear();
    // An HTTP/1.1 status line goes as it came; an HTTP/1.0 one is rewritten for the client.
    match buf.iter().position(|b| *b == b'\n') {
        Some(end) if version == 1 => out.extend_from_slice(&buf[..=end]),
        _ => {
            let _ = write!(out, "HTTP/1.1 {status} {}\r\n", resp.reason.unwrap_or_default());
        }
    }
    write_headers(out, resp.headers, options);
    if body == Framing::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if client_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    ResponsePlan::Relay(ResponseHead {
        len,
        status,
        framing: body,
        upstream_close,
        client_close,
        informational,
    })
}

/// A response of the proxy's own: one line of plain text, closing the connection when `close`.
pub fn local_response(out: &mut Vec<u8>, status: u16, text: &str, close: bool) {
    let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{text}\n",
        text.len() + 1,
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
            RequestHead {
                len: raw.len() - 9,
                framing: Framing::Empty,
                close: false,
                is_head: false,
                replayable: true
            }
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
            "GET / HTTP/1.0\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(plan(raw).0, RequestPlan::Fallback, "{raw:?}");
        }
    }

    #[test]
    fn heads_a_next_hop_could_read_differently_are_rejected_whatever_path_they_would_take() {
        for (raw, why) in [
            ("GET / HTTP/1.1\r\n\r\n", "a request needs exactly one host header"),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "a request needs exactly one host header"),
            ("GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", "a request needs exactly one host header"),
            ("GET / HTTP/1.1\nHost: x\n\n", "request head lines must end with CRLF"),
            ("GET / HTTP/1.1\r\nHost: x\nX: 1\r\n\r\n", "request head lines must end with CRLF"),
            ("GET / HTTP/1.1\r\nHost: x\r\nX: 1\r\n folded\r\n\r\n", "malformed request head"),
            ("GET / HTTP/1.1\r\nHost : x\r\n\r\n", "malformed request head"),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                "transfer-encoding with content-length",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                "transfer-encoding with content-length",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
                "more than one content-length",
            ),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n", "invalid content-length"),
            ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\n", "invalid content-length"),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                "transfer-encoding does not end in chunked",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                "a transfer coding after chunked",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                "a transfer coding after chunked",
            ),
            (
                "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                "transfer-encoding in an HTTP/1.0 request",
            ),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\
                 Content-Length: 3\r\n\r\n",
                "transfer-encoding with content-length",
            ),
        ] {
            assert_eq!(plan(raw).0, RequestPlan::Reject(400, why), "{raw:?}");
        }
    }

    #[test]
    fn what_a_next_hop_would_frame_differently_after_the_rewrite_is_rejected() {
        for (raw, why) in [
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\n",
                "connection names a framing field",
            ),
            (
                "GET / HTTP/1.1\r\nHost: x\r\nConnection: close, Host\r\n\r\n",
                "connection names a framing field",
            ),
            ("\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", "empty line before the request line"),
            ("\n", "empty line before the request line"),
            ("GET /caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n", "invalid byte in the request target"),
            ("GET / HTTP/1.1\r\nHost: x\r\nX: 1\n", "request head lines must end with CRLF"),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \u{e9}, chunked\r\n\r\n",
                "invalid transfer-encoding",
            ),
        ] {
            assert_eq!(plan(raw).0, RequestPlan::Reject(400, why), "{raw:?}");
        }
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(plan(&big).0, RequestPlan::Reject(431, "request head too large"));
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: content-length\r\n\r\n",
            "\r\nHTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.0 002 x\r\n\r\n",
            "HTTP/1.1 600 x\r\n\r\n",
        ] {
            assert!(
                matches!(response(raw.as_bytes(), false, false, &mut Vec::new()), ResponsePlan::Invalid(_)),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn only_idempotent_requests_without_a_body_may_be_sent_twice() {
        for (raw, replayable) in [
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", true),
            ("DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", true),
            ("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", true),
            ("PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n", false),
            ("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", false),
            ("POST / HTTP/1.1\r\nHost: x\r\n\r\n", false),
            ("PATCH / HTTP/1.1\r\nHost: x\r\n\r\n", false),
        ] {
            assert_eq!(relayed(raw).0.replayable, replayable, "{raw:?}");
        }
    }

    #[test]
    fn malformed_requests_are_rejected_and_partial_ones_wait() {
        assert_eq!(
            plan("GET / HTTP/1.1\r\nnot a header\r\n\r\n").0,
            RequestPlan::Reject(400, "malformed request head")
        );
        assert_eq!(
            plan("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n").0,
            RequestPlan::Reject(400, "invalid content-length")
        );
        assert_eq!(
            plan("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n").0,
            RequestPlan::Reject(400, "invalid content-length")
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
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\nContent-Length: 5\n\n",
            "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\n\r\n",
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
        local_response(&mut out, 502, "down", true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\ndown\n"
        );
    }
}
