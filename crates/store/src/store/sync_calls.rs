//! Answered sync calls, recorded in bulk.
//!
//! A busy gateway answers tens of thousands of calls a second, and a row per call (a
//! B-tree insert in the table and one in each index, then a WAL page per few calls) cost
//! as much CPU as proxying the call itself. So each batch the gateway hands over is
//! packed, per function and second of arrival, into one row's blob (see [`encode`]).
//!
//! A call is found by its id alone: an id gust made is a UUIDv7 carrying the millisecond
//! the call arrived (the gateway makes it with that time), which names the second to
//! look in; an id the caller chose (`X-Call-Id`) has a row of its own in
//! `sync_call_ids` saying which second. The first record of an id is the one kept, as
//! for async calls; a caller sending back an id gust made for an earlier call is not
//! looked for when recording (that would mean a search per call), but the call gust
//! made it for is the one found.

use std::collections::{BTreeMap, HashSet};

use gust_api::{CallId, FunctionName, RevisionId};
use rusqlite::{Connection, OptionalExtension, params};

use super::calls::{CallResult, CallStatus, NewCall, StoredCall, SyncRecord};
use crate::{Error, Result};

/// Flags of a packed record: which optional parts follow, and the id's form.
const GUST_ID: u8 = 1;
const HAS_ERROR: u8 = 2;
const HAS_REVISION: u8 = 4;
const COLD_KNOWN: u8 = 8;
const COLD: u8 = 16;

/// One row being packed: the latest answer in it, its records, and the ids callers
/// chose among them.
#[derive(Default)]
struct Packing<'a> {
    ended_ms: i64,
    records: Vec<u8>,
    callers: Vec<&'a str>,
}

/// Records `calls` (in the caller's transaction). A caller's id already recorded, as a
/// sync or an async call, keeps its first record and this one is dropped.
pub(super) fn record(conn: &Connection, calls: &[SyncRecord]) -> Result<()> {
    let db = Error::db("record sync calls");
    let mut rows: BTreeMap<(&str, i64), Packing<'_>> = BTreeMap::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for call in calls {
        let second = call.arrived_ms.div_euclid(1000);
        let gust_id = CallId::parse_v7(call.id.as_str())
            .filter(|(_, ms)| i64::try_from(*ms).ok() == Some(call.arrived_ms))
            .map(|(uuid, _)| uuid);
        let id = call.id.as_str();
        if gust_id.is_none() && (!seen.insert(id) || taken(conn, &call.id)?) {
            continue;
        }
        let row = rows.entry((&*call.function, second)).or_default();
        row.ended_ms = row.ended_ms.max(call.answered_ms);
        encode(call, gust_id, &mut row.records);
        if gust_id.is_none() {
            row.callers.push(id);
        }
    }
    let mut insert = conn
        .prepare_cached("INSERT INTO sync_calls (function, second, ended_ms, records) VALUES (?1, ?2, ?3, ?4)")
        .map_err(db)?;
    let mut claim = conn
        .prepare_cached("INSERT INTO sync_call_ids (id, second, ended_ms) VALUES (?1, ?2, ?3)")
        .map_err(Error::db("record sync call ids"))?;
    for ((function, second), row) in rows {
        insert.execute(params![function, second, row.ended_ms, row.records]).map_err(Error::db("record sync calls"))?;
        for id in row.callers {
            claim.execute(params![id, second, row.ended_ms]).map_err(Error::db("record sync call ids"))?;
        }
    }
    Ok(())
}

/// Whether a caller's id is already some call's (an async call's, or a sync call's
/// the caller chose it for).
fn taken(conn: &Connection, id: &CallId) -> Result<bool> {
    let known = |sql: &str| conn.query_row(sql, params![id.as_str()], |_| Ok(())).optional().map(|r| r.is_some());
    Ok(known("SELECT 1 FROM calls WHERE id = ?1").map_err(Error::db("read call"))?
        || known("SELECT 1 FROM sync_call_ids WHERE id = ?1").map_err(Error::db("read call"))?)
}

/// The recorded sync call `id`, if any: first where its time says (an id gust made,
/// which wins over a caller's later use of it), then among the ids callers chose.
pub(super) fn find(conn: &Connection, id: &str) -> Result<Option<StoredCall>> {
    let wanted = Wanted::new(id);
    if let Some(second) = wanted.second
        && let Some(call) = find_in(conn, second, &wanted)?
    {
        return Ok(Some(call));
    }
    let chosen: Option<i64> = conn
        .query_row("SELECT second FROM sync_call_ids WHERE id = ?1", params![id], |r| r.get(0))
        .optional()
        .map_err(Error::db("read call"))?;
    match chosen {
        Some(second) => find_in(conn, second, &wanted),
        None => Ok(None),
    }
}

/// An id being looked for, read once: its text and, for a UUIDv7, its 16 bytes (what a
/// packed record of an id gust made holds) and the second it names.
struct Wanted<'a> {
    text: &'a str,
    uuid: Option<[u8; 16]>,
    second: Option<i64>,
}

impl<'a> Wanted<'a> {
    fn new(text: &'a str) -> Self {
        let v7 = CallId::parse_v7(text);
        Self {
            text,
            uuid: v7.map(|(uuid, _)| *uuid.as_bytes()),
            second: v7.and_then(|(_, ms)| i64::try_from(ms).ok()).map(|ms| ms.div_euclid(1000)),
        }
    }
}

/// The call `wanted` among those that arrived in `second`.
fn find_in(conn: &Connection, second: i64, wanted: &Wanted<'_>) -> Result<Option<StoredCall>> {
    let mut stmt = conn
        .prepare_cached("SELECT function, records FROM sync_calls WHERE second = ?1")
        .map_err(Error::db("read call"))?;
    let mut rows = stmt.query(params![second]).map_err(Error::db("read call"))?;
    while let Some(row) = rows.next().map_err(Error::db("read call"))? {
        let function: String = row.get(0).map_err(Error::db("read call"))?;
        if let Some(call) = locate(&function, blob(row).map_err(Error::db("read call"))?, wanted) {
            return Ok(Some(stored(call)));
        }
    }
    Ok(None)
}

/// A row's packed records (column 1), borrowed from the row.
fn blob<'r>(row: &'r rusqlite::Row<'_>) -> rusqlite::Result<&'r [u8]> {
    row.get_ref(1)?.as_blob().map_err(Into::into)
}

/// At least the newest `limit` sync calls of `function` with `status` (if given),
/// newest first: whole seconds are read, so the caller sorts and cuts.
pub(super) fn newest(
    conn: &Connection,
    function: &str,
    status: Option<CallStatus>,
    limit: u32,
) -> Result<Vec<StoredCall>> {
    if matches!(status, Some(CallStatus::Queued | CallStatus::Running | CallStatus::Dead)) {
        return Ok(Vec::new());
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let db = Error::db("list calls");
    let mut stmt = conn
        .prepare_cached("SELECT second, records FROM sync_calls WHERE function = ?1 ORDER BY second DESC")
        .map_err(db)?;
    let mut rows = stmt.query(params![function]).map_err(Error::db("list calls"))?;
    let mut out = Vec::new();
    let mut current = None;
    while let Some(row) = rows.next().map_err(Error::db("list calls"))? {
        let second: i64 = row.get(0).map_err(Error::db("list calls"))?;
        if current != Some(second) {
            if out.len() >= limit {
                break;
            }
            current = Some(second);
        }
        let blob = row.get_ref(1).and_then(|v| v.as_blob().map_err(Into::into)).map_err(Error::db("list calls"))?;
        out.extend(decode(function, blob).into_iter().map(stored).filter(|c| status.is_none_or(|s| s == c.status)));
    }
    Ok(out)
}

/// Forgets the sync calls answered before `before_ms` (a packed row goes once all its
/// calls have); returns how many rows went.
pub(super) fn prune(conn: &Connection, before_ms: i64) -> Result<usize> {
    let ids = conn
        .execute("DELETE FROM sync_call_ids WHERE ended_ms < ?1", params![before_ms])
        .map_err(Error::db("prune calls"))?;
    let rows = conn
        .execute("DELETE FROM sync_calls WHERE ended_ms < ?1", params![before_ms])
        .map_err(Error::db("prune calls"))?;
    Ok(ids + rows)
}

/// A sync call as the API shows any call: one attempt, final, its answer's status.
fn stored(c: SyncRecord) -> StoredCall {
    let revision = c.revision.and_then(|n| Some(RevisionId::new(FunctionName::new(&c.function).ok()?, n).to_string()));
    StoredCall {
        status: if c.status < 400 { CallStatus::Succeeded } else { CallStatus::Failed },
        attempts: 1,
        accepted_ms: c.arrived_ms,
        age_from_ms: c.arrived_ms,
        started_ms: Some(c.arrived_ms),
        ended_ms: Some(c.answered_ms),
        revision,
        cold_start: c.cold_start,
        result: Some(CallResult { status: c.status, headers: Vec::new(), body: Vec::new() }),
        error: c.error,
        call: NewCall {
            id: c.id,
            function: c.function.to_string(),
            method: c.method.into_owned(),
            path: c.path,
            headers: Vec::new(),
            body: Vec::new(),
            callback_url: None,
        },
    }
}

/// Appends `c` to `out`: flags, the id (16 bytes when gust made it, else its length and
/// text), arrival (i64 ms), time to answer (u32 ms), status (u16), the revision number
/// (u32) if known, the method (u16 length), path and error (u32 lengths); little-endian.
fn encode(c: &SyncRecord, gust_id: Option<uuid::Uuid>, out: &mut Vec<u8>) {
    let mut flags = 0;
    for (set, flag) in [
        (gust_id.is_some(), GUST_ID),
        (c.error.is_some(), HAS_ERROR),
        (c.revision.is_some(), HAS_REVISION),
        (c.cold_start.is_some(), COLD_KNOWN),
        (c.cold_start == Some(true), COLD),
    ] {
        if set {
            flags |= flag;
        }
    }
    out.push(flags);
    match gust_id {
        Some(uuid) => out.extend_from_slice(uuid.as_bytes()),
        None => put(out, c.id.as_str().as_bytes(), 1),
    }
    out.extend_from_slice(&c.arrived_ms.to_le_bytes());
    let took = u32::try_from(c.answered_ms.saturating_sub(c.arrived_ms).max(0)).unwrap_or(u32::MAX);
    out.extend_from_slice(&took.to_le_bytes());
    out.extend_from_slice(&c.status.to_le_bytes());
    if let Some(n) = c.revision {
        out.extend_from_slice(&n.to_le_bytes());
    }
    put(out, c.method.as_bytes(), 2);
    put(out, c.path.as_bytes(), 4);
    if let Some(e) = &c.error {
        put(out, e.as_bytes(), 4);
    }
}

/// Appends `bytes` after their length in `width` bytes (cut to what that can say).
fn put(out: &mut Vec<u8>, bytes: &[u8], width: usize) {
    let max = if width >= 8 { usize::MAX } else { (1usize << (8 * width)) - 1 };
    let bytes = bytes.get(..bytes.len().min(max)).unwrap_or_default();
    out.extend_from_slice(&bytes.len().to_le_bytes()[..width]);
    out.extend_from_slice(bytes);
}

/// The records packed in `blob` for `function`, up to the first that does not parse (a
/// damaged row loses its tail, never the server).
fn decode(function: &str, blob: &[u8]) -> Vec<SyncRecord> {
    let mut r = Reader(blob);
    let mut out = Vec::new();
    while !r.0.is_empty() {
        match r.record(function) {
            Some(c) => out.push(c),
            None => {
                tracing::warn!(function, "a packed sync call record does not parse; the rest of its row is skipped");
                break;
            }
        }
    }
    out
}

/// The record `wanted` in `blob`, stepping over the others without decoding them (a
/// second of a busy server holds tens of thousands).
fn locate(function: &str, blob: &[u8], wanted: &Wanted<'_>) -> Option<SyncRecord> {
    let mut r = Reader(blob);
    while !r.0.is_empty() {
        let start = r.0;
        let [flags] = r.array()?;
        let matched =
            if flags & GUST_ID != 0 { wanted.uuid == Some(r.array()?) } else { r.bytes(1)? == wanted.text.as_bytes() };
        if matched {
            return Reader(start).record(function);
        }
        // Arrival, time to answer, status; the revision; method, path and error.
        r.take(8 + 4 + 2 + if flags & HAS_REVISION != 0 { 4 } else { 0 })?;
        r.bytes(2)?;
        r.bytes(4)?;
        if flags & HAS_ERROR != 0 {
            r.bytes(4)?;
        }
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// Bytes after their length in `width` bytes.
    fn bytes(&mut self, width: usize) -> Option<&'a [u8]> {
        let mut len = [0u8; 8];
        len.get_mut(..width)?.copy_from_slice(self.take(width)?);
        self.take(usize::try_from(u64::from_le_bytes(len)).ok()?)
    }

    fn text(&mut self, width: usize) -> Option<String> {
        String::from_utf8(self.bytes(width)?.to_vec()).ok()
    }

    fn record(&mut self, function: &str) -> Option<SyncRecord> {
        let [flags] = self.array()?;
        let id = if flags & GUST_ID != 0 {
            CallId::from_uuid(uuid::Uuid::from_bytes(self.array()?))
        } else {
            CallId::from_caller(Some(self.text(1)?.as_bytes()))
        };
        let arrived_ms = i64::from_le_bytes(self.array()?);
        let took = u32::from_le_bytes(self.array()?);
        let status = u16::from_le_bytes(self.array()?);
        let revision = if flags & HAS_REVISION != 0 { Some(u32::from_le_bytes(self.array()?)) } else { None };
        let method = self.text(2)?;
        let path = self.text(4)?;
        let error = if flags & HAS_ERROR != 0 { Some(self.text(4)?) } else { None };
        Some(SyncRecord {
            id,
            function: function.into(),
            method: method.into(),
            path,
            status,
            error,
            arrived_ms,
            answered_ms: arrived_ms.saturating_add(i64::from(took)),
            revision,
            cold_start: (flags & COLD_KNOWN != 0).then_some(flags & COLD != 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: CallId, at: i64) -> SyncRecord {
        SyncRecord {
            id,
            function: "f".into(),
            method: "POST".into(),
            path: "/a?b=c".into(),
            status: 201,
            error: None,
            arrived_ms: at,
            answered_ms: at + 7,
            revision: Some(3),
            cold_start: Some(true),
        }
    }

    #[test]
    fn records_round_trip_through_their_packing() {
        let at = 1_764_000_000_123;
        let gust = CallId::generate_at(at as u64);
        let mut failed = call(CallId::from_caller(Some(b"mine-1")), at);
        failed.error = Some("the function did not answer".into());
        failed.revision = None;
        failed.cold_start = None;
        failed.status = 504;
        let mut blob = Vec::new();
        encode(&call(gust.clone(), at), gust.as_uuid_v7(), &mut blob);
        encode(&failed, None, &mut blob);
        let back = decode("f", &blob);
        assert_eq!(back.len(), 2);
        let first = &back[0];
        assert_eq!(
            (&first.id, first.answered_ms, first.revision, first.cold_start),
            (&gust, at + 7, Some(3), Some(true))
        );
        assert_eq!((&*first.method, first.path.as_str(), first.status), ("POST", "/a?b=c", 201));
        let second = &back[1];
        assert_eq!((second.id.as_str(), second.error.as_deref()), ("mine-1", Some("the function did not answer")));
        assert_eq!((second.revision, second.cold_start, second.status), (None, None, 504));
    }

    #[test]
    fn a_record_is_located_by_its_id_among_others() {
        let at = 1_764_000_000_000;
        let mut blob = Vec::new();
        let ids: Vec<CallId> = (0..50)
            .map(|i| {
                if i % 2 == 0 {
                    CallId::generate_at(at as u64)
                } else {
                    CallId::from_caller(Some(format!("c{i}").as_bytes()))
                }
            })
            .collect();
        for (i, id) in ids.iter().enumerate() {
            let mut c = call(id.clone(), at + i as i64);
            c.error = (i % 3 == 0).then(|| format!("error {i}"));
            c.revision = (i % 5 != 0).then_some(1);
            encode(&c, id.as_uuid_v7().filter(|_| i % 2 == 0), &mut blob);
        }
        for (i, id) in ids.iter().enumerate() {
            let found = locate("f", &blob, &Wanted::new(id.as_str())).expect("located");
            assert_eq!((&found.id, found.arrived_ms), (id, at + i as i64));
            assert_eq!(found.error, (i % 3 == 0).then(|| format!("error {i}")));
        }
        assert!(locate("f", &blob, &Wanted::new(CallId::generate_at(at as u64).as_str())).is_none());
        assert!(locate("f", &blob, &Wanted::new("c2")).is_none());
        assert!(locate("f", &blob[..blob.len() - 1], &Wanted::new(ids[49].as_str())).is_none());
    }

    #[test]
    fn a_damaged_blob_yields_what_parses_before_the_damage() {
        let at = 1_764_000_000_000;
        let mut blob = Vec::new();
        encode(&call(CallId::from_caller(Some(b"a")), at), None, &mut blob);
        let whole = blob.len();
        encode(&call(CallId::from_caller(Some(b"b")), at), None, &mut blob);
        for cut in 0..blob.len() {
            let n = decode("f", &blob[..cut]).len();
            assert_eq!(n, usize::from(cut >= whole), "cut at {cut}");
        }
        let mut garbage = blob.clone();
        garbage[whole + 1] = 200; // the second id's length, past the blob's end
        assert_eq!(decode("f", &garbage).len(), 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 500,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// A row's bytes are whatever the database file holds: any of them decode to
        /// what parses, or stop, and never panic or allocate what a length claims.
        #[test]
        fn any_bytes_decode_or_stop_without_a_panic(
            blob in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        ) {
            let _ = decode("f", &blob);
            let _ = locate("f", &blob, &Wanted::new("x"));
            let _ = locate("f", &blob, &Wanted::new(CallId::generate_at(1).as_str()));
        }

        /// The same for a real row with one byte changed anywhere.
        #[test]
        fn a_real_row_with_a_byte_changed_never_panics(at in 0usize..10_000, byte in proptest::prelude::any::<u8>()) {
            let mut blob = Vec::new();
            for i in 0..8 {
                let id = if i % 2 == 0 { CallId::generate_at(5) } else { CallId::from_caller(Some(b"mine")) };
                let mut c = call(id.clone(), 5);
                c.error = (i % 3 == 0).then(|| "no".to_owned());
                encode(&c, id.as_uuid_v7(), &mut blob);
            }
            let at = at % blob.len();
            blob[at] = byte;
            let _ = decode("f", &blob);
            let _ = locate("f", &blob, &Wanted::new("mine"));
        }
    }
}
