//! Traces replayed with a simulated clock: instances come up as soon as they are wanted,
//! so each decision's `desired` is the next tick's `ready`.

use super::*;

const TICK: Duration = Duration::from_secs(1);

/// Ten calls per instance at 70 % utilisation: seven per instance, no initial instance,
/// scale to zero right after the windows empty.
fn policy() -> Policy {
    Policy { target: 10.0, initial: 0, scale_to_zero_grace: Duration::ZERO, ..Policy::default() }
}

struct Sim {
    scaler: Scaler,
    now: Instant,
    ready: u32,
}

impl Sim {
    fn new(policy: Policy) -> Self {
        let now = Instant::now();
        Sim { scaler: Scaler::new(policy, now), now, ready: 0 }
    }

    /// One tick at `load` concurrency; returns the decision.
    fn tick(&mut self, load: f64) -> Decision {
        self.now += TICK;
        self.scaler.record(self.now, TICK, load);
        let d = self.scaler.decide(self.now, self.ready);
        self.ready = d.desired;
        d
    }

    /// `n` ticks at `load`; returns every desired count.
    fn run(&mut self, n: usize, load: f64) -> Vec<u32> {
        (0..n).map(|_| self.tick(load).desired).collect()
    }
}

#[test]
fn steady_load_settles_at_load_over_target_times_utilisation() {
    let mut sim = Sim::new(policy());
    let desired = sim.run(120, 35.0);
    // 35 / (10 × 0.7) = 5 instances, from the first tick on.
    assert!(desired.iter().all(|d| *d == 5), "{desired:?}");
    assert!(!sim.tick(35.0).panic);
}

#[test]
fn a_burst_panics_at_once_and_never_scales_down_while_panicking() {
    let mut sim = Sim::new(policy());
    sim.run(60, 7.0);
    assert_eq!(sim.ready, 1);
    // Ten times the load: the panic window sees it before the stable window does.
    let d = sim.tick(70.0);
    assert!(d.panic, "{d:?}");
    // The panic window's average climbs as the burst fills it: up every tick, to the
    // full answer (70 / 7 = 10) once the window holds nothing but the burst.
    let burst = sim.run(5, 70.0);
    assert!(d.desired >= 2 && burst.windows(2).all(|w| w[1] > w[0]), "{d:?} {burst:?}");
    assert_eq!(burst.last(), Some(&10));
    let peak = sim.ready;
    // The burst ends: while panicking (one stable window after the last over-threshold
    // tick) nothing is removed.
    let calm = (0..59).map(|_| sim.tick(7.0)).collect::<Vec<_>>();
    let panicking: Vec<_> = calm.iter().take_while(|d| d.panic).collect();
    assert!(panicking.len() >= 50, "panic lasts about a stable window: {calm:?}");
    assert!(panicking.iter().all(|d| d.desired == peak), "{calm:?}");
    // Then panic ends and the count halves at most per decision down to the steady one.
    let after = sim.run(70, 7.0);
    assert!(!sim.tick(7.0).panic);
    for pair in after.windows(2) {
        assert!(pair[1] >= pair[0] / 2, "scaled down faster than max_scale_down_rate: {after:?}");
    }
    assert_eq!(*after.last().unwrap(), 1, "back to the steady count once the window forgot the burst");
}

#[test]
fn load_decaying_to_nothing_scales_to_zero_only_after_window_and_grace() {
    let grace = Duration::from_secs(30);
    let mut sim = Sim::new(Policy { scale_to_zero_grace: grace, ..policy() });
    sim.run(30, 14.0);
    assert_eq!(sim.ready, 2);
    // Load decays, then stops.
    for load in [10.0, 7.0, 3.0, 1.0] {
        sim.tick(load);
    }
    let quiet = sim.run(100, 0.0);
    let first_zero = quiet.iter().position(|d| *d == 0).expect("scaled to zero");
    // The stable window (60 s) must forget the load, then the grace period (30 s) passes.
    assert!((88..=90).contains(&first_zero), "zero after {first_zero} s: {quiet:?}");
    assert!(quiet[..first_zero].iter().all(|d| *d >= 1));
    assert!(quiet[first_zero..].iter().all(|d| *d == 0));
}

#[test]
fn flapping_load_is_smoothed_by_the_scale_down_delay() {
    let mut plain = Sim::new(Policy { stable_window: Duration::from_secs(6), ..policy() });
    let mut delayed = Sim::new(Policy {
        stable_window: Duration::from_secs(6),
        scale_down_delay: Duration::from_secs(20),
        ..policy()
    });
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..60 {
        let load = if (i / 8) % 2 == 0 { 28.0 } else { 0.0 };
        a.push(plain.tick(load).desired);
        b.push(delayed.tick(load).desired);
    }
    let changes = |v: &[u32]| v.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(changes(&a[12..]) > 0, "the trace does flap without a delay: {a:?}");
    assert_eq!(changes(&b[12..]), 0, "steady with the delay: {b:?}");
    assert!(b[12..].iter().all(|d| *d >= 4), "{b:?}");
}

#[test]
fn a_new_revision_holds_its_initial_scale_for_one_stable_window() {
    let mut sim = Sim::new(Policy { initial: 3, ..policy() });
    let desired = sim.run(61, 0.0);
    assert!(desired[..58].iter().all(|d| *d == 3), "{desired:?}");
    // Then it may scale down (halving at most) and, with no grace, to zero.
    assert!(desired[60] < 3, "{desired:?}");
    assert_eq!(*sim.run(5, 0.0).last().unwrap(), 0);
}

#[test]
fn min_max_and_the_scale_up_rate_bound_every_answer() {
    let mut sim = Sim::new(Policy { min: 2, max: 8, ..policy() });
    assert_eq!(sim.tick(0.0).desired, 2, "min holds with no load");
    assert_eq!(sim.tick(700.0).desired, 8, "max caps a huge burst");

    let mut slow = Sim::new(Policy { max_scale_up_rate: 2.0, ..policy() });
    slow.run(5, 7.0);
    assert_eq!(slow.ready, 1);
    assert_eq!(slow.run(4, 700.0), vec![2, 4, 8, 16], "at most doubling per decision");
}

#[test]
fn from_zero_one_call_wants_one_instance_and_panics_on_a_crowd() {
    let mut sim = Sim::new(policy());
    assert_eq!(sim.tick(0.0).desired, 0);
    let one = sim.tick(1.0);
    assert_eq!((one.desired, one.panic), (1, false));
    let mut cold = Sim::new(policy());
    let crowd = cold.tick(64.0);
    assert!(crowd.panic);
    assert_eq!(crowd.desired, 10, "ceil(64 / 7)");
}

#[test]
fn averages_are_time_weighted_over_uneven_spans() {
    let now = Instant::now();
    let mut s = Scaler::new(policy(), now);
    s.record(now + Duration::from_millis(900), Duration::from_millis(900), 0.0);
    s.record(now + Duration::from_millis(1000), Duration::from_millis(100), 10.0);
    let d = s.decide(now + Duration::from_millis(1000), 0);
    assert!((d.stable_concurrency - 1.0).abs() < 1e-9, "{d:?}");
    s.record(now + Duration::from_secs(7), Duration::from_secs(6), 0.0);
    let d = s.decide(now + Duration::from_secs(7), 1);
    assert!(d.panic_concurrency.abs() < 1e-9, "only the last 6 s count: {d:?}");
}
