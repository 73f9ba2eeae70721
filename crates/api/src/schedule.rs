//! Cron schedules of `[[triggers]]`: a Vixie-cron expression (five fields, or six with
//! seconds first) evaluated in an IANA time zone (UTC by default), daylight-saving
//! changes included.

use std::str::FromStr as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, TimeZone as _, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: chrono_tz::Tz,
}

impl Schedule {
    /// Parses `expr` (e.g. `*/5 * * * *`, or `*/10 * * * * *` with seconds) in `timezone`
    /// (e.g. `Europe/Paris`; UTC when absent).
    ///
    /// # Errors
    /// Why the expression or the zone is refused, in words for the user.
    pub fn parse(expr: &str, timezone: Option<&str>) -> Result<Self, String> {
        let tz = match timezone {
            None => chrono_tz::UTC,
            Some(name) => chrono_tz::Tz::from_str(name)
                .map_err(|_| format!("`{name}` is not a time zone of the IANA database, e.g. \"Europe/Paris\""))?,
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|e| format!("`{expr}` is not a cron expression: {e}"))?;
        Ok(Self { cron, tz })
    }

    /// The first time the schedule fires strictly after `after`; `None` if it never does.
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        // Whole seconds: schedules fire on the second, and croner keeps a start's fraction.
        let since = after.duration_since(UNIX_EPOCH).ok()?;
        let utc: DateTime<Utc> = Utc.timestamp_opt(i64::try_from(since.as_secs()).ok()?, 0).single()?;
        let local = utc.with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        let secs = u64::try_from(next.timestamp()).ok()?;
        Some(UNIX_EPOCH + Duration::new(secs, next.timestamp_subsec_nanos()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn next_fires_follow_the_expression_and_the_zone() {
        // 2026-01-01T00:00:00Z
        let t0 = 1_767_225_600;
        let every5 = Schedule::parse("*/5 * * * *", None).unwrap();
        assert_eq!(every5.next_after(at(t0)), Some(at(t0 + 300)));
        assert_eq!(every5.next_after(at(t0 + 1)), Some(at(t0 + 300)));
        let seconds = Schedule::parse("*/10 * * * * *", None).unwrap();
        assert_eq!(seconds.next_after(at(t0 + 3)), Some(at(t0 + 10)));
        let half = at(t0 + 3) + Duration::from_millis(500);
        let every_second = Schedule::parse("* * * * * *", None).unwrap();
        assert_eq!(every_second.next_after(half), Some(at(t0 + 4)), "on the second, not a second after the start");
        // 09:00 in Paris is 08:00 UTC in winter.
        let paris = Schedule::parse("0 9 * * *", Some("Europe/Paris")).unwrap();
        assert_eq!(paris.next_after(at(t0)), Some(at(t0 + 8 * 3600)));
    }

    #[test]
    fn bad_expressions_and_zones_say_why() {
        for bad in ["* * *", "61 * * * *", "*/0 * * * *", "nonsense"] {
            let e = Schedule::parse(bad, None).unwrap_err();
            assert!(e.contains("is not a cron expression"), "{bad}: {e}");
        }
        let e = Schedule::parse("* * * * *", Some("Mars/Olympus")).unwrap_err();
        assert!(e.contains("not a time zone"), "{e}");
    }
}
