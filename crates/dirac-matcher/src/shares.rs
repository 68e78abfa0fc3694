//! Fair share: from group shares and the jobs' priorities to one priority per task queue, which
//! is the queue's weight in the matching lottery.

use std::collections::{BTreeSet, HashMap};

use crate::{MatchError, TqKey};

/// `/Registry/Groups/<g>/JobShare` when a group does not set one.
pub const DEFAULT_JOB_SHARE: f64 = 1000.0;
/// The floor of every task-queue priority (DIRAC's `TQ_MIN_SHARE`).
pub const MIN_TQ_PRIORITY: f64 = 0.001;
/// With background queues allowed, queues whose average `RealPriority` is at or below this are
/// left out of their entity's share and pinned to [`MIN_TQ_PRIORITY`].
pub const BACKGROUND_PRIORITY: f64 = 0.1;

/// The share settings of one group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupShare {
    /// `JobShare`; split equally among the group's owners unless `job_sharing`.
    pub job_share: f64,
    /// `JobSharing`: the whole group is one share entity.
    pub job_sharing: bool,
}

impl Default for GroupShare {
    fn default() -> Self {
        Self {
            job_share: DEFAULT_JOB_SHARE,
            job_sharing: false,
        }
    }
}

/// Share settings per `(vo, group)`; groups not listed get [`GroupShare::default`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShareConfig {
    /// vo → group → share
    groups: HashMap<String, HashMap<String, GroupShare>>,
    allow_background_tqs: bool,
}

impl ShareConfig {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the share of `vo`/`group`; the share must be finite and ≥ 0.
    pub fn insert(&mut self, vo: &str, group: &str, share: GroupShare) -> Result<(), MatchError> {
        if !share.job_share.is_finite() || share.job_share < 0.0 {
            return Err(MatchError::InvalidShare {
                vo: vo.to_owned(),
                group: group.to_owned(),
                value: share.job_share,
            });
        }
        self.groups
            .entry(vo.to_owned())
            .or_default()
            .insert(group.to_owned(), share);
        Ok(())
    }

    /// Builder form of [`insert`](Self::insert).
    pub fn with_group(
        mut self,
        vo: &str,
        group: &str,
        job_share: f64,
        job_sharing: bool,
    ) -> Result<Self, MatchError> {
        self.insert(
            vo,
            group,
            GroupShare {
                job_share,
                job_sharing,
            },
        )?;
        Ok(self)
    }

    /// DIRAC's `AllowBackgroundTQs` (off by default), see [`BACKGROUND_PRIORITY`].
    pub fn with_background_tqs(mut self, allow: bool) -> Self {
        self.allow_background_tqs = allow;
        self
    }

    /// The settings of `vo`/`group`.
    pub fn group(&self, vo: &str, group: &str) -> GroupShare {
        self.groups
            .get(vo)
            .and_then(|groups| groups.get(group))
            .copied()
            .unwrap_or_default()
    }
}

/// DIRAC's `calculate_priority` over a set of non-empty task queues, each given with the average
/// `RealPriority` of its jobs. Returns one priority per input, in input order.
///
/// 1. Share entities: a group with `JobSharing` is one entity holding the group's `JobShare`;
///    otherwise each distinct owner with queues in the group is one, holding an equal part.
/// 2. Within an entity, queue priority = `max(share / Σ avg × avg, 0.001)`.
/// 3. Queues whose keys differ only in `sites`/`banned_sites` each get the sum of their group.
pub fn task_queue_priorities(tqs: &[(&TqKey, f64)], shares: &ShareConfig) -> Vec<f64> {
    type GroupId<'a> = (&'a str, &'a str);
    let mut owners: HashMap<GroupId<'_>, BTreeSet<&str>> = HashMap::new();
    for (key, _) in tqs {
        owners
            .entry((key.vo.as_str(), key.owner_group.as_str()))
            .or_default()
            .insert(key.owner.as_str());
    }

    // entity = (vo, group, owner or "" for job-sharing groups)
    fn entity<'a>(key: &'a TqKey, shares: &ShareConfig) -> (&'a str, &'a str, &'a str) {
        let share = shares.group(&key.vo, &key.owner_group);
        let owner = if share.job_sharing { "" } else { &key.owner };
        (&key.vo, &key.owner_group, owner)
    }
    let entity_of = |key| entity(key, shares);
    let is_background = |avg: f64| shares.allow_background_tqs && avg <= BACKGROUND_PRIORITY;

    let mut sums: HashMap<(&str, &str, &str), f64> = HashMap::new();
    for (key, avg) in tqs {
        if !is_background(*avg) {
            *sums.entry(entity_of(key)).or_default() += avg;
        }
    }

    let mut prios: Vec<f64> = tqs
        .iter()
        .map(|(key, avg)| {
            if is_background(*avg) {
                return MIN_TQ_PRIORITY;
            }
            let group = shares.group(&key.vo, &key.owner_group);
            let share = if group.job_sharing {
                group.job_share
            } else {
                let n = owners
                    .get(&(key.vo.as_str(), key.owner_group.as_str()))
                    .map_or(1, BTreeSet::len);
                group.job_share / n as f64
            };
            let sum = sums.get(&entity_of(key)).copied().unwrap_or(0.0);
            let prio = if sum > 0.0 { share / sum * avg } else { 0.0 };
            prio.max(MIN_TQ_PRIORITY)
        })
        .collect();

    // everything but sites and banned sites
    type SiteFree<'a> = (
        &'a str,
        &'a str,
        &'a str,
        u64,
        &'a BTreeSet<String>,
        &'a BTreeSet<String>,
        &'a BTreeSet<String>,
        &'a BTreeSet<String>,
    );
    let mut site_groups: HashMap<SiteFree<'_>, (f64, usize)> = HashMap::new();
    fn site_free(k: &TqKey) -> SiteFree<'_> {
        (
            &k.owner,
            &k.owner_group,
            &k.vo,
            k.cpu_time,
            &k.grid_ces,
            &k.platforms,
            &k.job_types,
            &k.tags,
        )
    }
    for ((key, _), prio) in tqs.iter().zip(&prios) {
        let slot = site_groups.entry(site_free(key)).or_default();
        slot.0 += prio;
        slot.1 += 1;
    }
    for ((key, _), prio) in tqs.iter().zip(prios.iter_mut()) {
        if let Some(&(sum, n)) = site_groups.get(&site_free(key))
            && n > 1
        {
            *prio = sum;
        }
    }
    prios
}
