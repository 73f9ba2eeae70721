//! [`Fields`]: typed access to one TOML table that records every problem under its
//! dotted field name, and the serde helper that stores durations as manifest text.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::Problem;
use crate::quantity::{parse_bytes, parse_duration};

use super::problem;

/// Takes typed fields out of one TOML table, recording problems under a dotted prefix;
/// whatever is left at the end is reported as unknown.
pub(super) struct Fields {
    prefix: &'static str,
    pub(super) table: toml::Table,
    pub(super) problems: Vec<Problem>,
}

impl Fields {
    pub(super) fn new(prefix: &'static str, table: toml::Table) -> Self {
        Self { prefix, table, problems: Vec::new() }
    }

    pub(super) fn problem(&mut self, key: &str, message: String) {
        self.problems.push(problem(&format!("{}{key}", self.prefix), message));
    }

    /// Records `message` against `key` unless `ok`; returns `ok`.
    pub(super) fn check(&mut self, ok: bool, key: &str, message: &str) -> bool {
        if !ok {
            self.problem(key, message.to_owned());
        }
        ok
    }

    pub(super) fn string(&mut self, key: &str, required: bool) -> Option<String> {
        match self.table.remove(key) {
            Some(toml::Value::String(s)) => Some(s),
            Some(other) => {
                self.problem(key, format!("must be a string, not {}", other.type_str()));
                None
            }
            None => {
                if required {
                    self.problem(key, "is required".to_owned());
                }
                None
            }
        }
    }

    pub(super) fn int(&mut self, key: &str, default: u32, min: u32, max: u32) -> Option<u32> {
        match self.table.remove(key) {
            None => Some(default),
            Some(toml::Value::Integer(i)) if i >= i64::from(min) && i <= i64::from(max) => u32::try_from(i).ok(),
            Some(toml::Value::Integer(_)) => {
                self.problem(key, format!("must be between {min} and {max}"));
                None
            }
            Some(other) => {
                self.problem(key, format!("must be an integer, not {}", other.type_str()));
                None
            }
        }
    }

    /// An integer that may be absent: `Some(None)` then, `None` after a problem.
    pub(super) fn optional_int(&mut self, key: &str, min: u32, max: u32) -> Option<Option<u32>> {
        if !self.table.contains_key(key) {
            return Some(None);
        }
        self.int(key, min, min, max).map(Some)
    }

    /// CPU as Kubernetes writes it, in thousandths of a core: `"500m"`, `"1.5"`, `2`,
    /// `0.25`. `Some(None)` when absent, `None` after a problem.
    pub(super) fn cpu(&mut self, key: &str) -> Option<Option<u32>> {
        let millis = match self.table.remove(key) {
            None => return Some(None),
            Some(toml::Value::Integer(i)) => i.checked_mul(1000).map(|m| m as f64),
            Some(toml::Value::Float(f)) => Some(f * 1000.0),
            Some(toml::Value::String(s)) => match s.strip_suffix('m') {
                Some(m) => m.trim().parse::<f64>().ok(),
                None => s.trim().parse::<f64>().ok().map(|c| c * 1000.0),
            },
            Some(other) => {
                self.problem(key, format!("must be CPU cores such as \"500m\" or 1.5, not {}", other.type_str()));
                return None;
            }
        };
        match millis {
            Some(m) if (10.0..=1_024_000.0).contains(&m) => Some(Some(m.round() as u32)),
            _ => {
                self.problem(key, "must be CPU cores between \"10m\" and 1024, such as \"500m\" or 1.5".to_owned());
                None
            }
        }
    }

    pub(super) fn duration(&mut self, key: &str, default: Duration) -> Option<Duration> {
        match self.string_or_missing(key, "a duration such as \"30s\"")? {
            None => Some(default),
            Some(s) => parse_duration(&s).map_err(|m| self.problem(key, m)).ok(),
        }
    }

    pub(super) fn bytes(&mut self, key: &str) -> Option<u64> {
        match self.table.remove(key) {
            None => None,
            Some(toml::Value::Integer(i)) => {
                u64::try_from(i).map_err(|_| self.problem(key, "must not be negative".to_owned())).ok()
            }
            Some(toml::Value::String(s)) => parse_bytes(&s).map_err(|m| self.problem(key, m)).ok(),
            Some(other) => {
                self.problem(key, format!("must be a size such as \"6Mi\", not {}", other.type_str()));
                None
            }
        }
    }

    /// `Some(None)` when absent, `Some(Some(s))` for a string, `None` after a problem.
    pub(super) fn string_or_missing(&mut self, key: &str, what: &str) -> Option<Option<String>> {
        match self.table.remove(key) {
            None => Some(None),
            Some(toml::Value::String(s)) => Some(Some(s)),
            Some(other) => {
                self.problem(key, format!("must be {what}, not {}", other.type_str()));
                None
            }
        }
    }

    pub(super) fn table(&mut self, key: &str) -> toml::Table {
        match self.table.remove(key) {
            None => toml::Table::new(),
            Some(toml::Value::Table(t)) => t,
            Some(other) => {
                self.problem(key, format!("must be a table, not {}", other.type_str()));
                toml::Table::new()
            }
        }
    }

    pub(super) fn env(&mut self) -> Option<BTreeMap<String, String>> {
        self.env_table("env")
    }

    /// A table of environment variables (`[env]`, `[secret_env]`): valid names that gust
    /// does not set itself, with string-like values.
    pub(super) fn env_table(&mut self, key: &str) -> Option<BTreeMap<String, String>> {
        let table = self.table(key);
        let mut env = BTreeMap::new();
        let mut ok = true;
        for (k, v) in table {
            let field = format!("{key}.{k}");
            let valid_key = !k.is_empty()
                && !k.as_bytes()[0].is_ascii_digit()
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid_key {
                self.problems.push(problem(
                    &field,
                    "is not a valid variable name (letters, digits and `_`, not starting with a digit)".to_owned(),
                ));
                ok = false;
                continue;
            }
            if k.starts_with("GUST_") || k == "PATH" || k == "HOME" || k == "TMPDIR" {
                self.problems.push(problem(&field, "is set by gust and cannot be overridden".to_owned()));
                ok = false;
                continue;
            }
            let value = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    self.problems.push(problem(
                        &field,
                        format!("must be a string, number or boolean, not {}", other.type_str()),
                    ));
                    ok = false;
                    continue;
                }
            };
            if value.contains('\0') {
                self.problems.push(problem(&field, "must not contain a NUL byte".to_owned()));
                ok = false;
                continue;
            }
            env.insert(k, value);
        }
        ok.then_some(env)
    }

    /// An optional array of strings.
    pub(super) fn strings(&mut self, key: &str) -> Option<Vec<String>> {
        match self.table.remove(key) {
            None => Some(Vec::new()),
            Some(toml::Value::Array(items)) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        toml::Value::String(s) => out.push(s),
                        other => {
                            self.problem(key, format!("must hold strings, not {}", other.type_str()));
                            return None;
                        }
                    }
                }
                Some(out)
            }
            Some(other) => {
                self.problem(key, format!("must be an array of strings, not {}", other.type_str()));
                None
            }
        }
    }

    pub(super) fn finish(mut self) -> Vec<Problem> {
        let unknown: Vec<String> = self.table.keys().cloned().collect();
        for key in unknown {
            self.problem(&key, "is not a known field".to_owned());
        }
        self.problems
    }
}

/// Serde for durations as manifest text (`"30s"`), so stored specs stay readable.
pub(super) mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        crate::quantity::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}
