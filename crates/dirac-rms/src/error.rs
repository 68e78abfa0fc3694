//! The RMS error enum; its category decides the gRPC status (dirac-core
//! maps categories to statuses in one place).

use dirac_core::error::{Category, ServiceError, db_category};

#[derive(Debug, thiserror::Error)]
pub enum RmsError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

impl RmsError {
    /// The database error inside, if any.
    pub fn sql(&self) -> Option<&sqlx::Error> {
        match self {
            RmsError::Db(e) => Some(e),
            _ => None,
        }
    }
}

impl ServiceError for RmsError {
    fn category(&self) -> Category {
        match self {
            RmsError::InvalidArgument(_) => Category::InvalidArgument,
            RmsError::NotFound(_) => Category::NotFound,
            RmsError::PermissionDenied(_) => Category::PermissionDenied,
            RmsError::FailedPrecondition(_) => Category::FailedPrecondition,
            RmsError::Db(e) => db_category(e),
        }
    }
}

pub type Result<T, E = RmsError> = std::result::Result<T, E>;
