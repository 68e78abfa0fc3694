//! Parser, printer, validator and parametric expander for DIRAC's ClassAd-like JDL (Job
//! Description Language).
//!
//! The crate is pure: no IO, no clock, no configuration lookup. Callers pass text in and get plain
//! data out; policy values (CPU time bounds, known sites, ...) arrive through [`Policy`].
//!
//! Where to start:
//!
//! - [`ClassAd::parse`] turns JDL text into a [`ClassAd`] of [`Value`]s (`parse.rs` is a
//!   hand-written byte scanner; its module doc holds the grammar), and [`ClassAd::to_jdl`] prints
//!   the canonical form back.
//! - [`validate`] checks an ad against a [`Policy`] and returns the normalized [`JobDescription`]
//!   with defaults applied and tags derived.
//! - [`expand`] turns a parametric ad (`Parameters`, `Parameters.X`, ...) into one ad per job;
//!   [`substitute_job_id`] fills `%j` once the server assigned an id.
//!
//! ```
//! use dirac_jdl::{ClassAd, Policy, validate};
//!
//! let ad = ClassAd::parse(r#"[ Executable = "dirac-jobexec"; CPUTime = 3600; ]"#)?;
//! let job = validate(&ad, &Policy::default(), "lhcb")?;
//! assert_eq!(job.cpu_time, 3600);
//! # Ok::<(), dirac_jdl::JdlError>(())
//! ```

mod ad;
mod parametric;
mod parse;
mod validate;

pub use ad::{ClassAd, Value};
pub use parametric::{ParametricError, expand, is_parametric, substitute_job_id};
pub use parse::{MAX_DEPTH, MAX_INPUT_BYTES, ParseError};
pub use validate::{JobDescription, Policy, ValidationError, validate};

/// Any error this crate returns, for callers that handle them together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JdlError {
    #[error("jdl syntax error at {0}")]
    Parse(#[from] ParseError),
    #[error("invalid jdl: {0}")]
    Validation(#[from] ValidationError),
    #[error("invalid parametric jdl: {0}")]
    Parametric(#[from] ParametricError),
}

#[cfg(test)]
mod tests;
