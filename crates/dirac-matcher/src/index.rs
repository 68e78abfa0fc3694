//! The in-memory task-queue index: jobs grouped into task queues, the per-resource cache of
//! matching queues, and the two-level lottery that hands a job to a pilot.
//!
//! Hot path of [`Index::match_job`], all without allocation once a resource has been seen:
//! 1. fingerprint the resource (its CPU time reduced to the largest queue CPU time it covers,
//!    so pilots differing only in time left share an entry) and find its cache entry;
//! 2. draw a queue from the entry's Fenwick tree of integer priority weights (O(log queues));
//! 3. draw a priority level inside the queue (few levels) and pop its lowest job id (O(log n));
//! 4. when the queue becomes empty, zero its weight in every entry it appears in.
//!
//! A queue created later is appended to the entries it matches; a new distinct CPU time clears
//! the cache. Empty queues stay (weight 0) until the next priority recomputation prunes them,
//! which mirrors DIRAC's lazy deletion and keeps a draining queue from invalidating anything.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};

use rand::Rng;

use crate::fenwick::Fenwick;
use crate::hash::{FxBuild, FxHashMap};
use crate::shares::{MIN_TQ_PRIORITY, task_queue_priorities};
use crate::{Resource, ShareConfig, TqKey, first_mismatch, matches, real_priority};

/// Identifies a task queue for the lifetime of an [`Index`]; never reused.
pub type TqId = u64;

/// The outcome of a successful match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Match {
    pub job_id: u64,
    pub tq: TqId,
}

/// Priorities are turned into integer lottery weights with this resolution (the minimum
/// priority 0.001 is weight 1).
pub(crate) const WEIGHT_SCALE: f64 = 1_000.0;
/// Upper bound of one queue's weight, so that 2^23 queues cannot overflow the sum.
const MAX_WEIGHT: u64 = 1 << 40;
/// More distinct resources than this and the cache starts over.
const MAX_CACHE_ENTRIES: usize = 4_096;

fn weight_of(priority: f64) -> u64 {
    let scaled = (priority.max(MIN_TQ_PRIORITY) * WEIGHT_SCALE).round();
    if scaled >= MAX_WEIGHT as f64 {
        MAX_WEIGHT
    } else {
        // positive and below 2^40: the conversion is exact enough and cannot wrap
        (scaled as u64).max(1)
    }
}

#[derive(Debug)]
struct Level {
    real_priority: f64,
    jobs: BTreeSet<u64>,
}

#[derive(Debug)]
struct Tq {
    id: TqId,
    key: TqKey,
    /// Jobs grouped by distinct `RealPriority`; usually one or two levels.
    levels: Vec<Level>,
    len: usize,
    /// `None` until the first recomputation after creation.
    priority: Option<f64>,
    /// `(cache entry, position in the entry)` for every entry listing this queue.
    cached_in: Vec<(u32, u32)>,
}

impl Tq {
    fn weight(&self) -> u64 {
        if self.len == 0 {
            0
        } else {
            weight_of(self.priority.unwrap_or(MIN_TQ_PRIORITY))
        }
    }

    fn average_real_priority(&self) -> f64 {
        let sum: f64 = self
            .levels
            .iter()
            .map(|l| l.real_priority * l.jobs.len() as f64)
            .sum();
        sum / self.len.max(1) as f64
    }

    /// Picks a level weighted by `jobs × RealPriority`, DIRAC's per-job lottery.
    fn pick_level(&self, rng: &mut impl Rng) -> usize {
        if self.levels.len() == 1 {
            return 0;
        }
        let total: f64 = self
            .levels
            .iter()
            .map(|l| l.real_priority * l.jobs.len() as f64)
            .sum();
        let mut target = rng.random::<f64>() * total;
        for (i, level) in self.levels.iter().enumerate() {
            target -= level.real_priority * level.jobs.len() as f64;
            if target < 0.0 {
                return i;
            }
        }
        self.levels.len() - 1
    }
}

#[derive(Debug)]
struct CacheEntry {
    /// The resource with `cpu_time` reduced to its CPU class.
    resource: Resource,
    excluded: BTreeSet<String>,
    /// Slots of the matching queues; `weights` is parallel to it.
    tqs: Vec<u32>,
    weights: Fenwick,
}

#[derive(Debug, Default)]
struct Cache {
    by_fingerprint: FxHashMap<u64, Vec<u32>>,
    entries: Vec<CacheEntry>,
}

#[derive(Clone, Copy, Debug)]
struct JobLoc {
    slot: u32,
    real_priority: f64,
}

/// The task-queue index. See the module documentation of this file for the data layout.
#[derive(Debug, Default)]
pub struct Index {
    /// Slab of queues; `None` slots are listed in `free`.
    tqs: Vec<Option<Tq>>,
    free: Vec<u32>,
    by_key: HashMap<TqKey, u32>,
    by_id: FxHashMap<TqId, u32>,
    jobs: FxHashMap<u64, JobLoc>,
    next_tq_id: TqId,
    non_empty: usize,
    /// Distinct queue CPU times → number of queues with it.
    cpu_times: BTreeMap<u64, usize>,
    cache: Cache,
    shares: ShareConfig,
    /// Queues were created since the last priority recomputation.
    dirty: bool,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `job_id` to the queue for `key` (creating the queue if needed) and returns the
    /// queue. A job already present is moved: its old entry is removed first.
    pub fn insert(&mut self, job_id: u64, key: TqKey, user_priority: f64) -> TqId {
        self.remove(job_id);
        let slot = match self.by_key.get(&key) {
            Some(&slot) => slot,
            None => self.create_tq(key),
        };
        self.add_job(slot, job_id, real_priority(user_priority));
        self.tq(slot).map_or(0, |tq| tq.id)
    }

    /// Adds `job_id` to the existing queue `tq` (for example to put back a job whose claim
    /// failed). Returns false when the queue is gone (pruned); use [`insert`](Self::insert)
    /// then.
    pub fn insert_into(&mut self, job_id: u64, tq: TqId, user_priority: f64) -> bool {
        let Some(&slot) = self.by_id.get(&tq) else {
            return false;
        };
        self.remove(job_id);
        self.add_job(slot, job_id, real_priority(user_priority));
        true
    }

    /// Removes a job (killed, deleted, rescheduled elsewhere). Returns whether it was present.
    /// An emptied queue stays until the next [`recompute_priorities`](Self::recompute_priorities).
    pub fn remove(&mut self, job_id: u64) -> bool {
        let Some(loc) = self.jobs.remove(&job_id) else {
            return false;
        };
        let Some(tq) = self.tqs.get_mut(loc.slot as usize).and_then(Option::as_mut) else {
            return true;
        };
        let old = tq.weight();
        if let Some(at) = tq
            .levels
            .iter()
            .position(|l| l.real_priority.to_bits() == loc.real_priority.to_bits())
        {
            tq.levels[at].jobs.remove(&job_id);
            if tq.levels[at].jobs.is_empty() {
                tq.levels.swap_remove(at);
            }
        }
        tq.len -= 1;
        if tq.len == 0 {
            self.non_empty -= 1;
            set_weight(&mut self.cache, tq, old, 0);
        }
        true
    }

    pub fn contains(&self, job_id: u64) -> bool {
        self.jobs.contains_key(&job_id)
    }

    /// Number of waiting jobs.
    pub fn jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Number of task queues holding at least one job.
    pub fn task_queues(&self) -> usize {
        self.non_empty
    }

    /// The queue holding `job_id`.
    pub fn tq_of(&self, job_id: u64) -> Option<TqId> {
        let loc = self.jobs.get(&job_id)?;
        self.tq(loc.slot).map(|tq| tq.id)
    }

    /// The key of queue `tq`.
    pub fn tq_key(&self, tq: TqId) -> Option<&TqKey> {
        self.tq_by_id(tq).map(|tq| &tq.key)
    }

    /// The number of jobs in queue `tq`.
    pub fn tq_len(&self, tq: TqId) -> Option<usize> {
        self.tq_by_id(tq).map(|tq| tq.len)
    }

    /// The queue's priority as of the last recomputation (`None` for a queue created since;
    /// [`match_job`](Self::match_job) recomputes first when queues were created).
    pub fn tq_priority(&self, tq: TqId) -> Option<f64> {
        self.tq_by_id(tq).and_then(|tq| tq.priority)
    }

    /// Recomputes every queue's priority from `shares` (kept for the automatic recomputation
    /// after queue creation) and prunes empty queues. O(queues + cached entries).
    pub fn recompute_priorities(&mut self, shares: &ShareConfig) {
        if self.shares != *shares {
            self.shares = shares.clone();
        }
        self.refresh();
    }

    /// Draws a job for `resource` and removes it from the index: a queue by the priority
    /// lottery among the queues matching the resource (see [`matches`]), then a job inside it
    /// weighted by `RealPriority`, lowest job id first within a priority.
    pub fn match_job(
        &mut self,
        resource: &Resource,
        excluded_job_types: &BTreeSet<String>,
        rng: &mut impl Rng,
    ) -> Option<Match> {
        if self.dirty {
            self.refresh();
        }
        let entry = self.entry_for(resource, excluded_job_types);
        let entry = &self.cache.entries[entry];
        let total = entry.weights.total();
        if total == 0 {
            return None;
        }
        let slot = entry.tqs[entry.weights.find(rng.random_range(0..total))];
        let tq = self.tqs.get_mut(slot as usize).and_then(Option::as_mut)?;
        let old = tq.weight();
        let at = tq.pick_level(rng);
        let level = &mut tq.levels[at];
        let job_id = level.jobs.pop_first()?;
        if level.jobs.is_empty() {
            tq.levels.swap_remove(at);
        }
        tq.len -= 1;
        let found = Match { job_id, tq: tq.id };
        if tq.len == 0 {
            self.non_empty -= 1;
            set_weight(&mut self.cache, tq, old, 0);
        }
        self.jobs.remove(&job_id);
        Some(found)
    }

    /// The decision [`match_job`](Self::match_job) would draw, without removing the job or
    /// touching the cache. Same rules and distribution, but a linear scan over all queues, and
    /// priorities as of the last recomputation.
    pub fn peek_match(
        &self,
        resource: &Resource,
        excluded_job_types: &BTreeSet<String>,
        rng: &mut impl Rng,
    ) -> Option<Match> {
        let candidates: Vec<&Tq> = self
            .live()
            .filter(|tq| tq.len > 0 && matches(&tq.key, resource, excluded_job_types))
            .collect();
        let total: u64 = candidates.iter().map(|tq| tq.weight()).sum();
        if total == 0 {
            return None;
        }
        let mut target = rng.random_range(0..total);
        let tq = candidates.iter().find(|tq| {
            let w = tq.weight();
            if target < w {
                true
            } else {
                target -= w;
                false
            }
        })?;
        let level = tq.levels.get(tq.pick_level(rng))?;
        let job_id = level.jobs.first().copied()?;
        Some(Match { job_id, tq: tq.id })
    }

    /// The non-empty queues matching `resource`, as DIRAC's `getMatchingTaskQueues`.
    pub fn matching_task_queues(
        &self,
        resource: &Resource,
        excluded_job_types: &BTreeSet<String>,
    ) -> Vec<TqId> {
        let mut ids: Vec<TqId> = self
            .live()
            .filter(|tq| tq.len > 0 && matches(&tq.key, resource, excluded_job_types))
            .map(|tq| tq.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Every non-empty queue: id, key, number of jobs and priority.
    pub fn task_queue_list(&self) -> impl Iterator<Item = (TqId, &TqKey, usize, Option<f64>)> {
        self.live()
            .filter(|tq| tq.len > 0)
            .map(|tq| (tq.id, &tq.key, tq.len, tq.priority))
    }

    // ---- internals ----

    fn live(&self) -> impl Iterator<Item = &Tq> {
        self.tqs.iter().flatten()
    }

    fn tq(&self, slot: u32) -> Option<&Tq> {
        self.tqs.get(slot as usize).and_then(Option::as_ref)
    }

    fn tq_by_id(&self, id: TqId) -> Option<&Tq> {
        self.by_id.get(&id).and_then(|&slot| self.tq(slot))
    }

    fn create_tq(&mut self, key: TqKey) -> u32 {
        let id = self.next_tq_id;
        self.next_tq_id += 1;
        let new_cpu_time = {
            let count = self.cpu_times.entry(key.cpu_time).or_insert(0);
            *count += 1;
            *count == 1
        };
        if new_cpu_time {
            // entries were keyed by CPU classes that no longer partition resources correctly
            self.clear_cache();
        }
        let mut tq = Tq {
            id,
            key: key.clone(),
            levels: Vec::new(),
            len: 0,
            priority: None,
            cached_in: Vec::new(),
        };
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.tqs.push(None);
                u32::try_from(self.tqs.len() - 1).unwrap_or(u32::MAX)
            }
        };
        for (e, entry) in self.cache.entries.iter_mut().enumerate() {
            if first_mismatch(&tq.key, &entry.resource, &entry.excluded).is_none() {
                tq.cached_in.push((e as u32, entry.tqs.len() as u32));
                entry.tqs.push(slot);
                entry.weights.push(0);
            }
        }
        if let Some(place) = self.tqs.get_mut(slot as usize) {
            *place = Some(tq);
        }
        self.by_key.insert(key, slot);
        self.by_id.insert(id, slot);
        self.dirty = true;
        slot
    }

    fn add_job(&mut self, slot: u32, job_id: u64, real_priority: f64) {
        let Some(tq) = self.tqs.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let old = tq.weight();
        match tq
            .levels
            .iter_mut()
            .find(|l| l.real_priority.to_bits() == real_priority.to_bits())
        {
            Some(level) => {
                level.jobs.insert(job_id);
            }
            None => tq.levels.push(Level {
                real_priority,
                jobs: BTreeSet::from([job_id]),
            }),
        }
        tq.len += 1;
        if tq.len == 1 {
            self.non_empty += 1;
            let new = tq.weight();
            set_weight(&mut self.cache, tq, old, new);
        }
        self.jobs.insert(
            job_id,
            JobLoc {
                slot,
                real_priority,
            },
        );
    }

    fn clear_cache(&mut self) {
        self.cache.entries.clear();
        self.cache.by_fingerprint.clear();
        for tq in self.tqs.iter_mut().flatten() {
            tq.cached_in.clear();
        }
    }

    /// Prunes empty queues, recomputes priorities and rebuilds the cached weight trees.
    fn refresh(&mut self) {
        for slot in 0..self.tqs.len() {
            let Some(tq) = self.tqs[slot].take_if(|tq| tq.len == 0) else {
                continue;
            };
            self.by_key.remove(&tq.key);
            self.by_id.remove(&tq.id);
            if let Some(count) = self.cpu_times.get_mut(&tq.key.cpu_time) {
                *count -= 1;
                if *count == 0 {
                    self.cpu_times.remove(&tq.key.cpu_time);
                }
            }
            self.free.push(slot as u32);
        }

        let inputs: Vec<(&TqKey, f64)> = self
            .live()
            .map(|tq| (&tq.key, tq.average_real_priority()))
            .collect();
        let priorities = task_queue_priorities(&inputs, &self.shares);
        for (tq, priority) in self.tqs.iter_mut().flatten().zip(priorities) {
            tq.priority = Some(priority);
            tq.cached_in.clear();
        }

        let tqs = &mut self.tqs;
        for (e, entry) in self.cache.entries.iter_mut().enumerate() {
            entry
                .tqs
                .retain(|&slot| tqs.get(slot as usize).is_some_and(Option::is_some));
            let mut weights = Vec::with_capacity(entry.tqs.len());
            for (pos, &slot) in entry.tqs.iter().enumerate() {
                if let Some(tq) = tqs.get_mut(slot as usize).and_then(Option::as_mut) {
                    tq.cached_in.push((e as u32, pos as u32));
                    weights.push(tq.weight());
                }
            }
            entry.weights = Fenwick::from_weights(weights);
        }
        self.dirty = false;
    }

    /// The cache entry for `resource`/`excluded`, built on first sight.
    fn entry_for(&mut self, resource: &Resource, excluded: &BTreeSet<String>) -> usize {
        let cpu_class = self
            .cpu_times
            .range(..=resource.cpu_time)
            .next_back()
            .map_or(0, |(&t, _)| t);
        let fingerprint = fingerprint(resource, cpu_class, excluded);
        if let Some(candidates) = self.cache.by_fingerprint.get(&fingerprint) {
            for &e in candidates {
                let entry = &self.cache.entries[e as usize];
                if same_offer(&entry.resource, resource, cpu_class) && entry.excluded == *excluded {
                    return e as usize;
                }
            }
        }

        if self.cache.entries.len() >= MAX_CACHE_ENTRIES {
            self.clear_cache();
        }
        let e = self.cache.entries.len();
        let mut normalized = resource.clone();
        normalized.cpu_time = cpu_class;
        let mut slots = Vec::new();
        let mut weights = Vec::new();
        for (slot, tq) in self.tqs.iter_mut().enumerate() {
            let Some(tq) = tq else { continue };
            if first_mismatch(&tq.key, &normalized, excluded).is_none() {
                tq.cached_in.push((e as u32, slots.len() as u32));
                slots.push(slot as u32);
                weights.push(tq.weight());
            }
        }
        self.cache.entries.push(CacheEntry {
            resource: normalized,
            excluded: excluded.clone(),
            tqs: slots,
            weights: Fenwick::from_weights(weights),
        });
        self.cache
            .by_fingerprint
            .entry(fingerprint)
            .or_default()
            .push(e as u32);
        e
    }

    /// For explanations: the live queues with their weight.
    pub(crate) fn queues(&self) -> impl Iterator<Item = (TqId, &TqKey, usize, u64)> {
        self.live().map(|tq| (tq.id, &tq.key, tq.len, tq.weight()))
    }
}

fn set_weight(cache: &mut Cache, tq: &Tq, old: u64, new: u64) {
    if old == new {
        return;
    }
    for &(e, pos) in &tq.cached_in {
        if let Some(entry) = cache.entries.get_mut(e as usize) {
            entry.weights.set(pos as usize, old, new);
        }
    }
}

fn fingerprint(resource: &Resource, cpu_class: u64, excluded: &BTreeSet<String>) -> u64 {
    // cheap fields only: pilots of one CE differ from other CEs' here already, and the full
    // comparison in `same_offer` settles collisions; hashing ~25 capability tags per request
    // would cost more than the rest of a match
    let mut h = FxBuild::default().build_hasher();
    resource.vo.hash(&mut h);
    resource.owner.hash(&mut h);
    resource.owner_group.hash(&mut h);
    resource.site.hash(&mut h);
    resource.grid_ce.hash(&mut h);
    cpu_class.hash(&mut h);
    resource.platforms.len().hash(&mut h);
    resource.tags.len().hash(&mut h);
    resource.required_tags.len().hash(&mut h);
    resource.job_types.len().hash(&mut h);
    excluded.len().hash(&mut h);
    h.finish()
}

/// Equal offers apart from CPU time, which is compared through its class.
fn same_offer(cached: &Resource, resource: &Resource, cpu_class: u64) -> bool {
    cached.cpu_time == cpu_class
        && cached.vo == resource.vo
        && cached.owner == resource.owner
        && cached.owner_group == resource.owner_group
        && cached.site == resource.site
        && cached.grid_ce == resource.grid_ce
        && cached.platforms == resource.platforms
        && cached.tags == resource.tags
        && cached.required_tags == resource.required_tags
        && cached.job_types == resource.job_types
}
