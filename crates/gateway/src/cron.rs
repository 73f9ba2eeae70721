//! Cron triggers: [`run`] watches the clock and, each time a `[[triggers]]` schedule of
//! a function's latest ready revision comes due, stores an async call to it — so a
//! scheduled run is delivered, retried and recorded like any async call.
//!
//! Each run's call id is `cron-{function}-{trigger}-{epoch ms}`, so a run is stored once
//! even if two ticks (or a restart within the same second) see it. Runs missed while gust
//! was down are not made up, as with Knative's PingSource.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gust_api::CallId;
use gust_store::NewCall;
use tokio::sync::watch;

use crate::Gateway;

/// The longest sleep between looks at the clock, whatever the schedules say: the sleep
/// is on the monotonic clock, so this bounds how late a run is after the wall clock is
/// set forward.
const LONGEST_SLEEP: Duration = Duration::from_secs(60);
/// Runs of one trigger stored per look at most, should the loop have fallen behind.
const MAX_PER_LOOK: usize = 10;

/// Fires schedules until `shutdown` flips. It sleeps until the next run is due (or a
/// deploy or removal changes the schedules), not on a fixed tick: an idle server with
/// no schedules does not wake for them.
pub async fn run(gw: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let mut last = SystemTime::now();
    let mut changes = gw.registry.changes();
    loop {
        changes.mark_unchanged();
        let wait = next_run(&gw, last)
            .map_or(LONGEST_SLEEP, |at| at.duration_since(SystemTime::now()).unwrap_or_default())
            .min(LONGEST_SLEEP);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = changes.changed() => {}
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        }
        let now = SystemTime::now();
        let due = due_runs(&gw, last, now);
        last = now;
        if due.is_empty() {
            continue;
        }
        let n = due.len();
        let stored = gw
            .with_store(move |s| {
                for (call, max_queued) in &due {
                    match s.enqueue(call, *max_queued) {
                        // That run is skipped; the next comes at its time.
                        Err(gust_store::Error::QueueFull { function, max }) => {
                            tracing::warn!(function, max, call_id = %call.id, "scheduled run skipped: its queue is full");
                        }
                        other => {
                            other?;
                        }
                    }
                }
                Ok(())
            })
            .await;
        match stored {
            Ok(()) => {
                tracing::debug!(runs = n, "scheduled runs queued");
                gw.calls_ready.notify_one();
            }
            Err(error) => tracing::error!(%error, "could not queue scheduled runs"),
        }
    }
}

/// When the first scheduled run after `after` is due, over every function's triggers.
fn next_run(gw: &Gateway, after: SystemTime) -> Option<SystemTime> {
    gw.registry
        .all()
        .iter()
        .filter_map(|routing| routing.latest.as_ref())
        .flat_map(|revision| revision.spec.triggers.iter())
        .filter_map(|trigger| trigger.cron()?.next_after(after))
        .min()
}

/// The calls for every scheduled run in `(after, now]`, each with its function's
/// `[async] max_queued`.
fn due_runs(gw: &Gateway, after: SystemTime, now: SystemTime) -> Vec<(NewCall, u32)> {
    let mut calls = Vec::new();
    for routing in gw.registry.all() {
        let Some(revision) = routing.latest.as_ref() else { continue };
        for (i, trigger) in revision.spec.triggers.iter().enumerate() {
            let Some(schedule) = trigger.cron() else { continue };
            let mut from = after;
            for _ in 0..MAX_PER_LOOK {
                let Some(at) = schedule.next_after(from).filter(|at| *at <= now) else { break };
                from = at;
                let ms = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
                let name = revision.spec.name.as_str();
                let id = format!("cron-{name}-{i}-{ms}");
                let when = humantime::format_rfc3339_millis(at).to_string();
                let call = NewCall {
                    id: CallId::from_caller(Some(id.as_bytes())),
                    function: name.to_owned(),
                    method: "POST".to_owned(),
                    path: "/".to_owned(),
                    headers: vec![
                        ("x-gust-schedule".to_owned(), trigger.schedule.clone().unwrap_or_default()),
                        ("x-gust-scheduled-at".to_owned(), when),
                    ],
                    body: Vec::new(),
                    callback_url: None,
                };
                calls.push((call, revision.spec.delivery.max_queued));
            }
        }
    }
    calls
}
