//! Request management: requests of operations (register, replicate,
//! remove files …) that agents carry out in order, retrying what fails —
//! the failover path of jobs whose outputs could not be registered or
//! copied, and of users' bulk data actions.
//!
//! Start with [`model`] (the states and DIRAC's rules for them, pure),
//! then [`reqdb`] (ReqDB on SQLite, MariaDB or PostgreSQL, with atomic
//! claims for the agents) and [`service`] (the ReqManager gRPC handlers);
//! every method's access rule is in [`policy`].

pub mod agent;
pub mod error;
pub mod handlers;
pub mod model;
pub mod policy;
pub mod reqdb;
pub mod schema;
pub mod service;

use std::sync::Arc;

use dirac_core::db::Db;
use dirac_core::server::ServiceSet;

pub use error::RmsError;
pub use reqdb::ReqDb;

/// Largest gRPC message of the ReqManager (a bulk put).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// The request-management services of one installation.
pub struct Rms {
    pub reqdb: Arc<ReqDb>,
}

impl Rms {
    /// ReqDB on `db`, migrated.
    pub async fn open(db: Db) -> Result<Self, RmsError> {
        Ok(Rms {
            reqdb: Arc::new(ReqDb::open(db).await?),
        })
    }

    /// Add the ReqManager service to `set`.
    pub fn register_services(&self, set: &mut ServiceSet) {
        use dirac_proto::rms::req_manager_server::ReqManagerServer;
        set.add(
            ReqManagerServer::new(service::ReqManagerService(self.reqdb.clone()))
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        );
    }
}
