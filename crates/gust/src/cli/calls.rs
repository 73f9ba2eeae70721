//! `gust calls NAME`, `gust calls get ID` and `gust dlq NAME [show ID | redrive [ID] |
//! purge [ID]]`: async calls and their dead letters.

use bytes::Bytes;
use clap::{Args, Subcommand};
use gust_api::wire::{CallRecord, DlqAnswer, DlqRequest};
use http::{HeaderMap, HeaderValue, Method, header};

use super::ls::print_table;
use crate::client::Client;

#[derive(Debug, Args)]
pub(crate) struct Calls {
    /// The function, or `get` followed by a call id.
    name: String,
    /// With `get`: the call's id.
    id: Option<String>,
    /// Only calls with this status: queued, running, succeeded, failed, dead.
    #[arg(long)]
    status: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl Calls {
    pub(crate) async fn run(self, client: &Client) -> anyhow::Result<()> {
        if self.name == "get" {
            let id = self.id.ok_or_else(|| super::UsageError("gust calls get ID: name the call".into()))?;
            return show(client, &id, self.json).await;
        }
        if self.id.is_some() {
            return Err(super::UsageError(format!(
                "gust calls {} takes no id; did you mean `gust calls get`?",
                self.name
            ))
            .into());
        }
        let mut path = format!("/api/v1/functions/{}/calls?limit={}", self.name, self.limit);
        if let Some(s) = &self.status {
            path.push_str(&format!("&status={s}"));
        }
        list(client, &path, self.json).await
    }
}

#[derive(Debug, Args)]
pub(crate) struct Dlq {
    /// The function.
    name: String,
    #[command(subcommand)]
    action: Option<DlqAction>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// Show one dead call: its request's answer, error, attempts and log lines.
    Show {
        /// The call's id.
        id: String,
    },
    /// Queue dead calls again, with their attempts and age counted afresh.
    Redrive {
        /// One call; all dead calls of the function when absent.
        id: Option<String>,
    },
    /// Delete dead calls.
    Purge {
        /// One call; all dead calls of the function when absent.
        id: Option<String>,
    },
}

impl Dlq {
    pub(crate) async fn run(self, client: &Client) -> anyhow::Result<()> {
        let (verb, id) = match self.action {
            None => {
                return list(
                    client,
                    &format!("/api/v1/functions/{}/calls?status=dead&limit=1000", self.name),
                    self.json,
                )
                .await;
            }
            Some(DlqAction::Show { id }) => return show(client, &id, self.json).await,
            Some(DlqAction::Redrive { id }) => ("redrive", id),
            Some(DlqAction::Purge { id }) => ("purge", id),
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let body = Bytes::from(serde_json::to_vec(&DlqRequest { id })?);
        let path = format!("/api/v1/functions/{}/dlq/{verb}", self.name);
        let (_, answer): (_, DlqAnswer) = client.json(Method::POST, &path, headers, body).await?;
        let done = if verb == "redrive" { "queued again" } else { "deleted" };
        println!("{} dead call(s) of {} {done}", answer.calls, answer.function);
        Ok(())
    }
}

async fn list(client: &Client, path: &str, json: bool) -> anyhow::Result<()> {
    let (_, calls): (_, Vec<CallRecord>) = client.json(Method::GET, path, HeaderMap::new(), Bytes::new()).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&calls)?);
        return Ok(());
    }
    let rows: Vec<[String; 6]> = calls
        .iter()
        .map(|c| {
            [
                c.id.clone(),
                c.status.clone(),
                c.attempts.to_string(),
                c.accepted_at.clone(),
                c.duration_seconds.map_or("-".into(), |s| format!("{s:.3}s")),
                match (&c.result, &c.error) {
                    (Some(r), _) => r.status.to_string(),
                    (None, Some(e)) => e.chars().take(60).collect(),
                    (None, None) => "-".into(),
                },
            ]
        })
        .collect();
    print_table(&["CALL", "STATUS", "ATTEMPTS", "ACCEPTED", "TOOK", "RESULT"], &rows);
    Ok(())
}

async fn show(client: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let (_, c): (_, CallRecord) =
        client.json(Method::GET, &format!("/calls/{id}"), HeaderMap::new(), Bytes::new()).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    println!("Call:      {}", c.id);
    println!("Function:  {}", c.function);
    println!("Status:    {} after {} attempt(s)", c.status, c.attempts);
    println!("Accepted:  {}", c.accepted_at);
    if let Some(t) = &c.ended_at {
        println!("Ended:     {t} ({:.3}s)", c.duration_seconds.unwrap_or(0.0));
    }
    if let Some(r) = &c.revision {
        println!("Revision:  {r}{}", if c.cold_start == Some(true) { " (cold start)" } else { "" });
    }
    if let Some(e) = &c.error {
        println!("Error:     {e}");
    }
    if let Some(r) = &c.result {
        println!("Result:    {}", r.status);
        match (&r.body, &r.body_base64) {
            (Some(b), _) => println!("{b}"),
            (None, Some(b)) => println!("(binary, base64) {b}"),
            (None, None) => {}
        }
    }
    if !c.logs.is_empty() {
        println!("\nLogs:");
        for l in &c.logs {
            println!("{} {} {}", l.ts, l.stream, l.line);
        }
    }
    Ok(())
}
