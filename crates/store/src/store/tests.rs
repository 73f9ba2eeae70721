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
    let current = store.current_revisions().unwrap();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].spec.name.as_str(), "hello");
    let name = FunctionName::new("hello").unwrap();
    store.remove(&name).unwrap();
    assert!(store.current_revisions().unwrap().is_empty());
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
