//! The SiteDirector: each cycle, for every queue it serves, submit as many
//! pilots as there are waiting jobs this queue could run, within the queue's
//! slots, the per-cycle maximum and a ramp-up limit ([`plan`]); a queue whose
//! CE fails or times out is skipped for a while and the others go on. Every
//! few cycles it asks the CEs for their pilots' states in bulk.
//!
//! The WMS side (demand, PilotAgentsDB, pilot secrets) is reached through
//! [`Registry`], which `diracd` implements in-process; the CEs are
//! [`dirac_ce::ComputingElement`]s built from `Resources` ([`queues`]).

pub mod plan;
pub mod queues;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dirac_ce::{CeError, ComputingElement, PilotJob, PilotState};
use dirac_matcher::ResourceDescription;
use futures::StreamExt as _;
use plan::{Knobs, Limits, Observed, QueueMemory};

/// A pilot of PilotAgentsDB not in a final state.
#[derive(Debug, Clone)]
pub struct ActivePilot {
    pub stamp: String,
    pub reference: String,
    pub status: String,
    /// RFC 3339, as PilotAgentsDB stores it.
    pub last_update: String,
}

/// A pilot to record after submission.
#[derive(Debug, Clone)]
pub struct NewPilot {
    pub stamp: String,
    pub reference: String,
    pub vo: String,
    pub site: String,
    pub ce: String,
    pub queue: String,
    pub grid_type: String,
}

/// What the director needs from the WMS and the AuthServer.
#[async_trait::async_trait]
pub trait Registry: Send + Sync {
    /// Waiting jobs in the task queues `resource` matches.
    async fn demand(&self, resource: &ResourceDescription) -> Result<u64, String>;
    /// Pilots of a CE queue not in a final state.
    async fn active_pilots(&self, ce: &str, queue: &str) -> Result<Vec<ActivePilot>, String>;
    /// `n` one-time pilot secrets valid at `site` for `lifetime_s`.
    async fn pilot_secrets(
        &self,
        vo: &str,
        site: &str,
        n: usize,
        lifetime_s: u64,
    ) -> Result<Vec<String>, String>;
    /// Record pilots about to be submitted; per pilot, whether it was.
    async fn register_pilots(&self, pilots: &[NewPilot])
    -> Result<Vec<Result<(), String>>, String>;
    /// The CE's references of submitted pilots, by stamp.
    async fn set_pilot_references(&self, references: &[(String, String)]) -> Result<(), String>;
    async fn set_pilot_status(&self, stamp: &str, status: &str, reason: &str)
    -> Result<(), String>;
}

/// One queue the director feeds.
#[derive(Clone)]
pub struct QueueSpec {
    pub site: String,
    pub ce_name: String,
    /// `CEType` of the configuration.
    pub ce_type: String,
    pub queue: String,
    pub vo: String,
    pub limits: Limits,
    /// What this queue's pilots offer, for the demand.
    pub resource: ResourceDescription,
    pub ce: Arc<dyn ComputingElement>,
    /// Kill this queue's pilots when the director stops (the local CE of
    /// the embedded installation: its pilots are children of the server).
    pub kill_on_stop: bool,
}

impl std::fmt::Debug for QueueSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueSpec")
            .field("site", &self.site)
            .field("ce", &self.ce_name)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub knobs: Knobs,
    /// Pilot states are polled every this many cycles.
    pub status_every: u64,
    pub ce_timeout: Duration,
    /// Seconds a pilot may stay unknown to its CE before it is Aborted.
    pub unknown_grace_s: u64,
    pub polling: Duration,
    /// Queues handled at once.
    pub concurrency: usize,
}

impl Settings {
    pub fn from_config(c: &dirac_core::config::SiteDirectorConfig, default_polling: u64) -> Self {
        Settings {
            knobs: Knobs {
                max_per_cycle: c.max_pilots_per_cycle,
                initial_per_cycle: c.initial_pilots_per_cycle,
                failed_queue_cycle_factor: c.failed_queue_cycle_factor,
            },
            status_every: c.pilot_status_update_cycle_factor.max(1),
            ce_timeout: Duration::from_secs(c.ce_timeout.max(1)),
            unknown_grace_s: c.unknown_pilot_grace,
            polling: Duration::from_secs(c.polling_time.unwrap_or(default_polling).max(1)),
            concurrency: usize::try_from(c.concurrency.max(1)).unwrap_or(1),
        }
    }
}

/// What happened to one queue in one cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueOutcome {
    /// Backing off after a CE failure.
    Skipped,
    /// Nothing to submit.
    Idle,
    /// Pilots submitted and recorded (and how many the CE refused).
    Submitted { submitted: u64, refused: u64 },
    /// The CE failed or timed out: the queue backs off.
    CeFailed(String),
    /// PilotAgentsDB, the matcher or the AuthServer failed: retried next cycle.
    RegistryFailed(String),
}

#[derive(Debug, Default, Clone)]
pub struct CycleReport {
    pub cycle: u64,
    pub outcomes: Vec<(String, QueueOutcome)>,
    /// Pilot states changed by the status poll.
    pub status_updates: u64,
}

impl CycleReport {
    pub fn submitted(&self) -> u64 {
        self.outcomes
            .iter()
            .map(|(_, o)| match o {
                QueueOutcome::Submitted { submitted, .. } => *submitted,
                _ => 0,
            })
            .sum()
    }
}

pub struct SiteDirector {
    queues: Vec<QueueSpec>,
    registry: Arc<dyn Registry>,
    settings: Settings,
    memory: Vec<QueueMemory>,
    cycle: u64,
}

const WAITING_STATES: &[&str] = &["Submitted", "Waiting", "Scheduled"];

impl SiteDirector {
    pub fn new(queues: Vec<QueueSpec>, registry: Arc<dyn Registry>, settings: Settings) -> Self {
        let memory = vec![QueueMemory::new(&settings.knobs); queues.len()];
        SiteDirector {
            queues,
            registry,
            settings,
            memory,
            cycle: 0,
        }
    }

    pub fn queues(&self) -> &[QueueSpec] {
        &self.queues
    }

    /// One cycle: submission for every queue (concurrently), then, every
    /// `status_every` cycles, the pilot states.
    pub async fn cycle(&mut self) -> CycleReport {
        let cycle = self.cycle;
        self.cycle += 1;
        let registry = &self.registry;
        let settings = &self.settings;
        let memory = &self.memory;
        // Futures built first, then run: a stream mapping borrowed queues
        // through a closure is not `Send` for every lifetime (rust#102211).
        let work: Vec<_> = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| {
                indexed(
                    i,
                    submit_queue(q, registry.as_ref(), settings, &memory[i], cycle),
                )
            })
            .collect();
        let outcomes: Vec<(usize, QueueOutcome)> = futures::stream::iter(work)
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;
        let mut report = CycleReport {
            cycle,
            ..Default::default()
        };
        let mut outcomes = outcomes;
        outcomes.sort_by_key(|(i, _)| *i);
        for (i, outcome) in outcomes {
            let knobs = self.settings.knobs;
            let m = &mut self.memory[i];
            match &outcome {
                QueueOutcome::Submitted { submitted, .. } => m.succeeded(*submitted, &knobs),
                QueueOutcome::Idle => m.succeeded(0, &knobs),
                QueueOutcome::CeFailed(_) => m.failed(cycle, &knobs),
                QueueOutcome::Skipped | QueueOutcome::RegistryFailed(_) => {}
            }
            let q = &self.queues[i];
            report
                .outcomes
                .push((format!("{}/{}", q.ce_name, q.queue), outcome));
        }
        if cycle.is_multiple_of(self.settings.status_every) {
            report.status_updates = self.poll_states().await;
        }
        report
    }

    /// Ask every CE for its active pilots' states and record the changes.
    pub async fn poll_states(&self) -> u64 {
        let registry = &self.registry;
        let settings = &self.settings;
        // Each CE once, however many queues it serves.
        let mut ces: Vec<&Arc<dyn ComputingElement>> = Vec::new();
        for q in &self.queues {
            if !ces.iter().any(|c| Arc::ptr_eq(c, &q.ce)) {
                ces.push(&q.ce);
            }
        }
        let chores: Vec<_> = ces
            .into_iter()
            .map(|ce| with_timeout(settings.ce_timeout, ce.housekeeping()))
            .collect();
        for r in futures::stream::iter(chores)
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect::<Vec<_>>()
            .await
        {
            if let Err(e) = r {
                tracing::warn!(error = %e, "CE housekeeping failed");
            }
        }
        let work: Vec<_> = self
            .queues
            .iter()
            .map(|q| poll_queue(q, registry.as_ref(), settings))
            .collect();
        futures::stream::iter(work)
            .buffer_unordered(self.settings.concurrency.max(1))
            .fold(0u64, |a, n| async move { a + n })
            .await
    }

    /// Cycles until `shutdown` turns true; then kills the pilots of queues
    /// marked `kill_on_stop`.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let report = self.cycle().await;
            for (queue, outcome) in &report.outcomes {
                match outcome {
                    QueueOutcome::Submitted { submitted, refused } => {
                        tracing::info!(%queue, submitted, refused, "pilots submitted");
                    }
                    QueueOutcome::CeFailed(e) => {
                        tracing::warn!(%queue, error = %e, "CE failed: the queue backs off")
                    }
                    QueueOutcome::RegistryFailed(e) => {
                        tracing::warn!(%queue, error = %e, "cannot plan the queue")
                    }
                    QueueOutcome::Skipped | QueueOutcome::Idle => {}
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.polling) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        for q in self.queues.iter().filter(|q| q.kill_on_stop) {
            if let Ok(active) = self.registry.active_pilots(&q.ce_name, &q.queue).await {
                let refs: Vec<String> = active.into_iter().map(|p| p.reference).collect();
                if !refs.is_empty() {
                    let _ = tokio::time::timeout(self.settings.ce_timeout, q.ce.kill(&refs)).await;
                }
            }
        }
    }
}

async fn indexed<T>(i: usize, f: impl std::future::Future<Output = T>) -> (usize, T) {
    (i, f.await)
}

async fn with_timeout<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, CeError>>,
) -> Result<T, CeError> {
    tokio::time::timeout(timeout, f)
        .await
        .unwrap_or(Err(CeError::Timeout(timeout.as_secs())))
}

async fn submit_queue(
    q: &QueueSpec,
    registry: &dyn Registry,
    settings: &Settings,
    memory: &QueueMemory,
    cycle: u64,
) -> QueueOutcome {
    if memory.skipped(cycle) {
        return QueueOutcome::Skipped;
    }
    let active = match registry.active_pilots(&q.ce_name, &q.queue).await {
        Ok(a) => a,
        Err(e) => return QueueOutcome::RegistryFailed(e),
    };
    let demand = match registry.demand(&q.resource).await {
        Ok(d) => d,
        Err(e) => return QueueOutcome::RegistryFailed(e),
    };
    if demand == 0 {
        // Empty task queues: nothing is asked of the CE at all.
        return QueueOutcome::Idle;
    }
    let ce_slots = match with_timeout(settings.ce_timeout, q.ce.available()).await {
        Ok(s) => s,
        Err(e) => return QueueOutcome::CeFailed(e.to_string()),
    };
    let seen = Observed {
        waiting_pilots: active
            .iter()
            .filter(|p| WAITING_STATES.contains(&p.status.as_str()))
            .count() as u64,
        active_pilots: active.len() as u64,
        ce: ce_slots,
        demand,
    };
    let n = plan::to_submit(q.limits, &seen, memory, &settings.knobs);
    if n == 0 {
        return QueueOutcome::Idle;
    }
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    // A pilot may wait in the batch queue: its secret lasts the queue's CPU
    // time (at most 3 days, DIRAC's MaxQueueLength) plus a day.
    let cpu = u64::try_from(q.resource.cpu_time)
        .unwrap_or(0)
        .min(3 * 86_400);
    let secrets = match registry
        .pilot_secrets(&q.vo, &q.site, n, cpu + 86_400)
        .await
    {
        Ok(s) if s.len() == n => s,
        Ok(s) => {
            return QueueOutcome::RegistryFailed(format!(
                "asked {n} pilot secrets, got {}",
                s.len()
            ));
        }
        Err(e) => return QueueOutcome::RegistryFailed(e),
    };
    let jobs: Vec<PilotJob> = secrets
        .into_iter()
        .map(|secret| PilotJob {
            stamp: dirac_ce::new_stamp(),
            secret,
        })
        .collect();
    // Recorded before submission: a pilot that starts at once finds itself
    // registered, and one whose submission is cut short (the director
    // killed, the CE timing out) is in PilotAgentsDB, never lost; the state
    // poll ends it Aborted when its CE does not know it.
    let records: Vec<NewPilot> = jobs
        .iter()
        .map(|job| NewPilot {
            stamp: job.stamp.clone(),
            reference: job.stamp.clone(),
            vo: q.vo.clone(),
            site: q.site.clone(),
            ce: q.ce_name.clone(),
            queue: q.queue.clone(),
            grid_type: q.ce.grid_type().to_string(),
        })
        .collect();
    let recorded = match registry.register_pilots(&records).await {
        Ok(r) => r,
        Err(e) => return QueueOutcome::RegistryFailed(e),
    };
    let jobs: Vec<PilotJob> = jobs
        .into_iter()
        .zip(recorded)
        .filter_map(|(job, r)| match r {
            Ok(()) => Some(job),
            Err(e) => {
                tracing::warn!(stamp = %job.stamp, error = %e, "cannot record a pilot: not submitted");
                None
            }
        })
        .collect();
    if jobs.is_empty() {
        return QueueOutcome::RegistryFailed("no pilot could be recorded".into());
    }
    let results = match with_timeout(settings.ce_timeout, q.ce.submit(&jobs)).await {
        Ok(r) => r,
        Err(e) => {
            let reason = format!("submission failed: {e}");
            for job in &jobs {
                let _ = registry
                    .set_pilot_status(&job.stamp, "Aborted", &reason)
                    .await;
            }
            return QueueOutcome::CeFailed(e.to_string());
        }
    };
    let mut references = Vec::new();
    let mut refused = 0u64;
    let mut first_error = None;
    for (job, result) in jobs.iter().zip(results) {
        match result {
            Ok(reference) => references.push((job.stamp.clone(), reference)),
            Err(e) => {
                refused += 1;
                let reason = format!("submission failed: {e}");
                let _ = registry
                    .set_pilot_status(&job.stamp, "Aborted", &reason)
                    .await;
                first_error.get_or_insert(reason);
            }
        }
    }
    if references.is_empty() {
        return QueueOutcome::CeFailed(first_error.unwrap_or_else(|| "no pilot submitted".into()));
    }
    let submitted = references.len() as u64;
    if let Err(e) = registry.set_pilot_references(&references).await {
        tracing::warn!(error = %e, "cannot record pilot references");
    }
    QueueOutcome::Submitted { submitted, refused }
}

/// The new state to record for a pilot, if any.
fn transition(
    pilot: &ActivePilot,
    seen: PilotState,
    unknown_before: &str,
) -> Option<(&'static str, String)> {
    let now = pilot.status.as_str();
    match seen {
        PilotState::Waiting if now == "Submitted" => Some(("Waiting", "queued at the CE".into())),
        PilotState::Running if WAITING_STATES.contains(&now) || now == "Unknown" => {
            Some(("Running", "running at the CE".into()))
        }
        PilotState::Done | PilotState::Failed | PilotState::Aborted => Some((
            seen.as_str(),
            format!("{} at the CE", seen.as_str().to_lowercase()),
        )),
        PilotState::Unknown if now != "Unknown" => {
            Some(("Unknown", "the CE does not know the pilot".into()))
        }
        PilotState::Unknown if pilot.last_update.as_str() < unknown_before => {
            Some(("Aborted", "unknown to the CE past the grace period".into()))
        }
        _ => None,
    }
}

async fn poll_queue(q: &QueueSpec, registry: &dyn Registry, settings: &Settings) -> u64 {
    let Ok(active) = registry.active_pilots(&q.ce_name, &q.queue).await else {
        return 0;
    };
    if active.is_empty() {
        return 0;
    }
    let refs: Vec<String> = active.iter().map(|p| p.reference.clone()).collect();
    let states = match with_timeout(settings.ce_timeout, q.ce.status(&refs)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(ce = %q.ce_name, error = %e, "cannot poll pilot states");
            return 0;
        }
    };
    let unknown_before = dirac_core::time::ago(settings.unknown_grace_s);
    let mut changed = 0;
    let by_ref: HashMap<&str, PilotState> = states.iter().map(|(r, s)| (r.as_str(), *s)).collect();
    for p in &active {
        let seen = by_ref
            .get(p.reference.as_str())
            .copied()
            .unwrap_or(PilotState::Unknown);
        if let Some((status, reason)) = transition(p, seen, &unknown_before) {
            // A pilot that reported its own final state keeps it.
            if registry
                .set_pilot_status(&p.stamp, status, &reason)
                .await
                .is_ok()
            {
                changed += 1;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests;
