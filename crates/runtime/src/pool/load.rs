//! The load a pool sees, integrated over time, and the autoscaler's policy for a
//! revision.

use std::time::{Duration, Instant};

use gust_api::ScalePolicy;
use gust_scaler::Policy;

/// Concurrency (calls in flight plus calls waiting) integrated over time, so that the
/// average between two ticks is exact however short the calls are.
#[derive(Debug)]
pub(super) struct Load {
    /// Calls in flight plus calls waiting, since `changed`.
    pub(super) current: u32,
    changed: Instant,
    area: f64,
    sampled: Instant,
}

impl Load {
    pub(super) fn new(now: Instant) -> Self {
        Self { current: 0, changed: now, area: 0.0, sampled: now }
    }

    /// Adds the area under the current level up to `now`.
    pub(super) fn advance(&mut self, now: Instant) {
        self.area += f64::from(self.current) * now.saturating_duration_since(self.changed).as_secs_f64();
        self.changed = now;
    }

    /// The average since the last sample, and the span it covers; starts a new span.
    pub(super) fn sample(&mut self, now: Instant) -> (Duration, f64) {
        self.advance(now);
        let span = now.saturating_duration_since(self.sampled);
        let average = if span.is_zero() { f64::from(self.current) } else { self.area / span.as_secs_f64() };
        self.area = 0.0;
        self.sampled = now;
        (span, average)
    }
}

/// The autoscaler's policy for a revision's scale settings.
pub(super) fn policy(scale: &ScalePolicy, initial: u32) -> Policy {
    Policy {
        target: f64::from(scale.target()),
        utilization: f64::from(scale.target_utilization) / 100.0,
        stable_window: scale.stable_window,
        panic_window: scale.panic_window(),
        panic_threshold: f64::from(scale.panic_threshold_percentage) / 100.0,
        max_scale_up_rate: f64::from(scale.max_scale_up_rate),
        max_scale_down_rate: f64::from(scale.max_scale_down_rate),
        scale_down_delay: scale.scale_down_delay,
        initial,
        min: scale.min,
        max: scale.max,
        scale_to_zero_grace: scale.scale_to_zero_grace,
    }
}
