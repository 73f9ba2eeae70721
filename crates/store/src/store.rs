//! [`Store`]: the registry in SQLite plus code by digest on disk.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gust_api::{FunctionName, FunctionSpec, RevisionId, RevisionStatus, Traffic};
use rusqlite::{Connection, OptionalExtension, params};

use crate::archive::{ArchiveLimits, Digest};
use crate::{Error, Result, Revision, Serving};

pub use deploys::{Built, DeployTraffic, Staged};

/// Schema, applied once per `user_version` step. Append only: never edit a shipped step.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE functions (
    name             TEXT PRIMARY KEY,
    current_revision INTEGER NOT NULL,
    created_at_ms    INTEGER NOT NULL
);
CREATE TABLE revisions (
    function      TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    number        INTEGER NOT NULL,
    code_digest   TEXT NOT NULL,
    spec_json     TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (function, number)
);
",
    r"
CREATE TABLE builds (
    key           TEXT PRIMARY KEY,
    code_digest   TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE routes (
    method        TEXT NOT NULL,
    path          TEXT NOT NULL,
    function      TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    origin        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (method, path)
);
",
    // NULL: every call to the latest revision (`current_revision`), as before traffic.
    r"
ALTER TABLE functions ADD COLUMN traffic_json TEXT;
",
    // Revisions deployed before start-up checks existed served, so they are ready.
    r"
ALTER TABLE revisions ADD COLUMN status TEXT NOT NULL DEFAULT 'ready';
ALTER TABLE revisions ADD COLUMN failure TEXT;
",
    // Async calls: the request as accepted, where its delivery stands, its latest answer.
    r"
CREATE TABLE calls (
    id                  TEXT PRIMARY KEY,
    function            TEXT NOT NULL,
    method              TEXT NOT NULL,
    path                TEXT NOT NULL,
    headers_json        TEXT NOT NULL,
    body                BLOB NOT NULL,
    callback_url        TEXT,
    status              TEXT NOT NULL,
    attempts            INTEGER NOT NULL,
    accepted_ms         INTEGER NOT NULL,
    age_from_ms         INTEGER NOT NULL,
    next_ms             INTEGER NOT NULL,
    started_ms          INTEGER,
    ended_ms            INTEGER,
    revision            TEXT,
    cold_start          INTEGER,
    result_status       INTEGER,
    result_headers_json TEXT,
    result_body         BLOB,
    error               TEXT
);
CREATE INDEX calls_due ON calls (next_ms) WHERE status = 'queued';
CREATE INDEX calls_by_function ON calls (function, accepted_ms);
",
    // Topics: partitioned logs, the next offset of each partition (kept when old
    // messages are trimmed), and each consumer's committed offsets.
    r"
CREATE TABLE topics (
    name            TEXT PRIMARY KEY,
    partitions      INTEGER NOT NULL,
    retention_ms    INTEGER NOT NULL,
    retention_bytes INTEGER NOT NULL,
    created_at_ms   INTEGER NOT NULL
);
CREATE TABLE messages (
    topic        TEXT NOT NULL,
    partition    INTEGER NOT NULL,
    offset       INTEGER NOT NULL,
    key          TEXT,
    body         BLOB NOT NULL,
    published_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)
);
CREATE TABLE partition_ends (
    topic     TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next      INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE offsets (
    function  TEXT NOT NULL,
    topic     TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next      INTEGER NOT NULL,
    PRIMARY KEY (function, topic, partition)
);
",
    // Counting a function's pending async calls (the `[async] max_queued` cap) walks
    // only the pending ones.
    r"
CREATE INDEX calls_pending ON calls (function) WHERE status IN ('queued', 'running');
",
    // Secrets a function may read.
    r"
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
",
    // Answered sync calls, packed per function and second of arrival (see
    // `store/sync_calls.rs`); the ids callers chose, with the second they are in. Sync
    // calls recorded before this step stay in `calls`.
    r"
CREATE TABLE sync_calls (
    function TEXT NOT NULL,
    second   INTEGER NOT NULL,
    ended_ms INTEGER NOT NULL,
    records  BLOB NOT NULL
);
CREATE INDEX sync_calls_by_second ON sync_calls (second);
CREATE INDEX sync_calls_by_function ON sync_calls (function, second);
CREATE INDEX sync_calls_by_end ON sync_calls (ended_ms);
CREATE TABLE sync_call_ids (
    id       TEXT PRIMARY KEY,
    second   INTEGER NOT NULL,
    ended_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sync_call_ids_by_end ON sync_call_ids (ended_ms);
",
];

/// The longest failure text kept for a revision: enough for a traceback's tail.
const MAX_FAILURE: usize = 8 << 10;

/// The embedded store of one data directory.
///
/// Its methods block (SQLite, file I/O); async callers run them on `spawn_blocking`.
/// One connection behind a mutex is enough: writes are deploys and removals, which are
/// rare, and the call path never reads from here.
#[derive(Debug)]
pub struct Store {
    /// The data directory.
    root: PathBuf,
    /// The only connection; the mutex also serialises deploys of the same function.
    conn: Mutex<Connection>,
    /// Caps for unpacking uploads.
    limits: ArchiveLimits,
}

impl Store {
    /// Opens (creating as needed) the store in `root`: `gust.db`, `code/`, `tmp/`.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Database`] when the directory or database cannot be set up.
    pub fn open(root: &Path, limits: ArchiveLimits) -> Result<Self> {
        for dir in [root.to_path_buf(), root.join("code"), root.join("tmp")] {
            fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        }
        // Leftovers of deploys interrupted by a crash.
        let tmp = root.join("tmp");
        if let Ok(entries) = fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        let db = root.join("gust.db");
        let conn = Connection::open(&db).map_err(Error::db("open gust.db"))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;",
        )
        .map_err(Error::db("set pragmas"))?;
        let version: i64 =
            conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(Error::db("read schema version"))?;
        let done = usize::try_from(version).unwrap_or(0);
        for (i, step) in MIGRATIONS.iter().enumerate().skip(done) {
            conn.execute_batch(&format!("BEGIN; {step} PRAGMA user_version = {}; COMMIT;", i + 1))
                .map_err(Error::db("migrate schema"))?;
        }
        // A revision still pending was being checked when the last server stopped; it
        // never took traffic, and nobody is left to finish its check.
        conn.execute(
            "UPDATE revisions SET status = 'failed', failure = ?1 WHERE status = 'pending'",
            params!["gust stopped before this revision's start-up check ended; deploy it again"],
        )
        .map_err(Error::db("settle pending revisions"))?;
        calls::requeue_running(&conn)?;
        Ok(Self { root: root.to_path_buf(), conn: Mutex::new(conn), limits })
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What every deployed function serves: its latest revision, its traffic and every
    /// revision that traffic keeps in service.
    ///
    /// # Errors
    /// [`Error::Database`] or [`Error::Corrupt`].
    pub fn serving_all(&self) -> Result<Vec<Serving>> {
        let names: Vec<String> = {
            let conn = self.lock();
            let mut stmt =
                conn.prepare("SELECT name FROM functions ORDER BY name").map_err(Error::db("list functions"))?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(Error::db("list functions"))?;
            rows.collect::<rusqlite::Result<_>>().map_err(Error::db("list functions"))?
        };
        names
            .iter()
            .map(|n| {
                let name =
                    FunctionName::new(n).map_err(|e| Error::Corrupt { function: n.clone(), reason: e.to_string() })?;
                self.serving(&name)
            })
            .collect()
    }

    /// What `name` serves: its latest ready revision, its traffic and every revision
    /// that traffic keeps in service.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Database`] or [`Error::Corrupt`].
    pub fn serving(&self, name: &FunctionName) -> Result<Serving> {
        let (revisions, latest, traffic) = self.revisions(name)?;
        let kept = traffic.referenced(latest);
        let newest = revisions.first().cloned().ok_or_else(|| Error::NotFound { function: name.to_string() })?;
        let failure = latest.is_none().then(|| {
            format!("{} failed to start: {}", newest.id, newest.failure.as_deref().unwrap_or("its check is not over"))
        });
        let revisions: Vec<Revision> = revisions.into_iter().filter(|r| kept.contains(&r.id.number())).collect();
        Ok(Serving { function: name.clone(), latest, traffic, revisions, failure, newest })
    }

    /// Changes `name`'s traffic with `change` (given the traffic now, the latest ready
    /// revision and the numbers of the ready ones, oldest first), checks the result and
    /// records it, all in one transaction: a refused change leaves the traffic as it was.
    /// Shares and tags may name revisions that failed to start only when `force` is set.
    ///
    /// # Errors
    /// [`Error::BadTraffic`] with `change`'s or the check's reason, [`Error::NotFound`],
    /// [`Error::Database`] or [`Error::Corrupt`].
    pub fn update_traffic(
        &self,
        name: &FunctionName,
        force: bool,
        change: impl FnOnce(&Traffic, u32, &[u32]) -> std::result::Result<Traffic, String>,
    ) -> Result<Serving> {
        {
            let mut conn = self.lock();
            let tx = conn.transaction().map_err(Error::db("begin traffic change"))?;
            let (traffic, latest) =
                read_traffic(&tx, name)?.ok_or_else(|| Error::NotFound { function: name.to_string() })?;
            let statuses: Vec<(u32, RevisionStatus)> = {
                let mut stmt = tx
                    .prepare("SELECT number, status FROM revisions WHERE function = ?1 ORDER BY number")
                    .map_err(Error::db("list revisions"))?;
                let rows = stmt
                    .query_map(params![name.as_str()], |r| {
                        Ok((r.get(0)?, RevisionStatus::from_stored(&r.get::<_, String>(1)?)))
                    })
                    .map_err(Error::db("list revisions"))?;
                rows.collect::<rusqlite::Result<_>>().map_err(Error::db("list revisions"))?
            };
            let bad = |reason: String| Error::BadTraffic { function: name.to_string(), reason };
            let ready: Vec<u32> =
                statuses.iter().filter(|(_, s)| *s == RevisionStatus::Ready).map(|(n, _)| *n).collect();
            let latest = match (latest, statuses.last()) {
                (Some(n), _) => n,
                (None, Some((newest, _))) if force => *newest,
                _ => return Err(bad(format!("no revision of {name} has started yet: deploy one that does"))),
            };
            let next = change(&traffic, latest, &ready).map_err(bad)?;
            next.check(|n| match statuses.binary_search_by_key(&n, |(k, _)| *k) {
                Err(_) => Err(format!("revision {n:05} does not exist")),
                Ok(i) => match statuses[i].1 {
                    RevisionStatus::Ready => Ok(()),
                    RevisionStatus::Failed if force => Ok(()),
                    RevisionStatus::Failed => Err(format!(
                        "{name}-{n:05} failed to start (gust describe {name} says why): fix it and deploy again, or force it"
                    )),
                    RevisionStatus::Pending => Err(format!("{name}-{n:05} is still being started; try again")),
                },
            })
            .map_err(bad)?;
            write_traffic(&tx, name, &next)?;
            tx.commit().map_err(Error::db("commit traffic change"))?;
        }
        self.serving(name)
    }

    /// Every revision of `name`, newest first, with the number of the latest ready one
    /// and the function's traffic.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Database`] or [`Error::Corrupt`].
    pub fn revisions(&self, name: &FunctionName) -> Result<(Vec<Revision>, Option<u32>, Traffic)> {
        let conn = self.lock();
        let (traffic, current) =
            read_traffic(&conn, name)?.ok_or_else(|| Error::NotFound { function: name.to_string() })?;
        let mut stmt = conn
            .prepare(
                "SELECT function, number, code_digest, spec_json, created_at_ms, status, failure FROM revisions
                 WHERE function = ?1 ORDER BY number DESC",
            )
            .map_err(Error::db("list revisions"))?;
        let rows = stmt.query_map(params![name.as_str()], row_tuple).map_err(Error::db("list revisions"))?;
        let rows: Vec<_> = rows.collect::<rusqlite::Result<_>>().map_err(Error::db("list revisions"))?;
        let revs = rows.into_iter().map(|t| self.to_revision(t)).collect::<Result<_>>()?;
        Ok((revs, current, traffic))
    }

    /// Forgets a function and its revisions. Code stays on disk, shared by digest with
    /// any other function that has the same files.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such function, [`Error::Database`].
    pub fn remove(&self, name: &FunctionName) -> Result<()> {
        let conn = self.lock();
        let n = conn
            .execute("DELETE FROM functions WHERE name = ?1", params![name.as_str()])
            .map_err(Error::db("remove function"))?;
        if n == 0 {
            return Err(Error::NotFound { function: name.to_string() });
        }
        Ok(())
    }

    fn to_revision(
        &self,
        (function, number, digest, spec_json, created, status, failure): RowTuple,
    ) -> Result<Revision> {
        let corrupt = |reason: String| Error::Corrupt { function: function.clone(), reason };
        let spec: FunctionSpec = serde_json::from_str(&spec_json).map_err(|e| corrupt(e.to_string()))?;
        let digest = Digest::from_stored(digest);
        Ok(Revision {
            id: RevisionId::new(spec.name.clone(), number),
            code_dir: self.code_dir(&digest),
            spec,
            code_digest: digest,
            created_at: from_ms(created),
            status: RevisionStatus::from_stored(&status),
            failure,
        })
    }

    fn code_dir(&self, digest: &Digest) -> PathBuf {
        self.root.join("code").join(digest.hex())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions
        // roll back on drop), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

type RowTuple = (String, u32, String, String, i64, String, Option<String>);

fn row_tuple(r: &rusqlite::Row<'_>) -> rusqlite::Result<RowTuple> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
}

fn revision_row(conn: &Connection, name: &FunctionName, number: u32) -> Result<RowTuple> {
    conn.query_row(
        "SELECT function, number, code_digest, spec_json, created_at_ms, status, failure FROM revisions
         WHERE function = ?1 AND number = ?2",
        params![name.as_str(), number],
        row_tuple,
    )
    .map_err(Error::db("read revision"))
}

/// The function's traffic and latest ready revision; `None` when it does not exist.
fn read_traffic(conn: &Connection, name: &FunctionName) -> Result<Option<(Traffic, Option<u32>)>> {
    let json: Option<Option<String>> = conn
        .query_row("SELECT traffic_json FROM functions WHERE name = ?1", params![name.as_str()], |r| r.get(0))
        .optional()
        .map_err(Error::db("read traffic"))?;
    let Some(json) = json else { return Ok(None) };
    Ok(Some((parse_traffic(name, json.as_deref())?, latest_ready(conn, name)?)))
}

/// The newest revision of `name` that passed its start-up check: what `@latest` means.
fn latest_ready(conn: &Connection, name: &FunctionName) -> Result<Option<u32>> {
    conn.query_row(
        "SELECT MAX(number) FROM revisions WHERE function = ?1 AND status = 'ready'",
        params![name.as_str()],
        |r| r.get(0),
    )
    .map_err(Error::db("read latest ready revision"))
}

/// A stored `traffic_json`; NULL (functions deployed before traffic existed) is every
/// call to the latest revision.
fn parse_traffic(name: &FunctionName, json: Option<&str>) -> Result<Traffic> {
    match json {
        None => Ok(Traffic::latest()),
        Some(j) => serde_json::from_str(j)
            .map_err(|e| Error::Corrupt { function: name.to_string(), reason: format!("traffic: {e}") }),
    }
}

fn write_traffic(conn: &Connection, name: &FunctionName, traffic: &Traffic) -> Result<()> {
    let json = serde_json::to_string(traffic)
        .map_err(|e| Error::Corrupt { function: name.to_string(), reason: format!("traffic: {e}") })?;
    conn.execute("UPDATE functions SET traffic_json = ?1 WHERE name = ?2", params![json, name.as_str()])
        .map_err(Error::db("record traffic"))?;
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

pub(crate) mod calls;
mod deploys;
pub(crate) mod retention;
pub(crate) mod routes;
pub(crate) mod secrets;
mod sync_calls;
#[cfg(test)]
mod tests;
pub(crate) mod topics;
