//! `dirac`: the command-line client of dirac-rs.
//!
//! `cli` declares the arguments, `commands` runs them against the server and
//! builds a [`report::Report`], `json` and `table` render the replies. Only
//! `main` touches the process: arguments, environment, exit code.

mod cli;
mod commands;
mod json;
mod report;
mod sandboxes;
mod table;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli, &dirac_client::ProcessEnv)) {
        Ok(report) => report.emit(),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
