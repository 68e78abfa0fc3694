//! The error model shared by every service: a fixed set of categories, each
//! mapped to one `tonic::Status` code in exactly one place ([`to_status`]).
//!
//! Each service keeps its own error enum and tells which [`Category`] a
//! variant belongs to; the category name doubles as a metric label and as the
//! `code` of a per-item failure in bulk results.

use std::fmt;

/// What kind of failure an error is, from the caller's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
    Internal,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::InvalidArgument => "InvalidArgument",
            Category::NotFound => "NotFound",
            Category::AlreadyExists => "AlreadyExists",
            Category::PermissionDenied => "PermissionDenied",
            Category::Unauthenticated => "Unauthenticated",
            Category::FailedPrecondition => "FailedPrecondition",
            Category::ResourceExhausted => "ResourceExhausted",
            Category::Unavailable => "Unavailable",
            Category::Internal => "Internal",
        }
    }

    fn code(self) -> tonic::Code {
        match self {
            Category::InvalidArgument => tonic::Code::InvalidArgument,
            Category::NotFound => tonic::Code::NotFound,
            Category::AlreadyExists => tonic::Code::AlreadyExists,
            Category::PermissionDenied => tonic::Code::PermissionDenied,
            Category::Unauthenticated => tonic::Code::Unauthenticated,
            Category::FailedPrecondition => tonic::Code::FailedPrecondition,
            Category::ResourceExhausted => tonic::Code::ResourceExhausted,
            Category::Unavailable => tonic::Code::Unavailable,
            Category::Internal => tonic::Code::Internal,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every service error enum.
pub trait ServiceError: std::error::Error {
    fn category(&self) -> Category;
}

/// The one mapping from an error to a gRPC status. Internal errors are logged
/// here with their detail and reach the client without it.
pub fn to_status<E: ServiceError + ?Sized>(err: &E) -> tonic::Status {
    let category = err.category();
    match category {
        Category::Internal | Category::Unavailable => {
            tracing::error!(error = %err, category = category.as_str(), "request failed");
        }
        _ => tracing::debug!(error = %err, category = category.as_str(), "request refused"),
    }
    let message = match category {
        Category::Internal => "internal error; the server log has the details".to_string(),
        _ => err.to_string(),
    };
    tonic::Status::new(category.code(), message)
}

/// A per-item failure of a bulk call, for `failed` maps.
pub fn item_error<E: ServiceError + ?Sized>(err: &E) -> dirac_proto::common::ItemError {
    dirac_proto::common::ItemError {
        code: err.category().as_str().to_string(),
        message: err.to_string(),
    }
}

/// Map a database error to a category: connection trouble is `Unavailable`,
/// everything else `Internal`.
pub fn db_category(err: &sqlx::Error) -> Category {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            Category::Unavailable
        }
        _ => Category::Internal,
    }
}
