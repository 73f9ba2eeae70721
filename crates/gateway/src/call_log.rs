//! The record of sync calls: every answered call is written to the store, so any
//! `X-Call-Id` a caller got can be looked up with `GET /calls/{id}` (status, timings,
//! revision, cold start, log lines; no bodies). The call path only hands a small record
//! to a bounded channel; [`run`] writes them in batches, off the call path. Should the
//! writer fall behind, records are dropped and counted, never calls delayed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gust_store::SyncRecord;
use tokio::sync::{mpsc, watch};

use crate::Gateway;

/// Records waiting to be written at most; past it they are dropped (and counted).
pub const BACKLOG: usize = 16_384;
/// Records written per transaction at most.
const BATCH: usize = 1024;
/// How long the writer gathers records before it writes a partial batch.
const GATHER: Duration = Duration::from_millis(20);

/// Hands `record` to the writer; drops (and counts) it if the backlog is full.
pub fn send(gw: &Gateway, record: SyncRecord) {
    if gw.call_log.try_send(record).is_err() {
        let n = gw.calls_unrecorded.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(dropped = n, "sync call records dropped: the store is not keeping up");
        }
    }
}

/// Writes records until `shutdown` flips and the channel is drained. After the first
/// record of a batch it sleeps for `GATHER` and then takes what came meanwhile: the
/// senders wake nobody while it sleeps (waiting on each record cost a task wake-up and a
/// timer per call). After a full batch it does not sleep: more are waiting.
pub async fn run(gw: Arc<Gateway>, mut rx: mpsc::Receiver<SyncRecord>, mut shutdown: watch::Receiver<bool>) {
    let mut batch = Vec::with_capacity(BATCH);
    let (mut closing, mut full) = (false, false);
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = async { let _ = shutdown.wait_for(|s| *s).await; }, if !closing => {
                closing = true;
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { return };
        batch.push(first);
        if !closing && !full {
            tokio::select! {
                _ = tokio::time::sleep(GATHER) => {}
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {}
            }
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        full = batch.len() == BATCH;
        let rows = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
        let n = rows.len();
        if let Err(error) = gw.with_store(move |s| s.record_sync(&rows)).await {
            tracing::warn!(%error, records = n, "could not record sync calls");
        }
    }
}
