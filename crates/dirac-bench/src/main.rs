//! `dirac-bench`: load generators against a running dirac-rs server.
//!
//! `submit` measures job submission: it builds every request first, then
//! sends them with a fixed number of calls in flight and reports throughput
//! and the latency distribution of the calls.

mod catalog;
mod e2e;
mod matching;
mod requests;
mod startup;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use dirac_client::{Client, ClientConfig, ProcessEnv};
use dirac_proto::wms::SubmitJobsRequest;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    name = "dirac-bench",
    version,
    about = "Load generator for dirac-rs servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Submit many small jobs and report throughput and call latency.
    Submit(SubmitArgs),
    /// Fill the queue, then let many concurrent fake pilots match jobs.
    Match(matching::MatchArgs),
    /// Submit short jobs and time them to all final (pilots must be running).
    E2e(e2e::E2eArgs),
    /// The file catalog: registration, replica lookup, listings, metadata queries.
    Catalog(catalog::CatalogArgs),
    /// Start `diracd serve SUBSYSTEM` until SERVING, then its idle memory.
    Startup(startup::StartupArgs),
    /// Put requests, then time the RequestExecutingAgent draining them.
    Requests(requests::RequestsArgs),
}

#[derive(Debug, Args)]
struct SubmitArgs {
    /// Number of jobs to create.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    jobs: u64,
    /// JDLs per SubmitJobs call (ignored with --parametric).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Calls in flight.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Send one parametric JDL of P parameters per call instead of plain JDLs.
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u64).range(1..))]
    parametric: Option<u64>,
    /// Client config file.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Server URL.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Bearer token.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
}

/// A plain JDL, distinct for each `i`.
fn plain_jdl(i: u64) -> String {
    format!(
        "[\n  Executable = \"/bin/echo\";\n  Arguments = \"hello {i}\";\n  JobName = \"bench_{i}\";\n  \
         JobGroup = \"bench\";\n  CPUTime = 3600;\n  Priority = 1;\n  \
         OutputSandbox = {{ \"std.out\", \"std.err\" }};\n]\n"
    )
}

/// A parametric JDL expanding into `p` jobs on the server.
fn parametric_jdl(request: u64, p: u64) -> String {
    format!(
        "[\n  Executable = \"/bin/echo\";\n  Arguments = \"hello %s\";\n  JobName = \"bench_{request}_%n\";\n  \
         JobGroup = \"bench\";\n  CPUTime = 3600;\n  Priority = 1;\n  Parameters = {p};\n  \
         ParameterStart = 0;\n  ParameterStep = 1;\n  \
         OutputSandbox = {{ \"std.out\", \"std.err\" }};\n]\n"
    )
}

/// Every request of the run, built before the clock starts.
fn build_requests(jobs: u64, batch: u64, parametric: Option<u64>) -> Vec<SubmitJobsRequest> {
    match parametric {
        Some(p) => (0..jobs.div_ceil(p))
            .map(|r| SubmitJobsRequest {
                jdls: vec![parametric_jdl(r, p.min(jobs - r * p))],
                request_id: String::new(),
            })
            .collect(),
        None => (0..jobs.div_ceil(batch))
            .map(|r| SubmitJobsRequest {
                jdls: (r * batch..jobs.min((r + 1) * batch))
                    .map(plain_jdl)
                    .collect(),
                request_id: String::new(),
            })
            .collect(),
    }
}

struct Outcome {
    jobs: u64,
    calls: u64,
    failed_calls: u64,
    first_error: Option<String>,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

async fn run_submit(
    client: &Client,
    requests: Vec<SubmitJobsRequest>,
    concurrency: usize,
) -> anyhow::Result<Outcome> {
    let calls = requests.len() as u64;
    let mut latency_us =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).context("create histogram")?;
    let stub = client.job_manager();
    let start = Instant::now();
    let mut results = futures::stream::iter(requests)
        .map(|request| {
            let mut stub = stub.clone();
            async move {
                let sent = Instant::now();
                let result = stub.submit_jobs(request).await;
                (sent.elapsed(), result)
            }
        })
        .buffer_unordered(concurrency);
    let mut jobs = 0;
    let mut failed_calls = 0;
    let mut first_error = None;
    while let Some((took, result)) = results.next().await {
        match result {
            Ok(response) => {
                jobs += response.into_inner().jobs.len() as u64;
                latency_us.saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
            }
            Err(status) => {
                failed_calls += 1;
                first_error
                    .get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
            }
        }
    }
    Ok(Outcome {
        jobs,
        calls,
        failed_calls,
        first_error,
        elapsed: start.elapsed(),
        latency_us,
    })
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn summary_json(args: &SubmitArgs, o: &Outcome) -> serde_json::Value {
    let secs = o.elapsed.as_secs_f64();
    let h = &o.latency_us;
    json!({
        "jobs": o.jobs,
        "calls": o.calls,
        "failed_calls": o.failed_calls,
        "batch": if args.parametric.is_some() { serde_json::Value::Null } else { json!(args.batch) },
        "parametric": args.parametric,
        "concurrency": args.concurrency,
        "elapsed_s": secs,
        "jobs_per_s": if secs > 0.0 { o.jobs as f64 / secs } else { 0.0 },
        "latency_ms": {
            "p50": ms(h.value_at_quantile(0.50)),
            "p90": ms(h.value_at_quantile(0.90)),
            "p99": ms(h.value_at_quantile(0.99)),
            "max": ms(h.max()),
        },
        "first_error": o.first_error,
    })
}

fn summary_text(v: &serde_json::Value) -> String {
    let f = |key: &str| v[key].as_f64().unwrap_or(0.0);
    let l = |key: &str| v["latency_ms"][key].as_f64().unwrap_or(0.0);
    format!(
        "jobs          {}\ncalls         {} ({} failed)\nelapsed       {:.3} s\nthroughput    {:.1} jobs/s\n\
         call latency  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms\n",
        v["jobs"],
        v["calls"],
        v["failed_calls"],
        f("elapsed_s"),
        f("jobs_per_s"),
        l("p50"),
        l("p90"),
        l("p99"),
        l("max"),
    )
}

async fn submit(args: SubmitArgs) -> anyhow::Result<bool> {
    let config = ClientConfig::resolve(
        args.config.as_deref(),
        &ProcessEnv,
        args.url.clone(),
        args.token.clone(),
    )?;
    let requests = build_requests(args.jobs, args.batch, args.parametric);
    let client = Client::connect_now(&config).await?;
    let concurrency = usize::try_from(args.concurrency).context("concurrency")?;
    let outcome = run_submit(&client, requests, concurrency).await?;
    let value = summary_json(&args, &outcome);
    if args.json {
        println!("{value}");
    } else {
        print!("{}", summary_text(&value));
    }
    if let Some(e) = &outcome.first_error {
        eprintln!(
            "error: {} of {} calls failed, first: {e}",
            outcome.failed_calls, outcome.calls
        );
        return Ok(false);
    }
    if outcome.jobs == 0 {
        bail!("the server created no jobs");
    }
    Ok(true)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Submit(args) => submit(args).await,
        Command::Match(args) => matching::run(args).await,
        Command::E2e(args) => e2e::run(args).await,
        Command::Catalog(args) => catalog::main(args).await,
        Command::Startup(args) => startup::run(args).await,
        Command::Requests(args) => requests::run(args).await,
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_requests_cover_every_job_once() {
        let requests = build_requests(10, 4, None);
        let sizes: Vec<_> = requests.iter().map(|r| r.jdls.len()).collect();
        assert_eq!(sizes, [4, 4, 2]);
        let mut all: Vec<&String> = requests.iter().flat_map(|r| &r.jdls).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 10);
        assert!(all.iter().any(|j| j.contains("JobName = \"bench_9\"")));
    }

    #[test]
    fn parametric_requests_split_the_jobs() {
        let requests = build_requests(25, 4, Some(10));
        assert_eq!(requests.len(), 3);
        assert!(requests.iter().all(|r| r.jdls.len() == 1));
        assert!(requests[0].jdls[0].contains("Parameters = 10;"));
        assert!(requests[2].jdls[0].contains("Parameters = 5;"));
    }
}
