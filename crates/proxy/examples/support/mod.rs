//! Shared by the benchmark programs: an in-process upstream and a proxy child process.
#![allow(dead_code)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// An app that answers `hello` after `delay(n)` for its n-th request.
pub async fn upstream(delay: fn(u64) -> Duration) -> SocketAddr {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                    let wait = delay(COUNT.fetch_add(1, Ordering::Relaxed));
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The release proxy binary next to this example.
pub fn proxy_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|examples| examples.parent()).unwrap().join("lameduck-proxy")
}

pub struct ProxyChild {
    pub child: Child,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
}

pub async fn start_proxy(target: SocketAddr, extra: &[&str]) -> ProxyChild {
    let (inbound, outbound, admin) = (free_addr(), free_addr(), free_addr());
    let child = Command::new(proxy_binary())
        .args(["--inbound-addr", &inbound.to_string(), "--inbound-target", &target.to_string()])
        .args(["--outbound-addr", &outbound.to_string(), "--admin-addr", &admin.to_string()])
        .args(["--log-level", "warn"])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("build the proxy first: cargo build --release -p lameduck-proxy --bins --examples");
    for _ in 0..500 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(admin).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
            let mut head = [0u8; 12];
            if s.read_exact(&mut head).await.is_ok() && &head == b"HTTP/1.1 200" {
                return ProxyChild { child, inbound, admin };
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    panic!("proxy did not become ready");
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
