//! `gust secret create|update|ls|rm`: values a function may read (`secrets = ["NAME"]`).
//! A value comes from standard input (or `--from-file`) so it stays out of shell
//! history and process listings, and the CLI never prints one.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, Subcommand};
use gust_api::wire::SecretRecord;
use http::{HeaderMap, Method};

use super::ls::print_table;
use crate::client::Client;

#[derive(Debug, Args)]
pub(crate) struct Secret {
    #[command(subcommand)]
    action: SecretAction,
}

#[derive(Debug, Subcommand)]
enum SecretAction {
    /// Create a secret; its value is read from stdin (or --from-file).
    Create {
        /// Its name (lowercase letters, digits and `-`).
        name: String,
        /// Read the value from this file instead of stdin.
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// Replace a secret's value (instances started afterwards read the new one).
    Update {
        /// The secret.
        name: String,
        /// Read the value from this file instead of stdin.
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// List secrets (names and the functions reading them; never values).
    Ls,
    /// Delete a secret no serving function reads.
    Rm {
        /// The secret.
        name: String,
    },
}

fn value(from_file: Option<PathBuf>) -> anyhow::Result<Bytes> {
    let bytes = match from_file {
        Some(path) => std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        None => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("reading the value from stdin")?;
            buf
        }
    };
    Ok(Bytes::from(bytes))
}

impl Secret {
    pub(crate) async fn run(self, client: &Client) -> anyhow::Result<()> {
        match self.action {
            SecretAction::Create { name, from_file } => {
                let body = value(from_file)?;
                let _: (_, serde_json::Value) =
                    client.json(Method::POST, &format!("/api/v1/secrets/{name}"), HeaderMap::new(), body).await?;
                println!("created secret {name}");
            }
            SecretAction::Update { name, from_file } => {
                let body = value(from_file)?;
                let (status, _): (_, serde_json::Value) =
                    client.json(Method::PUT, &format!("/api/v1/secrets/{name}"), HeaderMap::new(), body).await?;
                let what = if status == http::StatusCode::CREATED { "created" } else { "updated" };
                println!("{what} secret {name}");
            }
            SecretAction::Ls => {
                let (_, all): (_, Vec<SecretRecord>) =
                    client.json(Method::GET, "/api/v1/secrets", HeaderMap::new(), Bytes::new()).await?;
                let rows: Vec<[String; 3]> =
                    all.into_iter().map(|s| [s.name, s.updated_at, s.used_by.join(",")]).collect();
                print_table(&["SECRET", "UPDATED", "USED BY"], &rows);
            }
            SecretAction::Rm { name } => {
                let _: (_, serde_json::Value) = client
                    .json(Method::DELETE, &format!("/api/v1/secrets/{name}"), HeaderMap::new(), Bytes::new())
                    .await?;
                println!("deleted secret {name}");
            }
        }
        Ok(())
    }
}
