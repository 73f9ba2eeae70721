//! Busy polling (`gust up --busy-poll`): for a short while after each request, one
//! runtime thread keeps asking the kernel for ready sockets instead of going to sleep.
//!
//! Why: a proxied call adds two hops, and each hop ends with the kernel waking a sleeping
//! gust thread. On a virtual machine whose idle CPUs halt (a VM exit), that wake-up is the
//! largest part of what a hop costs: on the 2-core Firecracker VM of `BENCHMARKS.md` a
//! bare byte relay adds 76–98 µs (p50) to a call at concurrency 1, and the same relay
//! made to poll instead of sleeping (a trial, not kept) 0–45 µs. HAProxy's
//! `busy-polling` trades CPU for that latency the same way; here the spin is bounded by a
//! window after the last request, so an idle server still sleeps.
//!
//! How: a task yields in a loop. Tokio runs a yielded task again only after polling its
//! I/O driver with a zero timeout, so each turn is one `epoll_wait(…, 0)`; ready sockets
//! are served on this thread at once, and a `sched_yield` lets any other runnable thread
//! on the CPU go first. The spin is only effective when its thread is the one polling
//! the driver, so the runtime is built with one worker thread when busy polling is on
//! (`gust up` does; an idle second worker would hold the driver, asleep in it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The spin's state, shared by the request path (which extends the window) and the
/// spinning task.
#[derive(Debug)]
pub struct BusyPoll {
    /// How long after the last request the spin goes on, in nanoseconds.
    window: u64,
    /// What the nanosecond times count from.
    epoch: Instant,
    /// When the last request began or was answered, in nanoseconds since `epoch`.
    last: AtomicU64,
    /// Whether the task is spinning: while it is, a request only moves `last`.
    spinning: AtomicBool,
    /// Starts the spin.
    wake: Notify,
    /// Time spent spinning so far, in nanoseconds.
    spun: AtomicU64,
}

impl BusyPoll {
    /// Spins for `window` after each request.
    pub fn new(window: Duration) -> Self {
        Self {
            window: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            spinning: AtomicBool::new(false),
            wake: Notify::new(),
            spun: AtomicU64::new(0),
        }
    }

    /// The window and the time spent spinning so far (counted as each spin ends), for
    /// `GET /api/v1/info`.
    pub fn info(&self) -> gust_api::wire::BusyPollInfo {
        gust_api::wire::BusyPollInfo {
            window_us: self.window / 1000,
            spun_us: self.spun.load(Ordering::Relaxed) / 1000,
        }
    }

    /// A request began or was answered: spin for another window from now.
    pub fn touch(&self) {
        self.last.store(self.now(), Ordering::SeqCst);
        // Paired with `run`'s store of `false` then load of `last`: either it sees this
        // request's time and spins on, or this sees it stopped and wakes it.
        if !self.spinning.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Spins for a window after each request, forever; sleeps in between. Spawn it on
    /// the runtime that serves the requests and abort it when serving ends.
    pub async fn run(&self) {
        loop {
            self.wake.notified().await;
            self.spinning.store(true, Ordering::SeqCst);
            let began = self.now();
            loop {
                while self.recent() {
                    tokio::task::yield_now().await;
                    // Spin only on time nobody else wants: a thread of the instance
                    // runnable on this CPU goes first (Python threaded at c=64: +3–5%
                    // req/s against a spin that does not give way; c=1 latency alike).
                    std::thread::yield_now();
                }
                self.spinning.store(false, Ordering::SeqCst);
                if !self.recent() {
                    break;
                }
                // A request came between the last look and the store: go on.
                self.spinning.store(true, Ordering::SeqCst);
            }
            self.spun.fetch_add(self.now().saturating_sub(began), Ordering::Relaxed);
        }
    }

    /// Whether the last request is less than a window ago.
    fn recent(&self) -> bool {
        self.now().saturating_sub(self.last.load(Ordering::SeqCst)) < self.window
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn spins_for_a_window_after_a_request_then_sleeps() {
        let busy = std::sync::Arc::new(BusyPoll::new(Duration::from_millis(20)));
        let spinner = tokio::spawn({
            let busy = busy.clone();
            async move { busy.run().await }
        });
        tokio::task::yield_now().await;
        assert!(!busy.spinning.load(Ordering::SeqCst), "no request yet: asleep");
        busy.touch();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !busy.spinning.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "a request starts the spin");
            tokio::task::yield_now().await;
        }
        while busy.spinning.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the spin ends a window after the request");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!busy.recent(), "it stopped only once the window had passed");
        assert!(busy.info().spun_us > 0, "the spin is counted");
        spinner.abort();
    }
}
