//! Deploy-time builds: dependencies from requirements.txt and package.json, manifest
//! build commands (C, Java), the build cache, and failures (issue 3, points 1–4).

use std::path::Path;
use std::process::Output;

use crate::{gust, gust_env, manifest};

/// Writes a pure-Python wheel `gustlib-VERSION` whose `shout()` says which version it is,
/// so the test needs no package index and no network.
fn wheel(dir: &Path, version: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let script = r#"
import base64, hashlib, sys, zipfile
d, v = sys.argv[1], sys.argv[2]
files = {
    "gustlib/__init__.py": ("def shout(s):\n    return s.upper() + ' (gustlib %s)'\n" % v).encode(),
    "gustlib-%s.dist-info/METADATA" % v: ("Metadata-Version: 2.1\nName: gustlib\nVersion: %s\n" % v).encode(),
    "gustlib-%s.dist-info/WHEEL" % v: b"Wheel-Version: 1.0\nGenerator: gust-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
rec = lambda n, b: "%s,sha256=%s,%d" % (n, base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b"=").decode(), len(b))
with zipfile.ZipFile("%s/gustlib-%s-py3-none-any.whl" % (d, v), "w") as z:
    for n, b in files.items():
        z.writestr(n, b)
    z.writestr("gustlib-%s.dist-info/RECORD" % v, "\n".join([rec(n, b) for n, b in files.items()] + ["gustlib-%s.dist-info/RECORD,," % v]) + "\n")
"#;
    let ok = std::process::Command::new("python3")
        .args(["-c", script, dir.to_str().unwrap(), version])
        .status()
        .unwrap()
        .success();
    assert!(ok, "could not write the test wheel");
}

fn deploy_dir(g: &gust_test_support::Gust, dir: &Path) -> Output {
    g.cli(&["deploy", dir.to_str().unwrap()])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn python_requirements_install_per_revision_from_a_local_wheel() {
    let wheels = tempfile::tempdir().unwrap();
    wheel(wheels.path(), "1.0");
    wheel(wheels.path(), "2.0");
    let g = gust_env(&[("PIP_FIND_LINKS", wheels.path().to_str().unwrap()), ("PIP_NO_INDEX", "1")]);
    let handler = "import gustlib\ndef handle(data):\n    return gustlib.shout(str(data))\n";
    for (name, version) in [("old", "1.0"), ("new", "2.0")] {
        let dir = g.function(
            name,
            &[
                ("gust.toml", &manifest(name, "python", "")),
                ("requirements.txt", &format!("gustlib=={version}\n")),
                ("handler.py", handler),
            ],
        );
        let out = deploy_dir(&g, &dir);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("==> pip install -r requirements.txt"), "the build streams to deploy: {err}");
        assert!(err.contains("Successfully installed gustlib"), "{err}");
    }
    // Two functions, two versions of the same library, each in its own revision.
    assert_eq!(g.post("old", "hey").text(), "HEY (gustlib 1.0)");
    assert_eq!(g.post("new", "hey").text(), "HEY (gustlib 2.0)");
}

#[test]
fn a_package_that_cannot_be_fetched_is_named_and_the_old_revision_keeps_serving() {
    let wheels = tempfile::tempdir().unwrap();
    wheel(wheels.path(), "1.0");
    let g = gust_env(&[("PIP_FIND_LINKS", wheels.path().to_str().unwrap()), ("PIP_NO_INDEX", "1")]);
    let handler = "import gustlib\ndef handle(data):\n    return gustlib.shout(str(data))\n";
    let files = |req: &str| {
        vec![
            ("gust.toml".to_owned(), manifest("lib", "python", "")),
            ("requirements.txt".to_owned(), req.to_owned()),
            ("handler.py".to_owned(), handler.to_owned()),
        ]
    };
    let write = |req: &str| {
        let f = files(req);
        let refs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        g.function("lib", &refs)
    };
    assert!(deploy_dir(&g, &write("gustlib==1.0\n")).status.success());
    let out = deploy_dir(&g, &write("gustlib==1.0\nno-such-package-xyz==3.1\n"));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("could not fetch package `no-such-package-xyz==3.1`"), "{err}");
    assert!(err.contains("HTTP 422"), "{err}");
    assert!(err.contains("last lines of the build"), "{err}");
    assert_eq!(g.post("lib", "still").text(), "STILL (gustlib 1.0)");
    assert_eq!(g.describe("lib")["revisions"].as_array().unwrap().len(), 1);
}

#[test]
fn node_dependencies_install_from_a_local_tarball() {
    let g = gust();
    let dep = g.work.join("gust-pad");
    std::fs::create_dir_all(&dep).unwrap();
    std::fs::write(dep.join("package.json"), r#"{"name":"gust-pad","version":"1.0.0","main":"index.js"}"#).unwrap();
    std::fs::write(dep.join("index.js"), "module.exports = (s) => '[' + s + ']';\n").unwrap();
    let dir = g.function(
        "padded",
        &[
            ("gust.toml", &manifest("padded", "node", "")),
            (
                "package.json",
                r#"{"name":"padded","version":"1.0.0","dependencies":{"gust-pad":"file:vendor/gust-pad-1.0.0.tgz"}}"#,
            ),
            ("handler.js", "const pad = require('gust-pad');\nmodule.exports = (x) => pad(x);\n"),
        ],
    );
    std::fs::create_dir_all(dir.join("vendor")).unwrap();
    let packed = std::process::Command::new("npm")
        .args(["pack", "--silent", "--pack-destination"])
        .arg(dir.join("vendor"))
        .current_dir(&dep)
        .env("npm_config_offline", "true")
        .status()
        .unwrap();
    assert!(packed.success());
    let out = deploy_dir(&g, &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("==> npm install"), "{}", text(&out.stderr));
    assert_eq!(g.post("padded", "hey").text(), "[hey]");
}

#[test]
fn a_node_lock_file_installs_with_npm_ci_and_a_lock_change_rebuilds() {
    let g = gust();
    let dep = g.work.join("gust-wrap");
    std::fs::create_dir_all(&dep).unwrap();
    let dir = g.work.join("wrapped");
    let vendor = dir.join("vendor");
    std::fs::create_dir_all(&vendor).unwrap();
    std::fs::write(dir.join("gust.toml"), manifest("wrapped", "node", "")).unwrap();
    std::fs::write(dir.join("handler.js"), "const wrap = require('gust-wrap');\nmodule.exports = (x) => wrap(x);\n")
        .unwrap();
    // Packs version `version` of the dependency, points package.json at it and writes the
    // lock file the way a user's `npm install` would, offline.
    let depend_on = |version: &str, mark: &str| {
        std::fs::write(
            dep.join("package.json"),
            format!(r#"{{"name":"gust-wrap","version":"{version}","main":"index.js"}}"#),
        )
        .unwrap();
        std::fs::write(dep.join("index.js"), format!("module.exports = (s) => '{mark}' + s + '{mark}';\n")).unwrap();
        let tgz = std::process::Command::new("npm")
            .args(["pack", "--silent", "--pack-destination"])
            .arg(&vendor)
            .current_dir(&dep)
            .env("npm_config_offline", "true")
            .output()
            .unwrap();
        assert!(tgz.status.success(), "{}", text(&tgz.stderr));
        std::fs::write(
            dir.join("package.json"),
            format!(r#"{{"name":"wrapped","version":"1.0.0","dependencies":{{"gust-wrap":"file:vendor/gust-wrap-{version}.tgz"}}}}"#),
        )
        .unwrap();
        let lock = std::process::Command::new("npm")
            .args(["install", "--package-lock-only", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .env("npm_config_offline", "true")
            .output()
            .unwrap();
        assert!(lock.status.success(), "{}", text(&lock.stderr));
        assert!(std::fs::read_to_string(dir.join("package-lock.json")).unwrap().contains(version));
    };
    depend_on("1.0.0", "*");
    let out = deploy_dir(&g, &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("==> npm ci"), "{}", text(&out.stderr));
    assert_eq!(g.post("wrapped", "hi").text(), "*hi*");

    // A new dependency version changes the lock file: a rebuild and a new revision.
    depend_on("1.0.1", "~");
    let out = deploy_dir(&g, &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("==> npm ci"), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("wrapped-00002"), "{}", text(&out.stdout));
    assert_eq!(g.post("wrapped", "hi").text(), "~hi~");
}

#[test]
fn node_dependencies_install_offline_from_an_npm_cache_and_a_missing_one_is_named() {
    // An npm cache holding one registry package, as a user would fill it with
    // `npm cache add`; gust is started with npm offline against it.
    let work = tempfile::tempdir().unwrap();
    let (dep, cache) = (work.path().join("dep"), work.path().join("npm-cache"));
    std::fs::create_dir_all(&dep).unwrap();
    std::fs::write(dep.join("package.json"), r#"{"name":"gust-shout","version":"2.0.0","main":"index.js"}"#).unwrap();
    std::fs::write(dep.join("index.js"), "module.exports = (s) => s.toUpperCase() + '!';\n").unwrap();
    let npm = |args: &[&str], cwd: &Path| {
        let out = std::process::Command::new("npm")
            .args(args)
            .current_dir(cwd)
            .env("npm_config_cache", &cache)
            .env("npm_config_offline", "true")
            .output()
            .unwrap();
        assert!(out.status.success(), "npm {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    // npm pack reports the tarball's integrity hash, as a lock file records it.
    let packed: serde_json::Value = serde_json::from_str(&npm(&["pack", "--json"], &dep)).unwrap();
    let tgz = dep.join(packed[0]["filename"].as_str().unwrap());
    let integrity = packed[0]["integrity"].as_str().unwrap().to_owned();
    npm(&["cache", "add", tgz.to_str().unwrap()], &dep);
    let g = gust_env(&[("npm_config_cache", cache.to_str().unwrap()), ("npm_config_offline", "true")]);
    let lock = format!(
        r#"{{"name":"shouty","version":"1.0.0","lockfileVersion":3,"requires":true,"packages":{{"":{{"name":"shouty","version":"1.0.0","dependencies":{{"gust-shout":"2.0.0"}}}},"node_modules/gust-shout":{{"version":"2.0.0","resolved":"https://registry.npmjs.org/gust-shout/-/gust-shout-2.0.0.tgz","integrity":"{integrity}"}}}}}}"#
    );
    let dir = g.function(
        "shouty",
        &[
            ("gust.toml", &manifest("shouty", "node", "")),
            ("package.json", r#"{"name":"shouty","version":"1.0.0","dependencies":{"gust-shout":"2.0.0"}}"#),
            ("package-lock.json", &lock),
            ("handler.js", "module.exports = (x) => require('gust-shout')(x);\n"),
        ],
    );
    let out = deploy_dir(&g, &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(g.post("shouty", "offline").text(), "OFFLINE!");

    // A dependency the cache does not hold fails the deploy and is named.
    std::fs::remove_file(dir.join("package-lock.json")).unwrap();
    std::fs::write(
        dir.join("package.json"),
        r#"{"name":"shouty","version":"1.0.0","dependencies":{"gust-shout":"2.0.0","gust-absent":"1.0.0"}}"#,
    )
    .unwrap();
    let out = deploy_dir(&g, &dir);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("could not fetch package `gust-absent`: it is not in the npm cache"), "{err}");
    assert_eq!(g.post("shouty", "still").text(), "STILL!", "the previous revision keeps serving");
}

#[test]
fn a_rust_function_builds_with_cargo_offline() {
    let g = gust();
    let m = manifest(
        "rusty",
        "exec",
        "handler = \"target/release/rusty\"\nbuild = \"cargo build --release --offline --quiet\"",
    );
    let cargo = "[package]\nname = \"rusty\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n";
    let main = "fn main() {\n    let mut s = String::new();\n    std::io::stdin().read_line(&mut s).unwrap();\n    println!(\"rust says {}\", s.trim());\n}\n";
    let dir = g.function("rusty", &[("gust.toml", &m), ("Cargo.toml", cargo), ("src/main.rs", main)]);
    let out = deploy_dir(&g, &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("==> cargo build"), "{}", text(&out.stderr));
    assert_eq!(g.post("rusty", "hello").text(), "rust says hello\n");
}

#[test]
fn a_c_function_builds_with_cc_once_per_source_change() {
    let g = gust();
    let c = "#include <stdio.h>\nint main(void) { puts(\"built from C v1\"); return 0; }\n";
    let m = manifest("cee", "exec", "handler = \"hello\"\nbuild = \"cc -O2 -o hello main.c\"");
    let dir = g.function("cee", &[("gust.toml", &m), ("main.c", c)]);
    let first = deploy_dir(&g, &dir);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stderr).contains("==> cc -O2 -o hello main.c"), "{}", text(&first.stderr));
    assert_eq!(g.get("cee").text(), "built from C v1\n");

    // The same sources again: the cached build is reused and nothing changes.
    let again = deploy_dir(&g, &dir);
    assert!(again.status.success());
    assert!(text(&again.stderr).contains("reused the earlier build"), "{}", text(&again.stderr));
    assert!(!text(&again.stderr).contains("==> cc"), "no build ran: {}", text(&again.stderr));
    assert!(text(&again.stdout).contains("unchanged"), "{}", text(&again.stdout));

    // A source change builds again and makes a new revision.
    std::fs::write(dir.join("main.c"), c.replace("v1", "v2")).unwrap();
    let changed = deploy_dir(&g, &dir);
    assert!(text(&changed.stderr).contains("==> cc -O2"), "{}", text(&changed.stderr));
    assert!(text(&changed.stdout).contains("cee-00002"), "{}", text(&changed.stdout));
    assert_eq!(g.get("cee").text(), "built from C v2\n");
}

#[test]
fn a_java_function_builds_from_sources_with_javac() {
    let g = gust();
    g.cli_ok(&["new", "greeter", "--runtime", "java"]);
    let dir = g.work.join("greeter");
    let out = deploy_dir(&g, &dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("==> javac"), "{}", text(&out.stderr));
    let r = g.post("greeter", "abc");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, world! You sent: abc\n"));
    crate::log_with(&g, "greeter", |l| l.contains("greeting world"));
}

/// `Function<Order, Receipt>` over JSON: records in, a record with a list and an enum out.
const JAVA_JSON: &str = r#"package shop;

import java.util.List;
import java.util.Map;
import java.util.function.Function;

public class Checkout implements Function<Checkout.Order, Checkout.Receipt> {
    public enum Status { ACCEPTED, EMPTY }
    public record Line(String sku, int qty, double price) {}
    public record Order(String customer, List<Line> lines, Map<String, String> notes) {}
    public record Receipt(String customer, double total, int items, Status status, List<String> skus) {}

    @Override
    public Receipt apply(Order o) {
        if (o.customer() == null) {
            throw new IllegalArgumentException("an order needs a customer");
        }
        double total = 0;
        int items = 0;
        List<String> skus = new java.util.ArrayList<>();
        for (Line l : o.lines()) {
            total += l.qty() * l.price();
            items += l.qty();
            skus.add(l.sku());
        }
        System.out.println("checkout for " + o.customer() + " note=" + (o.notes() == null ? null : o.notes().get("gift")));
        return new Receipt(o.customer(), total, items, items == 0 ? Status.EMPTY : Status.ACCEPTED, skus);
    }
}
"#;

#[test]
fn a_java_function_takes_and_returns_json_as_records() {
    let g = gust();
    let m = manifest(
        "checkout",
        "java",
        "handler = \"shop.Checkout\"\nbuild = \"javac -d classes src/shop/*.java && jar cf shop.jar -C classes .\"",
    );
    g.deploy("checkout", &[("gust.toml", &m), ("src/shop/Checkout.java", JAVA_JSON)]);
    let order = r#"{"customer":"ann","lines":[{"sku":"a-1","qty":2,"price":1.5},{"sku":"b\"2","qty":1,"price":10}],"notes":{"gift":"yes"},"ignored":true}"#;
    let r = g.call("POST", "/function/checkout", order.as_bytes(), &["Content-Type: application/json"]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        serde_json::json!({"customer": "ann", "total": 13.0, "items": 3, "status": "ACCEPTED", "skus": ["a-1", "b\"2"]})
    );
    crate::log_with(&g, "checkout", |l| l.contains("checkout for ann note=yes"));
    // A body that is not JSON for Order is the caller's mistake: 400, saying why.
    let r = g.post("checkout", "{\"customer\": 5}");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("expected a string"), "{}", r.text());
    assert_eq!(g.post("checkout", "not json").status, 400);
    // An exception in apply is the function's: 500 with its message.
    let r = g.post("checkout", "{\"lines\": []}");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("an order needs a customer"), "{}", r.text());
}

#[test]
fn a_failing_build_fails_the_deploy_with_its_log_tail() {
    let g = gust();
    let ok = manifest("broken", "exec", "handler = \"run\"\nbuild = \"echo building; true\"");
    g.deploy("broken", &[("gust.toml", &ok), ("run", "#!/bin/sh\necho first\n")]);
    let bad = manifest(
        "broken",
        "exec",
        "handler = \"run\"\nbuild = \"echo compiling main.c; echo 'main.c:3: error: expected ;' >&2; exit 2\"",
    );
    let dir = g.function("broken", &[("gust.toml", &bad), ("run", "#!/bin/sh\necho second\n")]);
    let out = deploy_dir(&g, &dir);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("exited with status 2"), "{err}");
    assert!(err.contains("| main.c:3: error: expected ;"), "{err}");
    assert_eq!(g.get("broken").text(), "first\n", "the previous revision keeps serving");

    let slow = manifest("broken", "exec", "handler = \"run\"\nbuild = \"sleep 30\"\n[limits]\nbuild_timeout = \"1s\"");
    let dir = g.function("broken", &[("gust.toml", &slow), ("run", "#!/bin/sh\necho third\n")]);
    let out = deploy_dir(&g, &dir);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("limits.build_timeout"), "{}", text(&out.stderr));
    assert_eq!(g.get("broken").text(), "first\n");
}

#[test]
fn a_deploy_without_streaming_gets_one_json_answer() {
    let g = gust();
    let m = manifest("plain", "exec", "handler = \"run\"\nbuild = \"exit 4\"");
    let dir = g.function("plain", &[("gust.toml", &m), ("run", "#!/bin/sh\necho hi\n")]);
    let archive = g.work.join("plain.tgz");
    let ok = std::process::Command::new("tar")
        .args(["czf", archive.to_str().unwrap(), "-C", dir.to_str().unwrap(), "."])
        .status()
        .unwrap();
    assert!(ok.success());
    let body = std::fs::read(&archive).unwrap();
    let r = g.call("POST", "/api/v1/functions", &body, &["Content-Type: application/gzip"]);
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"], "build_failed");
    assert!(r.json()["message"].as_str().unwrap().contains("exited with status 4"));
}
