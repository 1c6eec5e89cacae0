//! An independent reference decoder for HTTP/1.1 framing, for the differential tests and the fuzz
//! targets only (it is compiled under `cfg(test)` and `cfg(fuzzing)`, never into the proxy).
//!
//! It is written straight from the grammar of RFC 9112 (HTTP/1.1) and RFC 9110 (HTTP semantics)
//! as a small recursive-descent parser over a byte cursor, and shares no code with
//! [`super::head`] or [`super::body`] (nor uses httparse), so that where the relay and this
//! module disagree, one of them is wrong. It favours being obviously right over being fast.
//!
//! The grammar, with the relay's own limits:
//!
//! ```text
//! chunked-body   = *chunk last-chunk trailer-section CRLF            ; RFC 9112 7.1
//! chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size     = 1*HEXDIG                                          ; at most 16 digits
//! last-chunk     = 1*("0") [ chunk-ext ] CRLF
//! chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )  ; 7.1.1
//!                                                                    ; at most 4096 bytes
//! chunk-ext-name = token
//! chunk-ext-val  = token / quoted-string
//! trailer-section = *( field-line CRLF )                             ; at most 64 KiB
//!
//! request-line   = method SP request-target SP HTTP-version CRLF     ; RFC 9112 3
//! status-line    = HTTP-version SP status-code SP [ reason-phrase ] CRLF  ; 4
//! HTTP-version   = "HTTP/1.0" / "HTTP/1.1"                           ; 2.3, the two we speak
//! field-line     = field-name ":" OWS field-value OWS                ; 5
//! field-value    = *( SP / HTAB / VCHAR / obs-text )                 ; RFC 9110 5.5
//! message head   = start-line *( field-line CRLF ) CRLF              ; 2.1; at most 100 field
//!                                                                    ; lines and 64 KiB
//! token          = 1*tchar                                           ; RFC 9110 5.6.2
//! quoted-string  = DQUOTE *( qdtext / quoted-pair ) DQUOTE           ; RFC 9110 5.6.4
//! OWS = BWS      = *( SP / HTAB )                                    ; RFC 9110 5.6.3
//! ```
//!
//! Line ends are CRLF only: a bare LF, or a CR not followed by LF, is an error wherever it
//! appears (RFC 9112 section 2.2 lets a recipient accept a bare LF; a relay on shared
//! connections must not, since the app behind it may not). No obs-fold (section 5.2), no
//! whitespace between a field name and its colon (section 5.1).
//!
//! Errors in bytes are found as the bytes are read, so a truncated input is `Incomplete` only if
//! every byte so far could still start a valid message. Rules about the fields as a whole (Host,
//! Content-Length, Transfer-Encoding) are judged once the head is complete; for a truncated head
//! the reference also says whether the complete field lines already doom it (`doomed`), so a
//! relay that rejects early can be told apart from one that rejects a valid prefix.

use std::fmt;

/// Bytes of a message head, from the start-line to the empty line that ends it.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Field lines in a message head.
pub const MAX_FIELD_LINES: usize = 100;
/// Hex digits in a chunk-size, leading zeros included.
pub const MAX_CHUNK_SIZE_DIGITS: usize = 16;
/// Bytes of chunk-ext on one chunk line: from the end of the chunk-size to the CR.
pub const MAX_CHUNK_EXT_BYTES: usize = 4096;
/// Bytes of a trailer section: its field lines with their CRLFs, not the final CRLF.
pub const MAX_TRAILER_BYTES: usize = 64 * 1024;
/// Digits in a Content-Length: 19 always fit in a `u64`.
pub const MAX_CONTENT_LENGTH_DIGITS: usize = 19;
/// Names a message's Connection header fields may list (besides `close` and `keep-alive`): a
/// request that lists more goes to the general server, a response that does is invalid. Not an
/// RFC rule: the relay's own bound on what it strips from a head, mirrored here so that the
/// relay's answers can be compared.
pub const MAX_CONNECTION_OPTIONS: usize = 16;

/// The reason of a line ended by LF alone.
pub const BARE_LF: &str = "bare LF (line end without CR)";
/// The reason of a CR followed by anything but LF.
pub const CR_WITHOUT_LF: &str = "CR not followed by LF";

/// How a message body is delimited (RFC 9112 section 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the server closes the connection (responses only).
    UntilClose,
}

/// Where and why an input left the grammar or broke a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    /// Offset of the first byte that cannot be part of a valid message. For a rule about the
    /// fields as a whole, the start of the field line that broke it (or 0).
    pub at: usize,
    /// The part of the message: "chunk-size line", "request-line", "field line", ...
    pub part: &'static str,
    pub reason: &'static str,
    /// For requests: 400, or 431 for a head over the size or field-line limits.
    pub status: u16,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (at byte {}, status {})", self.part, self.reason, self.at, self.status)
    }
}

impl Error {
    /// A stable name for the kind of error, without its position.
    pub fn class(&self) -> String {
        format!("{}: {}", self.part, self.reason)
    }
}

/// A chunked body's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid so far; more bytes are needed.
    Incomplete,
    Invalid(Error),
    /// The body is the first `len` bytes; anything after them is the next message.
    Complete {
        len: usize,
    },
}

/// A complete chunked body, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub len: usize,
    /// The chunk-data, concatenated.
    pub data: Vec<u8>,
    /// Trailer fields, value without surrounding whitespace.
    pub trailers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Bytes of the trailer section (without the final CRLF).
    pub trailer_bytes: usize,
    /// Bytes of chunk-ext after each line's first `;`, added up: the count hyper limits.
    pub ext_bytes_after_semicolon: usize,
}

/// Where a chunked body (the bytes after a message head) ends, if it is valid.
pub fn chunked(bytes: &[u8]) -> Verdict {
    match decode_chunked(bytes) {
        Ok(decoded) => Verdict::Complete { len: decoded.len },
        Err(Stop::Incomplete) => Verdict::Incomplete,
        Err(Stop::Invalid(error)) => Verdict::Invalid(error),
    }
}

/// A chunked body decoded, or why not: [`Stop::Incomplete`] while valid so far.
pub fn decode_chunked(bytes: &[u8]) -> Result<Decoded, Stop> {
    let mut cursor = Cursor::new(bytes);
    let mut decoded = Decoded::default();
    chunked_body(&mut cursor, &mut decoded)?;
    decoded.len = cursor.pos;
    Ok(decoded)
}

/// Why parsing stopped short of a complete message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Incomplete,
    Invalid(Error),
}

/// What the relay may do with a request other than carry it itself: valid requests it hands to
/// the general HTTP/1 server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    Http10,
    /// CONNECT, whatever its target.
    Connect,
    /// An absolute-form, authority-form or asterisk-form target (RFC 9112 section 3.2).
    NotOriginForm,
    /// An Upgrade header field, or `upgrade` listed in Connection.
    Upgrade,
    Expect,
    /// Transfer codings other than a lone `chunked` (`gzip, chunked`, say).
    TransferCoding,
    /// More than [`MAX_CONNECTION_OPTIONS`] names listed in Connection.
    ConnectionOptions,
}

/// A valid request head.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    pub len: usize,
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    pub http10: bool,
    pub framing: Framing,
    /// Empty when the relay carries the request itself.
    pub fallback: Vec<Fallback>,
    /// The connection stays open after this exchange (RFC 9112 section 9.3).
    pub keep_alive: bool,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("len", &self.len)
            .field("method", &self.method.escape_ascii().to_string())
            .field("target", &self.target.escape_ascii().to_string())
            .field("http10", &self.http10)
            .field("framing", &self.framing)
            .field("fallback", &self.fallback)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestVerdict {
    /// Valid so far. `doomed`: the complete field lines so far already break a rule that no
    /// later line can mend (two Host fields, say), so the head will be invalid.
    Incomplete {
        doomed: Option<Error>,
    },
    Invalid(Error),
    Valid(Request),
}

/// A valid response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub len: usize,
    pub status: u16,
    pub http10: bool,
    pub framing: Framing,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseVerdict {
    Incomplete { doomed: Option<Error> },
    Invalid(Error),
    Valid(Response),
}

// ---------------------------------------------------------------------------------------------
// The cursor and the core rules (RFC 5234 B.1, RFC 9110 5.6).

type Step<T> = Result<T, Stop>;

/// A position in the input, with a bound past which a byte may not be consumed (the size limits)
/// and the part of the message being read, for error messages.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    limit: usize,
    limit_error: (&'static str, u16),
    part: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0, limit: usize::MAX, limit_error: ("", 400), part: "" }
    }

    /// The next byte, not consumed. The end of the input is `Incomplete`: more may come.
    fn peek(&self) -> Step<u8> {
        self.bytes.get(self.pos).copied().ok_or(Stop::Incomplete)
    }

    /// Consumes the next byte, which must lie within the current limit.
    fn take(&mut self) -> Step<u8> {
        let byte = self.peek()?;
        if self.pos >= self.limit {
            let (reason, status) = self.limit_error;
            return Err(Stop::Invalid(Error { at: self.pos, part: self.part, reason, status }));
        }
        self.pos += 1;
        Ok(byte)
    }

    fn fail<T>(&self, reason: &'static str) -> Step<T> {
        self.fail_at(self.pos, reason)
    }

    fn fail_at<T>(&self, at: usize, reason: &'static str) -> Step<T> {
        Err(Stop::Invalid(Error { at, part: self.part, reason, status: 400 }))
    }

    /// Consumes bytes while `accept` holds; returns how many.
    fn take_while(&mut self, accept: impl Fn(u8) -> bool) -> Step<usize> {
        let start = self.pos;
        while accept(self.peek()?) {
            self.take()?;
        }
        Ok(self.pos - start)
    }

    /// CRLF, the only line end accepted (RFC 9112 section 2.2). `otherwise`: the reason when the
    /// next byte is neither CR nor LF.
    fn crlf(&mut self, otherwise: &'static str) -> Step<()> {
        match self.peek()? {
            b'\r' => {
                self.take()?;
                if self.peek()? != b'\n' {
                    return self.fail(CR_WITHOUT_LF);
                }
                self.take()?;
                Ok(())
            }
            b'\n' => self.fail(BARE_LF),
            _ => self.fail(otherwise),
        }
    }

    /// `token = 1*tchar`; returns its bytes.
    fn token(&mut self, not_a_token: &'static str) -> Step<&'a [u8]> {
        let start = self.pos;
        if self.take_while(is_tchar)? == 0 {
            return self.fail(not_a_token);
        }
        Ok(&self.bytes[start..self.pos])
    }

    /// `OWS` / `BWS`: any SP and HTAB.
    fn whitespace(&mut self) -> Step<usize> {
        self.take_while(is_whitespace)
    }

    /// `quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE` (RFC 9110 section 5.6.4).
    fn quoted_string(&mut self) -> Step<()> {
        if self.take()? != b'"' {
            return self.fail_at(self.pos - 1, "quoted-string does not start with DQUOTE");
        }
        loop {
            match self.peek()? {
                b'"' => {
                    self.take()?;
                    return Ok(());
                }
                b'\\' => {
                    self.take()?;
                    // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                    if !is_field_byte(self.peek()?) {
                        return self.fail("invalid byte after a backslash in a quoted-string");
                    }
                    self.take()?;
                }
                // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
                byte if is_field_byte(byte) => {
                    self.take()?;
                }
                _ => return self.fail("invalid byte in a quoted-string"),
            }
        }
    }
}

/// `tchar` (RFC 9110 section 5.6.2).
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn is_whitespace(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// `VCHAR = %x21-7E`.
fn is_vchar(byte: u8) -> bool {
    (0x21..=0x7e).contains(&byte)
}

/// A byte of a field value, a reason phrase or a quoted-string's text: SP / HTAB / VCHAR /
/// obs-text (`%x80-FF`). Everything else is a control character (NUL, CR, LF, DEL, ...).
fn is_field_byte(byte: u8) -> bool {
    is_whitespace(byte) || is_vchar(byte) || byte >= 0x80
}

fn trim_whitespace(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes
        && is_whitespace(*first)
    {
        bytes = rest;
    }
    while let [rest @ .., last] = bytes
        && is_whitespace(*last)
    {
        bytes = rest;
    }
    bytes
}

// ---------------------------------------------------------------------------------------------
// Chunked transfer coding (RFC 9112 section 7.1).

fn chunked_body(c: &mut Cursor<'_>, decoded: &mut Decoded) -> Step<()> {
    loop {
        c.part = "chunk-size line";
        let size = chunk_size(c)?;
        let ext_start = c.pos;
        c.limit = ext_start + MAX_CHUNK_EXT_BYTES;
        c.limit_error = ("chunk-ext longer than 4096 bytes", 400);
        decoded.ext_bytes_after_semicolon += chunk_ext(c)?;
        c.limit = usize::MAX;
        c.crlf("unexpected byte (not a hex digit, BWS, ';' or CRLF)")?;
        if size == 0 {
            break;
        }
        // chunk-data = 1*OCTET, exactly chunk-size of them.
        c.part = "chunk-data";
        let available = (c.bytes.len() - c.pos) as u64;
        if available < size {
            return Err(Stop::Incomplete);
        }
        // `size <= available`, so it fits in a usize.
        let size = size as usize;
        decoded.data.extend_from_slice(&c.bytes[c.pos..c.pos + size]);
        c.pos += size;
        c.part = "end of chunk-data";
        c.crlf("chunk-data not followed by CRLF")?;
    }
    trailer_section(c, decoded)
}

/// `chunk-size = 1*HEXDIG`, at most [`MAX_CHUNK_SIZE_DIGITS`] of them (so it fits in a u64).
fn chunk_size(c: &mut Cursor<'_>) -> Step<u64> {
    let mut size: u64 = 0;
    let mut digits = 0;
    loop {
        let byte = c.peek()?;
        let Some(digit) = (byte as char).to_digit(16) else { break };
        if digits == MAX_CHUNK_SIZE_DIGITS {
            return c.fail("chunk-size longer than 16 hex digits");
        }
        c.take()?;
        size = (size << 4) | u64::from(digit);
        digits += 1;
    }
    if digits == 0 {
        return c.fail("chunk-size missing (line does not start with a hex digit)");
    }
    Ok(size)
}

/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`. Stops before
/// whatever cannot continue it (the CRLF, if the line is valid). Returns the bytes after the
/// first `;`.
fn chunk_ext(c: &mut Cursor<'_>) -> Step<usize> {
    let mut after_semicolon = None;
    loop {
        // Each repetition starts with BWS ";". Whitespace not followed by ";" belongs to no rule.
        let before = c.pos;
        let spaces = c.whitespace()?;
        if c.peek()? != b';' {
            if spaces > 0 {
                return c.fail("whitespace after chunk-size or chunk-ext not followed by ';'");
            }
            debug_assert_eq!(before, c.pos);
            return Ok(after_semicolon.map_or(0, |start| c.pos - start));
        }
        c.take()?;
        after_semicolon.get_or_insert(c.pos);
        c.whitespace()?;
        c.token("chunk-ext-name is not a token")?;
        // [ BWS "=" BWS chunk-ext-val ]: whitespace here may instead start the next repetition.
        let name_end = c.pos;
        c.whitespace()?;
        if c.peek()? == b'=' {
            c.take()?;
            c.whitespace()?;
            if c.peek()? == b'"' {
                c.quoted_string()?;
            } else {
                c.token("chunk-ext-val is not a token or quoted-string")?;
            }
        } else {
            c.pos = name_end;
        }
    }
}

/// `trailer-section = *( field-line CRLF )`, then the CRLF that ends the body.
fn trailer_section(c: &mut Cursor<'_>, decoded: &mut Decoded) -> Step<()> {
    let start = c.pos;
    c.limit = start + MAX_TRAILER_BYTES;
    c.limit_error = ("trailer section longer than 64 KiB", 400);
    loop {
        c.part = "trailer section";
        // A field-name never starts with CR or LF: one here is the final CRLF (or a bare LF).
        if matches!(c.peek()?, b'\r' | b'\n') {
            decoded.trailer_bytes = c.pos - start;
            c.limit = usize::MAX;
            c.part = "end of chunked body";
            return c.crlf("unreachable");
        }
        let (name, value) = field_line(c, "trailer field line")?;
        decoded.trailers.push((name.to_vec(), value.to_vec()));
    }
}

// ---------------------------------------------------------------------------------------------
// Field lines (RFC 9112 section 5, RFC 9110 section 5.5).

/// `field-line CRLF` with `field-line = field-name ":" OWS field-value OWS`. Returns the name and
/// the value without the surrounding OWS.
fn field_line<'a>(c: &mut Cursor<'a>, part: &'static str) -> Step<(&'a [u8], &'a [u8])> {
    c.part = part;
    if is_whitespace(c.peek()?) {
        // RFC 9112 section 5.2 (obs-fold), and section 2.2 for whitespace before the first
        // field line: both rejected.
        return c.fail("line starts with whitespace (obs-fold)");
    }
    let name = c.token("field-name is not a token")?;
    match c.peek()? {
        b':' => {
            c.take()?;
        }
        byte if is_whitespace(byte) => return c.fail("whitespace between field-name and colon"),
        _ => return c.fail("field-name not followed by a colon"),
    }
    let value_start = c.pos;
    c.take_while(is_field_byte)?;
    let value = trim_whitespace(&c.bytes[value_start..c.pos]);
    c.crlf("control character in field-value")?;
    Ok((name, value))
}

/// The field lines of a head, after its start-line, through the empty line that ends it. Each
/// complete line is pushed to `fields` as it is read, so a caller that gets `Incomplete` still
/// sees them.
fn field_lines<'a>(c: &mut Cursor<'a>, fields: &mut Vec<Field<'a>>) -> Step<()> {
    loop {
        c.part = "field line";
        if matches!(c.peek()?, b'\r' | b'\n') {
            c.part = "end of head";
            return c.crlf("unreachable");
        }
        if fields.len() == MAX_FIELD_LINES {
            return Err(Stop::Invalid(Error {
                at: c.pos,
                part: "field line",
                reason: "more than 100 field lines",
                status: 431,
            }));
        }
        let at = c.pos;
        let (name, value) = field_line(c, "field line")?;
        fields.push(Field { at, name, value });
    }
}

/// One field line of a head.
#[derive(Clone, Copy, Debug)]
struct Field<'a> {
    /// Where its line starts.
    at: usize,
    name: &'a [u8],
    value: &'a [u8],
}

impl Field<'_> {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// `HTTP-version`, of the two this relay speaks; `true` for HTTP/1.0. Read byte by byte, so a
/// prefix of either is `Incomplete` and anything else fails at its first wrong byte.
fn http_version(c: &mut Cursor<'_>) -> Step<bool> {
    for expected in *b"HTTP/1." {
        if c.peek()? != expected {
            return c.fail("not HTTP/1.0 or HTTP/1.1");
        }
        c.take()?;
    }
    match c.peek()? {
        b'0' => {
            c.take()?;
            Ok(true)
        }
        b'1' => {
            c.take()?;
            Ok(false)
        }
        _ => c.fail("not HTTP/1.0 or HTTP/1.1"),
    }
}

fn expect_sp(c: &mut Cursor<'_>, reason: &'static str) -> Step<()> {
    if c.peek()? != b' ' {
        return c.fail(reason);
    }
    c.take()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Rules on the fields as a whole (RFC 9112 sections 3.2, 6.1, 6.3; RFC 9110 section 8.6).

/// What the fields say about framing and the connection.
#[derive(Debug, Default)]
struct Fields {
    hosts: usize,
    content_length: Option<u64>,
    /// The transfer codings of all Transfer-Encoding lines, as one list, names lowercased.
    codings: Vec<Vec<u8>>,
    transfer_encoding: bool,
    upgrade: bool,
    expect: bool,
    close: bool,
    keep_alive: bool,
    connection_options: usize,
}

/// Reads the fields; `Err` for a rule that no later field line could mend. `http10` decides
/// whether Transfer-Encoding may appear at all.
fn read_fields(fields: &[Field<'_>], http10: bool, is_request: bool) -> Result<Fields, Error> {
    let mut read = Fields::default();
    let rule = |field: &Field<'_>, reason| Error { at: field.at, part: "fields", reason, status: 400 };
    for field in fields {
        if field.is("host") {
            read.hosts += 1;
            if read.hosts > 1 && is_request {
                // RFC 9112 section 3.2: more than one Host field line is a 400, whatever the
                // version.
                return Err(rule(field, "more than one Host"));
            }
        } else if field.is("content-length") {
            if read.content_length.is_some() {
                return Err(rule(field, "Content-Length more than once"));
            }
            // Content-Length = 1*DIGIT (RFC 9110 section 8.6); no sign, no list, no spaces.
            let value = field.value;
            if value.is_empty()
                || value.len() > MAX_CONTENT_LENGTH_DIGITS
                || !value.iter().all(u8::is_ascii_digit)
            {
                return Err(rule(field, "Content-Length is not 1*DIGIT (at most 19 digits)"));
            }
            read.content_length = Some(value.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')));
        } else if field.is("transfer-encoding") {
            // Codings are tokens (RFC 9112 section 7): ASCII. The relay refuses a value it could
            // not hand on as text.
            if !field.value.is_ascii() {
                return Err(rule(field, "Transfer-Encoding is not ASCII"));
            }
            read.transfer_encoding = true;
            if http10 && is_request {
                return Err(rule(field, "Transfer-Encoding in an HTTP/1.0 request"));
            }
            read.codings.extend(transfer_codings(field.value));
            // Once `chunked` is followed by anything, the list can only end in a second chunked.
            let chunked = read.codings.iter().filter(|coding| coding.as_slice() == b"chunked").count();
            if chunked > 1 {
                return Err(rule(field, "Transfer-Encoding lists chunked more than once"));
            }
            if chunked == 1 && read.codings.last().map(Vec::as_slice) != Some(&b"chunked"[..]) {
                return Err(rule(field, "Transfer-Encoding's final coding is not chunked"));
            }
        } else if field.is("connection") {
            // Connection = #connection-option (RFC 9110 section 7.6.1): tokens, so ASCII; the
            // relay refuses a value it could not hand on as text.
            if !field.value.is_ascii() {
                return Err(rule(field, "Connection is not ASCII"));
            }
            for option in list_elements(field.value) {
                // A hop-by-hop option is dropped from the head written on: naming a field that
                // frames the message (or Host) would change the next hop's framing.
                if [&b"content-length"[..], b"transfer-encoding", b"host"]
                    .iter()
                    .any(|framing| option.eq_ignore_ascii_case(framing))
                {
                    return Err(rule(field, "Connection names a framing field"));
                }
                if option.eq_ignore_ascii_case(b"close") {
                    read.close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    read.keep_alive = true;
                } else {
                    read.upgrade |= option.eq_ignore_ascii_case(b"upgrade");
                    read.connection_options += 1;
                }
            }
        } else if field.is("upgrade") {
            read.upgrade = true;
        } else if field.is("expect") {
            read.expect = true;
        }
        if read.transfer_encoding && read.content_length.is_some() {
            // RFC 9112 section 6.1: a message with both is a smuggling attempt until proven
            // otherwise; this relay rejects it.
            return Err(rule(field, "Transfer-Encoding together with Content-Length"));
        }
    }
    Ok(read)
}

/// The rules that need every field line: the final transfer coding, and Host for HTTP/1.1.
fn complete_fields(read: &Fields, http10: bool, is_request: bool) -> Result<(), Error> {
    let rule = |reason| Error { at: 0, part: "fields", reason, status: 400 };
    if read.transfer_encoding && read.codings.last().map(Vec::as_slice) != Some(&b"chunked"[..]) {
        return Err(rule("Transfer-Encoding's final coding is not chunked"));
    }
    if is_request && !http10 && read.hosts == 0 {
        return Err(rule("HTTP/1.1 request without Host"));
    }
    if !is_request && read.transfer_encoding && read.codings != [b"chunked"] {
        // The relay carries a lone chunked only: it would have to hand the other codings on
        // intact, and it rewrites Transfer-Encoding. A 502, stricter than RFC 9112 section 6.3.
        return Err(rule("response Transfer-Encoding other than a lone chunked"));
    }
    if !is_request && read.connection_options > MAX_CONNECTION_OPTIONS {
        // The relay's own bound again: a response that lists more is a 502.
        return Err(rule("more than 16 names listed in Connection"));
    }
    Ok(())
}

/// The elements of a `#list` (RFC 9110 section 5.6.1), without surrounding whitespace, empty ones
/// dropped (a recipient must accept and ignore them). Connection and Transfer-Encoding list
/// tokens (with parameters, for transfer codings), which hold no commas, so a comma always
/// separates elements.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|byte| *byte == b',').map(trim_whitespace).filter(|element| !element.is_empty())
}

/// `Transfer-Encoding = #transfer-coding` (RFC 9112 section 6.1): the codings, lowercased. The
/// rules here only ask whether each is `chunked`, so an element is compared whole: `chunked` with
/// parameters (which chunked does not take, RFC 9112 section 7.1) is some other coding. The
/// syntax of other codings is not checked; the relay hands them to the general server, which
/// answers 501 or 400 for those it cannot decode.
fn transfer_codings(value: &[u8]) -> Vec<Vec<u8>> {
    list_elements(value).map(<[u8]>::to_ascii_lowercase).collect()
}

// ---------------------------------------------------------------------------------------------
// Request heads (RFC 9112 section 3).

/// A request head from the start of `bytes`.
pub fn request_head(bytes: &[u8]) -> RequestVerdict {
    let mut c = Cursor::new(bytes);
    c.limit = MAX_HEAD_BYTES;
    c.limit_error = ("head longer than 64 KiB", 431);
    let mut line = None;
    let mut fields = Vec::new();
    match request_syntax(&mut c, &mut line, &mut fields) {
        Ok(()) => {}
        Err(Stop::Invalid(error)) => return RequestVerdict::Invalid(error),
        Err(Stop::Incomplete) => {
            let doomed = line.and_then(|(_, _, http10)| read_fields(&fields, http10, true).err());
            return RequestVerdict::Incomplete { doomed };
        }
    }
    let (method, target, http10) = line.unwrap_or_default();
    let read = match read_fields(&fields, http10, true) {
        Ok(read) => read,
        Err(error) => return RequestVerdict::Invalid(error),
    };
    if let Err(error) = complete_fields(&read, http10, true) {
        return RequestVerdict::Invalid(error);
    }
    let framing = match (read.transfer_encoding, read.content_length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) if n > 0 => Framing::Length(n),
        _ => Framing::Empty,
    };
    let mut fallback = Vec::new();
    let mut falls_back = |yes, kind| {
        if yes {
            fallback.push(kind);
        }
    };
    falls_back(http10, Fallback::Http10);
    falls_back(method == b"CONNECT", Fallback::Connect);
    falls_back(!target.starts_with(b"/"), Fallback::NotOriginForm);
    falls_back(read.upgrade, Fallback::Upgrade);
    falls_back(read.expect, Fallback::Expect);
    falls_back(read.transfer_encoding && read.codings != [b"chunked"], Fallback::TransferCoding);
    falls_back(read.connection_options > MAX_CONNECTION_OPTIONS, Fallback::ConnectionOptions);
    let keep_alive = !read.close && (!http10 || read.keep_alive);
    RequestVerdict::Valid(Request {
        len: c.pos,
        method: method.to_vec(),
        target: target.to_vec(),
        http10,
        framing,
        fallback,
        keep_alive,
    })
}

type RequestLine<'a> = (&'a [u8], &'a [u8], bool);

/// `request-line *( field-line CRLF ) CRLF`.
fn request_syntax<'a>(
    c: &mut Cursor<'a>,
    line: &mut Option<RequestLine<'a>>,
    fields: &mut Vec<Field<'a>>,
) -> Step<()> {
    c.part = "request-line";
    // method = token. No empty lines before it: RFC 9112 section 2.2 lets a server skip them,
    // and this relay does not.
    let method = c.token("method is not a token")?;
    expect_sp(c, "method not followed by a single SP")?;
    // request-target: any visible ASCII (RFC 9112 section 3.2's forms are all made of it); no
    // obs-text, no controls.
    let start = c.pos;
    if c.take_while(is_vchar)? == 0 {
        return c.fail("request-target missing or starts with an invalid byte");
    }
    let target = &c.bytes[start..c.pos];
    expect_sp(c, "invalid byte in request-target")?;
    let http10 = http_version(c)?;
    c.crlf("HTTP-version not followed by CRLF")?;
    *line = Some((method, target, http10));
    field_lines(c, fields)
}

// ---------------------------------------------------------------------------------------------
// Response heads (RFC 9112 section 4).

/// A response head from the start of `bytes`, the response to a HEAD request if `is_head`.
pub fn response_head(bytes: &[u8], is_head: bool) -> ResponseVerdict {
    let mut c = Cursor::new(bytes);
    c.limit = MAX_HEAD_BYTES;
    c.limit_error = ("head longer than 64 KiB", 431);
    let mut line = None;
    let mut fields = Vec::new();
    let doomed_by_status = |status: u16| {
        (status == 101).then_some(Error {
            at: 0,
            part: "status-line",
            reason: "101 Switching Protocols, which the relay cannot carry",
            status: 400,
        })
    };
    match response_syntax(&mut c, &mut line, &mut fields) {
        Ok(()) => {}
        Err(Stop::Invalid(error)) => return ResponseVerdict::Invalid(error),
        Err(Stop::Incomplete) => {
            let doomed = line.and_then(|(status, http10)| {
                doomed_by_status(status).or_else(|| read_fields(&fields, http10, false).err())
            });
            return ResponseVerdict::Incomplete { doomed };
        }
    }
    let (status, http10) = line.unwrap_or_default();
    if let Some(error) = doomed_by_status(status) {
        return ResponseVerdict::Invalid(error);
    }
    let read = match read_fields(&fields, http10, false) {
        Ok(read) => read,
        Err(error) => return ResponseVerdict::Invalid(error),
    };
    if let Err(error) = complete_fields(&read, http10, false) {
        return ResponseVerdict::Invalid(error);
    }
    // RFC 9112 section 6.3, items 1, 2, 4, 6 and 8.
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 || is_head {
        Framing::Empty
    } else if read.transfer_encoding {
        Framing::Chunked
    } else {
        match read.content_length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    ResponseVerdict::Valid(Response { len: c.pos, status, http10, framing })
}

/// `status-line *( field-line CRLF ) CRLF`.
fn response_syntax<'a>(
    c: &mut Cursor<'a>,
    line: &mut Option<(u16, bool)>,
    fields: &mut Vec<Field<'a>>,
) -> Step<()> {
    c.part = "status-line";
    let http10 = http_version(c)?;
    expect_sp(c, "HTTP-version not followed by a single SP")?;
    // status-code = 3DIGIT
    let mut status = 0;
    for _ in 0..3 {
        let byte = c.peek()?;
        if !byte.is_ascii_digit() {
            return c.fail("status-code is not 3DIGIT");
        }
        c.take()?;
        status = status * 10 + u16::from(byte - b'0');
    }
    // RFC 9110 section 15: status codes are 100 to 599.
    if !(100..600).contains(&status) {
        return c.fail("status-code outside 100 to 599");
    }
    // The SP before an empty reason-phrase is often left out (httparse and hyper accept that);
    // it frames nothing, so it is accepted here too.
    if c.peek()? != b'\r' {
        expect_sp(c, "status-code not followed by SP")?;
    }
    // reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ), optional.
    c.take_while(is_field_byte)?;
    c.crlf("control character in reason-phrase")?;
    *line = Some((status, http10));
    field_lines(c, fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_reason(verdict: Verdict) -> &'static str {
        match verdict {
            Verdict::Invalid(error) => error.reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chunked_bodies_by_the_grammar() {
        let body = b"5\r\nhello\r\n06 ; a = \"b;\\\"c\" ;d\r\n world\r\n000;x=y\r\nT: 1\r\n\r\nNEXT";
        let decoded = decode_chunked(body).unwrap();
        assert_eq!(decoded.len, body.len() - 4);
        assert_eq!(decoded.data, b"hello world");
        assert_eq!(decoded.trailers, [(b"T".to_vec(), b"1".to_vec())]);
        assert_eq!(chunked(b"5\r\nhel"), Verdict::Incomplete);
        assert_eq!(chunked(b"0\r\nT: 1\r\n"), Verdict::Incomplete);
        assert_eq!(chunked(b"FFFFFFFFFFFFFFFF\r\n"), Verdict::Incomplete);
    }

    #[test]
    fn chunked_errors_name_the_rule() {
        assert_eq!(
            invalid_reason(chunked(b"0x5\r\n")),
            "unexpected byte (not a hex digit, BWS, ';' or CRLF)"
        );
        assert_eq!(invalid_reason(chunked(b"5\nhello\r\n0\r\n\r\n")), "bare LF (line end without CR)");
        assert_eq!(invalid_reason(chunked(b"5\rhello")), "CR not followed by LF");
        assert_eq!(
            invalid_reason(chunked(b"+5\r\n")),
            "chunk-size missing (line does not start with a hex digit)"
        );
        assert_eq!(invalid_reason(chunked(b"00000000000000005\r\n")), "chunk-size longer than 16 hex digits");
        assert_eq!(
            invalid_reason(chunked(b"5 \r\n")),
            "whitespace after chunk-size or chunk-ext not followed by ';'"
        );
        assert_eq!(invalid_reason(chunked(b"5;\r\n")), "chunk-ext-name is not a token");
        assert_eq!(invalid_reason(chunked(b"5;a=\r\n")), "chunk-ext-val is not a token or quoted-string");
        assert_eq!(invalid_reason(chunked(b"5;a=\"\0\"\r\n")), "invalid byte in a quoted-string");
        assert_eq!(invalid_reason(chunked(b"1\r\nab\r\n")), "chunk-data not followed by CRLF");
        assert_eq!(invalid_reason(chunked(b"0\r\n x: 1\r\n\r\n")), "line starts with whitespace (obs-fold)");
        assert_eq!(invalid_reason(chunked(b"0\r\nx : 1\r\n\r\n")), "whitespace between field-name and colon");
        assert_eq!(invalid_reason(chunked(b"0\r\nx: \x01\r\n\r\n")), "control character in field-value");
        assert_eq!(invalid_reason(chunked(b"0\r\n\n")), "bare LF (line end without CR)");
    }

    #[test]
    fn chunked_limits_are_exact() {
        let mut line = b"1;a=".to_vec();
        line.resize(MAX_CHUNK_EXT_BYTES + 1, b'b');
        let mut body = line.clone();
        body.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert!(matches!(chunked(&body), Verdict::Complete { .. }));
        line.push(b'b');
        assert_eq!(invalid_reason(chunked(&line)), "chunk-ext longer than 4096 bytes");

        let mut trailers = b"0\r\n".to_vec();
        let field = format!("x: {}\r\n", "v".repeat(1019)); // 1024 bytes
        for _ in 0..64 {
            trailers.extend_from_slice(field.as_bytes());
        }
        let mut complete = trailers.clone();
        complete.extend_from_slice(b"\r\n");
        assert_eq!(chunked(&complete), Verdict::Complete { len: complete.len() });
        trailers.push(b'y');
        assert_eq!(invalid_reason(chunked(&trailers)), "trailer section longer than 64 KiB");
    }

    fn valid(raw: &[u8]) -> Request {
        match request_head(raw) {
            RequestVerdict::Valid(request) => request,
            other => panic!("{:?}: {other:?}", raw.escape_ascii().to_string()),
        }
    }

    fn rejected(raw: &[u8]) -> Error {
        match request_head(raw) {
            RequestVerdict::Invalid(error) => error,
            other => panic!("{:?}: {other:?}", raw.escape_ascii().to_string()),
        }
    }

    #[test]
    fn request_heads_and_their_framing() {
        let request = valid(b"POST /a?b HTTP/1.1\r\nHost: x\r\nContent-Length: 007\r\n\r\nbody");
        assert_eq!((request.len, request.framing, request.fallback.len()), (52, Framing::Length(7), 0));
        let request = valid(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: , Chunked ,\r\n\r\n");
        assert_eq!((request.framing, request.fallback.len()), (Framing::Chunked, 0));
        let request = valid(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!((request.framing, request.fallback), (Framing::Chunked, vec![Fallback::TransferCoding]));
        assert_eq!(valid(b"GET / HTTP/1.0\r\n\r\n").fallback, [Fallback::Http10]);
        assert_eq!(valid(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").fallback, [Fallback::NotOriginForm]);
        assert_eq!(valid(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").framing, Framing::Empty);
        assert!(!valid(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: a, Close\r\n\r\n").keep_alive);
    }

    #[test]
    fn request_rules() {
        for (raw, reason) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], "HTTP/1.1 request without Host"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", "more than one Host"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", "Content-Length more than once"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", "Content-Length is not 1*DIGIT (at most 19 digits)"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 12345678901234567890\r\n\r\n", "Content-Length is not 1*DIGIT (at most 19 digits)"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n", "Transfer-Encoding together with Content-Length"),
            (b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding in an HTTP/1.0 request"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "Transfer-Encoding's final coding is not chunked"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding's final coding is not chunked"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding lists chunked more than once"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;a=b\r\n\r\n", "Transfer-Encoding's final coding is not chunked"),
            (b"GET  / HTTP/1.1\r\n\r\n", "request-target missing or starts with an invalid byte"),
            (b"GET / HTTP/1.2\r\n\r\n", "not HTTP/1.0 or HTTP/1.1"),
            (b"\r\nGET / HTTP/1.1\r\n\r\n", "method is not a token"),
            (b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n", "invalid byte in request-target"),
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", "bare LF (line end without CR)"),
        ] {
            assert_eq!(rejected(raw).reason, reason, "{:?}", raw.escape_ascii().to_string());
        }
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for _ in 0..101 {
            many.extend_from_slice(b"a: b\r\n");
        }
        assert_eq!(rejected(&many).status, 431);
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nBig: {}\r\n\r\n", "v".repeat(MAX_HEAD_BYTES));
        assert_eq!(rejected(big.as_bytes()).status, 431);
    }

    #[test]
    fn truncated_heads_say_whether_they_are_doomed() {
        assert_eq!(request_head(b"GET / HTTP/1."), RequestVerdict::Incomplete { doomed: None });
        assert_eq!(
            request_head(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            RequestVerdict::Incomplete { doomed: None }
        );
        let doomed = request_head(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n");
        assert!(matches!(doomed, RequestVerdict::Incomplete { doomed: Some(_) }), "{doomed:?}");
        let doomed = response_head(b"HTTP/1.1 101 Switching Protocols\r\n", false);
        assert!(matches!(doomed, ResponseVerdict::Incomplete { doomed: Some(_) }), "{doomed:?}");
    }

    #[test]
    fn response_heads() {
        let framing = |raw: &[u8], is_head| match response_head(raw, is_head) {
            ResponseVerdict::Valid(response) => response.framing,
            other => panic!("{:?}: {other:?}", raw.escape_ascii().to_string()),
        };
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false), Framing::Length(5));
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true), Framing::Empty);
        assert_eq!(framing(b"HTTP/1.1 200 \r\n\r\n", false), Framing::UntilClose);
        assert_eq!(framing(b"HTTP/1.0 304 x\r\nTransfer-Encoding: chunked\r\n\r\n", false), Framing::Empty);
        assert_eq!(framing(b"HTTP/1.1 200\r\n\r\n", false), Framing::UntilClose, "no SP before no reason");
        for raw in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"[..],
            b"HTTP/1.1 099 x\r\n\r\n",
            b"HTTP/1.1 600 x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: content-length\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
        ] {
            assert!(
                matches!(response_head(raw, false), ResponseVerdict::Invalid(_)),
                "{:?}",
                raw.escape_ascii().to_string()
            );
        }
    }
}
