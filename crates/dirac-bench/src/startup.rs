//! `dirac-bench startup`: how long `diracd serve SUBSYSTEM` takes from
//! exec to its gRPC health check answering SERVING (what a Kubernetes
//! readiness probe waits for), and its resident memory once idle. The
//! configuration (database URLs, keys directory) comes from `--config` and
//! the `DIRAC__…` environment, as in a pod.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug, Args)]
pub struct StartupArgs {
    /// wms, dms or auth.
    #[arg(long, default_value = "wms")]
    subsystem: String,
    /// The diracd binary (default: beside dirac-bench).
    #[arg(long)]
    diracd: Option<PathBuf>,
    /// diracd's configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Starts to time.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    runs: u64,
    /// Seconds the last start stays idle before its memory is read.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    #[arg(long)]
    json: bool,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Resident set size of `pid` in KiB (Linux).
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("read /proc (Linux only)")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

async fn serving(port: u16) -> bool {
    let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .map(|e| e.connect_timeout(Duration::from_millis(200)))
    else {
        return false;
    };
    let Ok(channel) = channel.connect().await else {
        return false;
    };
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    answer.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

pub async fn run(args: StartupArgs) -> anyhow::Result<bool> {
    let diracd = match args.diracd {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("diracd"),
    };
    let data = std::env::temp_dir().join(format!("dirac-bench-startup-{}", std::process::id()));
    let mut times = Vec::new();
    let mut rss = 0;
    for run in 0..args.runs {
        let port = free_port()?;
        let mut cmd = Command::new(&diracd);
        cmd.args(["serve", &args.subsystem, "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(c) = &args.config {
            cmd.arg("--config").arg(c);
        }
        if args.subsystem == "auth" {
            cmd.arg("--auth-listen")
                .arg(format!("127.0.0.1:{}", free_port()?));
        }
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {}", diracd.display()))?;
        let ready = loop {
            if serving(port).await {
                break started.elapsed();
            }
            if let Some(status) = child.try_wait()? {
                bail!("diracd serve {} exited with {status}", args.subsystem);
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                bail!("diracd serve {} not SERVING after 60 s", args.subsystem);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        times.push(ready);
        if run + 1 == args.runs {
            tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
            rss = rss_kib(child.id())?;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&data);
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    if args.json {
        println!(
            "{}",
            json!({
                "subsystem": args.subsystem,
                "runs": args.runs,
                "ready_ms_median": ms(median),
                "ready_ms_max": ms(max),
                "idle_rss_mib": rss as f64 / 1024.0,
            })
        );
    } else {
        println!(
            "diracd serve {}: SERVING after {:.0} ms (median of {}, max {:.0} ms); idle RSS {:.1} MiB after {} s",
            args.subsystem,
            ms(median),
            args.runs,
            ms(max),
            rss as f64 / 1024.0,
            args.idle_secs
        );
    }
    Ok(true)
}
