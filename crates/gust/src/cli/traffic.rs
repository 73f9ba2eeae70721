//! `gust revisions NAME`, `gust traffic NAME [TARGET=PERCENT…]` and
//! `gust rollback NAME [REVISION]`: Knative's release model from the command line.

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use gust_api::wire::{FunctionDetail, RollbackRequest, TargetPercent, TrafficInfo, TrafficUpdate};
use http::{HeaderMap, HeaderValue, Method, header};

use super::ls::print_table;
use crate::client::Client;

#[derive(Debug, Args)]
pub(crate) struct Revisions {
    /// The function.
    name: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl Revisions {
    pub(crate) async fn run(self, client: &Client) -> anyhow::Result<()> {
        let (_, d): (_, FunctionDetail) = client
            .json(Method::GET, &format!("/api/v1/functions/{}", self.name), HeaderMap::new(), Bytes::new())
            .await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&d.revisions)?);
            return Ok(());
        }
        let rows: Vec<[String; 7]> = d
            .revisions
            .iter()
            .map(|r| {
                [
                    r.id.clone(),
                    r.status.to_string(),
                    age(&r.created_at),
                    r.code_digest.strip_prefix("sha256:").unwrap_or(&r.code_digest).chars().take(12).collect(),
                    format!("{}%", r.traffic_percent),
                    tag_column(&r.tags, r.latest),
                    r.instances.to_string(),
                ]
            })
            .collect();
        print_table(&["REVISION", "STATUS", "AGE", "DIGEST", "TRAFFIC", "TAGS", "INSTANCES"], &rows);
        Ok(())
    }
}

/// "3m", "2h", "5d" since an RFC 3339 time.
fn age(rfc3339: &str) -> String {
    let Ok(t) = humantime::parse_rfc3339(rfc3339) else { return "?".into() };
    let secs = SystemTime::now().duration_since(t).unwrap_or(Duration::ZERO).as_secs();
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[derive(Debug, Args)]
pub(crate) struct TrafficCmd {
    /// The function.
    name: String,
    /// Shares as TARGET=PERCENT, summing to 100. A target is a revision (NAME-00003),
    /// a tag, or @latest (follows new deploys). Without any, prints the traffic.
    split: Vec<String>,
    /// Tag a revision: TAG=TARGET (moves the tag if it exists). Repeatable.
    #[arg(long = "tag", value_name = "TAG=TARGET")]
    tags: Vec<String>,
    /// Remove a tag. Repeatable.
    #[arg(long = "untag", value_name = "TAG")]
    untag: Vec<String>,
    /// Allow shares and tags on revisions that failed to start.
    #[arg(long)]
    force: bool,
}

impl TrafficCmd {
    pub(crate) async fn run(self, client: &Client) -> anyhow::Result<()> {
        let path = format!("/api/v1/functions/{}/traffic", self.name);
        if self.split.is_empty() && self.tags.is_empty() && self.untag.is_empty() {
            let (_, info): (_, TrafficInfo) = client.json(Method::GET, &path, HeaderMap::new(), Bytes::new()).await?;
            print_traffic(&info);
            return Ok(());
        }
        let mut update = TrafficUpdate { untag: self.untag, force: self.force, ..TrafficUpdate::default() };
        if !self.split.is_empty() {
            let shares = self.split.iter().map(|s| parse_share(s)).collect::<anyhow::Result<Vec<_>>>()?;
            update.split = Some(shares);
        }
        for t in &self.tags {
            let (tag, target) = t
                .split_once('=')
                .ok_or_else(|| super::UsageError(format!("--tag {t}: write TAG=TARGET, e.g. candidate=hello-00004")))?;
            update.tag.insert(tag.to_owned(), target.to_owned());
        }
        let info = send(client, Method::PUT, &path, &update).await?;
        print_traffic(&info);
        Ok(())
    }
}

/// `candidate=10` → the target and its share.
fn parse_share(text: &str) -> anyhow::Result<TargetPercent> {
    let usage = || super::UsageError(format!("`{text}`: write TARGET=PERCENT, e.g. hello-00003=90 or candidate=10"));
    let (target, percent) = text.rsplit_once('=').ok_or_else(usage)?;
    let percent = percent.trim_end_matches('%').parse::<u32>().map_err(|_| usage())?;
    if target.is_empty() || percent > 100 {
        return Err(usage().into());
    }
    Ok(TargetPercent { target: target.to_owned(), percent })
}

#[derive(Debug, Args)]
pub(crate) struct Rollback {
    /// The function.
    name: String,
    /// The revision (or tag) to send every call to; by default the one before the
    /// revision taking most calls now.
    revision: Option<String>,
}

impl Rollback {
    pub(crate) async fn run(self, client: &Client) -> anyhow::Result<()> {
        let path = format!("/api/v1/functions/{}/rollback", self.name);
        let info = send(client, Method::POST, &path, &RollbackRequest { revision: self.revision }).await?;
        print_traffic(&info);
        Ok(())
    }
}

async fn send<T: serde::Serialize>(
    client: &Client,
    method: Method,
    path: &str,
    body: &T,
) -> anyhow::Result<TrafficInfo> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = Bytes::from(serde_json::to_vec(body).context("encoding the request")?);
    let (_, info) = client.json(method, path, headers, body).await?;
    Ok(info)
}

fn print_traffic(info: &TrafficInfo) {
    let rows: Vec<[String; 3]> = info
        .targets
        .iter()
        .map(|t| [t.revision.clone(), format!("{}%", t.percent), tag_column(&t.tags, t.latest)])
        .collect();
    print_table(&["REVISION", "TRAFFIC", "TAGS"], &rows);
}

/// The TAGS cell: `@latest` first for the newest ready revision, then its tags; `-` for none.
fn tag_column(tags: &[String], latest: bool) -> String {
    let all: Vec<&str> =
        latest.then_some(gust_api::traffic::LATEST).into_iter().chain(tags.iter().map(String::as_str)).collect();
    if all.is_empty() { "-".to_owned() } else { all.join(",") }
}
