//! The record of sync calls: every answered call is written to the store, so any
//! `X-Call-Id` a caller got can be looked up with `GET /calls/{id}` (status, timings,
//! revision, cold start, log lines; no bodies). The call path only hands a small record
//! to a bounded channel; the writer ([`start`]) writes them in batches on a thread of its
//! own. Should it fall behind, records are dropped and counted, never calls delayed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gust_store::SyncRecord;
use tokio::sync::mpsc;

use crate::Gateway;

/// Records waiting to be written at most, by default (`--call-record-backlog`); past it
/// they are dropped (and counted).
pub const BACKLOG: usize = 16_384;
/// Records written per transaction at most.
const BATCH: usize = 1024;
/// How long the writer gathers records before it writes a partial batch.
const GATHER: Duration = Duration::from_millis(20);

/// Hands `record` to the writer; drops (and counts) it if the backlog is full.
pub fn send(gw: &Gateway, record: SyncRecord) {
    if gw.call_log.try_send(Entry::Record(record)).is_err() {
        let n = gw.calls_unrecorded.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(dropped = n, "sync call records dropped: the store is not keeping up");
        }
    }
}

/// What the writer is handed: a record, or the word that no more will come.
#[derive(Debug)]
pub enum Entry {
    /// A sync call's record.
    Record(SyncRecord),
    /// Write what is waiting and stop.
    Finish,
}

/// Starts the writer on its own thread, named `gust-records`.
///
/// A thread of its own, not a task plus `spawn_blocking` per batch: the runtime's
/// workers then never wake for it (a timer per batch, a blocking-pool hand-off and the
/// wake-up back), which showed in the tail latency of calls at concurrency 1.
///
/// # Errors
/// The OS would not start a thread.
pub fn start(gw: Arc<Gateway>, rx: mpsc::Receiver<Entry>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("gust-records".into()).spawn(move || write(&gw, rx))
}

/// Writes records until [`Entry::Finish`] (or every sender is gone), then what is left.
/// After the first record of a batch it sleeps for `GATHER` and then takes what came
/// meanwhile: senders wake nobody while it sleeps. After a full batch it does not sleep:
/// more are waiting.
fn write(gw: &Gateway, mut rx: mpsc::Receiver<Entry>) {
    let mut batch = Vec::with_capacity(BATCH);
    let (mut finishing, mut full) = (false, false);
    loop {
        if !finishing {
            match rx.blocking_recv() {
                Some(Entry::Record(r)) => batch.push(r),
                Some(Entry::Finish) | None => finishing = true,
            }
            if !finishing && !full {
                std::thread::sleep(GATHER);
            }
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(Entry::Record(r)) => batch.push(r),
                Ok(Entry::Finish) => finishing = true,
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            // Finishing, and nothing is left.
            return;
        }
        full = batch.len() == BATCH;
        if let Err(error) = gw.store.record_sync(&batch) {
            tracing::warn!(%error, records = batch.len(), "could not record sync calls");
        }
        batch.clear();
        if finishing && !full {
            // Under a batch was left, so the last `try_recv` found the channel empty.
            return;
        }
    }
}
