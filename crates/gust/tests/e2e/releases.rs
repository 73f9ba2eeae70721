//! Revisions, tags, traffic splits, rollbacks and redeploys under load (issue 5).

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;

use gust_test_support::{Gust, alive, eventually};

use crate::{gust, gust_env, held_until, manifest};

/// Deploys `name` as a Python function answering `answer`, with `flags` for
/// `gust deploy`; returns the deploy output.
fn release(g: &Gust, name: &str, answer: &str, extra: &str, flags: &[&str]) -> String {
    let dir = g.function(
        name,
        &[
            ("gust.toml", &manifest(name, "python", extra)),
            ("handler.py", &format!("def handle(e, c):\n    return {answer:?}\n")),
        ],
    );
    let mut args = vec!["deploy", dir.to_str().unwrap()];
    args.extend_from_slice(flags);
    g.cli_ok(&args)
}

/// Makes `n` calls to `path` over one keep-alive connection and counts the answers by
/// body. Any non-200 fails the test.
fn tally(g: &Gust, path: &str, n: usize, headers: &str) -> BTreeMap<String, usize> {
    let addr = g.url.trim_start_matches("http://");
    let mut conn = BufReader::new(TcpStream::connect(addr).unwrap());
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
        conn.get_mut().write_all(req.as_bytes()).unwrap();
        let mut status = String::new();
        conn.read_line(&mut status).unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).unwrap();
        let body = String::from_utf8(body).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status} {body}");
        *counts.entry(body).or_default() += 1;
    }
    counts
}

fn traffic(g: &Gust, name: &str) -> serde_json::Value {
    let r = g.call("GET", &format!("/api/v1/functions/{name}/traffic"), b"", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn every_deploy_or_config_change_is_a_revision_listed_with_age_digest_traffic_tags_and_instances() {
    let g = gust();
    release(&g, "rel", "one", "", &[]);
    // Only the config changes: still a new revision, and the old one is kept as it was.
    let out = release(&g, "rel", "one", "[env]\nMODE = \"two\"", &[]);
    assert!(out.contains("deployed rel (rel-00002)"), "{out}");
    assert_eq!(g.post("rel", "").status, 200);
    let d = g.describe("rel");
    assert_eq!(d["spec"]["env"]["MODE"], "two");
    let listing = g.cli_ok(&["revisions", "rel"]);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 3, "{listing}");
    for col in ["REVISION", "STATUS", "AGE", "DIGEST", "TRAFFIC", "TAGS", "INSTANCES"] {
        assert!(lines[0].contains(col), "{listing}");
    }
    let newest: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        (newest[0], newest[1], newest[4], newest[5], newest[6]),
        ("rel-00002", "ready", "100%", "@latest", "1"),
        "{listing}"
    );
    let oldest: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!((oldest[0], oldest[1], oldest[4], oldest[5]), ("rel-00001", "ready", "0%", "-"), "{listing}");
    assert!(oldest[2].ends_with('s'), "age in seconds: {listing}");
    // The manifest is part of the code tree, so a config change changes the digest.
    assert_ne!(newest[3], oldest[3], "{listing}");
    assert!(newest[3].len() == 12 && newest[3].bytes().all(|b| b.is_ascii_hexdigit()), "{listing}");
    let json: serde_json::Value = serde_json::from_str(&g.cli_ok(&["revisions", "rel", "--json"])).unwrap();
    assert_eq!(json[1]["id"], "rel-00001");
}

#[test]
fn a_no_traffic_revision_answers_only_by_its_tag_in_the_path_or_a_header() {
    let g = gust();
    release(&g, "canary", "stable", "", &[]);
    let out = release(&g, "canary", "candidate", "", &["--no-traffic", "--tag", "candidate"]);
    assert!(out.contains("deployed canary (canary-00002), taking 0% of calls"), "{out}");
    assert!(out.contains(&format!("{}/function/canary@candidate", g.url)), "{out}");

    assert_eq!(tally(&g, "/function/canary", 30, ""), BTreeMap::from([("stable".to_owned(), 30)]));
    assert_eq!(g.post("canary@candidate", "").text(), "candidate");
    assert_eq!(g.call("POST", "/function/canary@candidate/sub?x=1", b"", &[]).text(), "candidate");
    assert_eq!(g.call("POST", "/function/canary", b"", &["Gust-Tag: candidate"]).text(), "candidate");
    assert_eq!(g.post("canary@latest", "").text(), "candidate");

    let missing = g.post("canary@nope", "");
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_eq!(missing.json()["error"], "tag_not_found");
    assert!(missing.json()["message"].as_str().unwrap().contains("no tag `nope`"));

    // The first revision cannot hide: it is all there is.
    let dir = g.function("fresh", &[("gust.toml", &manifest("fresh", "python", "")), ("handler.py", "")]);
    let out = g.cli(&["deploy", dir.to_str().unwrap(), "--no-traffic"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("with no revision of the function ready"));
    let out = g.cli(&["deploy", dir.to_str().unwrap(), "--tag", "Bad_Tag"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("tag `Bad_Tag` is not valid"));
}

#[test]
fn a_90_10_split_lands_within_three_points_refused_splits_change_nothing_and_both_survive_a_restart() {
    let g = gust();
    release(&g, "split", "old", "", &[]);
    release(&g, "split", "new", "", &["--no-traffic", "--tag", "candidate"]);
    let out = g.cli_ok(&["traffic", "split", "split-00001=90", "candidate=10"]);
    assert!(out.contains("90%") && out.contains("10%"), "{out}");

    let counts = tally(&g, "/function/split", 2000, "");
    let new = counts.get("new").copied().unwrap_or(0);
    assert_eq!(counts.values().sum::<usize>(), 2000, "{counts:?}");
    assert!((140..=260).contains(&new), "10% ± 3 points of 2000 calls: {counts:?}");

    // Shares that do not sum to 100, or name nothing, are refused and change nothing.
    for bad in [&["split-00001=90", "candidate=20"][..], &["split-00009=100"], &["nope=100"], &["split-00001=x"]] {
        let mut args = vec!["traffic", "split"];
        args.extend_from_slice(bad);
        let out = g.cli(&args);
        assert!(!out.status.success(), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("must sum to 100")
                || err.contains("does not exist")
                || err.contains("is not a revision")
                || err.contains("TARGET=PERCENT"),
            "{bad:?}: {err}"
        );
    }
    let shares = |t: &serde_json::Value| -> Vec<(String, u64)> {
        t["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["revision"].as_str().unwrap().to_owned(), t["percent"].as_u64().unwrap()))
            .collect()
    };
    let want = vec![("split-00002".to_owned(), 10), ("split-00001".to_owned(), 90)];
    assert_eq!(shares(&traffic(&g, "split")), want);

    let g = g.restart();
    assert_eq!(shares(&traffic(&g, "split")), want);
    assert_eq!(g.post("split@candidate", "").text(), "new");

    // A plain deploy takes every call again; the tag stays where it was.
    release(&g, "split", "newest", "", &[]);
    assert_eq!(tally(&g, "/function/split", 20, ""), BTreeMap::from([("newest".to_owned(), 20)]));
    assert_eq!(g.post("split@candidate", "").text(), "new");
    g.cli_ok(&["traffic", "split", "--untag", "candidate", "--tag", "previous=split-00001"]);
    assert_eq!(g.post("split@candidate", "").status, 404);
    assert_eq!(g.post("split@previous", "").text(), "old");
}

#[test]
fn rollback_sends_every_call_back_in_one_step() {
    let g = gust();
    for answer in ["v1", "v2", "v3"] {
        release(&g, "back", answer, "", &[]);
    }
    let out = g.cli_ok(&["rollback", "back"]);
    assert!(out.contains("back-00002") && out.contains("100%"), "{out}");
    assert_eq!(tally(&g, "/function/back", 20, ""), BTreeMap::from([("v2".to_owned(), 20)]));
    g.cli_ok(&["rollback", "back"]);
    assert_eq!(g.post("back", "").text(), "v1");
    let out = g.cli(&["rollback", "back"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("back-00001 is the first ready revision"));
    g.cli_ok(&["rollback", "back", "back-00003"]);
    assert_eq!(g.post("back", "").text(), "v3");
    let out = g.cli(&["rollback", "back", "back-00042"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("revision 00042 does not exist"));
    assert_eq!(g.post("back", "").text(), "v3");
}

#[test]
fn an_old_instance_finishes_its_call_in_flight_before_it_stops() {
    let g = gust();
    let go = g.work.join("go");
    g.deploy("drain", &[("gust.toml", &manifest("drain", "python", "")), ("handler.py", &held_until(&go, "'old'"))]);
    let url = format!("{}/function/drain", g.url);
    let held = std::thread::spawn(move || gust_test_support::curl(&url, "POST", b"", &[]));
    let old = eventually("the call in flight", || {
        let d = g.describe("drain");
        let i = &d["instances"][0];
        (i["in_flight"] == 1).then(|| i["pid"].as_u64().unwrap() as u32)
    });
    release(&g, "drain", "new", "", &[]);
    assert_eq!(g.post("drain", "").text(), "new");
    assert!(alive(old), "the old instance still holds its call");
    std::fs::write(&go, "").unwrap();
    let answer = held.join().unwrap();
    assert_eq!((answer.status, answer.text()), (200, "old".to_owned()));
    eventually("the old instance to stop", || (!alive(old)).then_some(()));
}

#[test]
fn a_redeploy_and_traffic_shifts_under_load_lose_no_call() {
    let g = gust();
    release(&g, "busy", "v1", "", &[]);
    let url = format!("{}/function/busy", g.url);
    // wrk: 16 connections for 8 s; it prints "Non-2xx or 3xx responses" and
    // "Socket errors" only when there are any.
    let wrk = std::process::Command::new("wrk")
        .args(["-t", "2", "-c", "16", "-d", "8s", "--timeout", "5s", &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wrk (scripts/test installs it)");
    eventually("load on the function", || (g.describe("busy")["scaling"][0]["calls"].as_u64()? > 200).then_some(()));
    release(&g, "busy", "v2", "", &["--no-traffic", "--tag", "next"]);
    g.cli_ok(&["traffic", "busy", "busy-00001=50", "next=50"]);
    eventually("calls on both", || {
        let s = g.describe("busy")["scaling"].clone();
        s.as_array()?.iter().all(|r| r["calls"].as_u64().unwrap_or(0) > 50).then_some(())
    });
    release(&g, "busy", "v3", "", &[]);
    eventually("calls on v3", || {
        let s = g.describe("busy")["scaling"].clone();
        s.as_array()?
            .iter()
            .any(|r| r["revision"] == "busy-00003" && r["calls"].as_u64().unwrap_or(0) > 50)
            .then_some(())
    });
    g.cli_ok(&["rollback", "busy"]);
    let out = wrk.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("requests in"), "{report}");
    assert!(!report.contains("Non-2xx"), "every call answered 2xx: {report}");
    assert!(!report.contains("Socket errors"), "no call was cut: {report}");
}

/// Deploys `files` as `name` expecting the deploy to fail; returns its error output.
fn failed_deploy(g: &Gust, name: &str, files: &[(&str, &str)], flags: &[&str]) -> String {
    let dir = g.function(name, files);
    let mut args = vec!["deploy", dir.to_str().unwrap()];
    args.extend_from_slice(flags);
    let out = g.cli(&args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the deploy must fail: {err}");
    err
}

#[test]
fn a_revision_that_cannot_start_is_failed_with_its_output_takes_no_traffic_and_the_previous_keeps_serving() {
    let g = gust();
    release(&g, "rel", "one", "", &[]);
    // A syntax error: the check's instance dies with its traceback; rel-00001 serves on.
    let syntax =
        [("gust.toml", manifest("rel", "python", "")), ("handler.py", "def handle(e, c):\n    return (\n".into())];
    let files: Vec<(&str, &str)> = syntax.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let err = failed_deploy(&g, "rel", &files, &[]);
    assert!(err.contains("rel-00002 failed to start, so it takes no traffic (rel-00001 keeps serving)"), "{err}");
    assert!(err.contains("SyntaxError"), "its output is shown: {err}");
    assert_eq!(tally(&g, "/function/rel", 20, ""), BTreeMap::from([("one".to_owned(), 20)]));
    assert_eq!(g.post("rel@latest", "").text(), "one", "@latest is the latest ready revision");

    let d = g.describe("rel");
    let failed = &d["revisions"][0];
    assert_eq!((failed["id"].as_str(), failed["status"].as_str()), (Some("rel-00002"), Some("failed")), "{d}");
    assert!(failed["failure"].as_str().unwrap().contains("SyntaxError"), "{d}");
    assert_eq!((failed["traffic_percent"].as_u64(), failed["latest"].as_bool()), (Some(0), Some(false)));
    assert_eq!(d["revisions"][1]["latest"], true);
    let text = g.cli_ok(&["describe", "rel"]);
    assert!(text.contains("rel-00002 failed to start") && text.contains("SyntaxError"), "{text}");
    let listing = g.cli_ok(&["revisions", "rel"]);
    assert!(listing.lines().nth(1).unwrap().contains("failed"), "{listing}");

    // It keeps no traffic unless forced, and a tag asked for at deploy is not given.
    let err = String::from_utf8_lossy(&g.cli(&["traffic", "rel", "rel-00002=100"]).stderr).into_owned();
    assert!(err.contains("rel-00002 failed to start"), "{err}");
    let err = failed_deploy(&g, "rel", &files, &["--no-traffic", "--tag", "next"]);
    assert!(err.contains("rel-00003 failed to start"), "deploying it again is a retry: {err}");
    assert_eq!(g.post("rel@next", "").status, 404);
    g.cli_ok(&["traffic", "rel", "rel-00002=100", "--force"]);
    let forced = g.post("rel", "");
    assert_eq!(forced.status, 502, "forced onto a revision that cannot start: {}", forced.text());
    // Rollback skips revisions that failed.
    g.cli_ok(&["rollback", "rel"]);
    assert_eq!(g.post("rel", "").text(), "one");
    // A fix is a revision like any other.
    release(&g, "rel", "fixed", "", &[]);
    assert_eq!(g.post("rel", "").text(), "fixed");
    assert_eq!(g.describe("rel")["revisions"][0]["status"], "ready");
}

#[test]
fn a_crash_at_start_up_fails_the_revision_in_every_runtime_that_starts_one() {
    let g = gust();
    /// Runtime, function, its code, and what the failure must say.
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 4] = [
        (
            "node",
            "throws",
            &[("handler.js", "throw new Error('boom at start-up');\nmodule.exports = () => 1;\n")],
            "boom at start-up",
        ),
        ("python", "exits", &[("handler.py", "import sys\nsys.exit('no config found')\n")], "no config found"),
        ("shell", "unparsable", &[("handler.sh", "if then fi\n")], "syntax error"),
        ("exec", "quits", &[("server", "#!/bin/sh\necho cannot bind >&2\nexit 2\n")], "cannot bind"),
    ];
    for (runtime, name, code, says) in cases {
        let extra = match runtime {
            "exec" => "handler = \"server\"\nprotocol = \"http\"\n",
            _ => "",
        };
        // initial = 0 wants no instance, and the check still runs.
        let manifest = format!("{}[scale]\ninitial = 0\n", manifest(name, runtime, extra));
        let mut files = vec![("gust.toml", manifest.as_str())];
        files.extend_from_slice(code);
        let err = failed_deploy(&g, name, &files, &[]);
        assert!(err.contains(&format!("{name}-00001 failed to start")) && err.contains(says), "{runtime}: {err}");
        assert_eq!(g.describe(name)["revisions"][0]["status"], "failed", "{runtime}");
        assert_eq!(g.post(name, "").status, 503, "{runtime}");
    }
}

#[test]
fn old_revisions_without_traffic_are_collected_with_code_no_revision_uses() {
    let g = gust_env(&[("GUST_REVISION_KEEP", "1"), ("GUST_REVISION_MAX_AGE", "0s")]);
    // Code a (tagged, so it stays), b, c, d, then a again: five revisions, four trees.
    release(&g, "gc", "a", "[scale]\ninitial = 0", &["--tag", "pinned"]);
    for answer in ["b", "c", "d", "a"] {
        release(&g, "gc", answer, "[scale]\ninitial = 0", &[]);
    }
    // Each deploy collects what it can; a revision still draining in a pool is kept.
    // Once those pools are gone, a traffic change collects too: 1 stays tagged, 4 is
    // the one kept, 3 and 2 go.
    eventually("old pools to drain, leaving those of 5 and 1", || {
        let s = g.describe("gc")["scaling"].clone();
        (s.as_array()?.len() == 2).then_some(())
    });
    g.cli_ok(&["traffic", "gc", "gc-00005=100"]);
    let d = g.describe("gc");
    let ids: Vec<&str> = d["revisions"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gc-00005", "gc-00004", "gc-00001"], "{d}");
    let code = std::fs::read_dir(g.data.join("code")).unwrap().count();
    assert_eq!(code, 2, "b and c are gone; a (1 and 5) and d stay");
    let cached = g.data.join("cache/pycache").join(g.data.join("code").strip_prefix("/").unwrap());
    let bytecode = std::fs::read_dir(&cached).map_or(0, Iterator::count);
    assert_eq!(bytecode, 2, "the bytecode of deleted code goes with it, in {}", cached.display());
    assert_eq!(g.post("gc@pinned", "").text(), "a");
    assert_eq!(g.post("gc", "").text(), "a");
    g.cli_ok(&["rollback", "gc"]);
    assert_eq!(g.post("gc", "").text(), "d");

    // The knobs are checked at start-up.
    let err = crate::up_refused(&["--revision-keep", "5", "--revision-max", "2", "--revision-max-age", "forever"]);
    assert!(
        err.contains("--revision-max (2) is below --revision-keep (5)") && err.contains("--revision-max-age"),
        "{err}"
    );
}

#[test]
fn with_a_domain_tag_name_dot_domain_reaches_the_tagged_revision() {
    let g = gust_env(&[("GUST_DOMAIN", "fn.example")]);
    release(&g, "my-fn", "stable", "", &[]);
    release(&g, "my-fn", "canary", "", &["--no-traffic", "--tag", "next-up"]);
    assert_eq!(g.call("GET", "/", b"", &["Host: my-fn.fn.example"]).text(), "stable");
    assert_eq!(g.call("GET", "/", b"", &["Host: next-up-my-fn.fn.example"]).text(), "canary");
    assert_eq!(g.call("GET", "/", b"", &["Host: latest-my-fn.fn.example"]).text(), "canary");
    assert_eq!(g.call("GET", "/", b"", &["Host: nope-my-fn.fn.example"]).status, 404);
}
