//! `gust`: the platform (`gust up`) and its CLI in one binary.
//!
//! `main` parses the command line, starts logging, builds the runtime the command asks
//! for, runs the subcommand and maps its result to an exit code. Everything else lives
//! in [`cli`].

mod cli;
mod client;
mod pack;
mod templates;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(&args);
    // Built here rather than by `#[tokio::main]`: `gust up --busy-poll` needs one worker.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.worker_threads() {
        runtime.worker_threads(n);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(r) => r,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(args.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            cli::exit_code_for(&err)
        }
    }
}
