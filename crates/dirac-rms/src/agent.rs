//! The RequestExecutingAgent and the ReqDB cleaner. One executing cycle
//! claims Waiting requests, runs each one's current operation through its
//! handler — then the next, while they succeed — and writes the outcome
//! back: a file still Waiting after its attempt means the request waits
//! `2·ln(attempt)` minutes, a file at `MaxAttempts` fails. Several agents
//! may run at once: claims are atomic (see [`crate::reqdb`]).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::watch;

use crate::error::Result;
use crate::model::{
    FileStatus, OpStatus, Operation, ReqStatus, Request, clip, retry_delay_s, settle_request,
};
use crate::reqdb::ReqDb;

/// The agents `diracd agent NAME` runs for request management.
pub const AGENTS: &[&str] = &["request-executing", "clean-reqdb"];

/// Whose rights an operation runs with: the request's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub user: String,
    pub group: String,
    pub vo: String,
}

/// Carries out operations. For each file it tries, a handler sets the
/// file Done, Failed (it can never succeed: the reason in `error`) or
/// leaves it Waiting with the reason (tried again later); it counts the
/// attempt. Operations without files set the operation's status.
#[async_trait::async_trait]
pub trait Handlers: Send + Sync {
    async fn execute(&self, owner: &Owner, op: &mut Operation);
}

/// Told when a job's request ends, so the job can end too (it waits
/// `Completed / Pending Requests` until its failover is done).
#[async_trait::async_trait]
pub trait JobFinalizer: Send + Sync {
    async fn request_final(&self, request: &Request);
    /// Finish the jobs still waiting whose requests all ended without
    /// telling them (canceled, deleted, an agent that died in between).
    /// Returns how many.
    async fn sweep(&self) -> u64;
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Requests claimed per cycle (DIRAC's RequestsPerCycle).
    pub requests_per_cycle: u64,
    /// Attempts per file before it fails (DIRAC's MaxAttempts).
    pub max_attempts: u32,
    /// Requests executed at once (DIRAC's process pool).
    pub concurrency: usize,
    /// Fixed back-off in minutes instead of `2·ln(attempt)`.
    pub constant_delay_minutes: Option<u64>,
    /// Seconds between cycles.
    pub polling_time_s: u64,
    /// Requests held longer than this by an agent go back to Waiting.
    pub kick_after_s: u64,
    /// Final requests are deleted after this many days.
    pub delete_after_days: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::from_config(&dirac_core::config::RequestsConfig::default())
    }
}

impl Settings {
    pub fn from_config(c: &dirac_core::config::RequestsConfig) -> Self {
        Settings {
            requests_per_cycle: c.requests_per_cycle.max(1),
            concurrency: usize::try_from(c.concurrency.max(1)).unwrap_or(1),
            max_attempts: c.max_attempts.max(1),
            constant_delay_minutes: c.constant_request_delay,
            polling_time_s: c.polling_time.max(1),
            // A live agent is never kicked: at least an hour.
            kick_after_s: c.kick_grace_hours.max(1).saturating_mul(3600),
            delete_after_days: c.delete_grace_days,
        }
    }

    /// How long one request may run (DIRAC's TimeOut + files ×
    /// TimeOutPerFile), always well inside the kick grace.
    pub fn request_timeout(&self, files: usize) -> Duration {
        let wanted = 300u64.saturating_add((files as u64).saturating_mul(30));
        Duration::from_secs(wanted.min(self.kick_after_s / 2).max(1))
    }
}

/// What one cycle did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cycle {
    pub claimed: u64,
    pub done: u64,
    pub failed: u64,
    /// Put back to wait (a file still to retry).
    pub waiting: u64,
    /// Canceled or taken over while executing: outcome not written.
    pub lost: u64,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Run one request as far as it goes now.
pub async fn execute_request(r: &mut Request, handlers: &dyn Handlers, settings: &Settings) {
    let owner = Owner {
        user: r.owner.clone(),
        group: r.owner_group.clone(),
        vo: r.vo.clone(),
    };
    loop {
        settle_request(r);
        if r.status != ReqStatus::Waiting {
            break;
        }
        let Some(at) = r
            .operations
            .iter()
            .position(|o| o.status == OpStatus::Waiting)
        else {
            break;
        };
        let op = &mut r.operations[at];
        handlers.execute(&owner, op).await;
        for f in &mut op.files {
            if f.status == FileStatus::Waiting && f.attempt >= settings.max_attempts {
                f.status = FileStatus::Failed;
                f.error = clip(&format!(
                    "gave up after {} attempts: {}",
                    f.attempt, f.error
                ));
            }
        }
        if let Some(failed) = op.files.iter().find(|f| f.status == FileStatus::Failed) {
            op.error = clip(&format!("{}: {}", failed.lfn, failed.error));
        }
        settle_request(r);
        // The same operation still current: some of its files wait for
        // another attempt.
        if r.operations[at].status == OpStatus::Waiting {
            break;
        }
    }
    if r.status == ReqStatus::Failed && r.error.is_empty() {
        r.error = r
            .operations
            .iter()
            .find(|o| o.status == OpStatus::Failed)
            .map(|o| clip(&format!("{} failed: {}", o.kind, o.error)))
            .unwrap_or_default();
    }
}

/// One RequestExecutingAgent cycle as `agent`.
pub async fn execute_once(
    db: &ReqDb,
    handlers: &dyn Handlers,
    jobs: Option<&dyn JobFinalizer>,
    agent: &str,
    settings: &Settings,
) -> Result<Cycle> {
    let claimed = db.claim(settings.requests_per_cycle, agent, now()).await?;
    let mut cycle = Cycle {
        claimed: claimed.len() as u64,
        ..Cycle::default()
    };
    let outcomes: Vec<Result<Outcome>> = futures::stream::iter(claimed)
        .map(|r| handle(db, handlers, jobs, agent, settings, r))
        .buffer_unordered(settings.concurrency.max(1))
        .collect()
        .await;
    for outcome in outcomes {
        match outcome? {
            Outcome::Lost => cycle.lost += 1,
            Outcome::Saved(ReqStatus::Done) => cycle.done += 1,
            Outcome::Saved(ReqStatus::Failed) => cycle.failed += 1,
            Outcome::Saved(_) => cycle.waiting += 1,
        }
    }
    Ok(cycle)
}

/// What became of one claimed request.
enum Outcome {
    Saved(ReqStatus),
    /// Canceled or taken over: nothing written.
    Lost,
}

/// Execute one claimed request and write its outcome back.
async fn handle(
    db: &ReqDb,
    handlers: &dyn Handlers,
    jobs: Option<&dyn JobFinalizer>,
    agent: &str,
    settings: &Settings,
    mut r: Request,
) -> Result<Outcome> {
    // Still ours (not canceled, not kicked by a cleaner that thought us
    // dead)? The claim is renewed for the time this request may take.
    if !db.refresh(r.id, agent, now()).await? {
        return Ok(Outcome::Lost);
    }
    let files: usize = r.operations.iter().map(|o| o.files.len()).sum();
    let limit = settings.request_timeout(files);
    if tokio::time::timeout(limit, execute_request(&mut r, handlers, settings))
        .await
        .is_err()
    {
        // Unfinished work is retried; what the handlers finished is
        // kept, attempts included.
        tracing::warn!(
            request = r.id,
            timeout_s = limit.as_secs(),
            "request execution timed out"
        );
        settle_request(&mut r);
    }
    let t = now();
    r.not_before = t;
    if r.status == ReqStatus::Waiting {
        let attempt = r
            .operations
            .iter()
            .find(|o| o.status == OpStatus::Waiting)
            .and_then(|o| {
                o.files
                    .iter()
                    .filter(|f| f.status == FileStatus::Waiting)
                    .map(|f| f.attempt)
                    .max()
            })
            .unwrap_or(0);
        let delay = retry_delay_s(attempt, settings.constant_delay_minutes);
        r.not_before = t.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX / 2));
    }
    let saved = match db.save(&r, agent, t).await {
        Ok(saved) => saved,
        Err(e) => {
            // This request stays Assigned until kicked; the others go on.
            tracing::warn!(request = r.id, error = %e, "cannot save a request's outcome");
            return Ok(Outcome::Lost);
        }
    };
    if !saved {
        tracing::info!(
            request = r.id,
            "request canceled or taken over meanwhile: outcome dropped"
        );
        return Ok(Outcome::Lost);
    }
    if let Some(jobs) = jobs
        && r.job_id != 0
        && r.status.is_final()
    {
        jobs.request_final(&r).await;
    }
    tracing::info!(request = r.id, name = %r.name, status = %r.status, error = %r.error, "request executed");
    Ok(Outcome::Saved(r.status))
}

/// One CleanReqDB cycle: kick requests of dead agents, delete old final
/// ones, finish jobs left waiting. Returns (kicked, deleted).
pub async fn clean_once(
    db: &ReqDb,
    jobs: Option<&dyn JobFinalizer>,
    settings: &Settings,
) -> Result<(u64, u64)> {
    if let Some(jobs) = jobs {
        let finished = jobs.sweep().await;
        if finished > 0 {
            tracing::info!(finished, "jobs left waiting for ended requests finished");
        }
    }
    let t = now();
    let kick_before = t.saturating_sub(i64::try_from(settings.kick_after_s).unwrap_or(0));
    let kicked = db.kick(kick_before, t).await?;
    let delete_before = t.saturating_sub(
        i64::try_from(settings.delete_after_days.saturating_mul(86_400)).unwrap_or(0),
    );
    let deleted = db
        .clean(
            &[ReqStatus::Done, ReqStatus::Failed, ReqStatus::Canceled],
            delete_before,
            1000,
        )
        .await?;
    Ok((kicked, deleted))
}

/// The RequestExecutingAgent until `stop`.
pub fn spawn_executing(
    db: Arc<ReqDb>,
    handlers: Arc<dyn Handlers>,
    jobs: Option<Arc<dyn JobFinalizer>>,
    agent: String,
    settings: Settings,
    stop: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_secs(settings.polling_time_s.max(1));
    tokio::spawn(dirac_core::agent::run_loop(
        "RequestExecutingAgent",
        every,
        stop.clone(),
        move || {
            let (db, handlers, jobs, agent, settings) = (
                db.clone(),
                handlers.clone(),
                jobs.clone(),
                agent.clone(),
                settings.clone(),
            );
            async move {
                // A full batch means more are waiting: no pause before the next.
                loop {
                    let done =
                        execute_once(&db, handlers.as_ref(), jobs.as_deref(), &agent, &settings)
                            .await;
                    match done {
                        Ok(c) if c.claimed >= settings.requests_per_cycle => {
                            tracing::info!(?c, "requests executed");
                        }
                        Ok(c) => {
                            if c.claimed > 0 {
                                tracing::info!(?c, "requests executed");
                            }
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "request execution failed");
                            break;
                        }
                    }
                }
            }
        },
    ))
}

/// The ReqDB cleaner until `stop`.
pub fn spawn_cleaning(
    db: Arc<ReqDb>,
    jobs: Option<Arc<dyn JobFinalizer>>,
    settings: Settings,
    stop: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_secs(settings.polling_time_s.max(1));
    tokio::spawn(dirac_core::agent::run_loop(
        "CleanReqDBAgent",
        every,
        stop.clone(),
        move || {
            let (db, jobs, settings) = (db.clone(), jobs.clone(), settings.clone());
            async move {
                match clean_once(&db, jobs.as_deref(), &settings).await {
                    Ok((0, 0)) => {}
                    Ok((kicked, deleted)) => tracing::info!(kicked, deleted, "ReqDB cleaned"),
                    Err(e) => tracing::warn!(error = %e, "ReqDB cleaning failed"),
                }
            }
        },
    ))
}
