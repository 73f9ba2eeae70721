//! Custom routes in the store: those a manifest declares (replaced on every deploy of
//! its function) and those added by hand with `gust route create`. Conflicts are
//! checked here, under the store's lock, so two deploys cannot both claim a path.

use gust_api::{FunctionName, RouteMethod, RoutePattern, RouteSpec};
use rusqlite::{Connection, params};

use super::{Store, now_ms};
use crate::{Error, Result};

/// Where a route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOrigin {
    /// `[[routes]]` in the function's manifest.
    Manifest,
    /// `gust route create` / `POST /api/v1/routes`.
    Api,
}

impl RouteOrigin {
    /// How it is stored and shown: `manifest` or `api`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteOrigin::Manifest => "manifest",
            RouteOrigin::Api => "api",
        }
    }
}

/// A route and the function it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoute {
    /// Method and path pattern.
    pub spec: RouteSpec,
    /// The function it leads to.
    pub function: String,
    /// Where it came from.
    pub origin: RouteOrigin,
}

impl Store {
    /// Every route, ordered by path then method.
    ///
    /// # Errors
    /// [`Error::Database`], or [`Error::Corrupt`] for a row that no longer parses.
    pub fn routes(&self) -> Result<Vec<StoredRoute>> {
        let conn = self.lock();
        all_routes(&conn)
    }

    /// Adds a route to `function` by hand.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown function, [`Error::RouteConflict`] naming the
    /// owner of the route it collides with, [`Error::Database`].
    pub fn add_route(&self, function: &FunctionName, spec: &RouteSpec) -> Result<StoredRoute> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::db("begin route"))?;
        let known: bool = tx
            .query_row("SELECT COUNT(*) FROM functions WHERE name = ?1", params![function.as_str()], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(Error::db("read function"))?
            > 0;
        if !known {
            return Err(Error::NotFound { function: function.to_string() });
        }
        if let Some(clash) = all_routes(&tx)?.into_iter().find(|r| r.spec.conflicts_with(spec)) {
            return Err(conflict(spec, &clash));
        }
        insert(&tx, function, spec, RouteOrigin::Api, now_ms())?;
        tx.commit().map_err(Error::db("commit route"))?;
        Ok(StoredRoute { spec: spec.clone(), function: function.to_string(), origin: RouteOrigin::Api })
    }

    /// Removes the route with exactly this method and path.
    ///
    /// # Errors
    /// [`Error::RouteNotFound`], [`Error::Database`].
    pub fn remove_route(&self, spec: &RouteSpec) -> Result<StoredRoute> {
        let conn = self.lock();
        let found = all_routes(&conn)?.into_iter().find(|r| r.spec == *spec);
        let Some(found) = found else { return Err(Error::RouteNotFound { route: spec.to_string() }) };
        conn.execute(
            "DELETE FROM routes WHERE method = ?1 AND path = ?2",
            params![spec.method.to_string(), spec.path.as_str()],
        )
        .map_err(Error::db("remove route"))?;
        Ok(found)
    }
}

/// Replaces `function`'s manifest routes with `routes`, inside the deploy's transaction.
/// Its hand-made routes stay; a manifest route that collides with any route of another
/// function, or with one of its own hand-made ones, fails the deploy.
pub(super) fn replace_manifest_routes(
    tx: &Connection,
    function: &FunctionName,
    routes: &[RouteSpec],
    now: i64,
) -> Result<()> {
    tx.execute(
        "DELETE FROM routes WHERE function = ?1 AND origin = ?2",
        params![function.as_str(), RouteOrigin::Manifest.as_str()],
    )
    .map_err(Error::db("replace routes"))?;
    let existing = all_routes(tx)?;
    for spec in routes {
        if let Some(clash) = existing.iter().find(|r| r.spec.conflicts_with(spec)) {
            return Err(conflict(spec, clash));
        }
        insert(tx, function, spec, RouteOrigin::Manifest, now)?;
    }
    Ok(())
}

fn conflict(spec: &RouteSpec, clash: &StoredRoute) -> Error {
    Error::RouteConflict { route: spec.to_string(), existing: clash.spec.to_string(), owner: clash.function.clone() }
}

fn insert(
    tx: &rusqlite::Connection,
    function: &FunctionName,
    spec: &RouteSpec,
    origin: RouteOrigin,
    now: i64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO routes (method, path, function, origin, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![spec.method.to_string(), spec.path.as_str(), function.as_str(), origin.as_str(), now],
    )
    .map_err(Error::db("record route"))?;
    Ok(())
}

fn all_routes(conn: &rusqlite::Connection) -> Result<Vec<StoredRoute>> {
    let mut stmt = conn
        .prepare("SELECT method, path, function, origin FROM routes ORDER BY path, method")
        .map_err(Error::db("list routes"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
        })
        .map_err(Error::db("list routes"))?;
    let rows: Vec<_> = rows.collect::<rusqlite::Result<_>>().map_err(Error::db("list routes"))?;
    rows.into_iter()
        .map(|(method, path, function, origin)| {
            let corrupt = |reason: String| Error::Corrupt { function: function.clone(), reason };
            let method = RouteMethod::parse(&method).map_err(corrupt)?;
            let path = RoutePattern::parse(&path).map_err(corrupt)?;
            let origin =
                if origin == RouteOrigin::Manifest.as_str() { RouteOrigin::Manifest } else { RouteOrigin::Api };
            Ok(StoredRoute { spec: RouteSpec { method, path }, function, origin })
        })
        .collect()
}
