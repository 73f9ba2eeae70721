//! `[async]`: how asynchronous calls to a function are delivered — retries with back-off
//! and jitter, the oldest a call may get, and how many run at once.
//!
//! The defaults follow Fission's async calls and AWS Lambda's: 3 retries (4 attempts),
//! exponential back-off from 1 s capped at 5 min, calls older than 6 h are dead.

use std::time::Duration;

use super::fields::{Fields, duration_text};
use crate::Problem;
use crate::quantity::format_duration;

/// How the wait between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// `delay × 2^(attempt − 1)` (Knative's `exponential`).
    #[default]
    Exponential,
    /// `delay × attempt` (Knative's `linear`, as its code computes it).
    Linear,
}

/// The delivery policy of a function's async calls.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DeliveryPolicy {
    /// Attempts after the first, for timeouts, 408, 429 and 5xx. Default 3.
    pub retries: u32,
    /// How the wait grows. Default exponential.
    pub backoff: Backoff,
    /// The first wait. Default 1 s.
    #[serde(with = "duration_text")]
    pub delay: Duration,
    /// No wait is longer than this. Default 5 min.
    #[serde(with = "duration_text")]
    pub max_delay: Duration,
    /// A call not done this long after it was accepted is dead, whatever its attempts.
    /// Default 6 h.
    #[serde(with = "duration_text")]
    pub max_age: Duration,
    /// Async calls of the function in flight at once, so a burst of them leaves room for
    /// sync calls. Default half of `scale.max` (at least 1).
    pub concurrency: u32,
    /// Async calls queued or running at most; past it an accept is refused with 429, so
    /// a flood cannot fill the disk. Default 10 000.
    #[serde(default = "default_max_queued")]
    pub max_queued: u32,
}

fn default_max_queued() -> u32 {
    10_000
}

impl DeliveryPolicy {
    /// The defaults, for a function whose `scale.max` is `max`.
    pub fn defaults(max: u32) -> Self {
        Self {
            retries: 3,
            backoff: Backoff::Exponential,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            max_age: Duration::from_secs(6 * 3600),
            concurrency: (max / 2).max(1),
            max_queued: default_max_queued(),
        }
    }

    /// The wait before attempt `next` (2 for the first retry), before jitter.
    pub fn wait_before(&self, next: u32) -> Duration {
        let n = next.saturating_sub(1).max(1);
        let wait = match self.backoff {
            Backoff::Exponential => self.delay.saturating_mul(1u32.checked_shl(n - 1).unwrap_or(u32::MAX)),
            Backoff::Linear => self.delay.saturating_mul(n),
        };
        wait.min(self.max_delay)
    }

    /// `[async]` as manifest text.
    pub(super) fn to_toml(&self) -> String {
        format!(
            "\n[async]\nretries = {}\nbackoff = \"{}\"\ndelay = \"{}\"\nmax_delay = \"{}\"\nmax_age = \"{}\"\nconcurrency = {}\nmax_queued = {}\n",
            self.retries,
            match self.backoff {
                Backoff::Exponential => "exponential",
                Backoff::Linear => "linear",
            },
            format_duration(self.delay),
            format_duration(self.max_delay),
            format_duration(self.max_age),
            self.concurrency,
            self.max_queued
        )
    }
}

/// Parses `[async]` for a function whose `scale.max` is `max`; every problem is recorded.
pub(super) fn parse(table: toml::Table, max: u32) -> (Option<DeliveryPolicy>, Vec<Problem>) {
    let d = DeliveryPolicy::defaults(max);
    let mut f = Fields::new("async.", table);
    let retries = f.int("retries", d.retries, 0, 100);
    let backoff = match f.string_or_missing("backoff", "`exponential` or `linear`") {
        Some(None) => Some(d.backoff),
        Some(Some(s)) if s == "exponential" => Some(Backoff::Exponential),
        Some(Some(s)) if s == "linear" => Some(Backoff::Linear),
        Some(Some(s)) => {
            f.problem("backoff", format!("unknown back-off `{s}`; expected `exponential` or `linear`"));
            None
        }
        None => None,
    };
    let day = Duration::from_secs(24 * 3600);
    let delay = f.duration("delay", d.delay).filter(|x| {
        f.check(
            *x >= Duration::from_millis(10) && *x <= Duration::from_secs(3600),
            "delay",
            "must be between 10ms and 1h",
        )
    });
    let max_delay = f
        .duration("max_delay", d.max_delay)
        .filter(|x| f.check(*x >= Duration::from_millis(10) && *x <= day, "max_delay", "must be between 10ms and 24h"));
    let max_age = f
        .duration("max_age", d.max_age)
        .filter(|x| f.check(*x >= Duration::from_secs(1) && *x <= day, "max_age", "must be between 1s and 24h"));
    let concurrency = f.int("concurrency", d.concurrency, 1, 1000);
    let max_queued = f.int("max_queued", d.max_queued, 1, 1_000_000);
    let problems = f.finish();
    let policy = (|| {
        Some(DeliveryPolicy {
            retries: retries?,
            backoff: backoff?,
            delay: delay?,
            max_delay: max_delay?,
            max_age: max_age?,
            concurrency: concurrency?,
            max_queued: max_queued?,
        })
    })();
    (policy, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_by_the_policy_and_stop_at_the_cap() {
        let mut p = DeliveryPolicy::defaults(10);
        assert_eq!(p.concurrency, 5);
        let waits: Vec<u64> = (2..=6).map(|n| p.wait_before(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16]);
        assert_eq!(p.wait_before(40), Duration::from_secs(300), "capped, never overflowing");
        p.backoff = Backoff::Linear;
        let waits: Vec<u64> = (2..=5).map(|n| p.wait_before(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 3, 4]);
        assert_eq!(DeliveryPolicy::defaults(1).concurrency, 1);
    }
}
