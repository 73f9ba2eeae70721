//! The autoscaler end to end (issue 4, points 4–6): initial scale, scale from zero under
//! a crowd, panic on a burst and scale back to zero after it.

use gust_test_support::{burst, eventually};

use crate::{gust, held_until, manifest};

fn scaling(g: &gust_test_support::Gust, name: &str) -> serde_json::Value {
    g.describe(name)["scaling"][0].clone()
}

#[test]
fn a_new_revision_starts_its_initial_instances_and_initial_zero_starts_none() {
    let g = gust();
    g.deploy(
        "eager",
        &[("gust.toml", &manifest("eager", "python", "")), ("handler.py", "def handle(d):\n    return d\n")],
    );
    eventually("the initial instance to be up before any call", || (g.instance_pids("eager").len() == 1).then_some(()));
    let s = scaling(&g, "eager");
    assert_eq!((s["desired"].as_u64(), s["actual"].as_u64()), (Some(1), Some(1)), "{s}");

    let lazy = manifest("lazy", "python", "[scale]\ninitial = 0");
    g.deploy("lazy", &[("gust.toml", &lazy), ("handler.py", "def handle(d):\n    return d\n")]);
    let s = scaling(&g, "lazy");
    assert_eq!((s["desired"].as_u64(), s["actual"].as_u64()), (Some(0), Some(0)), "{s}");
    assert!(g.instance_pids("lazy").is_empty());
}

#[test]
fn a_hundred_concurrent_calls_from_zero_all_succeed() {
    let g = gust();
    let m = manifest("crowd", "python", "[scale]\ninitial = 0\nmax = 10");
    g.deploy(
        "crowd",
        &[("gust.toml", &m), ("handler.py", "import time\ndef handle(d):\n    time.sleep(0.02)\n    return 'ok'\n")],
    );
    assert!(g.instance_pids("crowd").is_empty(), "scaled to zero before the crowd");
    let codes = burst(&g.url, "/function/crowd", "x", 100);
    let failed: Vec<_> = codes.iter().filter(|c| **c != 200).collect();
    assert!(failed.is_empty(), "every call must get 200, got {failed:?}");
    let s = scaling(&g, "crowd");
    assert!((2..=10).contains(&s["cold_starts"].as_u64().unwrap()), "scaled out within max: {s}");
    // Nothing was running: at least the first calls (one per instance started) queued.
    assert_eq!(s["calls"], 100, "{s}");
    let waited = s["waited"].as_u64().unwrap();
    assert!((s["cold_starts"].as_u64().unwrap()..=100).contains(&waited), "{s}");
}

#[test]
fn a_burst_panics_scales_out_and_everything_goes_away_after() {
    let g = gust();
    let go = g.work.join("go-burst");
    let m = manifest(
        "bursty",
        "python",
        "[scale]\ninitial = 0\nmax = 16\nstable_window = \"2s\"\nscale_to_zero_grace = \"0s\"",
    );
    g.deploy("bursty", &[("gust.toml", &m), ("handler.py", &held_until(&go, "'ok'"))]);
    let url = g.url.clone();
    let crowd = std::thread::spawn(move || burst(&url, "/function/bursty", "x", 64));

    // 64 calls held in flight against 16 instances at most: the scaler wants more than it
    // may have, panics, and the pool is at max with the rest queued. (The activator
    // fills the pool at once; the scaler's windows catch up within a tick or two.)
    let s = eventually("the burst to fill the pool and the scaler to want its max", || {
        let s = scaling(&g, "bursty");
        (s["actual"] == 16 && s["panic"] == true && s["queued"] == 48 && s["desired"] == 16).then_some(s)
    });
    assert!(s["panic_concurrency"].as_f64().unwrap() > 16.0, "{s}");
    let text = g.cli_ok(&["describe", "bursty"]);
    assert!(text.contains("Scaling (Knative KPA"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("bursty-00001") && l.contains(" yes ")), "{text}");

    std::fs::write(&go, "").unwrap();
    let codes = crowd.join().unwrap();
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    // After the burst: out of panic once a stable window passes, then down to zero.
    eventually("the instances to go away after the burst", || g.instance_pids("bursty").is_empty().then_some(()));
    let s = scaling(&g, "bursty");
    assert_eq!((s["desired"].as_u64(), s["panic"].as_bool()), (Some(0), Some(false)), "{s}");
}
