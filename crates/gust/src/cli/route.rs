//! `gust route create|ls|rm`: custom HTTP routes to functions, as Fission's HTTP triggers.

use bytes::Bytes;
use clap::{Args, Subcommand};
use gust_api::wire::{RouteRequest, RouteRow};
use http::{HeaderMap, HeaderValue, Method, header};

use crate::cli::ls::print_table;
use crate::client::Client;

#[derive(Debug, Args)]
pub(crate) struct Route {
    #[command(subcommand)]
    command: RouteCommand,
}

#[derive(Debug, Subcommand)]
enum RouteCommand {
    /// Route METHOD + URL pattern to a function, e.g. `--method PATCH --url /counter`.
    Create {
        /// The HTTP method, or ANY.
        #[arg(long, default_value = "ANY")]
        method: String,
        /// The path pattern: literals, `{param}` segments and a final `{*rest}`.
        #[arg(long)]
        url: String,
        /// The function it leads to.
        #[arg(long)]
        function: String,
    },
    /// List every route.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove the route with this method and URL pattern.
    Rm {
        /// The HTTP method, or ANY.
        #[arg(long, default_value = "ANY")]
        method: String,
        /// The path pattern, exactly as created.
        #[arg(long)]
        url: String,
    },
}

impl Route {
    pub(crate) async fn run(self, client: &Client) -> anyhow::Result<()> {
        match self.command {
            RouteCommand::Create { method, url, function } => {
                let body = serde_json::to_vec(&RouteRequest { method: Some(method), path: url, function })?;
                let mut headers = HeaderMap::new();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                let (_, row): (_, RouteRow) =
                    client.json(Method::POST, "/api/v1/routes", headers, Bytes::from(body)).await?;
                println!("route {} {} → {}", row.method, row.path, row.function);
                println!("{}", row.url);
            }
            RouteCommand::Ls { json } => {
                let (_, rows): (_, Vec<RouteRow>) =
                    client.json(Method::GET, "/api/v1/routes", HeaderMap::new(), Bytes::new()).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                    return Ok(());
                }
                let table: Vec<[String; 4]> =
                    rows.into_iter().map(|r| [r.method, r.path, r.function, r.origin]).collect();
                print_table(&["METHOD", "PATH", "FUNCTION", "FROM"], &table);
            }
            RouteCommand::Rm { method, url } => {
                let path = format!("/api/v1/routes?method={}&path={}", encode(&method), encode(&url));
                let (_, row): (_, RouteRow) =
                    client.json(Method::DELETE, &path, HeaderMap::new(), Bytes::new()).await?;
                println!("removed route {} {} → {}", row.method, row.path, row.function);
            }
        }
        Ok(())
    }
}

/// Percent-encodes everything but unreserved characters, for a query value.
pub(crate) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
