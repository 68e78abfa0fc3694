//! gRPC handlers of the ReqManager: proto in, [`ReqDb`] calls, proto out.
//! Requests belong to the caller (owner, group and VO come from the token,
//! never from the message); a job token may only put requests for its own
//! job (the failover of its outputs).

use std::sync::Arc;

use dirac_core::auth::{Identity, identity};
use dirac_core::error::{item_error, to_status};
use dirac_proto::common::{BulkResult, Ids};
use dirac_proto::rms as pb;
use tonic::{Request as Rpc, Response, Status};

use crate::error::RmsError;
use crate::model::{self, File, FileStatus, OpStatus, Operation, ReqStatus, Request};
use crate::policy::ADMINS;
use crate::reqdb::{ListQuery, ReqDb, Summary};

/// Requests per PutRequests call.
pub const MAX_PUT: usize = 1000;
/// Ids per Get/Cancel/Delete call.
pub const MAX_IDS: usize = 10_000;
const DEFAULT_LIST: u32 = 100;
/// What a job may ask for its outputs (DIRAC's job failover).
const FAILOVER_TYPES: &[&str] = &["RegisterFile", "ReplicateAndRegister", "RemoveReplica"];
const MAX_LIST: u32 = 10_000;

#[derive(Clone)]
pub struct ReqManagerService(pub Arc<ReqDb>);

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn time(t: i64) -> String {
    if t <= 0 {
        return String::new();
    }
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn is_admin(who: &Identity) -> bool {
    who.job.is_none() && who.has_any(ADMINS)
}

/// Users only: a job token puts its failover requests and nothing else.
fn user<T>(req: &Rpc<T>) -> Result<&Identity, Status> {
    let who = identity(req)?;
    if who.job.is_some() {
        return Err(Status::permission_denied(
            "a job token may only put requests for its job",
        ));
    }
    Ok(who)
}

fn owns(who: &Identity, r: &Request) -> bool {
    is_admin(who) || (r.owner == who.username && r.vo == who.vo)
}

fn from_pb(r: pb::Request, who: &Identity) -> Result<Request, RmsError> {
    // A request belongs to a job only through that job's token (or an
    // administrator): its end ends the job.
    let job_id = match who.job {
        Some(job) if r.job_id != 0 && r.job_id != job => {
            return Err(RmsError::PermissionDenied(format!(
                "a token of job {job} cannot put requests for job {}",
                r.job_id
            )));
        }
        Some(job) => {
            if let Some(op) = r
                .operations
                .iter()
                .find(|o| !FAILOVER_TYPES.contains(&o.r#type.as_str()))
            {
                return Err(RmsError::PermissionDenied(format!(
                    "a job token may put failover operations only ({}), not {}",
                    FAILOVER_TYPES.join(", "),
                    op.r#type
                )));
            }
            job
        }
        None if r.job_id != 0 && !is_admin(who) => {
            return Err(RmsError::PermissionDenied(format!(
                "only job {} itself (its token) may put requests for it",
                r.job_id
            )));
        }
        None => r.job_id,
    };
    let request = Request {
        id: 0,
        name: r.name,
        owner: who.username.clone(),
        owner_group: who.group.clone(),
        vo: who.vo.clone(),
        job_id,
        status: ReqStatus::Waiting,
        error: String::new(),
        source_component: r.source_component,
        operations: r
            .operations
            .into_iter()
            .map(|o| Operation {
                id: 0,
                kind: o.r#type,
                status: OpStatus::Queued,
                arguments: o.arguments,
                source_se: o.source_se,
                target_se: o.target_se,
                catalog: o.catalog,
                error: String::new(),
                files: o
                    .files
                    .into_iter()
                    .map(|f| File {
                        id: 0,
                        lfn: f.lfn,
                        pfn: f.pfn,
                        guid: f.guid,
                        size: f.size,
                        checksum: f.checksum,
                        checksum_type: f.checksum_type,
                        status: FileStatus::Waiting,
                        attempt: 0,
                        error: String::new(),
                    })
                    .collect(),
                creation_time: 0,
                submit_time: 0,
                last_update: 0,
            })
            .collect(),
        creation_time: 0,
        submit_time: 0,
        last_update: 0,
        not_before: 0,
    };
    model::validate(&request).map_err(RmsError::InvalidArgument)?;
    Ok(request)
}

pub fn to_pb(r: Request) -> pb::Request {
    pb::Request {
        request_id: r.id,
        name: r.name,
        owner: r.owner,
        owner_group: r.owner_group,
        vo: r.vo,
        job_id: r.job_id,
        status: r.status.to_string(),
        error: r.error,
        source_component: r.source_component,
        operations: r
            .operations
            .into_iter()
            .map(|o| pb::Operation {
                operation_id: o.id,
                r#type: o.kind,
                status: o.status.to_string(),
                arguments: o.arguments,
                source_se: o.source_se,
                target_se: o.target_se,
                catalog: o.catalog,
                error: o.error,
                files: o
                    .files
                    .into_iter()
                    .map(|f| pb::File {
                        file_id: f.id,
                        lfn: f.lfn,
                        pfn: f.pfn,
                        guid: f.guid,
                        size: f.size,
                        checksum: f.checksum,
                        checksum_type: f.checksum_type,
                        status: f.status.to_string(),
                        attempt: f.attempt,
                        error: f.error,
                    })
                    .collect(),
                creation_time: time(o.creation_time),
                submit_time: time(o.submit_time),
                last_update: time(o.last_update),
            })
            .collect(),
        creation_time: time(r.creation_time),
        submit_time: time(r.submit_time),
        last_update: time(r.last_update),
        not_before: time(r.not_before),
    }
}

fn summary_pb(s: Summary) -> pb::RequestSummary {
    pb::RequestSummary {
        request_id: s.id,
        name: s.name,
        owner: s.owner,
        owner_group: s.owner_group,
        job_id: s.job_id,
        status: s.status.to_string(),
        error: s.error,
        last_update: time(s.last_update),
        current_operation: s.current_operation,
    }
}

fn check_ids(ids: &[u64]) -> Result<(), Status> {
    if ids.len() > MAX_IDS {
        return Err(Status::invalid_argument(format!(
            "{} ids; at most {MAX_IDS} per call",
            ids.len()
        )));
    }
    Ok(())
}

impl ReqManagerService {
    /// The requests among `ids` the caller may act on; the others fail
    /// (NotFound for unknown ids and for other owners' requests alike, so
    /// ids reveal nothing).
    async fn permitted(
        &self,
        who: &Identity,
        ids: &[u64],
        result: &mut BulkResult,
    ) -> Result<Vec<u64>, Status> {
        let found = self.0.get(ids).await.map_err(|e| to_status(&e))?;
        let mut ok = Vec::new();
        for i in ids {
            match found.get(i) {
                Some(r) if owns(who, r) => ok.push(*i),
                _ => {
                    result.failed.insert(
                        *i,
                        item_error(&RmsError::NotFound(format!("no request {i}"))),
                    );
                }
            }
        }
        Ok(ok)
    }
}

#[tonic::async_trait]
impl pb::req_manager_server::ReqManager for ReqManagerService {
    async fn put_requests(
        &self,
        req: Rpc<pb::PutRequestsRequest>,
    ) -> Result<Response<pb::PutRequestsResponse>, Status> {
        let who = identity(&req)?.clone();
        let requests = req.into_inner().requests;
        if requests.is_empty() {
            return Err(Status::invalid_argument("no request to put"));
        }
        if requests.len() > MAX_PUT {
            return Err(Status::invalid_argument(format!(
                "{} requests; at most {MAX_PUT} per call",
                requests.len()
            )));
        }
        let requests = requests
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                from_pb(r, &who).map_err(|e| match e {
                    RmsError::InvalidArgument(m) => {
                        RmsError::InvalidArgument(format!("request {i}: {m}"))
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| to_status(&e))?;
        let ids = self
            .0
            .put(requests, now())
            .await
            .map_err(|e| to_status(&e))?;
        tracing::info!(requests = ids.len(), owner = %who.sub, job = who.job, "requests put");
        Ok(Response::new(pb::PutRequestsResponse { request_ids: ids }))
    }

    async fn get_requests(
        &self,
        req: Rpc<Ids>,
    ) -> Result<Response<pb::GetRequestsResponse>, Status> {
        let who = user(&req)?.clone();
        let ids = req.into_inner().ids;
        check_ids(&ids)?;
        let found = self.0.get(&ids).await.map_err(|e| to_status(&e))?;
        let mut out = pb::GetRequestsResponse::default();
        let mut found = found;
        for i in ids {
            match found.remove(&i) {
                Some(r) if owns(&who, &r) => out.requests.push(to_pb(r)),
                _ => {
                    out.failed.insert(
                        i,
                        item_error(&RmsError::NotFound(format!("no request {i}"))),
                    );
                }
            }
        }
        Ok(Response::new(out))
    }

    async fn list_requests(
        &self,
        req: Rpc<pb::ListRequestsRequest>,
    ) -> Result<Response<pb::ListRequestsResponse>, Status> {
        let who = user(&req)?.clone();
        let q = req.into_inner();
        let mut statuses = Vec::new();
        for s in &q.statuses {
            statuses.push(ReqStatus::parse(s).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "unknown request status '{s}' (one of {})",
                    ReqStatus::ALL
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?);
        }
        if q.job_ids.len() > 500 {
            return Err(Status::invalid_argument("at most 500 job ids per listing"));
        }
        if q.all_owners && !is_admin(&who) {
            return Err(Status::permission_denied(
                "only request administrators see everyone's requests",
            ));
        }
        let limit = match q.limit {
            0 => DEFAULT_LIST,
            n => n.min(MAX_LIST),
        };
        let query = ListQuery {
            statuses,
            job_ids: q.job_ids,
            owner: (!q.all_owners).then(|| (who.username.clone(), who.vo.clone())),
            limit: u64::from(limit),
        };
        let found = self.0.list(&query).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(pb::ListRequestsResponse {
            requests: found.into_iter().map(summary_pb).collect(),
        }))
    }

    async fn cancel_requests(&self, req: Rpc<Ids>) -> Result<Response<BulkResult>, Status> {
        let who = user(&req)?.clone();
        let ids = req.into_inner().ids;
        check_ids(&ids)?;
        let mut result = BulkResult::default();
        let ok = self.permitted(&who, &ids, &mut result).await?;
        for (i, canceled) in self.0.cancel(&ok, now()).await.map_err(|e| to_status(&e))? {
            if canceled {
                result.succeeded.push(i);
            } else {
                result.failed.insert(
                    i,
                    item_error(&RmsError::FailedPrecondition(format!(
                        "request {i} is already final"
                    ))),
                );
            }
        }
        Ok(Response::new(result))
    }

    async fn delete_requests(&self, req: Rpc<Ids>) -> Result<Response<BulkResult>, Status> {
        let who = user(&req)?.clone();
        let ids = req.into_inner().ids;
        check_ids(&ids)?;
        let mut result = BulkResult::default();
        let ok = self.permitted(&who, &ids, &mut result).await?;
        for (i, deleted) in self.0.delete(&ok).await.map_err(|e| to_status(&e))? {
            if deleted {
                result.succeeded.push(i);
            } else {
                result.failed.insert(
                    i,
                    item_error(&RmsError::FailedPrecondition(format!(
                        "request {i} is not final: cancel it first"
                    ))),
                );
            }
        }
        Ok(Response::new(result))
    }
}
