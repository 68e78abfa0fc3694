//! `dirac-bench e2e`: submit N short jobs to a running installation whose
//! pilots run them, and time submission to all final.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use dirac_client::{Client, ClientConfig, ProcessEnv};
use dirac_proto::common::Filter;
use dirac_proto::wms::{SubmitJobsRequest, SummaryRequest};
use serde_json::json;

#[derive(Debug, Args)]
pub struct E2eArgs {
    /// Jobs to run.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    jobs: u64,
    /// The payload.
    #[arg(long, default_value = "/bin/true")]
    executable: String,
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: E2eArgs) -> anyhow::Result<bool> {
    let config = ClientConfig::resolve(
        args.config.as_deref(),
        &ProcessEnv,
        args.url.clone(),
        args.token.clone(),
    )?;
    let client = Client::connect_now(&config).await?;
    let group = format!("e2e-{:08x}", rand_suffix());
    let start = Instant::now();
    let mut left = args.jobs;
    while left > 0 {
        let n = left.min(10_000);
        let jdl = format!(
            "[ Executable = \"{}\"; JobName = \"e2e_%n\"; JobGroup = \"{group}\"; CPUTime = 600; Parameters = {n}; ]",
            args.executable
        );
        client
            .job_manager()
            .submit_jobs(SubmitJobsRequest {
                jdls: vec![jdl],
                request_id: String::new(),
            })
            .await?;
        left -= n;
    }
    let submitted = start.elapsed().as_secs_f64();
    let filter = Filter {
        parameter: "JobGroup".into(),
        operator: "eq".into(),
        value: group.clone(),
        values: vec![],
    };
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let counts = loop {
        let rows = client
            .job_monitoring()
            .summary(SummaryRequest {
                grouping: vec!["Status".into()],
                filters: vec![filter.clone()],
            })
            .await?
            .into_inner()
            .rows;
        let counts: Vec<(String, u64)> = rows
            .into_iter()
            .map(|r| (r.values.first().cloned().unwrap_or_default(), r.count))
            .collect();
        let final_jobs: u64 = counts
            .iter()
            .filter(|(s, _)| matches!(s.as_str(), "Done" | "Failed" | "Killed"))
            .map(|(_, c)| c)
            .sum();
        if final_jobs >= args.jobs {
            break counts;
        }
        if Instant::now() > deadline {
            bail!(
                "only {final_jobs} of {} jobs final after {} s: {counts:?}",
                args.jobs,
                args.timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let elapsed = start.elapsed().as_secs_f64();
    let done = counts
        .iter()
        .find(|(s, _)| s == "Done")
        .map_or(0, |(_, c)| *c);
    let value = json!({
        "jobs": args.jobs, "submitted_s": submitted, "elapsed_s": elapsed,
        "jobs_per_s": args.jobs as f64 / elapsed, "done": done,
        "by_status": counts.iter().map(|(s, c)| (s.clone(), json!(c))).collect::<serde_json::Map<_, _>>(),
    });
    if args.json {
        println!("{value}");
    } else {
        println!("jobs          {}", args.jobs);
        println!("submitted in  {submitted:.2} s");
        println!(
            "all final in  {elapsed:.2} s ({:.1} jobs/s)",
            args.jobs as f64 / elapsed
        );
        for (status, count) in &counts {
            println!("  {status:<10} {count}");
        }
    }
    Ok(done == args.jobs)
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}
