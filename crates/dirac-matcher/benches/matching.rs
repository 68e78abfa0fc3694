//! `match_job` throughput (budget: ≥ 1,000,000 decisions/s on one core with 1M waiting jobs in
//! 10k task queues), over {1k, 100k, 1M} jobs × {10, 1k, 10k} queues.
//!
//! The mix: one VO, 50 user owners in a group without job sharing plus two job-sharing
//! production groups; about a third of the queues restricted to one or a few of 20 sites, some
//! with banned sites, platform, job-type or processor/RAM tag requirements. Pilots are generic,
//! from 20 sites × 2 CEs with fixed descriptions (as pilots of one CE are). Matched jobs are put
//! back into their queue outside the timed section, so the index never drains.
//!
//! Run with `cargo bench -p dirac-matcher --bench matching -- --warm-up-time 1 --measurement-time 2`.

use std::collections::{BTreeSet, HashSet};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dirac_matcher::{
    DEFAULT_CPU_SEGMENTS, Index, Match, Resource, ResourceDescription, ShareConfig, TqKey,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const SITES: usize = 20;

fn site(i: usize) -> String {
    format!("LCG.Site{i:02}.org")
}

fn set(items: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    items.into_iter().collect()
}

fn random_key(rng: &mut SmallRng) -> TqKey {
    let (owner, group) = match rng.random_range(0..10) {
        0..=5 => (format!("user{:02}", rng.random_range(0..50)), "lhcb_user"),
        6..=8 => ("prod".to_owned(), "lhcb_mc"),
        _ => ("data".to_owned(), "lhcb_data"),
    };
    let mut key = TqKey {
        owner,
        owner_group: group.to_owned(),
        vo: "lhcb".to_owned(),
        cpu_time: DEFAULT_CPU_SEGMENTS[rng.random_range(0..8)],
        ..TqKey::default()
    };
    match rng.random_range(0..10) {
        0..=5 => {}
        6..=8 => key.sites = set([site(rng.random_range(0..SITES))]),
        _ => key.sites = set((0..3).map(|_| site(rng.random_range(0..SITES)))),
    }
    if rng.random_range(0..10) == 0 {
        key.banned_sites = set([site(rng.random_range(0..SITES))]);
    }
    if rng.random_bool(0.5) {
        key.platforms = set(["x86_64-el9".to_owned()]);
    }
    key.job_types = set([match group {
        "lhcb_user" => "User",
        "lhcb_mc" => "MCSimulation",
        _ => "DataReconstruction",
    }
    .to_owned()]);
    match rng.random_range(0..10) {
        0 => key.tags = set(["MultiProcessor".to_owned(), "8Processors".to_owned()]),
        1 => key.tags = set(["4GB".to_owned()]),
        _ => {}
    }
    key
}

fn pilots() -> Vec<Resource> {
    let mut out = Vec::new();
    for s in 0..SITES {
        for ce in 0..2 {
            let description = ResourceDescription {
                vo: "lhcb".to_owned(),
                site: Some(site(s)),
                grid_ce: Some(format!("ce{ce}.site{s:02}.org")),
                platforms: vec!["x86_64-el9".to_owned(), "x86_64-el8".to_owned()],
                cpu_time: if ce == 0 { 172_800 } else { 43_200 },
                number_of_processors: if s % 4 == 0 { 8 } else { 1 },
                max_ram_mb: 16_384,
                ..ResourceDescription::default()
            };
            if let Ok(resource) = description.into_resource() {
                out.push(resource);
            }
        }
    }
    out
}

struct Setup {
    index: Index,
    pilots: Vec<Resource>,
}

fn setup(jobs: u64, queues: usize) -> Setup {
    let mut rng = SmallRng::seed_from_u64(1);
    let mut keys: Vec<TqKey> = Vec::with_capacity(queues);
    let mut seen = HashSet::new();
    while keys.len() < queues {
        let key = random_key(&mut rng);
        if seen.insert(key.clone()) {
            keys.push(key);
        }
    }
    let mut index = Index::new();
    for job in 0..jobs {
        let key = keys[job as usize % queues].clone();
        let priority = if job % 7 == 0 { 3.0 } else { 1.0 };
        index.insert(job, key, priority);
    }
    let shares = ShareConfig::new()
        .with_group("lhcb", "lhcb_mc", 3_000.0, true)
        .and_then(|s| s.with_group("lhcb", "lhcb_data", 2_000.0, true))
        .unwrap_or_default();
    index.recompute_priorities(&shares);
    Setup {
        index,
        pilots: pilots(),
    }
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("match_job");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    let none = BTreeSet::new();
    for jobs in [1_000u64, 100_000, 1_000_000] {
        for queues in [10usize, 1_000, 10_000] {
            if (jobs as usize) < queues {
                continue;
            }
            let Setup { mut index, pilots } = setup(jobs, queues);
            let mut rng = SmallRng::seed_from_u64(2);
            let sequence: Vec<usize> = (0..4_096)
                .map(|_| rng.random_range(0..pilots.len()))
                .collect();
            // put back at most an eighth of the jobs between refills
            let chunk = (jobs as usize / 8).clamp(1, 1_024);
            let mut taken: Vec<Match> = Vec::with_capacity(chunk);
            let mut at = 0usize;
            group.bench_function(BenchmarkId::new(format!("{jobs}_jobs"), queues), |b| {
                b.iter_custom(|iterations| {
                    let mut elapsed = Duration::ZERO;
                    let mut left = iterations;
                    while left > 0 {
                        let n = left.min(chunk as u64);
                        let start = Instant::now();
                        for _ in 0..n {
                            let pilot = &pilots[sequence[at % sequence.len()]];
                            at += 1;
                            if let Some(found) = index.match_job(pilot, &none, &mut rng) {
                                taken.push(black_box(found));
                            }
                        }
                        elapsed += start.elapsed();
                        for found in taken.drain(..) {
                            let priority = if found.job_id % 7 == 0 { 3.0 } else { 1.0 };
                            index.insert_into(found.job_id, found.tq, priority);
                        }
                        left -= n;
                    }
                    elapsed
                });
            });
        }
    }
    group.finish();

    // the periodic part: recomputing shares and rebuilding the cached trees
    let Setup { mut index, pilots } = setup(1_000_000, 10_000);
    let mut rng = SmallRng::seed_from_u64(3);
    for pilot in &pilots {
        index.match_job(pilot, &none, &mut rng);
    }
    let shares = ShareConfig::new();
    c.bench_function("recompute_priorities/1000000_jobs/10000", |b| {
        b.iter(|| index.recompute_priorities(black_box(&shares)));
    });
}

criterion_group!(benches, matching);
criterion_main!(benches);
