//! gRPC handlers of JobManager, JobMonitoring and JobStateUpdate. Each
//! handler checks ownership per job (the route policy already checked the
//! caller's properties), calls the pure logic and JobDB, and answers bulk
//! calls with per-item failures.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dirac_core::auth::{Identity, identity};
use dirac_core::error::item_error;
use dirac_core::time;
use dirac_proto::common::{BulkResult, Ids, ItemError};
use dirac_proto::wms::{
    GetHistoryResponse, GetJdlRequest, GetJdlResponse, GetJobParametersResponse, GetJobsResponse,
    HeartbeatRequest, HeartbeatResponse, Job, JobHistory, JobStatusResult, RescheduleJobsRequest,
    SearchJobsRequest, SearchJobsResponse, SetJobParametersRequest, SetJobStatusRequest,
    SetJobStatusResponse, SubmitJobsRequest, SubmitJobsResponse, SummaryRequest, SummaryResponse,
    job_manager_server::JobManager, job_monitoring_server::JobMonitoring,
    job_state_update_server::JobStateUpdate,
};
use tonic::{Request, Response, Status};

use crate::Wms;
use crate::error::WmsError;
use crate::jobdb::{Apply, JobOwner, clip};
use crate::policy::{Action, allowed, search_scope};
use crate::search::{build_grouping, build_order, build_where};
use crate::state::{JobStatus, Update};
use crate::submit::{Submitter, prepare};

/// Most job ids one bulk call may name.
pub const MAX_IDS: usize = 100_000;
/// Most jobs one search page returns.
pub const MAX_PAGE: u32 = 10_000;
/// Submissions with more JDLs than this are parsed off the async workers.
const BLOCKING_PARSE: usize = 64;

#[derive(Clone)]
pub struct WmsService(pub Arc<Wms>);

type Failed = HashMap<u64, ItemError>;

fn failed_item(e: &WmsError) -> ItemError {
    item_error(e)
}

fn dedup(ids: &[u64]) -> Result<Vec<u64>, WmsError> {
    if ids.len() > MAX_IDS {
        return Err(WmsError::ResourceExhausted(format!(
            "{} job ids in one call; the limit is {MAX_IDS}",
            ids.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    Ok(ids.iter().copied().filter(|id| seen.insert(*id)).collect())
}

impl WmsService {
    /// Split `ids` into the jobs `who` may act on and per-item failures.
    async fn authorize(
        &self,
        who: &Identity,
        ids: &[u64],
        action: Action,
    ) -> Result<(Vec<u64>, Failed, HashMap<u64, JobOwner>), WmsError> {
        let ids = dedup(ids)?;
        let owners = self.0.db.owners(&ids).await?;
        let mut ok = Vec::with_capacity(ids.len());
        let mut failed = Failed::new();
        for id in ids {
            match owners.get(&id) {
                None => {
                    failed.insert(
                        id,
                        failed_item(&WmsError::NotFound(format!("job {id} does not exist"))),
                    );
                }
                Some(o) if !allowed(who, action, o) => {
                    failed.insert(
                        id,
                        failed_item(&WmsError::PermissionDenied(format!(
                            "job {id} is not yours to {}",
                            action.verb()
                        ))),
                    );
                }
                Some(o) => match crate::policy::job_token_allows(who, id, &o.status) {
                    Ok(()) => ok.push(id),
                    Err(m) => {
                        failed.insert(id, failed_item(&WmsError::PermissionDenied(m)));
                    }
                },
            }
        }
        Ok((ok, failed, owners))
    }

    /// Move jobs to `target` through the state machine; what could not move
    /// is a per-item FailedPrecondition.
    async fn change_status(
        &self,
        ids: Vec<u64>,
        mut failed: Failed,
        owners: &HashMap<u64, JobOwner>,
        target: JobStatus,
        minor: &str,
    ) -> Result<BulkResult, WmsError> {
        let now = time::now();
        let mut updates = BTreeMap::new();
        let mut succeeded = Vec::new();
        for id in &ids {
            let current: Option<JobStatus> = owners.get(id).and_then(|o| o.status.parse().ok());
            // Already there: a retried call succeeds without a new record.
            if current == Some(target) {
                succeeded.push(*id);
                continue;
            }
            let mut ups = Vec::new();
            // Deleting a job whose payload may run kills it first.
            if target == JobStatus::Deleted && current.is_some_and(JobStatus::is_active) {
                ups.push(manager_update(
                    &now,
                    JobStatus::Killed,
                    "Marked for termination",
                ));
            }
            ups.push(manager_update(&now, target, minor));
            updates.insert(*id, ups);
        }
        let results = self.0.db.apply_updates(updates, Apply::Server).await?;
        for (id, r) in results {
            match r {
                Ok(state) if state.status == target => succeeded.push(id),
                Ok(state) => {
                    failed.insert(
                        id,
                        failed_item(&WmsError::FailedPrecondition(format!(
                            "job {id} is {} and cannot become {target}",
                            state.status
                        ))),
                    );
                }
                Err(e) => {
                    failed.insert(id, failed_item(&e));
                }
            }
        }
        Ok(BulkResult { succeeded, failed })
    }
}

fn manager_update(now: &str, status: JobStatus, minor: &str) -> Update {
    Update {
        time: now.to_string(),
        status: Some(status),
        minor_status: Some(minor.to_string()),
        application_status: None,
        source: "JobManager".into(),
    }
}

#[tonic::async_trait]
impl JobManager for WmsService {
    async fn submit_jobs(
        &self,
        req: Request<SubmitJobsRequest>,
    ) -> Result<Response<SubmitJobsResponse>, Status> {
        let who = identity(&req)?.clone();
        let SubmitJobsRequest { jdls, request_id } = req.into_inner();
        let request_id = (!request_id.is_empty()).then_some(request_id);
        if let Some(rid) = &request_id {
            if rid.chars().count() > 128 {
                return Err(WmsError::InvalidArgument(
                    "request_id is longer than 128 characters".into(),
                )
                .into());
            }
            if let Some(jobs) = self
                .0
                .db
                .find_submission(rid, &who.username, &who.vo)
                .await
                .map_err(Status::from)?
            {
                return Ok(Response::new(SubmitJobsResponse {
                    jobs,
                    replayed: true,
                }));
            }
        }
        let config = self.0.config.clone();
        let prepared = {
            let who = who.clone();
            let run = move || {
                let submitter = Submitter {
                    owner: &who.username,
                    owner_group: &who.group,
                    vo: &who.vo,
                };
                prepare(&jdls, &submitter, &config.operations.job_description)
            };
            if self
                .0
                .config
                .operations
                .job_description
                .max_jobs_per_request
                > BLOCKING_PARSE
            {
                tokio::task::spawn_blocking(run)
                    .await
                    .map_err(|e| Status::from(WmsError::Internal(format!("jdl worker: {e}"))))?
            } else {
                run()
            }
        };
        let jobs = prepared?;
        let submitter = Submitter {
            owner: &who.username,
            owner_group: &who.group,
            vo: &who.vo,
        };
        let first = self.0.db.allocate_ids(jobs.len() as u64).await?;
        match self
            .0
            .db
            .insert_jobs(first, &jobs, &submitter, request_id.as_deref())
            .await
        {
            Ok(submitted) => {
                self.0.optimizer_wake.notify_one();
                tracing::info!(jobs = submitted.len(), first_job = first, owner = %who.username, "jobs submitted");
                Ok(Response::new(SubmitJobsResponse {
                    jobs: submitted,
                    replayed: false,
                }))
            }
            // A concurrent call with the same request id won: answer with its jobs.
            Err(WmsError::FailedPrecondition(msg)) if request_id.is_some() => {
                let rid = request_id.as_deref().unwrap_or_default();
                match self
                    .0
                    .db
                    .find_submission(rid, &who.username, &who.vo)
                    .await?
                {
                    Some(jobs) => Ok(Response::new(SubmitJobsResponse {
                        jobs,
                        replayed: true,
                    })),
                    None => Err(WmsError::FailedPrecondition(msg).into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn kill_jobs(&self, req: Request<Ids>) -> Result<Response<BulkResult>, Status> {
        let who = identity(&req)?.clone();
        let (ids, failed, owners) = self
            .authorize(&who, &req.get_ref().ids, Action::Manage)
            .await?;
        let result = self
            .change_status(
                ids,
                failed,
                &owners,
                JobStatus::Killed,
                "Marked for termination",
            )
            .await?;
        Ok(Response::new(result))
    }

    async fn delete_jobs(&self, req: Request<Ids>) -> Result<Response<BulkResult>, Status> {
        let who = identity(&req)?.clone();
        let (ids, failed, owners) = self
            .authorize(&who, &req.get_ref().ids, Action::Manage)
            .await?;
        let result = self
            .change_status(ids, failed, &owners, JobStatus::Deleted, "Job deleted")
            .await?;
        Ok(Response::new(result))
    }

    async fn reschedule_jobs(
        &self,
        req: Request<RescheduleJobsRequest>,
    ) -> Result<Response<BulkResult>, Status> {
        let who = identity(&req)?.clone();
        let action = if who.has("GenericPilot") {
            Action::Report
        } else {
            Action::Manage
        };
        let RescheduleJobsRequest {
            job_ids,
            reset_counter,
        } = req.into_inner();
        if reset_counter && !who.has("JobAdministrator") {
            return Err(WmsError::PermissionDenied(
                "resetting the reschedule counter needs JobAdministrator".into(),
            )
            .into());
        }
        let (ids, mut failed, _) = self.authorize(&who, &job_ids, action).await?;
        let source = if who.has("GenericPilot") {
            "Pilot"
        } else {
            "JobManager"
        };
        let results = self
            .0
            .db
            .reschedule(&ids, &self.0.config.operations, reset_counter, source)
            .await?;
        let mut succeeded = Vec::new();
        for (id, r) in results {
            match r {
                Ok(_) => succeeded.push(id),
                Err(e) => {
                    failed.insert(id, failed_item(&e));
                }
            }
        }
        self.0.optimizer_wake.notify_one();
        Ok(Response::new(BulkResult { succeeded, failed }))
    }
}

type JobStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Job, Status>> + Send>>;

#[tonic::async_trait]
impl JobMonitoring for WmsService {
    async fn get_jobs(&self, req: Request<Ids>) -> Result<Response<GetJobsResponse>, Status> {
        let who = identity(&req)?.clone();
        let (ids, failed, _) = self
            .authorize(&who, &req.get_ref().ids, Action::Read)
            .await?;
        let jobs = self.0.db.jobs(&ids).await?;
        Ok(Response::new(GetJobsResponse { jobs, failed }))
    }

    async fn get_jdl(
        &self,
        req: Request<GetJdlRequest>,
    ) -> Result<Response<GetJdlResponse>, Status> {
        let who = identity(&req)?.clone();
        let GetJdlRequest { job_id, original } = req.into_inner();
        let owner = self.0.authorize_job(&who, job_id, Action::Read).await?;
        let jdl = self
            .0
            .db
            .jdl(job_id)
            .await?
            .ok_or_else(|| WmsError::NotFound(format!("job {job_id} does not exist")))?;
        let jdl = if original {
            jdl
        } else {
            crate::submit::full_jdl(
                &jdl,
                job_id,
                &owner.owner,
                &owner.owner_group,
                &owner.vo,
                &self.0.config.operations.job_description,
            )
        };
        Ok(Response::new(GetJdlResponse { jdl }))
    }

    async fn get_history(&self, req: Request<Ids>) -> Result<Response<GetHistoryResponse>, Status> {
        let who = identity(&req)?.clone();
        let (ids, failed, _) = self
            .authorize(&who, &req.get_ref().ids, Action::Read)
            .await?;
        let mut by_job = self.0.db.history(&ids).await?;
        let histories = ids
            .iter()
            .map(|id| JobHistory {
                job_id: *id,
                entries: by_job.remove(id).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(GetHistoryResponse { histories, failed }))
    }

    async fn search_jobs(
        &self,
        req: Request<SearchJobsRequest>,
    ) -> Result<Response<SearchJobsResponse>, Status> {
        let who = identity(&req)?.clone();
        let r = req.into_inner();
        let limit = match r.limit {
            0 => 100,
            n if n > MAX_PAGE => {
                return Err(WmsError::InvalidArgument(format!(
                    "limit {n} is above the maximum of {MAX_PAGE}"
                ))
                .into());
            }
            n => n,
        };
        let w = build_where(&r.filters, search_scope(&who))?;
        let order = build_order(&r.sort)?;
        let jobs = self
            .0
            .db
            .search(&w, &order, u64::from(limit), r.offset)
            .await?;
        let total = self.0.db.count(&w).await?;
        Ok(Response::new(SearchJobsResponse { jobs, total }))
    }

    type StreamJobsStream = JobStream;

    async fn stream_jobs(
        &self,
        req: Request<SearchJobsRequest>,
    ) -> Result<Response<JobStream>, Status> {
        let who = identity(&req)?.clone();
        let r = req.into_inner();
        let w = build_where(&r.filters, search_scope(&who))?;
        let order = build_order(&r.sort)?;
        let total_limit = if r.limit == 0 {
            u64::MAX
        } else {
            u64::from(r.limit)
        };
        // In JobID order the stream walks by key (`JobID > last`), so a long
        // stream costs one index range per page; other orders page by offset.
        let by_key = order == "JobID ASC";
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let wms = self.0.clone();
        tokio::spawn(async move {
            const PAGE: u64 = 1000;
            let mut offset = r.offset;
            let mut last: Option<u64> = None;
            let mut sent = 0u64;
            while sent < total_limit {
                let page = PAGE.min(total_limit - sent);
                let result = match last {
                    Some(after) if by_key => {
                        let mut keyed = w.clone();
                        keyed.sql = format!("({}) AND JobID > ?", keyed.sql);
                        keyed.binds.push(crate::search::Bind::Int(
                            i64::try_from(after).unwrap_or(i64::MAX),
                        ));
                        wms.db.search(&keyed, &order, page, 0).await
                    }
                    _ => wms.db.search(&w, &order, page, offset).await,
                };
                match result {
                    Ok(jobs) => {
                        let n = jobs.len() as u64;
                        last = jobs.last().map(|j| j.job_id);
                        for job in jobs {
                            if tx.send(Ok(job)).await.is_err() {
                                return;
                            }
                        }
                        sent += n;
                        offset += n;
                        if n < page {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn summary(
        &self,
        req: Request<SummaryRequest>,
    ) -> Result<Response<SummaryResponse>, Status> {
        let who = identity(&req)?.clone();
        let r = req.into_inner();
        let columns = build_grouping(&r.grouping)?;
        let w = build_where(&r.filters, search_scope(&who))?;
        let rows = self.0.db.summary(&columns, &w).await?;
        Ok(Response::new(SummaryResponse {
            grouping: columns.iter().map(|(c, _)| c.to_string()).collect(),
            rows,
        }))
    }

    async fn get_job_parameters(
        &self,
        req: Request<Ids>,
    ) -> Result<Response<GetJobParametersResponse>, Status> {
        let who = identity(&req)?.clone();
        let (ids, failed, _) = self
            .authorize(&who, &req.get_ref().ids, Action::Read)
            .await?;
        let parameters = self.0.db.parameters(&ids).await?;
        Ok(Response::new(GetJobParametersResponse {
            parameters,
            failed,
        }))
    }
}

/// How far ahead of the server's clock a reported time may be.
const MAX_CLOCK_SKEW_S: i64 = 300;

/// Longest job parameter value accepted.
const MAX_PARAMETER_VALUE: usize = 64 * 1024;

#[tonic::async_trait]
impl JobStateUpdate for WmsService {
    async fn set_job_status(
        &self,
        req: Request<SetJobStatusRequest>,
    ) -> Result<Response<SetJobStatusResponse>, Status> {
        let who = identity(&req)?.clone();
        let SetJobStatusRequest { updates, force } = req.into_inner();
        if force && !who.has("JobAdministrator") {
            return Err(WmsError::PermissionDenied(
                "forcing a status needs JobAdministrator".into(),
            )
            .into());
        }
        let mut failed = Failed::new();
        let mut by_job: BTreeMap<u64, Vec<Update>> = BTreeMap::new();
        let now = time::now();
        // Reports from the future would freeze the job: refuse them.
        let latest = time::format(chrono::Utc::now() + chrono::Duration::seconds(MAX_CLOCK_SKEW_S));
        for u in &updates {
            let status = if u.status.is_empty() {
                None
            } else {
                match u.status.parse::<JobStatus>() {
                    Ok(s) => Some(s),
                    Err(e) => {
                        failed.insert(
                            u.job_id,
                            failed_item(&WmsError::InvalidArgument(e.to_string())),
                        );
                        continue;
                    }
                }
            };
            if status.is_none() && u.minor_status.is_empty() && u.application_status.is_empty() {
                failed.insert(
                    u.job_id,
                    failed_item(&WmsError::InvalidArgument(
                        "an update needs a status, minor or application status".into(),
                    )),
                );
                continue;
            }
            let when = match &u.time {
                None => now.clone(),
                Some(ts) => match time::from_proto(ts) {
                    Some(t) if t <= latest => t,
                    Some(_) => {
                        failed.insert(
                            u.job_id,
                            failed_item(&WmsError::InvalidArgument(format!(
                                "time is more than {MAX_CLOCK_SKEW_S} s in the future"
                            ))),
                        );
                        continue;
                    }
                    None => {
                        failed.insert(
                            u.job_id,
                            failed_item(&WmsError::InvalidArgument("invalid timestamp".into())),
                        );
                        continue;
                    }
                },
            };
            by_job.entry(u.job_id).or_default().push(Update {
                time: when,
                status,
                minor_status: (!u.minor_status.is_empty()).then(|| clip(&u.minor_status, 128)),
                application_status: (!u.application_status.is_empty())
                    .then(|| clip(&u.application_status, 255)),
                source: if u.source.is_empty() {
                    "Unknown".into()
                } else {
                    clip(&u.source, 60)
                },
            });
        }
        let ids: Vec<u64> = by_job
            .keys()
            .copied()
            .filter(|id| !failed.contains_key(id))
            .collect();
        let (ok, auth_failed, _) = self.authorize(&who, &ids, Action::Report).await?;
        failed.extend(auth_failed);
        let ok: std::collections::HashSet<u64> = ok.into_iter().collect();
        let updates: BTreeMap<u64, Vec<Update>> = by_job
            .into_iter()
            .filter(|(id, _)| ok.contains(id))
            .collect();
        let mode = if force {
            Apply::Forced
        } else {
            Apply::Reported
        };
        let results = self.0.db.apply_updates(updates, mode).await?;
        let mut succeeded = HashMap::new();
        for (id, r) in results {
            match r {
                Ok(s) => {
                    succeeded.insert(
                        id,
                        JobStatusResult {
                            status: s.status.as_str().into(),
                            minor_status: s.minor_status,
                            application_status: s.application_status,
                        },
                    );
                }
                Err(e) => {
                    failed.insert(id, failed_item(&e));
                }
            }
        }
        Ok(Response::new(SetJobStatusResponse { succeeded, failed }))
    }

    async fn send_heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let who = identity(&req)?.clone();
        let beats = req.into_inner().heartbeats;
        let ids: Vec<u64> = beats.iter().map(|b| b.job_id).collect();
        let (ok, failed, owners) = self.authorize(&who, &ids, Action::Report).await?;
        let ok: std::collections::HashSet<u64> = ok.into_iter().collect();
        let beats: Vec<_> = beats
            .into_iter()
            .filter(|b| ok.contains(&b.job_id))
            .collect();
        let (commands, existing) = self.0.db.heartbeat(&beats).await?;
        // A heartbeat brings Matched and Stalled jobs to Running.
        let now = time::now();
        let revive: BTreeMap<u64, Vec<Update>> = existing
            .iter()
            .filter(|id| {
                owners
                    .get(id)
                    .is_some_and(|o| o.status == "Matched" || o.status == "Stalled")
            })
            .map(|id| {
                (
                    *id,
                    vec![Update {
                        time: now.clone(),
                        status: Some(JobStatus::Running),
                        minor_status: None,
                        application_status: None,
                        source: "Heartbeat".into(),
                    }],
                )
            })
            .collect();
        if !revive.is_empty() {
            self.0.db.apply_updates(revive, Apply::Server).await?;
        }
        Ok(Response::new(HeartbeatResponse { commands, failed }))
    }

    async fn set_job_parameters(
        &self,
        req: Request<SetJobParametersRequest>,
    ) -> Result<Response<BulkResult>, Status> {
        let who = identity(&req)?.clone();
        let params = req.into_inner().parameters;
        let mut failed = Failed::new();
        for p in &params {
            let problem = if p.name.is_empty() || p.name.chars().count() > 100 {
                Some("a parameter name has 1 to 100 characters")
            } else if p.value.len() > MAX_PARAMETER_VALUE {
                Some("a parameter value has at most 64 KiB")
            } else {
                None
            };
            if let Some(m) = problem {
                failed.insert(
                    p.job_id,
                    failed_item(&WmsError::InvalidArgument(format!("{}: {m}", p.name))),
                );
            }
        }
        let ids: Vec<u64> = params
            .iter()
            .map(|p| p.job_id)
            .filter(|id| !failed.contains_key(id))
            .collect();
        let (ok, auth_failed, _) = self.authorize(&who, &ids, Action::Report).await?;
        failed.extend(auth_failed);
        let allowed_ids: std::collections::HashSet<u64> = ok.iter().copied().collect();
        let params: Vec<_> = params
            .into_iter()
            .filter(|p| allowed_ids.contains(&p.job_id))
            .collect();
        self.0.db.set_parameters(&params).await?;
        Ok(Response::new(BulkResult {
            succeeded: ok,
            failed,
        }))
    }
}
