//! "Why is my job still waiting?": compares a job's task queue with the pilots that asked for
//! work recently and words the rules that kept them apart.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::shares::MIN_TQ_PRIORITY;
use crate::{Index, Mismatch, Resource, TqId, TqKey, matches, mismatches};

/// The answer of [`Index::explain`].
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    pub job_id: u64,
    /// Whether the job waits in a task queue at all.
    pub in_queue: bool,
    pub tq: Option<TqId>,
    /// How many of the recent pilots would take the job's queue.
    pub matching_pilots: usize,
    /// What keeps the recent pilots from the job, most general first; empty when at least one
    /// of them would take it.
    pub reasons: Vec<String>,
    /// One line for a human.
    pub summary: String,
}

fn list(values: &BTreeSet<String>) -> String {
    values
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn one_or_any(noun: &str, values: &BTreeSet<String>) -> String {
    if values.len() == 1 {
        format!("{noun} {}", list(values))
    } else {
        format!("any of {noun}s {}", list(values))
    }
}

impl Index {
    /// Explains why `job_id` has not been matched, given the resources of recent pilots and
    /// the job types currently excluded by limits.
    pub fn explain(
        &self,
        job_id: u64,
        recent: &[Resource],
        excluded: &BTreeSet<String>,
    ) -> Explanation {
        let mut out = Explanation {
            job_id,
            in_queue: false,
            tq: None,
            matching_pilots: 0,
            reasons: Vec::new(),
            summary: String::new(),
        };
        let Some((tq, key)) = self
            .tq_of(job_id)
            .and_then(|tq| Some((tq, self.tq_key(tq)?)))
        else {
            out.summary = format!("job {job_id} is not waiting in any task queue");
            out.reasons.push(out.summary.clone());
            return out;
        };
        out.in_queue = true;
        out.tq = Some(tq);
        let n = recent.len();
        if n == 0 {
            out.summary = "no recent pilots to compare with".to_owned();
            out.reasons.push(out.summary.clone());
            return out;
        }

        let mut failures: BTreeMap<Mismatch, usize> = BTreeMap::new();
        let mut banned_at: BTreeMap<&str, usize> = BTreeMap::new();
        let mut matching: Vec<&Resource> = Vec::new();
        for pilot in recent {
            let found = mismatches(key, pilot, excluded);
            if found.is_empty() {
                matching.push(pilot);
            }
            for m in found {
                if m == Mismatch::BannedSite
                    && let Some(site) = &pilot.site
                {
                    *banned_at.entry(site).or_default() += 1;
                }
                *failures.entry(m).or_default() += 1;
            }
        }
        out.matching_pilots = matching.len();

        if !matching.is_empty() {
            out.summary = self.competition(tq, key, &matching, excluded, n);
            return out;
        }

        let mut reasons: Vec<(bool, String)> = Vec::new();
        for (m, c) in failures {
            let all = c == n;
            let who = if all {
                format!("none of the {n} recent pilots")
            } else {
                format!("{c} of {n} recent pilots")
            };
            match m {
                Mismatch::Vo => reasons.push((all, format!("{who}: not of vo {}", key.vo))),
                Mismatch::Owner => reasons.push((
                    all,
                    format!("{who}: private pilots of another owner than {}", key.owner),
                )),
                Mismatch::OwnerGroup => reasons.push((
                    all,
                    format!("{who}: bound to another group than {}", key.owner_group),
                )),
                Mismatch::CpuTime => {
                    let max = recent.iter().map(|r| r.cpu_time).max().unwrap_or(0);
                    let text = if all {
                        format!(
                            "CPUTime {} s exceeds what every recent pilot had (max {max} s)",
                            key.cpu_time
                        )
                    } else {
                        format!("CPUTime {} s exceeds what {who} had", key.cpu_time)
                    };
                    reasons.push((all, text));
                }
                Mismatch::Site => {
                    let text = if all {
                        format!("{who} offered {}", one_or_any("site", &key.sites))
                    } else {
                        format!("{who} were not at {}", one_or_any("site", &key.sites))
                    };
                    reasons.push((all, text));
                }
                Mismatch::BannedSite => {
                    for (site, c) in &banned_at {
                        reasons.push((
                            *c == n,
                            format!("site {site} is banned by the job ({c} of {n} recent pilots ran there)"),
                        ));
                    }
                }
                Mismatch::GridCe => reasons.push((
                    all,
                    format!("{who} offered {}", one_or_any("CE", &key.grid_ces)),
                )),
                Mismatch::Platform => reasons.push((
                    all,
                    format!("{who} offered {}", one_or_any("platform", &key.platforms)),
                )),
                Mismatch::JobType => {
                    let types: BTreeSet<String> =
                        key.effective_job_types().map(str::to_owned).collect();
                    reasons.push((
                        all,
                        format!("{who} accept {}", one_or_any("job type", &types)),
                    ));
                }
                Mismatch::MissingTag(tag) => {
                    let text = if all {
                        format!("tag {tag} not offered by any recent pilot")
                    } else {
                        format!("tag {tag} not offered by {c} of {n} recent pilots")
                    };
                    reasons.push((all, text));
                }
                Mismatch::RequiredTag(tag) => reasons.push((
                    all,
                    format!("{c} of {n} recent pilots require tag {tag}, which the job lacks"),
                )),
                Mismatch::ExcludedJobType(t) => reasons.push((
                    all,
                    format!("job type {t} is over its RunningLimit or within its MatchingDelay"),
                )),
            }
        }
        // rules every pilot failed first: any one of them alone explains the wait
        reasons.sort_by_key(|(all, _)| !*all);
        out.reasons = reasons.into_iter().map(|(_, r)| r).collect();
        out.summary = format!(
            "not matchable by any of the {n} recent pilots: {}",
            out.reasons.first().map_or("", String::as_str)
        );
        out
    }

    fn competition(
        &self,
        tq: TqId,
        key: &TqKey,
        matching: &[&Resource],
        excluded: &BTreeSet<String>,
        n: usize,
    ) -> String {
        let own = self.queues().find(|q| q.0 == tq).map_or(0, |q| q.3);
        let mut ahead = 0;
        let mut top = 0;
        for (id, other, len, weight) in self.queues() {
            if id == tq || len == 0 || other == key {
                continue;
            }
            if matching.iter().any(|p| matches(other, p, excluded)) {
                top = top.max(weight);
                if weight > own {
                    ahead += 1;
                }
            }
        }
        let mut summary = format!(
            "matchable by {} of {n} recent pilots: waiting for a pilot",
            matching.len()
        );
        if ahead > 0 {
            let _ = write!(summary, "; lower priority than {ahead} other task queues");
        }
        let priority = self.tq_priority(tq).unwrap_or(MIN_TQ_PRIORITY);
        if priority <= MIN_TQ_PRIORITY * 1.000_001 && top > own {
            let _ = write!(
                summary,
                "; group share is small: priority {priority} vs up to {} for competing task queues",
                top as f64 / crate::index::WEIGHT_SCALE
            );
        }
        summary
    }
}
