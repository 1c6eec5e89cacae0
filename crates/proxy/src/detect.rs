//! Telling HTTP/1, HTTP/2 (prior knowledge) and opaque TCP apart by peeking at the first bytes,
//! without consuming them, so the chosen server reads the stream from its start.

use std::{io, time::Duration};

use tokio::{net::TcpStream, time::Instant};

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
    Opaque,
}

impl Protocol {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Http2 => "http2",
            Self::Opaque => "opaque",
        }
    }
}

/// The HTTP/2 connection preface a prior-knowledge client sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a byte may appear in a token (RFC 9110 section 5.6.2), as every method is.
const fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Decides from the bytes seen so far; `None` means "need more bytes".
///
/// Any token followed by a space starts an HTTP/1 request line (RFC 9112 section 3: `PROPFIND`,
/// or a lowercase `get`, which is a method of its own), so it goes through the strict framing:
/// were it tunnelled as opaque TCP, nothing of it would be checked. Only bytes that cannot start
/// a request line or the HTTP/2 preface are opaque.
pub(crate) fn classify(seen: &[u8]) -> Option<Protocol> {
    if seen.starts_with(H2_PREFACE) {
        return Some(Protocol::Http2);
    }
    // `PRI ` is a token and a space too: wait until the preface is whole or differs.
    if H2_PREFACE.starts_with(seen) {
        return None;
    }
    let method = seen.iter().take_while(|b| is_tchar(**b)).count();
    match seen.get(method) {
        Some(b' ') if method > 0 => Some(Protocol::Http1),
        // A long run of token bytes is no binary protocol's start: HTTP/1, whose framing judges it.
        None if seen.len() >= PEEK_BYTES => Some(Protocol::Http1),
        None => None,
        Some(_) => Some(Protocol::Opaque),
    }
}

/// Bytes peeked at most: the HTTP/2 preface, which is longer than any common method.
const PEEK_BYTES: usize = H2_PREFACE.len();

/// Peeks until the protocol is known. A client that sends nothing within `timeout` may speak a
/// server-first protocol, so it is opaque. One that sent the start of a request line or of the
/// HTTP/2 preface and then stalls is HTTP/1: a server-first client sends nothing first, and the
/// relay's header read timeout then bounds the stall. `Ok(None)`: the peer closed before sending
/// anything.
pub(crate) async fn detect(stream: &TcpStream, timeout: Duration) -> io::Result<Option<Protocol>> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; PEEK_BYTES];
    let mut pause = Duration::from_millis(1);
    let mut last_len = usize::MAX;
    loop {
        let peeked = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(result) => result?,
            Err(_) => return Ok(Some(undecided(last_len))),
        };
        if peeked == 0 {
            return Ok(None);
        }
        if let Some(protocol) = classify(&buf[..peeked]) {
            return Ok(Some(protocol));
        }
        // `peek` returns at once while bytes are buffered, so wait a little before looking again.
        if peeked == last_len {
            if Instant::now() + pause > deadline {
                return Ok(Some(undecided(peeked)));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        last_len = peeked;
    }
}

/// What a connection is when `timeout` passed before its first bytes were decisive: opaque when
/// it sent nothing (`usize::MAX`: no peek returned yet), else HTTP/1.
const fn undecided(peeked: usize) -> Protocol {
    if peeked == 0 || peeked == usize::MAX { Protocol::Opaque } else { Protocol::Http1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"CONNECT example:443 HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Some(Protocol::Opaque));
        assert_eq!(classify(b"hello\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(b"\x00\x01opaque"), Some(Protocol::Opaque));
        // Not the preface, but a request line all the same (the framing refuses HTTP/2.0).
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"), Some(Protocol::Http1));
    }

    #[test]
    fn any_token_method_is_http1() {
        for line in
            [&b"PROPFIND / HTTP/1.1\r\n"[..], b"get / HTTP/1.1\r\n", b"M-SEARCH * HTTP/1.1\r\n", b"PRI / "]
        {
            assert_eq!(classify(line), Some(Protocol::Http1), "{}", String::from_utf8_lossy(line));
        }
        assert_eq!(classify(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"), Some(Protocol::Http1));
        assert_eq!(classify(b" GET / HTTP/1.1\r\n"), Some(Protocol::Opaque));
    }

    #[test]
    fn waits_for_more_while_a_prefix_could_still_match() {
        assert_eq!(classify(b"G"), None);
        assert_eq!(classify(b"POS"), None);
        assert_eq!(classify(b"PRI * HTTP/2"), None);
        assert_eq!(classify(b"PROPFI"), None);
        assert_eq!(classify(b"hello"), None);
    }

    #[tokio::test]
    async fn a_client_that_stalls_mid_method_is_http1() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(b"PROPF").await.unwrap();
        assert_eq!(detect(&server, Duration::from_millis(50)).await.unwrap(), Some(Protocol::Http1));
    }

    #[tokio::test]
    async fn silent_client_is_opaque_after_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let started = Instant::now();
        assert_eq!(detect(&server, Duration::from_millis(50)).await.unwrap(), Some(Protocol::Opaque));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn split_request_line_is_still_http1() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(b"GE").await.unwrap();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            client.write_all(b"T / HTTP/1.1\r\n").await.unwrap();
            client
        });
        assert_eq!(detect(&server, Duration::from_secs(2)).await.unwrap(), Some(Protocol::Http1));
        drop(writer.await);
    }
}
