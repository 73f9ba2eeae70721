//! The platform's own doors (issue 8): the server's token for the control API, `gust
//! login`, private functions.

use gust_test_support::{curl, eventually};

use crate::{gust, gust_env, manifest};

const ECHO_AUTH: &str = "def handle(e, c):\n    return {'authorization': e.headers.get('authorization')}\n";

#[test]
fn with_auth_the_control_api_needs_the_token_and_function_calls_do_not() {
    let mut g = gust_env(&[("GUST_AUTH", "1")]);
    assert!(g.banner.contains("the control API needs the token"), "{}", g.banner);
    let token = g.token();
    assert_eq!(token.len(), 64, "256 random bits in hex");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(g.data.join("token")).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "the token file is the owner's alone: {mode:o}");

    let base = g.url.clone();
    let url = |p: &str| format!("{base}{p}");
    let missing = curl(&url("/api/v1/functions"), "GET", b"", &[]);
    let wrong = curl(&url("/api/v1/functions"), "GET", b"", &["Authorization: Bearer not-the-token"]);
    let basic_wrong = curl(&url("/api/v1/functions"), "GET", b"", &["Authorization: Basic YWRtaW46bm9wZQ=="]);
    for r in [&missing, &wrong, &basic_wrong] {
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.json()["error"], "unauthorized");
        assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"gust\""));
    }
    // A wrong token learns nothing a missing one does not.
    assert_eq!(missing.body, wrong.body);
    assert!(!missing.text().contains(&token));
    assert_eq!(curl(&url("/api/v1/functions"), "GET", b"", &[&format!("Authorization: Bearer {token}")]).status, 200);
    // HTTP Basic with the token as password works too, as faas-cli sends it.
    let basic = format!("Authorization: Basic {}", gust_api::wire::base64(format!("admin:{token}").as_bytes()));
    assert_eq!(curl(&url("/api/v1/info"), "GET", b"", &[&basic]).status, 200);
    assert_eq!(curl(&url("/healthz"), "GET", b"", &[]).status, 200);

    // The CLI without the token says how to get it.
    let out = g.cli(&["ls"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("gust login"), "{}", String::from_utf8_lossy(&out.stderr));

    // `gust login` checks the token and keeps it; every later command sends it.
    let config = g.work.join("config");
    let login = |args: &[&str], stdin: &str| {
        use std::io::Write as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gust"))
            .args(args)
            .env("GUST_URL", &base)
            .env("XDG_CONFIG_HOME", &config)
            .env_remove("GUST_TOKEN")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let refused = login(&["login", "--token-stdin"], "wrong-token-000000\n");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refused the token"));
    let ok = login(&["login", "--token-file", g.data.join("token").to_str().unwrap()], "");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let saved = config.join("gust/credentials.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&saved).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    let ls = login(&["ls"], "");
    assert!(ls.status.success(), "{}", String::from_utf8_lossy(&ls.stderr));
    assert!(login(&["logout"], "").status.success());
    assert!(!login(&["ls"], "").status.success());

    // Deploys need it; calls to a public function do not, and never see the token.
    g.use_token();
    g.deploy("echo", &[("gust.toml", &manifest("echo", "python", "")), ("handler.py", ECHO_AUTH)]);
    let r = curl(&url("/function/echo"), "GET", b"", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = curl(&url("/function/echo"), "GET", b"", &[&format!("Authorization: Bearer {token}")]);
    assert_eq!(r.json()["authorization"], serde_json::Value::Null, "the token was passed on: {}", r.text());
    // Other credentials are the function's business and reach it.
    let r = curl(&url("/function/echo"), "GET", b"", &["Authorization: Bearer app-token"]);
    assert_eq!(r.json()["authorization"], "Bearer app-token");
    // Call records are the control API's.
    let id = r.header("x-call-id").unwrap().to_owned();
    // (Sync call records are written in batches: wait for this one.)
    eventually("the call's record", || (g.call("GET", &format!("/calls/{id}"), b"", &[]).status == 200).then_some(()));
    assert_eq!(curl(&url(&format!("/calls/{id}")), "GET", b"", &[]).status, 401);
}

#[test]
fn listening_beyond_loopback_always_requires_the_token() {
    let g = gust_env(&[("GUST_LISTEN", "0.0.0.0:0")]);
    assert!(g.banner.contains("the control API needs the token"), "{}", g.banner);
    assert_eq!(curl(&format!("{}/api/v1/functions", g.url), "GET", b"", &[]).status, 401);
    let info = curl(&format!("{}/api/v1/info", g.url), "GET", b"", &[&format!("Authorization: Bearer {}", g.token())]);
    assert_eq!(info.json()["auth"]["control_api"], true, "{}", info.text());
    assert!(!info.text().contains(&g.token()), "the API never shows the token");
}

#[test]
fn a_private_function_answers_only_callers_with_the_token() {
    let g = gust();
    assert!(g.banner.contains("control API open on loopback"), "{}", g.banner);
    g.deploy("secret", &[("gust.toml", &manifest("secret", "python", "auth = \"token\"")), ("handler.py", ECHO_AUTH)]);
    g.deploy("open", &[("gust.toml", &manifest("open", "python", "")), ("handler.py", ECHO_AUTH)]);
    let bearer = format!("Authorization: Bearer {}", g.token());
    let cases: [(&str, &str, &[u8]); 3] = [
        ("POST", "/function/secret", b"x"),
        ("POST", "/async-function/secret", b"x"),
        ("POST", "/2015-03-31/functions/secret/invocations", b"{}"),
    ];
    for (method, path, body) in cases {
        let r = g.call(method, path, body, &[]);
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        let r = g.call(method, path, body, &[&bearer]);
        assert!(r.status == 200 || r.status == 202, "{path}: {} {}", r.status, r.text());
    }
    let r = g.call("GET", "/function/secret", b"", &[&bearer]);
    assert_eq!(r.json()["authorization"], serde_json::Value::Null, "{}", r.text());
    assert_eq!(g.call("GET", "/function/open", b"", &[]).status, 200);
    assert!(g.cli_ok(&["describe", "secret"]).contains("auth = \"token\""));
    // A typo in the setting fails the deploy and names the field.
    let dir =
        g.function("bad", &[("gust.toml", &manifest("bad", "python", "auth = \"tokens\"")), ("handler.py", ECHO_AUTH)]);
    let out = g.cli(&["deploy", dir.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn callbacks_to_loopback_private_and_link_local_addresses_are_refused_unless_allowed() {
    let g = gust();
    g.deploy("cb", &[("gust.toml", &manifest("cb", "python", "")), ("handler.py", "def handle(d):\n    return d\n")]);
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/",
        "http://10.0.0.5/",
        "http://192.168.1.1:8080/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:9/",
    ] {
        let r = g.call("POST", "/async-function/cb", b"1", &[&format!("X-Callback-Url: {url}")]);
        assert_eq!(r.status, 400, "{url}: {}", r.text());
        assert!(r.text().contains("--outbound-allow") || r.text().contains("reserved"), "{url}: {}", r.text());
    }
    // Nothing was queued for them.
    assert_eq!(g.call("GET", "/api/v1/functions/cb/calls", b"", &[]).json(), serde_json::json!([]));

    // Allowing loopback opens loopback only.
    let g = gust_env(&[("GUST_OUTBOUND_ALLOW", "loopback")]);
    g.deploy("cb", &[("gust.toml", &manifest("cb", "python", "")), ("handler.py", "def handle(d):\n    return d\n")]);
    assert_eq!(g.call("POST", "/async-function/cb", b"1", &["X-Callback-Url: http://127.0.0.1:9/"]).status, 202);
    assert_eq!(g.call("POST", "/async-function/cb", b"1", &["X-Callback-Url: http://169.254.169.254/"]).status, 400);
    // A bad setting is refused at start-up.
    let err = crate::up_refused(&["--outbound-allow", "intranet"]);
    assert!(err.contains("--outbound-allow"), "{err}");
}

/// Reads its secret three ways: the file, the variable, and (printing it) the log.
const READS_SECRET: &str = r#"import os, stat
def handle(e, c):
    d = os.environ["GUST_SECRETS"]
    p = os.path.join(d, "db")
    print("the password is", open(p).read().strip())
    return {"file": open(p).read(), "env": os.environ.get("DB_PASSWORD"),
            "mode": oct(stat.S_IMODE(os.stat(p).st_mode)), "dir_mode": oct(stat.S_IMODE(os.stat(d).st_mode)),
            "in_scratch": d.startswith(os.environ["GUST_SCRATCH"])}
"#;

#[test]
fn secrets_reach_only_the_functions_listing_them_and_never_show_up_in_gusts_output() {
    let g = gust();
    let create = |name: &str, value: &str, verb: &str| {
        use std::io::Write as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gust"))
            .args(["secret", verb, name])
            .env("GUST_URL", &g.url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(value.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(create("db", "hunter22-first\n", "create").status.success());
    let again = create("db", "other", "create");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("gust secret update db"));

    // A function that does not list it cannot deploy with it in secret_env.
    let bad = manifest("bad", "python", "[secret_env]\nX = \"db\"");
    let dir = g.function("bad", &[("gust.toml", &bad), ("handler.py", READS_SECRET)]);
    let out = g.cli(&["deploy", dir.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not in `secrets`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nor can one list a secret that does not exist.
    let missing = manifest("bad", "python", "secrets = [\"nope\"]");
    let dir = g.function("bad", &[("gust.toml", &missing), ("handler.py", READS_SECRET)]);
    let out = g.cli(&["deploy", dir.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("gust secret create nope"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let m = manifest(
        "reader",
        "python",
        "secrets = [\"db\"]\n[secret_env]\nDB_PASSWORD = \"db\"\n[scale]\ninitial = 0\nstable_window = \"1s\"\nscale_to_zero_grace = \"0s\"",
    );
    g.deploy("reader", &[("gust.toml", &m), ("handler.py", READS_SECRET)]);
    let r = g.get("reader").json();
    assert_eq!(r["file"], "hunter22-first\n");
    assert_eq!(r["env"], "hunter22-first\n");
    assert_eq!((r["mode"].as_str(), r["dir_mode"].as_str()), (Some("0o400"), Some("0o700")));
    assert_eq!(r["in_scratch"], true);
    // A function that does not list it sees nothing.
    g.deploy("other", &[("gust.toml", &manifest("other", "python", "")), ("handler.py", "import os\ndef handle(e, c):\n    return {'secrets': os.environ.get('GUST_SECRETS'), 'env': os.environ.get('DB_PASSWORD')}\n")]);
    assert_eq!(g.get("other").json(), serde_json::json!({"secrets": null, "env": null}));

    // Printed by the function, it is masked in the log.
    let logs = crate::log_with(&g, "reader", |l| l.contains("the password is"));
    assert!(logs.contains("the password is ******"), "{logs}");
    assert!(!logs.contains("hunter22"), "{logs}");

    // A shell (stdio) function and a Node one (a warm spare) read it too.
    let sh = "#!/bin/sh\nprintf '%s|%s' \"$(cat \"$GUST_SECRETS/db\")\" \"$DB_PASSWORD\"\n";
    g.deploy(
        "sh",
        &[
            ("gust.toml", &manifest("sh", "shell", "secrets = [\"db\"]\n[secret_env]\nDB_PASSWORD = \"db\"")),
            ("handler.sh", sh),
        ],
    );
    assert_eq!(g.get("sh").text(), "hunter22-first|hunter22-first\n");
    let js = "const fs = require('fs');\nmodule.exports = async (e, c) => fs.readFileSync(process.env.GUST_SECRETS + '/db', 'utf8');\n";
    g.deploy("js", &[("gust.toml", &manifest("js", "node", "secrets = [\"db\"]")), ("handler.js", js)]);
    assert_eq!(g.get("js").text(), "hunter22-first\n");

    // Updated, a new instance reads the new value.
    assert!(create("db", "hunter22-second", "update").status.success());
    eventually("reader to scale to zero", || g.instance_pids("reader").is_empty().then_some(()));
    assert_eq!(g.get("reader").json()["file"], "hunter22-second");

    // Listed by name and user, never by value; nowhere in describe or gust's own log.
    let list = g.cli_ok(&["secret", "ls"]);
    assert!(list.contains("db") && list.contains("reader"), "{list}");
    let api = g.call("GET", "/api/v1/secrets", b"", &[]).text();
    let describe = g.call("GET", "/api/v1/functions/reader", b"", &[]).text();
    for text in [&list, &api, &describe, &g.server_log()] {
        assert!(!text.contains("hunter22"), "a value leaked: {text}");
    }
    // It cannot be deleted while functions read it.
    let r = g.call("DELETE", "/api/v1/secrets/db", b"", &[]);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("reader"), "{}", r.text());
    for f in ["reader", "sh", "js"] {
        g.cli_ok(&["rm", f]);
    }
    g.cli_ok(&["secret", "rm", "db"]);
    assert_eq!(g.call("DELETE", "/api/v1/secrets/db", b"", &[]).status, 404);
    // Values past 64 KiB are refused.
    let big = vec![b'x'; 65 * 1024];
    assert_eq!(g.call("PUT", "/api/v1/secrets/big", &big, &[]).status, 413);
}
