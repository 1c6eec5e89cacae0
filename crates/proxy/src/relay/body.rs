//! Where a message body ends, found while its bytes pass through unchanged, so the connection
//! after it can carry the next message: a length counted down, or a chunked body (RFC 9112
//! section 7.1) followed chunk by chunk.

use std::fmt;

use super::head::Framing;

/// What is left of a body being relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Remaining {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

impl Remaining {
    pub(crate) const fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty => Self::Done,
            Framing::Length(n) => Self::Length(n),
            Framing::Chunked => Self::Chunked(Chunked::new()),
            Framing::UntilClose => Self::UntilClose,
        }
    }

    pub(crate) const fn is_done(&self) -> bool {
        matches!(self, Self::Done)
    }

    /// How many of `bytes` belong to the body: all of them unless it ends inside them.
    pub(crate) fn take(&mut self, bytes: &[u8]) -> Result<usize, ChunkedError> {
        let taken = match self {
            Self::Length(left) => {
                let taken = usize::try_from(*left).unwrap_or(usize::MAX).min(bytes.len());
                *left -= taken as u64;
                if *left == 0 {
                    *self = Self::Done;
                }
                taken
            }
            Self::Chunked(chunked) => {
                let taken = chunked.advance(bytes)?;
                if chunked.is_done() {
                    *self = Self::Done;
                }
                taken
            }
            Self::UntilClose => bytes.len(),
            Self::Done => 0,
        };
        Ok(taken)
    }

    /// The sender closed its side: the end of the body only if that is how it is delimited.
    pub(crate) fn ends_at_close(&mut self) -> bool {
        if matches!(self, Self::UntilClose) {
            *self = Self::Done;
        }
        self.is_done()
    }
}

/// Bytes allowed in one chunk-size line's extensions, and in the trailer section; more is an
/// error rather than an unbounded buffer.
const MAX_EXTENSION: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;
/// Hex digits in a chunk size: 15 keep it within `u64`.
const MAX_SIZE_DIGITS: u8 = 15;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In a chunk-size line: the size so far, its digits, extension bytes seen, and whether CR
    /// was just seen.
    Size {
        size: u64,
        digits: u8,
        extension: usize,
        cr: bool,
    },
    /// In chunk data, with this many bytes to go.
    Data(u64),
    /// After chunk data: the CRLF, `cr` once CR is seen.
    DataEnd {
        cr: bool,
    },
    /// In the trailer section: bytes on the current line, total trailer bytes.
    Trailers {
        line: usize,
        total: usize,
    },
    Done,
}

/// A malformed chunked body; the connection cannot be reused after one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkedError(&'static str);

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed chunked body: {}", self.0)
    }
}

impl std::error::Error for ChunkedError {}

/// Tracks one chunked body across reads of any size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Chunked {
    state: State,
}

impl Chunked {
    pub(crate) const fn new() -> Self {
        Self { state: State::Size { size: 0, digits: 0, extension: 0, cr: false } }
    }

    pub(crate) const fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// How many of `bytes` belong to the body. Fewer than `bytes.len()` only when the body
    /// ended inside them: the rest is the next message.
    pub(crate) fn advance(&mut self, bytes: &[u8]) -> Result<usize, ChunkedError> {
        let mut at = 0;
        while at < bytes.len() {
            match &mut self.state {
                State::Done => return Ok(at),
                State::Data(left) => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(bytes.len() - at);
                    at += take;
                    *left -= take as u64;
                    if *left == 0 {
                        self.state = State::DataEnd { cr: false };
                    }
                    continue;
                }
                State::DataEnd { cr } => match (bytes[at], *cr) {
                    (b'\r', false) => *cr = true,
                    (b'\n', true) => *self = Self::new(),
                    _ => return Err(ChunkedError("chunk data not followed by CRLF")),
                },
                State::Size { size, digits, extension, cr } => {
                    let byte = bytes[at];
                    if *cr && byte != b'\n' {
                        return Err(ChunkedError("CR without LF in a chunk-size line"));
                    }
                    match byte {
                        b'\n' => {
                            if *digits == 0 {
                                return Err(ChunkedError("chunk-size line without a size"));
                            }
                            self.state = match *size {
                                0 => State::Trailers { line: 0, total: 0 },
                                n => State::Data(n),
                            };
                        }
                        b'\r' => *cr = true,
                        _ if *extension == 0 && byte.is_ascii_hexdigit() => {
                            if *digits == MAX_SIZE_DIGITS {
                                return Err(ChunkedError("chunk size too large"));
                            }
                            let digit = (byte as char).to_digit(16).unwrap_or_default();
                            *size = *size * 16 + u64::from(digit);
                            *digits += 1;
                        }
                        _ if *digits == 0 => return Err(ChunkedError("chunk size is not hex")),
                        // Extensions (`;name=value`, with optional whitespace before) pass
                        // through; nothing here uses them.
                        _ => {
                            *extension += 1;
                            if *extension > MAX_EXTENSION {
                                return Err(ChunkedError("chunk extension too long"));
                            }
                        }
                    }
                }
                State::Trailers { line, total } => {
                    *total += 1;
                    if *total > MAX_TRAILERS {
                        return Err(ChunkedError("trailers too long"));
                    }
                    match bytes[at] {
                        b'\n' if *line == 0 => self.state = State::Done,
                        b'\n' => *line = 0,
                        b'\r' => {}
                        _ => *line += 1,
                    }
                }
            }
            at += 1;
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` split at every position, in two pieces, and checks the same answer comes out.
    fn body_len(bytes: &[u8]) -> Result<Option<usize>, ChunkedError> {
        let mut whole = Chunked::new();
        let used = whole.advance(bytes)?;
        let expected = whole.is_done().then_some(used);
        for split in 0..=bytes.len() {
            let mut parts = Chunked::new();
            let first = parts.advance(&bytes[..split])?;
            let second = if parts.is_done() { 0 } else { parts.advance(&bytes[split..])? };
            assert_eq!(parts.is_done().then_some(first + second), expected, "split at {split}");
        }
        Ok(expected)
    }

    #[test]
    fn finds_the_end_of_a_body_and_leaves_the_next_message() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        let mut bytes = body.to_vec();
        bytes.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        assert_eq!(body_len(&bytes), Ok(Some(body.len())));
    }

    #[test]
    fn trailers_and_bare_lf_lines_are_part_of_the_body() {
        let body = b"A\r\n0123456789\r\n0\r\nx-checksum: 1\r\nx-other: 2\r\n\r\n";
        assert_eq!(body_len(body), Ok(Some(body.len())));
        assert_eq!(body_len(b"3\nabc\r\n0\n\n"), Ok(Some(10)));
    }

    #[test]
    fn an_unfinished_body_asks_for_more() {
        assert_eq!(body_len(b"5\r\nhel"), Ok(None));
        assert_eq!(body_len(b"0\r\nx-trailer: 1\r\n"), Ok(None));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for bad in [&b"x\r\n"[..], b"\r\n", b"5\r\nhelloXX", b"5\rhello", b"1234567890abcdef0\r\n"] {
            assert!(Chunked::new().advance(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut long = b"1;".to_vec();
        long.resize(MAX_EXTENSION + 8, b'a');
        assert!(Chunked::new().advance(&long).is_err());
    }

    #[test]
    fn lengths_count_down_and_close_ends_only_close_delimited_bodies() {
        let mut body = Remaining::new(Framing::Length(5));
        assert_eq!(body.take(b"abc"), Ok(3));
        assert_eq!(body.take(b"defGET"), Ok(2));
        assert!(body.is_done());
        assert!(!Remaining::new(Framing::Length(1)).ends_at_close());
        assert!(!Remaining::new(Framing::Chunked).ends_at_close());
        let mut until_close = Remaining::new(Framing::UntilClose);
        assert_eq!(until_close.take(b"anything"), Ok(8));
        assert!(until_close.ends_at_close());
        assert_eq!(Remaining::new(Framing::Empty).take(b"next"), Ok(0));
    }

    #[test]
    fn large_sizes_count_down_across_reads() {
        let mut chunked = Chunked::new();
        assert_eq!(chunked.advance(b"FFFFF\r\n"), Ok(7));
        let data = vec![b'a'; 0xFFFFF];
        assert_eq!(chunked.advance(&data), Ok(data.len()));
        assert_eq!(chunked.advance(b"\r\n0\r\n\r\nrest"), Ok(7));
        assert!(chunked.is_done());
    }
}
