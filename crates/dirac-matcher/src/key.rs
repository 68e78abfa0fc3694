//! What identifies a task queue, and the two normalizations applied to a job before it joins one:
//! CPU-time segments and the user-priority clamp.

use std::collections::BTreeSet;

/// The exact key of a task queue: jobs whose requirements produce the same key share a queue.
///
/// `cpu_time` is already rounded with [`cpu_segment`]; the sets are compared exactly (a job
/// allowed at `{A, B}` and one allowed at `{A}` land in different queues).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TqKey {
    pub owner: String,
    pub owner_group: String,
    pub vo: String,
    /// Seconds, rounded up to a segment.
    pub cpu_time: u64,
    pub sites: BTreeSet<String>,
    pub grid_ces: BTreeSet<String>,
    pub banned_sites: BTreeSet<String>,
    pub platforms: BTreeSet<String>,
    /// Empty means the default job type, [`DEFAULT_JOB_TYPE`].
    pub job_types: BTreeSet<String>,
    pub tags: BTreeSet<String>,
}

/// The job type a task queue without explicit job types is treated as.
pub const DEFAULT_JOB_TYPE: &str = "User";

impl TqKey {
    /// The job types this queue's jobs count as: its own, or [`DEFAULT_JOB_TYPE`] when empty.
    pub fn effective_job_types(&self) -> impl Iterator<Item = &str> + '_ {
        let default = self.job_types.is_empty().then_some(DEFAULT_JOB_TYPE);
        self.job_types.iter().map(String::as_str).chain(default)
    }
}

/// DIRAC's default `JobScheduling/taskQueueCPUTimeIntervals`, in seconds: 6 min, 30 min, 1 h,
/// 6 h, 12 h, 1 d, 2 d, 3 d, 4 d, 6 d, 8 d, 10 d, 12.5 d.
pub const DEFAULT_CPU_SEGMENTS: &[u64] = &[
    360, 1_800, 3_600, 21_600, 43_200, 86_400, 172_800, 259_200, 345_600, 518_400, 691_200,
    864_000, 1_080_000,
];

/// Rounds `cpu_time` up to the first segment that holds it; above the last segment the value is
/// kept as is. `segments` must be sorted ascending (as [`DEFAULT_CPU_SEGMENTS`] is).
pub fn cpu_segment(cpu_time: u64, segments: &[u64]) -> u64 {
    let at = segments.partition_point(|&s| s < cpu_time);
    segments.get(at).copied().unwrap_or(cpu_time)
}

/// Clamps a job's `UserPriority` into the `RealPriority` used for the lottery inside a queue:
/// ≤ 0.001 becomes 1e-5, ≥ 10 becomes 1e6. NaN, which no validated JDL produces, counts as the
/// lowest.
pub fn real_priority(user_priority: f64) -> f64 {
    if user_priority <= 0.001 || user_priority.is_nan() {
        1e-5
    } else if user_priority >= 10.0 {
        1e6
    } else {
        user_priority
    }
}
