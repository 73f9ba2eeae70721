//! `gust topic create|ls|describe|rm` and `gust publish TOPIC -d DATA [--key K] [--reply]`.

use std::io::Write as _;

use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{HeaderMap, HeaderValue, Method, header};
use http_body_util::BodyExt;

use super::ls::print_table;
use crate::client::{Client, check};

#[derive(Debug, Args)]
pub(crate) struct Topic {
    #[command(subcommand)]
    action: TopicAction,
}

#[derive(Debug, Subcommand)]
enum TopicAction {
    /// Create a durable, partitioned topic.
    Create {
        /// Its name (lowercase letters, digits and `-`).
        name: String,
        /// Partitions: a key always goes to the same one, and order holds within one.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Messages older than this are deleted, e.g. "24h".
        #[arg(long, default_value = "24h")]
        retention: String,
        /// A partition holding more than this loses its oldest messages, e.g. "1Gi".
        #[arg(long, default_value = "1Gi")]
        retention_bytes: String,
    },
    /// List topics.
    Ls,
    /// Show a topic's partitions and where each consumer is.
    Describe {
        /// The topic.
        name: String,
    },
    /// Delete a topic and its messages.
    Rm {
        /// The topic.
        name: String,
    },
}

fn json_body(value: &serde_json::Value) -> anyhow::Result<(HeaderMap, Bytes)> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok((headers, Bytes::from(serde_json::to_vec(value)?)))
}

impl Topic {
    pub(crate) async fn run(self, client: &Client) -> anyhow::Result<()> {
        match self.action {
            TopicAction::Create { name, partitions, retention, retention_bytes } => {
                let (headers, body) = json_body(&serde_json::json!({
                    "name": name, "partitions": partitions, "retention": retention, "retention_bytes": retention_bytes,
                }))?;
                let (_, t): (_, serde_json::Value) = client.json(Method::POST, "/api/v1/topics", headers, body).await?;
                println!("created topic {} with {} partition(s)", t["name"].as_str().unwrap_or(&name), t["partitions"]);
            }
            TopicAction::Ls => {
                let (_, topics): (_, Vec<serde_json::Value>) =
                    client.json(Method::GET, "/api/v1/topics", HeaderMap::new(), Bytes::new()).await?;
                let rows: Vec<[String; 4]> = topics
                    .iter()
                    .map(|t| {
                        [
                            t["name"].as_str().unwrap_or("?").to_owned(),
                            t["partitions"].to_string(),
                            t["retention"].as_str().unwrap_or("?").to_owned(),
                            t["retention_bytes"].to_string(),
                        ]
                    })
                    .collect();
                print_table(&["TOPIC", "PARTITIONS", "RETENTION", "RETENTION BYTES"], &rows);
            }
            TopicAction::Describe { name } => {
                let (_, t): (_, serde_json::Value) =
                    client.json(Method::GET, &format!("/api/v1/topics/{name}"), HeaderMap::new(), Bytes::new()).await?;
                let mut rows: Vec<[String; 5]> = Vec::new();
                for p in t["state"].as_array().into_iter().flatten() {
                    let end = p["end"].as_i64().unwrap_or(0);
                    let consumers = p["consumers"].as_object().cloned().unwrap_or_default();
                    let base = [p["partition"].to_string(), p["start"].to_string(), end.to_string()];
                    if consumers.is_empty() {
                        rows.push([base[0].clone(), base[1].clone(), base[2].clone(), "-".into(), "-".into()]);
                    }
                    for (c, at) in consumers {
                        let lag = end - at.as_i64().unwrap_or(0);
                        rows.push([base[0].clone(), base[1].clone(), base[2].clone(), c, lag.to_string()]);
                    }
                }
                print_table(&["PARTITION", "START", "END", "CONSUMER", "LAG"], &rows);
            }
            TopicAction::Rm { name } => {
                let (_, _v): (_, serde_json::Value) = client
                    .json(Method::DELETE, &format!("/api/v1/topics/{name}"), HeaderMap::new(), Bytes::new())
                    .await?;
                println!("removed topic {name}");
            }
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
pub(crate) struct Publish {
    /// The topic.
    topic: String,
    /// The message.
    #[arg(short = 'd', long, default_value = "")]
    data: String,
    /// Its key: messages with one key go to one partition, in order.
    #[arg(long)]
    key: Option<String>,
    /// Wait for the function consuming the topic and print its answer.
    #[arg(long)]
    reply: bool,
}

impl Publish {
    pub(crate) async fn run(self, client: &Client) -> anyhow::Result<()> {
        let mut query = Vec::new();
        if let Some(k) = &self.key {
            query.push(format!("key={}", percent_encode(k)));
        }
        if self.reply {
            query.push("reply=true".to_owned());
        }
        let q = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
        let path = format!("/api/v1/topics/{}/messages{q}", self.topic);
        let resp = client.send(Method::POST, &path, HeaderMap::new(), Bytes::from(self.data)).await?;
        let resp = check(resp).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        if self.reply {
            std::io::stdout().write_all(&body)?;
            if !body.ends_with(b"\n") {
                println!();
            }
        } else {
            let placed: serde_json::Value = serde_json::from_slice(&body)?;
            println!("published to {} partition {} offset {}", self.topic, placed["partition"], placed["offset"]);
        }
        Ok(())
    }
}

/// Percent-encodes everything but unreserved characters, for a query value.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
