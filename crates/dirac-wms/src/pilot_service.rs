//! PilotManager and SandboxStore gRPC services.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use dirac_core::auth::identity;
use dirac_core::error::item_error;
use dirac_proto::common::BulkResult;
use dirac_proto::wms::pilot_manager_server::PilotManager;
use dirac_proto::wms::sandbox_chunk::Kind;
use dirac_proto::wms::sandbox_store_server::SandboxStore;
use dirac_proto::wms::{
    AppendPilotLogRequest, AssignSandboxesRequest, DownloadSandboxRequest, GetPilotsResponse,
    JobSandboxesRequest, JobSandboxesResponse, KillPilotsResponse, Pilot, PilotLogRequest,
    PilotLogResponse, PilotStamps, QueueStatus, QueueStatusRequest, QueueStatusResponse,
    RegisterPilotsRequest, RegisterPilotsResponse, SandboxChunk, SandboxHeader,
    SearchPilotsRequest, SearchPilotsResponse, SetPilotStatusRequest, SetSiteStatusRequest,
    SetSiteStatusResponse, SiteMaskRequest, SiteMaskResponse, UploadSandboxResponse,
};
use tonic::{Request, Response, Status, Streaming};

use crate::Wms;
use crate::error::WmsError;
use crate::pilotdb::MAX_LOG_BYTES;
use crate::policy::{Action, allowed};
use crate::sandbox::{CHUNK, Pfn, Staging, check_header, sandbox_path};
use crate::search::{PILOTS, Scope, build_where_in};

#[derive(Clone)]
pub struct PilotService(pub Arc<Wms>);

fn same_vo(who: &dirac_core::auth::Identity, vo: &str) -> Result<(), WmsError> {
    if who.vo != vo {
        return Err(WmsError::PermissionDenied(format!(
            "pilots of VO {vo} are not yours to manage"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl PilotManager for PilotService {
    async fn register_pilots(
        &self,
        req: Request<RegisterPilotsRequest>,
    ) -> Result<Response<RegisterPilotsResponse>, Status> {
        let who = identity(&req)?.clone();
        let pilots = req.into_inner().pilots;
        if pilots.len() > 10_000 {
            return Err(WmsError::ResourceExhausted("at most 10000 pilots per call".into()).into());
        }
        let mut failed = HashMap::new();
        let mut ok = Vec::new();
        for p in &pilots {
            if let Err(e) = same_vo(&who, &p.vo) {
                failed.insert(p.stamp.clone(), item_error(&e));
            } else {
                ok.push(p.clone());
            }
        }
        let mut registered = Vec::new();
        for (stamp, r) in self.0.pilots.register(&ok).await? {
            match r {
                Ok(()) => registered.push(stamp),
                Err(e) => {
                    failed.insert(stamp, item_error(&e));
                }
            }
        }
        registered.sort();
        Ok(Response::new(RegisterPilotsResponse { registered, failed }))
    }

    async fn set_pilot_status(
        &self,
        req: Request<SetPilotStatusRequest>,
    ) -> Result<Response<Pilot>, Status> {
        let who = identity(&req)?.clone();
        let r = req.into_inner();
        let current = self.0.pilots.get(std::slice::from_ref(&r.stamp)).await?;
        let pilot = current
            .first()
            .ok_or_else(|| WmsError::NotFound(format!("pilot {} is not registered", r.stamp)))?;
        same_vo(&who, &pilot.vo)?;
        Ok(Response::new(
            self.0
                .pilots
                .set_status(&r.stamp, &r.status, &r.reason)
                .await?,
        ))
    }

    async fn get_pilots(
        &self,
        req: Request<PilotStamps>,
    ) -> Result<Response<GetPilotsResponse>, Status> {
        let who = identity(&req)?.clone();
        let stamps = req.into_inner().stamps;
        let found = self.0.pilots.get(&stamps).await?;
        let mut failed = HashMap::new();
        let mut pilots = Vec::new();
        for stamp in &stamps {
            match found.iter().find(|p| &p.stamp == stamp) {
                None => {
                    failed.insert(
                        stamp.clone(),
                        item_error(&WmsError::NotFound(format!(
                            "pilot {stamp} is not registered"
                        ))),
                    );
                }
                Some(p) if p.vo != who.vo => {
                    failed.insert(
                        stamp.clone(),
                        item_error(&WmsError::PermissionDenied(format!(
                            "pilot {stamp} is not of your VO"
                        ))),
                    );
                }
                Some(p) => pilots.push(p.clone()),
            }
        }
        Ok(Response::new(GetPilotsResponse { pilots, failed }))
    }

    async fn search_pilots(
        &self,
        req: Request<SearchPilotsRequest>,
    ) -> Result<Response<SearchPilotsResponse>, Status> {
        let who = identity(&req)?.clone();
        let r = req.into_inner();
        let limit = match r.limit {
            0 => 100,
            n if n > 10_000 => {
                return Err(WmsError::InvalidArgument(format!("limit {n} is above 10000")).into());
            }
            n => n,
        };
        let w = build_where_in(&PILOTS, &r.filters, Scope::Vo { vo: &who.vo })?;
        let (pilots, total) = self.0.pilots.search(&w, u64::from(limit), r.offset).await?;
        Ok(Response::new(SearchPilotsResponse { pilots, total }))
    }

    async fn append_pilot_log(
        &self,
        req: Request<AppendPilotLogRequest>,
    ) -> Result<Response<BulkResult>, Status> {
        let who = identity(&req)?.clone();
        let r = req.into_inner();
        if r.text.len() > MAX_LOG_BYTES {
            return Err(WmsError::InvalidArgument("at most 1 MiB of log per call".into()).into());
        }
        let pilot = self.0.pilots.get(std::slice::from_ref(&r.stamp)).await?;
        let p = pilot
            .first()
            .ok_or_else(|| WmsError::NotFound(format!("pilot {} is not registered", r.stamp)))?;
        same_vo(&who, &p.vo)?;
        self.0.pilots.append_log(&r.stamp, &r.text).await?;
        Ok(Response::new(BulkResult::default()))
    }

    async fn get_pilot_log(
        &self,
        req: Request<PilotLogRequest>,
    ) -> Result<Response<PilotLogResponse>, Status> {
        let who = identity(&req)?.clone();
        let stamp = req.into_inner().stamp;
        let (vo, text) = self
            .0
            .pilots
            .log(&stamp)
            .await?
            .ok_or_else(|| WmsError::NotFound(format!("pilot {stamp} is not registered")))?;
        same_vo(&who, &vo)?;
        Ok(Response::new(PilotLogResponse { stamp, text }))
    }

    async fn kill_pilots(
        &self,
        req: Request<PilotStamps>,
    ) -> Result<Response<KillPilotsResponse>, Status> {
        let who = identity(&req)?.clone();
        let stamps = req.into_inner().stamps;
        if stamps.len() > 1000 {
            return Err(WmsError::ResourceExhausted("at most 1000 pilots per call".into()).into());
        }
        let control = self.control()?;
        let found = self.0.pilots.get(&stamps).await?;
        let mut killed = Vec::new();
        let mut failed = HashMap::new();
        for stamp in &stamps {
            let result = async {
                let p = found.iter().find(|p| &p.stamp == stamp).ok_or_else(|| {
                    WmsError::NotFound(format!("pilot {stamp} is not registered"))
                })?;
                same_vo(&who, &p.vo)?;
                if crate::pilotdb::FINAL_PILOT_STATES.contains(&p.status.as_str()) {
                    return Err(WmsError::FailedPrecondition(format!(
                        "pilot {stamp} is {} already",
                        p.status
                    )));
                }
                control.kill(p).await.map_err(WmsError::Unavailable)?;
                let reason = format!("killed by {}", who.username);
                self.0.pilots.set_status(stamp, "Aborted", &reason).await?;
                Ok(())
            }
            .await;
            match result {
                Ok(()) => killed.push(stamp.clone()),
                Err(e) => {
                    failed.insert(stamp.clone(), item_error(&e));
                }
            }
        }
        Ok(Response::new(KillPilotsResponse { killed, failed }))
    }

    async fn get_pilot_output(
        &self,
        req: Request<PilotLogRequest>,
    ) -> Result<Response<PilotLogResponse>, Status> {
        let who = identity(&req)?.clone();
        let stamp = req.into_inner().stamp;
        let control = self.control()?;
        let pilot = self.0.pilots.get(std::slice::from_ref(&stamp)).await?;
        let p = pilot
            .first()
            .ok_or_else(|| WmsError::NotFound(format!("pilot {stamp} is not registered")))?;
        same_vo(&who, &p.vo)?;
        let text = control.output(p).await.map_err(WmsError::Unavailable)?;
        Ok(Response::new(PilotLogResponse { stamp, text }))
    }

    async fn get_queue_status(
        &self,
        req: Request<QueueStatusRequest>,
    ) -> Result<Response<QueueStatusResponse>, Status> {
        let site = req.into_inner().site;
        let Some(control) = self.0.pilot_control() else {
            return Ok(Response::new(QueueStatusResponse::default()));
        };
        let mut queues = Vec::new();
        for q in control.queues() {
            if !site.is_empty() && q.site != site {
                continue;
            }
            let pilots = self.0.pilots.active(&q.ce, &q.queue).await?;
            let (waiting_pilots, running_pilots) = crate::sites::count_pilots(&pilots);
            queues.push(QueueStatus {
                site_banned: self.0.site_mask.is_banned(&q.site),
                waiting_jobs: self.0.demand(q.resource.clone()).unwrap_or(0),
                site: q.site,
                ce: q.ce,
                queue: q.queue,
                ce_type: q.ce_type,
                max_total: q.max_total,
                max_waiting: q.max_waiting,
                waiting_pilots,
                running_pilots,
            });
        }
        Ok(Response::new(QueueStatusResponse { queues }))
    }
}

impl PilotService {
    fn control(&self) -> Result<&Arc<dyn crate::sites::PilotControl>, WmsError> {
        self.0.pilot_control().ok_or_else(|| {
            WmsError::FailedPrecondition("this service reaches no computing element".into())
        })
    }
}

/// The site mask: anyone reads it; site and service administrators change it.
#[derive(Clone)]
pub struct SiteMaskService(pub Arc<Wms>);

#[tonic::async_trait]
impl dirac_proto::wms::site_mask_server::SiteMask for SiteMaskService {
    async fn get_site_mask(
        &self,
        _req: Request<SiteMaskRequest>,
    ) -> Result<Response<SiteMaskResponse>, Status> {
        let sites = crate::sites::list(self.0.db.db()).await?;
        Ok(Response::new(SiteMaskResponse { sites }))
    }

    async fn set_site_status(
        &self,
        req: Request<SetSiteStatusRequest>,
    ) -> Result<Response<SetSiteStatusResponse>, Status> {
        let who = identity(&req)?.clone();
        let r = req.into_inner();
        let sites = crate::sites::set(
            self.0.db.db(),
            &r.sites,
            &r.status,
            &r.reason,
            &who.username,
        )
        .await?;
        self.0.site_mask.reload(self.0.db.db()).await?;
        tracing::info!(sites = ?r.sites, status = %r.status, by = %who.username, "site mask changed");
        Ok(Response::new(SetSiteStatusResponse { sites }))
    }
}

#[derive(Clone)]
pub struct SandboxService(pub Arc<Wms>);

type ChunkStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<SandboxChunk, Status>> + Send>>;

impl SandboxService {
    /// The uploader reads its sandboxes (and its VO's pilots and
    /// administrators do); anyone who may read a job reads the sandboxes
    /// assigned to it — an output sandbox is uploaded by the pilot but
    /// belongs to the job's owner.
    async fn may_read(
        &self,
        who: &dirac_core::auth::Identity,
        row: &crate::sandbox::SandboxRow,
    ) -> Result<bool, WmsError> {
        let uploader = crate::jobdb::JobOwner {
            owner: row.owner.clone(),
            owner_group: row.owner_group.clone(),
            vo: row.vo.clone(),
            status: String::new(),
        };
        if allowed(who, Action::Read, &uploader) {
            return Ok(true);
        }
        let jobs = self.0.sandboxes.jobs_of(row.id).await?;
        let owners = self.0.db.owners(&jobs).await?;
        Ok(owners.values().any(|o| allowed(who, Action::Read, o)))
    }
}

#[tonic::async_trait]
impl SandboxStore for SandboxService {
    async fn upload_sandbox(
        &self,
        req: Request<Streaming<SandboxChunk>>,
    ) -> Result<Response<UploadSandboxResponse>, Status> {
        let who = identity(&req)?.clone();
        let mut stream = req.into_inner();
        let cfg = &self.0.config.services.sandbox_store;
        let Some(first) = stream.message().await? else {
            return Err(
                WmsError::InvalidArgument("empty upload: a header must come first".into()).into(),
            );
        };
        let Some(Kind::Header(SandboxHeader {
            size,
            checksum,
            format,
        })) = first.kind
        else {
            return Err(WmsError::InvalidArgument(
                "the first message of an upload must be its header".into(),
            )
            .into());
        };
        check_header(
            size,
            &checksum,
            &format,
            cfg.max_sandbox_size_mib * 1024 * 1024,
        )?;
        let path = sandbox_path(&who, &checksum, &format);
        let pfn = Pfn {
            se: cfg.se_name.clone(),
            path: path.clone(),
        }
        .render();
        if let Some(row) = self.0.sandboxes.find(&pfn).await? {
            self.0.sandboxes.touch(row.id).await?;
            return Ok(Response::new(UploadSandboxResponse { pfn, existed: true }));
        }
        let mut staging = Staging::create(self.0.sandbox_backend.staging_path(), size).await?;
        let received = async {
            while let Some(msg) = stream.message().await? {
                match msg.kind {
                    Some(Kind::Data(bytes)) => staging.write(&bytes).await?,
                    _ => {
                        return Err(Status::from(WmsError::InvalidArgument(
                            "only data may follow the header".into(),
                        )));
                    }
                }
            }
            Ok::<(), Status>(())
        }
        .await;
        let staged_path = staging.path.clone();
        let verified = match received {
            Ok(()) => staging.finish(&checksum).await.map_err(Status::from),
            Err(e) => Err(e),
        };
        let staged = match verified {
            Ok(p) => p,
            Err(e) => {
                let _ = tokio::fs::remove_file(&staged_path).await;
                return Err(e);
            }
        };
        if let Err(e) = self.0.sandbox_backend.put(&path, &staged).await {
            let _ = tokio::fs::remove_file(&staged).await;
            return Err(WmsError::Internal(format!("store sandbox: {e}")).into());
        }
        let new = self
            .0
            .sandboxes
            .insert(&who, &cfg.se_name, &pfn, size, &checksum, &format)
            .await?;
        tracing::info!(pfn = %pfn, bytes = size, owner = %who.username, "sandbox stored");
        Ok(Response::new(UploadSandboxResponse { pfn, existed: !new }))
    }

    type DownloadSandboxStream = ChunkStream;

    async fn download_sandbox(
        &self,
        req: Request<DownloadSandboxRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let who = identity(&req)?.clone();
        let pfn = req.into_inner().pfn;
        Pfn::parse(&pfn)?;
        let row = self
            .0
            .sandboxes
            .find(&pfn)
            .await?
            .ok_or_else(|| WmsError::NotFound(format!("no sandbox {pfn}")))?;
        if !self.may_read(&who, &row).await? {
            return Err(
                WmsError::PermissionDenied(format!("sandbox {pfn} is not yours to read")).into(),
            );
        }
        let bytes = self
            .0
            .sandbox_backend
            .get(&row.path)
            .await
            .map_err(|e| WmsError::Internal(format!("read sandbox {pfn}: {e}")))?;
        self.0.sandboxes.touch(row.id).await?;
        let header = SandboxChunk {
            kind: Some(Kind::Header(SandboxHeader {
                size: bytes.len() as u64,
                checksum: row.checksum,
                format: row.format,
            })),
        };
        let mut chunks = vec![Ok(header)];
        chunks.extend(bytes.chunks(CHUNK).map(|c| {
            Ok(SandboxChunk {
                kind: Some(Kind::Data(c.to_vec())),
            })
        }));
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn assign_sandboxes(
        &self,
        req: Request<AssignSandboxesRequest>,
    ) -> Result<Response<BulkResult>, Status> {
        let who = identity(&req)?.clone();
        let r = req.into_inner();
        if r.kind != "Input" && r.kind != "Output" {
            return Err(WmsError::InvalidArgument(format!(
                "kind must be Input or Output, not '{}'",
                r.kind
            ))
            .into());
        }
        let job = self.0.authorize_job(&who, r.job_id, Action::Report).await?;
        let mut ids = Vec::new();
        for pfn in &r.pfns {
            let row = self
                .0
                .sandboxes
                .find(pfn)
                .await?
                .ok_or_else(|| WmsError::NotFound(format!("no sandbox {pfn}")))?;
            if row.vo != job.vo {
                return Err(
                    WmsError::PermissionDenied(format!("sandbox {pfn} is of another VO")).into(),
                );
            }
            ids.push(row.id);
        }
        self.0.sandboxes.assign(r.job_id, &r.kind, &ids).await?;
        Ok(Response::new(BulkResult {
            succeeded: vec![r.job_id],
            failed: HashMap::new(),
        }))
    }

    async fn get_job_sandboxes(
        &self,
        req: Request<JobSandboxesRequest>,
    ) -> Result<Response<JobSandboxesResponse>, Status> {
        let who = identity(&req)?.clone();
        let job_id = req.into_inner().job_id;
        self.0.authorize_job(&who, job_id, Action::Read).await?;
        let (input, output) = self.0.sandboxes.of_job(job_id).await?;
        Ok(Response::new(JobSandboxesResponse { input, output }))
    }
}
