//! Deploying into the [`Store`]: an upload staged and checked ([`Staged`]), its build
//! remembered ([`Built`]), the revision recorded, then settled once its start-up check
//! has passed or failed.

use std::fs;
use std::io::Read;
use std::path::Path;

use gust_api::{FunctionSpec, Manifest, Problem, RevisionId, RevisionStatus, Runtime, Traffic};
use rusqlite::{OptionalExtension, params};

use super::{
    MAX_FAILURE, Store, from_ms, latest_ready, now_ms, parse_traffic, read_traffic, revision_row, routes, write_traffic,
};
use crate::archive::{Digest, tree_digest, unpack_tar_gz};
use crate::{DeployOutcome, Error, Result, Revision, Serving};

impl Store {
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
