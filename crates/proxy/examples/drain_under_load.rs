//! Benchmark: steady load through the proxy, SIGTERM mid-run. Counts requests the proxy accepted
//! that failed (must be 0) and the time from the last response to the proxy's exit.
//!
//!     cargo build --release -p lameduck-proxy --bins --examples
//!     target/release/examples/drain_under_load [connections=64] [seconds-before-sigterm=3]

#[path = "support/mod.rs"]
mod bench_support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bench_support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::net::TcpStream;

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// Sent on a connection the proxy had already answered on, no good answer: must be 0.
    failed: AtomicU64,
    /// The first request of a fresh connection reset at SIGTERM: its handshake completed in the
    /// kernel's backlog as the listener closed, so the proxy never accepted it or read a byte.
    reset_unaccepted: AtomicU64,
    refused: AtomicU64,
    /// Nanoseconds since start of the last successful response.
    last_ok_ns: AtomicU64,
}

async fn worker(
    addr: std::net::SocketAddr,
    tally: Arc<Tally>,
    start: Instant,
    stop: Arc<tokio::sync::Notify>,
) {
    loop {
        let stream = match TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(_) => {
                // Refused: the proxy is draining and no longer accepts. Not an accepted request.
                tally.refused.fetch_add(1, Ordering::Relaxed);
                stop.notified().await;
                return;
            }
        };
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
            continue;
        };
        tokio::spawn(conn);
        let mut answered_here = false;
        while sender.ready().await.is_ok() {
            let request = Request::get("/").header("host", "bench").body(Empty::<Bytes>::new()).unwrap();
            match sender.send_request(request).await {
                Ok(response) if response.status() == 200 => match response.into_body().collect().await {
                    Ok(_) => {
                        answered_here = true;
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                        tally.last_ok_ns.fetch_max(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Err(err) if !answered_here && !err.is_incomplete_message() && !err.is_canceled() => {
                    tally.reset_unaccepted.fetch_add(1, Ordering::Relaxed);
                    eprintln!("fresh connection reset at {:?}: {err}", start.elapsed());
                    break;
                }
                other => {
                    if tally.failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        let elapsed = start.elapsed();
                        match other {
                            Ok(response) => eprintln!("failed at {elapsed:?}: HTTP {}", response.status()),
                            Err(err) => eprintln!("failed at {elapsed:?}: {err}"),
                        }
                    }
                    break;
                }
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let connections: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(64);
    let before: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(3);
    raise_fd_limit();
    // Requests take 0 to 19 ms, so some are always in flight when SIGTERM arrives.
    let target = upstream(|n| Duration::from_millis(n % 20)).await;
    let mut proxy = start_proxy(target, &["--shutdown-grace-period", "30s"]).await;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(tokio::sync::Notify::new());
    let start = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(worker(proxy.inbound, Arc::clone(&tally), start, Arc::clone(&stop))))
        .collect();
    tokio::time::sleep(Duration::from_secs(before)).await;
    let sent_before = tally.ok.load(Ordering::Relaxed);
    let sigterm_at = start.elapsed();
    nix::sys::signal::kill(Pid::from_raw(proxy.child.id() as i32), Signal::SIGTERM).unwrap();
    let exit_at = loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            assert!(status.success(), "proxy exited with {status}");
            break start.elapsed();
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    };
    stop.notify_waiters();
    for worker in workers {
        let _ = tokio::time::timeout(Duration::from_secs(2), worker).await;
    }
    let last_ok = Duration::from_nanos(tally.last_ok_ns.load(Ordering::Relaxed));
    let ok = tally.ok.load(Ordering::Relaxed);
    println!(
        "drain under load: {connections} connections, {ok} requests ok ({:.0} req/s before SIGTERM), {} accepted requests failed, {} fresh connections reset before the proxy accepted them, {} connections refused after SIGTERM",
        sent_before as f64 / sigterm_at.as_secs_f64(),
        tally.failed.load(Ordering::Relaxed),
        tally.reset_unaccepted.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
    );
    let last_to_exit = if last_ok < exit_at {
        format!("{:.1} ms", (exit_at - last_ok).as_secs_f64() * 1e3)
    } else {
        // The proxy wrote its last response before exiting; this client read it after it saw the exit.
        "under the measurement's resolution (the last response was read after the exit was seen)".to_owned()
    };
    println!(
        "SIGTERM to exit: {:.1} ms; last response to exit: {last_to_exit}",
        (exit_at - sigterm_at).as_secs_f64() * 1e3,
    );
    std::process::exit(i32::from(tally.failed.load(Ordering::Relaxed) != 0));
}
