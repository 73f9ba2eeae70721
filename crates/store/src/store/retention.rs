//! Garbage collection of revisions nobody routes to, and of the code only they used.
//!
//! Knative's revision GC, with its defaults: a revision is *active* while it has a share
//! of traffic or a tag, is the latest ready or the newest one, or is still running
//! (draining calls, or being started). Of the others, the newest `keep` stay whatever
//! their age; beyond those, any older than `max_age` goes, and past `max` they go
//! whatever their age. A code directory (and its build-cache rows) goes once no revision
//! of any function uses it.

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, SystemTime};

use gust_api::{FunctionName, RevisionId};
use rusqlite::params;

use super::{Store, from_ms, latest_ready, parse_traffic};
use crate::{Digest, Error, Result};

/// How many revisions out of service are kept, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Kept whatever their age, newest first (Knative `min-non-active-revisions`: 20).
    pub keep: u32,
    /// Beyond `keep`, older than this go (Knative `retain-since-create-time`: 48 h).
    pub max_age: Duration,
    /// Never more than this many, whatever their age (Knative
    /// `max-non-active-revisions`: 1000).
    pub max: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self { keep: 20, max_age: Duration::from_secs(48 * 3600), max: 1000 }
    }
}

/// What one collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// Revisions forgotten.
    pub revisions: Vec<RevisionId>,
    /// Code directories deleted (no revision used them any more).
    pub code_dirs: Vec<std::path::PathBuf>,
}

impl Store {
    /// Forgets revisions out of service past `retention`, then deletes code no revision
    /// uses. `running` says whether a revision still has instances (a draining pool), which
    /// keeps it whatever its age, since its code is in use.
    ///
    /// # Errors
    /// [`Error::Database`], [`Error::Corrupt`]; a code directory that cannot be deleted
    /// is logged and left for the next collection.
    pub fn collect_garbage(
        &self,
        retention: Retention,
        now: SystemTime,
        running: impl Fn(&RevisionId) -> bool,
    ) -> Result<Collected> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::db("begin collection"))?;
        let functions: Vec<(String, u32, Option<String>)> = {
            let mut stmt = tx
                .prepare("SELECT name, current_revision, traffic_json FROM functions")
                .map_err(Error::db("list functions"))?;
            let rows =
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(Error::db("list functions"))?;
            rows.collect::<rusqlite::Result<_>>().map_err(Error::db("list functions"))?
        };
        let mut collected = Collected::default();
        for (name, newest, traffic) in functions {
            let fname = FunctionName::new(&name)
                .map_err(|e| Error::Corrupt { function: name.clone(), reason: e.to_string() })?;
            let mut active = parse_traffic(&fname, traffic.as_deref())?.referenced(latest_ready(&tx, &fname)?);
            active.insert(newest);
            let revisions: Vec<(u32, i64, String)> = {
                let mut stmt = tx
                    .prepare(
                        "SELECT number, created_at_ms, status FROM revisions WHERE function = ?1 ORDER BY number DESC",
                    )
                    .map_err(Error::db("list revisions"))?;
                let rows = stmt
                    .query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(Error::db("list revisions"))?;
                rows.collect::<rusqlite::Result<_>>().map_err(Error::db("list revisions"))?
            };
            let inactive = revisions.into_iter().filter(|(n, _, status)| {
                !active.contains(n) && status != "pending" && !running(&RevisionId::new(fname.clone(), *n))
            });
            for (i, (number, created, _)) in inactive.enumerate() {
                let age = now.duration_since(from_ms(created)).unwrap_or(Duration::ZERO);
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                if (i >= retention.keep && age >= retention.max_age) || i >= retention.max {
                    tx.execute("DELETE FROM revisions WHERE function = ?1 AND number = ?2", params![name, number])
                        .map_err(Error::db("remove revision"))?;
                    collected.revisions.push(RevisionId::new(fname.clone(), number));
                }
            }
        }
        let used: BTreeSet<String> = {
            let mut stmt = tx.prepare("SELECT DISTINCT code_digest FROM revisions").map_err(Error::db("list code"))?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(Error::db("list code"))?;
            let digests: Vec<String> = rows.collect::<rusqlite::Result<_>>().map_err(Error::db("list code"))?;
            digests.into_iter().map(|d| Digest::from_stored(d).hex().to_owned()).collect()
        };
        // Build-cache rows whose code no revision uses go with that code: a later deploy
        // of the same sources builds again rather than finding a deleted directory.
        tx.execute("DELETE FROM builds WHERE code_digest NOT IN (SELECT code_digest FROM revisions)", [])
            .map_err(Error::db("forget builds"))?;
        tx.commit().map_err(Error::db("commit collection"))?;
        // Still under the lock: a deploy stores its code directory and records its
        // revision under it too, so no directory is deleted between the two.
        let code = self.root.join("code");
        for entry in fs::read_dir(&code).map_err(Error::io("read code directory", &code))?.flatten() {
            let hex = entry.file_name().to_string_lossy().into_owned();
            if used.contains(&hex) {
                continue;
            }
            match fs::remove_dir_all(entry.path()) {
                Ok(()) => collected.code_dirs.push(entry.path()),
                Err(e) => tracing::warn!(dir = %entry.path().display(), error = %e, "could not delete unused code"),
            }
        }
        drop(conn);
        if !collected.revisions.is_empty() || !collected.code_dirs.is_empty() {
            let ids: Vec<String> = collected.revisions.iter().map(ToString::to_string).collect();
            tracing::info!(revisions = ?ids, code_dirs = collected.code_dirs.len(), "collected old revisions");
        }
        Ok(collected)
    }
}
