//! Workload management: JobManager, JobMonitoring and JobStateUpdate over
//! JobDB/JobLoggingDB, and the first optimizer step (JobSanity).
//!
//! Start with [`state`] (DIRAC's job state machine, pure) and [`submit`]
//! (JDL texts to job rows, pure); [`jobdb`] turns their decisions into SQL;
//! [`service`] holds the gRPC handlers and [`optimizer`] the agent that moves
//! Received jobs through Checking to Waiting. Access rules live in
//! [`policy`]: every method of the three services is registered there.

pub mod error;
pub mod jobdb;
pub mod optimizer;
pub mod policy;
pub mod schema;
pub mod search;
pub mod service;
pub mod state;
pub mod submit;

use std::sync::Arc;

use dirac_core::config::DiracConfig;
use dirac_core::server::ServiceSet;
use tokio::sync::Notify;

pub use error::WmsError;
pub use jobdb::JobDb;

/// Largest gRPC message the WMS accepts (a submission of many JDLs).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Shared state of the WMS services and agents.
pub struct Wms {
    pub db: JobDb,
    pub config: Arc<DiracConfig>,
    /// Wakes the optimizer when jobs arrive.
    pub optimizer_wake: Notify,
}

impl Wms {
    pub fn new(db: JobDb, config: Arc<DiracConfig>) -> Arc<Self> {
        Arc::new(Wms {
            db,
            config,
            optimizer_wake: Notify::new(),
        })
    }

    /// Add the three WMS gRPC services to `set`.
    pub fn register_services(self: &Arc<Self>, set: &mut ServiceSet) {
        use dirac_proto::wms::job_manager_server::JobManagerServer;
        use dirac_proto::wms::job_monitoring_server::JobMonitoringServer;
        use dirac_proto::wms::job_state_update_server::JobStateUpdateServer;
        let svc = service::WmsService(self.clone());
        set.add(
            JobManagerServer::new(svc.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        );
        set.add(
            JobMonitoringServer::new(svc.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        );
        set.add(
            JobStateUpdateServer::new(svc)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        );
    }
}
