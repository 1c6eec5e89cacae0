//! Opaque TCP: bytes copied both ways, left to finish while draining, closed at the grace deadline.

use std::{net::SocketAddr, time::Duration};

use tokio::net::TcpStream;

use crate::{
    app::AppConnections,
    lifecycle::Lifecycle,
    metrics::{Direction, Metrics},
};

/// Upstream connection timeout for opaque TCP.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Forwards an inbound opaque connection to the app. Its app connection takes a slot of the
/// budget like any other; past the limit the client connection is closed, since opaque TCP has
/// no way to say why.
pub(crate) async fn forward(
    stream: TcpStream,
    target: SocketAddr,
    slots: &AppConnections,
    direction: Direction,
    lifecycle: &Lifecycle,
    metrics: &Metrics,
) {
    let _slot = match slots.take() {
        Ok(slot) => slot,
        Err(limit) => {
            slots.refused();
            tracing::debug!(%target, %limit, "no app connection for an opaque connection; closing it");
            return;
        }
    };
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(err)) => {
            metrics.refused.with_label_values(&[direction.as_str(), "upstream"]).inc();
            tracing::debug!(%target, error = %err, "cannot reach the app for an opaque connection");
            return;
        }
        Err(_) => {
            metrics.refused.with_label_values(&[direction.as_str(), "upstream"]).inc();
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    copy_until_forced(stream, upstream, lifecycle, metrics).await;
}

/// Copies both ways until either side closes, or until the grace deadline forces a close.
pub(crate) async fn copy_until_forced<A, B>(mut a: A, mut b: B, lifecycle: &Lifecycle, metrics: &Metrics)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut a, &mut b) => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "opaque stream ended with an error");
            }
        }
        () = lifecycle.forced() => metrics.forced_closes.inc(),
    }
}
