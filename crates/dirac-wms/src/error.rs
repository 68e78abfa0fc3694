//! The WMS error enum; its category decides the gRPC status (dirac-core maps
//! categories to statuses in one place).

use dirac_core::error::{Category, ServiceError, db_category};

#[derive(Debug, thiserror::Error)]
pub enum WmsError {
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
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

impl ServiceError for WmsError {
    fn category(&self) -> Category {
        match self {
            WmsError::InvalidArgument(_) => Category::InvalidArgument,
            WmsError::NotFound(_) => Category::NotFound,
            WmsError::PermissionDenied(_) => Category::PermissionDenied,
            WmsError::AlreadyExists(_) => Category::AlreadyExists,
            WmsError::FailedPrecondition(_) => Category::FailedPrecondition,
            WmsError::ResourceExhausted(_) => Category::ResourceExhausted,
            WmsError::Unavailable(_) => Category::Unavailable,
            WmsError::Db(e) => db_category(e),
            WmsError::Internal(_) => Category::Internal,
        }
    }
}

impl From<WmsError> for tonic::Status {
    fn from(e: WmsError) -> Self {
        dirac_core::error::to_status(&e)
    }
}

pub type Result<T, E = WmsError> = std::result::Result<T, E>;
