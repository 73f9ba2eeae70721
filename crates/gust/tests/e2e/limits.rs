//! Limits across functions (issue 8, point 7): what happens past `--max-instances`,
//! `--max-header-size`, `--log-line-max` and `--log-call-max`. Per-function limits
//! (body size, timeout, queue depth, `[async] max_queued`) are tested beside their
//! features.

use gust_test_support::eventually;

use crate::{gust_env, held_until, manifest};

#[test]
fn past_max_instances_a_call_that_needs_one_more_gets_503_and_others_keep_serving() {
    let g = gust_env(&[("GUST_MAX_INSTANCES", "2")]);
    let go = g.work.join("go");
    for name in ["a", "b", "c"] {
        let m = manifest(name, "python", "[scale]\ninitial = 0");
        g.deploy(name, &[("gust.toml", &m), ("handler.py", &held_until(&go, "'ok'"))]);
    }
    let url = g.url.clone();
    let held: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let url = url.clone();
            std::thread::spawn(move || gust_test_support::curl(&format!("{url}/function/{name}"), "GET", b"", &[]))
        })
        .collect();
    eventually("two instances, one each for a and b", || {
        (g.instance_pids("a").len() == 1 && g.instance_pids("b").len() == 1).then_some(())
    });
    let r = g.get("c");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "at_capacity");
    assert!(r.text().contains("--max-instances"), "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    std::fs::write(&go, "").unwrap();
    for h in held {
        assert_eq!(h.join().unwrap().text(), "ok");
    }
    // A running instance takes the next call; the cap was about starting a third.
    assert_eq!(g.get("a").text(), "ok");
    // Once one goes (removed here, rather than waiting for it to scale to zero), c starts.
    g.cli_ok(&["rm", "b"]);
    eventually("c to get an instance", || (g.get("c").status == 200).then_some(()));
}

#[test]
fn headers_past_max_header_size_get_431_and_output_is_capped_per_line_and_per_call() {
    let g = gust_env(&[("GUST_MAX_HEADER_SIZE", "16Ki"), ("GUST_LOG_LINE_MAX", "1Ki"), ("GUST_LOG_CALL_MAX", "4Ki")]);
    let code = "import sys\ndef handle(e, c):\n    if e.path == '/long':\n        print('x' * 3000)\n    elif e.path == '/chatty':\n        for i in range(100):\n            print('%03d ' % i + 'y' * 96)\n    return 'ok'\n";
    g.deploy("out", &[("gust.toml", &manifest("out", "python", "")), ("handler.py", code)]);

    let big = format!("X-Big: {}", "a".repeat(20 * 1024));
    assert_eq!(g.call("GET", "/function/out", b"", &[&big]).status, 431);
    let fine = format!("X-Big: {}", "a".repeat(4 * 1024));
    assert_eq!(g.call("GET", "/function/out", b"", &[&fine]).status, 200);

    let long = g.call("GET", "/function/out/long", b"", &[]);
    let id = long.header("x-call-id").unwrap().to_owned();
    let lines = eventually("the long line's pieces", || {
        let logs = g.call("GET", "/api/v1/functions/out/logs?tail=1000", b"", &[]).text();
        let mine: Vec<serde_json::Value> = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["call_id"] == id.as_str())
            .collect();
        (mine.iter().map(|l| l["line"].as_str().unwrap().len()).sum::<usize>() == 3000).then_some(mine)
    });
    let sizes: Vec<usize> = lines.iter().map(|l| l["line"].as_str().unwrap().len()).collect();
    assert_eq!(sizes, [1024, 1024, 952], "a 3000-byte line in 1 KiB pieces");

    for _ in 0..2 {
        let chatty = g.call("GET", "/function/out/chatty", b"", &[]);
        assert_eq!(chatty.text(), "ok", "the cap drops output, never the call");
        let id = chatty.header("x-call-id").unwrap().to_owned();
        let mine = eventually("the cap's note", || {
            let logs = g.call("GET", "/api/v1/functions/out/logs?tail=1000", b"", &[]).text();
            let mine: Vec<serde_json::Value> = logs
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|l| l["call_id"] == id.as_str())
                .collect();
            mine.iter().any(|l| l["stream"] == "gust").then_some(mine)
        });
        let kept: Vec<&serde_json::Value> = mine.iter().filter(|l| l["stream"] == "stdout").collect();
        // 100-byte lines: 40 fit in 4096 bytes, the 41st crosses the cap.
        assert_eq!(kept.len(), 40, "{mine:?}");
        assert_eq!(kept[0]["line"].as_str().unwrap().get(..3), Some("000"));
        let note = mine.iter().find(|l| l["stream"] == "gust").unwrap();
        assert!(note["line"].as_str().unwrap().contains("more than 4096 bytes"), "{note}");
        assert_eq!(mine.len(), 41, "nothing after the note");
    }
}
