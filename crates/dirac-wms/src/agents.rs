//! The WMS agents: plain async loops, safe with several replicas because
//! every change goes through the state machine in a transaction (a job two
//! replicas both consider is changed once; the second sees the new state).
//!
//! - StalledJobAgent: Running/Completing jobs without any update for
//!   `StalledTimeS` become Stalled; Stalled jobs whose pilot is gone fail at
//!   once, others after `FailedTimeS` (or are rescheduled at the sites listed
//!   in `StalledJobsToRescheduleSites`); Matched jobs whose pilot never
//!   started them are rescheduled after `MatchedTimeS`.
//! - JobCleaningAgent: final jobs become Deleted after their delay, Deleted
//!   jobs are removed in batches with their sandboxes unassigned, unused
//!   sandboxes are purged and empty task queues dropped.
//! - TaskQueues: the matcher index is rebuilt from TaskQueueDB.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dirac_core::time;
use dirac_proto::common::Filter;
use tokio::sync::watch;

use crate::Wms;
use crate::error::Result;
use crate::jobdb::Apply;
use crate::search::{Scope, build_where};
use crate::state::{JobStatus, Update};

/// Jobs one agent cycle handles per query.
const BATCH: u64 = 5000;

fn filter(parameter: &str, operator: &str, value: &str, values: &[&str]) -> Filter {
    Filter {
        parameter: parameter.into(),
        operator: operator.into(),
        value: value.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

async fn ids(wms: &Wms, filters: &[Filter]) -> Result<Vec<u64>> {
    let w = build_where(filters, Scope::All)?;
    Ok(wms
        .db
        .search(&w, "JobID ASC", BATCH, 0)
        .await?
        .into_iter()
        .map(|j| j.job_id)
        .collect())
}

fn update(status: JobStatus, minor: &str, source: &str) -> Update {
    Update {
        time: time::now(),
        status: Some(status),
        minor_status: Some(minor.to_string()),
        application_status: None,
        source: source.into(),
    }
}

/// The minor status of a job whose outputs wait for a failover request.
pub const PENDING_REQUESTS: &str = "Pending Requests";

/// Jobs waiting `Completed / Pending Requests` for more than
/// `older_than_s` seconds (for a sweep that finishes those whose requests
/// ended without telling them).
pub async fn jobs_pending_requests(wms: &Wms, older_than_s: u64) -> Result<Vec<u64>> {
    ids(
        wms,
        &[
            filter("Status", "eq", "Completed", &[]),
            filter("MinorStatus", "eq", PENDING_REQUESTS, &[]),
            filter("LastUpdateTime", "lt", &time::ago(older_than_s), &[]),
        ],
    )
    .await
}

/// A job's failover request has ended (DIRAC's `finalizeRequest`): a job
/// still `Completed / Pending Requests` becomes `Done / Requests Done`, or
/// `Failed / Requests Failed` when the request failed. Returns whether
/// the job changed (a job already moved on is left alone).
pub async fn requests_finished(wms: &Wms, job_id: u64, succeeded: bool) -> Result<bool> {
    let Some(job) = wms.db.jobs(&[job_id]).await?.into_iter().next() else {
        return Ok(false);
    };
    if job.status != "Completed" || job.minor_status != PENDING_REQUESTS {
        return Ok(false);
    }
    let (status, minor) = if succeeded {
        (JobStatus::Done, "Requests Done")
    } else {
        (JobStatus::Failed, "Requests Failed")
    };
    let updates = BTreeMap::from([(job_id, vec![update(status, minor, "RequestExecutingAgent")])]);
    let applied = wms.db.apply_updates(updates, Apply::Server).await?;
    Ok(matches!(applied.get(&job_id), Some(Ok(s)) if s.status == status))
}

/// One StalledJobAgent cycle; returns (stalled, failed, rescheduled).
pub async fn stalled_jobs_once(wms: &Wms) -> Result<(usize, usize, usize)> {
    let cfg = &wms.config.services.agents;
    let source = "StalledJobAgent";
    // Running or Completing without any update: Stalled.
    let silent = ids(
        wms,
        &[
            filter("Status", "in", "", &["Running", "Completing"]),
            filter("LastUpdateTime", "lt", &time::ago(cfg.stalled_time_s), &[]),
        ],
    )
    .await?;
    let stalled: BTreeMap<u64, Vec<Update>> = silent
        .iter()
        .map(|id| {
            (
                *id,
                vec![update(
                    JobStatus::Stalled,
                    "Job stalled: no heartbeat",
                    source,
                )],
            )
        })
        .collect();
    wms.db.apply_updates(stalled, Apply::Server).await?;

    // Stalled: fail (or reschedule) when the pilot is gone or time is up.
    let stalled_now = ids(wms, &[filter("Status", "eq", "Stalled", &[])]).await?;
    let pilots = wms.pilots.status_of_jobs(&stalled_now).await?;
    let too_long: std::collections::HashSet<u64> = ids(
        wms,
        &[
            filter("Status", "eq", "Stalled", &[]),
            filter("LastUpdateTime", "lt", &time::ago(cfg.failed_time_s), &[]),
        ],
    )
    .await?
    .into_iter()
    .collect();
    let jobs = wms.db.jobs(&stalled_now).await?;
    let mut fail = BTreeMap::new();
    let mut reschedule = Vec::new();
    for job in jobs {
        let pilot_gone = pilots
            .get(&job.job_id)
            .is_some_and(|s| crate::pilotdb::FINAL_PILOT_STATES.contains(&s.as_str()));
        if !pilot_gone && !too_long.contains(&job.job_id) {
            continue;
        }
        if cfg.stalled_jobs_to_reschedule_sites.contains(&job.site) {
            reschedule.push(job.job_id);
        } else {
            let minor = if pilot_gone {
                "Job stalled: pilot not running".to_string()
            } else {
                format!("Stalling for more than {} sec", cfg.failed_time_s)
            };
            fail.insert(job.job_id, vec![update(JobStatus::Failed, &minor, source)]);
        }
    }
    let failed = fail.len();
    let fail_ids: Vec<u64> = fail.keys().copied().collect();
    wms.db.apply_updates(fail, Apply::Server).await?;
    wms.db.queue_commands(&fail_ids, "Kill").await?;

    // Matched but never started: the pilot died after matching.
    let stuck = ids(
        wms,
        &[
            filter("Status", "eq", "Matched", &[]),
            filter("LastUpdateTime", "lt", &time::ago(cfg.matched_time_s), &[]),
        ],
    )
    .await?;
    reschedule.extend(stuck);
    if !reschedule.is_empty() {
        wms.db
            .reschedule(&reschedule, &wms.config.operations, false, source)
            .await?;
        wms.optimizer_wake.notify_one();
    }
    Ok((silent.len(), failed, reschedule.len()))
}

/// One JobCleaningAgent cycle; returns (marked deleted, removed, sandboxes purged).
pub async fn clean_jobs_once(wms: &Wms) -> Result<(usize, usize, usize)> {
    let cfg = &wms.config.services.agents;
    let source = "JobCleaningAgent";
    let mut marked = 0;
    for (status, days) in [
        ("Done", cfg.delete_done_after_days),
        ("Failed", cfg.delete_failed_after_days),
        ("Killed", cfg.delete_killed_after_days),
    ] {
        let old = ids(
            wms,
            &[
                filter("Status", "eq", status, &[]),
                filter("LastUpdateTime", "lt", &time::ago(days * 86_400), &[]),
            ],
        )
        .await?;
        marked += old.len();
        let updates = old
            .into_iter()
            .map(|id| (id, vec![update(JobStatus::Deleted, "Job deleted", source)]))
            .collect();
        wms.db.apply_updates(updates, Apply::Server).await?;
    }
    let gone = ids(
        wms,
        &[
            filter("Status", "eq", "Deleted", &[]),
            filter(
                "LastUpdateTime",
                "lt",
                &time::ago(cfg.remove_deleted_after_days * 86_400),
                &[],
            ),
        ],
    )
    .await?;
    wms.sandboxes.unassign_jobs(&gone).await?;
    wms.db.remove_jobs(&gone).await?;
    let grace = time::ago(wms.config.services.sandbox_store.unassigned_grace_days * 86_400);
    let unused = wms.sandboxes.unused(&grace, BATCH).await?;
    for (id, path) in &unused {
        if let Err(e) = wms.sandbox_backend.delete(path).await {
            tracing::warn!(error = %e, path = %path, "cannot delete sandbox");
            continue;
        }
        wms.sandboxes.delete(*id).await?;
    }
    wms.db.task_queues.delete_empty().await?;
    Ok((marked, gone.len(), unused.len()))
}

pub use dirac_core::agent::run_loop;

/// The agents `diracd agent NAME` runs on their own.
pub const AGENTS: &[&str] = &[
    "optimizer",
    "stalled-jobs",
    "job-cleaning",
    "task-queues",
    "pilot-status",
];

/// One PilotStatus cycle (DIRAC's PilotStatusAgent): pilots silent for
/// PilotStalledDays become Deleted, finished pilots are accounted once,
/// old accounted pilots are removed. Returns (deleted, accounted, cleared).
pub async fn pilot_status_once(wms: &Wms) -> Result<(u64, u64, u64)> {
    let a = &wms.config.services.agents;
    let before = time::ago(a.pilot_stalled_days.saturating_mul(86_400));
    let mut deleted = 0;
    for stamp in wms.pilots.stalled(&before, 500).await? {
        let reason = format!("no update for {} days", a.pilot_stalled_days);
        // A pilot that ended meanwhile keeps its own final state.
        if wms
            .pilots
            .set_status(&stamp, "Deleted", &reason)
            .await
            .is_ok()
        {
            deleted += 1;
        }
    }
    let mut accounted = 0;
    loop {
        let n = wms.pilots.account_finished(500).await?;
        accounted += n;
        if n < 500 {
            break;
        }
    }
    let cleared = wms
        .pilots
        .clear(
            &time::ago(a.clear_pilots_days.saturating_mul(86_400)),
            &time::ago(a.clear_aborted_pilots_days.saturating_mul(86_400)),
            500,
        )
        .await?;
    Ok((deleted, accounted, cleared))
}

/// One cycle of an agent (a Kubernetes CronJob's run): what it did.
pub async fn run_once(name: &str, wms: &Arc<Wms>) -> Result<String> {
    Ok(match name {
        "optimizer" => format!(
            "{} jobs checked",
            crate::optimizer::optimize_once(wms, 10_000).await?
        ),
        "stalled-jobs" => {
            let (stalled, failed, rescheduled) = stalled_jobs_once(wms).await?;
            format!("{stalled} stalled, {failed} failed, {rescheduled} rescheduled")
        }
        "job-cleaning" => {
            let (deleted, removed, sandboxes) = clean_jobs_once(wms).await?;
            format!("{deleted} deleted, {removed} removed, {sandboxes} sandboxes purged")
        }
        "task-queues" => format!(
            "{} jobs in the matcher index",
            crate::matching::resync(wms).await?
        ),
        "pilot-status" => {
            let (deleted, accounted, cleared) = pilot_status_once(wms).await?;
            format!("{deleted} pilots deleted, {accounted} accounted, {cleared} cleared")
        }
        other => {
            return Err(crate::WmsError::InvalidArgument(format!(
                "unknown agent '{other}'"
            )));
        }
    })
}

/// Start one agent by name (see [`AGENTS`]).
pub fn spawn(
    name: &str,
    wms: &Arc<Wms>,
    shutdown: &watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let every = Duration::from_secs(wms.config.services.agents.polling_time_s);
    let w = wms.clone();
    let shutdown = shutdown.clone();
    Some(match name {
        "optimizer" => tokio::spawn(crate::optimizer::run(w, shutdown)),
        "stalled-jobs" => tokio::spawn(run_loop("StalledJobAgent", every, shutdown, move || {
            let w = w.clone();
            async move {
                match stalled_jobs_once(&w).await {
                    Ok((0, 0, 0)) => {}
                    Ok((stalled, failed, rescheduled)) => {
                        tracing::info!(stalled, failed, rescheduled, "stalled jobs handled");
                    }
                    Err(e) => tracing::warn!(error = %e, "stalled job cycle failed"),
                }
            }
        })),
        "job-cleaning" => tokio::spawn(run_loop(
            "JobCleaningAgent",
            every * 10,
            shutdown,
            move || {
                let w = w.clone();
                async move {
                    match clean_jobs_once(&w).await {
                        Ok((0, 0, 0)) => {}
                        Ok((deleted, removed, sandboxes)) => {
                            tracing::info!(deleted, removed, sandboxes, "jobs cleaned")
                        }
                        Err(e) => tracing::warn!(error = %e, "cleaning cycle failed"),
                    }
                }
            },
        )),
        "task-queues" => tokio::spawn(run_loop(
            "TaskQueues",
            Duration::from_secs(30),
            shutdown,
            move || {
                let w = w.clone();
                async move {
                    match crate::matching::resync(&w).await {
                        Ok(n) => tracing::debug!(queued = n, "matcher index rebuilt"),
                        Err(e) => tracing::warn!(error = %e, "matcher index rebuild failed"),
                    }
                }
            },
        )),
        "pilot-status" => tokio::spawn(run_loop("PilotStatusAgent", every, shutdown, move || {
            let w = w.clone();
            async move {
                match pilot_status_once(&w).await {
                    Ok((0, 0, 0)) => {}
                    Ok((deleted, accounted, cleared)) => {
                        tracing::info!(deleted, accounted, cleared, "pilots handled");
                    }
                    Err(e) => tracing::warn!(error = %e, "pilot status cycle failed"),
                }
            }
        })),
        _ => return None,
    })
}

/// Start every WMS agent in this process.
pub fn spawn_all(
    wms: &Arc<Wms>,
    shutdown: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    AGENTS
        .iter()
        .filter_map(|name| spawn(name, wms, shutdown))
        .collect()
}
