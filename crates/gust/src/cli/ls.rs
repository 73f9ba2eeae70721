//! `gust ls`.

use bytes::Bytes;
use clap::Args;
use gust_api::wire::FunctionSummary;
use http::{HeaderMap, Method};

use crate::client::Client;

#[derive(Debug, Args)]
pub(crate) struct Ls {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl Ls {
    pub(crate) async fn run(self, client: &Client) -> anyhow::Result<()> {
        let (_, rows): (_, Vec<FunctionSummary>) =
            client.json(Method::GET, "/api/v1/functions", HeaderMap::new(), Bytes::new()).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(());
        }
        let table: Vec<[String; 5]> =
            rows.into_iter().map(|r| [r.name, r.runtime, r.revision, r.instances.to_string(), r.url]).collect();
        print_table(&["NAME", "RUNTIME", "REVISION", "INSTANCES", "URL"], &table);
        Ok(())
    }
}

/// Left-aligned columns, two spaces apart.
pub(crate) fn print_table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) {
    let mut widths = head.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(head.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
