//! `dirac-bench match`: a fleet of concurrent fake pilots asking the Matcher
//! for jobs from a pre-filled queue. Reports matches/s, the latency of
//! RequestJob calls, and how many jobs were handed out twice (must be 0).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use dirac_client::{Client, ClientConfig, ProcessEnv};
use dirac_proto::wms::{RequestJobRequest, ResourceDescription, SubmitJobsRequest, SummaryRequest};
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Debug, Args)]
pub struct MatchArgs {
    /// Jobs to queue before the pilots start.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    jobs: u64,
    /// Concurrent pilots.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pilots: u64,
    /// gRPC connections the pilots share.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    connections: u64,
    /// Client config of the submitting user.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Token of the submitting user.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// File holding a GenericPilot token for the pilots.
    #[arg(long, value_name = "PATH")]
    pilot_token_file: PathBuf,
    /// Site the pilots claim to be at.
    #[arg(long, default_value = "LCG.Bench.bench")]
    site: String,
    /// Seconds to wait for the jobs to become Waiting.
    #[arg(long, default_value_t = 300)]
    wait_secs: u64,
    #[arg(long)]
    json: bool,
}

fn jdl(i: u64) -> String {
    format!(
        "[ Executable = \"/bin/true\"; JobName = \"match_{i}\"; JobGroup = \"bench\"; CPUTime = 3600; ]"
    )
}

async fn waiting(client: &Client) -> anyhow::Result<u64> {
    let rows = client
        .job_monitoring()
        .summary(SummaryRequest {
            grouping: vec!["Status".into()],
            filters: vec![],
        })
        .await?
        .into_inner()
        .rows;
    Ok(rows
        .iter()
        .filter(|r| r.values.first().is_some_and(|v| v == "Waiting"))
        .map(|r| r.count)
        .sum())
}

pub async fn run(args: MatchArgs) -> anyhow::Result<bool> {
    let user = ClientConfig::resolve(
        args.config.as_deref(),
        &ProcessEnv,
        args.url.clone(),
        args.token.clone(),
    )?;
    let client = Client::connect_now(&user).await?;
    let before = waiting(&client).await?;
    for start in (0..args.jobs).step_by(1000) {
        let jdls = (start..(start + 1000).min(args.jobs)).map(jdl).collect();
        client
            .job_manager()
            .submit_jobs(SubmitJobsRequest {
                jdls,
                request_id: String::new(),
            })
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    while waiting(&client).await? < before + args.jobs {
        if Instant::now() > deadline {
            bail!(
                "the jobs did not become Waiting within {} s",
                args.wait_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let token = std::fs::read_to_string(&args.pilot_token_file)
        .with_context(|| format!("read {}", args.pilot_token_file.display()))?;
    let pilot_cfg = ClientConfig {
        token: Some(token.trim().to_string()),
        ..user.clone()
    };
    let mut clients = Vec::new();
    for _ in 0..args.connections {
        clients.push(Client::connect_now(&pilot_cfg).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..args.pilots {
        let client = clients[usize::try_from(p % args.connections).unwrap_or(0)].clone();
        let site = args.site.clone();
        tasks.push(tokio::spawn(async move {
            let mut matcher = client.matcher();
            let mut latencies = Vec::new();
            let mut got = Vec::new();
            let mut error = None;
            loop {
                let req = RequestJobRequest {
                    resource: Some(ResourceDescription {
                        vo: String::new(),
                        site: site.clone(),
                        grid_ce: "bench-ce".into(),
                        cpu_time: 86_400,
                        number_of_processors: 1,
                        max_ram_mb: 2048,
                        ..Default::default()
                    }),
                };
                let t = Instant::now();
                match matcher.request_job(req).await {
                    Ok(r) => {
                        latencies.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                        let r = r.into_inner();
                        if !r.matched {
                            break;
                        }
                        got.push(r.job_id);
                    }
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
            (latencies, got, error)
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let mut all = Vec::new();
    let mut first_error = None;
    for t in tasks {
        let (lat, got, err) = t.await?;
        for l in lat {
            hist.record(l.max(1))?;
        }
        all.extend(got);
        if first_error.is_none() {
            first_error = err;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let unique: HashSet<u64> = all.iter().copied().collect();
    let doubles = all.len() - unique.len();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let value = json!({
        "jobs": args.jobs, "pilots": args.pilots, "matched": all.len(), "double_matches": doubles,
        "elapsed_s": elapsed, "matches_per_s": all.len() as f64 / elapsed,
        "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": hist.max() as f64 / 1000.0},
        "first_error": first_error,
    });
    if args.json {
        println!("{value}");
    } else {
        println!("jobs          {}", args.jobs);
        println!("pilots        {}", args.pilots);
        println!("matched       {} ({} handed out twice)", all.len(), doubles);
        println!("elapsed       {elapsed:.3} s");
        println!("throughput    {:.1} matches/s", all.len() as f64 / elapsed);
        println!(
            "call latency  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            hist.max() as f64 / 1000.0
        );
    }
    if let Some(e) = first_error {
        eprintln!("error: {e}");
        return Ok(false);
    }
    Ok(doubles == 0 && all.len() as u64 >= args.jobs)
}
