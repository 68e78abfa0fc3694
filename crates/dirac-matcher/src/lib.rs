//! DIRAC's task-queue index, fair-share priorities and pilot ↔ job matching, as plain data and
//! functions: no IO, no clock, no database. The WMS service feeds it waiting jobs and pilot
//! requests and turns its decisions into SQL and gRPC.
//!
//! Where to start:
//!
//! - [`TqKey`] (`key.rs`) is what a job's requirements reduce to; jobs with equal keys share a
//!   task queue. [`cpu_segment`] and [`real_priority`] are the two normalizations on the way in.
//! - [`ResourceDescription::into_resource`] (`resource.rs`) validates what a pilot sends and
//!   derives its capability tags.
//! - [`matches`] (`rules.rs`) states every matching rule in one boolean expression; read it
//!   before the index.
//! - [`Index`] (`index.rs`, whose module comment describes the data layout) holds the queues
//!   and hands out jobs with [`Index::match_job`]; [`Index::recompute_priorities`] applies the
//!   fair share of [`task_queue_priorities`] (`shares.rs`).
//! - [`limits`] derives the job types a site must not receive now; [`Index::explain`] words why
//!   a job waits.
//!
//! ```
//! use std::collections::BTreeSet;
//! use dirac_matcher::{Index, ResourceDescription, ShareConfig, TqKey, DEFAULT_CPU_SEGMENTS, cpu_segment};
//!
//! let mut index = Index::new();
//! let key = TqKey {
//!     owner: "alice".into(),
//!     owner_group: "lhcb_user".into(),
//!     vo: "lhcb".into(),
//!     cpu_time: cpu_segment(3000, DEFAULT_CPU_SEGMENTS),
//!     ..TqKey::default()
//! };
//! index.insert(42, key, 1.0);
//! index.recompute_priorities(&ShareConfig::new());
//!
//! let pilot = ResourceDescription {
//!     vo: "lhcb".into(),
//!     site: Some("LCG.CERN.cern".into()),
//!     cpu_time: 86_400,
//!     ..ResourceDescription::default()
//! }
//! .into_resource()?;
//! let mut rng = rand::rng();
//! let found = index.match_job(&pilot, &BTreeSet::new(), &mut rng);
//! assert_eq!(found.map(|m| m.job_id), Some(42));
//! assert!(!index.contains(42));
//! # Ok::<(), dirac_matcher::MatchError>(())
//! ```

mod explain;
mod fenwick;
mod hash;
mod index;
mod key;
pub mod limits;
mod resource;
mod rules;
mod shares;

pub use explain::Explanation;
pub use index::{Index, Match, TqId};
pub use key::{DEFAULT_CPU_SEGMENTS, DEFAULT_JOB_TYPE, TqKey, cpu_segment, real_priority};
pub use resource::{MAX_CPU_TIME, MAX_PROCESSORS, MAX_RAM_MB, Resource, ResourceDescription};
pub use rules::{Mismatch, first_mismatch, matches, mismatches};
pub use shares::{
    BACKGROUND_PRIORITY, DEFAULT_JOB_SHARE, GroupShare, MIN_TQ_PRIORITY, ShareConfig,
    task_queue_priorities,
};

/// Errors of this crate: invalid pilot descriptions and invalid configuration.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum MatchError {
    #[error("resource field {field} is missing")]
    Missing { field: &'static str },
    #[error("resource field {field} is out of range: {value} (allowed {min}..={max})")]
    OutOfRange {
        field: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("resource field {field} is invalid: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
    #[error("job share of group {vo}/{group} must be finite and >= 0, got {value}")]
    InvalidShare {
        vo: String,
        group: String,
        value: f64,
    },
    #[error("limit option {path:?} is invalid: {reason}")]
    InvalidLimit { path: String, reason: &'static str },
}

#[cfg(test)]
mod tests;
