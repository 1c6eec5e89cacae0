//! What the integration tests share: a fake proxy admin server on 127.0.0.1, a way to run
//! `lameduck-await` with a deadline, scratch directories, and polling helpers.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime},
};

use lameduck_api::names::{env, paths};

/// Long enough for a loaded 2-core machine; a passing run takes a fraction of it.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// When the fake proxy starts answering `/ready` with 200.
#[derive(Clone, Copy, Debug)]
pub enum Ready {
    /// At once.
    Now,
    /// This long after the server started.
    After(Duration),
    /// Never: 503 forever.
    Never,
}

#[derive(Debug)]
struct State {
    ready: Ready,
    started: Instant,
    started_wall: SystemTime,
    shutdown_status: u16,
    /// Leave the first `/ready` request unanswered, like a wedged admin server.
    stall_first_check: bool,
    ready_gets: AtomicUsize,
    shutdown_posts: AtomicUsize,
    /// Wall-clock instants of each 200 answer to `/ready`, for the latency bench.
    ready_answers: Mutex<Vec<SystemTime>>,
}

/// A stand-in for the proxy's admin server: `/ready` per [`Ready`], `/shutdown` with a fixed
/// status, counting both.
#[derive(Clone, Debug)]
pub struct AdminServer {
    port: u16,
    state: Arc<State>,
}

impl AdminServer {
    /// Starts on a fresh port of 127.0.0.1; `/shutdown` answers 200.
    pub fn start(ready: Ready) -> Self {
        Self::start_with(ready, 200)
    }

    /// Starts on a fresh port of 127.0.0.1; `/shutdown` answers `shutdown_status`.
    pub fn start_with(ready: Ready, shutdown_status: u16) -> Self {
        Self::serve(TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"), ready, shutdown_status)
    }

    /// Serves on an existing listener.
    pub fn serve(listener: TcpListener, ready: Ready, shutdown_status: u16) -> Self {
        Self::serve_with(listener, ready, shutdown_status, false)
    }

    /// Starts on a fresh port of 127.0.0.1, ready at once, but never answers the first `/ready`.
    pub fn start_stalling_first_check() -> Self {
        Self::serve_with(TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"), Ready::Now, 200, true)
    }

    fn serve_with(
        listener: TcpListener,
        ready: Ready,
        shutdown_status: u16,
        stall_first_check: bool,
    ) -> Self {
        let port = listener.local_addr().expect("listener address").port();
        let state = Arc::new(State {
            ready,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            shutdown_status,
            stall_first_check,
            ready_gets: AtomicUsize::new(0),
            shutdown_posts: AtomicUsize::new(0),
            ready_answers: Mutex::new(Vec::new()),
        });
        let shared = Arc::clone(&state);
        // The thread lives as long as the test binary; each connection gets its own thread.
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = Arc::clone(&shared);
                thread::spawn(move || answer(stream, &state));
            }
        });
        Self { port, state }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `GET /ready` requests so far.
    pub fn ready_gets(&self) -> usize {
        self.state.ready_gets.load(Ordering::SeqCst)
    }

    /// `POST /shutdown` requests so far.
    pub fn shutdown_posts(&self) -> usize {
        self.state.shutdown_posts.load(Ordering::SeqCst)
    }

    /// When the first 200 answer to `/ready` was about to be written.
    pub fn first_ready_answer(&self) -> Option<SystemTime> {
        self.state.ready_answers.lock().unwrap().first().copied()
    }

    /// When `/ready` turns 200, as a wall-clock instant; `None` for [`Ready::Never`].
    pub fn ready_from(&self) -> Option<SystemTime> {
        match self.state.ready {
            Ready::Now => Some(self.state.started_wall),
            Ready::After(delay) => Some(self.state.started_wall + delay),
            Ready::Never => None,
        }
    }
}

fn answer(mut stream: TcpStream, state: &State) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Skip the headers; the client sends no body.
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) && line != "\r\n" {
        line.clear();
    }
    let mut words = request_line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, body) = match (method, path) {
        ("GET", p) if p == paths::READY => {
            let earlier = state.ready_gets.fetch_add(1, Ordering::SeqCst);
            if state.stall_first_check && earlier == 0 {
                // Hold the connection open, unanswered, until the client gives up on it.
                thread::sleep(DEADLINE);
                return;
            }
            let ready = match state.ready {
                Ready::Now => true,
                Ready::After(delay) => state.started.elapsed() >= delay,
                Ready::Never => false,
            };
            if ready {
                state.ready_answers.lock().unwrap().push(SystemTime::now());
                (200, "ready\n")
            } else {
                (503, "not ready\n")
            }
        }
        ("POST", p) if p == paths::SHUTDOWN => {
            state.shutdown_posts.fetch_add(1, Ordering::SeqCst);
            match state.shutdown_status {
                200 => (200, "shutdown"),
                _ => (state.shutdown_status, ""),
            }
        }
        _ => (404, ""),
    };
    let response =
        format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    let _ = stream.write_all(response.as_bytes());
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().unwrap().port()
}

/// `lameduck-await` with a clean environment, pointed at `port`, with a short backoff.
pub fn lameduck_await(port: u16) -> Command {
    let mut command = bare_lameduck_await();
    command.args(["--port", &port.to_string(), "--backoff", "20ms"]);
    command
}

/// `lameduck-await` with none of its environment variables set, and no arguments.
pub fn bare_lameduck_await() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lameduck-await"));
    for name in [
        env::AWAIT_DISABLED,
        env::LINKERD_AWAIT_DISABLED,
        env::LINKERD_DISABLED,
        env::AWAIT_PORT,
        env::AWAIT_URI,
        env::AWAIT_BACKOFF,
        env::AWAIT_TIMEOUT,
        env::AWAIT_TIMEOUT_FATAL,
        env::AWAIT_SHUTDOWN,
        env::AWAIT_VERBOSE,
        env::LINKERD_AWAIT_VERBOSE,
    ] {
        command.env_remove(name);
    }
    command.stdin(Stdio::null());
    command
}

/// How a run ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit status.
    pub status: ExitStatus,
    /// Everything written to stderr.
    pub stderr: String,
    /// Everything written to stdout.
    pub stdout: String,
}

impl Finished {
    /// The exit code; panics when killed by a signal.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("no exit code: {:?}\nstderr:\n{}", self.status, self.stderr))
    }
}

/// A started run whose output is being collected.
#[derive(Debug)]
pub struct Running {
    /// The process.
    pub child: Child,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    stdout: Arc<Mutex<String>>,
}

/// Starts `command`, collecting stdout and stderr.
pub fn start(mut command: Command) -> Running {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn lameduck-await");
    let stderr = Arc::new(Mutex::new(String::new()));
    let stdout = Arc::new(Mutex::new(String::new()));
    let readers = vec![
        collect(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        collect(child.stdout.take().unwrap(), Arc::clone(&stdout)),
    ];
    Running { child, stderr, readers, stdout }
}

fn collect(pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut text = into.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    })
}

impl Running {
    /// Stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the exit, killing the process and failing the test after [`DEADLINE`].
    pub fn finish(mut self) -> Finished {
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("lameduck-await still running after {DEADLINE:?}; stderr:\n{}", self.stderr());
            }
            thread::sleep(Duration::from_millis(5));
        };
        for reader in self.readers.drain(..) {
            reader.join().expect("output reader");
        }
        let stderr = self.stderr();
        let stdout = self.stdout.lock().unwrap().clone();
        Finished { status, stderr, stdout }
    }
}

/// Runs `command` to the end (see [`Running::finish`]).
pub fn run(command: Command) -> Finished {
    start(command).finish()
}

/// Polls `condition` every few milliseconds until it holds; fails the test after [`DEADLINE`].
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {DEADLINE:?} waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A fresh directory under Cargo's per-target scratch space.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("await-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// `sh -c SCRIPT` as argv, for an app.
pub fn sh(script: &str) -> [String; 3] {
    ["sh".to_owned(), "-c".to_owned(), script.to_owned()]
}
