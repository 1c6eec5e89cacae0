//! Idle connections to the app, reused across client connections, newest first.

use std::{
    collections::VecDeque,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::app::{AppConnections, IdleConnections, LimitReached, Slot};

/// Read buffer of an upstream connection, kept with it: responses are read without an
/// allocation per exchange, and the pool's bound keeps the total bounded.
const READ_BUFFER: usize = 8 * 1024;

/// A connection to the app, its read buffer, and its slot of the app connection budget.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) stream: TcpStream,
    pub(crate) buf: BytesMut,
    _slot: Slot,
}

/// Why no connection could be had.
#[derive(Debug)]
pub(crate) enum CheckoutError {
    Limit(LimitReached),
    Connect(io::Error),
}

/// A bounded stack of idle upstream connections to one address.
#[derive(Debug)]
pub(crate) struct Pool {
    target: SocketAddr,
    idle: Mutex<VecDeque<(Upstream, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    slots: Arc<AppConnections>,
}

/// A connection from the pool or a new one; a reused one may turn out closed by the app.
pub(crate) struct Checkout {
    pub(crate) upstream: Upstream,
    pub(crate) reused: bool,
}

impl Pool {
    pub(crate) fn new(
        target: SocketAddr,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
        slots: Arc<AppConnections>,
    ) -> Self {
        Self { target, idle: Mutex::new(VecDeque::new()), max_idle, idle_timeout, connect_timeout, slots }
    }

    pub(crate) const fn target(&self) -> SocketAddr {
        self.target
    }

    /// The newest idle connection that still looks open, else a new one.
    pub(crate) async fn checkout(&self, allow_reuse: bool) -> Result<Checkout, CheckoutError> {
        if allow_reuse {
            while let Some(upstream) = self.pop() {
                // Readable with no request outstanding means the app closed it (or sent junk).
                match upstream.stream.try_read(&mut [0u8; 1]) {
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(Checkout { upstream, reused: true });
                    }
                    _ => {}
                }
            }
        }
        let slot = self.slots.take().map_err(CheckoutError::Limit)?;
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.target))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
            .and_then(|connected| connected)
            .map_err(CheckoutError::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(Checkout {
            upstream: Upstream { stream, buf: BytesMut::with_capacity(READ_BUFFER), _slot: slot },
            reused: false,
        })
    }

    fn pop(&self) -> Option<Upstream> {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (upstream, since) = idle.pop_back()?;
        if since.elapsed() >= self.idle_timeout {
            // The newest is too old, so all are.
            idle.clear();
            return None;
        }
        Some(upstream)
    }

    /// Returns a connection whose last exchange ended cleanly (its buffer empty).
    pub(crate) fn put(&self, upstream: Upstream) {
        debug_assert!(upstream.buf.is_empty());
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The oldest are at the front: drop those idle too long, and make room.
        while idle.front().is_some_and(|(_, since)| now.duration_since(*since) >= self.idle_timeout)
            || idle.len() >= self.max_idle
        {
            idle.pop_front();
        }
        idle.push_back((upstream, now));
    }
}

impl IdleConnections for Pool {
    fn close_oldest(&self) -> bool {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.pop_front().is_some()
    }
}
