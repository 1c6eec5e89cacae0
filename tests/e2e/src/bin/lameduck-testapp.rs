//! The app the end-to-end tests run in pods: serves HTTP, and exits when and how a test says.
//!
//! `/` says hello, `/peer` answers the client's address as this server saw it, `/slow?ms=N`
//! answers after N ms. SIGTERM exits 0 (after `--term-delay`).
#![forbid(unsafe_code)]

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lameduck_api::GoDuration;
use tokio::{net::TcpListener, signal::unix::SignalKind};

/// lameduck's test app.
#[derive(Debug, Parser)]
#[command(name = "lameduck-testapp")]
struct Args {
    /// Where to serve HTTP.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Exit this long after starting (with --exit-code); serve forever when not given.
    #[arg(long)]
    exit_after: Option<GoDuration>,
    /// The code to exit with after --exit-after.
    #[arg(long, default_value_t = 0)]
    exit_code: u8,
    /// Exit 1 the first time (creating this file), then behave normally: for restartPolicy
    /// OnFailure tests. Put the file on a volume that outlives the container.
    #[arg(long)]
    fail_once_marker: Option<PathBuf>,
    /// On SIGTERM, keep serving this long before exiting 0.
    #[arg(long, default_value = "0s")]
    term_delay: GoDuration,
}

async fn respond(req: Request<Incoming>, peer: SocketAddr) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.uri().path() {
        "/peer" => peer.to_string(),
        "/slow" => {
            let ms = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            format!("slept {ms}ms")
        }
        _ => format!("hello from {}", std::env::var("HOSTNAME").unwrap_or_default()),
    };
    Ok(Response::new(Full::new(Bytes::from(body))))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(marker) = &args.fail_once_marker
        && !marker.exists()
    {
        let _ = std::fs::write(marker, b"failed once\n");
        eprintln!("lameduck-testapp: first run, failing as asked (marker {})", marker.display());
        return ExitCode::from(1);
    }
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("lameduck-testapp: cannot listen on {}: {err}", args.listen);
            return ExitCode::from(2);
        }
    };
    eprintln!("lameduck-testapp: serving on {}", args.listen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(move |req| respond(req, peer));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let exit_after = async {
        match args.exit_after {
            Some(after) => tokio::time::sleep(after.as_std()).await,
            None => std::future::pending().await,
        }
    };
    let mut term = tokio::signal::unix::signal(SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        () = exit_after => {
            eprintln!("lameduck-testapp: exiting with {} as asked", args.exit_code);
            ExitCode::from(args.exit_code)
        }
        _ = term.recv() => {
            tokio::time::sleep(args.term_delay.as_std()).await;
            eprintln!("lameduck-testapp: SIGTERM, exiting 0");
            ExitCode::SUCCESS
        }
    }
}
