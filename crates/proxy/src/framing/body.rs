//! Where a message body ends, found while its bytes pass through unchanged, so the connection
//! after it can carry the next message: a length counted down, or a chunked body (RFC 9112
//! section 7.1) followed chunk by chunk.

use std::fmt;

use super::head::Framing;

/// What is left of a body being relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remaining {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

impl Remaining {
    pub const fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty => Self::Done,
            Framing::Length(n) => Self::Length(n),
            Framing::Chunked => Self::Chunked(Chunked::new()),
            Framing::UntilClose => Self::UntilClose,
        }
    }

    pub const fn is_done(&self) -> bool {
        matches!(self, Self::Done)
    }

    /// How many of `bytes` belong to the body: all of them unless it ends inside them.
    pub fn take(&mut self, bytes: &[u8]) -> Result<usize, ChunkedError> {
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
    pub fn ends_at_close(&mut self) -> bool {
        if matches!(self, Self::UntilClose) {
            *self = Self::Done;
        }
        self.is_done()
    }
}

/// Bytes allowed in one chunk line's extensions, and in the trailer section; more is an error
/// rather than an unbounded buffer.
pub const MAX_EXTENSION: usize = 4096;
pub const MAX_TRAILERS: usize = 64 * 1024;
/// Hex digits in a chunk size, leading zeros included: 16 fill a `u64`.
pub const MAX_SIZE_DIGITS: u8 = 16;

/// `tchar` (RFC 9110 section 5.6.2): the bytes of a token.
const fn is_tchar(byte: u8) -> bool {
    matches!(byte,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`'
        | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// `field-vchar` (RFC 9110 section 5.5): a visible character or obs-text.
const fn is_field_vchar(byte: u8) -> bool {
    matches!(byte, 0x21..=0x7e | 0x80..=0xff)
}

const fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t')
}

/// Where a chunk line's extensions are: `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS
/// chunk-ext-val ] )` (RFC 9112 section 7.1.1). Whitespace is allowed only before `;` or `=` and
/// after them, never right before the line's CRLF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ext {
    /// Whitespace after the size or a value: `;` must follow.
    BeforeSemicolon,
    /// After `;`: a name must follow.
    BeforeName,
    Name,
    /// Whitespace after a name: `;` or `=` must follow.
    AfterName,
    /// After `=`: a token or a quoted string must follow.
    BeforeValue,
    Token,
    Quoted,
    /// After a backslash in a quoted string.
    QuotedPair,
    /// After a quoted string's closing quote.
    AfterQuoted,
}

/// Where the trailer section is (RFC 9112 section 7.1.2): field lines, then an empty line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trailer {
    LineStart,
    Name,
    Value,
    /// CR seen at the end of a field line.
    LineEnd,
    /// CR seen on the empty line that ends the body.
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In a chunk-size line's digits: the size so far and its digits.
    Size {
        size: u64,
        digits: u8,
    },
    /// In a chunk-size line's extensions, with their bytes so far.
    Extension {
        size: u64,
        at: Ext,
        len: usize,
    },
    /// CR seen at the end of a chunk-size line.
    SizeEnd {
        size: u64,
    },
    /// In chunk data, with this many bytes to go.
    Data(u64),
    /// After chunk data: the CRLF, `cr` once CR is seen.
    DataEnd {
        cr: bool,
    },
    /// In the trailer section, with its bytes so far.
    Trailers {
        at: Trailer,
        total: usize,
    },
    Done,
}

/// A malformed chunked body; the connection cannot be reused after one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkedError(&'static str);

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed chunked body: {}", self.0)
    }
}

impl ChunkedError {
    /// What is wrong, in a few words.
    pub const fn reason(self) -> &'static str {
        self.0
    }
}

impl std::error::Error for ChunkedError {}

/// Tracks one chunked body across reads of any size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunked {
    state: State,
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunked {
    pub const fn new() -> Self {
        Self { state: State::Size { size: 0, digits: 0 } }
    }

    pub const fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// How many of `bytes` belong to the body. Fewer than `bytes.len()` only when the body
    /// ended inside them: the rest is the next message.
    pub fn advance(&mut self, bytes: &[u8]) -> Result<usize, ChunkedError> {
        let mut at = 0;
        while at < bytes.len() {
            if let State::Data(left) = &mut self.state {
                // The bulk of a body: taken whole, not byte by byte.
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(bytes.len() - at);
                at += take;
                *left -= take as u64;
                if *left == 0 {
                    self.state = State::DataEnd { cr: false };
                }
                continue;
            }
            if self.is_done() {
                return Ok(at);
            }
            self.state = step(self.state, bytes[at])?;
            at += 1;
        }
        Ok(at)
    }
}

/// The state after one byte outside chunk data.
fn step(state: State, byte: u8) -> Result<State, ChunkedError> {
    let fail = |why| Err(ChunkedError(why));
    Ok(match state {
        State::Size { size, digits } => match byte {
            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                if digits == MAX_SIZE_DIGITS {
                    return fail("chunk size has more than 16 hex digits");
                }
                let digit = (byte as char).to_digit(16).unwrap_or_default();
                State::Size { size: size << 4 | u64::from(digit), digits: digits + 1 }
            }
            _ if digits == 0 => return fail("chunk size is not hex digits"),
            b'\r' => State::SizeEnd { size },
            b';' => State::Extension { size, at: Ext::BeforeName, len: 1 },
            _ if is_whitespace(byte) => State::Extension { size, at: Ext::BeforeSemicolon, len: 1 },
            _ => return fail("chunk size is not hex digits"),
        },
        State::Extension { size, at, len } => {
            if byte == b'\r' {
                return match at {
                    Ext::Name | Ext::Token | Ext::AfterQuoted => Ok(State::SizeEnd { size }),
                    _ => fail("chunk extension cut short"),
                };
            }
            if len == MAX_EXTENSION {
                return fail("chunk extension too long");
            }
            let next = match (at, byte) {
                (Ext::Quoted, b'"') => Ext::AfterQuoted,
                (Ext::Quoted, b'\\') => Ext::QuotedPair,
                (Ext::Quoted, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff) => Ext::Quoted,
                (Ext::QuotedPair, b'\t' | b' ') => Ext::Quoted,
                (Ext::QuotedPair, _) if is_field_vchar(byte) => Ext::Quoted,
                (Ext::Quoted | Ext::QuotedPair, _) => {
                    return fail("invalid byte in a quoted chunk extension");
                }
                (_, b';') if at != Ext::BeforeName && at != Ext::BeforeValue => Ext::BeforeName,
                (Ext::Name | Ext::AfterName, b'=') => Ext::BeforeValue,
                (Ext::BeforeName | Ext::BeforeSemicolon | Ext::AfterName | Ext::BeforeValue, _)
                    if is_whitespace(byte) =>
                {
                    at
                }
                (Ext::Name, _) if is_whitespace(byte) => Ext::AfterName,
                (Ext::Token | Ext::AfterQuoted, _) if is_whitespace(byte) => Ext::BeforeSemicolon,
                (Ext::BeforeName | Ext::Name, _) if is_tchar(byte) => Ext::Name,
                (Ext::BeforeValue | Ext::Token, _) if is_tchar(byte) => Ext::Token,
                (Ext::BeforeValue, b'"') => Ext::Quoted,
                _ => return fail("invalid chunk extension"),
            };
            State::Extension { size, at: next, len: len + 1 }
        }
        State::SizeEnd { size } => match (byte, size) {
            (b'\n', 0) => State::Trailers { at: Trailer::LineStart, total: 0 },
            (b'\n', n) => State::Data(n),
            _ => return fail("chunk-size line not ended by CRLF"),
        },
        State::Data(_) | State::Done => state,
        State::DataEnd { cr } => match (byte, cr) {
            (b'\r', false) => State::DataEnd { cr: true },
            (b'\n', true) => State::Size { size: 0, digits: 0 },
            _ => return fail("chunk data not followed by CRLF"),
        },
        State::Trailers { at, total } => {
            // The CRLF that ends the body is not part of the trailer section (RFC 9112 section
            // 7.1.2), so it does not count against the limit.
            let counted = !matches!((at, byte), (Trailer::LineStart, b'\r') | (Trailer::End, _));
            if counted && total == MAX_TRAILERS {
                return fail("trailers too long");
            }
            let next = match (at, byte) {
                (Trailer::LineStart, b'\r') => Trailer::End,
                (Trailer::End, b'\n') => return Ok(State::Done),
                (Trailer::End, _) => return fail("trailer section not ended by CRLF"),
                (Trailer::LineStart, _) if is_whitespace(byte) => return fail("folded trailer line"),
                (Trailer::LineStart | Trailer::Name, _) if is_tchar(byte) => Trailer::Name,
                (Trailer::Name, b':') => Trailer::Value,
                (Trailer::LineStart | Trailer::Name, _) => return fail("invalid trailer field name"),
                (Trailer::Value, b'\r') => Trailer::LineEnd,
                (Trailer::Value, _) if is_whitespace(byte) || is_field_vchar(byte) => Trailer::Value,
                (Trailer::Value, _) => return fail("invalid byte in a trailer field value"),
                (Trailer::LineEnd, b'\n') => Trailer::LineStart,
                (Trailer::LineEnd, _) => return fail("trailer line not ended by CRLF"),
            };
            State::Trailers { at: next, total: total + usize::from(counted) }
        }
    })
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
    fn trailers_are_part_of_the_body() {
        let body = b"A\r\n0123456789\r\n0\r\nx-checksum: 1\r\nx-other:\t2 \r\nx-empty:\r\n\r\n";
        assert_eq!(body_len(body), Ok(Some(body.len())));
    }

    #[test]
    fn extensions_follow_the_chunk_ext_grammar() {
        for line in [
            "5;a",
            "5;a=b",
            "5 ;a",
            "5\t; a = b",
            "5;a=\"quoted ; \\\" value\"",
            "5;a=\"\";b;c=d",
            "5;a=b ;c",
            "5;a=\"x\" ;c",
        ] {
            let body = format!("{line}\r\nhello\r\n0\r\n\r\n");
            assert_eq!(body_len(body.as_bytes()), Ok(Some(body.len())), "{line:?}");
        }
        for line in [
            "5 ",
            "5;",
            "5;a ",
            "5;a=",
            "5;=b",
            "5;a=b c",
            "5;a=\"open",
            "5;a=\"x\"y",
            "5;a=b ",
            "5 a",
            "5;a@b",
        ] {
            let body = format!("{line}\r\nhello\r\n0\r\n\r\n");
            assert!(Chunked::new().advance(body.as_bytes()).is_err(), "{line:?}");
        }
    }

    #[test]
    fn only_crlf_ends_a_line() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r\n0\n\r\n",
            b"0\r\n\n",
            b"0\r\nx: 1\n\r\n",
            b"0\r\nx: 1\r\r\n\r\n",
            b"5\r\rhello",
        ] {
            assert!(Chunked::new().advance(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn chunk_sizes_are_hex_digits_only() {
        for bad in ["0x5", "+5", "-5", " 5", "5 5", "G", ""] {
            let body = format!("{bad}\r\nhello\r\n0\r\n\r\n");
            assert!(Chunked::new().advance(body.as_bytes()).is_err(), "{bad:?}");
        }
        let sixteen = b"0000000000000005\r\nhello\r\n0\r\n\r\n";
        assert_eq!(body_len(sixteen), Ok(Some(sixteen.len())));
        assert!(Chunked::new().advance(b"00000000000000005\r\n").is_err(), "17 digits");
        let mut max = Chunked::new();
        assert_eq!(max.advance(b"FFFFFFFFFFFFFFFF\r\nabc"), Ok(21), "u64::MAX fits");
    }

    #[test]
    fn trailers_are_field_lines_without_folding() {
        for bad in [
            &b"0\r\nx-a: 1\r\n folded\r\n\r\n"[..],
            b"0\r\nx-a : 1\r\n\r\n",
            b"0\r\n: 1\r\n\r\n",
            b"0\r\nno colon\r\n\r\n",
            b"0\r\nx-a: \x001\r\n\r\n",
            b"0\r\nx-a: \x7f\r\n\r\n",
        ] {
            assert!(Chunked::new().advance(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut long = b"0\r\nx: ".to_vec();
        long.resize(MAX_TRAILERS + 8, b'a');
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
