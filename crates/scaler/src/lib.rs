//! How many instances a revision should have: Knative's KPA, as pure code.
//!
//! The [`Scaler`] is fed the average concurrency (calls in flight plus calls queued)
//! observed over each short span and asked for a [`Decision`] at a given instant. It
//! never reads a clock, spawns nothing and touches no instance, so every behaviour is
//! tested by replaying a trace with a simulated clock; the runtime drives it from its
//! own tick and acts on what it says.
//!
//! The algorithm follows `knative.dev/serving/pkg/autoscaler/scaling/autoscaler.go`:
//!
//! - the wanted count over each window is `ceil(average / (target × utilisation))`,
//!   clamped between `ready / max_scale_down_rate` and `ready × max_scale_up_rate`;
//! - over the stable window (60 s) that is the steady answer; over the panic window (a
//!   tenth of it, 6 s) it is the burst answer, and when the burst answer reaches
//!   `panic_threshold × ready` (200 %) the scaler panics: while panicking it follows the
//!   burst answer upwards and never scales down, and it leaves panic once a whole stable
//!   window has passed without reaching the threshold again;
//! - the answer is the largest one seen over the last `scale_down_delay`, so a dip in
//!   load does not remove instances that will be wanted again moments later;
//! - a revision holds `initial` instances for its first stable window, scales to zero
//!   only after `scale_to_zero_grace` with nothing wanted, and stays within `min`/`max`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The knobs, with Knative's defaults in [`Policy::default`].
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Concurrency per instance the scaler aims for, before utilisation. Knative's
    /// `autoscaling.knative.dev/target`.
    pub target: f64,
    /// The share of `target` to aim for, leaving headroom for bursts (0.7).
    pub utilization: f64,
    /// The window the steady answer averages over (60 s).
    pub stable_window: Duration,
    /// The window the burst answer averages over (6 s, a tenth of the stable window).
    pub panic_window: Duration,
    /// Burst answer ÷ ready instances at which the scaler panics (2.0).
    pub panic_threshold: f64,
    /// At most this many times the ready instances in one decision (1000).
    pub max_scale_up_rate: f64,
    /// At least ready ÷ this many instances after one decision (2).
    pub max_scale_down_rate: f64,
    /// A scale-down only happens once it has been wanted for this long (0 s).
    pub scale_down_delay: Duration,
    /// Instances for the revision's first stable window (1).
    pub initial: u32,
    /// Never fewer (0).
    pub min: u32,
    /// Never more.
    pub max: u32,
    /// How long the last instance stays after nothing is wanted any more (30 s).
    pub scale_to_zero_grace: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            target: 100.0,
            utilization: 0.7,
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            scale_down_delay: Duration::ZERO,
            initial: 1,
            min: 0,
            max: u32::MAX,
            scale_to_zero_grace: Duration::from_secs(30),
        }
    }
}

/// What the scaler wants now, and what it saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Instances wanted.
    pub desired: u32,
    /// Whether the scaler is in panic mode.
    pub panic: bool,
    /// Average concurrency over the stable window.
    pub stable_concurrency: f64,
    /// Average concurrency over the panic window.
    pub panic_concurrency: f64,
}

/// Average concurrency over one span of time that ended at `end`.
#[derive(Debug, Clone, Copy)]
struct Sample {
    end: Instant,
    span: Duration,
    value: f64,
}

/// The scaling state of one revision.
#[derive(Debug, Clone)]
pub struct Scaler {
    policy: Policy,
    created: Instant,
    samples: VecDeque<Sample>,
    /// When panic mode began or was last re-triggered; `None` outside panic.
    panic_since: Option<Instant>,
    /// The highest burst answer seen during this panic.
    max_panic: u32,
    /// Recent answers, for `scale_down_delay`.
    recent: VecDeque<(Instant, u32)>,
    /// The last time more than zero instances were wanted.
    last_wanted: Instant,
}

impl Scaler {
    /// A scaler for a revision that comes into service at `now`.
    pub fn new(policy: Policy, now: Instant) -> Self {
        Self {
            policy,
            created: now,
            samples: VecDeque::new(),
            panic_since: None,
            max_panic: 0,
            recent: VecDeque::new(),
            last_wanted: now,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Records that over the `span` ending at `now` the average concurrency was `value`.
    pub fn record(&mut self, now: Instant, span: Duration, value: f64) {
        if span.is_zero() || !value.is_finite() {
            return;
        }
        self.samples.push_back(Sample { end: now, span, value: value.max(0.0) });
        let keep = self.policy.stable_window.max(self.policy.panic_window);
        while self.samples.front().is_some_and(|s| now.saturating_duration_since(s.end) > keep) {
            self.samples.pop_front();
        }
    }

    /// The time-weighted average concurrency over the `window` ending at `now`, over the
    /// part of the window there are samples for.
    fn average(&self, now: Instant, window: Duration) -> f64 {
        let from = now.checked_sub(window);
        let (mut area, mut covered) = (0.0, 0.0);
        for s in &self.samples {
            let start = s.end.checked_sub(s.span).unwrap_or(s.end);
            let start = match from {
                Some(from) if from > start => from,
                _ => start,
            };
            if s.end <= start {
                continue;
            }
            let secs = (s.end - start).as_secs_f64();
            area += s.value * secs;
            covered += secs;
        }
        if covered > 0.0 { area / covered } else { 0.0 }
    }

    /// What to run with `ready` instances serving at `now`.
    pub fn decide(&mut self, now: Instant, ready: u32) -> Decision {
        let p = &self.policy;
        let stable = self.average(now, p.stable_window);
        let burst = self.average(now, p.panic_window);
        let per_instance = (p.target * p.utilization).max(0.01);
        let ready_f = f64::from(ready);
        let up_cap = (p.max_scale_up_rate * ready_f.max(1.0)).ceil();
        let down_floor = if p.max_scale_down_rate > 0.0 { (ready_f / p.max_scale_down_rate).floor() } else { 0.0 };
        let want = |avg: f64| (avg / per_instance).ceil().min(up_cap).max(down_floor) as u32;
        let (stable_want, panic_want) = (want(stable), want(burst));

        let over = f64::from(panic_want) / ready_f.max(1.0) >= p.panic_threshold;
        if over {
            if self.panic_since.is_none() {
                self.max_panic = 0;
            }
            self.panic_since = Some(now);
        } else if self.panic_since.is_some_and(|since| now.saturating_duration_since(since) >= p.stable_window) {
            self.panic_since = None;
            self.max_panic = 0;
        }
        let mut desired = stable_want;
        if self.panic_since.is_some() {
            // Never down while panicking; the stable answer can be the larger one after a
            // short burst, so the larger of the two counts.
            self.max_panic = self.max_panic.max(panic_want).max(stable_want);
            desired = self.max_panic;
        }

        // A new revision keeps its initial instances for one stable window.
        if now.saturating_duration_since(self.created) < p.stable_window {
            desired = desired.max(p.initial);
        }

        self.recent.push_back((now, desired));
        while self.recent.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > p.scale_down_delay) {
            self.recent.pop_front();
        }
        desired = self.recent.iter().map(|(_, d)| *d).max().unwrap_or(desired);

        if desired > 0 {
            self.last_wanted = now;
        } else if ready > 0 && now.saturating_duration_since(self.last_wanted) < p.scale_to_zero_grace {
            // The last instance waits out the grace period (none is started for it).
            desired = 1;
        }
        let desired = desired.clamp(p.min, p.max.max(p.min));
        Decision { desired, panic: self.panic_since.is_some(), stable_concurrency: stable, panic_concurrency: burst }
    }
}

#[cfg(test)]
mod tests;
