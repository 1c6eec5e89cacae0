//! The proxy's lifecycle, in one place: serving, draining, the HTTP/1 linger, forced close, and
//! the shutdown sequence that moves between them.
//!
//! Like Linkerd's `drain` crate, but outbound keeps accepting new connections while draining
//! (the app may still be cleaning up), so "drained" means "no connection is open right now"
//! rather than "every watcher has released". Every clock here starts when draining starts.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use lameduck_api::GoDuration;
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::{Notify, mpsc, watch},
    time::Instant,
};

/// How long after draining starts an idle HTTP/1 keep-alive connection is closed. Closing one
/// races with a client sending its next request on it; a request that arrives during the linger
/// is answered with `Connection: close` instead, which is race-free. Under steady load every
/// connection gets such a response well within this time.
pub(crate) const HTTP1_DRAIN_LINGER: Duration = Duration::from_secs(1);

/// Shared lifecycle state; cheap to clone behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    draining: watch::Sender<Option<Instant>>,
    forced: watch::Sender<bool>,
    open: AtomicUsize,
    idle: Notify,
}

/// Held by each open connection (and CONNECT tunnel); the proxy is idle when none are held.
#[derive(Debug)]
pub(crate) struct OpenGuard(Arc<Lifecycle>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Lifecycle {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            draining: watch::channel(None).0,
            forced: watch::channel(false).0,
            open: AtomicUsize::new(0),
            idle: Notify::new(),
        })
    }

    /// Starts draining; returns `false` if it had already started.
    pub(crate) fn start_drain(&self) -> bool {
        self.draining.send_if_modified(|state| {
            if state.is_some() {
                return false;
            }
            *state = Some(Instant::now());
            true
        })
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.borrow().is_some()
    }

    /// When draining started, if it has.
    pub(crate) fn drain_started(&self) -> Option<Instant> {
        *self.draining.borrow()
    }

    /// Resolves once draining has started (at once if it already has).
    pub(crate) async fn draining(&self) {
        let mut rx = self.draining.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Resolves [`HTTP1_DRAIN_LINGER`] after draining started, whenever the caller began waiting:
    /// every HTTP/1 connection closes its idle keep-alive on the same clock.
    pub(crate) async fn linger_over(&self) {
        self.draining().await;
        let started = self.drain_started().unwrap_or_else(Instant::now);
        tokio::time::sleep_until(started + HTTP1_DRAIN_LINGER).await;
    }

    /// Tells every connection to close now.
    pub(crate) fn force_close(&self) {
        self.forced.send_replace(true);
    }

    /// Resolves once [`Self::force_close`] has been called.
    pub(crate) async fn forced(&self) {
        let mut rx = self.forced.subscribe();
        let _ = rx.wait_for(|forced| *forced).await;
    }

    /// Counts a connection as open until the guard is dropped.
    pub(crate) fn open(self: &Arc<Self>) -> OpenGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenGuard(Arc::clone(self))
    }

    pub(crate) fn open_count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Resolves when no connection is open: drained.
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Register before checking, so a guard dropped in between still wakes us.
            notified.as_mut().enable();
            if self.open_count() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// The shutdown sequence: waits for a trigger, drains until nothing is open or the grace
    /// period (read when draining starts, so a settings change until then counts) is over, then
    /// closes what is left. A second signal ends it at once.
    pub(crate) async fn shut_down(
        &self,
        triggers: &mut Triggers,
        grace: impl FnOnce() -> Duration,
        draining_gauge: &prometheus::IntGauge,
    ) {
        let reason = triggers.next().await;
        self.start_drain();
        draining_gauge.set(1);
        let grace = grace();
        tracing::info!(
            reason,
            open_connections = self.open_count(),
            grace_period = %GoDuration::from(grace),
            "draining"
        );
        tokio::select! {
            () = self.drained() => {
                let elapsed = self.drain_started().map_or(0, |started| started.elapsed().as_millis() as u64);
                tracing::info!(elapsed_ms = elapsed, "drained; exiting");
            }
            () = tokio::time::sleep(grace) => {
                tracing::warn!(
                    open_connections = self.open_count(),
                    "shutdown grace period is over; closing what is still open"
                );
                self.force_close();
                // Give connection tasks a moment to observe the close and count it.
                let _ = tokio::time::timeout(Duration::from_secs(1), self.drained()).await;
            }
            _ = triggers.signal() => tracing::warn!("second signal; exiting at once"),
        }
    }
}

/// What starts the shutdown: SIGTERM, SIGINT, or an accepted `POST /shutdown`.
#[derive(Debug)]
pub(crate) struct Triggers {
    term: Signal,
    int: Signal,
    shutdown_endpoint: mpsc::Receiver<()>,
}

impl Triggers {
    pub(crate) fn new(shutdown_endpoint: mpsc::Receiver<()>) -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            shutdown_endpoint,
        })
    }

    /// The next trigger, by name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.shutdown_endpoint.recv() => "POST /shutdown",
        }
    }

    /// The next signal (a repeated `POST /shutdown` changes nothing).
    async fn signal(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn drained_waits_for_every_guard() {
        let lifecycle = Lifecycle::new();
        let a = lifecycle.open();
        let b = lifecycle.open();
        let waiter = tokio::spawn({
            let lifecycle = Arc::clone(&lifecycle);
            async move { lifecycle.drained().await }
        });
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one connection is still open");
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn drain_starts_once_and_signals_late_subscribers() {
        let lifecycle = Lifecycle::new();
        assert!(!lifecycle.is_draining());
        assert!(lifecycle.start_drain());
        assert!(!lifecycle.start_drain());
        tokio::time::timeout(Duration::from_secs(1), lifecycle.draining()).await.unwrap();
        assert!(lifecycle.drain_started().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_linger_is_timed_from_when_draining_started() {
        let lifecycle = Lifecycle::new();
        lifecycle.start_drain();
        // A connection that notices the drain late still closes on the drain's clock.
        tokio::time::advance(HTTP1_DRAIN_LINGER / 2).await;
        let began = tokio::time::Instant::now();
        lifecycle.linger_over().await;
        assert!(
            began.elapsed() <= HTTP1_DRAIN_LINGER / 2 + Duration::from_millis(5),
            "{:?}",
            began.elapsed()
        );
    }
}
