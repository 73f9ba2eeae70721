//! `gust describe NAME`.

use bytes::Bytes;
use clap::Args;
use gust_api::wire::FunctionDetail;
use http::{HeaderMap, Method};

use super::ls::print_table;
use crate::client::Client;

#[derive(Debug, Args)]
pub(crate) struct Describe {
    /// The function.
    name: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl Describe {
    pub(crate) async fn run(self, client: &Client) -> anyhow::Result<()> {
        let (_, d): (_, FunctionDetail) = client
            .json(Method::GET, &format!("/api/v1/functions/{}", self.name), HeaderMap::new(), Bytes::new())
            .await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&d)?);
            return Ok(());
        }
        println!("Name:     {}", d.name);
        println!("URL:      {}", d.url);
        println!("Runtime:  {}", d.spec.runtime);
        if !d.isolation.is_empty() {
            println!("Isolation: {}", d.isolation);
        }
        println!("\nRevisions:");
        let revs: Vec<[String; 5]> = d
            .revisions
            .iter()
            .map(|r| {
                [
                    r.id.clone(),
                    r.status.to_string(),
                    format!("{}%", r.traffic_percent),
                    r.created_at.clone(),
                    r.code_digest.clone(),
                ]
            })
            .collect();
        print_table(&["REVISION", "STATUS", "TRAFFIC", "CREATED", "CODE"], &revs);
        for r in d.revisions.iter().filter(|r| r.failure.is_some()) {
            println!("{} failed to start: {}", r.id, r.failure.as_deref().unwrap_or_default());
        }
        println!("\nInstances:");
        if d.instances.is_empty() {
            println!("(none: scaled to zero)");
        } else {
            let rows: Vec<[String; 6]> = d
                .instances
                .iter()
                .map(|i| {
                    [
                        i.id.clone(),
                        i.pid.map_or("-".into(), |p| p.to_string()),
                        i.in_flight.to_string(),
                        i.served.to_string(),
                        format!("{:.1}s", i.age_seconds),
                        format!("{:.1}s", i.idle_seconds),
                    ]
                })
                .collect();
            print_table(&["INSTANCE", "PID", "IN FLIGHT", "SERVED", "AGE", "IDLE"], &rows);
        }
        if d.queued > 0 {
            println!("{} call(s) waiting for a free instance", d.queued);
        }
        if !d.scaling.is_empty() {
            let window = gust_api::quantity::format_duration(d.spec.scale.stable_window);
            let panic_window = gust_api::quantity::format_duration(d.spec.scale.panic_window());
            println!("\nScaling (Knative KPA, concurrency over {window} / {panic_window}):");
            let rows: Vec<[String; 9]> = d
                .scaling
                .iter()
                .map(|s| {
                    [
                        if s.retired { format!("{} (retired)", s.revision) } else { s.revision.clone() },
                        s.desired.to_string(),
                        if s.starting > 0 {
                            format!("{}+{} starting", s.actual, s.starting)
                        } else {
                            s.actual.to_string()
                        },
                        if s.panic { "yes".into() } else { "no".into() },
                        format!("{:.2} / {:.2}", s.stable_concurrency, s.panic_concurrency),
                        s.queued.to_string(),
                        format!("{} of {}", s.waited, s.calls),
                        s.cold_starts.to_string(),
                        s.pooled_starts.to_string(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "REVISION",
                    "DESIRED",
                    "ACTUAL",
                    "PANIC",
                    "CONCURRENCY",
                    "QUEUED",
                    "CALLS WAITED",
                    "COLD STARTS",
                    "FROM POOL",
                ],
                &rows,
            );
            for s in d.scaling.iter().filter_map(|s| s.unpooled_reason.as_ref().map(|r| (s, r))) {
                println!("{}: starts fresh, not from the warm pool: {}", s.0.revision, s.1);
            }
        }
        println!("\nManifest (defaults filled in):");
        for line in d.manifest.lines() {
            println!("  {line}");
        }
        println!("\nRecent errors:");
        if d.recent_errors.is_empty() {
            println!("(none)");
        }
        for e in &d.recent_errors {
            println!("  {}  {}  call {}  {}", e.at, e.status, e.call_id, e.message);
        }
        Ok(())
    }
}
