//! `dirac-pilot`: the pilot of dirac-rs.
//!
//! `pilot::run` is the whole story: `node` (CheckWorkerNode), registration
//! through `report`, then `agent` (the JobAgent loop) which starts one
//! `wrapper` (JobWrapper, with the `watchdog` measurements) per matched job.
//! `jobspec` reads the JDL. This file only parses flags, reads the token,
//! sets up logging and the runtime.

mod agent;
mod config;
mod jobspec;
mod logbuf;
mod node;
mod pilot;
mod remote;
mod report;
mod watchdog;
mod wrapper;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Args, PilotConfig};
use crate::logbuf::LogBuffer;

fn token(args: &Args) -> Result<String, String> {
    if let (Some(path), Some(auth_url), Some(stamp)) =
        (&args.pilot_secret_file, &args.auth_url, &args.stamp)
    {
        let secret = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --pilot-secret-file {}: {e}", path.display()))?;
        // A one-time secret: gone from disk once read.
        let _ = std::fs::remove_file(path);
        return dirac_client::login::AuthHttp::new(auth_url, args.ca_cert.as_deref())
            .and_then(|auth| auth.pilot_token(secret.trim(), stamp, &args.site))
            .map_err(|e| format!("cannot exchange the pilot secret: {e}"));
    }
    if let Some(path) = &args.token_file {
        return std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --token-file {}: {e}", path.display()));
    }
    Ok(args.token.clone().unwrap_or_default())
}

fn init_logging(json: bool, log: &LogBuffer) {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let console = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    };
    let copy = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(log.clone())
        .with_filter(filter());
    tracing_subscriber::registry()
        .with(console)
        .with(copy)
        .init();
}

fn main() -> ExitCode {
    let args = Args::parse();
    let log = LogBuffer::default();
    init_logging(args.log_json, &log);
    let cfg = match token(&args).and_then(|t| PilotConfig::new(&args, t)) {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!(error = e, "invalid configuration");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(pilot::run(cfg, log)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "pilot failed");
            ExitCode::FAILURE
        }
    }
}
