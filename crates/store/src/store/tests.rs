use super::*;

fn targz(files: &[(&str, &str, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (path, data, mode) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_cksum();
            b.append_data(&mut h, path, data.as_bytes()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }
    out
}

const MANIFEST: &str = "name = \"hello\"\nruntime = \"python\"\n";

#[test]
fn deploy_numbers_revisions_and_dedupes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let a = targz(&[("gust.toml", MANIFEST, 0o644), ("handler.py", "def handle(e, c): pass", 0o644)]);
    let first = store.deploy(&a[..]).unwrap();
    assert!(first.changed);
    assert_eq!(first.revision.id.to_string(), "hello-00001");
    let again = store.deploy(&a[..]).unwrap();
    assert!(!again.changed);
    assert_eq!(again.revision.id.to_string(), "hello-00001");

    let b = targz(&[("gust.toml", MANIFEST, 0o644), ("handler.py", "def handle(e, c): return 1", 0o644)]);
    let second = store.deploy(&b[..]).unwrap();
    assert_eq!(second.revision.id.to_string(), "hello-00002");
    assert!(second.revision.code_dir.join("handler.py").is_file());

    // Config alone changes a revision too.
    let c = targz(&[
        ("gust.toml", &format!("{MANIFEST}[env]\nX = \"1\"\n"), 0o644),
        ("handler.py", "def handle(e, c): return 1", 0o644),
    ]);
    let third = store.deploy(&c[..]).unwrap();
    assert_eq!(third.revision.id.to_string(), "hello-00003");
}

#[test]
fn survives_reopen_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
        store.deploy(&targz(&[("gust.toml", MANIFEST, 0o644), ("handler.py", "", 0o644)])[..]).unwrap();
    }
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let serving = store.serving_all().unwrap();
    assert_eq!(serving.len(), 1);
    assert_eq!(serving[0].revisions[0].spec.name.as_str(), "hello");
    let name = FunctionName::new("hello").unwrap();
    store.remove(&name).unwrap();
    assert!(store.serving_all().unwrap().is_empty());
    assert!(matches!(store.remove(&name), Err(Error::NotFound { .. })));
    assert!(matches!(store.revisions(&name), Err(Error::NotFound { .. })));
}

#[test]
fn manifest_and_handler_problems() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let no_manifest = store.deploy(&targz(&[("handler.py", "", 0o644)])[..]).unwrap_err();
    assert!(no_manifest.to_string().contains("no gust.toml"), "{no_manifest}");
    let missing = store.deploy(&targz(&[("gust.toml", MANIFEST, 0o644)])[..]).unwrap_err();
    assert!(missing.to_string().contains("handler.py"), "{missing}");
    let exec = "name = \"e\"\nruntime = \"exec\"\nhandler = \"run\"\n";
    let not_x = store.deploy(&targz(&[("gust.toml", exec, 0o644), ("run", "#!/bin/sh", 0o644)])[..]).unwrap_err();
    assert!(not_x.to_string().contains("chmod +x"), "{not_x}");
    store.deploy(&targz(&[("gust.toml", exec, 0o644), ("run", "#!/bin/sh", 0o755)])[..]).unwrap();
}

fn deploy_with(store: &Store, body: &str, traffic: DeployTraffic) -> Result<DeployOutcome> {
    let mut staged = store.stage(&targz(&[("gust.toml", MANIFEST, 0o644), ("handler.py", body, 0o644)])[..]).unwrap();
    staged.traffic = traffic;
    store.commit(staged, None)
}

#[test]
fn traffic_follows_deploys_unless_told_and_refused_changes_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let name = FunctionName::new("hello").unwrap();
    let quiet = |tag: &str| DeployTraffic { no_traffic: true, tag: Some(tag.to_owned()) };
    let first = deploy_with(&store, "a", quiet("x")).unwrap_err();
    assert!(first.to_string().contains("first revision takes all its calls"), "{first}");
    deploy_with(&store, "a", DeployTraffic::default()).unwrap();
    deploy_with(&store, "b", quiet("candidate")).unwrap();
    let s = store.serving(&name).unwrap();
    assert_eq!((s.latest, s.traffic.resolve(s.latest)), (2, vec![(1, 100)]));
    assert_eq!(s.traffic.tags_of(2), vec!["candidate".to_owned()]);
    assert_eq!(s.revisions.iter().map(|r| r.id.number()).collect::<Vec<_>>(), vec![2, 1]);

    let before = store.serving(&name).unwrap().traffic;
    let refused = store.update_traffic(&name, |t, _, _| {
        let mut t = t.clone();
        t.split[0].percent = 90;
        Ok(t)
    });
    assert!(matches!(refused, Err(Error::BadTraffic { .. })), "{refused:?}");
    assert_eq!(store.serving(&name).unwrap().traffic, before);

    // A plain deploy takes every call again and keeps the tag.
    deploy_with(&store, "c", DeployTraffic::default()).unwrap();
    drop(store);
    let store = Store::open(dir.path(), ArchiveLimits::default()).unwrap();
    let s = store.serving(&name).unwrap();
    assert_eq!(s.traffic.resolve(s.latest), vec![(3, 100)]);
    assert_eq!(s.traffic.tags_of(2), vec!["candidate".to_owned()]);
    assert_eq!(s.revisions.iter().map(|r| r.id.number()).collect::<Vec<_>>(), vec![3, 2]);
}
