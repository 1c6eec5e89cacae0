//! Serving, draining and forced close: the proxy's lifecycle shared by every connection.
//!
//! Like Linkerd's `drain` crate, but outbound keeps accepting new connections while draining
//! (the app may still be cleaning up), so "drained" means "no connection is open right now"
//! rather than "every watcher has released".

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use tokio::sync::{Notify, watch};

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
    pub(crate) async fn drained_signal(&self) {
        let mut rx = self.draining.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Tells every connection to close now.
    pub(crate) fn force_close(&self) {
        self.forced.send_replace(true);
    }

    /// Resolves once [`Self::force_close`] has been called.
    pub(crate) async fn forced_signal(&self) {
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

    /// Resolves when no connection is open.
    pub(crate) async fn idle(&self) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_waits_for_every_guard() {
        let lifecycle = Lifecycle::new();
        let a = lifecycle.open();
        let b = lifecycle.open();
        let waiter = tokio::spawn({
            let lifecycle = Arc::clone(&lifecycle);
            async move { lifecycle.idle().await }
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
        tokio::time::timeout(Duration::from_secs(1), lifecycle.drained_signal()).await.unwrap();
        assert!(lifecycle.drain_started().is_some());
    }
}
