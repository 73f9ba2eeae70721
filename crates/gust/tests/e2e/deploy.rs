//! `gust new`, `gust deploy`, revisions, manifest errors and hostile uploads (points 2, 3, 8).

use crate::{gust, manifest};

#[test]
fn new_templates_deploy_and_answer_for_every_runtime() {
    let g = gust();
    for runtime in ["python", "node", "shell", "exec"] {
        let name = format!("hello-{runtime}");
        let out = g.cli_ok(&["new", &name, "--runtime", runtime]);
        assert!(out.contains("created"), "{out}");
        assert!(g.work.join(&name).join("gust.toml").is_file());
        let out = g.cli_ok(&["deploy", &name]);
        assert!(out.contains(&format!("deployed {name} ({name}-00001)")), "{out}");
        assert!(out.contains(&format!("{}/function/{name}", g.url)), "{out}");
        let r = g.post(&name, "");
        assert_eq!(r.status, 200, "{runtime}: {}", r.text());
        assert!(r.text().contains("world"), "{runtime}: {}", r.text());
    }
    let ls = g.cli_ok(&["ls"]);
    for runtime in ["python", "node", "shell", "exec"] {
        assert!(ls.contains(&format!("hello-{runtime}-00001")), "{ls}");
    }
}

#[test]
fn identical_deploy_changes_nothing_and_new_code_makes_a_revision() {
    let g = gust();
    let files = |body: &str| {
        vec![
            ("gust.toml".to_owned(), manifest("rev", "python", "")),
            ("handler.py".to_owned(), format!("def handle(e, c):\n    return {body:?}\n")),
        ]
    };
    let deploy = |f: Vec<(String, String)>| {
        let refs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        g.deploy("rev", &refs)
    };
    assert!(deploy(files("one")).contains("rev-00001"));
    let again = deploy(files("one"));
    assert!(again.contains("unchanged (rev-00001)"), "{again}");
    assert_eq!(g.post("rev", "").text(), "one");
    assert!(deploy(files("two")).contains("deployed rev (rev-00002)"));
    assert_eq!(g.post("rev", "").text(), "two");
    let d = g.describe("rev");
    assert_eq!(d["revisions"][0]["id"], "rev-00002");
    assert_eq!(d["revisions"][0]["traffic_percent"], 100);
    assert_eq!(d["revisions"][1]["traffic_percent"], 0);
}

#[test]
fn an_invalid_manifest_lists_every_problem_by_field() {
    let g = gust();
    let dir = g.function(
        "bad",
        &[
            (
                "gust.toml",
                "name = \"Bad\"\nruntime = \"cobol\"\ncolour = 1\n[scale]\nmax = 0\nidle_timeout = \"soon\"\n",
            ),
            ("handler.py", ""),
        ],
    );
    let out = g.cli(&["deploy", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for field in ["name:", "runtime:", "colour:", "scale.max:", "scale.idle_timeout:", "HTTP 422"] {
        assert!(err.contains(field), "missing {field} in: {err}");
    }
    let missing = g.function("nohandler", &[("gust.toml", &manifest("nohandler", "python", ""))]);
    let out = g.cli(&["deploy", missing.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("handler.py"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn hostile_archives_are_refused_without_writing_outside() {
    let g = gust();
    let escape = g.work.join("escaped");
    let rel = format!("../../../../../../../..{}", escape.to_str().unwrap());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (gust_test_support::raw_targz(&[(rel.as_str(), b"x")]), ".."),
        (gust_test_support::raw_targz(&[(escape.to_str().unwrap(), b"x")]), "absolute"),
        (b"not a tarball".to_vec(), "not a valid"),
    ];
    for (bytes, want) in cases {
        let r = g.call("POST", "/api/v1/functions", &bytes, &["Content-Type: application/gzip"]);
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["error"], "bad_archive");
        assert!(r.json()["message"].as_str().unwrap().contains(want), "{}", r.text());
    }
    assert!(!escape.exists());
    // An upload over --max-upload is refused (gzip bombs are capped while unpacking: unit tests).
    let g = crate::gust_env(&[("GUST_MAX_UPLOAD", "1Ki")]);
    let big = vec![b'a'; 64 << 10];
    let r = g.call("POST", "/api/v1/functions", &big, &[]);
    assert_eq!(r.status, 413, "{}", r.text());
}

#[test]
fn ls_describe_and_rm() {
    let g = gust();
    g.deploy(
        "gone",
        &[("gust.toml", &manifest("gone", "python", "")), ("handler.py", "def handle(e, c):\n    return 'x'\n")],
    );
    assert_eq!(g.post("gone", "").status, 200);
    let pids = g.instance_pids("gone");
    assert_eq!(pids.len(), 1);
    let describe = g.cli_ok(&["describe", "gone"]);
    for want in ["gone-00001", "100%", "runtime = \"python\"", "concurrency = 1", "Recent errors"] {
        assert!(describe.contains(want), "missing {want} in {describe}");
    }
    assert!(g.cli_ok(&["rm", "gone"]).contains("removed gone"));
    let r = g.post("gone", "");
    assert_eq!(r.status, 404);
    gust_test_support::eventually("the instance to stop", || (!gust_test_support::alive(pids[0])).then_some(()));
    assert!(!g.cli_ok(&["ls"]).contains("gone"));
    let out = g.cli(&["rm", "gone"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}
