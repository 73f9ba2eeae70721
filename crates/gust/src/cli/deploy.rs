//! `gust deploy [DIR]`.

use std::path::PathBuf;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use gust_api::wire::DeployResponse;
use http::{HeaderMap, HeaderValue, Method, header};

use crate::client::Client;

#[derive(Debug, Args)]
pub(crate) struct Deploy {
    /// The function directory (with its gust.toml).
    #[arg(default_value = ".")]
    dir: PathBuf,
}

impl Deploy {
    pub(crate) async fn run(self, client: &Client) -> anyhow::Result<()> {
        if !self.dir.join("gust.toml").is_file() {
            return Err(super::UsageError(format!(
                "{} has no gust.toml; create one with `gust new NAME --runtime python`",
                self.dir.display()
            ))
            .into());
        }
        let dir = self.dir.clone();
        let archive = tokio::task::spawn_blocking(move || crate::pack::pack(&dir)).await.context("packing")??;
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/gzip"));
        let (_, resp): (_, DeployResponse) = client
            .json(Method::POST, "/api/v1/functions", headers, Bytes::from(archive))
            .await
            .with_context(|| format!("deploying {}", self.dir.display()))?;
        if resp.changed {
            println!("deployed {} ({})", resp.function, resp.revision);
        } else {
            println!("{} is unchanged ({}): same code and config", resp.function, resp.revision);
        }
        println!("{}", resp.url);
        Ok(())
    }
}
