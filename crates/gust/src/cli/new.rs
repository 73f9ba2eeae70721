//! `gust new NAME --runtime R`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use gust_api::{FunctionName, Runtime};

use super::UsageError;

#[derive(Debug, Args)]
pub(crate) struct New {
    /// The function's name (lowercase letters, digits and `-`).
    name: String,
    /// python, node, shell or exec.
    #[arg(long, short)]
    runtime: String,
    /// Directory to create; default `./NAME`.
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl New {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let name = FunctionName::new(&self.name).map_err(|e| UsageError(e.to_string()))?;
        let runtime = Runtime::ALL.into_iter().find(|r| r.as_str() == self.runtime).ok_or_else(|| {
            let all: Vec<_> = Runtime::ALL.iter().map(|r| r.as_str()).collect();
            UsageError(format!("unknown runtime `{}`; choose one of: {}", self.runtime, all.join(", ")))
        })?;
        let dir = self.dir.unwrap_or_else(|| PathBuf::from(name.as_str()));
        if dir.exists() {
            return Err(UsageError(format!("{} already exists", dir.display())).into());
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (file, text, executable) in crate::templates::files(name.as_str(), runtime) {
            let path = dir.join(file);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            if executable {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
            }
        }
        println!("created {} ({runtime} function `{name}`)", dir.display());
        println!("next: gust deploy {}", dir.display());
        Ok(())
    }
}
