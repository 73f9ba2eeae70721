//! `gust logs NAME [-f] [--tail N]`.

use std::io::Write;

use anyhow::bail;
use bytes::Bytes;
use clap::Args;
use gust_api::wire::LogLine;
use http::{HeaderMap, Method};
use http_body_util::BodyExt;

use crate::client::{Client, check};

#[derive(Debug, Args)]
pub(crate) struct Logs {
    /// The function.
    name: String,
    /// Keep printing new lines as they come.
    #[arg(short, long)]
    follow: bool,
    /// How many past lines to print first.
    #[arg(long, default_value_t = 100)]
    tail: usize,
    /// Print the raw JSON lines.
    #[arg(long)]
    json: bool,
}

impl Logs {
    pub(crate) async fn run(self, client: &Client) -> anyhow::Result<()> {
        let path = format!("/api/v1/functions/{}/logs?tail={}&follow={}", self.name, self.tail, self.follow);
        let resp = check(client.send(Method::GET, &path, HeaderMap::new(), Bytes::new()).await?).await?;
        let mut body = resp.into_body();
        let mut pending: Vec<u8> = Vec::new();
        let mut out = std::io::stdout().lock();
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => bail!("the log stream was cut off: {e}"),
            };
            let Some(data) = frame.data_ref() else { continue };
            pending.extend_from_slice(data);
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                if self.json {
                    writeln!(out, "{text}")?;
                } else if let Ok(l) = serde_json::from_str::<LogLine>(&text) {
                    let call = l.call_id.map(|c| format!(" [{c}]")).unwrap_or_default();
                    writeln!(out, "{} {} {}{}: {}", l.ts, l.instance, l.stream, call, l.line)?;
                } else {
                    writeln!(out, "{text}")?;
                }
                out.flush()?;
            }
        }
        Ok(())
    }
}
