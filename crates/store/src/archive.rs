//! Safe extraction of uploaded `.tar.gz` archives and the digest of a code tree.
//!
//! Uploads come from the network, so every entry is checked before anything is written:
//! no absolute paths, no `..`, no device files or FIFOs, no hard links, and symbolic links
//! only when they point inside the tree. Symbolic links are created last, after every
//! file, so no write can pass through one. Total bytes and entry count are capped, so a
//! gzip bomb stops at the cap instead of filling the disk. Modes are normalised to
//! 0644/0755: only the executable bit survives.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::{Error, Result};

/// Caps applied while unpacking one archive.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveLimits {
    /// Total uncompressed bytes of all files. Default 256 MiB.
    pub max_bytes: u64,
    /// Number of entries. Default 20 000.
    pub max_entries: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self { max_bytes: 256 << 20, max_entries: 20_000 }
    }
}

/// A content digest, `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(String);

impl Digest {
    /// The digest as `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part alone, used as a directory name.
    pub fn hex(&self) -> &str {
        self.0.trim_start_matches("sha256:")
    }

    pub(crate) fn from_stored(s: String) -> Self {
        Self(s)
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Unpacks a gzip-compressed tar stream into `dest`, which must exist and be empty.
///
/// # Errors
/// [`Error::BadArchive`] for a malformed, hostile or oversized archive (nothing outside
/// `dest` is touched; `dest` may be left half-filled for the caller to remove), and
/// [`Error::Io`] when the local disk fails.
pub fn unpack_tar_gz(input: impl Read, dest: &Path, limits: ArchiveLimits) -> Result<()> {
    // Cap the decompressed stream itself, so even tar padding or huge headers count.
    let capped = CappedReader {
        inner: flate2::read::GzDecoder::new(input),
        left: limits.max_bytes + (limits.max_entries + 2) * 1024,
    };
    let mut archive = tar::Archive::new(capped);
    let mut written: u64 = 0;
    let mut count: u64 = 0;
    let mut seen = BTreeSet::new();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let entries = archive.entries().map_err(|e| bad_read(&e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad_read(&e))?;
        count += 1;
        if count > limits.max_entries {
            return Err(Error::BadArchive {
                reason: format!("more than {} entries", limits.max_entries),
                too_large: true,
            });
        }
        let raw = entry.path().map_err(|e| bad_read(&e))?.into_owned();
        let Some(rel) = clean_path(&raw)? else { continue };
        if !seen.insert(rel.clone()) {
            return Err(Error::bad(format!("`{}` appears twice", rel.display())));
        }
        let target = dest.join(&rel);
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target).map_err(Error::io("create directory", &target))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(|e| bad_read(&e))?;
                written = written.saturating_add(size);
                if written > limits.max_bytes {
                    return Err(Error::BadArchive {
                        reason: format!("more than {} bytes unpacked", limits.max_bytes),
                        too_large: true,
                    });
                }
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(Error::io("create directory", parent))?;
                }
                let mode = entry.header().mode().unwrap_or(0o644);
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(Error::io("create file", &target))?;
                let copied = io::copy(&mut (&mut entry).take(size), &mut file).map_err(|e| bad_read(&e))?;
                if copied != size {
                    return Err(Error::bad(format!("`{}` is truncated", rel.display())));
                }
                file.flush().map_err(Error::io("write file", &target))?;
                let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                    .map_err(Error::io("set permissions", &target))?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| bad_read(&e))?
                    .ok_or_else(|| Error::bad(format!("symlink `{}` has no target", rel.display())))?
                    .into_owned();
                check_link(&rel, &link)?;
                links.push((rel, link));
            }
            tar::EntryType::Link => {
                return Err(Error::bad(format!("`{}` is a hard link; archive the file itself", rel.display())));
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            other => {
                return Err(Error::bad(format!(
                    "`{}` is a {other:?} entry; only files, directories and symlinks are allowed",
                    rel.display()
                )));
            }
        }
    }
    // Created last, so no file above could have been written through one of them.
    for (rel, link) in links {
        let target = dest.join(&rel);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(Error::io("create directory", parent))?;
        }
        std::os::unix::fs::symlink(&link, &target).map_err(Error::io("create symlink", &target))?;
    }
    Ok(())
}

/// The digest of a code tree: paths, kinds, executable bits, contents and link targets
/// of every entry, in sorted order. Two trees with the same files have the same digest
/// whatever the archive's timestamps or ordering.
///
/// # Errors
/// [`Error::Io`] when the tree cannot be read.
pub fn tree_digest(root: &Path) -> Result<Digest> {
    let mut hasher = Sha256::new();
    let mut stack = vec![PathBuf::new()];
    let mut entries = Vec::new();
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(Error::io("read directory", &dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(Error::io("read directory", &dir))?;
        names.sort();
        for name in names {
            let rel_child = rel.join(&name);
            let path = root.join(&rel_child);
            let meta = fs::symlink_metadata(&path).map_err(Error::io("stat", &path))?;
            if meta.is_dir() {
                stack.push(rel_child.clone());
            }
            entries.push((rel_child, meta));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, meta) in entries {
        let path = root.join(&rel);
        hasher.update(rel.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        if meta.is_dir() {
            hasher.update(b"d");
        } else if meta.file_type().is_symlink() {
            let link = fs::read_link(&path).map_err(Error::io("read symlink", &path))?;
            hasher.update(b"l");
            hasher.update(link.as_os_str().as_encoded_bytes());
        } else {
            hasher.update(if meta.permissions().mode() & 0o111 != 0 { b"x" } else { b"f" });
            hasher.update(meta.len().to_le_bytes());
            let mut file = fs::File::open(&path).map_err(Error::io("open", &path))?;
            io::copy(&mut file, &mut HashWriter(&mut hasher)).map_err(Error::io("read", &path))?;
        }
        hasher.update([0]);
    }
    Ok(Digest(format!("sha256:{}", hex::encode(hasher.finalize()))))
}

/// Turns an archive path into a relative path with only normal components, or refuses it.
/// `./` alone (the root) yields `None`.
fn clean_path(raw: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(Error::bad(format!("`{}` contains `..`", raw.display())));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::bad(format!("`{}` is an absolute path", raw.display())));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Refuses a symlink whose target is absolute or climbs out of the tree.
fn check_link(rel: &Path, link: &Path) -> Result<()> {
    let escape =
        || Error::bad(format!("symlink `{}` points outside the function (`{}`)", rel.display(), link.display()));
    if link.is_absolute() {
        return Err(escape());
    }
    // Depth of the link's directory below the root, then walk the target.
    let mut depth: i64 = rel.components().count() as i64 - 1;
    for c in link.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(escape());
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(escape()),
        }
    }
    Ok(())
}

fn bad_read(e: &io::Error) -> Error {
    if e.kind() == io::ErrorKind::FileTooLarge {
        Error::BadArchive { reason: e.to_string(), too_large: true }
    } else {
        Error::bad(format!("not a valid .tar.gz ({e})"))
    }
}

/// Stops reading with an error once `left` bytes have been read.
struct CappedReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "archive is larger than the unpack limit"));
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
