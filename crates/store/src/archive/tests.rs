use super::*;

/// Builds a .tar.gz from raw headers so hostile entries (which `tar::Builder` refuses to
/// write) can be made.
fn raw_archive(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (path, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            // Write the name bytes directly: set_path would reject `..` and absolute paths.
            let name = &mut h.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if let Some(l) = link {
                let ln = &mut h.as_old_mut().linkname;
                ln[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }
    out
}

fn unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<()>) {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    fs::create_dir(&dest).unwrap();
    let r = unpack_tar_gz(bytes, &dest, ArchiveLimits::default());
    (dir, r)
}

fn reason(r: Result<()>) -> String {
    match r {
        Err(Error::BadArchive { reason, .. }) => reason,
        other => panic!("expected BadArchive, got {other:?}"),
    }
}

#[test]
fn unpacks_files_dirs_and_inner_links() {
    let bytes = raw_archive(&[
        ("gust.toml", tar::EntryType::Regular, b"name = \"a\"", None),
        ("lib/", tar::EntryType::Directory, b"", None),
        ("lib/x.py", tar::EntryType::Regular, b"X = 1", None),
        ("lib/alias.py", tar::EntryType::Symlink, b"", Some("x.py")),
        ("./top.py", tar::EntryType::Symlink, b"", Some("lib/x.py")),
    ]);
    let (dir, r) = unpack(&bytes);
    r.unwrap();
    let out = dir.path().join("out");
    assert_eq!(fs::read_to_string(out.join("lib/alias.py")).unwrap(), "X = 1");
    assert_eq!(fs::read_to_string(out.join("top.py")).unwrap(), "X = 1");
}

#[test]
fn refuses_parent_paths() {
    let (dir, r) = unpack(&raw_archive(&[("../evil", tar::EntryType::Regular, b"x", None)]));
    assert!(reason(r).contains(".."));
    assert!(!dir.path().join("evil").exists());
}

#[test]
fn refuses_absolute_paths() {
    let (_d, r) = unpack(&raw_archive(&[("/tmp/gust-evil", tar::EntryType::Regular, b"x", None)]));
    assert!(reason(r).contains("absolute"));
    assert!(!Path::new("/tmp/gust-evil").exists());
}

#[test]
fn refuses_links_out() {
    for target in ["/etc/passwd", "../../etc", "a/../../x"] {
        let (_d, r) = unpack(&raw_archive(&[("l", tar::EntryType::Symlink, b"", Some(target))]));
        assert!(reason(r).contains("outside"), "{target}");
    }
}

#[test]
fn a_symlink_cannot_redirect_a_later_write() {
    // Classic attack: a link to a directory outside, then a file "through" it. The link
    // is refused before anything is written.
    let (dir, r) = unpack(&raw_archive(&[
        ("d", tar::EntryType::Symlink, b"", Some("..")),
        ("d/escaped", tar::EntryType::Regular, b"x", None),
    ]));
    assert!(reason(r).contains("outside"));
    assert!(!dir.path().join("escaped").exists());
}

#[test]
fn refuses_hard_links_devices_and_duplicates() {
    let (_d, r) = unpack(&raw_archive(&[("h", tar::EntryType::Link, b"", Some("x"))]));
    assert!(reason(r).contains("hard link"));
    let (_d, r) = unpack(&raw_archive(&[("dev", tar::EntryType::Char, b"", None)]));
    assert!(reason(r).contains("only files"));
    let (_d, r) =
        unpack(&raw_archive(&[("a", tar::EntryType::Regular, b"1", None), ("a", tar::EntryType::Regular, b"2", None)]));
    assert!(reason(r).contains("twice"));
}

#[test]
fn stops_at_the_size_cap() {
    // 4 MiB of zeros compress to a few KiB: a small bomb against a 1 MiB cap.
    let big = vec![0u8; 4 << 20];
    let bytes = raw_archive(&[("big", tar::EntryType::Regular, &big, None)]);
    assert!(bytes.len() < 64 << 10);
    let dir = tempfile::tempdir().unwrap();
    let r = unpack_tar_gz(&bytes[..], dir.path(), ArchiveLimits { max_bytes: 1 << 20, max_entries: 10 });
    assert!(matches!(r, Err(Error::BadArchive { too_large: true, .. })), "{r:?}");
}

#[test]
fn stops_at_the_entry_cap() {
    let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let entries: Vec<_> = names.iter().map(|n| (n.as_str(), tar::EntryType::Regular, &b""[..], None)).collect();
    let dir = tempfile::tempdir().unwrap();
    let r =
        unpack_tar_gz(&raw_archive(&entries)[..], dir.path(), ArchiveLimits { max_bytes: 1 << 20, max_entries: 10 });
    assert!(matches!(r, Err(Error::BadArchive { too_large: true, .. })), "{r:?}");
}

#[test]
fn garbage_is_a_clear_error() {
    let (_d, r) = unpack(b"this is not gzip");
    assert!(reason(r).contains("not a valid"));
}

#[test]
fn digest_ignores_order_and_time_but_not_content_or_mode() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for (d, order) in [(a.path(), ["x", "y"]), (b.path(), ["y", "x"])] {
        for n in order {
            fs::write(d.join(n), n).unwrap();
        }
    }
    assert_eq!(tree_digest(a.path()).unwrap(), tree_digest(b.path()).unwrap());
    fs::set_permissions(b.path().join("x"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_ne!(tree_digest(a.path()).unwrap(), tree_digest(b.path()).unwrap());
    fs::set_permissions(b.path().join("x"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(b.path().join("y"), "changed").unwrap();
    assert_ne!(tree_digest(a.path()).unwrap(), tree_digest(b.path()).unwrap());
}
