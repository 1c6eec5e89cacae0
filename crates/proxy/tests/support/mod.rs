//! Test harness: the real `lameduck-proxy` binary on loopback ports, an upstream app that speaks
//! HTTP/1 and HTTP/2, a TCP echo server, and small clients. Waits poll with deadlines.
#![allow(dead_code)]

use std::{
    convert::Infallible,
    net::{SocketAddr, TcpListener as StdListener},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    let [port] = free_ports();
    port
}

/// `N` distinct ports free right now on 127.0.0.1: each stays bound until all are chosen, so the
/// kernel cannot hand out one twice.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: [StdListener; N] = std::array::from_fn(|_| StdListener::bind("127.0.0.1:0").unwrap());
    held.map(|listener| listener.local_addr().unwrap().port())
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Polls `check` until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T>(what: &str, within: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A running `lameduck-proxy` process; killed when dropped.
pub struct Proxy {
    child: Child,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    log: PathBuf,
}

impl Proxy {
    pub fn binary() -> &'static str {
        env!("CARGO_BIN_EXE_lameduck-proxy")
    }

    /// Starts the proxy in front of `target` and waits until `/ready` answers 200.
    pub async fn start(target: SocketAddr, extra: &[&str]) -> Self {
        let admin = local(free_port());
        Self::start_with_admin(target, &admin.to_string(), admin, extra).await
    }

    /// Like [`Self::start`], with the admin server bound to `admin_bind` (`0.0.0.0:N`, `[::]:N`)
    /// and reached at `admin`.
    pub async fn start_with_admin(
        target: SocketAddr,
        admin_bind: &str,
        admin: SocketAddr,
        extra: &[&str],
    ) -> Self {
        let [inbound, outbound] = loop {
            let ports = free_ports::<2>();
            if !ports.contains(&admin.port()) {
                break ports.map(local);
            }
        };
        let log = std::env::temp_dir().join(format!(
            "lameduck-proxy-test-{}-{}.log",
            std::process::id(),
            inbound.port()
        ));
        let child = Command::new(Self::binary())
            .args(["--inbound-addr", &inbound.to_string()])
            .args(["--inbound-target", &target.to_string()])
            .args(["--outbound-addr", &outbound.to_string()])
            .args(["--admin-addr", admin_bind])
            .args(["--log-level", "debug"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("lameduck-proxy starts");
        let proxy = Self { child, inbound, outbound, admin, log };
        eventually("the proxy to be ready", Duration::from_secs(10), async || {
            (get(admin, "/ready").await.ok()?.0 == 200).then_some(())
        })
        .await;
        proxy
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Waits for the process to exit, failing the test after `within`.
    pub async fn exit_within(&mut self, within: Duration) -> ExitStatus {
        eventually("the proxy to exit", within, async || self.child.try_wait().unwrap()).await
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn metrics(&self) -> String {
        get(self.admin, "/metrics").await.expect("metrics answer").1
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("proxy log:\n{}", self.logs());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A one-shot GET over a fresh HTTP/1 connection: `(status, body)`.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut conn = H1::connect(addr).await.map_err(|e| e.to_string())?;
    let response = conn.send(Request::get(path).header("host", "test").body(Empty::new()).unwrap()).await?;
    Ok((response.status, response.body))
}

/// A one-shot POST over a fresh HTTP/1 connection.
pub async fn post(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut conn = H1::connect(addr).await.map_err(|e| e.to_string())?;
    let response = conn.send(Request::post(path).header("host", "test").body(Empty::new()).unwrap()).await?;
    Ok((response.status, response.body))
}

/// What a test needs from a response.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub connection_close: bool,
    pub body: String,
}

/// One HTTP/1 client connection, for keep-alive tests.
pub struct H1 {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    pub closed: tokio::task::JoinHandle<()>,
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        let closed = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender, closed })
    }

    pub async fn send(&mut self, request: Request<Empty<Bytes>>) -> Result<Answer, String> {
        self.sender.ready().await.map_err(|e| format!("connection not ready: {e}"))?;
        let response = self.sender.send_request(request).await.map_err(|e| format!("request failed: {e}"))?;
        let connection_close = response
            .headers()
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| format!("body failed: {e}"))?.to_bytes();
        Ok(Answer { status, connection_close, body: String::from_utf8_lossy(&body).into_owned() })
    }

    pub async fn get(&mut self, path: &str) -> Result<Answer, String> {
        self.send(Request::get(path).header("host", "test").body(Empty::new()).unwrap()).await
    }
}

/// An HTTP/2 client (prior knowledge) on one connection; clones share it.
#[derive(Clone)]
pub struct H2 {
    sender: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
}

impl H2 {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        Self { sender }
    }

    /// The status a GET of `http://app{path}` gets; 0 when the request fails.
    pub async fn status(&self, path: &str) -> u16 {
        self.status_of(http::Method::GET, "app", path).await
    }

    /// The status a bodyless `method` of `http://{authority}{path}` gets; 0 when it fails.
    pub async fn status_of(&self, method: http::Method, authority: &str, path: &str) -> u16 {
        self.send(method, authority, path).await.map(|(status, _)| status).unwrap_or(0)
    }

    /// A bodyless `method` of `http://{authority}{path}`: `(status, body)`.
    pub async fn send(
        &self,
        method: http::Method,
        authority: &str,
        path: &str,
    ) -> Result<(u16, String), String> {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{authority}{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let mut sender = self.sender.clone();
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// The app behind the proxy: `/` answers at once, `/slow?ms=N` after N ms, `/hang` never; `/echo`,
/// `/headers`, `/bytes`, `/stream` and `/private-header` are described in [`app`].
/// Serves HTTP/1 and HTTP/2 (prior knowledge) on one port.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests that have reached the app (any path).
    pub received: Arc<AtomicUsize>,
    /// Connections the app has accepted.
    pub accepted: Arc<AtomicUsize>,
}

/// Accepts on a new loopback port and serves each connection with `serve` in a task of its own,
/// passing it the counter returned here; the second counter counts connections.
async fn serve_each<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>)
where
    F: Fn(TcpStream, Arc<AtomicUsize>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&received);
    let connections = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, Arc::clone(&counter)));
        }
    });
    (addr, received, accepted)
}

impl Upstream {
    pub async fn start() -> Self {
        let (addr, received, accepted) = serve_each(|stream, counter| async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                counter.fetch_add(1, Ordering::SeqCst);
                app(req)
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        })
        .await;
        Self { addr, received, accepted }
    }

    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A response body from the app: whole (with a Content-Length) or streamed (sent chunked).
type AppBody = Either<Full<Bytes>, Streamed>;

/// Routes besides `/`, `/slow`, `/hang` and `/host`:
/// - `/echo`: the request body verbatim, with `x-seen-method` and `x-seen-length` (body bytes).
/// - `/headers`: the request's header names as the app saw them, lower-case, one per line.
/// - `/bytes?n=N`: N bytes of [`pattern`], with a Content-Length.
/// - `/stream?chunks=N&size=M`: N chunks of M bytes of [`pattern`], streamed, so sent chunked.
/// - `/private-header`: `ok`, with `x-internal: 1` named in its `connection` header (hop-by-hop).
async fn app(req: Request<Incoming>) -> Result<Response<AppBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Either::Left(Full::new(Bytes::from(body))));
        *response.status_mut() = status;
        Ok(response)
    };
    match path.as_str() {
        "/echo" => {
            let method = req.method().to_string();
            let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            let mut response = Response::new(Either::Left(Full::new(body.clone())));
            response.headers_mut().insert("x-seen-method", method.parse().unwrap());
            response.headers_mut().insert("x-seen-length", body.len().into());
            Ok(response)
        }
        "/headers" => {
            let names: String = req.headers().keys().map(|name| format!("{name}\n")).collect();
            reply(StatusCode::OK, names)
        }
        "/bytes" => {
            let n = query_param(&query, "n").unwrap_or(0);
            Ok(Response::new(Either::Left(Full::new(Bytes::from(pattern(n))))))
        }
        "/stream" => {
            let chunks = query_param(&query, "chunks").unwrap_or(1);
            let size = query_param(&query, "size").unwrap_or(1);
            Ok(Response::new(Either::Right(Streamed::start(chunks, size))))
        }
        "/private-header" => {
            let mut response = Response::new(Either::Left(Full::new(Bytes::from_static(b"ok"))));
            response.headers_mut().insert("connection", "x-internal".parse().unwrap());
            response.headers_mut().insert("x-internal", "1".parse().unwrap());
            Ok(response)
        }
        "/slow" => {
            let ms: u64 = query.strip_prefix("ms=").and_then(|v| v.parse().ok()).unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            reply(StatusCode::OK, format!("slept {ms}ms"))
        }
        "/hang" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        "/host" => {
            let host = req
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
                .or_else(|| req.uri().authority().map(|a| a.to_string()))
                .unwrap_or_default();
            reply(StatusCode::OK, host)
        }
        _ => reply(StatusCode::OK, format!("hello from {path} over {:?}", req.version())),
    }
}

/// `name=N` from a query string.
fn query_param(query: &str, name: &str) -> Option<usize> {
    query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

/// `len` bytes that show a dropped, repeated or reordered stretch: byte `i` is `i % 251` (a prime,
/// so the pattern does not line up with power-of-two buffer sizes).
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A body produced by a task while it is being sent, of unknown length, so HTTP/1 sends it chunked.
pub struct Streamed(tokio::sync::mpsc::Receiver<Bytes>);

impl Streamed {
    /// `chunks` pieces of `size` bytes, continuing [`pattern`] across pieces.
    fn start(chunks: usize, size: usize) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let all = Bytes::from(pattern(chunks * size));
            for i in 0..chunks {
                if tx.send(all.slice(i * size..(i + 1) * size)).await.is_err() {
                    return;
                }
            }
        });
        Self(rx)
    }
}

impl hyper::body::Body for Streamed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut().0.poll_recv(cx).map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}

/// An app that speaks HTTP/1 by hand: on every connection it reads one request head, writes
/// `response`, and closes, whatever the response says about keep-alive.
pub struct OneShotUpstream {
    pub addr: SocketAddr,
    /// Request heads read (one per connection).
    pub received: Arc<AtomicUsize>,
}

impl OneShotUpstream {
    pub async fn start(response: &'static [u8]) -> Self {
        let (addr, received, _) = serve_each(move |mut stream, counter| async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(response).await;
            // A FIN rather than a reset: everything written reaches the proxy.
            let _ = stream.shutdown().await;
        })
        .await;
        Self { addr, received }
    }

    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

/// A TCP echo server (an opaque protocol).
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Whether a new TCP connection to `addr` is refused.
pub async fn refused(addr: SocketAddr) -> bool {
    matches!(TcpStream::connect(addr).await, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// Sends raw bytes and reads what comes back until the peer closes or `within` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], within: Duration) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_until_closed(&mut stream, within).await
}

/// Reads what the peer sends until it closes the connection or `within` passes:
/// `(bytes, closed)`.
pub async fn read_until_closed<R>(stream: &mut R, within: Duration) -> (Vec<u8>, bool)
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

/// What the recording app does with one request.
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    /// Writes these bytes (a whole response) and keeps the connection.
    Answer(&'static [u8]),
    /// Closes the connection without a word, as an app that crashed or timed it out would.
    CloseSilently,
}

/// The bytes one connection carried to the recording app.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// Everything read, in order, including any bytes after the last whole request.
    pub bytes: Vec<u8>,
    /// The whole requests read (head and body), as they arrived.
    pub requests: Vec<Vec<u8>>,
    /// The connection has ended.
    pub closed: bool,
}

/// An app that records, per connection, every byte it is sent, and answers by a script called
/// with the connection's and the request's numbers (both from 0). A request ends after its
/// Content-Length, or for a chunked one at the first `0\r\n\r\n`; the tests send it nothing
/// subtler, since what it records is the point.
pub struct RecordingApp {
    pub addr: SocketAddr,
    connections: Arc<std::sync::Mutex<Vec<Recorded>>>,
}

impl RecordingApp {
    pub async fn start(script: impl Fn(usize, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::Mutex::new(Vec::<Recorded>::new()));
        let script = Arc::new(script);
        let shared = Arc::clone(&connections);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let index = {
                    let mut all = shared.lock().unwrap();
                    all.push(Recorded::default());
                    all.len() - 1
                };
                tokio::spawn(Self::serve(stream, index, Arc::clone(&shared), Arc::clone(&script)));
            }
        });
        Self { addr, connections }
    }

    async fn serve(
        mut stream: TcpStream,
        index: usize,
        connections: Arc<std::sync::Mutex<Vec<Recorded>>>,
        script: Arc<impl Fn(usize, usize) -> Reply>,
    ) {
        let mut pending = Vec::new();
        let mut buf = [0u8; 4096];
        let mut served = 0;
        loop {
            while let Some(len) = request_len(&pending) {
                let request: Vec<u8> = pending.drain(..len).collect();
                connections.lock().unwrap()[index].requests.push(request);
                match script(index, served) {
                    Reply::Answer(response) => {
                        if stream.write_all(response).await.is_err() {
                            break;
                        }
                    }
                    Reply::CloseSilently => {
                        connections.lock().unwrap()[index].closed = true;
                        return;
                    }
                }
                served += 1;
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    connections.lock().unwrap()[index].bytes.extend_from_slice(&buf[..n]);
                    pending.extend_from_slice(&buf[..n]);
                }
            }
        }
        connections.lock().unwrap()[index].closed = true;
    }

    /// Every connection so far, in the order they were accepted.
    pub fn connections(&self) -> Vec<Recorded> {
        self.connections.lock().unwrap().clone()
    }

    /// Every byte every connection carried.
    pub fn all_bytes(&self) -> Vec<u8> {
        self.connections().into_iter().flat_map(|c| c.bytes).collect()
    }
}

/// The length of the first whole request in `bytes`, if it is all there.
fn request_len(bytes: &[u8]) -> Option<usize> {
    let head = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&bytes[..head]).to_ascii_lowercase();
    if text.contains("transfer-encoding: chunked") {
        let end = bytes[head..].windows(5).position(|w| w == b"0\r\n\r\n")?;
        return Some(head + end + 5);
    }
    let length = text
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |n| n.trim().parse::<usize>().unwrap_or(0));
    (bytes.len() >= head + length).then_some(head + length)
}

/// Fails the test unless `promtool check metrics` (Debian's prometheus package, which
/// `tests/cluster/install-deps.sh` installs) finds the exposition clean.
pub fn promtool_check_metrics(exposition: &str) {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run promtool: {e}; install Debian's prometheus package"));
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the frame-by-frame HTTP/2 app does with the second of two concurrent requests.
#[derive(Clone, Copy, Debug)]
pub enum SecondStream {
    /// Sends GOAWAY naming the first request as the last it processed, then closes.
    GoawayAfterFirst,
    /// Sends GOAWAY naming the second request (so it may have acted on it), then closes unanswered.
    GoawayAfterSecond,
    /// Resets the second request's stream with this error code and goes on serving.
    Reset(u32),
    /// Allows one stream at a time (SETTINGS_MAX_CONCURRENT_STREAMS 1), so later requests wait
    /// in the proxy; answers the first when [`H2App::release`] is called, with a GOAWAY that
    /// covers only it, and closes.
    OneAtATime,
}

/// An HTTP/2 app written frame by frame, so a test decides exactly which streams a GOAWAY or a
/// reset covers, which no real server lets a test time. Its first connection waits for two
/// requests, answers the first and treats the second as `second` says; otherwise it answers
/// every request `:status 200`, with no body.
pub struct H2App {
    pub addr: SocketAddr,
    /// Requests (HEADERS frames) each connection received, in connection order.
    pub requests: Arc<std::sync::Mutex<Vec<usize>>>,
    release: Arc<tokio::sync::Notify>,
}

/// HTTP/2 error codes (RFC 9113 section 7).
pub const REFUSED_STREAM: u32 = 0x7;
pub const INTERNAL_ERROR: u32 = 0x2;

impl H2App {
    pub async fn start(second: SecondStream) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let release = Arc::new(tokio::sync::Notify::new());
        let released = Arc::clone(&release);
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let index = {
                    let mut log = log.lock().unwrap();
                    log.push(0);
                    log.len() - 1
                };
                let second = first.then_some(second);
                first = false;
                tokio::spawn(h2_serve(stream, Arc::clone(&log), index, second, Arc::clone(&released)));
            }
        });
        Self { addr, requests, release }
    }

    /// Lets a [`SecondStream::OneAtATime`] app answer its first request.
    pub fn release(&self) {
        self.release.notify_one();
    }

    pub fn requests(&self) -> Vec<usize> {
        self.requests.lock().unwrap().clone()
    }
}

/// One HTTP/2 frame (RFC 9113 section 4.1), for clients and apps written frame by frame.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = len.to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

async fn h2_serve(
    mut stream: TcpStream,
    log: Arc<std::sync::Mutex<Vec<usize>>>,
    index: usize,
    second: Option<SecondStream>,
    release: Arc<tokio::sync::Notify>,
) {
    const HEADERS: u8 = 1;
    const RST_STREAM: u8 = 3;
    const SETTINGS: u8 = 4;
    const GOAWAY: u8 = 7;
    const END_STREAM_AND_HEADERS: u8 = 0x1 | 0x4;
    // HPACK static table entry 8: `:status 200`.
    const STATUS_200: &[u8] = &[0x88];
    let ok = |id| h2_frame(HEADERS, END_STREAM_AND_HEADERS, id, STATUS_200);
    let mut preface = [0u8; 24];
    if stream.read_exact(&mut preface).await.is_err() {
        return;
    }
    let one_at_a_time = matches!(second, Some(SecondStream::OneAtATime));
    // SETTINGS_MAX_CONCURRENT_STREAMS (0x3) = 1.
    let settings: &[u8] = if one_at_a_time { &[0, 3, 0, 0, 0, 1] } else { &[] };
    if stream.write_all(&h2_frame(SETTINGS, 0, 0, settings)).await.is_err() {
        return;
    }
    let goaway = |last: u32| {
        let mut payload = last.to_be_bytes().to_vec();
        payload.extend(0u32.to_be_bytes()); // NO_ERROR
        h2_frame(GOAWAY, 0, 0, &payload)
    };
    let mut streams = Vec::new();
    loop {
        let mut head = [0u8; 9];
        if stream.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if stream.read_exact(&mut payload).await.is_err() {
            return;
        }
        if kind == SETTINGS && flags & 1 == 0 {
            if stream.write_all(&h2_frame(SETTINGS, 1, 0, &[])).await.is_err() {
                return;
            }
            continue;
        }
        if kind != HEADERS {
            continue;
        }
        log.lock().unwrap()[index] += 1;
        streams.push(id);
        let reply = match (second, streams.len()) {
            (Some(SecondStream::OneAtATime), _) => {
                release.notified().await;
                let mut out = ok(id);
                out.extend(goaway(id));
                let _ = stream.write_all(&out).await;
                let _ = stream.shutdown().await;
                return;
            }
            (Some(_), 1) => continue,
            (Some(second), 2) => {
                let mut out = ok(streams[0]);
                match second {
                    SecondStream::GoawayAfterFirst => out.extend(goaway(streams[0])),
                    SecondStream::GoawayAfterSecond => out.extend(goaway(streams[1])),
                    SecondStream::OneAtATime => unreachable!("answered above"),
                    SecondStream::Reset(code) => {
                        out.extend(h2_frame(RST_STREAM, 0, streams[1], &code.to_be_bytes()));
                        if stream.write_all(&out).await.is_err() {
                            return;
                        }
                        continue;
                    }
                }
                let _ = stream.write_all(&out).await;
                // A FIN after the GOAWAY, as a server that finished would.
                let _ = stream.shutdown().await;
                return;
            }
            _ => ok(id),
        };
        if stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}
