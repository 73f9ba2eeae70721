//! Custom HTTP routes and host-based routing (issue 3, points 5 and 6).

use crate::{gust, gust_env, manifest};

/// A shell function that echoes how it was reached.
const ECHO: &str =
    "#!/bin/sh\necho \"$Http_Method $Http_Path id=${Http_X_Gust_Param_Id:-} rest=${Http_X_Gust_Param_Rest:-}\"\n";

#[test]
fn manifest_routes_pass_path_parameters_and_prefixes() {
    let g = gust();
    let m = manifest(
        "users",
        "shell",
        "[[routes]]\nmethod = \"GET\"\npath = \"/users/{id}\"\n\n[[routes]]\npath = \"/api/{*rest}\"\n\n[[routes]]\nmethod = \"GET\"\npath = \"/users/me\"",
    );
    g.deploy("users", &[("gust.toml", &m), ("handler.sh", ECHO)]);
    assert_eq!(g.call("GET", "/users/42", b"", &[]).text(), "GET /users/42 id=42 rest=\n");
    assert_eq!(g.call("GET", "/users/me", b"", &[]).text(), "GET /users/me id= rest=\n", "a literal beats a parameter");
    assert_eq!(g.call("DELETE", "/api/a/b?x=1", b"", &[]).text(), "DELETE /api/a/b id= rest=a/b\n");
    // Callers cannot forge parameters.
    assert_eq!(g.call("GET", "/users/7", b"", &["X-Gust-Param-Id: 99"]).text(), "GET /users/7 id=7 rest=\n");
    let r = g.call("POST", "/users/42", b"", &[]);
    assert_eq!(r.status, 404, "GET-only route");
    // gust's own paths still win over a route that covers them.
    assert_eq!(g.call("GET", "/api/v1/functions", b"", &[]).json()[0]["name"], "users");
}

#[test]
fn routes_are_created_listed_and_removed_and_conflicts_name_the_owner() {
    let g = gust();
    g.deploy("counter", &[("gust.toml", &manifest("counter", "shell", "")), ("handler.sh", ECHO)]);
    g.deploy("other", &[("gust.toml", &manifest("other", "shell", "")), ("handler.sh", ECHO)]);
    let out = g.cli_ok(&["route", "create", "--method", "PATCH", "--url", "/counter", "--function", "counter"]);
    assert!(out.contains("PATCH /counter"), "{out}");
    assert_eq!(g.call("PATCH", "/counter", b"", &[]).text(), "PATCH /counter id= rest=\n");

    // The same route for another function is refused, naming who has it.
    let clash = g.cli(&["route", "create", "--method", "PATCH", "--url", "/counter", "--function", "other"]);
    assert!(!clash.status.success());
    let err = String::from_utf8_lossy(&clash.stderr);
    assert!(err.contains("function `counter`") && err.contains("HTTP 409"), "{err}");
    // So is a manifest route that collides.
    let m = manifest("other", "shell", "[[routes]]\npath = \"/counter\"");
    let dir = g.function("other", &[("gust.toml", &m), ("handler.sh", ECHO)]);
    let clash = g.cli(&["deploy", dir.to_str().unwrap()]);
    assert!(!clash.status.success());
    assert!(String::from_utf8_lossy(&clash.stderr).contains("of function `counter`"));

    let ls = g.cli_ok(&["route", "ls"]);
    assert!(ls.contains("PATCH") && ls.contains("/counter") && ls.contains("counter"), "{ls}");
    let bad = g.cli(&["route", "create", "--url", "nope", "--function", "counter"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must start with `/`"));

    g.cli_ok(&["route", "rm", "--method", "PATCH", "--url", "/counter"]);
    assert_eq!(g.call("PATCH", "/counter", b"", &[]).status, 404);

    // Removing a function removes its routes.
    g.cli_ok(&["route", "create", "--url", "/gone/{*rest}", "--function", "other"]);
    assert_eq!(g.call("GET", "/gone/x", b"", &[]).status, 200);
    g.cli_ok(&["rm", "other"]);
    assert_eq!(g.call("GET", "/gone/x", b"", &[]).status, 404);
    assert!(!g.cli_ok(&["route", "ls"]).contains("/gone"));
}

#[test]
fn routes_survive_a_restart() {
    let mut g = gust();
    g.deploy("keep", &[("gust.toml", &manifest("keep", "shell", "")), ("handler.sh", ECHO)]);
    g.cli_ok(&["route", "create", "--url", "/kept/{id}", "--function", "keep"]);
    assert_eq!(g.stop().code(), Some(0));
    let g = g.restart();
    assert_eq!(g.call("GET", "/kept/5", b"", &[]).text(), "GET /kept/5 id=5 rest=\n");
}

#[test]
fn with_a_domain_name_dot_domain_reaches_the_function() {
    let g = gust_env(&[("GUST_DOMAIN", "fn.example")]);
    g.deploy("hello", &[("gust.toml", &manifest("hello", "shell", "")), ("handler.sh", ECHO)]);
    let r = g.call("GET", "/any/path", b"", &["Host: hello.fn.example"]);
    assert_eq!(r.text(), "GET /any/path id= rest=\n");
    assert_eq!(g.call("GET", "/x", b"", &["Host: HELLO.fn.example:8080"]).status, 200);
    assert_eq!(g.call("GET", "/any/path", b"", &["Host: nobody.fn.example"]).status, 404);
}
