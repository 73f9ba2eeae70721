//! Secrets in instances: the values a function lists (`secrets = ["db"]`) are read when
//! an instance starts, written as files only its owner can read in
//! `$GUST_SECRETS` (`<scratch>/secrets/NAME`), set as the variables `[secret_env]`
//! names, and masked out of the output gust captures, as CI systems mask theirs.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gust_api::FunctionSpec;

use crate::{Error, Result};

/// Where instances' secret values come from.
pub trait SecretSource: Send + Sync + std::fmt::Debug {
    /// The values of `names`, in order, or why they cannot be had.
    ///
    /// # Errors
    /// A message naming the secret that is missing or unreadable (never a value).
    fn values(&self, names: &[String]) -> std::result::Result<Vec<(String, Vec<u8>)>, String>;
}

impl SecretSource for gust_store::Store {
    fn values(&self, names: &[String]) -> std::result::Result<Vec<(String, Vec<u8>)>, String> {
        self.secret_values(names).map_err(|e| e.to_string())
    }
}

/// Values shorter than this are not masked in output: they would blank out ordinary words.
const MASK_MIN: usize = 4;

/// One instance's secrets, resolved.
#[derive(Debug, Default)]
pub struct Secrets {
    values: Vec<(String, Vec<u8>)>,
    /// `GUST_SECRETS` and the `[secret_env]` variables.
    pub env: Vec<(String, OsString)>,
    masks: Vec<String>,
}

impl Secrets {
    /// Reads the secrets `spec` lists from `source` (none: nothing to read).
    ///
    /// # Errors
    /// [`Error::StartFailed`] naming a secret that is missing, or one whose value cannot
    /// be an environment variable.
    pub async fn load(source: Option<&Arc<dyn SecretSource>>, spec: &FunctionSpec, scratch: &Path) -> Result<Self> {
        if spec.secrets.is_empty() {
            return Ok(Self::default());
        }
        let fail = |detail: String| Error::StartFailed { function: spec.name.to_string(), detail };
        let source = source.ok_or_else(|| fail("this server keeps no secrets".to_owned()))?.clone();
        let names = spec.secrets.clone();
        let values = tokio::task::spawn_blocking(move || source.values(&names))
            .await
            .map_err(|e| fail(format!("reading secrets failed: {e}")))?
            .map_err(|e| fail(format!("cannot read its secrets: {e}")))?;
        let mut env: Vec<(String, OsString)> = vec![("GUST_SECRETS".into(), dir(scratch).into())];
        for (var, name) in &spec.secret_env {
            let Some((_, value)) = values.iter().find(|(n, _)| n == name) else { continue };
            if value.contains(&0) {
                return Err(fail(format!("secret `{name}` holds a NUL byte, so it cannot be the variable {var}")));
            }
            env.push((var.clone(), OsString::from_vec(value.clone())));
        }
        let masks = values
            .iter()
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::trim)
            .filter(|v| v.len() >= MASK_MIN)
            .map(str::to_owned)
            .collect();
        Ok(Self { values, env, masks })
    }

    /// Writes each value to `<scratch>/secrets/NAME`, the directory and files readable by
    /// the instance's user only.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn write_files(&self, scratch: &Path) -> Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        if self.values.is_empty() {
            return Ok(());
        }
        let dir = dir(scratch);
        std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(Error::io("create secrets directory", &dir))?;
        for (name, value) in &self.values {
            let path = dir.join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&path)
                .map_err(Error::io("write secret", &path))?;
            f.write_all(value).map_err(Error::io("write secret", &path))?;
        }
        Ok(())
    }

    /// `line` with every secret value replaced by `******`.
    pub fn mask(&self, line: String) -> String {
        if self.masks.iter().any(|m| line.contains(m.as_str())) {
            let mut line = line;
            for m in &self.masks {
                line = line.replace(m.as_str(), "******");
            }
            return line;
        }
        line
    }
}

fn dir(scratch: &Path) -> PathBuf {
    scratch.join("secrets")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_masked_in_output_and_short_ones_are_not() {
        let s = Secrets { values: Vec::new(), env: Vec::new(), masks: vec!["hunter22".into(), "pa55word".into()] };
        assert_eq!(s.mask("login hunter22 ok pa55word".into()), "login ****** ok ******");
        assert_eq!(s.mask("nothing here".into()), "nothing here");
    }
}
