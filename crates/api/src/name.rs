//! Validated identifiers. No raw `String` names cross a crate boundary.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The longest function name: a revision id adds `-NNNNN` and the whole must stay a
/// DNS label (63 bytes) so the same names work as Kubernetes object names later.
pub const MAX_NAME_LEN: usize = 50;

/// A function's name: a lowercase DNS label (`[a-z]([-a-z0-9]*[a-z0-9])?`, at most
/// [`MAX_NAME_LEN`] bytes). It appears in URLs, file names and revision ids, so the rule
/// is strict on purpose.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct FunctionName(String);

impl FunctionName {
    /// Checks `name` against the naming rule.
    ///
    /// # Errors
    /// [`Error::InvalidName`] saying which part of the rule is broken.
    pub fn new(name: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidName { name: name.to_owned(), reason };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("it is longer than 50 characters"));
        }
        if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(invalid("use only lowercase letters, digits and `-` (a DNS label)"));
        }
        if !name.as_bytes()[0].is_ascii_lowercase() {
            return Err(invalid("it must start with a lowercase letter"));
        }
        if name.ends_with('-') {
            return Err(invalid("it must not end with `-`"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for FunctionName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl<'de> serde::Deserialize<'de> for FunctionName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// One immutable revision of a function: `NAME-00001`, `NAME-00002`, … (Knative style).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevisionId {
    function: FunctionName,
    number: u32,
}

impl RevisionId {
    /// The revision numbered `number` of `function`.
    pub fn new(function: FunctionName, number: u32) -> Self {
        Self { function, number }
    }

    /// The function this revision belongs to.
    pub fn function(&self) -> &FunctionName {
        &self.function
    }

    /// The revision's sequence number, starting at 1.
    pub fn number(&self) -> u32 {
        self.number
    }
}

impl fmt::Display for RevisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:05}", self.function, self.number)
    }
}

impl serde::Serialize for RevisionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The id of one call: a UUIDv7 (so ids sort by time) unless the caller sent its own
/// `X-Call-Id`, which is kept when it is short, printable ASCII. Shared, not copied: a
/// call's id is held by its slot, its instance and its record at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallId(std::sync::Arc<str>);

impl serde::Serialize for CallId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for CallId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Self(String::deserialize(d)?.into()))
    }
}

impl CallId {
    /// The longest caller-supplied id that is kept as is.
    pub const MAX_LEN: usize = 128;

    /// A fresh id, ordered by time to the millisecond.
    pub fn generate() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self::generate_at(millis)
    }

    /// A fresh id made at `millis` (ms since the epoch), which [`CallId::millis`] gives
    /// back: a call recorded with the time it arrived can be found by its id alone.
    pub fn generate_at(millis: u64) -> Self {
        let id = match random_id_bytes() {
            Some(random) => uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid(),
            None => uuid::Uuid::now_v7(),
        };
        Self::from_uuid(id)
    }

    /// Keeps a caller's id when it is 1–128 bytes of visible ASCII; otherwise makes one.
    pub fn from_caller(value: Option<&[u8]>) -> Self {
        Self::from_caller_or(value, Self::generate)
    }

    /// As [`CallId::from_caller`], making one at `millis` when the caller's will not do.
    pub fn from_caller_at(value: Option<&[u8]>, millis: u64) -> Self {
        Self::from_caller_or(value, || Self::generate_at(millis))
    }

    fn from_caller_or(value: Option<&[u8]>, make: impl FnOnce() -> Self) -> Self {
        match value {
            Some(v) if !v.is_empty() && v.len() <= Self::MAX_LEN && v.iter().all(|b| b.is_ascii_graphic()) => {
                // All bytes are visible ASCII, so this is valid UTF-8.
                Self(String::from_utf8_lossy(v).into())
            }
            _ => make(),
        }
    }

    /// The id written as `uuid` is (lower case, hyphenated).
    pub fn from_uuid(uuid: uuid::Uuid) -> Self {
        let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
        Self((&*uuid.hyphenated().encode_lower(&mut text)).into())
    }

    /// The UUIDv7 this id is written as, when it is one in the form gust writes (lower
    /// case, hyphenated), so that it round-trips through its 16 bytes.
    pub fn as_uuid_v7(&self) -> Option<uuid::Uuid> {
        Self::parse_v7(&self.0).map(|(uuid, _)| uuid)
    }

    /// The time (ms since the epoch) a UUIDv7 id carries: for an id gust made, when it
    /// was made.
    pub fn millis(&self) -> Option<u64> {
        Self::parse_v7(&self.0).map(|(_, millis)| millis)
    }

    /// `text` read as gust writes a UUIDv7 (lower case, hyphenated), with the time it
    /// carries: one parse for callers that need both.
    pub fn parse_v7(text: &str) -> Option<(uuid::Uuid, u64)> {
        if text.len() != uuid::fmt::Hyphenated::LENGTH {
            return None;
        }
        let uuid = uuid::Uuid::try_parse(text).ok().filter(|u| u.get_version_num() == 7)?;
        let mut written = [0; uuid::fmt::Hyphenated::LENGTH];
        if *uuid.hyphenated().encode_lower(&mut written) != *text {
            return None;
        }
        let (secs, nanos) = uuid.get_timestamp()?.to_unix();
        Some((uuid, secs.saturating_mul(1000).saturating_add(u64::from(nanos / 1_000_000))))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other` is this very id (the same allocation), not just an equal one: a
    /// pointer comparison, for telling apart the calls an instance holds.
    pub fn is(&self, other: &CallId) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The random part of a call id, from the OS's generator drawn 4 KB at a time per
/// thread: one `getrandom` call per 400 ids instead of one per id, which was one in five
/// of the gateway's system calls per proxied call. `None` only if the OS has none.
fn random_id_bytes() -> Option<[u8; 10]> {
    use std::cell::RefCell;
    const BATCH: usize = 4000;
    thread_local! {
        static RANDOM: RefCell<(Box<[u8; BATCH]>, usize)> = RefCell::new((Box::new([0; BATCH]), BATCH));
    }
    RANDOM.with_borrow_mut(|(bytes, used)| {
        if *used == BATCH {
            getrandom::fill(&mut bytes[..]).ok()?;
            *used = 0;
        }
        let mut out = [0; 10];
        out.copy_from_slice(&bytes[*used..*used + 10]);
        *used += 10;
        Some(out)
    })
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names() {
        for ok in ["a", "hello", "hello-world-2", "x1"] {
            assert!(FunctionName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Hello", "1abc", "-a", "a-", "a_b", "a.b", "a/b", &"a".repeat(51)] {
            assert!(FunctionName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn revision_ids_are_zero_padded() {
        let r = RevisionId::new(FunctionName::new("hello").unwrap(), 7);
        assert_eq!(r.to_string(), "hello-00007");
    }

    #[test]
    fn caller_call_ids() {
        assert_eq!(CallId::from_caller(Some(b"abc-1")).as_str(), "abc-1");
        assert_ne!(CallId::from_caller(Some(b"has space")).as_str(), "has space");
        assert_eq!(CallId::from_caller(None).as_str().len(), 36);
    }

    #[test]
    fn an_id_made_at_a_time_gives_it_back_and_round_trips_through_its_bytes() {
        let id = CallId::generate_at(1_764_000_000_123);
        assert_eq!(id.millis(), Some(1_764_000_000_123));
        let uuid = id.as_uuid_v7().expect("v7");
        assert_eq!(CallId::from_uuid(uuid), id);
        assert_eq!(CallId::from_caller_at(None, 5).millis(), Some(5));
        // A caller's id is not gust's, even when it is a UUID in another form.
        let upper = CallId::from_caller(Some(id.as_str().to_uppercase().as_bytes()));
        assert_eq!((upper.as_uuid_v7(), upper.millis()), (None, None));
        assert_eq!(CallId::from_caller(Some(b"abc")).millis(), None);
        let v4 = CallId::from_caller(Some(b"9b2e5a6c-3f0e-4d1a-8b7c-1e2f3a4b5c6d"));
        assert_eq!(v4.millis(), None);
    }

    #[test]
    fn generated_call_ids_are_distinct_v7_uuids_in_time_order() {
        // More than one batch of random bytes.
        let ids: Vec<uuid::Uuid> = (0..1000).map(|_| CallId::generate().as_str().parse().expect("a uuid")).collect();
        assert!(ids.iter().all(|u| u.get_version_num() == 7));
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        let times: Vec<(u64, u32)> = ids.iter().map(|u| u.get_timestamp().expect("v7").to_unix()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "time ordered");
    }
}
