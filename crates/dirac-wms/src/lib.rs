//! Workload management: JobManager, JobMonitoring and JobStateUpdate over
//! JobDB/JobLoggingDB, and the first optimizer step (JobSanity).
//!
//! Start with [`state`] (DIRAC's job state machine, pure) and [`submit`]
//! (JDL texts to job rows, pure); [`jobdb`] turns their decisions into SQL;
//! [`service`] holds the gRPC handlers and [`optimizer`] the agent that moves
//! Received jobs through Checking to Waiting. Access rules live in
//! [`policy`]: every method of the three services is registered there.

pub mod agents;
pub mod error;
pub mod inputdata;
pub mod jobdb;
pub mod matching;
pub mod optimizer;
pub mod pilot_service;
pub mod pilotdb;
pub mod policy;
pub mod sandbox;
pub mod schema;
pub mod search;
pub mod service;
pub mod sites;
pub mod state;
pub mod submit;
pub mod taskqueuedb;

use std::sync::Arc;

use dirac_core::config::DiracConfig;
use dirac_core::server::ServiceSet;
use dirac_matcher::ResourceDescription;
use tokio::sync::Notify;

pub use error::WmsError;
pub use jobdb::JobDb;

/// Largest gRPC message the WMS accepts (a submission of many JDLs).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Shared state of the WMS services and agents.
pub struct Wms {
    pub db: JobDb,
    pub pilots: pilotdb::PilotDb,
    pub sandboxes: sandbox::SandboxDb,
    pub sandbox_backend: Arc<dyn sandbox::SandboxBackend>,
    pub matcher: matching::MatcherState,
    pub config: Arc<DiracConfig>,
    /// Wakes the optimizer when jobs arrive.
    pub optimizer_wake: Notify,
    /// Signs job tokens for matched jobs, when enabled.
    job_tokens: std::sync::OnceLock<Arc<dirac_core::auth::TokenIssuer>>,
    /// Where input data is looked up, when the installation has a catalog.
    replica_catalog: std::sync::OnceLock<Arc<dyn inputdata::ReplicaCatalog>>,
    /// Banned sites (test jobs only).
    pub site_mask: sites::SiteMask,
    /// The computing elements, when this process can reach them.
    pilot_control: std::sync::OnceLock<Arc<dyn sites::PilotControl>>,
}

impl Wms {
    pub fn new(
        db: JobDb,
        config: Arc<DiracConfig>,
        sandbox_backend: Arc<dyn sandbox::SandboxBackend>,
    ) -> Arc<Self> {
        Arc::new(Wms {
            pilots: pilotdb::PilotDb::new(db.db().clone()),
            sandboxes: sandbox::SandboxDb::new(db.db().clone()),
            matcher: matching::MatcherState::new(&config),
            sandbox_backend,
            db,
            config,
            optimizer_wake: Notify::new(),
            job_tokens: std::sync::OnceLock::new(),
            replica_catalog: std::sync::OnceLock::new(),
            site_mask: sites::SiteMask::default(),
            pilot_control: std::sync::OnceLock::new(),
        })
    }

    /// Look up jobs' input data in `catalog` (the InputData step).
    pub fn enable_input_data(&self, catalog: Arc<dyn inputdata::ReplicaCatalog>) {
        let _ = self.replica_catalog.set(catalog);
    }

    pub fn replica_catalog(&self) -> Option<&Arc<dyn inputdata::ReplicaCatalog>> {
        self.replica_catalog.get()
    }

    /// Let the PilotManager reach the computing elements.
    pub fn enable_pilot_control(&self, control: Arc<dyn sites::PilotControl>) {
        let _ = self.pilot_control.set(control);
    }

    pub fn pilot_control(&self) -> Option<&Arc<dyn sites::PilotControl>> {
        self.pilot_control.get()
    }

    /// Waiting jobs a queue offering `resource` could run (test jobs only
    /// when its site is banned): the SiteDirector's demand.
    pub fn demand(&self, resource: ResourceDescription) -> Result<u64, WmsError> {
        let site = resource.site.clone().unwrap_or_default();
        let resource = resource
            .into_resource()
            .map_err(|e| WmsError::InvalidArgument(e.to_string()))?;
        let resource = self
            .site_mask
            .restrict(&resource, &site)
            .unwrap_or(resource);
        Ok(self.matcher.demand(&resource))
    }

    /// Give matched jobs a token of their owner signed by `issuer`.
    pub fn enable_job_tokens(&self, issuer: Arc<dirac_core::auth::TokenIssuer>) {
        let _ = self.job_tokens.set(issuer);
    }

    /// A token of the job's owner for this job only, valid for about twice
    /// the job's CPUTime (at most 8 days) and refused once the job ends.
    pub fn job_token(&self, job: &jobdb::MatchedJob) -> Option<String> {
        let issuer = self.job_tokens.get()?;
        let properties = self
            .config
            .registry
            .vos
            .get(&job.vo)
            .and_then(|v| v.groups.get(&job.owner_group))
            .map(|g| g.properties.clone())
            .unwrap_or_default();
        let cpu_time = dirac_jdl::ClassAd::parse(&job.jdl)
            .ok()
            .and_then(|ad| ad.get("CPUTime").and_then(dirac_jdl::Value::as_int))
            .and_then(|c| u64::try_from(c).ok())
            .unwrap_or(86_400);
        let identity = dirac_core::auth::Identity {
            sub: format!("{}:{}", job.vo, job.owner),
            username: job.owner.clone(),
            vo: job.vo.clone(),
            group: job.owner_group.clone(),
            properties,
            job: Some(job.job_id),
        };
        issuer
            .issue(&identity, (cpu_time * 2 + 3600).min(8 * 86_400))
            .ok()
    }

    /// One job `who` may act on, or the error saying why not.
    pub async fn authorize_job(
        &self,
        who: &dirac_core::auth::Identity,
        id: u64,
        action: policy::Action,
    ) -> Result<jobdb::JobOwner, WmsError> {
        let owners = self.db.owners(&[id]).await?;
        let owner = owners
            .get(&id)
            .ok_or_else(|| WmsError::NotFound(format!("job {id} does not exist")))?;
        if !policy::allowed(who, action, owner) {
            return Err(WmsError::PermissionDenied(format!(
                "job {id} is not yours to {}",
                action.verb()
            )));
        }
        Ok(owner.clone())
    }

    /// Add the WMS gRPC services to `set`.
    pub fn register_services(self: &Arc<Self>, set: &mut ServiceSet) {
        use dirac_proto::wms::job_manager_server::JobManagerServer;
        use dirac_proto::wms::job_monitoring_server::JobMonitoringServer;
        use dirac_proto::wms::job_state_update_server::JobStateUpdateServer;
        use dirac_proto::wms::matcher_server::MatcherServer;
        use dirac_proto::wms::pilot_manager_server::PilotManagerServer;
        use dirac_proto::wms::sandbox_store_server::SandboxStoreServer;
        let svc = service::WmsService(self.clone());
        macro_rules! sized {
            ($server:expr) => {
                $server
                    .max_decoding_message_size(MAX_MESSAGE_SIZE)
                    .max_encoding_message_size(MAX_MESSAGE_SIZE)
            };
        }
        set.add(sized!(JobManagerServer::new(svc.clone())));
        set.add(sized!(JobMonitoringServer::new(svc.clone())));
        set.add(sized!(JobStateUpdateServer::new(svc)));
        set.add(sized!(MatcherServer::new(matching::MatcherService(
            self.clone()
        ))));
        set.add(sized!(PilotManagerServer::new(
            pilot_service::PilotService(self.clone())
        )));
        set.add(sized!(SandboxStoreServer::new(
            pilot_service::SandboxService(self.clone())
        )));
        set.add(dirac_proto::wms::site_mask_server::SiteMaskServer::new(
            pilot_service::SiteMaskService(self.clone()),
        ));
    }
}
