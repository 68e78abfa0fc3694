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
pub mod query;
pub mod schema;

pub use error::DmsError;
