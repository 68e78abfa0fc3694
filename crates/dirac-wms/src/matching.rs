//! The Matcher: an in-memory task-queue index (`dirac-matcher`) in front of
//! TaskQueueDB. The index only proposes; the database decides (see
//! `JobDb::claim_many`), so replicas with stale indexes never hand out
//! a job twice — a lost race only costs a retry.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use dirac_core::auth::identity;
use dirac_core::config::DiracConfig;
use std::collections::HashMap;

use dirac_matcher::limits::{DelayState, SiteLimits, excluded_job_types};
use dirac_matcher::{Index, Resource, ResourceDescription, ShareConfig};
use dirac_proto::wms::matcher_server::Matcher;
use dirac_proto::wms::{
    ExplainMatchRequest, ExplainMatchResponse, RequestJobRequest, RequestJobResponse,
};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use crate::Wms;
use crate::error::WmsError;
use crate::jobdb::{ClaimRequest, MatchedJob};
use crate::policy::Action;
use crate::taskqueuedb::Queued;

/// Candidates tried per request before answering "no match".
const MAX_TRIES: usize = 20;
/// How long a pilot's description counts as "recent" for explanations.
const RECENT: Duration = Duration::from_secs(600);
const RECENT_MAX: usize = 500;

/// Group shares of the registry, for priorities.
pub fn shares(config: &DiracConfig) -> ShareConfig {
    let mut shares = ShareConfig::default();
    for (vo, voc) in &config.registry.vos {
        for (group, g) in &voc.groups {
            let share = dirac_matcher::GroupShare {
                job_share: g.job_share as f64,
                job_sharing: g.properties.iter().any(|p| p == "JobSharing"),
            };
            // Shares come from validated configuration: finite, non-negative.
            let _ = shares.insert(vo, group, share);
        }
    }
    shares
}

/// The matcher's in-memory state.
pub struct MatcherState {
    index: Mutex<Index>,
    batcher: OnceLock<mpsc::Sender<MatchRequest>>,
    shares: ShareConfig,
    recent: Mutex<VecDeque<(Instant, Resource)>>,
    limits: SiteLimits,
    limiter: Mutex<Limiter>,
}

/// Site limit state: matching delays, and running counts cached for
/// `RUNNING_CACHE` (DIRAC's Limiter caches them for 10 s; a match within the
/// window counts at once, so a limit is not overshot).
#[derive(Default)]
struct Limiter {
    delays: DelayState,
    running: HashMap<String, (Instant, HashMap<String, u64>)>,
}

const RUNNING_CACHE: Duration = Duration::from_secs(10);

/// `RunningLimit` and `MatchingDelay` of the configuration.
pub fn site_limits(config: &DiracConfig) -> SiteLimits {
    let mut limits = SiteLimits::new();
    let js = &config.operations.job_scheduling;
    for (site, attrs) in &js.running_limit {
        for (value, n) in attrs.get("JobType").into_iter().flatten() {
            limits.set_running_limit(site, value, *n);
        }
    }
    for (site, attrs) in &js.matching_delay {
        for (value, s) in attrs.get("JobType").into_iter().flatten() {
            limits.set_matching_delay(site, value, *s);
        }
    }
    limits
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl MatcherState {
    pub fn new(config: &DiracConfig) -> Self {
        MatcherState {
            index: Mutex::new(Index::new()),
            batcher: OnceLock::new(),
            shares: shares(config),
            recent: Mutex::new(VecDeque::new()),
            limits: site_limits(config),
            limiter: Mutex::new(Limiter::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Add newly Waiting jobs.
    pub fn enqueue(&self, jobs: &[Queued]) {
        if jobs.is_empty() {
            return;
        }
        let mut index = self.lock();
        for q in jobs {
            index.insert(q.job_id, q.key.clone(), q.user_priority);
        }
        index.recompute_priorities(&self.shares);
    }

    /// Replace the index with the database's view.
    pub fn rebuild(&self, jobs: Vec<Queued>) {
        let mut fresh = Index::new();
        for q in jobs {
            fresh.insert(q.job_id, q.key, q.user_priority);
        }
        fresh.recompute_priorities(&self.shares);
        *self.lock() = fresh;
    }

    pub fn queued(&self) -> usize {
        self.lock().jobs()
    }

    /// Waiting jobs in the task queues `resource` matches: the demand a
    /// SiteDirector feeds (DIRAC's `getMatchingTaskQueues`, summed).
    pub fn demand(&self, resource: &Resource) -> u64 {
        let index = self.lock();
        index
            .matching_task_queues(resource, &BTreeSet::new())
            .into_iter()
            .filter_map(|tq| index.tq_len(tq))
            .map(|n| n as u64)
            .sum()
    }

    fn remember(&self, resource: &Resource) {
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RECENT)
            || recent.len() >= RECENT_MAX
        {
            recent.pop_front();
        }
        recent.push_back((now, resource.clone()));
    }

    fn recent(&self) -> Vec<Resource> {
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        recent
            .iter()
            .filter(|(t, _)| t.elapsed() <= RECENT)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

/// Load TaskQueueDB into the index (at start and periodically).
pub async fn resync(wms: &Wms) -> Result<usize, WmsError> {
    wms.site_mask.reload(wms.db.db()).await?;
    let jobs = wms.db.task_queues.load().await?;
    let n = jobs.len();
    wms.matcher.rebuild(jobs);
    Ok(n)
}

fn description(r: dirac_proto::wms::ResourceDescription) -> ResourceDescription {
    let opt = |s: String| (!s.is_empty()).then_some(s);
    ResourceDescription {
        vo: r.vo,
        owner: opt(r.owner),
        owner_group: opt(r.owner_group),
        site: opt(r.site),
        grid_ce: opt(r.grid_ce),
        platforms: r.platforms,
        cpu_time: r.cpu_time,
        number_of_processors: r.number_of_processors,
        max_ram_mb: r.max_ram_mb,
        whole_node: r.whole_node,
        tags: r.tags,
        required_tags: r.required_tags,
        job_types: r.job_types,
    }
}

/// Requests one matcher transaction serves at most.
const MAX_BATCH: usize = 512;

/// A pilot waiting for the batcher's answer.
struct MatchRequest {
    resource: Resource,
    site: String,
    stamp: Option<String>,
    reply: oneshot::Sender<Result<Option<MatchedJob>, WmsError>>,
}

impl Wms {
    /// Find and claim a job for a pilot offering `resource` at `site`.
    /// Concurrent requests are served in batches: the index proposes a job
    /// for each, one transaction claims them all (ADR 0004), and pilots
    /// whose proposal was lost (another replica, a stale entry) get a new
    /// proposal in the next round.
    pub async fn match_job(
        self: &Arc<Self>,
        resource: &Resource,
        site: &str,
        pilot_stamp: Option<&str>,
    ) -> Result<Option<MatchedJob>, WmsError> {
        let restricted = self.site_mask.restrict(resource, site);
        let resource = restricted.as_ref().unwrap_or(resource);
        self.matcher.remember(resource);
        let batcher = self
            .matcher
            .batcher
            .get_or_init(|| spawn_batcher(Arc::downgrade(self)));
        let (reply, answer) = oneshot::channel();
        let request = MatchRequest {
            resource: resource.clone(),
            site: site.to_string(),
            stamp: pilot_stamp.map(str::to_string),
            reply,
        };
        batcher
            .send(request)
            .await
            .map_err(|_| WmsError::Internal("the matcher has stopped".into()))?;
        answer
            .await
            .map_err(|_| WmsError::Internal("the matcher dropped a request".into()))?
    }
}

fn spawn_batcher(wms: Weak<Wms>) -> mpsc::Sender<MatchRequest> {
    let (tx, mut rx) = mpsc::channel::<MatchRequest>(4 * MAX_BATCH);
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let Some(wms) = wms.upgrade() else { return };
            serve_batch(&wms, std::mem::take(&mut batch)).await;
        }
    });
    tx
}

/// Job types each site must not receive now (RunningLimit, MatchingDelay).
async fn excluded_by_site(
    wms: &Wms,
    sites: &BTreeSet<String>,
) -> HashMap<String, BTreeSet<String>> {
    let mut out = HashMap::new();
    for site in sites {
        if !wms.matcher.limits.has_site(site) {
            continue;
        }
        let cached = {
            let limiter = wms
                .matcher
                .limiter
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            limiter
                .running
                .get(site)
                .filter(|(t, _)| t.elapsed() < RUNNING_CACHE)
                .map(|(_, r)| r.clone())
        };
        let running = match cached {
            Some(r) => r,
            None => match wms.db.running_by_job_type(site).await {
                Ok(r) => {
                    let mut limiter = wms
                        .matcher
                        .limiter
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    limiter
                        .running
                        .insert(site.clone(), (Instant::now(), r.clone()));
                    r
                }
                Err(e) => {
                    tracing::warn!(error = %e, site = %site, "cannot count running jobs; site limits not applied");
                    continue;
                }
            },
        };
        let limiter = wms
            .matcher
            .limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        out.insert(
            site.clone(),
            excluded_job_types(
                site,
                &running,
                &wms.matcher.limits,
                &limiter.delays,
                now_s(),
            ),
        );
    }
    out
}

/// Count a match against its site's limits at once.
fn record_match(wms: &Wms, site: &str, job_type: &str) {
    if !wms.matcher.limits.has_site(site) {
        return;
    }
    let mut limiter = wms
        .matcher
        .limiter
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    limiter
        .delays
        .record_match(site, job_type, now_s(), &wms.matcher.limits);
    if let Some((_, running)) = limiter.running.get_mut(site) {
        *running.entry(job_type.to_string()).or_default() += 1;
    }
}

async fn serve_batch(wms: &Wms, mut pending: Vec<MatchRequest>) {
    let none = BTreeSet::new();
    for _ in 0..MAX_TRIES {
        if pending.is_empty() {
            return;
        }
        let sites: BTreeSet<String> = pending.iter().map(|r| r.site.clone()).collect();
        let excluded = excluded_by_site(wms, &sites).await;
        let mut proposals = Vec::with_capacity(pending.len());
        {
            let mut index = wms.matcher.lock();
            let mut rng = rand::rng();
            for req in pending.drain(..) {
                let excluded = excluded.get(&req.site).unwrap_or(&none);
                match index.match_job(&req.resource, excluded, &mut rng) {
                    Some(m) => proposals.push((m.job_id, req)),
                    None => {
                        let _ = req.reply.send(Ok(None));
                    }
                }
            }
        }
        if proposals.is_empty() {
            return;
        }
        let claims: Vec<ClaimRequest> = proposals
            .iter()
            .map(|(id, r)| ClaimRequest {
                job_id: *id,
                site: r.site.clone(),
                pilot_stamp: r.stamp.clone(),
            })
            .collect();
        let started = Instant::now();
        let result = wms.db.claim_many(&claims, &wms.pilots).await;
        tracing::debug!(
            proposals = claims.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "claim batch"
        );
        match result {
            Ok(mut won) => {
                for (id, req) in proposals {
                    match won.remove(&id) {
                        Some(job) => {
                            record_match(wms, &req.site, &job.job_type);
                            let _ = req.reply.send(Ok(Some(job)));
                        }
                        None => pending.push(req),
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = proposals.len(), "matcher claim failed");
                for (_, req) in proposals {
                    let _ = req
                        .reply
                        .send(Err(WmsError::Unavailable(format!("matching failed: {e}"))));
                }
                return;
            }
        }
    }
    for req in pending {
        let _ = req.reply.send(Ok(None));
    }
}

impl Wms {
    /// Why job `job_id` (in `status`) is not running: the index's
    /// explanation against recent pilots, plus site limits.
    pub async fn explain_job(&self, job_id: u64, status: &str) -> ExplainMatchResponse {
        let recent = self.matcher.recent();
        let explanation = self
            .matcher
            .lock()
            .explain(job_id, &recent, &BTreeSet::new());
        let mut reasons = explanation.reasons;
        // Site limits that hold the job's type back where recent pilots are.
        let job_types: Vec<String> = {
            let index = self.matcher.lock();
            index
                .tq_of(job_id)
                .and_then(|tq| index.tq_key(tq))
                .map(|k| k.effective_job_types().map(str::to_string).collect())
                .unwrap_or_default()
        };
        let sites: BTreeSet<String> = recent.iter().filter_map(|r| r.site.clone()).collect();
        for (site, excluded) in excluded_by_site(self, &sites).await {
            for job_type in job_types.iter().filter(|t| excluded.contains(*t)) {
                reasons.push(format!(
                    "job type {job_type} is held back at {site} by its RunningLimit or MatchingDelay"
                ));
            }
        }
        if status != "Waiting" {
            reasons.insert(
                0,
                format!(
                    "the job is {}, not Waiting: only Waiting jobs are matched",
                    status
                ),
            );
        }
        ExplainMatchResponse {
            job_id,
            status: status.to_string(),
            in_queue: explanation.in_queue,
            reasons,
            recent_pilots: u32::try_from(recent.len()).unwrap_or(u32::MAX),
        }
    }
}

#[derive(Clone)]
pub struct MatcherService(pub Arc<Wms>);

#[tonic::async_trait]
impl Matcher for MatcherService {
    async fn request_job(
        &self,
        req: Request<RequestJobRequest>,
    ) -> Result<Response<RequestJobResponse>, Status> {
        let who = identity(&req)?.clone();
        let mut raw = req.into_inner().resource.ok_or_else(|| {
            WmsError::InvalidArgument("a resource description is required".into())
        })?;
        if raw.vo.is_empty() {
            raw.vo = who.vo.clone();
        }
        if raw.vo != who.vo {
            return Err(WmsError::PermissionDenied(format!(
                "a pilot of {} cannot take jobs of {}",
                who.vo, raw.vo
            ))
            .into());
        }
        // A private pilot (no GenericPilot) only runs its own user's jobs.
        if !who.has("GenericPilot") {
            raw.owner = who.username.clone();
            raw.owner_group = who.group.clone();
        }
        let stamp = (!raw.pilot_stamp.is_empty()).then(|| raw.pilot_stamp.clone());
        if let Some(s) = &stamp {
            crate::pilotdb::valid_stamp(s)?;
        }
        let site = raw.site.clone();
        let resource = description(raw)
            .into_resource()
            .map_err(|e| WmsError::InvalidArgument(e.to_string()))?;
        match self.0.match_job(&resource, &site, stamp.as_deref()).await? {
            Some(job) => {
                let jdl = crate::submit::full_jdl(
                    &job.jdl,
                    job.job_id,
                    &job.owner,
                    &job.owner_group,
                    &job.vo,
                    &self.0.config.operations.job_description,
                );
                tracing::info!(job = job.job_id, site = %site, pilot = ?stamp, "job matched");
                let job_token = self.0.job_token(&job).unwrap_or_default();
                Ok(Response::new(RequestJobResponse {
                    matched: true,
                    job_token,
                    job_id: job.job_id,
                    jdl,
                    owner: job.owner,
                    owner_group: job.owner_group,
                    vo: job.vo,
                    no_match_reason: String::new(),
                }))
            }
            None => Ok(Response::new(RequestJobResponse {
                matched: false,
                no_match_reason: "no waiting job fits this resource".into(),
                ..Default::default()
            })),
        }
    }

    async fn explain_match(
        &self,
        req: Request<ExplainMatchRequest>,
    ) -> Result<Response<ExplainMatchResponse>, Status> {
        let who = identity(&req)?.clone();
        let job_id = req.into_inner().job_id;
        let job = self.0.authorize_job(&who, job_id, Action::Read).await?;
        Ok(Response::new(self.0.explain_job(job_id, &job.status).await))
    }
}
