//! Benchmark: RSS of an idle proxy, and with N idle keep-alive connections held open.
//!
//!     cargo build --release -p lameduck-proxy --bins --examples
//!     target/release/examples/idle_connections [N=10000]

#[path = "support/mod.rs"]
mod bench_support;

use std::time::{Duration, Instant};

use bench_support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Sends one request and reads its whole response, leaving the connection open.
async fn one_request(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n").await.is_err() {
        return false;
    }
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    // The app answers "hello\n" with a content-length; stop at the end of that body.
    while !seen.ends_with(b"hello\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    seen.starts_with(b"HTTP/1.1 200")
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    raise_fd_limit();
    let target = upstream(|_| Duration::ZERO).await;
    let mut proxy = start_proxy(target, &["--header-read-timeout", "10m"]).await;
    let pid = proxy.child.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = rss_kib(pid);

    let started = Instant::now();
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(proxy.inbound).await.expect("connect");
        assert!(one_request(&mut stream).await, "request failed after {} connections", held.len());
        held.push(stream);
    }
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = rss_kib(pid);
    // Every held connection must still work.
    let mut alive = 0;
    for stream in held.iter_mut().step_by(count.div_ceil(100).max(1)) {
        alive += usize::from(one_request(stream).await);
    }
    let sampled = held.iter().step_by(count.div_ceil(100).max(1)).count();

    println!("idle RSS: {:.1} MiB", idle as f64 / 1024.0);
    println!(
        "{count} idle keep-alive connections (opened in {:.1}s): RSS {:.1} MiB, {:.1} KiB per connection; {alive}/{sampled} sampled still answer",
        opened.as_secs_f64(),
        loaded as f64 / 1024.0,
        (loaded.saturating_sub(idle)) as f64 / count as f64,
    );
    let _ = proxy.child.kill();
}
