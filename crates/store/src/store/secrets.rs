//! Secrets: named values a function may read (`secrets = ["db"]`), kept in the store
//! and handed to instances as files, never shown by the API.

use rusqlite::{OptionalExtension, params};

use super::{Store, now_ms};
use crate::{Error, Result};

/// The largest secret value, as Kubernetes caps a Secret at 1 MiB and OpenFaaS follows;
/// gust keeps them smaller, since each is written into every instance that reads it.
pub const MAX_SECRET: usize = 64 << 10;

/// A secret as listed: its name and times, never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// The name.
    pub name: String,
    /// When it was created, in ms since the epoch.
    pub created_ms: i64,
    /// When its value last changed.
    pub updated_ms: i64,
}

impl Store {
    /// Stores a secret: `replace` overwrites one that exists; otherwise an existing name
    /// is [`Error::SecretExists`]. Returns whether it was created.
    ///
    /// # Errors
    /// [`Error::SecretExists`], [`Error::SecretTooLarge`], [`Error::Database`].
    pub fn put_secret(&self, name: &str, value: &[u8], replace: bool) -> Result<bool> {
        if value.len() > MAX_SECRET {
            return Err(Error::SecretTooLarge { name: name.to_owned(), max: MAX_SECRET });
        }
        let conn = self.lock();
        let now = now_ms();
        let exists = conn
            .query_row("SELECT 1 FROM secrets WHERE name = ?1", params![name], |_| Ok(()))
            .optional()
            .map_err(Error::db("read secret"))?
            .is_some();
        match (exists, replace) {
            (true, false) => Err(Error::SecretExists { name: name.to_owned() }),
            (true, true) => {
                conn.execute(
                    "UPDATE secrets SET value = ?2, updated_ms = ?3 WHERE name = ?1",
                    params![name, value, now],
                )
                .map_err(Error::db("update secret"))?;
                Ok(false)
            }
            (false, _) => {
                conn.execute(
                    "INSERT INTO secrets (name, value, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?3)",
                    params![name, value, now],
                )
                .map_err(Error::db("store secret"))?;
                Ok(true)
            }
        }
    }

    /// Every secret's name and times, by name.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn secrets(&self) -> Result<Vec<SecretInfo>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT name, created_ms, updated_ms FROM secrets ORDER BY name")
            .map_err(Error::db("list secrets"))?;
        let rows = stmt
            .query_map([], |r| Ok(SecretInfo { name: r.get(0)?, created_ms: r.get(1)?, updated_ms: r.get(2)? }))
            .map_err(Error::db("list secrets"))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(Error::db("list secrets"))
    }

    /// The values of `names`, in order.
    ///
    /// # Errors
    /// [`Error::SecretNotFound`] for a name with no secret, [`Error::Database`].
    pub fn secret_values(&self, names: &[String]) -> Result<Vec<(String, Vec<u8>)>> {
        let conn = self.lock();
        names
            .iter()
            .map(|n| {
                conn.query_row("SELECT value FROM secrets WHERE name = ?1", params![n], |r| r.get::<_, Vec<u8>>(0))
                    .optional()
                    .map_err(Error::db("read secret"))?
                    .map(|v| (n.clone(), v))
                    .ok_or_else(|| Error::SecretNotFound { name: n.clone() })
            })
            .collect()
    }

    /// Deletes a secret; `false` when there was none.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn delete_secret(&self, name: &str) -> Result<bool> {
        let conn = self.lock();
        let n =
            conn.execute("DELETE FROM secrets WHERE name = ?1", params![name]).map_err(Error::db("delete secret"))?;
        Ok(n > 0)
    }

    /// Which of `names` have no secret.
    pub(crate) fn missing_secrets(conn: &rusqlite::Connection, names: &[String]) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for n in names {
            let found = conn
                .query_row("SELECT 1 FROM secrets WHERE name = ?1", params![n], |_| Ok(()))
                .optional()
                .map_err(Error::db("read secret"))?;
            if found.is_none() {
                missing.push(n.clone());
            }
        }
        Ok(missing)
    }
}
