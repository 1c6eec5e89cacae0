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

/// Request-line starts of HTTP/1 (RFC 9110 methods and PATCH).
const H1_METHODS: &[&[u8]] =
    &[b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE "];

/// Decides from the bytes seen so far; `None` means "need more bytes".
pub(crate) fn classify(seen: &[u8]) -> Option<Protocol> {
    if seen.len() >= H2_PREFACE.len() && seen.starts_with(H2_PREFACE) {
        return Some(Protocol::Http2);
    }
    if H1_METHODS.iter().any(|m| seen.starts_with(m)) {
        return Some(Protocol::Http1);
    }
    let could_grow = H2_PREFACE.starts_with(seen) || H1_METHODS.iter().any(|m| m.starts_with(seen));
    if could_grow && seen.len() < H2_PREFACE.len() {
        return None;
    }
    Some(Protocol::Opaque)
}

/// Peeks until the protocol is known. A client that sends nothing within `timeout` may speak a
/// server-first protocol, so it is opaque. `Ok(None)`: the peer closed before sending anything.
pub(crate) async fn detect(stream: &TcpStream, timeout: Duration) -> io::Result<Option<Protocol>> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut pause = Duration::from_millis(1);
    let mut last_len = usize::MAX;
    loop {
        let peeked = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(result) => result?,
            Err(_) => return Ok(Some(Protocol::Opaque)),
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
                return Ok(Some(Protocol::Opaque));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        last_len = peeked;
    }
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
        assert_eq!(classify(b"hello"), Some(Protocol::Opaque));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"), Some(Protocol::Opaque));
    }

    #[test]
    fn waits_for_more_while_a_prefix_could_still_match() {
        assert_eq!(classify(b"G"), None);
        assert_eq!(classify(b"POS"), None);
        assert_eq!(classify(b"PRI * HTTP/2"), None);
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
