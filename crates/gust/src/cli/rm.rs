//! `gust rm NAME`.

use bytes::Bytes;
use clap::Args;
use http::{HeaderMap, Method};

use crate::client::Client;

#[derive(Debug, Args)]
pub(crate) struct Rm {
    /// The function to remove.
    name: String,
}

impl Rm {
    pub(crate) async fn run(self, client: &Client) -> anyhow::Result<()> {
        let _: (_, serde_json::Value) = client
            .json(Method::DELETE, &format!("/api/v1/functions/{}", self.name), HeaderMap::new(), Bytes::new())
            .await?;
        println!("removed {}", self.name);
        Ok(())
    }
}
