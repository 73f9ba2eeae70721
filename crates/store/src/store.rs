//! [`Store`]: the registry in SQLite plus code by digest on disk.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gust_api::{FunctionName, FunctionSpec, Manifest, Problem, RevisionId, RevisionStatus, Runtime, Traffic};
use rusqlite::{Connection, OptionalExtension, params};

use crate::archive::{ArchiveLimits, Digest, tree_digest, unpack_tar_gz};
use crate::{DeployOutcome, Error, Result, Revision, Serving};

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

    /// Deploys a `.tar.gz` of a function directory that needs no build and no start-up
    /// check: [`Store::stage`], [`Store::commit`], then [`Store::settle`] as ready.
    ///
    /// # Errors
    /// As [`Store::stage`], [`Store::commit`] and [`Store::settle`].
    pub fn deploy(&self, archive: impl Read) -> Result<DeployOutcome> {
        let staged = self.stage(archive)?;
        let traffic = staged.traffic.clone();
        let outcome = self.commit(staged, None)?;
        if outcome.changed {
            self.settle(&outcome.revision.id, Ok(()), &traffic)?;
        }
        Ok(outcome)
    }

    /// Unpacks an uploaded `.tar.gz` safely into a private directory and validates its
    /// `gust.toml`. Nothing is recorded yet: the caller may build in [`Staged::dir`] and
    /// then [`Store::commit`]; dropping the result throws it away.
    ///
    /// # Errors
    /// [`Error::BadArchive`] for a bad upload, [`Error::InvalidManifest`] listing every
    /// manifest problem, [`Error::Io`] for local failures.
    pub fn stage(&self, archive: impl Read) -> Result<Staged> {
        let dir = tempfile::Builder::new()
            .prefix("deploy-")
            .tempdir_in(self.root.join("tmp"))
            .map_err(Error::io("create staging directory", self.root.join("tmp")))?;
        unpack_tar_gz(archive, dir.path(), self.limits)?;
        let manifest_path = dir.path().join(Manifest::FILE_NAME);
        let Ok(text) = fs::read_to_string(&manifest_path) else {
            return Err(gust_api::Error::InvalidManifest {
                problems: vec![Problem {
                    field: String::new(),
                    message: format!("the archive has no {} at its top level", Manifest::FILE_NAME),
                }],
            }
            .into());
        };
        let spec = Manifest::parse(&text)?;
        let source_digest = tree_digest(dir.path())?;
        Ok(Staged { dir, spec, source_digest, traffic: DeployTraffic::default() })
    }

    /// The code a build with this key produced before, if it is still on disk.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn cached_build(&self, key: &str) -> Result<Option<Digest>> {
        let digest: Option<String> = self
            .lock()
            .query_row("SELECT code_digest FROM builds WHERE key = ?1", params![key], |r| r.get(0))
            .optional()
            .map_err(Error::db("read build cache"))?;
        Ok(digest.map(Digest::from_stored).filter(|d| self.code_dir(d).is_dir()))
    }

    /// Records the staged code (as built, when `build` says so, or from the cache) as the
    /// function's newest revision, *pending*: it takes no traffic, and its manifest routes
    /// and the deploy's traffic wait for [`Store::settle`] once its start-up check is
    /// over. Both are checked here, so a conflict fails the deploy before anything
    /// starts. When code and spec equal the newest revision's (and it did not fail),
    /// nothing changes but the deploy's tag, and the outcome says so.
    ///
    /// # Errors
    /// [`Error::InvalidManifest`] when the handler is not in the code,
    /// [`Error::RouteConflict`] naming the route's owner, [`Error::BadTraffic`] for
    /// traffic options the function cannot take, [`Error::Io`]/[`Error::Database`].
    pub fn commit(&self, staged: Staged, build: Option<Built<'_>>) -> Result<DeployOutcome> {
        let Staged { dir, spec, traffic: intent, .. } = staged;
        // Held from before the code is stored until its revision is recorded, so garbage
        // collection never sees the directory without the revision that uses it.
        let mut conn = self.lock();
        let missing = Store::missing_secrets(&conn, &spec.secrets)?;
        if !missing.is_empty() {
            let message = format!(
                "no secret named {}; create it with `gust secret create {}`",
                missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
                missing[0]
            );
            return Err(gust_api::Error::InvalidManifest {
                problems: vec![Problem { field: "secrets".into(), message }],
            }
            .into());
        }
        let (digest, code_dir) = match &build {
            Some(Built::Cached(digest)) => {
                let code_dir = self.code_dir(digest);
                if !code_dir.is_dir() {
                    return Err(Error::io("reuse cached build", &code_dir)(std::io::ErrorKind::NotFound.into()));
                }
                (digest.clone(), code_dir)
            }
            None | Some(Built::Fresh { .. }) => {
                check_handler_exists(&spec, dir.path())?;
                let digest = tree_digest(dir.path())?;
                let code_dir = self.code_dir(&digest);
                if !code_dir.exists() {
                    fs::rename(dir.path(), &code_dir).map_err(Error::io("store code", &code_dir))?;
                }
                (digest, code_dir)
            }
        };
        let spec_json = serde_json::to_string(&spec)
            .map_err(|e| Error::Corrupt { function: spec.name.to_string(), reason: e.to_string() })?;
        let now = now_ms();
        let mut tx = conn.transaction().map_err(Error::db("begin deploy"))?;
        if let Some(Built::Fresh { key }) = &build {
            tx.execute(
                "INSERT INTO builds (key, code_digest, created_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET code_digest = excluded.code_digest",
                params![key, digest.as_str(), now],
            )
            .map_err(Error::db("record build"))?;
        }
        let current: Option<(u32, String, String, Option<String>, String)> = tx
            .query_row(
                "SELECT r.number, r.code_digest, r.spec_json, f.traffic_json, r.status FROM functions f
                 JOIN revisions r ON r.function = f.name AND r.number = f.current_revision
                 WHERE f.name = ?1",
                params![spec.name.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(Error::db("read current revision"))?;
        let traffic = match &current {
            Some((_, _, _, json, _)) => parse_traffic(&spec.name, json.as_deref())?,
            None => Traffic::latest(),
        };
        let bad_traffic = |reason: String| Error::BadTraffic { function: spec.name.to_string(), reason };
        // The same code and config again is no new revision, unless the last try of it
        // failed to start: then deploying again is how the user retries.
        if let Some((number, d, s, _, status)) = &current
            && d == digest.as_str()
            && *s == spec_json
            && RevisionStatus::from_stored(status) != RevisionStatus::Failed
        {
            if let Some(tag) = &intent.tag {
                let mut traffic = traffic;
                traffic.tag(tag, *number).map_err(bad_traffic)?;
                write_traffic(&tx, &spec.name, &traffic)?;
            }
            tx.commit().map_err(Error::db("commit deploy"))?;
            let revision = revision_row(&conn, &spec.name, *number).and_then(|t| self.to_revision(t))?;
            return Ok(DeployOutcome { revision, changed: false });
        }
        let last: Option<u32> = tx
            .query_row("SELECT MAX(number) FROM revisions WHERE function = ?1", params![spec.name.as_str()], |r| {
                r.get(0)
            })
            .map_err(Error::db("number revision"))?;
        let number = last.unwrap_or(0) + 1;
        // Checked now, applied by `settle` once the revision is ready.
        let previous = latest_ready(&tx, &spec.name)?;
        traffic.deployed(previous, number, intent.no_traffic, intent.tag.as_deref()).map_err(bad_traffic)?;
        tx.execute(
            "INSERT INTO functions (name, current_revision, created_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET current_revision = excluded.current_revision",
            params![spec.name.as_str(), number, now],
        )
        .map_err(Error::db("record function"))?;
        {
            // Likewise the routes: claimed by `settle`, refused here on a conflict (after
            // the function's row exists, which they refer to).
            let trial = tx.savepoint().map_err(Error::db("check routes"))?;
            routes::replace_manifest_routes(&trial, &spec.name, &spec.routes, now)?;
        }
        tx.execute(
            "INSERT INTO revisions (function, number, code_digest, spec_json, created_at_ms, status)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending')",
            params![spec.name.as_str(), number, digest.as_str(), spec_json, now],
        )
        .map_err(Error::db("record revision"))?;
        tx.commit().map_err(Error::db("commit deploy"))?;
        let revision = Revision {
            id: RevisionId::new(spec.name.clone(), number),
            spec,
            code_digest: digest,
            code_dir,
            created_at: from_ms(now),
            status: RevisionStatus::Pending,
            failure: None,
        };
        Ok(DeployOutcome { revision, changed: true })
    }

    /// Ends a pending revision's start-up check. Ready: the deploy's `traffic` takes
    /// effect (a plain deploy sends every call that follows `@latest` to it) and its
    /// manifest routes replace the function's. Failed: `failure` is kept for `gust
    /// describe`, and traffic and routes stay as they were, so the revisions serving
    /// before keep serving. Both in one transaction.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the revision is gone or not pending, [`Error::BadTraffic`],
    /// [`Error::RouteConflict`] when another deploy claimed a route meanwhile,
    /// [`Error::Database`] or [`Error::Corrupt`].
    pub fn settle(
        &self,
        id: &RevisionId,
        outcome: std::result::Result<(), String>,
        traffic: &DeployTraffic,
    ) -> Result<Serving> {
        let name = id.function();
        let number = id.number();
        {
            let mut conn = self.lock();
            let tx = conn.transaction().map_err(Error::db("begin settle"))?;
            let spec_json: Option<String> = tx
                .query_row(
                    "SELECT spec_json FROM revisions WHERE function = ?1 AND number = ?2 AND status = 'pending'",
                    params![name.as_str(), number],
                    |r| r.get(0),
                )
                .optional()
                .map_err(Error::db("read revision"))?;
            let Some(spec_json) = spec_json else {
                return Err(Error::NotFound { function: id.to_string() });
            };
            match outcome {
                Ok(()) => {
                    let (current, previous) =
                        read_traffic(&tx, name)?.ok_or_else(|| Error::NotFound { function: name.to_string() })?;
                    let next = current
                        .deployed(previous, number, traffic.no_traffic, traffic.tag.as_deref())
                        .map_err(|reason| Error::BadTraffic { function: name.to_string(), reason })?;
                    tx.execute(
                        "UPDATE revisions SET status = 'ready' WHERE function = ?1 AND number = ?2",
                        params![name.as_str(), number],
                    )
                    .map_err(Error::db("record ready revision"))?;
                    write_traffic(&tx, name, &next)?;
                    let spec: FunctionSpec = serde_json::from_str(&spec_json)
                        .map_err(|e| Error::Corrupt { function: name.to_string(), reason: e.to_string() })?;
                    routes::replace_manifest_routes(&tx, name, &spec.routes, now_ms())?;
                }
                Err(detail) => {
                    let mut detail = detail;
                    if detail.len() > MAX_FAILURE {
                        let mut cut = detail.len() - MAX_FAILURE;
                        while !detail.is_char_boundary(cut) {
                            cut += 1;
                        }
                        detail = format!("…{}", &detail[cut..]);
                    }
                    tx.execute(
                        "UPDATE revisions SET status = 'failed', failure = ?3 WHERE function = ?1 AND number = ?2",
                        params![name.as_str(), number, detail],
                    )
                    .map_err(Error::db("record failed revision"))?;
                }
            }
            tx.commit().map_err(Error::db("commit settle"))?;
        }
        self.serving(name)
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

/// An upload unpacked and validated, not yet recorded; its directory is removed on drop.
#[derive(Debug)]
pub struct Staged {
    dir: tempfile::TempDir,
    /// The validated manifest.
    pub spec: FunctionSpec,
    /// Digest of the uploaded tree, before any build: the key of the build cache.
    pub source_digest: Digest,
    /// What the new revision does to the function's traffic.
    pub traffic: DeployTraffic,
}

/// What a deploy does to traffic: by default the new revision takes every call (tags
/// stay); with `no_traffic` the split stays where it was. `tag` names the new revision.
#[derive(Debug, Clone, Default)]
pub struct DeployTraffic {
    /// Leave the split as it is (shares that followed the latest stay on the old one).
    pub no_traffic: bool,
    /// A tag for the new revision (moved from any other revision).
    pub tag: Option<String>,
}

impl Staged {
    /// Where the upload is unpacked; a build runs here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Checks that the manifest's handler is in the code, so a typo fails before a
    /// build rather than after it.
    ///
    /// # Errors
    /// [`Error::InvalidManifest`] naming the handler.
    pub fn check_handler(&self) -> Result<()> {
        check_handler_exists(&self.spec, self.dir.path())
    }
}

/// How staged code became the revision's code.
#[derive(Debug, Clone)]
pub enum Built<'a> {
    /// A build ran in the staged directory; remember its output under `key`.
    Fresh {
        /// The build cache key.
        key: &'a str,
    },
    /// An earlier build with the same key produced this code; the staged files are unused.
    Cached(Digest),
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

/// Checks that the manifest's handler is in the unpacked code, so a typo fails the
/// deploy rather than the first call.
fn check_handler_exists(spec: &FunctionSpec, dir: &Path) -> Result<()> {
    let problem = |message: String| -> Error {
        gust_api::Error::InvalidManifest { problems: vec![Problem { field: "handler".into(), message }] }.into()
    };
    let h = &spec.handler;
    match spec.runtime {
        Runtime::Python => {
            let module = h.rsplit_once('.').map_or(h.as_str(), |(m, _)| m).replace('.', "/");
            if !dir.join(format!("{module}.py")).is_file() && !dir.join(&module).join("__init__.py").is_file() {
                return Err(problem(format!("module `{module}.py` of handler `{h}` is not in the function directory")));
            }
        }
        Runtime::Node => {
            let p = dir.join(h);
            let candidates = [p.clone(), p.with_extension("js"), p.join("index.js")];
            if !candidates.iter().any(|c| c.is_file()) {
                return Err(problem(format!("`{h}` is not in the function directory")));
            }
        }
        Runtime::Shell => {
            if !dir.join(h).is_file() {
                return Err(problem(format!("script `{h}` is not in the function directory")));
            }
        }
        Runtime::Java => {
            let has_jar = fs::read_dir(dir)
                .map_err(Error::io("read code directory", dir))?
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "jar"));
            if !has_jar && !dir.join("classes").is_dir() {
                return Err(problem(format!(
                    "no `.jar` file or `classes/` directory holds `{h}`: build one with `build = \"…\"` or deploy the jar"
                )));
            }
        }
        Runtime::Exec => check_executable(dir, h).map_err(problem)?,
        Runtime::LambdaPython => {
            let module = h.rsplit_once('.').map_or(h.as_str(), |(m, _)| m).replace('.', "/");
            if !dir.join(format!("{module}.py")).is_file() && !dir.join(&module).join("__init__.py").is_file() {
                return Err(problem(format!("module `{module}.py` of handler `{h}` is not in the function directory")));
            }
        }
        Runtime::LambdaNode => {
            let file = gust_api::manifest::node_handler_file(h).map_or(h.as_str(), |(f, _)| f);
            if !["js", "mjs", "cjs"].iter().any(|x| dir.join(format!("{file}.{x}")).is_file()) {
                return Err(problem(format!(
                    "`{file}.js` (or .mjs, .cjs) of handler `{h}` is not in the function directory"
                )));
            }
        }
        Runtime::Lambda => check_executable(dir, "bootstrap")
            .map_err(|m| problem(format!("{m}; a custom runtime starts from its `bootstrap` executable")))?,
    }
    Ok(())
}

/// That `name` in `dir` is an executable file; else what is wrong, for a user.
fn check_executable(dir: &Path, name: &str) -> std::result::Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match fs::metadata(dir.join(name)) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(m) if m.is_file() => Err(format!("`{name}` is not executable: run `chmod +x {name}` and deploy again")),
        _ => Err(format!("executable `{name}` is not in the function directory")),
    }
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
pub(crate) mod retention;
pub(crate) mod routes;
pub(crate) mod secrets;
mod sync_calls;
#[cfg(test)]
mod tests;
pub(crate) mod topics;
