//! Packing a function directory into a deterministic `.tar.gz`: sorted entries, zeroed
//! times and owners, so the same files always give the same bytes.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Names never packed: version control and editor litter.
const ALWAYS_SKIPPED: [&str; 4] = [".git", ".hg", ".svn", ".DS_Store"];

/// Packs `dir`, skipping [`ALWAYS_SKIPPED`] and the names listed in `.gustignore` (one
/// file or directory path per line, relative to `dir`; `#` starts a comment).
pub(crate) fn pack(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let ignore: Vec<PathBuf> = fs::read_to_string(dir.join(".gustignore"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| PathBuf::from(l.trim_matches('/')))
        .collect();
    let mut files = Vec::new();
    walk(dir, Path::new(""), &ignore, &mut files)?;
    files.sort();
    let mut out = Vec::new();
    {
        let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        tar.follow_symlinks(false);
        for rel in &files {
            let path = dir.join(rel);
            let meta = fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
            let mut h = tar::Header::new_gnu();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path)?;
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                tar.append_link(&mut h, rel, &target).with_context(|| format!("packing {}", rel.display()))?;
            } else if meta.is_dir() {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                tar.append_data(&mut h, rel, std::io::empty())?;
            } else {
                let mode = if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 };
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(meta.len());
                h.set_mode(mode);
                let f = fs::File::open(&path).with_context(|| format!("reading {}", path.display()))?;
                tar.append_data(&mut h, rel, f).with_context(|| format!("packing {}", rel.display()))?;
            }
        }
        tar.into_inner()?.finish()?.flush()?;
    }
    Ok(out)
}

fn walk(root: &Path, rel: &Path, ignore: &[PathBuf], out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let dir = root.join(rel);
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if ALWAYS_SKIPPED.iter().any(|s| name == *s) {
            continue;
        }
        let child = rel.join(&name);
        if ignore.contains(&child) {
            continue;
        }
        let kind = entry.file_type()?;
        out.push(child.clone());
        if kind.is_dir() {
            walk(root, &child, ignore, out)?;
        }
    }
    Ok(())
}
