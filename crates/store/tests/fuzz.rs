//! Property tests of archive extraction (issue 8, point 8): arbitrary bytes, arbitrary
//! gzip streams and tar archives with hostile entries (`..`, absolute paths, links out,
//! devices) are unpacked or refused without a panic, and nothing is ever written outside
//! the destination. Bounded cases, so a bounded time, in the normal test command.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::Path;

use gust_store::ArchiveLimits;
use gust_store::archive::unpack_tar_gz;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 600, failure_persistence: None, ..ProptestConfig::default() }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// One ustar header block, written by hand so that any name, link and type can be
/// tried (the `tar` crate's builder refuses the hostile ones).
fn header(name: &str, kind: u8, link: &str, size: usize) -> [u8; 512] {
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, len: usize, v: &[u8]| {
        let n = v.len().min(len);
        h[at..at + n].copy_from_slice(&v[..n]);
    };
    put(&mut h, 0, 100, name.as_bytes());
    put(&mut h, 100, 8, b"0000644\0");
    put(&mut h, 108, 8, b"0000000\0");
    put(&mut h, 116, 8, b"0000000\0");
    put(&mut h, 124, 12, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, 12, b"00000000000\0");
    h[156] = kind;
    put(&mut h, 157, 100, link.as_bytes());
    put(&mut h, 257, 6, b"ustar\0");
    put(&mut h, 263, 2, b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    put(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
    h
}

fn archive(entries: &[(String, u8, String, Vec<u8>)]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (name, kind, link, data) in entries {
        tar.extend_from_slice(&header(name, *kind, link, data.len()));
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    gzip(&tar)
}

fn everything_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// Unpacks into `root/dest` beside an empty `root/outside`; checks `outside` stays
/// empty and no symlink in `dest` leads out of it.
fn unpack_checked(bytes: &[u8]) -> Result<(), TestCaseError> {
    let root = tempfile::tempdir().unwrap();
    let dest = root.path().join("dest");
    let outside = root.path().join("outside");
    std::fs::create_dir(&dest).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let limits = ArchiveLimits { max_bytes: 1 << 20, max_entries: 64 };
    let _ = unpack_tar_gz(bytes, &dest, limits);
    prop_assert!(everything_under(&outside).is_empty(), "wrote outside: {:?}", everything_under(&outside));
    prop_assert!(!Path::new("/tmp/gust-fuzz-abs").exists(), "followed an absolute path");
    let canon = std::fs::canonicalize(&dest).unwrap();
    for p in everything_under(&dest) {
        if let Ok(target) = std::fs::canonicalize(&p) {
            prop_assert!(target.starts_with(&canon), "{} leads to {}", p.display(), target.display());
        }
    }
    Ok(())
}

fn hostile_name(outside: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a.txt".to_owned()),
        Just("dir/b.txt".to_owned()),
        Just("../outside/x".to_owned()),
        Just("dir/../../outside/y".to_owned()),
        Just(format!("/{outside}")),
        Just("./.".to_owned()),
        Just("".to_owned()),
        Just("link".to_owned()),
        Just("link/inner".to_owned()),
        "[a-z./]{1,24}",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_are_refused_without_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        unpack_checked(&bytes)?;
    }

    #[test]
    fn any_gzip_stream_is_unpacked_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        unpack_checked(&gzip(&bytes))?;
    }

    #[test]
    fn hostile_entries_never_reach_outside_the_destination(
        entries in proptest::collection::vec(
            (
                hostile_name("tmp/gust-fuzz-abs"),
                prop_oneof![Just(b'0'), Just(b'1'), Just(b'2'), Just(b'3'), Just(b'5'), Just(b'7'), any::<u8>()],
                prop_oneof![Just("../outside".to_owned()), Just("/".to_owned()), Just("a.txt".to_owned()), Just("..".to_owned()), Just("dir".to_owned())],
                proptest::collection::vec(any::<u8>(), 0..64),
            ),
            1..8,
        )
    ) {
        unpack_checked(&archive(&entries))?;
    }
}
