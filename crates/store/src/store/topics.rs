//! Topics: durable, partitioned logs. A message is appended to one partition (by its
//! key's hash, so one key keeps one partition and its order) and is on disk before the
//! publisher is answered. Each consuming function commits, per partition, the offset it
//! has processed; it resumes after it, so delivery is at least once. Retention trims
//! the oldest messages of a partition by age and by size.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, now_ms};
use crate::{Error, Result};

/// A topic's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Its name.
    pub name: String,
    /// How many partitions it has.
    pub partitions: u32,
    /// Messages older than this many milliseconds are deleted.
    pub retention_ms: i64,
    /// A partition holding more than this many bytes of bodies loses its oldest messages.
    pub retention_bytes: i64,
}

/// One message of a partition.
#[derive(Debug, Clone)]
pub struct Message {
    /// The partition.
    pub partition: u32,
    /// Its place in the partition, from 0.
    pub offset: i64,
    /// The key it was published with.
    pub key: Option<String>,
    /// The data.
    pub body: Vec<u8>,
    /// When it was appended (ms since the epoch).
    pub published_ms: i64,
}

/// Where one partition stands for one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The partition.
    pub partition: u32,
    /// The offset the next message will get.
    pub end: i64,
    /// The oldest offset still kept.
    pub start: i64,
}

impl Store {
    /// Creates a topic.
    ///
    /// # Errors
    /// [`Error::TopicExists`], [`Error::Database`].
    pub fn create_topic(&self, t: &TopicInfo) -> Result<()> {
        let n = self
            .lock()
            .execute(
                "INSERT INTO topics (name, partitions, retention_ms, retention_bytes, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(name) DO NOTHING",
                params![t.name, t.partitions, t.retention_ms, t.retention_bytes, now_ms()],
            )
            .map_err(Error::db("create topic"))?;
        if n == 0 {
            return Err(Error::TopicExists { topic: t.name.clone() });
        }
        Ok(())
    }

    /// Every topic, by name.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn topics(&self) -> Result<Vec<TopicInfo>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT name, partitions, retention_ms, retention_bytes FROM topics ORDER BY name")
            .map_err(Error::db("list topics"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(TopicInfo {
                    name: r.get(0)?,
                    partitions: r.get(1)?,
                    retention_ms: r.get(2)?,
                    retention_bytes: r.get(3)?,
                })
            })
            .map_err(Error::db("list topics"))?;
        rows.collect::<rusqlite::Result<_>>().map_err(Error::db("list topics"))
    }

    /// One topic.
    ///
    /// # Errors
    /// [`Error::TopicNotFound`], [`Error::Database`].
    pub fn topic(&self, name: &str) -> Result<TopicInfo> {
        topic(&self.lock(), name)
    }

    /// Deletes a topic with its messages and offsets.
    ///
    /// # Errors
    /// [`Error::TopicNotFound`], [`Error::Database`].
    pub fn remove_topic(&self, name: &str) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::db("begin remove topic"))?;
        for sql in [
            "DELETE FROM messages WHERE topic = ?1",
            "DELETE FROM offsets WHERE topic = ?1",
            "DELETE FROM partition_ends WHERE topic = ?1",
        ] {
            tx.execute(sql, params![name]).map_err(Error::db("remove topic"))?;
        }
        let n = tx.execute("DELETE FROM topics WHERE name = ?1", params![name]).map_err(Error::db("remove topic"))?;
        if n == 0 {
            return Err(Error::TopicNotFound { topic: name.to_owned() });
        }
        tx.commit().map_err(Error::db("commit remove topic"))
    }

    /// Appends a message: to the partition its key hashes to, or to `fallback` (taken
    /// modulo the partitions) without a key. Returns its partition and offset once it is
    /// on disk; the partition's retention is applied in the same transaction.
    ///
    /// # Errors
    /// [`Error::TopicNotFound`], [`Error::Database`].
    pub fn publish(&self, name: &str, key: Option<&str>, body: &[u8], fallback: u32) -> Result<(u32, i64)> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::db("begin publish"))?;
        let t = topic(&tx, name)?;
        let partition = match key {
            Some(k) => fnv1a(k.as_bytes()) % t.partitions,
            None => fallback % t.partitions,
        };
        let offset: i64 = tx
            .query_row(
                "SELECT COALESCE((SELECT next FROM partition_ends WHERE topic = ?1 AND partition = ?2), 0)",
                params![name, partition],
                |r| r.get(0),
            )
            .map_err(Error::db("number message"))?;
        let now = now_ms();
        tx.execute(
            "INSERT INTO messages (topic, partition, offset, key, body, published_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![name, partition, offset, key, body, now],
        )
        .map_err(Error::db("append message"))?;
        tx.execute(
            "INSERT INTO partition_ends (topic, partition, next) VALUES (?1, ?2, ?3)
             ON CONFLICT(topic, partition) DO UPDATE SET next = excluded.next",
            params![name, partition, offset + 1],
        )
        .map_err(Error::db("record partition end"))?;
        trim(&tx, &t, partition, now)?;
        tx.commit().map_err(Error::db("commit publish"))?;
        Ok((partition, offset))
    }

    /// The first message of `partition` at or after `from`, if any.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn next_message(&self, name: &str, partition: u32, from: i64) -> Result<Option<Message>> {
        self.lock()
            .query_row(
                "SELECT partition, offset, key, body, published_ms FROM messages
                 WHERE topic = ?1 AND partition = ?2 AND offset >= ?3 ORDER BY offset LIMIT 1",
                params![name, partition, from],
                |r| {
                    Ok(Message {
                        partition: r.get(0)?,
                        offset: r.get(1)?,
                        key: r.get(2)?,
                        body: r.get(3)?,
                        published_ms: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(Error::db("read message"))
    }

    /// The offset `function` resumes `partition` of `name` at (after the last it
    /// committed; 0 when it never did).
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn committed(&self, function: &str, name: &str, partition: u32) -> Result<i64> {
        self.lock()
            .query_row(
                "SELECT next FROM offsets WHERE function = ?1 AND topic = ?2 AND partition = ?3",
                params![function, name, partition],
                |r| r.get(0),
            )
            .optional()
            .map(|o| o.unwrap_or(0))
            .map_err(Error::db("read offset"))
    }

    /// Records that `function` is done with `partition` of `name` up to `next` (exclusive).
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn commit_offset(&self, function: &str, name: &str, partition: u32, next: i64) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO offsets (function, topic, partition, next) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(function, topic, partition) DO UPDATE SET next = MAX(next, excluded.next)",
                params![function, name, partition, next],
            )
            .map_err(Error::db("commit offset"))?;
        Ok(())
    }

    /// Each partition's kept range of `name`.
    ///
    /// # Errors
    /// [`Error::TopicNotFound`], [`Error::Database`].
    pub fn partitions(&self, name: &str) -> Result<Vec<PartitionState>> {
        let conn = self.lock();
        let t = topic(&conn, name)?;
        (0..t.partitions)
            .map(|p| {
                let (start, end): (Option<i64>, Option<i64>) = conn
                    .query_row(
                        "SELECT MIN(offset), (SELECT next FROM partition_ends WHERE topic = ?1 AND partition = ?2)
                         FROM messages WHERE topic = ?1 AND partition = ?2",
                        params![name, p],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(Error::db("read partition"))?;
                let end = end.unwrap_or(0);
                Ok(PartitionState { partition: p, end, start: start.unwrap_or(end) })
            })
            .collect()
    }

    /// Applies every topic's retention now; returns how many messages went.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub fn trim_topics(&self) -> Result<usize> {
        let topics = self.topics()?;
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(Error::db("begin trim"))?;
        let now = now_ms();
        let mut n = 0;
        for t in &topics {
            for p in 0..t.partitions {
                n += trim(&tx, t, p, now)?;
            }
        }
        tx.commit().map_err(Error::db("commit trim"))?;
        Ok(n)
    }
}

fn topic(conn: &Connection, name: &str) -> Result<TopicInfo> {
    conn.query_row(
        "SELECT name, partitions, retention_ms, retention_bytes FROM topics WHERE name = ?1",
        params![name],
        |r| {
            Ok(TopicInfo {
                name: r.get(0)?,
                partitions: r.get(1)?,
                retention_ms: r.get(2)?,
                retention_bytes: r.get(3)?,
            })
        },
    )
    .optional()
    .map_err(Error::db("read topic"))?
    .ok_or_else(|| Error::TopicNotFound { topic: name.to_owned() })
}

/// Deletes the oldest messages of `partition`: those older than the retention age, then
/// as many more as keep its bodies within the retention size. The newest message always
/// stays, so the partition's end offset is never lost.
fn trim(conn: &Connection, t: &TopicInfo, partition: u32, now: i64) -> Result<usize> {
    let mut n = conn
        .execute(
            "DELETE FROM messages WHERE topic = ?1 AND partition = ?2 AND published_ms < ?3
             AND offset < (SELECT MAX(offset) FROM messages WHERE topic = ?1 AND partition = ?2)",
            params![t.name, partition, now - t.retention_ms],
        )
        .map_err(Error::db("trim by age"))?;
    let total: i64 = conn
        .query_row(
            "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM messages WHERE topic = ?1 AND partition = ?2",
            params![t.name, partition],
            |r| r.get(0),
        )
        .map_err(Error::db("measure partition"))?;
    if total > t.retention_bytes {
        // Keep the newest messages whose bodies fit (at least one).
        let mut stmt = conn
            .prepare(
                "SELECT offset, LENGTH(body) FROM messages WHERE topic = ?1 AND partition = ?2 ORDER BY offset DESC",
            )
            .map_err(Error::db("measure partition"))?;
        let rows: Vec<(i64, i64)> = stmt
            .query_map(params![t.name, partition], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(Error::db("measure partition"))?
            .collect::<rusqlite::Result<_>>()
            .map_err(Error::db("measure partition"))?;
        let mut kept = 0;
        let mut cut = None;
        for (i, (offset, len)) in rows.iter().enumerate() {
            kept += len;
            if i > 0 && kept > t.retention_bytes {
                cut = Some(*offset);
                break;
            }
        }
        if let Some(cut) = cut {
            n += conn
                .execute(
                    "DELETE FROM messages WHERE topic = ?1 AND partition = ?2 AND offset <= ?3",
                    params![t.name, partition, cut],
                )
                .map_err(Error::db("trim by size"))?;
        }
    }
    Ok(n)
}

/// FNV-1a, 32 bits: a stable hash, so a key maps to the same partition on every server.
fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}
