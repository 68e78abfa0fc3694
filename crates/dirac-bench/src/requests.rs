//! `dirac-bench requests`: put requests through the ReqManager with calls
//! in flight, then time the RequestExecutingAgent draining them. Each
//! request is a `RemoveFile` of files that do not exist under the user's
//! home: the agent checks the owner's right and looks every file up in the
//! catalog (no storage traffic), so the drain measures the agent's own
//! cycle: claim, catalog lookups, outcome written back.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use dirac_client::{Client, ClientConfig, ProcessEnv};
use dirac_proto::rms::{self as pb, ListRequestsRequest, PutRequestsRequest};
use futures::StreamExt;
use serde_json::json;

#[derive(Debug, Args)]
pub struct RequestsArgs {
    /// Requests to put.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    requests: u64,
    /// Files per request.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    files: u64,
    /// Requests per PutRequests call.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    batch: u64,
    /// Calls in flight.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    concurrency: u64,
    /// The directory (of the user's) the LFNs are under.
    #[arg(long)]
    home: String,
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Give up waiting for the agent after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    #[arg(long)]
    json: bool,
}

fn request(home: &str, run: u64, i: u64, files: u64) -> pb::Request {
    pb::Request {
        name: format!("bench-{run:x}-{i}"),
        source_component: "dirac-bench".into(),
        operations: vec![pb::Operation {
            r#type: "RemoveFile".into(),
            files: (0..files)
                .map(|f| pb::File {
                    lfn: format!("{home}/bench-{run:x}/{i}/{f}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Requests of this run still in a live state.
async fn live(client: &Client) -> anyhow::Result<usize> {
    let listed = client
        .req_manager()
        .list_requests(ListRequestsRequest {
            statuses: vec!["Waiting".into(), "Assigned".into()],
            limit: 10_000,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(listed.requests.len())
}

pub async fn run(args: RequestsArgs) -> anyhow::Result<bool> {
    let config = ClientConfig::resolve(
        args.config.as_deref(),
        &ProcessEnv,
        args.url.clone(),
        args.token.clone(),
    )?;
    let client = Client::connect_now(&config).await?;
    if live(&client).await? > 0 {
        bail!("the user has live requests already: the drain would count them");
    }
    let run = u64::from(std::process::id()) << 16
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
    // Every call built before the clock starts.
    let calls: Vec<PutRequestsRequest> = (0..args.requests.div_ceil(args.batch))
        .map(|c| PutRequestsRequest {
            requests: (c * args.batch..args.requests.min((c + 1) * args.batch))
                .map(|i| request(&args.home, run, i, args.files))
                .collect(),
        })
        .collect();
    let stub = client.req_manager();
    let start = Instant::now();
    let results: Vec<_> = futures::stream::iter(calls)
        .map(|call| {
            let mut stub = stub.clone();
            async move { stub.put_requests(call).await }
        })
        .buffer_unordered(usize::try_from(args.concurrency).unwrap_or(1))
        .collect()
        .await;
    let put = start.elapsed();
    let mut stored = 0u64;
    for r in results {
        stored += r?.into_inner().request_ids.len() as u64;
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    loop {
        if live(&client).await? == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the agent did not drain the requests in {} s",
                args.timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The agent works while requests arrive: its rate is the whole run's.
    let drained = start.elapsed();
    let files = stored * args.files;
    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    if args.json {
        println!(
            "{}",
            json!({
                "requests": stored, "files_per_request": args.files,
                "put_s": put.as_secs_f64(), "put_requests_per_s": rate(stored, put),
                "all_done_s": drained.as_secs_f64(),
                "executed_requests_per_s": rate(stored, drained),
                "executed_files_per_s": rate(files, drained),
            })
        );
    } else {
        println!(
            "put {stored} requests of {} files in {:.2} s: {:.0} requests/s ({:.0} files/s)",
            args.files,
            put.as_secs_f64(),
            rate(stored, put),
            rate(files, put)
        );
        println!(
            "all executed {:.2} s after the first put: {:.0} requests/s ({:.0} files/s)",
            drained.as_secs_f64(),
            rate(stored, drained),
            rate(files, drained)
        );
    }
    Ok(true)
}
