//! The command line: one module per subcommand, each with `run(self, …) -> anyhow::Result<()>`.

mod calls;
mod deploy;
mod describe;
mod invoke;
mod login;
mod logs;
mod ls;
mod new;
mod rm;
mod route;
mod secret;
mod topic;
mod traffic;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Function-as-a-Service in one binary.
#[derive(Debug, Parser)]
#[command(name = "gust", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The gust server to talk to. Given before the command (`gust --url URL ls`), since
    /// `gust route create --url` is a route's path, as in Fission.
    #[arg(long, env = "GUST_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Log filter for the server (e.g. `info`, `gust=debug`).
    #[arg(long, global = true, env = "GUST_LOG", default_value = "info")]
    log: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform: gateway, instances and store, on this machine.
    Up(Box<up::Up>),
    /// Write a new function directory with a working hello function.
    New(new::New),
    /// Pack a function directory, upload it and print its URL.
    Deploy(deploy::Deploy),
    /// Call a function and print its answer.
    Invoke(invoke::Invoke),
    /// List deployed functions.
    Ls(ls::Ls),
    /// Show a function's manifest, revisions, instances and recent errors.
    Describe(describe::Describe),
    /// Keep the server's token for the CLI (needed with `gust up --auth`, or beyond loopback).
    Login(login::Login),
    /// Forget the token kept for the server.
    Logout(login::Logout),
    /// Print a function's log lines.
    Logs(logs::Logs),
    /// Remove a function and stop its instances.
    Rm(rm::Rm),
    /// Manage custom HTTP routes to functions.
    Route(route::Route),
    /// List a function's revisions with their age, traffic, tags and instances.
    Revisions(traffic::Revisions),
    /// Show or split a function's traffic over its revisions, and tag revisions.
    Traffic(traffic::TrafficCmd),
    /// Send all of a function's traffic back to the previous (or a named) revision.
    Rollback(traffic::Rollback),
    /// List a function's async calls, or show one (`gust calls get ID`).
    Calls(calls::Calls),
    /// List, show, redrive or purge a function's dead-lettered async calls.
    Dlq(calls::Dlq),
    /// Create, update, list or delete secrets functions may read.
    Secret(secret::Secret),
    /// Create, list, describe or remove topics.
    Topic(topic::Topic),
    /// Append a message to a topic (and, with --reply, print the consumer's answer).
    Publish(topic::Publish),
}

pub(crate) use login::{bearer, token_for};

/// A configuration or usage problem (exit code 64, as `EX_USAGE`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

impl Cli {
    /// How many runtime worker threads the command wants: `None` for one per core.
    pub(crate) fn worker_threads(&self) -> Option<usize> {
        match &self.command {
            Command::Up(c) => c.worker_threads(),
            _ => None,
        }
    }

    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let client = || crate::client::Client::new(&self.url);
        match self.command {
            Command::Up(c) => c.run().await,
            Command::New(c) => c.run(),
            Command::Login(c) => c.run(&self.url).await,
            Command::Logout(c) => c.run(&self.url),
            Command::Deploy(c) => c.run(&client()?).await,
            Command::Route(c) => c.run(&client()?).await,
            Command::Invoke(c) => c.run(&client()?).await,
            Command::Ls(c) => c.run(&client()?).await,
            Command::Describe(c) => c.run(&client()?).await,
            Command::Logs(c) => c.run(&client()?).await,
            Command::Rm(c) => c.run(&client()?).await,
            Command::Revisions(c) => c.run(&client()?).await,
            Command::Traffic(c) => c.run(&client()?).await,
            Command::Rollback(c) => c.run(&client()?).await,
            Command::Calls(c) => c.run(&client()?).await,
            Command::Dlq(c) => c.run(&client()?).await,
            Command::Topic(c) => c.run(&client()?).await,
            Command::Secret(c) => c.run(&client()?).await,
            Command::Publish(c) => c.run(&client()?).await,
        }
    }
}

/// Logs go to stderr; only `gust up` logs much.
pub(crate) fn init_logging(cli: &Cli) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

/// 64 for usage and configuration errors, 1 for everything else.
pub(crate) fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    if err.downcast_ref::<UsageError>().is_some() { ExitCode::from(64) } else { ExitCode::FAILURE }
}
