//! The first optimizer step (DIRAC's JobSanity executor) as an agent: it
//! claims Received jobs in batches under a lease (so several replicas never
//! take the same job), checks them against the current configuration, and
//! moves them to Waiting — or to Failed with the reason. Woken at once by
//! submissions, and every few seconds to pick up rescheduled jobs whose delay
//! has passed.

use std::sync::Arc;
use std::time::Duration;

use dirac_core::config::DiracConfig;
use tokio::sync::watch;
use tracing::Instrument as _;

use crate::Wms;
use crate::error::Result;
use crate::jobdb::{Claimed, Verdict};

/// Jobs claimed per round.
pub const BATCH: u64 = 2000;
/// A claim older than this is taken over by another optimizer.
pub const STALE_CLAIM_S: u64 = 300;
const IDLE_POLL: Duration = Duration::from_secs(5);
const RELEASE_EVERY: Duration = Duration::from_secs(60);

/// JobSanity: is this job still acceptable under the current configuration?
pub fn sanity(job: &Claimed, config: &DiracConfig) -> Verdict {
    let Some(vo) = config.registry.vos.get(&job.vo) else {
        return Verdict::illegal(format!("VO '{}' is not registered", job.vo));
    };
    match vo.users.get(&job.owner) {
        None => {
            return Verdict::illegal(format!(
                "user '{}' is not registered in VO '{}'",
                job.owner, job.vo
            ));
        }
        Some(u) if u.suspended => {
            return Verdict::illegal(format!("user '{}' is suspended", job.owner));
        }
        Some(_) => {}
    }
    match vo.groups.get(&job.owner_group) {
        Some(g) if g.users.contains(&job.owner) => {}
        _ => {
            return Verdict::illegal(format!(
                "user '{}' is not in group '{}'",
                job.owner, job.owner_group
            ));
        }
    }
    let ad = match dirac_jdl::ClassAd::parse(&job.jdl) {
        Ok(ad) => ad,
        Err(e) => return Verdict::illegal(format!("JDL: {e}")),
    };
    let policy = config.operations.job_description.jdl_policy();
    let desc = match dirac_jdl::validate(&ad, &policy, &job.vo) {
        Ok(d) => d,
        Err(e) => return Verdict::illegal(e.to_string()),
    };
    for entry in &desc.input_sandbox {
        if let Some(rest) = entry.strip_prefix("SB:") {
            match rest.split_once('|') {
                Some((se, path)) if !se.is_empty() && !path.is_empty() => {}
                _ => {
                    return Verdict::illegal(format!(
                        "InputSandbox: '{entry}' is not SB:<SE>|<path>"
                    ));
                }
            }
        }
    }
    // JobScheduling: a job restricted to sites must have a configured one
    // left after its banned sites.
    if !desc.sites.is_empty() && !config.resources.sites.is_empty() {
        let candidates: Vec<&String> = desc
            .sites
            .iter()
            .filter(|s| config.resources.sites.contains_key(*s) && !desc.banned_sites.contains(s))
            .collect();
        if candidates.is_empty() {
            return Verdict::Failed {
                minor: crate::jobdb::NO_CANDIDATE_SITES,
                reason: format!(
                    "No candidate sites available: none of {} is a configured site",
                    desc.sites.join(", ")
                ),
            };
        }
    }
    Verdict::Waiting(Box::new(crate::taskqueuedb::key_for(
        &desc,
        &job.owner,
        &job.owner_group,
        &job.vo,
        dirac_matcher::DEFAULT_CPU_SEGMENTS,
    )))
}

/// One round: claim, check, record. Returns how many jobs were handled.
pub async fn optimize_once(wms: &Wms, limit: u64) -> Result<usize> {
    let delays = &wms.config.operations.job_scheduling.reschedule_delays;
    let claim_time = dirac_core::time::now();
    let (lease, claimed) = wms.db.claim_received(limit, delays).await?;
    if claimed.is_empty() {
        return Ok(0);
    }
    let mut verdicts: Vec<(Claimed, Verdict)> = claimed
        .into_iter()
        .map(|c| {
            let v = sanity(&c, &wms.config);
            (c, v)
        })
        .collect();
    assign_input_sandboxes(wms, &mut verdicts).await?;
    if let Err(e) = crate::inputdata::resolve(wms, &mut verdicts).await {
        // The catalog cannot answer: the jobs stay claimed and are taken
        // again when the claim goes stale.
        tracing::warn!(error = %e, "input data lookup failed; jobs retried later");
        return Ok(0);
    }
    let failed = verdicts
        .iter()
        .filter(|(_, v)| matches!(v, Verdict::Failed { .. }))
        .count();
    let queued = wms
        .db
        .finish_checking(&lease, &claim_time, &verdicts)
        .await?;
    wms.matcher.enqueue(&queued);
    tracing::info!(jobs = verdicts.len(), failed, "jobs checked");
    Ok(verdicts.len())
}

/// JobSanity's sandbox step: every `SB:` input of a job must be a stored
/// sandbox of its owner's VO (and owner, or group with JobSharing); it is
/// then assigned to the job as Input. A missing one fails the job.
async fn assign_input_sandboxes(wms: &Wms, verdicts: &mut [(Claimed, Verdict)]) -> Result<()> {
    for (job, verdict) in verdicts.iter_mut() {
        if !matches!(verdict, Verdict::Waiting(_)) {
            continue;
        }
        let Ok(ad) = dirac_jdl::ClassAd::parse(&job.jdl) else {
            continue;
        };
        let refs: Vec<String> = ad
            .get("InputSandbox")
            .map(dirac_jdl::Value::to_strings)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.starts_with("SB:"))
            .collect();
        if refs.is_empty() {
            continue;
        }
        let sharing = wms
            .config
            .registry
            .vos
            .get(&job.vo)
            .and_then(|v| v.groups.get(&job.owner_group))
            .is_some_and(|g| g.properties.iter().any(|p| p == "JobSharing"));
        let mut ids = Vec::with_capacity(refs.len());
        for pfn in &refs {
            match wms.sandboxes.find(pfn).await? {
                Some(row)
                    if row.vo == job.vo
                        && (row.owner == job.owner
                            || (sharing && row.owner_group == job.owner_group)) =>
                {
                    ids.push(row.id);
                }
                Some(_) => {
                    *verdict =
                        Verdict::illegal(format!("InputSandbox: {pfn} belongs to another user"));
                    break;
                }
                None => {
                    *verdict = Verdict::illegal(format!("InputSandbox: no sandbox {pfn}"));
                    break;
                }
            }
        }
        if matches!(verdict, Verdict::Waiting(_)) {
            wms.sandboxes.assign(job.job_id, "Input", &ids).await?;
        }
    }
    Ok(())
}

/// Run until `shutdown` turns true.
pub async fn run(wms: Arc<Wms>, mut shutdown: watch::Receiver<bool>) {
    let span = tracing::info_span!("agent", component = "Optimizer");
    async move {
        let mut last_release: Option<tokio::time::Instant> = None;
        loop {
            if last_release.is_none_or(|t| t.elapsed() >= RELEASE_EVERY) {
                last_release = Some(tokio::time::Instant::now());
                match wms.db.release_stale_claims(STALE_CLAIM_S).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(jobs = n, "released stale optimizer claims"),
                    Err(e) => tracing::warn!(error = %e, "releasing stale claims failed"),
                }
            }
            loop {
                match optimize_once(&wms, BATCH).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "optimizer round failed");
                        break;
                    }
                }
                if *shutdown.borrow() {
                    return;
                }
            }
            tokio::select! {
                () = wms.optimizer_wake.notified() => {}
                () = tokio::time::sleep(IDLE_POLL) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
    .instrument(span)
    .await;
}
