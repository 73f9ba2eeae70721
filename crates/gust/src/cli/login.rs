//! `gust login` / `gust logout`: keep the server's token for the CLI.
//!
//! Tokens are stored per server URL in `$XDG_CONFIG_HOME/gust/credentials.json` (or
//! `~/.config/gust/credentials.json`), a file only its owner may read; `GUST_TOKEN`
//! overrides it. The CLI sends the token as `Authorization: Bearer` on every request;
//! the gateway never passes it on to a function.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use http::{HeaderMap, HeaderValue, Method};

use crate::client::Client;

#[derive(Debug, Args)]
pub(crate) struct Login {
    /// Read the token from standard input.
    #[arg(long, conflicts_with = "token_file")]
    token_stdin: bool,
    /// Read the token from this file (on the server's machine: `<data>/token`). With
    /// neither flag, the local server's `<data>/token` is used (GUST_DATA or
    /// ~/.local/share/gust).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct Logout {}

impl Login {
    pub(crate) async fn run(self, url: &str) -> anyhow::Result<()> {
        let token = if self.token_stdin {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("reading the token from stdin")?;
            text
        } else {
            let path = match self.token_file {
                Some(p) => p,
                None => local_token_file()?,
            };
            std::fs::read_to_string(&path).with_context(|| format!("reading the token from {}", path.display()))?
        };
        let token = token.lines().next().unwrap_or_default().trim().to_owned();
        if token.is_empty() {
            bail!("the token is empty");
        }
        let client = Client::with_token(url, Some(token.clone()))?;
        let (status, _) = client.status(Method::GET, "/api/v1/auth", HeaderMap::new()).await?;
        if status == http::StatusCode::UNAUTHORIZED {
            bail!("{url} refused the token");
        }
        if !status.is_success() {
            bail!("{url} answered {status} to the token check");
        }
        let mut all = read_credentials();
        all.insert(client.base().to_owned(), token);
        write_credentials(&all)?;
        println!("logged in to {}", client.base());
        Ok(())
    }
}

impl Logout {
    pub(crate) fn run(self, url: &str) -> anyhow::Result<()> {
        let base = url.trim_end_matches('/');
        let mut all = read_credentials();
        if all.remove(base).is_none() {
            println!("not logged in to {base}");
            return Ok(());
        }
        write_credentials(&all)?;
        println!("logged out of {base}");
        Ok(())
    }
}

fn local_token_file() -> anyhow::Result<PathBuf> {
    let data = std::env::var_os("GUST_DATA").map(PathBuf::from).or_else(super::up::default_data_dir);
    match data {
        Some(d) => Ok(d.join("token")),
        None => bail!("HOME is not set: pass --token-file or --token-stdin"),
    }
}

fn credentials_path() -> Option<PathBuf> {
    let dir = match std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(dir.join("gust").join("credentials.json"))
}

fn read_credentials() -> BTreeMap<String, String> {
    credentials_path()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_credentials(all: &BTreeMap<String, String>) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let Some(path) = credentials_path() else { bail!("HOME is not set: nowhere to keep the token") };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec_pretty(all)?)?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The token the CLI sends to `base`: `GUST_TOKEN`, else the one `gust login` stored.
pub(crate) fn token_for(base: &str) -> Option<String> {
    if let Some(t) = std::env::var("GUST_TOKEN").ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
        return Some(t);
    }
    read_credentials().remove(base)
}

/// `Authorization: Bearer TOKEN`.
pub(crate) fn bearer(token: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}
