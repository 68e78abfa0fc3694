//! Data management: the FileCatalog with the DIRAC File Catalog's
//! semantics, and the StorageElement service through which clients reach
//! the installation's storage elements.
//!
//! Start with [`lfn`] (what a valid path is) and [`query`] (the metadata
//! query language, pure), then [`catalog`], the repository that turns
//! bulk requests into SQL on SQLite, MariaDB or PostgreSQL, and [`perms`]
//! (owner/group/mode and VO isolation). [`service`] holds the gRPC
//! handlers; every method's access rule is in [`policy`].

pub mod catalog;
pub mod error;
pub mod lfn;
pub mod perms;
pub mod policy;
pub mod query;
pub mod schema;
pub mod service;
pub mod storage_service;

use std::path::Path;
use std::sync::Arc;

use dirac_core::config::DiracConfig;
use dirac_core::db::Db;
use dirac_core::server::ServiceSet;

pub use catalog::Catalog;
pub use error::DmsError;

/// Largest gRPC message of the data services (a bulk registration).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// The data-management services of one installation.
pub struct Dms {
    pub catalog: Arc<Catalog>,
    pub storage: Arc<dirac_storage::StorageElements>,
    scratch: std::path::PathBuf,
    failover: Vec<String>,
}

impl Dms {
    /// Open the catalog on `db` and the storage elements of the
    /// configuration (relative `file` paths under `data_dir/se`).
    pub async fn open(db: Db, config: Arc<DiracConfig>, data_dir: &Path) -> Result<Self, DmsError> {
        let storage = dirac_storage::StorageElements::from_config(
            &config.resources.storage_elements,
            &data_dir.join("se"),
        )?;
        Ok(Dms {
            failover: config.operations.data_management.failover_ses.clone(),
            catalog: Arc::new(Catalog::open(db, config).await?),
            storage: Arc::new(storage),
            scratch: data_dir.join("scratch"),
        })
    }

    /// Add the FileCatalog and StorageElement services to `set`.
    pub fn register_services(&self, set: &mut ServiceSet) {
        use dirac_proto::dms::file_catalog_server::FileCatalogServer;
        use dirac_proto::dms::storage_element_server::StorageElementServer;
        set.add(
            FileCatalogServer::new(service::CatalogService(self.catalog.clone()))
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        );
        set.add(
            StorageElementServer::new(storage_service::StorageService {
                catalog: self.catalog.clone(),
                ses: self.storage.clone(),
                scratch: self.scratch.clone(),
                failover: self.failover.clone(),
            })
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE),
        );
    }
}
