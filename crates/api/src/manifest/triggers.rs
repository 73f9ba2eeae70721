//! `[[triggers]]`: CloudEvents filters on the broker (`POST /events`) that deliver
//! matching events to the function, and cron schedules that call it.
//!
//! ```toml
//! [[triggers]]
//! exact = { type = "order.created" }   # every attribute must equal its value
//! prefix = { source = "/orders/" }     # …start with it
//! suffix = { subject = ".png" }        # …end with it
//!
//! [[triggers]]
//! schedule = "*/5 * * * *"             # cron, optionally with seconds first
//! timezone = "Europe/Paris"            # IANA zone; UTC by default
//! ```

use std::collections::BTreeMap;

use super::fields::Fields;
use super::problem;
use crate::event::Filter;

/// What invokes a function besides HTTP: events matching `filter`, or, with a
/// `schedule`, the clock.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TriggerSpec {
    /// The events it takes from the broker; all conditions must hold. Unused by a
    /// schedule.
    #[serde(default)]
    pub filter: Filter,
    /// A cron expression (checked at deploy); the trigger then fires on the clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The IANA time zone the schedule is read in; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

impl TriggerSpec {
    /// Whether this trigger takes `event` from the broker: an event trigger whose filter
    /// passes it. A schedule takes no events (its filter is empty, so it would pass all).
    pub fn matches(&self, event: &crate::event::CloudEvent) -> bool {
        self.schedule.is_none() && self.filter.matches(event)
    }

    /// The parsed schedule of a cron trigger (`None` for an event trigger, or — never
    /// for a deployed spec, checked at deploy — an invalid one).
    pub fn cron(&self) -> Option<crate::schedule::Schedule> {
        crate::schedule::Schedule::parse(self.schedule.as_deref()?, self.timezone.as_deref()).ok()
    }
}

/// Parses `[[triggers]]`; every problem is recorded under `triggers[i].…`.
pub(super) fn parse(f: &mut Fields) -> Option<Vec<TriggerSpec>> {
    let items = match f.table.remove("triggers") {
        None => return Some(Vec::new()),
        Some(toml::Value::Array(items)) => items,
        Some(other) => {
            f.problem("triggers", format!("must be an array of tables ([[triggers]]), not {}", other.type_str()));
            return None;
        }
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.into_iter().enumerate() {
        let at = |k: &str| format!("triggers[{i}].{k}");
        let toml::Value::Table(mut t) = item else {
            f.problems.push(problem(&format!("triggers[{i}]"), "must be a table".to_owned()));
            ok = false;
            continue;
        };
        let schedule = t.remove("schedule");
        let timezone = t.remove("timezone");
        if schedule.is_some() || timezone.is_some() {
            let mut text = |v: Option<toml::Value>, key: &str| match v {
                None => None,
                Some(toml::Value::String(s)) => Some(s),
                Some(other) => {
                    f.problems.push(problem(&at(key), format!("must be a string, not {}", other.type_str())));
                    None
                }
            };
            let (schedule, timezone) = (text(schedule, "schedule"), text(timezone, "timezone"));
            let Some(expr) = schedule else {
                f.problems.push(problem(&at("schedule"), "is required with a timezone, e.g. \"0 9 * * *\"".into()));
                ok = false;
                continue;
            };
            if let Err(m) = crate::schedule::Schedule::parse(&expr, timezone.as_deref()) {
                let key = if m.contains("time zone") { "timezone" } else { "schedule" };
                f.problems.push(problem(&at(key), m));
                ok = false;
            }
            for unknown in t.keys() {
                f.problems
                    .push(problem(&at(unknown), "is not a known field of a schedule (schedule, timezone)".to_owned()));
                ok = false;
            }
            out.push(TriggerSpec { filter: Filter::default(), schedule: Some(expr), timezone });
            continue;
        }
        let mut filter = Filter::default();
        for (key, slot) in
            [("exact", &mut filter.exact), ("prefix", &mut filter.prefix), ("suffix", &mut filter.suffix)]
        {
            match t.remove(key) {
                None => {}
                Some(toml::Value::Table(conditions)) => match conditions_of(conditions) {
                    Ok(c) => *slot = c,
                    Err(m) => {
                        f.problems.push(problem(&at(key), m));
                        ok = false;
                    }
                },
                Some(other) => {
                    f.problems.push(problem(
                        &at(key),
                        format!("must be a table of attribute = \"value\", not {}", other.type_str()),
                    ));
                    ok = false;
                }
            }
        }
        for unknown in t.keys() {
            f.problems.push(problem(&at(unknown), "is not a known field (exact, prefix, suffix)".to_owned()));
            ok = false;
        }
        out.push(TriggerSpec { filter, schedule: None, timezone: None });
    }
    ok.then_some(out)
}

fn conditions_of(table: toml::Table) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (k, v) in table {
        let valid = !k.is_empty() && k.len() <= 20 && k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            return Err(format!("`{k}` is not a CloudEvents attribute name (1–20 lowercase letters and digits)"));
        }
        match v {
            toml::Value::String(s) => {
                out.insert(k, s);
            }
            other => return Err(format!("`{k}` must be a string, not {}", other.type_str())),
        }
    }
    Ok(out)
}
