//! Traffic: how a function's calls split over its revisions (Knative's Route), and the
//! tags that address one revision directly (`/function/NAME@candidate`).
//!
//! Pure: the store keeps a [`Traffic`] per function and changes it only through the
//! functions here, inside one transaction, so a bad request changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::FunctionName;
use crate::wire::TrafficUpdate;

/// How traffic and URLs name the newest *ready* revision, whatever its number (Knative's
/// `latestRevision: true` follows `latestReadyRevisionName` the same way), so a deploy
/// that fails its start-up check never takes the calls that follow the latest.
pub const LATEST: &str = "@latest";

/// The longest tag: it appears in URLs and, later, in host names (`TAG-NAME.DOMAIN`).
pub const MAX_TAG_LEN: usize = 32;

/// One share of a function's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// The revision number; `None` follows the latest revision as new ones are deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    /// Percent of calls, 0–100.
    pub percent: u32,
}

/// A function's traffic: shares summing to 100, and tags naming single revisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Who takes which share of calls without a tag.
    pub split: Vec<Share>,
    /// Tag → revision number.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, u32>,
}

impl Default for Traffic {
    fn default() -> Self {
        Self::latest()
    }
}

impl Traffic {
    /// Every call to the latest revision: a new function's traffic, and what a plain
    /// deploy sets (tags are kept).
    pub fn latest() -> Self {
        Self { split: vec![Share { revision: None, percent: 100 }], tags: BTreeMap::new() }
    }

    /// The shares per revision number, `latest` (the newest ready revision) put in for
    /// the floating ones, merged, none at 0 %, newest revision first. With no ready
    /// revision the floating shares go nowhere.
    pub fn resolve(&self, latest: Option<u32>) -> Vec<(u32, u32)> {
        let mut merged: BTreeMap<u32, u32> = BTreeMap::new();
        for s in &self.split {
            if let Some(n) = s.revision.or(latest) {
                *merged.entry(n).or_default() += s.percent;
            }
        }
        merged.into_iter().rev().filter(|(_, p)| *p > 0).collect()
    }

    /// The revisions kept in service: those with a share, those with a tag, and the
    /// latest ready one (always reachable as `NAME@latest`).
    pub fn referenced(&self, latest: Option<u32>) -> BTreeSet<u32> {
        let mut set: BTreeSet<u32> = self.resolve(latest).into_iter().map(|(r, _)| r).collect();
        set.extend(self.tags.values().copied());
        set.extend(latest);
        set
    }

    /// The tags naming `revision`.
    pub fn tags_of(&self, revision: u32) -> Vec<String> {
        self.tags.iter().filter(|(_, r)| **r == revision).map(|(t, _)| t.clone()).collect()
    }

    /// Checks that shares sum to 100, that tags are well-formed, and that every revision
    /// named by a share or a tag is `usable` (which says why not: it does not exist, or
    /// it failed to start).
    ///
    /// # Errors
    /// What is wrong, in words for the user.
    pub fn check(&self, usable: impl Fn(u32) -> Result<(), String>) -> Result<(), String> {
        if let Some(s) = self.split.iter().find(|s| s.percent > 100) {
            return Err(format!("a share is a percentage, 0–100, not {}", s.percent));
        }
        // At most 100 each, so a u64 sum cannot wrap whatever the request holds.
        let sum: u64 = self.split.iter().map(|s| u64::from(s.percent)).sum();
        if sum != 100 {
            let parts: Vec<String> = self.split.iter().map(|s| format!("{}%", s.percent)).collect();
            return Err(format!("traffic shares must sum to 100, not {sum} ({})", parts.join(" + ")));
        }
        for n in self.split.iter().filter_map(|s| s.revision) {
            usable(n)?;
        }
        for (tag, n) in &self.tags {
            check_tag(tag)?;
            usable(*n).map_err(|why| format!("tag `{tag}`: {why}"))?;
        }
        Ok(())
    }

    /// After a deploy that takes no traffic: shares that followed the latest revision
    /// stay on the one that was latest until now.
    fn pin_latest(&mut self, latest: u32) {
        for s in &mut self.split {
            s.revision.get_or_insert(latest);
        }
    }

    /// Tags `revision` (moving the tag if another revision had it).
    ///
    /// # Errors
    /// When the tag is not valid ([`check_tag`]).
    pub fn tag(&mut self, tag: &str, revision: u32) -> Result<(), String> {
        check_tag(tag)?;
        self.tags.insert(tag.to_owned(), revision);
        Ok(())
    }

    /// This traffic after revision `new` is deployed over `previous`, the latest ready
    /// revision (`None` when there is none): every call to the latest, tags kept, unless `no_traffic`,
    /// which keeps the split on `previous`; `tag` names `new`.
    ///
    /// # Errors
    /// `no_traffic` with no ready revision to keep the calls, or a tag that is not valid.
    pub fn deployed(
        mut self,
        previous: Option<u32>,
        new: u32,
        no_traffic: bool,
        tag: Option<&str>,
    ) -> Result<Traffic, String> {
        match (previous, no_traffic) {
            (None, true) => {
                return Err(
                    "with no revision of the function ready, this one must take its calls: deploy it without --no-traffic"
                        .to_owned()
                );
            }
            (Some(previous), true) => self.pin_latest(previous),
            (_, false) => self.split = Traffic::latest().split,
        }
        if let Some(tag) = tag {
            self.tag(tag, new)?;
        }
        Ok(self)
    }

    /// This traffic with `update` applied: tags first (so the split may use a new tag),
    /// then the split, if given, replaces the old one whole.
    ///
    /// # Errors
    /// A target that names nothing, or a result [`Traffic::check`] refuses.
    pub fn apply(&self, function: &FunctionName, update: &TrafficUpdate, latest: u32) -> Result<Traffic, String> {
        let mut next = self.clone();
        for tag in &update.untag {
            if next.tags.remove(tag).is_none() {
                return Err(format!("{function} has no tag `{tag}`"));
            }
        }
        for (tag, target) in &update.tag {
            let n = next.target(function, target)?.unwrap_or(latest);
            next.tag(tag, n)?;
        }
        if let Some(split) = &update.split {
            if split.is_empty() {
                return Err("name at least one revision or tag with its share, e.g. NAME-00002=100".to_owned());
            }
            let mut shares = Vec::with_capacity(split.len());
            for t in split {
                shares.push(Share { revision: next.target(function, &t.target)?, percent: t.percent });
            }
            next.split = shares;
        }
        Ok(next)
    }

    /// All traffic to `to`, or to the newest of `revisions` (the ready ones) before the
    /// one taking the biggest share now. Tags stay.
    ///
    /// # Errors
    /// When there is no earlier revision, or `to` names nothing.
    pub fn rollback(
        &self,
        function: &FunctionName,
        to: Option<&str>,
        latest: u32,
        revisions: &[u32],
    ) -> Result<Traffic, String> {
        let target = match to {
            Some(t) => self.target(function, t)?.unwrap_or(latest),
            None => {
                let main =
                    self.resolve(Some(latest)).into_iter().max_by_key(|(r, p)| (*p, *r)).map_or(latest, |(r, _)| r);
                revisions.iter().copied().filter(|n| *n < main).max().ok_or_else(|| {
                    format!("{function}-{main:05} is the first ready revision: there is no earlier one to roll back to")
                })?
            }
        };
        Ok(Traffic { split: vec![Share { revision: Some(target), percent: 100 }], tags: self.tags.clone() })
    }

    /// The revision a target names: `NAME-00003`, `00003` or `3`, a tag, or
    /// [`LATEST`] (`None`: whichever is latest).
    fn target(&self, function: &FunctionName, text: &str) -> Result<Option<u32>, String> {
        if text == LATEST || text == "latest" {
            return Ok(None);
        }
        if let Some(n) = self.tags.get(text) {
            return Ok(Some(*n));
        }
        let digits = text.strip_prefix(function.as_str()).and_then(|r| r.strip_prefix('-')).unwrap_or(text);
        match digits.parse::<u32>() {
            Ok(n) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
            _ => {
                let tags: Vec<&str> = self.tags.keys().map(String::as_str).collect();
                let tags = if tags.is_empty() { "none yet".to_owned() } else { tags.join(", ") };
                Err(format!(
                    "`{text}` is not a revision of {function} (like {function}-00002), one of its tags ({tags}) or {LATEST}"
                ))
            }
        }
    }
}

/// Checks a tag: a lowercase DNS label of at most [`MAX_TAG_LEN`] bytes, not `latest`.
///
/// # Errors
/// Why the tag is refused.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && tag.starts_with(|c: char| c.is_ascii_lowercase())
        && !tag.ends_with('-')
        && tag.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(format!(
            "tag `{tag}` is not valid: use lowercase letters, digits and `-`, starting with a letter, at most {MAX_TAG_LEN} bytes"
        ));
    }
    if tag == "latest" {
        return Err("`latest` always names the newest revision; pick another tag".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::TargetPercent;

    fn name() -> FunctionName {
        FunctionName::new("hello").expect("valid")
    }

    fn split(pairs: &[(&str, u32)]) -> TrafficUpdate {
        TrafficUpdate {
            split: Some(pairs.iter().map(|(t, p)| TargetPercent { target: (*t).to_owned(), percent: *p }).collect()),
            ..TrafficUpdate::default()
        }
    }

    #[test]
    fn latest_follows_new_revisions_and_pinning_stops_it() {
        let mut t = Traffic::latest();
        assert_eq!(t.resolve(Some(3)), vec![(3, 100)]);
        assert_eq!(t.resolve(Some(4)), vec![(4, 100)]);
        assert_eq!(t.resolve(None), vec![], "no ready revision takes the floating share");
        t.pin_latest(4);
        assert_eq!(t.resolve(Some(5)), vec![(4, 100)]);
        assert_eq!(t.referenced(Some(5)).into_iter().collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(t.referenced(None).into_iter().collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn splits_by_number_id_tag_and_latest_merge_per_revision() {
        let mut t = Traffic::latest();
        t.tags.insert("candidate".into(), 4);
        let u = split(&[("hello-00003", 80), ("candidate", 10), ("@latest", 5), ("4", 5)]);
        let next = t.apply(&name(), &u, 5).expect("applies");
        next.check(|n| if (1..=5).contains(&n) { Ok(()) } else { Err("no".into()) }).expect("valid");
        assert_eq!(next.resolve(Some(5)), vec![(5, 5), (4, 15), (3, 80)]);
        assert_eq!(next.tags_of(4), vec!["candidate".to_owned()]);
    }

    #[test]
    fn bad_splits_say_why() {
        let t = Traffic::latest();
        let any = |_| Ok(());
        let e = t.apply(&name(), &split(&[("1", 90), ("2", 20)]), 2).expect("applies").check(any);
        assert_eq!(e, Err("traffic shares must sum to 100, not 110 (90% + 20%)".to_owned()));
        let e = t.apply(&name(), &split(&[("1", u32::MAX), ("2", 101)]), 2).expect("applies").check(any);
        assert_eq!(e, Err(format!("a share is a percentage, 0–100, not {}", u32::MAX)));
        let upto2 = |n| if n <= 2 { Ok(()) } else { Err(format!("revision {n:05} does not exist")) };
        let e = t.apply(&name(), &split(&[("9", 100)]), 2).expect("applies").check(upto2);
        assert_eq!(e, Err("revision 00009 does not exist".to_owned()));
        let mut tagged = Traffic::latest();
        tagged.tags.insert("old".into(), 7);
        assert_eq!(tagged.check(upto2), Err("tag `old`: revision 00007 does not exist".to_owned()));
        let e = t.apply(&name(), &split(&[("nope", 100)]), 2).expect_err("unknown target");
        assert!(e.contains("`nope` is not a revision of hello"), "{e}");
        assert!(t.apply(&name(), &split(&[]), 2).is_err());
    }

    #[test]
    fn tags_are_set_moved_and_removed() {
        let t = Traffic::latest();
        let u = TrafficUpdate { tag: [("candidate".to_owned(), "2".to_owned())].into(), ..TrafficUpdate::default() };
        let t = t.apply(&name(), &u, 3).expect("tagged");
        assert_eq!(t.tags["candidate"], 2);
        let u = TrafficUpdate { untag: vec!["candidate".into()], ..TrafficUpdate::default() };
        assert!(t.apply(&name(), &u, 3).expect("untagged").tags.is_empty());
        let u = TrafficUpdate { untag: vec!["other".into()], ..TrafficUpdate::default() };
        assert!(t.apply(&name(), &u, 3).is_err());
        for bad in ["", "Upper", "1st", "end-", "latest", "a_b"] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
        check_tag("candidate-2").expect("valid");
    }

    #[test]
    fn rollback_goes_to_the_revision_before_the_main_one_or_the_named_one() {
        let t = Traffic::latest();
        let back = t.rollback(&name(), None, 3, &[1, 2, 3]).expect("has an earlier one");
        assert_eq!(back.resolve(Some(3)), vec![(2, 100)]);
        let again = back.rollback(&name(), None, 3, &[1, 2, 3]).expect("and another");
        assert_eq!(again.resolve(Some(3)), vec![(1, 100)]);
        assert!(
            again.rollback(&name(), None, 3, &[1, 2, 3]).expect_err("first").contains("hello-00001 is the first ready")
        );
        let named = again.rollback(&name(), Some("hello-00003"), 3, &[1, 2, 3]).expect("named");
        assert_eq!(named.resolve(Some(3)), vec![(3, 100)]);
        // Gaps left by removed revisions are skipped.
        assert_eq!(t.rollback(&name(), None, 7, &[2, 7]).expect("gap").resolve(Some(7)), vec![(2, 100)]);
    }
}
