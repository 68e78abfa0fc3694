//! The JobAgent loop: ask the Matcher for jobs while there are free cores,
//! start a wrapper per job, stop on drain, cycles, failed matches, time or
//! signal.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dirac_proto::wms::ResourceDescription;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::Code;

use crate::config::PilotConfig;
use crate::jobspec;
use crate::node::WorkerNode;
use crate::report::Reporter;
use crate::wrapper::{self, Outcome, WrapperContext};

/// Longest wait for one RequestJob call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the agent stopped asking for jobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    Drained,
    MaxCycles(u32),
    FailedMatches(u32),
    NoCpuTimeLeft,
    Signal,
    Refused(String),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Drained => write!(f, "drain file found"),
            StopReason::MaxCycles(n) => write!(f, "reached {n} cycles"),
            StopReason::FailedMatches(n) => write!(f, "{n} consecutive failed matches"),
            StopReason::NoCpuTimeLeft => write!(f, "no cpu time left"),
            StopReason::Signal => write!(f, "terminated by signal"),
            StopReason::Refused(why) => write!(f, "matcher refused the pilot: {why}"),
        }
    }
}

/// What the agent did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub matched: u32,
    pub done: u32,
    pub failed: u32,
    pub killed: u32,
    pub stop: StopReason,
}

/// The resource description of one request.
pub fn resource_description(
    cfg: &PilotConfig,
    node: &WorkerNode,
    free_cores: u32,
    cpu_time_left: i64,
) -> ResourceDescription {
    ResourceDescription {
        vo: cfg.vo.clone(),
        site: cfg.site.clone(),
        grid_ce: cfg.ce.clone(),
        platforms: vec![node.platform.clone()],
        cpu_time: cpu_time_left,
        number_of_processors: i64::from(free_cores),
        max_ram_mb: i64::try_from(node.max_ram_mb).unwrap_or(i64::MAX),
        tags: cfg.tags.clone(),
        required_tags: cfg.required_tags.clone(),
        pilot_stamp: cfg.stamp.clone(),
        pilot_benchmark: node.benchmark,
        ..ResourceDescription::default()
    }
}

/// Sleep after a failed match: `polling × (failed + 1)`, at most `10 × polling`;
/// `failed` counts the failures before this one.
pub fn match_backoff(polling: Duration, failed: u32) -> Duration {
    polling.saturating_mul(failed.saturating_add(1).min(10))
}

/// CPU seconds left after `elapsed`.
pub fn cpu_time_left(initial: i64, elapsed: Duration) -> i64 {
    initial.saturating_sub(i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
}

/// Cores a job takes: what it asks for, at least 1, at most what is free.
pub fn cores_for(asked: u32, free: u32) -> u32 {
    asked.clamp(1, free.max(1))
}

/// Resolves once the pilot is told to stop (never when the sender is gone).
pub async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|down| *down).await.is_err() {
        std::future::pending::<()>().await;
    }
}

type Joined = Result<(tokio::task::Id, (u64, Outcome)), tokio::task::JoinError>;

/// Finished wrappers, and the cores each running one holds.
#[derive(Default)]
struct Slots {
    cores: HashMap<tokio::task::Id, u32>,
    used: u32,
    done: u32,
    failed: u32,
    killed: u32,
}

impl Slots {
    fn take(&mut self, id: tokio::task::Id, cores: u32) {
        self.cores.insert(id, cores);
        self.used += cores;
    }

    fn release(&mut self, joined: Joined) {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let cores = self.cores.remove(&id).unwrap_or(0);
        self.used = self.used.saturating_sub(cores);
        match joined {
            Ok((_, (job_id, outcome))) => {
                tracing::info!(job_id, outcome = ?outcome, cores, "job wrapper finished");
                match outcome {
                    Outcome::Done => self.done += 1,
                    Outcome::Failed => self.failed += 1,
                    Outcome::Killed => self.killed += 1,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, cores, "job wrapper task died");
                self.failed += 1;
            }
        }
    }
}

/// Runs the loop until a stop condition, then waits for the running jobs.
pub async fn run(
    cfg: &PilotConfig,
    node: &WorkerNode,
    ctx: Arc<WrapperContext>,
    reporter: &Reporter,
    mut shutdown: watch::Receiver<bool>,
) -> Summary {
    let started = Instant::now();
    let mut wrappers: JoinSet<(u64, Outcome)> = JoinSet::new();
    let mut slots = Slots::default();
    let mut cycles: u32 = 0;
    let mut failed_matches: u32 = 0;
    let mut matched: u32 = 0;

    let stop = loop {
        while let Some(joined) = wrappers.try_join_next_with_id() {
            slots.release(joined);
        }
        if *shutdown.borrow() {
            break StopReason::Signal;
        }
        if cfg.drain_file.exists() {
            tracing::info!(file = %cfg.drain_file.display(), "drain file found, stopping");
            break StopReason::Drained;
        }
        if cycles >= cfg.max_cycles {
            break StopReason::MaxCycles(cycles);
        }
        let left = cpu_time_left(cfg.cpu_time, started.elapsed());
        if left <= 0 {
            break StopReason::NoCpuTimeLeft;
        }
        let free = node.cores.saturating_sub(slots.used);
        if free == 0 {
            tokio::select! {
                Some(joined) = wrappers.join_next_with_id() => slots.release(joined),
                () = shutdown_requested(&mut shutdown) => {}
            }
            continue;
        }

        cycles += 1;
        let resource = resource_description(cfg, node, free, left);
        let reply = tokio::time::timeout(REQUEST_TIMEOUT, reporter.request_job(resource)).await;
        match reply {
            Ok(Ok(reply)) if reply.matched => {
                failed_matches = 0;
                matched += 1;
                let cores = cores_for(jobspec::processors_of(&reply.jdl), free);
                let job_id = reply.job_id;
                tracing::info!(
                    job_id,
                    cores,
                    free_cores = free - cores,
                    cycle = cycles,
                    "matched a job"
                );
                let ctx = ctx.clone();
                let handle = wrappers.spawn(async move {
                    let outcome = wrapper::run_job(ctx, job_id, reply.jdl, reply.job_token).await;
                    (job_id, outcome)
                });
                slots.take(handle.id(), cores);
                continue;
            }
            Ok(Ok(reply)) => {
                tracing::info!(
                    reason = reply.no_match_reason,
                    cycle = cycles,
                    "no job matched"
                );
            }
            Ok(Err(status)) => {
                if matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied
                ) {
                    tracing::error!(code = ?status.code(), error = status.message(), "matcher refused the pilot");
                    break StopReason::Refused(status.message().to_owned());
                }
                tracing::warn!(code = ?status.code(), error = status.message(), cycle = cycles, "job request failed");
            }
            Err(_) => tracing::warn!(cycle = cycles, "job request timed out"),
        }
        failed_matches += 1;
        if failed_matches >= cfg.stop_after_failed_matches {
            break StopReason::FailedMatches(failed_matches);
        }
        let wait = match_backoff(cfg.polling_time, failed_matches - 1);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown_requested(&mut shutdown) => {}
        }
    };

    tracing::info!(reason = %stop, running = wrappers.len(), "job agent stopped matching");
    while let Some(joined) = wrappers.join_next_with_id().await {
        slots.release(joined);
    }
    Summary {
        matched,
        done: slots.done,
        failed: slots.failed,
        killed: slots.killed,
        stop,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn cfg() -> PilotConfig {
        PilotConfig {
            url: "http://x:1".to_owned(),
            token: "t".to_owned(),
            ca_cert: None,
            vo: "vo".to_owned(),
            site: "DIRAC.Test.org".to_owned(),
            ce: "ce.test.org".to_owned(),
            queue: "q".to_owned(),
            stamp: "stamp1".to_owned(),
            cores: None,
            max_ram_mb: None,
            cpu_time: 1000,
            tags: vec!["GPU".to_owned()],
            required_tags: vec!["Special".to_owned()],
            platform: None,
            work_dir: PathBuf::from("w"),
            max_cycles: 10,
            stop_after_failed_matches: 3,
            polling_time: Duration::from_secs(2),
            heartbeat: Duration::from_secs(1),
            drain_file: PathBuf::from("/nonexistent"),
            keep_job_dirs: false,
            remote: None,
        }
    }

    fn node() -> WorkerNode {
        WorkerNode {
            cores: 8,
            max_ram_mb: 16_000,
            free_disk_mb: 100_000,
            platform: "Linux_x86_64_glibc-2.36".to_owned(),
            benchmark: 10.5,
        }
    }

    #[test]
    fn description() {
        let rd = resource_description(&cfg(), &node(), 3, 900);
        assert_eq!(rd.vo, "vo");
        assert_eq!(rd.site, "DIRAC.Test.org");
        assert_eq!(rd.grid_ce, "ce.test.org");
        assert_eq!(rd.platforms, ["Linux_x86_64_glibc-2.36"]);
        assert_eq!(rd.cpu_time, 900);
        assert_eq!(rd.number_of_processors, 3);
        assert_eq!(rd.max_ram_mb, 16_000);
        assert_eq!(rd.tags, ["GPU"]);
        assert_eq!(rd.required_tags, ["Special"]);
        assert_eq!(rd.pilot_stamp, "stamp1");
        assert_eq!(rd.pilot_benchmark, 10.5);
        assert!(rd.owner.is_empty() && !rd.whole_node);
    }

    #[test]
    fn backoff_grows_and_caps() {
        let p = Duration::from_millis(200);
        let got: Vec<u64> = [0, 1, 2, 8, 9, 50, u32::MAX]
            .iter()
            .map(|&f| match_backoff(p, f).as_millis() as u64)
            .collect();
        assert_eq!(got, [200, 400, 600, 1800, 2000, 2000, 2000]);
    }

    #[test]
    fn time_and_cores() {
        assert_eq!(cpu_time_left(1000, Duration::from_secs(30)), 970);
        assert_eq!(cpu_time_left(10, Duration::from_secs(30)), -20);
        assert_eq!(cores_for(4, 8), 4);
        assert_eq!(cores_for(0, 8), 1);
        assert_eq!(cores_for(16, 8), 8);
        assert_eq!(cores_for(2, 0), 1);
    }

    #[test]
    fn stop_reasons_read_well() {
        assert_eq!(
            StopReason::FailedMatches(10).to_string(),
            "10 consecutive failed matches"
        );
        assert_eq!(StopReason::Drained.to_string(), "drain file found");
    }
}
