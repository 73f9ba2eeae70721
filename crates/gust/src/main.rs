//! `gust`: the platform (`gust up`) and its CLI in one binary.
//!
//! `main` parses the command line, starts logging, runs the subcommand and maps its
//! result to an exit code. Everything else lives in [`cli`].

mod cli;
mod client;
mod pack;
mod templates;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(&args);
    match args.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            cli::exit_code_for(&err)
        }
    }
}
