//! `dirac-bench catalog`: the file catalog under load, through gRPC.
//!
//! 1. bulk registration of `--files` files (one replica each) spread over
//!    `--dirs` directories of a production-like tree, `--batch` per call;
//! 2. replica lookup of every file, `--batch` LFNs per call;
//! 3. a streamed listing of the largest directory (time to the first
//!    entry, entries/s);
//! 4. ten directory metadata fields on every leaf directory, then a
//!    query with `and`, `or` and parentheses over all files.
//!
//! Requests are built before the clock starts.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use dirac_client::Client;
use dirac_proto::dms::{
    AddFilesRequest, FileInfo, FindRequest, GetFilesRequest, ListRequest, MetaValue, MetadataField,
    Replica, SetMetadataRequest,
};
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// Files to register.
    #[arg(long, default_value_t = 100_000)]
    files: u64,
    /// Leaf directories the files are spread over.
    #[arg(long, default_value_t = 100)]
    dirs: u64,
    /// Files (or LFNs) per call.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Calls in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Storage element of the replicas (must be configured).
    #[arg(long, default_value = "LOCAL-SE")]
    se: String,
    /// Root of the tree (must be writable by the caller).
    #[arg(long)]
    root: String,
    /// Skip the metadata part.
    #[arg(long)]
    no_metadata: bool,
    /// Client config file.
    #[arg(long, value_name = "PATH")]
    config: Option<std::path::PathBuf>,
    /// Server URL.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Bearer token.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

/// Run the benchmark and print its report as JSON.
pub async fn main(a: CatalogArgs) -> anyhow::Result<bool> {
    let config = dirac_client::ClientConfig::resolve(
        a.config.as_deref(),
        &dirac_client::ProcessEnv,
        a.url.clone(),
        a.token.clone(),
    )?;
    let client = Client::connect_now(&config).await?;
    let report = run(&client, &a).await?;
    println!("{report:#}");
    Ok(true)
}

fn lfn(root: &str, dirs: u64, i: u64) -> String {
    let d = i % dirs;
    format!("{root}/run{:04}/sub{:03}/f{i:09}.root", d / 100, d % 100)
}

fn dir_of(root: &str, d: u64) -> String {
    format!("{root}/run{:04}/sub{:03}", d / 100, d % 100)
}

struct Phase {
    items: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Phase {
    fn json(&self, unit: &str) -> serde_json::Value {
        let secs = self.elapsed.as_secs_f64();
        json!({
            unit: self.items,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "per_second": (self.items as f64 / secs.max(1e-9)).round(),
            "call_p50_ms": self.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
            "call_p99_ms": self.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        })
    }
}

async fn bulk<T, F, Fut>(requests: Vec<T>, concurrency: usize, call: F) -> anyhow::Result<Phase>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let start = Instant::now();
    let mut results = futures::stream::iter(requests)
        .map(|r| {
            let f = call(r);
            async move {
                let sent = Instant::now();
                (sent.elapsed(), f.await, sent)
            }
        })
        .buffer_unordered(concurrency);
    let mut items = 0;
    while let Some((_, result, sent)) = results.next().await {
        items += result?;
        latency_us.record(
            u64::try_from(sent.elapsed().as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
        )?;
    }
    Ok(Phase {
        items,
        elapsed: start.elapsed(),
        latency_us,
    })
}

pub async fn run(client: &Client, a: &CatalogArgs) -> anyhow::Result<serde_json::Value> {
    let root = a.root.trim_end_matches('/').to_string();
    let dirs = a.dirs.max(1);
    // 1. registration
    let adds: Vec<AddFilesRequest> = (0..a.files.div_ceil(a.batch))
        .map(|b| AddFilesRequest {
            files: (b * a.batch..a.files.min((b + 1) * a.batch))
                .map(|i| FileInfo {
                    lfn: lfn(&root, dirs, i),
                    size: 1000 + i % 1000,
                    checksum: format!("{:08x}", i),
                    replicas: vec![Replica {
                        se: a.se.clone(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        })
        .collect();
    let stub = client.file_catalog();
    let register = bulk(adds, a.concurrency, |r| {
        let mut stub = stub.clone();
        async move {
            let n = r.files.len() as u64;
            let out = stub.add_files(r).await.context("AddFiles")?.into_inner();
            if let Some((k, e)) = out.failed.iter().next() {
                bail!("{k}: {}", e.message);
            }
            Ok(n)
        }
    })
    .await?;
    // 2. replica lookup
    let gets: Vec<GetFilesRequest> = (0..a.files.div_ceil(a.batch))
        .map(|b| GetFilesRequest {
            lfns: (b * a.batch..a.files.min((b + 1) * a.batch))
                .map(|i| lfn(&root, dirs, i))
                .collect(),
            all_status: false,
        })
        .collect();
    let lookup = bulk(gets, a.concurrency, |r| {
        let mut stub = stub.clone();
        async move {
            let out = stub.get_files(r).await.context("GetFiles")?.into_inner();
            if !out.failed.is_empty() {
                bail!("{} lookups failed", out.failed.len());
            }
            Ok(out.files.len() as u64)
        }
    })
    .await?;
    // 3. listing of the largest directory
    let start = Instant::now();
    let mut stream = stub
        .clone()
        .list_directory(ListRequest {
            path: dir_of(&root, 0),
            recursive: false,
            with_replicas: false,
        })
        .await?
        .into_inner();
    let mut first = None;
    let mut listed = 0u64;
    while let Some(batch) = stream.message().await? {
        first.get_or_insert_with(|| start.elapsed());
        listed += batch.entries.len() as u64;
    }
    let list_secs = start.elapsed().as_secs_f64();
    // A recursive dump of the whole tree.
    let start = Instant::now();
    let mut stream = stub
        .clone()
        .list_directory(ListRequest {
            path: root.clone(),
            recursive: true,
            with_replicas: false,
        })
        .await?
        .into_inner();
    let mut dumped = 0u64;
    let mut dump_first = None;
    while let Some(batch) = stream.message().await? {
        dump_first.get_or_insert_with(|| start.elapsed());
        dumped += batch.entries.len() as u64;
    }
    let dump_secs = start.elapsed().as_secs_f64();
    let mut report = json!({
        "files": a.files,
        "directories": dirs,
        "register": register.json("files"),
        "lookup": lookup.json("lfns"),
        "list_directory": {
            "entries": listed,
            "first_entry_ms": first.map(|d| d.as_secs_f64() * 1000.0),
            "per_second": (listed as f64 / list_secs.max(1e-9)).round(),
        },
        "dump_tree": {
            "entries": dumped,
            "first_entry_ms": dump_first.map(|d| d.as_secs_f64() * 1000.0),
            "per_second": (dumped as f64 / dump_secs.max(1e-9)).round(),
        },
    });
    if a.no_metadata {
        return Ok(report);
    }
    // 4. metadata: ten fields on every leaf directory, then a query.
    let mut meta = stub.clone();
    for f in 0..10 {
        let field = MetadataField {
            name: format!("bf{f}"),
            r#type: if f == 0 {
                "float".into()
            } else if f == 1 {
                "string".into()
            } else {
                "int".into()
            },
            scope: "directory".into(),
        };
        if let Err(s) = meta.add_metadata_field(field).await
            && s.code() != tonic::Code::AlreadyExists
        {
            bail!("AddMetadataField: {}", s.message());
        }
    }
    let particles = ["electron", "photon", "muon", "pion"];
    let sets: Vec<SetMetadataRequest> = (0..dirs)
        .map(|d| SetMetadataRequest {
            path: dir_of(&root, d),
            values: (0..10)
                .map(|f| {
                    let v = match f {
                        0 => dirac_proto::dms::meta_value::Value::Float((d % 100) as f64),
                        1 => dirac_proto::dms::meta_value::Value::String(
                            particles[(d % 4) as usize].into(),
                        ),
                        _ => dirac_proto::dms::meta_value::Value::Int(((d * (f + 1)) % 50) as i64),
                    };
                    (format!("bf{f}"), MetaValue { value: Some(v) })
                })
                .collect(),
        })
        .collect();
    let tagging = bulk(sets, a.concurrency, |r| {
        let mut stub = stub.clone();
        async move {
            stub.set_metadata(r).await.context("SetMetadata")?;
            Ok(1)
        }
    })
    .await?;
    // A selective query first (1 % of the directories), then a broad one.
    let selective = "bf0=42 and (bf1=muon or bf1=pion)";
    let start = Instant::now();
    let mut stream = stub
        .clone()
        .find_files(FindRequest {
            path: root.clone(),
            query: selective.into(),
        })
        .await?
        .into_inner();
    let mut selected = 0u64;
    while let Some(b) = stream.message().await? {
        selected += b.lfns.len() as u64;
    }
    let selective_secs = start.elapsed().as_secs_f64();
    let query = "bf0>10 and (bf1=electron or bf1=photon) and bf2<40";
    let start = Instant::now();
    let mut stream = stub
        .clone()
        .find_files(FindRequest {
            path: root.clone(),
            query: query.into(),
        })
        .await?
        .into_inner();
    let mut found = 0u64;
    let mut found_first = None;
    while let Some(b) = stream.message().await? {
        found_first.get_or_insert_with(|| start.elapsed());
        found += b.lfns.len() as u64;
    }
    let query_secs = start.elapsed().as_secs_f64();
    report["metadata"] = json!({
        "directories_tagged": tagging.items,
        "tag_seconds": tagging.elapsed.as_secs_f64(),
        "query": query,
        "matched_files": found,
        "first_match_ms": found_first.map(|d| d.as_secs_f64() * 1000.0),
        "query_seconds": query_secs,
        "selective_query": selective,
        "selective_matched_files": selected,
        "selective_query_seconds": selective_secs,
    });
    Ok(report)
}
