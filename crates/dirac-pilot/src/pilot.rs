//! The pilot from start to end: check the node, register, run the job
//! agent, report the pilot's end and log.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use dirac_client::{Client, ClientConfig};
use dirac_proto::wms::Pilot;
use tokio::sync::watch;

use crate::agent::{self, Summary};
use crate::config::PilotConfig;
use crate::logbuf::LogBuffer;
use crate::node::{self, WorkerNode};
use crate::report::{Reporter, RetryPolicy};
use crate::wrapper::WrapperContext;

/// How long the benchmark runs.
const BENCHMARK_WINDOW: Duration = Duration::from_millis(300);

/// The pilot's final state and reason.
pub fn final_pilot_status(summary: &Summary) -> (&'static str, String) {
    if summary.matched == 0 {
        ("Empty", format!("matched no job: {}", summary.stop))
    } else {
        ("Done", format!("ran {} jobs", summary.matched))
    }
}

/// CheckWorkerNode: measures the node and refuses absurd values.
async fn check_worker_node(cfg: &PilotConfig) -> anyhow::Result<WorkerNode> {
    let free_disk_mb = node::free_disk_mb(&cfg.work_dir)
        .with_context(|| format!("cannot stat {}", cfg.work_dir.display()))?;
    let max_ram_mb = match cfg.max_ram_mb {
        Some(mb) => mb,
        None => node::detect_ram_mb().context("cannot read MemTotal from /proc/meminfo")?,
    };
    let platform = match &cfg.platform {
        Some(p) => p.clone(),
        None => tokio::task::spawn_blocking(node::detect_platform)
            .await
            .context("platform detection stopped")?,
    };
    let benchmark = tokio::task::spawn_blocking(|| node::benchmark(BENCHMARK_WINDOW))
        .await
        .context("benchmark stopped")?;
    let node = WorkerNode {
        cores: cfg.cores.unwrap_or_else(node::detect_cores),
        max_ram_mb,
        free_disk_mb,
        platform,
        benchmark,
    };
    if let Err(why) = node::check_sane(&node) {
        bail!("worker node check failed: {why}");
    }
    tracing::info!(
        cores = node.cores,
        max_ram_mb = node.max_ram_mb,
        free_disk_mb = node.free_disk_mb,
        platform = node.platform,
        benchmark = node.benchmark,
        "worker node checked"
    );
    Ok(node)
}

/// Turns SIGTERM and SIGINT into the shutdown signal.
fn watch_signals(tx: watch::Sender<bool>) {
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            tracing::warn!("cannot listen for sigterm");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::warn!(signal = "SIGTERM", "pilot terminating"),
            _ = tokio::signal::ctrl_c() => tracing::warn!(signal = "SIGINT", "pilot terminating"),
        }
        let _ = tx.send(true);
    });
}

/// Runs the whole pilot.
pub async fn run(cfg: PilotConfig, log: LogBuffer) -> anyhow::Result<Summary> {
    tokio::fs::create_dir_all(&cfg.work_dir)
        .await
        .with_context(|| format!("cannot create work dir {}", cfg.work_dir.display()))?;
    let work_dir = tokio::fs::canonicalize(&cfg.work_dir)
        .await
        .with_context(|| format!("cannot resolve work dir {}", cfg.work_dir.display()))?;
    tracing::info!(stamp = cfg.stamp, site = cfg.site, ce = cfg.ce, queue = cfg.queue, work_dir = %work_dir.display(), "pilot starting");

    let node = check_worker_node(&cfg).await?;

    let client = Client::connect(&ClientConfig {
        url: cfg.url.clone(),
        token: Some(cfg.token.clone()),
        ca_cert: cfg.ca_cert.clone(),
        auth_url: None,
    })
    .context("cannot set up the server connection")?;
    let reporter = Reporter::new(client, RetryPolicy::default());

    reporter
        .register_pilot(Pilot {
            stamp: cfg.stamp.clone(),
            reference: cfg.stamp.clone(),
            vo: cfg.vo.clone(),
            site: cfg.site.clone(),
            ce: cfg.ce.clone(),
            queue: cfg.queue.clone(),
            grid_type: "Local".to_owned(),
            benchmark: node.benchmark,
            ..Pilot::default()
        })
        .await
        .context("cannot register the pilot")?;
    reporter
        .set_pilot_status(&cfg.stamp, "Running", "")
        .await
        .context("cannot set the pilot Running")?;
    tracing::info!(stamp = cfg.stamp, "pilot registered and running");

    let (tx, rx) = watch::channel(false);
    watch_signals(tx);
    let ctx = Arc::new(WrapperContext {
        reporter: reporter.clone(),
        stamp: cfg.stamp.clone(),
        site: cfg.site.clone(),
        ce: cfg.ce.clone(),
        queue: cfg.queue.clone(),
        benchmark: node.benchmark,
        work_dir,
        heartbeat: cfg.heartbeat,
        keep_job_dirs: cfg.keep_job_dirs,
        path_env: std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        remote: cfg.remote.clone(),
        shutdown: rx.clone(),
    });

    let summary = agent::run(&cfg, &node, ctx, &reporter, rx).await;
    let (status, reason) = final_pilot_status(&summary);
    tracing::info!(
        status,
        reason,
        done = summary.done,
        failed = summary.failed,
        killed = summary.killed,
        "pilot finished"
    );
    if let Err(e) = reporter.set_pilot_status(&cfg.stamp, status, &reason).await {
        tracing::warn!(code = ?e.code(), error = e.message(), "cannot set the final pilot status");
    }
    if let Err(e) = reporter.append_pilot_log(&cfg.stamp, log.text()).await {
        tracing::warn!(code = ?e.code(), error = e.message(), "cannot upload the pilot log");
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::StopReason;

    #[test]
    fn final_states() {
        let mut s = Summary {
            matched: 0,
            done: 0,
            failed: 0,
            killed: 0,
            stop: StopReason::FailedMatches(10),
        };
        assert_eq!(
            final_pilot_status(&s),
            (
                "Empty",
                "matched no job: 10 consecutive failed matches".to_owned()
            )
        );
        s.matched = 3;
        assert_eq!(final_pilot_status(&s), ("Done", "ran 3 jobs".to_owned()));
    }
}
