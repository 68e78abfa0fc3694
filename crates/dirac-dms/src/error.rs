//! The DMS error enum; its category decides the gRPC status (dirac-core maps
//! categories to statuses in one place).

use dirac_core::error::{Category, ServiceError, db_category};

#[derive(Debug, thiserror::Error)]
pub enum DmsError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Storage(#[from] dirac_storage::StorageError),
    #[error("{0}")]
    Internal(String),
}

impl DmsError {
    /// The category name used in per-item errors.
    pub fn code(&self) -> &'static str {
        match self {
            DmsError::Storage(e) => e.code(),
            other => other.category().as_str(),
        }
    }
}

impl ServiceError for DmsError {
    fn category(&self) -> Category {
        use dirac_storage::StorageError as S;
        match self {
            DmsError::InvalidArgument(_) => Category::InvalidArgument,
            DmsError::NotFound(_) => Category::NotFound,
            DmsError::PermissionDenied(_) => Category::PermissionDenied,
            DmsError::AlreadyExists(_) => Category::AlreadyExists,
            DmsError::FailedPrecondition(_) => Category::FailedPrecondition,
            DmsError::Unavailable(_) => Category::Unavailable,
            DmsError::Db(e) => db_category(e),
            DmsError::Storage(e) => match e {
                S::Invalid(_) | S::Checksum { .. } => Category::InvalidArgument,
                S::NotFound(_) => Category::NotFound,
                S::PermissionDenied(_) => Category::PermissionDenied,
                S::NoSpace(_) => Category::ResourceExhausted,
                S::Unavailable(_) | S::Unsupported(_) => Category::Unavailable,
            },
            DmsError::Internal(_) => Category::Internal,
        }
    }
}

impl From<DmsError> for tonic::Status {
    fn from(e: DmsError) -> Self {
        dirac_core::error::to_status(&e)
    }
}

pub type Result<T, E = DmsError> = std::result::Result<T, E>;
