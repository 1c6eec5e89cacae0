//! Differential checks: the relay's framing ([`super::head`], [`super::body`]) against the
//! independent [`super::reference`] decoder, and, where the relay accepts, against hyper's HTTP/1
//! server run in-process. Each check takes arbitrary bytes and panics with a clear message on a
//! disagreement, so the unit tests (proptest), the corpus replay and the fuzz targets (`fuzz/`)
//! all share them. Compiled only under `cfg(test)` and `cfg(fuzzing)`.
//!
//! A disagreement is a *finding*, named by a class such as
//! `chunked: relay accepts what the reference rejects (chunk-size line: bare LF ...)`. The panic
//! message starts with `differential finding [CLASS]`. To go on past classes already known (the
//! fuzz script does, so one finding does not hide the next), name a file of classes, one a line,
//! in `LAMEDUCK_DIFFERENTIAL_ALLOW`: those are returned as [`Agreement::Tolerated`] instead; or
//! name the one class that may panic in `LAMEDUCK_DIFFERENTIAL_ONLY`. Unset, every finding panics.

use std::{
    convert::Infallible,
    fmt::{self, Write as _},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use http_body_util::BodyExt as _;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{
    body::Chunked,
    head::{self, Framing as RelayFraming, RequestPlan, ResponsePlan},
    reference::{self, Fallback, Framing, RequestVerdict, ResponseVerdict, Stop},
};

/// How a check ended, when it did not panic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Agreement {
    /// Both accept, and hyper read it the same way where it was asked.
    Accepted,
    /// Both reject; the reference's error class.
    Rejected(String),
    /// Both want more bytes.
    Incomplete,
    /// A difference the rules below allow, or a finding named in `LAMEDUCK_DIFFERENTIAL_ALLOW`.
    Tolerated(String),
}

/// The request hyper is given after a message the relay accepted: served at the right place,
/// it shows hyper found the same end.
const NEXT: &[u8] = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n";
/// The head a chunked body is sent to hyper under.
const CHUNKED_HEAD: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
/// hyper's read buffer, as `serve.rs` configures it.
const HYPER_MAX_BUF: usize = 64 * 1024;
/// The longest Content-Length body sent to hyper; longer ones skip the hyper check.
const HYPER_MAX_BODY: u64 = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Findings.

/// Whether a finding of this class is let through rather than panicking: it is named in the
/// file `LAMEDUCK_DIFFERENTIAL_ALLOW` points to, or `LAMEDUCK_DIFFERENTIAL_ONLY` names another
/// class (the fuzz script minimises a finding within its class that way). Both read once.
fn allowed(class: &str) -> bool {
    static ALLOWED: OnceLock<(Vec<String>, Option<String>)> = OnceLock::new();
    let (allowed, only) = ALLOWED.get_or_init(|| {
        let allowed = std::env::var_os("LAMEDUCK_DIFFERENTIAL_ALLOW")
            .and_then(|path| std::fs::read_to_string(path).ok())
            .map(|text| text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
            .unwrap_or_default();
        (allowed, std::env::var("LAMEDUCK_DIFFERENTIAL_ONLY").ok().filter(|only| !only.is_empty()))
    });
    allowed.iter().any(|known| known == class) || only.as_ref().is_some_and(|only| only != class)
}

/// Reports a disagreement: panics, unless the class is allowed.
#[track_caller]
fn finding(class: String, input: &[u8], details: &[(&str, String)]) -> Agreement {
    if allowed(&class) {
        return Agreement::Tolerated(class);
    }
    let mut message = format!("differential finding [{class}]\n  input:     {}\n", escape(input));
    for (name, value) in details {
        let _ = writeln!(message, "  {name:<10} {value}");
    }
    panic!("{message}");
}

/// Bytes as an escaped string, cut at 600 bytes.
pub fn escape(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(600)];
    let mut text = format!("b\"{}\"", shown.escape_ascii());
    if bytes.len() > shown.len() {
        let _ = write!(text, "... ({} bytes)", bytes.len());
    }
    text
}

/// Whether a relay that still waits for more of a head may not have judged the reference's error
/// yet. "Relay waits, reference rejects" is allowed in two narrow cases only:
///
/// 1. The error lies in the last, unterminated line (no LF at or after it): a relay that checks
///    a line once the line is whole has not seen it whole.
/// 2. The error is a line end (a bare LF, or a CR not followed by LF) and the bytes hold no end
///    of head even for a reader that takes a bare LF as a line end (no `\n\n`, no `\n\r\n`): a
///    relay that checks line ends once the head is whole (httparse, then a scan for bare LFs) has
///    no whole head yet. Once any reading finds the head's end, the relay must judge it.
///
/// Anything else, the relay has all the bytes to see and must reject. Rules about the fields as
/// a whole report the start of their line, which an LF always follows, and are no line-end
/// errors, so they are never excused.
fn not_yet_judgeable(bytes: &[u8], error: &reference::Error) -> bool {
    let in_last_line = !bytes[error.at.min(bytes.len())..].contains(&b'\n');
    let line_end_error = matches!(error.reason, reference::BARE_LF | reference::CR_WITHOUT_LF);
    let lenient_end = bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n");
    in_last_line || (line_end_error && !lenient_end)
}

fn framing(relay: RelayFraming) -> Framing {
    match relay {
        RelayFraming::Empty => Framing::Empty,
        RelayFraming::Length(n) => Framing::Length(n),
        RelayFraming::Chunked => Framing::Chunked,
        RelayFraming::UntilClose => Framing::UntilClose,
    }
}

/// A 64-bit FNV-1a hash, for split positions that depend on the input alone.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

// ---------------------------------------------------------------------------------------------
// Chunked bodies.

/// The relay's answer on a chunked body.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RelayBody {
    /// The body is the first this many bytes.
    Done(usize),
    /// Everything given was accepted as body; more is needed.
    Waiting,
    Rejected(String),
}

/// Feeds the pieces to one `Chunked`, as reads would come.
fn relay_chunked<'a>(input: &[u8], pieces: impl IntoIterator<Item = &'a [u8]>) -> RelayBody {
    let mut chunked = Chunked::new();
    let mut offset = 0;
    for piece in pieces {
        match chunked.advance(piece) {
            Err(err) => return RelayBody::Rejected(err.to_string()),
            Ok(used) if chunked.is_done() => return RelayBody::Done(offset + used),
            Ok(used) if used != piece.len() => {
                finding(
                    "chunked: relay took part of a read without ending the body".into(),
                    input,
                    &[("piece", escape(piece)), ("taken", used.to_string())],
                );
                offset += used;
            }
            Ok(used) => offset += used,
        }
    }
    RelayBody::Waiting
}

/// The relay's `Chunked` (fed whole, a byte at a time, and cut at three places that depend on
/// the input) against the reference; where the relay finds the end, hyper must read the same
/// body and find the same end.
pub fn check_chunked(bytes: &[u8]) -> Agreement {
    let relay = relay_chunked(bytes, [bytes]);
    let hash = fnv1a(bytes);
    let mut cuts = [0, 21, 42].map(|shift| ((hash >> shift) % (bytes.len() as u64 + 1)) as usize);
    cuts.sort_unstable();
    let pieces = [&bytes[..cuts[0]], &bytes[cuts[0]..cuts[1]], &bytes[cuts[1]..cuts[2]], &bytes[cuts[2]..]];
    for (how, answer) in
        [("a byte at a time", relay_chunked(bytes, bytes.chunks(1))), ("cut", relay_chunked(bytes, pieces))]
    {
        if answer != relay {
            return finding(
                "chunked: relay's answer depends on how the input is split into reads".into(),
                bytes,
                &[
                    ("whole", format!("{relay:?}")),
                    (how, format!("{answer:?}")),
                    ("cuts", format!("{cuts:?}")),
                ],
            );
        }
    }
    let reference = reference::decode_chunked(bytes);
    let said = match &reference {
        Ok(decoded) => format!(
            "Complete {{ len: {}, data: {} bytes, trailers: {} in {} bytes }}",
            decoded.len,
            decoded.data.len(),
            decoded.trailers.len(),
            decoded.trailer_bytes
        ),
        Err(stop) => format!("{stop:?}"),
    };
    let details = |hyper: Option<String>| {
        let mut details = vec![("relay", format!("{relay:?}")), ("reference", said.clone())];
        details.extend(hyper.map(|hyper| ("hyper", hyper)));
        details
    };
    match (&relay, &reference) {
        (RelayBody::Done(end), Ok(decoded)) if *end == decoded.len => {
            check_chunked_with_hyper(bytes, decoded)
        }
        (RelayBody::Done(_), Ok(_)) => {
            finding("chunked: relay ends the body elsewhere than the reference".into(), bytes, &details(None))
        }
        (RelayBody::Done(_), Err(Stop::Incomplete)) => {
            finding("chunked: relay ends a body the reference says goes on".into(), bytes, &details(None))
        }
        (RelayBody::Done(_) | RelayBody::Waiting, Err(Stop::Invalid(error))) => finding(
            format!("chunked: relay accepts what the reference rejects ({})", error.class()),
            bytes,
            &details(Some(hyper_on_chunked(bytes))),
        ),
        (RelayBody::Waiting, Err(Stop::Incomplete)) => Agreement::Incomplete,
        (RelayBody::Waiting, Ok(_)) => {
            finding("chunked: relay reads on past the end of a complete body".into(), bytes, &details(None))
        }
        (RelayBody::Rejected(_), Err(Stop::Invalid(error))) => Agreement::Rejected(error.class()),
        (RelayBody::Rejected(why), Err(Stop::Incomplete)) => {
            finding(format!("chunked: relay rejects a valid prefix ({why})"), bytes, &details(None))
        }
        (RelayBody::Rejected(why), Ok(_)) => {
            finding(format!("chunked: relay rejects a valid body ({why})"), bytes, &details(None))
        }
    }
}

/// hyper's limits on chunked bodies, which the relay does not share: a rejection for one of them
/// is hyper's choice, not a framing disagreement (hyper closes the connection; nothing desyncs).
fn beyond_hyper_limits(decoded: &reference::Decoded) -> bool {
    const HYPER_TRAILER_BYTES: usize = 16 * 1024;
    const HYPER_TRAILER_FIELDS: usize = 100;
    const HYPER_EXTENSION_BYTES: usize = 16 * 1024;
    decoded.trailers.len() > HYPER_TRAILER_FIELDS
        || (!decoded.trailers.is_empty() && decoded.trailer_bytes + 2 >= HYPER_TRAILER_BYTES)
        || decoded.ext_bytes_after_semicolon >= HYPER_EXTENSION_BYTES
}

fn check_chunked_with_hyper(bytes: &[u8], decoded: &reference::Decoded) -> Agreement {
    let served = hyper_serves(&[CHUNKED_HEAD, &bytes[..decoded.len], NEXT].concat(), 2);
    let body_read = served.requests.first().is_some_and(|first| first.body.as_deref() == Ok(&decoded.data));
    let next_found = served.requests.get(1).is_some_and(|next| next.target == "/next");
    if body_read && next_found {
        return Agreement::Accepted;
    }
    if beyond_hyper_limits(decoded) {
        return Agreement::Tolerated("hyper's own limits on trailers and chunk extensions".into());
    }
    finding(
        "chunked: hyper does not read the body the relay accepts as the reference does".into(),
        bytes,
        &[
            ("reference", format!("{} bytes, data {}", decoded.len, escape(&decoded.data))),
            ("hyper", format!("{:?}", served.requests)),
            ("hyper end", format!("{:?}", served.error)),
        ],
    )
}

/// What hyper makes of the bytes as a chunked body, for messages.
fn hyper_on_chunked(bytes: &[u8]) -> String {
    format!("{:?}", hyper_serves(&[CHUNKED_HEAD, bytes, NEXT].concat(), 2))
}

/// Whether hyper reads `bytes` (followed by a request) as a complete chunked body: the
/// leniency of hyper where the reference rejects, for the report.
pub fn hyper_accepts_chunked(bytes: &[u8]) -> bool {
    let served = hyper_serves(&[CHUNKED_HEAD, bytes, NEXT].concat(), 2);
    served.requests.first().is_some_and(|first| first.body.is_ok())
}

// ---------------------------------------------------------------------------------------------
// Request heads.

/// The relay's `head::request` against the reference: it must never carry or hand on what the
/// reference rejects or has not seen the end of, never reject what the reference accepts (with
/// 431 where the reference says 431), find the same end and framing, fall back exactly on the
/// fallback kinds, and write a head for the app that the reference frames the same way. Where
/// the relay accepts, hyper's server must serve the same method and target, and find the next
/// request where the relay does.
pub fn check_request_head(bytes: &[u8]) -> Agreement {
    let mut out = Vec::new();
    let relay = head::request(bytes, &mut out);
    let reference = reference::request_head(bytes);
    let details = || vec![("relay", format!("{relay:?}")), ("reference", format!("{reference:?}"))];
    match (&relay, &reference) {
        (RequestPlan::Partial, RequestVerdict::Incomplete { .. }) => Agreement::Incomplete,
        (RequestPlan::Partial, RequestVerdict::Invalid(error)) if not_yet_judgeable(bytes, error) => {
            Agreement::Tolerated("request: relay waits to judge a line it has not seen whole".into())
        }
        (RequestPlan::Partial, RequestVerdict::Invalid(error)) => finding(
            format!("request: relay waits where the reference rejects ({})", error.class()),
            bytes,
            &details(),
        ),
        (RequestPlan::Partial, RequestVerdict::Valid(_)) => {
            finding("request: relay waits for more of a complete head".into(), bytes, &details())
        }
        // Both refuse and nothing is forwarded. A head with a syntax error and too many field
        // lines gets 400 or 431 by which one each parser meets first (httparse counts lines
        // before it sees a bare LF); the status is not part of the framing.
        (RequestPlan::Reject(..), RequestVerdict::Invalid(error)) => Agreement::Rejected(error.class()),
        (RequestPlan::Reject(..), RequestVerdict::Incomplete { doomed: Some(_) }) => {
            Agreement::Tolerated("request: relay rejects early a head its field lines already doom".into())
        }
        (RequestPlan::Reject(status, why), RequestVerdict::Incomplete { .. }) => finding(
            format!("request: relay rejects a head that may yet be valid ({status} {})", why.trim()),
            bytes,
            &details(),
        ),
        (RequestPlan::Reject(status, why), RequestVerdict::Valid(_)) => finding(
            format!("request: relay rejects a valid head ({status} {})", why.trim()),
            bytes,
            &details(),
        ),
        (RequestPlan::Relay(_) | RequestPlan::Fallback, RequestVerdict::Invalid(error)) => finding(
            format!("request: relay accepts what the reference rejects ({})", error.class()),
            bytes,
            &details(),
        ),
        (RequestPlan::Relay(_) | RequestPlan::Fallback, RequestVerdict::Incomplete { .. }) => {
            finding("request: relay accepts an incomplete head".into(), bytes, &details())
        }
        (RequestPlan::Relay(head), RequestVerdict::Valid(request)) => {
            if !request.fallback.is_empty() {
                return finding(
                    format!("request: relay carries what it should hand to hyper ({:?})", request.fallback),
                    bytes,
                    &details(),
                );
            }
            if head.len != request.len || framing(head.framing) != request.framing {
                return finding(
                    "request: relay finds another end or framing than the reference".into(),
                    bytes,
                    &details(),
                );
            }
            check_rewritten_request(bytes, &out, request);
            check_request_with_hyper(bytes, request)
        }
        (RequestPlan::Fallback, RequestVerdict::Valid(request)) if request.fallback.is_empty() => {
            finding("request: relay hands to hyper what it should carry".into(), bytes, &details())
        }
        (RequestPlan::Fallback, RequestVerdict::Valid(request)) => check_request_with_hyper(bytes, request),
    }
}

/// The head the relay writes for the app must be one the reference frames as the client's.
fn check_rewritten_request(bytes: &[u8], out: &[u8], request: &reference::Request) {
    let same = match reference::request_head(out) {
        RequestVerdict::Valid(rewritten) => {
            rewritten.len == out.len()
                && rewritten.framing == request.framing
                && rewritten.method == request.method
                && rewritten.target == request.target
                && rewritten.fallback.is_empty()
        }
        _ => false,
    };
    if !same {
        finding(
            "request: the head written for the app is framed otherwise than the client's".into(),
            bytes,
            &[("written", escape(out)), ("as read", format!("{:?}", reference::request_head(out)))],
        );
    }
}

fn check_request_with_hyper(bytes: &[u8], request: &reference::Request) -> Agreement {
    // The body sent after the head, and what hyper should read of it.
    let (sent, body) = match request.framing {
        Framing::Empty => (Vec::new(), Vec::new()),
        Framing::Length(n) if n <= HYPER_MAX_BODY => (vec![b'b'; n as usize], vec![b'b'; n as usize]),
        Framing::Length(_) => return Agreement::Accepted,
        Framing::Chunked => (b"1\r\nb\r\n0\r\n\r\n".to_vec(), b"b".to_vec()),
        Framing::UntilClose => unreachable!("requests are never close-delimited"),
    };
    let next_expected = request.keep_alive
        && !request.fallback.iter().any(|kind| matches!(kind, Fallback::Upgrade | Fallback::Connect));
    let served = hyper_serves(&[&bytes[..request.len], &sent, NEXT].concat(), 1 + usize::from(next_expected));
    let target = String::from_utf8_lossy(&request.target);
    // hyper drops a fragment from the target; `#` is not allowed in origin-form anyway.
    let target = target.split('#').next().unwrap_or_default();
    let origin_form = !request.fallback.contains(&Fallback::NotOriginForm);
    let first_ok = served.requests.first().is_some_and(|first| {
        first.method.as_bytes() == request.method
            && (!origin_form || first.target == target)
            && first.body.as_deref() == Ok(&body)
    });
    if !first_ok && http::Uri::try_from(request.target.as_slice()).is_err() {
        // hyper's URI parser (the `http` crate) is stricter than RFC 9112's grammar: it refuses
        // `<`, `>`, `` ` ``, `"` in a query, and obs-text that is not UTF-8. hyper answers 400.
        return Agreement::Tolerated("request: hyper's URI parser rejects the target".into());
    }
    if !first_ok && has_empty_transfer_coding(&bytes[..request.len]) {
        // hyper takes the last comma-separated element of Transfer-Encoding as the final coding,
        // empty or not, so `chunked,` is a 400 there; RFC 9110 section 5.6.1 says to ignore
        // empty elements. The relay writes `transfer-encoding: chunked` for the app anyway.
        return Agreement::Tolerated(
            "request: hyper does not ignore an empty Transfer-Encoding element".into(),
        );
    }
    let next_ok = !next_expected || served.requests.get(1).is_some_and(|next| next.target == "/next");
    if first_ok && next_ok {
        return Agreement::Accepted;
    }
    finding(
        "request: hyper does not serve the head the relay accepts as the reference reads it".into(),
        bytes,
        &[
            ("reference", format!("{request:?}")),
            ("hyper", format!("{:?}", served.requests)),
            ("hyper end", format!("{:?}", served.error)),
        ],
    )
}

/// Whether a Transfer-Encoding field line of a head lists an empty element (`chunked,`).
fn has_empty_transfer_coding(head: &[u8]) -> bool {
    head.split(|byte| *byte == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|byte| *byte == b':')?;
            line[..colon].eq_ignore_ascii_case(b"transfer-encoding").then(|| line[colon + 1..].trim_ascii())
        })
        .any(|value| value.split(|byte| *byte == b',').any(|element| element.trim_ascii().is_empty()))
}

/// Whether hyper's server serves a request from these bytes: its leniency where the reference
/// rejects, for the report.
pub fn hyper_accepts_request(bytes: &[u8]) -> bool {
    !hyper_serves(bytes, 1).requests.is_empty()
}

// ---------------------------------------------------------------------------------------------
// Response heads.

/// The relay's `head::response` against the reference, for the response to a HEAD request and to
/// any other: the same rules as for requests, with `Invalid` (a 502) in place of `Reject`.
pub fn check_response_head(bytes: &[u8]) -> Agreement {
    check_response_head_for(bytes, true);
    check_response_head_for(bytes, false)
}

fn check_response_head_for(bytes: &[u8], is_head: bool) -> Agreement {
    let mut out = Vec::new();
    let relay = head::response(bytes, is_head, false, &mut out);
    let reference = reference::response_head(bytes, is_head);
    let details = || {
        vec![
            ("relay", format!("{relay:?}")),
            ("reference", format!("{reference:?}")),
            ("HEAD", is_head.to_string()),
        ]
    };
    match (&relay, &reference) {
        (ResponsePlan::Partial, ResponseVerdict::Incomplete { .. }) => Agreement::Incomplete,
        (ResponsePlan::Partial, ResponseVerdict::Invalid(error)) if not_yet_judgeable(bytes, error) => {
            Agreement::Tolerated("response: relay waits to judge a line it has not seen whole".into())
        }
        (ResponsePlan::Partial, ResponseVerdict::Invalid(error)) => finding(
            format!("response: relay waits where the reference rejects ({})", error.class()),
            bytes,
            &details(),
        ),
        (ResponsePlan::Partial, ResponseVerdict::Valid(_)) => {
            finding("response: relay waits for more of a complete head".into(), bytes, &details())
        }
        (ResponsePlan::Invalid(_), ResponseVerdict::Invalid(error)) => Agreement::Rejected(error.class()),
        (ResponsePlan::Invalid(_), ResponseVerdict::Incomplete { doomed: Some(_) }) => {
            Agreement::Tolerated("response: relay rejects early a head already doomed".into())
        }
        (ResponsePlan::Invalid(why), ResponseVerdict::Incomplete { doomed: None }) => finding(
            format!("response: relay rejects a head that may yet be valid ({why})"),
            bytes,
            &details(),
        ),
        (ResponsePlan::Invalid(why), ResponseVerdict::Valid(_)) => {
            finding(format!("response: relay rejects a valid head ({why})"), bytes, &details())
        }
        (ResponsePlan::Relay(_), ResponseVerdict::Invalid(error)) => finding(
            format!("response: relay accepts what the reference rejects ({})", error.class()),
            bytes,
            &details(),
        ),
        (ResponsePlan::Relay(_), ResponseVerdict::Incomplete { .. }) => {
            finding("response: relay accepts an incomplete head".into(), bytes, &details())
        }
        (ResponsePlan::Relay(head), ResponseVerdict::Valid(response)) => {
            if head.len != response.len
                || head.status != response.status
                || framing(head.framing) != response.framing
            {
                return finding(
                    "response: relay finds another end, status or framing than the reference".into(),
                    bytes,
                    &details(),
                );
            }
            let same = match reference::response_head(&out, is_head) {
                ResponseVerdict::Valid(rewritten) => {
                    rewritten.len == out.len()
                        && rewritten.status == response.status
                        && rewritten.framing == response.framing
                }
                // The relay may add `transfer-encoding` and `connection: close` lines, so a
                // head at the 100-line limit is over it as written: a client's limit is its own
                // and frames nothing.
                ResponseVerdict::Invalid(error) => {
                    error.status == 431 && error.reason == "more than 100 field lines"
                }
                _ => false,
            };
            if !same {
                return finding(
                    "response: the head written for the client is framed otherwise than the app's".into(),
                    bytes,
                    &[
                        ("written", escape(&out)),
                        ("as read", format!("{:?}", reference::response_head(&out, is_head))),
                        ("HEAD", is_head.to_string()),
                    ],
                );
            }
            Agreement::Accepted
        }
    }
}

// ---------------------------------------------------------------------------------------------
// hyper's HTTP/1 server, in-process.

/// What hyper's server made of a connection's bytes.
#[derive(Debug, Default)]
struct Served {
    requests: Vec<ServedRequest>,
    /// How the connection ended, if not cleanly.
    error: Option<String>,
}

struct ServedRequest {
    method: String,
    target: String,
    body: Result<Vec<u8>, String>,
}

impl fmt::Debug for ServedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = match &self.body {
            Ok(body) => format!("Ok({})", escape(body)),
            Err(err) => format!("Err({err})"),
        };
        write!(f, "{} {} body {body}", self.method, self.target)
    }
}

thread_local! {
    /// One runtime per thread: building one per input would cost more than the check. (Test
    /// and fuzzing code only.)
    #[allow(clippy::expect_used)]
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
}

/// Serves one connection that sends `input`, answering every request with an empty 200 after
/// reading its body, and closes its write side once `expected` requests are served or hyper
/// stops making progress.
fn hyper_serves(input: &[u8], expected: usize) -> Served {
    RUNTIME.with(|runtime| runtime.block_on(serve(input, expected)))
}

async fn serve(input: &[u8], expected: usize) -> Served {
    let (client, server) = tokio::io::duplex(HYPER_MAX_BUF);
    let log = Arc::new(Mutex::new(Vec::new()));
    // Body frames and requests seen, response bytes read: how the send side sees hyper is busy.
    let progress = Arc::new(AtomicUsize::new(0));
    let service = {
        let (log, progress) = (Arc::clone(&log), Arc::clone(&progress));
        service_fn(move |request: http::Request<Incoming>| {
            let (log, progress) = (Arc::clone(&log), Arc::clone(&progress));
            async move {
                let method = request.method().to_string();
                let target = request.uri().to_string();
                let mut incoming = request.into_body();
                let mut data = Vec::new();
                let body = loop {
                    progress.fetch_add(1, Ordering::Relaxed);
                    match incoming.frame().await {
                        None => break Ok(data),
                        Some(Ok(frame)) => {
                            if let Ok(chunk) = frame.into_data() {
                                data.extend_from_slice(&chunk);
                            }
                        }
                        Some(Err(err)) => break Err(err.to_string()),
                    }
                };
                log.lock().unwrap_or_else(|e| e.into_inner()).push(ServedRequest { method, target, body });
                Ok::<_, Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
            }
        })
    };
    let connection =
        http1::Builder::new().max_buf_size(HYPER_MAX_BUF).serve_connection(TokioIo::new(server), service);
    let (mut read, mut write) = tokio::io::split(client);
    let served = || log.lock().unwrap_or_else(|e| e.into_inner()).len();
    let send = async {
        let _ = write.write_all(input).await;
        // hyper reads ahead: an end of input it sees while a pipelined request is still in its
        // buffer ends the connection before that request. So the write side closes only once the
        // requests expected are served, or hyper has made no progress for many polls (all of it
        // is in memory, on this one task: it then waits for bytes that will not come).
        let mut last = usize::MAX;
        let mut unchanged = 0;
        while unchanged < 64 && served() < expected {
            tokio::task::yield_now().await;
            let now = progress.load(Ordering::Relaxed);
            unchanged = if now == last { unchanged + 1 } else { 0 };
            last = now;
        }
        let _ = write.shutdown().await;
    };
    let drain = async {
        let mut buf = [0; 4096];
        while let Ok(n @ 1..) = read.read(&mut buf).await {
            progress.fetch_add(n, Ordering::Relaxed);
        }
    };
    let all = async { tokio::join!(connection, send, drain).0 };
    let error = match tokio::time::timeout(Duration::from_secs(10), all).await {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(err.to_string()),
        Err(_) => Some("hyper did not finish within 10 s".into()),
    };
    let requests = std::mem::take(&mut *log.lock().unwrap_or_else(|e| e.into_inner()));
    Served { requests, error }
}

#[cfg(test)]
mod tests;
