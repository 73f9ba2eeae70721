//! `gust deploy [DIR]`: pack, upload, follow the build, print the URL.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use gust_api::wire::{DeployEvent, DeployResponse};
use http::{HeaderMap, HeaderValue, Method, header};
use http_body_util::BodyExt as _;

use crate::client::{Client, check, error_text};

#[derive(Debug, Args)]
pub(crate) struct Deploy {
    /// The function directory (with its gust.toml).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Create the revision without sending it any calls; reach it by its --tag.
    #[arg(long)]
    no_traffic: bool,
    /// Tag the new revision: it answers at /function/NAME@TAG (or with `Gust-Tag: TAG`).
    #[arg(long)]
    tag: Option<String>,
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
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/x-ndjson"));
        let mut options = Vec::new();
        if self.no_traffic {
            options.push("traffic=none".to_owned());
        }
        if let Some(tag) = &self.tag {
            options.push(format!("tag={}", super::route::encode(tag)));
        }
        let path = if options.is_empty() {
            "/api/v1/functions".to_owned()
        } else {
            format!("/api/v1/functions?{}", options.join("&"))
        };
        let resp = client
            .send(Method::POST, &path, headers, Bytes::from(archive))
            .await
            .with_context(|| format!("deploying {}", self.dir.display()))?;
        let resp = check(resp).await.with_context(|| format!("deploying {}", self.dir.display()))?;
        let done = follow(resp.into_body()).await.with_context(|| format!("deploying {}", self.dir.display()))?;
        if done.changed && done.traffic_percent == 100 {
            println!("deployed {} ({})", done.function, done.revision);
        } else if done.changed {
            println!("deployed {} ({}), taking {}% of calls", done.function, done.revision, done.traffic_percent);
        } else {
            println!("{} is unchanged ({}): same code and config", done.function, done.revision);
        }
        if let Some(b) = &done.build {
            if b.cached {
                eprintln!("build: reused the earlier build of these sources");
            } else {
                eprintln!("build: {} in {:.1}s", b.steps.join(" → "), b.seconds);
            }
        }
        println!("{}", done.url);
        for tag in &done.tags {
            println!("{}@{tag}", done.url);
        }
        Ok(())
    }
}

/// Prints build progress from the event stream until `done` or `failed`. On a terminal
/// a status line with a spinner and the elapsed time stays under the output.
async fn follow(mut body: hyper::body::Incoming) -> anyhow::Result<DeployResponse> {
    let mut progress = Progress::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(120));
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = tick.tick() => { progress.redraw(); continue; }
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| anyhow::anyhow!("the deploy stream was cut off: {e}"))?;
        let Some(data) = frame.data_ref() else { continue };
        pending.extend_from_slice(data);
        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            let event: DeployEvent = serde_json::from_slice(&line).context("unexpected line in the deploy stream")?;
            match event {
                DeployEvent::Step(s) => progress.step(&s),
                DeployEvent::Line(l) => progress.line(&l),
                DeployEvent::Done(d) => {
                    progress.finish();
                    return Ok(d);
                }
                DeployEvent::Failed { status, error } => {
                    progress.finish();
                    return Err(error_text(status, error));
                }
            }
        }
    }
    progress.finish();
    bail!("the server closed the deploy stream without saying how it ended")
}

/// Build output on stderr: plain lines when piped, with a live status line on a terminal.
struct Progress {
    tty: bool,
    step: Option<(String, Instant)>,
    frame: usize,
}

impl Progress {
    fn new() -> Self {
        Self { tty: std::io::stderr().is_terminal(), step: None, frame: 0 }
    }

    fn step(&mut self, label: &str) {
        self.clear();
        eprintln!("==> {label}");
        self.step = Some((label.to_owned(), Instant::now()));
        self.redraw();
    }

    fn line(&mut self, text: &str) {
        self.clear();
        if self.tty {
            eprintln!("\x1b[2m    {text}\x1b[0m");
        } else {
            eprintln!("    {text}");
        }
        self.redraw();
    }

    fn redraw(&mut self) {
        if !self.tty {
            return;
        }
        let Some((label, since)) = &self.step else { return };
        const SPIN: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        self.frame = (self.frame + 1) % SPIN.len();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{} {label} ({:.0}s)", SPIN[self.frame], since.elapsed().as_secs_f64());
        let _ = err.flush();
    }

    fn clear(&self) {
        if self.tty && self.step.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }

    fn finish(&mut self) {
        self.clear();
        self.step = None;
    }
}
