//! Invariants of [`Index`] checked against a model that is just "job id → key", re-deciding
//! every match with the plain [`matches`].

use std::collections::{BTreeSet, HashMap};

use dirac_matcher::{Index, Resource, ShareConfig, TqKey, matches};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::subsequence;
use rand::SeedableRng;
use rand::rngs::SmallRng;

fn subset(items: &'static [&'static str]) -> impl Strategy<Value = BTreeSet<String>> {
    subsequence(items, 0..=items.len()).prop_map(|v| v.into_iter().map(str::to_owned).collect())
}

/// Mostly empty, sometimes a few values: restrictions are the exception in real queues.
fn restriction(items: &'static [&'static str]) -> impl Strategy<Value = BTreeSet<String>> {
    prop_oneof![3 => Just(BTreeSet::new()), 1 => subset(items)]
}

const SITES: &[&str] = &["S1", "S2", "S3"];
const CES: &[&str] = &["ce1", "ce2"];
const PLATFORMS: &[&str] = &["el8", "el9"];
const JOB_TYPES: &[&str] = &["User", "MC"];
const TAGS: &[&str] = &["MultiProcessor", "8Processors", "GPU"];

fn tq_key() -> impl Strategy<Value = TqKey> {
    (
        (
            prop::sample::select(&["a", "b"][..]),
            prop::sample::select(&["g1", "g2"][..]),
            prop_oneof![4 => Just("lhcb"), 1 => Just("cta")],
            prop::sample::select(&[360u64, 3_600, 86_400][..]),
        ),
        (
            restriction(SITES),
            restriction(CES),
            restriction(SITES),
            restriction(PLATFORMS),
            restriction(JOB_TYPES),
            restriction(TAGS),
        ),
    )
        .prop_map(
            |((owner, group, vo, cpu), (sites, grid_ces, banned, platforms, job_types, tags))| {
                TqKey {
                    owner: owner.into(),
                    owner_group: group.into(),
                    vo: vo.into(),
                    cpu_time: cpu,
                    sites,
                    grid_ces,
                    banned_sites: banned,
                    platforms,
                    job_types,
                    tags,
                }
            },
        )
}

fn option_of(items: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(items).prop_map(str::to_owned))
}

fn resource() -> impl Strategy<Value = Resource> {
    (
        (
            prop_oneof![4 => Just("lhcb"), 1 => Just("cta")],
            option_of(&["a", "b"]),
            option_of(&["g1", "g2"]),
            option_of(SITES),
            option_of(CES),
        ),
        (
            subsequence(&["ANY", "el8", "el9"][..], 0..=3),
            prop::sample::select(&[0u64, 1_000, 3_600, 50_000, 100_000][..]),
            subset(TAGS),
            restriction(TAGS),
            subsequence(JOB_TYPES, 0..=2),
        ),
    )
        .prop_map(
            |((vo, owner, group, site, grid_ce), (platforms, cpu, tags, required, job_types))| {
                Resource {
                    vo: vo.into(),
                    // a private pilot always has its group
                    owner_group: group.or_else(|| owner.as_ref().map(|_| "g1".to_owned())),
                    owner,
                    site,
                    grid_ce,
                    platforms: platforms.into_iter().map(str::to_owned).collect(),
                    cpu_time: cpu,
                    tags,
                    required_tags: required,
                    job_types: job_types.into_iter().map(str::to_owned).collect(),
                }
            },
        )
}

#[derive(Clone, Debug)]
enum Op {
    Insert {
        job: u64,
        key: usize,
        priority: f64,
    },
    Remove {
        job: u64,
    },
    Match {
        pilot: usize,
        excluded: BTreeSet<String>,
    },
    Peek {
        pilot: usize,
    },
    Recompute,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..40, 0usize..12, prop_oneof![Just(1.0), Just(0.0), Just(5.0), Just(20.0)])
            .prop_map(|(job, key, priority)| Op::Insert { job, key, priority }),
        2 => (0u64..40).prop_map(|job| Op::Remove { job }),
        6 => (0usize..6, restriction(JOB_TYPES)).prop_map(|(pilot, excluded)| Op::Match { pilot, excluded }),
        1 => (0usize..6).prop_map(|pilot| Op::Peek { pilot }),
        1 => Just(Op::Recompute),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (1) a job is handed out at most once, and only while inserted and not removed;
    /// (2) the job's queue matches the pilot by the plain rules; and when nothing is handed
    /// out, no waiting job matches (the cache forgets no queue).
    #[test]
    fn matches_are_sound_and_complete(
        keys in vec(tq_key(), 12),
        pilots in vec(resource(), 6),
        ops in vec(op(), 1..120),
        seed in any::<u64>(),
    ) {
        let mut index = Index::new();
        let mut model: HashMap<u64, TqKey> = HashMap::new();
        let mut rng = SmallRng::seed_from_u64(seed);
        let shares = ShareConfig::new().with_group("lhcb", "g2", 250.0, true).unwrap_or_default();
        for op in ops {
            match op {
                Op::Insert { job, key, priority } => {
                    let tq = index.insert(job, keys[key].clone(), priority);
                    prop_assert_eq!(index.tq_key(tq), Some(&keys[key]));
                    model.insert(job, keys[key].clone());
                }
                Op::Remove { job } => {
                    prop_assert_eq!(index.remove(job), model.remove(&job).is_some());
                }
                Op::Match { pilot, excluded } => {
                    let pilot = &pilots[pilot];
                    match index.match_job(pilot, &excluded, &mut rng) {
                        Some(found) => {
                            let key = model.remove(&found.job_id);
                            prop_assert!(key.is_some(), "job {} handed out but not waiting", found.job_id);
                            let key = key.unwrap_or_default();
                            prop_assert!(matches(&key, pilot, &excluded), "{:?} got {:?}", pilot, key);
                            prop_assert_eq!(index.tq_key(found.tq), Some(&key));
                            prop_assert!(!index.contains(found.job_id));
                        }
                        None => {
                            let missed = model.iter().find(|(_, k)| matches(k, pilot, &excluded));
                            prop_assert!(missed.is_none(), "{:?} missed {:?}", pilot, missed);
                        }
                    }
                }
                Op::Peek { pilot } => {
                    let pilot = &pilots[pilot];
                    let none = BTreeSet::new();
                    let any_match = model.values().any(|k| matches(k, pilot, &none));
                    match index.peek_match(pilot, &none, &mut rng) {
                        Some(found) => {
                            let key = model.get(&found.job_id);
                            prop_assert!(key.is_some_and(|k| matches(k, pilot, &none)));
                        }
                        None => prop_assert!(!any_match),
                    }
                }
                Op::Recompute => index.recompute_priorities(&shares),
            }
            prop_assert_eq!(index.jobs(), model.len());
            let distinct: BTreeSet<&TqKey> = model.values().collect();
            prop_assert_eq!(index.task_queues(), distinct.len());
            for job in model.keys() {
                prop_assert!(index.contains(*job));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// (3) with JobShare 3:1 and plenty of jobs, a generic pilot's matches split ≈ 3:1 between
    /// the groups (±10 %), however each group's jobs are spread over queues and owners.
    #[test]
    fn shares_converge(
        seed in any::<u64>(),
        queues_big in 1u64..4,
        queues_small in 1u64..4,
        owners_big in 1usize..3,
        big_shares_jobs in any::<bool>(),
        priorities in vec(prop_oneof![Just(1.0), Just(3.0), Just(0.5)], 6),
    ) {
        const MATCHES: usize = 8_000;
        let shares = ShareConfig::new()
            .with_group("lhcb", "big", 3_000.0, big_shares_jobs)
            .and_then(|s| s.with_group("lhcb", "small", 1_000.0, false))
            .unwrap_or_default();
        let mut index = Index::new();
        let mut job = 0u64;
        for (group, queues, owners) in [("big", queues_big, owners_big), ("small", queues_small, 1)] {
            for q in 0..queues {
                // Enough jobs that no queue runs dry: every owner's queue
                // could take all matches on its own.
                for n in 0..(2 * MATCHES * owners) as u64 {
                    let key = TqKey {
                        owner: format!("owner{}", n as usize % owners),
                        owner_group: group.into(),
                        vo: "lhcb".into(),
                        cpu_time: 360 * (q + 1),
                        ..TqKey::default()
                    };
                    index.insert(job, key, priorities[(q as usize + n as usize) % priorities.len()]);
                    job += 1;
                }
            }
        }
        index.recompute_priorities(&shares);
        let pilot = Resource { vo: "lhcb".into(), cpu_time: 86_400, ..Resource::default() };
        let none = BTreeSet::new();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut big = 0usize;
        for _ in 0..MATCHES {
            let found = index.match_job(&pilot, &none, &mut rng);
            prop_assert!(found.is_some());
            let tq = found.map(|m| m.tq).unwrap_or_default();
            if index.tq_key(tq).is_some_and(|k| k.owner_group == "big") {
                big += 1;
            }
        }
        let ratio = big as f64 / (MATCHES - big) as f64;
        prop_assert!((2.7..=3.3).contains(&ratio), "ratio {ratio}");
    }
}
