//! The app the end-to-end tests run in pods: serves HTTP, and exits when and how a test says.
//!
//! `/` says hello, `/peer` answers the client's address as this server saw it, `/slow?ms=N`
//! answers after N ms. SIGTERM exits with `--term-exit-code` (0 by default; 143 plays a sidecar
//! that dies of the signal) after `--term-delay`.
//!
//! It also plays the sidecars lameduck stops: with `--quit-listen 127.0.0.1:9091 --quit-path
//! /quitquitquit` it serves a quit endpoint as cloud-sql-proxy and Istio's pilot-agent do, where a
//! POST answers 200 and the process exits 0 right after (any other method: 405; any other path:
//! 404). It reads no environment, so a container may carry a sidecar's settings (such as
//! `CSQL_PROXY_QUITQUITQUIT=true`) for lameduck to read from the pod spec.
#![forbid(unsafe_code)]

use std::{
    convert::Infallible, net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration,
};

use bytes::Bytes;
use clap::Parser;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lameduck_api::GoDuration;
use tokio::{net::TcpListener, signal::unix::SignalKind, sync::Notify};

/// How long the process lives after an accepted quit request, so that the 200 reaches the caller.
const QUIT_LINGER: Duration = Duration::from_millis(200);

/// lameduck's test app.
#[derive(Debug, Parser)]
#[command(name = "lameduck-testapp")]
struct Args {
    /// Where to serve HTTP. A sidecar beside the app takes another port (127.0.0.1:0: any free one).
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
    /// On SIGTERM, keep serving this long before exiting with --term-exit-code.
    #[arg(long, default_value = "0s")]
    term_delay: GoDuration,
    /// The code to exit with on SIGTERM.
    #[arg(long, default_value_t = 0)]
    term_exit_code: u8,
    /// Also serve a quit endpoint here (e.g. 127.0.0.1:9091): a POST to --quit-path answers 200
    /// and the process exits 0.
    #[arg(long)]
    quit_listen: Option<SocketAddr>,
    /// The quit endpoint's path.
    #[arg(long, default_value = "/quitquitquit", requires = "quit_listen")]
    quit_path: String,
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

/// The quit endpoint's answer: 200 and a notification for a POST to `path`.
fn quit(req: &Request<Incoming>, path: &str, quitting: &Notify) -> Response<Full<Bytes>> {
    let (status, body) = if req.uri().path() != path {
        (StatusCode::NOT_FOUND, "not found\n")
    } else if req.method() != Method::POST {
        (StatusCode::METHOD_NOT_ALLOWED, "POST to quit\n")
    } else {
        quitting.notify_one();
        (StatusCode::OK, "quitting\n")
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// Serves HTTP on `listener`, each connection with `handle`.
fn serve<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else { continue };
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(req, peer));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ExitCode> {
    TcpListener::bind(addr).await.map_err(|err| {
        eprintln!("lameduck-testapp: cannot listen on {addr}: {err}");
        ExitCode::from(2)
    })
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
    let listener = match bind(args.listen).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    eprintln!("lameduck-testapp: serving on {}", listener.local_addr().unwrap_or(args.listen));
    serve(listener, respond);

    let quitting = Arc::new(Notify::new());
    if let Some(addr) = args.quit_listen {
        let listener = match bind(addr).await {
            Ok(listener) => listener,
            Err(code) => return code,
        };
        eprintln!("lameduck-testapp: POST {} on {addr} quits", args.quit_path);
        let (path, notify) = (Arc::new(args.quit_path.clone()), quitting.clone());
        serve(listener, move |req, _peer| {
            let (path, notify) = (path.clone(), notify.clone());
            async move { Ok(quit(&req, &path, &notify)) }
        });
    }

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
        () = quitting.notified() => {
            tokio::time::sleep(QUIT_LINGER).await;
            eprintln!("lameduck-testapp: POST {}, exiting 0", args.quit_path);
            ExitCode::SUCCESS
        }
        _ = term.recv() => {
            tokio::time::sleep(args.term_delay.as_std()).await;
            eprintln!("lameduck-testapp: SIGTERM, exiting {}", args.term_exit_code);
            ExitCode::from(args.term_exit_code)
        }
    }
}
