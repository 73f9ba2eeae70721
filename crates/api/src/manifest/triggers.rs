//! `[[triggers]]`: CloudEvents filters on the broker (`POST /events`) that deliver
//! matching events to the function.
//!
//! ```toml
//! [[triggers]]
//! exact = { type = "order.created" }   # every attribute must equal its value
//! prefix = { source = "/orders/" }     # …start with it
//! suffix = { subject = ".png" }        # …end with it
//! ```

use std::collections::BTreeMap;

use super::fields::Fields;
use super::problem;
use crate::event::Filter;

/// What invokes a function besides HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TriggerSpec {
    /// The events it takes from the broker; all conditions must hold.
    pub filter: Filter,
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
        if t.remove("schedule").is_some() || t.remove("timezone").is_some() {
            f.problems
                .push(problem(&at("schedule"), "cron triggers are not supported by this version of gust yet".into()));
            ok = false;
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
        out.push(TriggerSpec { filter });
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
