use super::*;
use crate::Error;

fn fields(err: Error) -> Vec<String> {
    match err {
        Error::InvalidManifest { problems } => problems.into_iter().map(|p| p.field).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn minimal_python_gets_defaults() {
    let spec = Manifest::parse("name = \"hello\"\nruntime = \"python\"\n").unwrap();
    assert_eq!(spec.handler, "handler.handle");
    assert_eq!(spec.protocol, Protocol::Http);
    assert_eq!(spec.limits.timeout, Duration::from_secs(60));
    assert_eq!(spec.limits.max_body, 6 << 20);
    assert_eq!(spec.scale.concurrency, 1);
    assert_eq!(spec.scale.max, 10);
    // Knative's KPA defaults, with the target following the hard concurrency.
    let s = &spec.scale;
    assert_eq!((s.target(), s.target_utilization, s.initial, s.min), (1, 70, 1, 0));
    assert_eq!((s.stable_window, s.panic_window()), (Duration::from_secs(60), Duration::from_secs(6)));
    assert_eq!((s.panic_threshold_percentage, s.max_scale_up_rate, s.max_scale_down_rate), (200, 1000, 2));
    assert_eq!((s.scale_down_delay, s.scale_to_zero_grace), (Duration::ZERO, Duration::from_secs(30)));
}

#[test]
fn runtime_defaults() {
    let node = Manifest::parse("name = \"n\"\nruntime = \"node\"\n").unwrap();
    assert_eq!((node.handler.as_str(), node.scale.concurrency), ("handler.js", 32));
    let sh = Manifest::parse("name = \"s\"\nruntime = \"shell\"\n").unwrap();
    assert_eq!((sh.handler.as_str(), sh.protocol), ("handler.sh", Protocol::Stdio));
    let ex = Manifest::parse("name = \"e\"\nruntime = \"exec\"\nhandler = \"./srv\"\nprotocol = \"http\"\n").unwrap();
    assert_eq!((ex.protocol, ex.scale.concurrency), (Protocol::Http, 32));
}

#[test]
fn full_manifest() {
    let text = r#"
name = "hello"
runtime = "python"
handler = "pkg.mod.fn"

[env]
TARGET = "Go Sample v1"
COUNT = 3

[limits]
timeout = "2s"
memory = "256Mi"
max_body = "1Ki"

[scale]
concurrency = 4
min = 1
max = 3
target = 3
target_utilization = 90
initial = 0
stable_window = "6s"
panic_window_percentage = 20
panic_threshold_percentage = 300
max_scale_up_rate = 10
max_scale_down_rate = 4
scale_down_delay = "15s"
scale_to_zero_grace = "0s"
queue_depth = 5
queue_timeout = "500ms"
"#;
    let spec = Manifest::parse(text).unwrap();
    assert_eq!(spec.env["TARGET"], "Go Sample v1");
    assert_eq!(spec.env["COUNT"], "3");
    assert_eq!(spec.limits.memory, Some(256 << 20));
    assert_eq!(spec.limits.max_body, 1024);
    assert_eq!(spec.scale.queue_timeout, Duration::from_millis(500));
    assert_eq!((spec.scale.target(), spec.scale.panic_window()), (3, Duration::from_millis(1200)));
    assert_eq!(spec.scale.scale_to_zero_grace, Duration::ZERO);
    // What we write back parses to the same spec.
    assert_eq!(Manifest::parse(&spec.to_toml()).unwrap(), spec);
}

#[test]
fn every_problem_is_listed_with_its_field() {
    let text = r#"
name = "Bad_Name"
runtime = "cobol"
colour = "blue"
input = "Not A Topic"
build = ""

[env]
GUST_X = "no"
"1X" = "no"

[limits]
timeout = "soon"
max_body = "lots"
extra = 1

[scale]
min = 5
max = 2
idle_timeout = "10ms"
stable_window = "100ms"
target_utilization = 0
concurrency = 0
"#;
    let got = fields(Manifest::parse(text).unwrap_err());
    for want in [
        "name",
        "runtime",
        "colour",
        "input",
        "build",
        "env.GUST_X",
        "env.1X",
        "limits.timeout",
        "limits.max_body",
        "limits.extra",
        "scale.min",
        "scale.idle_timeout",
        "scale.stable_window",
        "scale.target_utilization",
        "scale.concurrency",
    ] {
        assert!(got.contains(&want.to_owned()), "missing {want} in {got:?}");
    }
}

#[test]
fn required_fields_and_wrong_types() {
    let got = fields(Manifest::parse("name = 3\n").unwrap_err());
    assert_eq!(got, vec!["name", "runtime"]);
    let got = fields(Manifest::parse("name = \"a\"\nruntime = \"exec\"\n").unwrap_err());
    assert_eq!(got, vec!["handler"]);
    let got = fields(Manifest::parse("name = \"a\"\nruntime = \"python\"\nprotocol = \"stdio\"\n").unwrap_err());
    assert_eq!(got, vec!["protocol"]);
}

#[test]
fn handler_shapes() {
    for bad in ["handler", "1mod.f", "mod.f-x", "../x.f"] {
        let text = format!("name = \"a\"\nruntime = \"python\"\nhandler = \"{bad}\"\n");
        assert_eq!(fields(Manifest::parse(&text).unwrap_err()), vec!["handler"], "{bad}");
    }
    for bad in ["/bin/sh", "../up.js", "a/../../b"] {
        let text = format!("name = \"a\"\nruntime = \"node\"\nhandler = \"{bad}\"\n");
        assert_eq!(fields(Manifest::parse(&text).unwrap_err()), vec!["handler"], "{bad}");
    }
}

#[test]
fn not_toml() {
    let err = Manifest::parse("name = ").unwrap_err();
    assert!(err.to_string().contains("not valid TOML"), "{err}");
}

#[test]
fn builds_and_routes() {
    let text = r#"
name = "counter"
runtime = "java"
handler = "functions.Counter"
build = "javac -d classes src/*.java && jar cf func.jar -C classes ."

[limits]
build_timeout = "2m"

[[routes]]
method = "patch"
path = "/counter"

[[routes]]
path = "/users/{id}"
"#;
    let spec = Manifest::parse(text).unwrap();
    assert_eq!(spec.runtime, Runtime::Java);
    assert_eq!(spec.scale.concurrency, 32);
    assert_eq!(spec.build.as_deref(), Some("javac -d classes src/*.java && jar cf func.jar -C classes ."));
    assert_eq!(spec.limits.build_timeout, Duration::from_secs(120));
    let routes: Vec<String> = spec.routes.iter().map(ToString::to_string).collect();
    assert_eq!(routes, ["PATCH /counter", "ANY /users/{id}"]);
    assert_eq!(Manifest::parse(&spec.to_toml()).unwrap(), spec);

    let bad = r#"
name = "x"
runtime = "java"

[[routes]]
method = "GET"
path = "/a/{id}"

[[routes]]
path = "/a/{other}"
colour = 1

[[routes]]
path = "nope"
"#;
    let got = fields(Manifest::parse(bad).unwrap_err());
    for want in ["handler", "routes[1]", "routes[1].colour", "routes[2].path"] {
        assert!(got.contains(&want.to_owned()), "missing {want} in {got:?}");
    }
}

#[test]
fn specs_stored_before_the_scaling_knobs_read_with_knative_defaults() {
    let spec = Manifest::parse("name = \"n\"\nruntime = \"node\"\n").unwrap();
    let mut json = serde_json::to_value(&spec).unwrap();
    let scale = json["scale"].as_object_mut().unwrap();
    scale.retain(|k, _| ["concurrency", "min", "max", "queue_depth", "queue_timeout"].contains(&k.as_str()));
    scale.insert("idle_timeout".into(), "30s".into());
    let old: FunctionSpec = serde_json::from_value(json).unwrap();
    assert_eq!(old.scale.target(), 32, "the target follows the concurrency");
    assert_eq!((old.scale.initial, old.scale.stable_window), (1, Duration::from_secs(60)));
    assert_eq!(old.scale.scale_to_zero_grace, Duration::from_secs(30));
}

#[test]
fn cpu_is_read_as_kubernetes_writes_it_and_processes_has_a_floor() {
    let cpu = |v: &str| {
        Manifest::parse(&format!("name = \"c\"\nruntime = \"python\"\n[limits]\ncpu = {v}\n")).map(|s| s.limits.cpu)
    };
    assert_eq!(cpu("\"500m\"").unwrap(), Some(500));
    assert_eq!(cpu("\"1.5\"").unwrap(), Some(1500));
    assert_eq!(cpu("2").unwrap(), Some(2000));
    assert_eq!(cpu("0.25").unwrap(), Some(250));
    for bad in ["\"5m\"", "\"lots\"", "0", "true", "2000"] {
        assert_eq!(fields(cpu(bad).unwrap_err()), vec!["limits.cpu"], "{bad}");
    }
    let spec = Manifest::parse("name = \"c\"\nruntime = \"python\"\n").unwrap();
    assert_eq!((spec.limits.cpu, spec.limits.processes), (None, None));
    let with = "name = \"c\"\nruntime = \"python\"\n[limits]\ncpu = \"250m\"\nprocesses = 32\n";
    let spec = Manifest::parse(with).unwrap();
    assert_eq!(spec.limits.processes, Some(32));
    assert_eq!(Manifest::parse(&spec.to_toml()).unwrap(), spec);
    let few = Manifest::parse("name = \"c\"\nruntime = \"python\"\n[limits]\nprocesses = 2\n").unwrap_err();
    assert_eq!(fields(few), vec!["limits.processes"]);
}
