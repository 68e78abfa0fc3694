//! The pure part of DIRAC's Limiter: which job types a site must not receive right now.
//!
//! Two kinds of option, both per site and job type (`Operations/…/JobScheduling/`):
//! - `RunningLimit/<Site>/JobType/<Value> = N`: once `N` jobs of that type run (or are matched
//!   or stalled) at the site, the type is excluded there;
//! - `MatchingDelay/<Site>/JobType/<Value> = seconds`: after one job of that type is matched at
//!   the site, the type is excluded there for that long.
//!
//! The caller owns the counters and the [`DelayState`] and passes the time in, so the
//! functions here stay deterministic.

use std::collections::{BTreeSet, HashMap};

use crate::MatchError;

/// Configured limits, by site then job type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteLimits {
    running: HashMap<String, HashMap<String, u64>>,
    delays: HashMap<String, HashMap<String, u64>>,
}

impl SiteLimits {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_running_limit(&mut self, site: &str, job_type: &str, limit: u64) {
        self.running
            .entry(site.to_owned())
            .or_default()
            .insert(job_type.to_owned(), limit);
    }

    pub fn set_matching_delay(&mut self, site: &str, job_type: &str, seconds: u64) {
        self.delays
            .entry(site.to_owned())
            .or_default()
            .insert(job_type.to_owned(), seconds);
    }

    /// Reads one option as the configuration spells it, relative to `JobScheduling/`:
    /// `RunningLimit/<Site>/JobType/<Value>` or `MatchingDelay/<Site>/JobType/<Value>`.
    /// Other job attributes and per-CE limits are not supported and are rejected.
    pub fn insert_option(&mut self, path: &str, value: u64) -> Result<(), MatchError> {
        let invalid = |reason| MatchError::InvalidLimit {
            path: path.to_owned(),
            reason,
        };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let [kind, site, attribute, job_type] = parts.as_slice() else {
            return Err(invalid("expected <kind>/<site>/JobType/<value>"));
        };
        if *attribute != "JobType" {
            return Err(invalid("only JobType limits are supported"));
        }
        if site.is_empty() || job_type.is_empty() {
            return Err(invalid("empty site or job type"));
        }
        match *kind {
            "RunningLimit" => self.set_running_limit(site, job_type, value),
            "MatchingDelay" => self.set_matching_delay(site, job_type, value),
            _ => return Err(invalid("expected RunningLimit or MatchingDelay")),
        }
        Ok(())
    }

    /// Whether any limit or delay is set for `site`.
    pub fn has_site(&self, site: &str) -> bool {
        self.running.contains_key(site) || self.delays.contains_key(site)
    }

    pub fn running_limit(&self, site: &str, job_type: &str) -> Option<u64> {
        self.running.get(site)?.get(job_type).copied()
    }

    pub fn matching_delay(&self, site: &str, job_type: &str) -> Option<u64> {
        self.delays.get(site)?.get(job_type).copied()
    }
}

/// Until when each `(site, job type)` is held back by its `MatchingDelay`; the matcher process
/// keeps one (DIRAC keeps it in memory per matcher too).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DelayState {
    until: HashMap<String, HashMap<String, u64>>,
}

impl DelayState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes a match of `job_type` at `site` at time `now_s`; starts the delay if one is set.
    pub fn record_match(&mut self, site: &str, job_type: &str, now_s: u64, limits: &SiteLimits) {
        let Some(delay) = limits.matching_delay(site, job_type).filter(|&d| d > 0) else {
            return;
        };
        let per_site = self.until.entry(site.to_owned()).or_default();
        per_site.retain(|_, until| *until > now_s);
        per_site.insert(job_type.to_owned(), now_s.saturating_add(delay));
    }

    /// Whether `job_type` is still held back at `site` at `now_s`.
    pub fn is_delayed(&self, site: &str, job_type: &str, now_s: u64) -> bool {
        self.until
            .get(site)
            .and_then(|m| m.get(job_type))
            .is_some_and(|&until| now_s < until)
    }
}

/// The job types `site` must not receive at `now_s`: those whose running count (from
/// `running`, by job type) reached their `RunningLimit`, and those within a `MatchingDelay`.
/// Pass the result to [`Index::match_job`](crate::Index::match_job).
pub fn excluded_job_types(
    site: &str,
    running: &HashMap<String, u64>,
    limits: &SiteLimits,
    delays: &DelayState,
    now_s: u64,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Some(per_type) = limits.running.get(site) {
        for (job_type, &limit) in per_type {
            if running.get(job_type).copied().unwrap_or(0) >= limit {
                out.insert(job_type.clone());
            }
        }
    }
    if let Some(per_type) = delays.until.get(site) {
        for (job_type, &until) in per_type {
            if now_s < until {
                out.insert(job_type.clone());
            }
        }
    }
    out
}
