//! Calls in the store: every async call is written here before it is acknowledged, and
//! its status, attempts and result are kept as it is delivered, so nothing accepted is
//! lost by a crash. After a restart, calls that were running are queued again: delivery
//! is at least once, and a repeated attempt shows as one more in `attempts`.

use gust_api::CallId;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, now_ms, sync_calls};
use crate::{Error, Result};

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatus {
    /// Accepted, waiting for its (next) attempt.
    Queued,
    /// An attempt is running.
    Running,
    /// The function answered with a 1xx–3xx status.
    Succeeded,
    /// The function answered with a 4xx that retrying cannot change.
    Failed,
    /// Out of attempts or too old: dead-lettered, until redriven or purged.
    Dead,
}

impl CallStatus {
    /// How it is stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Queued => "queued",
            CallStatus::Running => "running",
            CallStatus::Succeeded => "succeeded",
            CallStatus::Failed => "failed",
            CallStatus::Dead => "dead",
        }
    }

    /// The status stored as `text`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "queued" => CallStatus::Queued,
            "running" => CallStatus::Running,
            "succeeded" => CallStatus::Succeeded,
            "failed" => CallStatus::Failed,
            "dead" => CallStatus::Dead,
            _ => return None,
        })
    }
}

/// An async call as accepted.
#[derive(Debug, Clone)]
pub struct NewCall {
    /// Its id, given to the caller.
    pub id: CallId,
    /// The function called.
    pub function: String,
    /// The request: method, path (with query) as the function sees it, headers (name,
    /// value) and body.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Where to POST the result once it is final.
    pub callback_url: Option<String>,
}

/// A call as stored.
#[derive(Debug, Clone)]
pub struct StoredCall {
    /// The call as accepted.
    pub call: NewCall,
    /// Where it stands.
    pub status: CallStatus,
    /// Attempts begun so far.
    pub attempts: u32,
    /// When it was accepted (ms since the epoch).
    pub accepted_ms: i64,
    /// When its age counts from: acceptance, or its latest redrive.
    pub age_from_ms: i64,
    /// When its latest attempt began.
    pub started_ms: Option<i64>,
    /// When it became final.
    pub ended_ms: Option<i64>,
    /// The revision of the latest attempt.
    pub revision: Option<String>,
    /// Whether the latest attempt waited for an instance to start.
    pub cold_start: Option<bool>,
    /// The function's answer to the latest attempt: status, headers, body.
    pub result: Option<CallResult>,
    /// What went wrong with the latest attempt, when it did not answer.
    pub error: Option<String>,
}

/// A function's answer.
#[derive(Debug, Clone)]
pub struct CallResult {
    /// HTTP status.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// A sync call as it is recorded once answered: no request or answer body is kept. Its
/// id, when gust made it, was made at `arrived_ms` ([`CallId::generate_at`]): that is
/// how it is found again.
#[derive(Debug, Clone)]
pub struct SyncRecord {
    /// Its id (the `X-Call-Id` of its answer).
    pub id: CallId,
    /// The function called. Shared, as the method is borrowed where it can be: a record
    /// is made on the call path and freed on the writer's thread, and each allocation
    /// freed there contends for the allocator's lock of the thread that made it.
    pub function: std::sync::Arc<str>,
    /// The method as called.
    pub method: std::borrow::Cow<'static, str>,
    /// Path and query.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// gust's error message, when gust answered instead of the function.
    pub error: Option<String>,
    /// When it arrived and when its answer began (ms since the epoch).
    pub arrived_ms: i64,
    /// When its answer began.
    pub answered_ms: i64,
    /// The number of the function's revision it ran on.
    pub revision: Option<u32>,
    /// Whether it waited for an instance to start.
    pub cold_start: Option<bool>,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct Attempted {
    /// The revision it ran on, if it got that far.
    pub revision: Option<String>,
    /// Whether it waited for an instance to start.
    pub cold_start: Option<bool>,
    /// The answer, if there was one.
    pub result: Option<CallResult>,
    /// What went wrong, if there was no answer.
    pub error: Option<String>,
    /// What happens next: `Some(due)` queues it again for then; `None` makes `status` final.
    pub retry_at_ms: Option<i64>,
    /// The final status, when `retry_at_ms` is `None`.
    pub status: CallStatus,
}

const COLUMNS: &str = "id, function, method, path, headers_json, body, callback_url, status, attempts, accepted_ms, \
     age_from_ms, started_ms, ended_ms, revision, cold_start, result_status, result_headers_json, result_body, error";

impl Store {
    /// Records an accepted async call, queued and due now. It is on disk (in the WAL)
    /// when this returns, so the caller may acknowledge it. A call id already taken by
    /// a call of the same function is the caller retrying its request: nothing changes
    /// and the answer is `false`.
    ///
    /// # Errors
    /// [`Error::CallIdTaken`] when another function's call has the id,
    /// [`Error::Database`].
    pub fn enqueue(&self, call: &NewCall, max_pending: u32) -> Result<bool> {
        let conn = self.lock();
        // A retry of a stored call is answered as one, full queue or not.
        let owner: Option<String> = match conn
            .query_row("SELECT function FROM calls WHERE id = ?1", params![call.id.as_str()], |r| r.get(0))
            .optional()
            .map_err(Error::db("read call"))?
        {
            Some(owner) => Some(owner),
            None => sync_calls::find(&conn, call.id.as_str())?.map(|c| c.call.function),
        };
        match owner {
            Some(owner) if owner == call.function => return Ok(false),
            Some(_) => return Err(Error::CallIdTaken { id: call.id.to_string() }),
            None => {}
        }
        check_room(&conn, &call.function, max_pending, 1)?;
        insert(&conn, call, now_ms(), "").map_err(Error::db("record call"))?;
        Ok(true)
    }

    /// Records several accepted calls in one transaction (the deliveries of one event):
    /// all are on disk when this returns, or none is.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn enqueue_all(&self, calls: &[NewCall], max_pending: impl Fn(&str) -> u32) -> Result<()> {
        let now = now_ms();
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::db("begin enqueue"))?;
        let mut by_function: std::collections::BTreeMap<&str, u32> = std::collections::BTreeMap::new();
        for call in calls {
            *by_function.entry(call.function.as_str()).or_default() += 1;
        }
        for (function, n) in by_function {
            check_room(&tx, function, max_pending(function), n)?;
        }
        for call in calls {
            insert(&tx, call, now, "").map_err(Error::db("record call"))?;
        }
        tx.commit().map_err(Error::db("commit enqueue"))
    }

    /// Records answered sync calls, in one transaction: `succeeded` below status 400,
    /// `failed` from it. An id already recorded (a caller reusing its `X-Call-Id`) keeps
    /// its first record.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn record_sync(&self, calls: &[SyncRecord]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::db("begin call records"))?;
        sync_calls::record(&tx, calls)?;
        tx.commit().map_err(Error::db("commit call records"))
    }

    /// Takes the due queued calls, oldest due first, that `take` accepts (it is asked per
    /// call with the function's name, and counts what it accepts), and marks them running
    /// with one more attempt, in one transaction.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn claim(&self, now: i64, mut take: impl FnMut(&str) -> bool) -> Result<Vec<StoredCall>> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::db("begin claim"))?;
        let due: Vec<StoredCall> = {
            let mut stmt = tx
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM calls WHERE status = 'queued' AND next_ms <= ?1 ORDER BY next_ms LIMIT 512"
                ))
                .map_err(Error::db("read due calls"))?;
            let rows = stmt.query_map(params![now], row_call).map_err(Error::db("read due calls"))?;
            rows.collect::<rusqlite::Result<_>>().map_err(Error::db("read due calls"))?
        };
        let mut claimed = Vec::new();
        for mut c in due {
            if !take(&c.call.function) {
                continue;
            }
            tx.execute(
                "UPDATE calls SET status = 'running', attempts = attempts + 1, started_ms = ?2 WHERE id = ?1",
                params![c.call.id.as_str(), now],
            )
            .map_err(Error::db("claim call"))?;
            c.status = CallStatus::Running;
            c.attempts += 1;
            c.started_ms = Some(now);
            claimed.push(c);
        }
        tx.commit().map_err(Error::db("commit claim"))?;
        Ok(claimed)
    }

    /// When the earliest queued call is due (ms since the epoch), if any is queued.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn next_due(&self) -> Result<Option<i64>> {
        self.lock()
            .query_row("SELECT MIN(next_ms) FROM calls WHERE status = 'queued'", [], |r| r.get(0))
            .map_err(Error::db("read due calls"))
    }

    /// Records how an attempt ended: queued again for `retry_at_ms`, or final.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn attempted(&self, id: &CallId, a: &Attempted) -> Result<()> {
        attempted(&self.lock(), id, a)
    }

    /// Records a call that already ran and failed for good (a topic message out of
    /// retries): dead at once, with one attempt and `a`'s answer, never queued. Recording
    /// it again (after a crash) changes nothing.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn bury(&self, call: &NewCall, a: &Attempted) -> Result<()> {
        let now = now_ms();
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::db("begin dead letter"))?;
        if insert(&tx, call, now, "ON CONFLICT(id) DO NOTHING").map_err(Error::db("record call"))? == 1 {
            tx.execute("UPDATE calls SET attempts = 1, started_ms = ?2 WHERE id = ?1", params![call.id.as_str(), now])
                .map_err(Error::db("record call"))?;
            attempted(&tx, &call.id, &Attempted { retry_at_ms: None, status: CallStatus::Dead, ..a.clone() })?;
        }
        tx.commit().map_err(Error::db("commit dead letter"))
    }

    /// One call by id.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn call(&self, id: &str) -> Result<Option<StoredCall>> {
        let conn = self.lock();
        let stored = conn
            .query_row(&format!("SELECT {COLUMNS} FROM calls WHERE id = ?1"), params![id], row_call)
            .optional()
            .map_err(Error::db("read call"))?;
        match stored {
            Some(call) => Ok(Some(call)),
            None => sync_calls::find(&conn, id),
        }
    }

    /// The newest `limit` calls of `function`, with `status` if given.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn calls(&self, function: &str, status: Option<CallStatus>, limit: u32) -> Result<Vec<StoredCall>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM calls WHERE function = ?1 AND (?2 IS NULL OR status = ?2)
                 ORDER BY accepted_ms DESC, id DESC LIMIT ?3"
            ))
            .map_err(Error::db("list calls"))?;
        let rows = stmt
            .query_map(params![function, status.map(CallStatus::as_str), limit], row_call)
            .map_err(Error::db("list calls"))?;
        let mut calls: Vec<StoredCall> = rows.collect::<rusqlite::Result<_>>().map_err(Error::db("list calls"))?;
        calls.extend(sync_calls::newest(&conn, function, status, limit)?);
        calls
            .sort_by(|a, b| b.accepted_ms.cmp(&a.accepted_ms).then_with(|| b.call.id.as_str().cmp(a.call.id.as_str())));
        calls.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(calls)
    }

    /// Queues dead calls of `function` again (all, or the one `id`), with their attempts
    /// and age counted afresh; returns how many.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn redrive(&self, function: &str, id: Option<&str>) -> Result<usize> {
        let now = now_ms();
        self.lock()
            .execute(
                "UPDATE calls SET status = 'queued', attempts = 0, age_from_ms = ?3, next_ms = ?3, ended_ms = NULL
                 WHERE function = ?1 AND status = 'dead' AND (?2 IS NULL OR id = ?2)",
                params![function, id, now],
            )
            .map_err(Error::db("redrive calls"))
    }

    /// Deletes dead calls of `function` (all, or the one `id`); returns how many.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn purge(&self, function: &str, id: Option<&str>) -> Result<usize> {
        self.lock()
            .execute(
                "DELETE FROM calls WHERE function = ?1 AND status = 'dead' AND (?2 IS NULL OR id = ?2)",
                params![function, id],
            )
            .map_err(Error::db("purge calls"))
    }

    /// Deletes final calls (succeeded, failed) that ended before `before_ms`; dead ones
    /// stay for the dead-letter queue. Returns how many.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn prune_calls(&self, before_ms: i64) -> Result<usize> {
        let conn = self.lock();
        let calls = conn
            .execute("DELETE FROM calls WHERE status IN ('succeeded', 'failed') AND ended_ms < ?1", params![before_ms])
            .map_err(Error::db("prune calls"))?;
        Ok(calls + sync_calls::prune(&conn, before_ms)?)
    }

    /// Calls of `function` not yet final (queued or running).
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn pending_calls(&self, function: &str) -> Result<u64> {
        self.lock()
            .query_row(
                "SELECT COUNT(*) FROM calls WHERE function = ?1 AND status IN ('queued', 'running')",
                params![function],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(Error::db("count calls"))
    }
}

/// Records how an attempt ended (see [`Store::attempted`]).
fn attempted(conn: &Connection, id: &CallId, a: &Attempted) -> Result<()> {
    let now = now_ms();
    let (status, next, ended) = match a.retry_at_ms {
        Some(due) => (CallStatus::Queued, due, None),
        None => (a.status, now, Some(now)),
    };
    let r = a.result.as_ref();
    conn.execute(
        "UPDATE calls SET status = ?2, next_ms = ?3, ended_ms = ?4, revision = ?5, cold_start = ?6,
                 result_status = ?7, result_headers_json = ?8, result_body = ?9, error = ?10 WHERE id = ?1",
        params![
            id.as_str(),
            status.as_str(),
            next,
            ended,
            a.revision,
            a.cold_start,
            r.map(|r| r.status),
            r.map(|r| serde_json::to_string(&r.headers).unwrap_or_else(|_| "[]".to_owned())),
            r.map(|r| r.body.clone()),
            a.error
        ],
    )
    .map_err(Error::db("record attempt"))?;
    Ok(())
}

/// Inserts `call`, queued and due at `now`; `on_conflict` is appended to the statement.
/// Refuses `adding` more calls of `function` when it has `max` (0: no cap) or more
/// queued or running.
fn check_room(conn: &Connection, function: &str, max: u32, adding: u32) -> Result<()> {
    if max == 0 {
        return Ok(());
    }
    let pending: u32 = conn
        .query_row(
            "SELECT COUNT(*) FROM (SELECT 1 FROM calls WHERE function = ?1 AND status IN ('queued', 'running') LIMIT ?2)",
            params![function, max],
            |r| r.get(0),
        )
        .map_err(Error::db("count pending calls"))?;
    if pending.saturating_add(adding) > max {
        return Err(Error::QueueFull { function: function.to_owned(), max });
    }
    Ok(())
}

fn insert(conn: &Connection, call: &NewCall, now: i64, on_conflict: &str) -> rusqlite::Result<usize> {
    let headers = serde_json::to_string(&call.headers).unwrap_or_else(|_| "[]".to_owned());
    conn.execute(
        &format!(
            "INSERT INTO calls (id, function, method, path, headers_json, body, callback_url, status, attempts,
             accepted_ms, age_from_ms, next_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', 0, ?8, ?8, ?8) {on_conflict}"
        ),
        params![call.id.as_str(), call.function, call.method, call.path, headers, call.body, call.callback_url, now],
    )
}

/// At start-up: attempts that were running when the last server stopped are queued
/// again, due at once. Their attempt stays counted.
pub(super) fn requeue_running(conn: &Connection) -> Result<usize> {
    conn.execute("UPDATE calls SET status = 'queued', next_ms = ?1 WHERE status = 'running'", params![now_ms()])
        .map_err(Error::db("requeue running calls"))
}

fn row_call(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCall> {
    let id: String = r.get(0)?;
    let headers: String = r.get(4)?;
    let status: String = r.get(7)?;
    let result_status: Option<u16> = r.get(15)?;
    let result_headers: Option<String> = r.get(16)?;
    let result_body: Option<Vec<u8>> = r.get(17)?;
    Ok(StoredCall {
        call: NewCall {
            id: CallId::from_caller(Some(id.as_bytes())),
            function: r.get(1)?,
            method: r.get(2)?,
            path: r.get(3)?,
            headers: serde_json::from_str(&headers).unwrap_or_default(),
            body: r.get(5)?,
            callback_url: r.get(6)?,
        },
        status: CallStatus::parse(&status).unwrap_or(CallStatus::Dead),
        attempts: r.get(8)?,
        accepted_ms: r.get(9)?,
        age_from_ms: r.get(10)?,
        started_ms: r.get(11)?,
        ended_ms: r.get(12)?,
        revision: r.get(13)?,
        cold_start: r.get(14)?,
        result: result_status.map(|status| CallResult {
            status,
            headers: result_headers.and_then(|h| serde_json::from_str(&h).ok()).unwrap_or_default(),
            body: result_body.unwrap_or_default(),
        }),
        error: r.get(18)?,
    })
}
