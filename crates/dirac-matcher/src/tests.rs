//! Unit tests, one `check` helper per table, written against the public API.

use std::collections::{BTreeSet, HashMap};

use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::limits::{DelayState, SiteLimits, excluded_job_types};
use crate::*;

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn key(edit: impl FnOnce(&mut TqKey)) -> TqKey {
    let mut k = TqKey {
        owner: "alice".into(),
        owner_group: "lhcb_user".into(),
        vo: "lhcb".into(),
        cpu_time: 3_600,
        ..TqKey::default()
    };
    edit(&mut k);
    k
}

fn res(edit: impl FnOnce(&mut Resource)) -> Resource {
    let mut r = Resource {
        vo: "lhcb".into(),
        site: Some("LCG.CERN.cern".into()),
        grid_ce: Some("ce1.cern.ch".into()),
        platforms: vec!["x86_64-el9".into()],
        cpu_time: 86_400,
        ..Resource::default()
    };
    edit(&mut r);
    r
}

fn rng() -> SmallRng {
    SmallRng::seed_from_u64(7)
}

mod segments {
    use super::*;

    fn check(cpu_time: u64, expected: u64) {
        assert_eq!(
            cpu_segment(cpu_time, DEFAULT_CPU_SEGMENTS),
            expected,
            "{cpu_time}"
        );
    }

    #[test]
    fn round_up_to_the_next_segment() {
        check(0, 360);
        check(1, 360);
        check(360, 360);
        check(361, 1_800);
        check(3_600, 3_600);
        check(3_601, 21_600);
        check(86_400, 86_400);
        check(1_000_000, 1_080_000);
        check(1_080_000, 1_080_000);
        check(1_080_001, 1_080_001);
        assert_eq!(cpu_segment(50, &[]), 50);
    }

    #[test]
    fn real_priority_is_clamped() {
        for (user, real) in [
            (-3.0, 1e-5),
            (0.0, 1e-5),
            (0.001, 1e-5),
            (0.002, 0.002),
            (1.0, 1.0),
            (9.5, 9.5),
            (10.0, 1e6),
            (1e9, 1e6),
            (f64::NAN, 1e-5),
        ] {
            assert_eq!(real_priority(user), real, "{user}");
        }
    }
}

mod rules {
    use super::*;

    /// `expected` is the first failing rule, or `None` for a match; the plain `matches` must
    /// agree.
    fn check(resource: Resource, tq: TqKey, expected: Option<Mismatch>) {
        check_excluded(resource, tq, &BTreeSet::new(), expected);
    }

    fn check_excluded(
        resource: Resource,
        tq: TqKey,
        excluded: &BTreeSet<String>,
        expected: Option<Mismatch>,
    ) {
        let first = first_mismatch(&tq, &resource, excluded);
        assert_eq!(first, expected, "\n{resource:?}\n{tq:?}");
        assert_eq!(matches(&tq, &resource, excluded), expected.is_none());
        assert_eq!(mismatches(&tq, &resource, excluded).first(), first.as_ref());
    }

    #[test]
    fn identity_and_cpu() {
        check(res(|_| {}), key(|_| {}), None);
        check(
            res(|r| r.vo = "cta".into()),
            key(|_| {}),
            Some(Mismatch::Vo),
        );
        // private pilot
        let private = |r: &mut Resource| {
            r.owner = Some("alice".into());
            r.owner_group = Some("lhcb_user".into());
        };
        check(res(private), key(|_| {}), None);
        check(
            res(private),
            key(|k| k.owner = "bob".into()),
            Some(Mismatch::Owner),
        );
        // job-sharing pilot: fixed group, any owner
        let sharing = |r: &mut Resource| r.owner_group = Some("lhcb_mc".into());
        check(
            res(sharing),
            key(|k| k.owner_group = "lhcb_mc".into()),
            None,
        );
        check(res(sharing), key(|_| {}), Some(Mismatch::OwnerGroup));
        // CPU time: the queue's must fit in what is left
        check(res(|r| r.cpu_time = 3_600), key(|_| {}), None);
        check(
            res(|r| r.cpu_time = 3_599),
            key(|_| {}),
            Some(Mismatch::CpuTime),
        );
    }

    #[test]
    fn sites_ces_platforms() {
        let at = |sites: &[&str]| key(|k| k.sites = set(sites));
        check(res(|_| {}), at(&["LCG.CERN.cern", "LCG.RAL.uk"]), None);
        check(res(|_| {}), at(&["LCG.RAL.uk"]), Some(Mismatch::Site));
        // decision: a resource with no site never satisfies a site restriction
        check(
            res(|r| r.site = None),
            at(&["LCG.RAL.uk"]),
            Some(Mismatch::Site),
        );
        check(res(|r| r.site = None), key(|_| {}), None);
        check(
            res(|_| {}),
            key(|k| k.banned_sites = set(&["LCG.CERN.cern"])),
            Some(Mismatch::BannedSite),
        );
        check(
            res(|_| {}),
            key(|k| k.banned_sites = set(&["LCG.RAL.uk"])),
            None,
        );
        check(
            res(|r| r.site = None),
            key(|k| k.banned_sites = set(&["LCG.RAL.uk"])),
            None,
        );

        check(
            res(|_| {}),
            key(|k| k.grid_ces = set(&["ce1.cern.ch"])),
            None,
        );
        check(
            res(|_| {}),
            key(|k| k.grid_ces = set(&["ce2.cern.ch"])),
            Some(Mismatch::GridCe),
        );
        check(
            res(|r| r.grid_ce = None),
            key(|k| k.grid_ces = set(&["ce1.cern.ch"])),
            Some(Mismatch::GridCe),
        );

        check(
            res(|_| {}),
            key(|k| k.platforms = set(&["x86_64-el9", "x86_64-el8"])),
            None,
        );
        check(
            res(|_| {}),
            key(|k| k.platforms = set(&["aarch64-el9"])),
            Some(Mismatch::Platform),
        );
        check(
            res(|r| r.platforms = vec!["ANY".into()]),
            key(|k| k.platforms = set(&["aarch64-el9"])),
            None,
        );
        check(
            res(|r| r.platforms.clear()),
            key(|k| k.platforms = set(&["x86_64-el9"])),
            Some(Mismatch::Platform),
        );
        check(res(|r| r.platforms.clear()), key(|_| {}), None);
    }

    #[test]
    fn job_types() {
        let accepts =
            |types: &[&str]| res(|r| r.job_types = types.iter().map(|t| (*t).to_owned()).collect());
        check(
            accepts(&[]),
            key(|k| k.job_types = set(&["MCSimulation"])),
            None,
        );
        check(
            accepts(&["MCSimulation", "User"]),
            key(|k| k.job_types = set(&["MCSimulation"])),
            None,
        );
        check(
            accepts(&["User"]),
            key(|k| k.job_types = set(&["MCSimulation"])),
            Some(Mismatch::JobType),
        );
        // a queue without job types counts as User
        check(accepts(&["User"]), key(|_| {}), None);
        check(accepts(&["Test"]), key(|_| {}), Some(Mismatch::JobType));

        let excluded = set(&["User"]);
        check_excluded(
            res(|_| {}),
            key(|_| {}),
            &excluded,
            Some(Mismatch::ExcludedJobType("User".into())),
        );
        check_excluded(
            res(|_| {}),
            key(|k| k.job_types = set(&["User", "Test"])),
            &excluded,
            Some(Mismatch::ExcludedJobType("User".into())),
        );
        check_excluded(
            res(|_| {}),
            key(|k| k.job_types = set(&["MCSimulation"])),
            &excluded,
            None,
        );
    }

    #[test]
    fn tags() {
        let offers = |tags: &[&str]| res(|r| r.tags = set(tags));
        check(offers(&[]), key(|_| {}), None);
        check(
            offers(&["MultiProcessor", "8Processors"]),
            key(|k| k.tags = set(&["8Processors"])),
            None,
        );
        check(
            offers(&["MultiProcessor"]),
            key(|k| k.tags = set(&["8Processors"])),
            Some(Mismatch::MissingTag("8Processors".into())),
        );
        // all queue tags are needed
        check(
            offers(&["GPU"]),
            key(|k| k.tags = set(&["GPU", "WholeNode"])),
            Some(Mismatch::MissingTag("WholeNode".into())),
        );
        // required tags: the queue must carry them
        let strict = res(|r| {
            r.tags = set(&["MultiProcessor", "4Processors"]);
            r.required_tags = set(&["MultiProcessor"]);
        });
        check(
            strict.clone(),
            key(|k| k.tags = set(&["MultiProcessor"])),
            None,
        );
        check(
            strict,
            key(|_| {}),
            Some(Mismatch::RequiredTag("MultiProcessor".into())),
        );
    }

    #[test]
    fn mismatches_lists_every_failing_rule() {
        let found = mismatches(
            &key(|k| {
                k.cpu_time = 172_800;
                k.tags = set(&["GPU"]);
            }),
            &res(|_| {}),
            &BTreeSet::new(),
        );
        assert_eq!(
            found,
            vec![Mismatch::CpuTime, Mismatch::MissingTag("GPU".into())]
        );
    }
}

mod descriptions {
    use super::*;

    fn desc(edit: impl FnOnce(&mut ResourceDescription)) -> ResourceDescription {
        let mut d = ResourceDescription {
            vo: "lhcb".into(),
            cpu_time: 3_600,
            ..ResourceDescription::default()
        };
        edit(&mut d);
        d
    }

    fn check(d: ResourceDescription, expected_tags: &[&str]) {
        match d.clone().into_resource() {
            Ok(r) => assert_eq!(r.tags, set(expected_tags), "{d:?}"),
            Err(e) => panic!("{d:?}: {e}"),
        }
    }

    fn check_err(d: ResourceDescription, expected: &str) {
        match d.clone().into_resource() {
            Ok(r) => panic!("{d:?} accepted as {r:?}"),
            Err(e) => assert_eq!(e.to_string(), expected),
        }
    }

    #[test]
    fn tags_are_derived() {
        check(desc(|_| {}), &[]);
        check(
            desc(|d| d.number_of_processors = 4),
            &[
                "MultiProcessor",
                "2Processors",
                "3Processors",
                "4Processors",
            ],
        );
        check(desc(|d| d.max_ram_mb = 1_023), &[]);
        check(desc(|d| d.max_ram_mb = 3_000), &["1GB", "2GB"]);
        check(desc(|d| d.whole_node = true), &["WholeNode"]);
        check(
            desc(|d| {
                d.number_of_processors = 2;
                d.max_ram_mb = 1_024;
                d.tags = vec![" GPU ".into(), String::new(), "GPU".into()];
            }),
            &["GPU", "MultiProcessor", "2Processors", "1GB"],
        );
    }

    #[test]
    fn values_are_normalized() {
        let r = desc(|d| {
            d.site = Some("ANY".into());
            d.grid_ce = Some("  ".into());
            d.owner_group = Some("lhcb_mc".into());
            d.platforms = vec!["el9".into(), "el8".into(), "el9".into()];
            d.job_types = vec!["User".into(), "Any".into()];
        })
        .into_resource();
        let expected = Resource {
            vo: "lhcb".into(),
            owner_group: Some("lhcb_mc".into()),
            platforms: vec!["el8".into(), "el9".into()],
            cpu_time: 3_600,
            ..Resource::default()
        };
        assert_eq!(r, Ok(expected));
    }

    #[test]
    fn invalid_values_name_the_field() {
        check_err(
            desc(|d| d.vo = " ".into()),
            "resource field VirtualOrganization is missing",
        );
        check_err(
            desc(|d| d.cpu_time = -1),
            "resource field CPUTime is out of range: -1 (allowed 0..=315360000)",
        );
        check_err(
            desc(|d| d.cpu_time = MAX_CPU_TIME + 1),
            "resource field CPUTime is out of range: 315360001 (allowed 0..=315360000)",
        );
        check_err(
            desc(|d| d.number_of_processors = 0),
            "resource field NumberOfProcessors is out of range: 0 (allowed 1..=4096)",
        );
        check_err(
            desc(|d| d.number_of_processors = 4_097),
            "resource field NumberOfProcessors is out of range: 4097 (allowed 1..=4096)",
        );
        check_err(
            desc(|d| d.max_ram_mb = -5),
            "resource field MaxRAM is out of range: -5 (allowed 0..=67108864)",
        );
        check_err(
            desc(|d| d.max_ram_mb = MAX_RAM_MB + 1),
            "resource field MaxRAM is out of range: 67108865 (allowed 0..=67108864)",
        );
        check_err(
            desc(|d| d.owner = Some("alice".into())),
            "resource field Owner is invalid: a private pilot needs an OwnerGroup too",
        );
    }
}

mod shares {
    use super::*;

    /// `tqs`: (owner, group, average RealPriority), each queue with its own CPU time;
    /// `expected`: priorities in order.
    fn check(shares: &ShareConfig, tqs: &[(&str, &str, f64)], expected: &[f64]) {
        let keys: Vec<TqKey> = (0..)
            .zip(tqs)
            .map(|(i, (owner, group, _))| {
                key(|k| {
                    k.owner = (*owner).into();
                    k.owner_group = (*group).into();
                    k.cpu_time = 360 * (i + 1);
                })
            })
            .collect();
        let inputs: Vec<(&TqKey, f64)> = keys.iter().zip(tqs).map(|(k, t)| (k, t.2)).collect();
        let got = task_queue_priorities(&inputs, shares);
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-9, "got {got:?}, expected {expected:?}");
        }
    }

    #[test]
    fn owners_split_the_group_share() {
        let shares = ShareConfig::new();
        check(&shares, &[("alice", "u", 1.0)], &[1000.0]);
        // two owners: 500 each; alice's two queues split hers by average priority
        check(
            &shares,
            &[("alice", "u", 1.0), ("alice", "u", 3.0), ("bob", "u", 1.0)],
            &[125.0, 375.0, 500.0],
        );
    }

    #[test]
    fn job_sharing_groups_are_one_entity() {
        let shares = ShareConfig::new()
            .with_group("lhcb", "prod", 300.0, true)
            .unwrap_or_default();
        check(
            &shares,
            &[("a", "prod", 1.0), ("b", "prod", 2.0)],
            &[100.0, 200.0],
        );
        let shares = ShareConfig::new()
            .with_group("lhcb", "u", 300.0, false)
            .unwrap_or_default();
        check(
            &shares,
            &[("a", "u", 1.0), ("b", "u", 2.0), ("c", "other", 2.0)],
            &[150.0, 150.0, 1000.0],
        );
    }

    #[test]
    fn floor_and_background() {
        let shares = ShareConfig::new()
            .with_group("lhcb", "u", 0.0, false)
            .unwrap_or_default();
        check(&shares, &[("a", "u", 1.0)], &[MIN_TQ_PRIORITY]);
        let shares = ShareConfig::new().with_background_tqs(true);
        check(
            &shares,
            &[("a", "u", 1.0), ("a", "u", 0.05)],
            &[1000.0, MIN_TQ_PRIORITY],
        );
        let shares = ShareConfig::new();
        check(
            &shares,
            &[("a", "u", 1e6), ("a", "u", 1e-5)],
            &[1000.0 - 1e-8, MIN_TQ_PRIORITY],
        );
    }

    #[test]
    fn queues_differing_only_in_sites_share_their_sum() {
        let shares = ShareConfig::new();
        // the two site-only variants each get 250 + 250; the tagged queue is separate
        let keys = [
            key(|k| k.sites = set(&["A"])),
            key(|k| k.sites = set(&["B"])),
            key(|k| {
                k.sites = set(&["A"]);
                k.tags = set(&["GPU"]);
            }),
            key(|k| k.banned_sites = set(&["C"])),
        ];
        let inputs: Vec<(&TqKey, f64)> = keys.iter().map(|k| (k, 1.0)).collect();
        assert_eq!(
            task_queue_priorities(&inputs, &shares),
            vec![750.0, 750.0, 250.0, 750.0]
        );
    }

    #[test]
    fn invalid_shares_are_rejected() {
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let err = ShareConfig::new().with_group("lhcb", "u", bad, false);
            assert!(matches!(err, Err(MatchError::InvalidShare { .. })), "{bad}");
        }
    }
}

mod index {
    use super::*;

    #[test]
    fn insert_move_remove() {
        let mut index = Index::new();
        let a = index.insert(1, key(|_| {}), 1.0);
        assert_eq!(index.insert(2, key(|_| {}), 5.0), a);
        let b = index.insert(3, key(|k| k.cpu_time = 360), 1.0);
        assert_ne!(a, b);
        assert_eq!((index.jobs(), index.task_queues()), (3, 2));
        // moving job 3 into queue a empties b
        assert_eq!(index.insert(3, key(|_| {}), 1.0), a);
        assert_eq!((index.jobs(), index.task_queues()), (3, 1));
        assert_eq!(index.tq_of(3), Some(a));
        assert_eq!(index.tq_len(a), Some(3));
        assert!(index.remove(2));
        assert!(!index.remove(2));
        assert!(!index.contains(2));
        assert!(index.contains(1));
        // recomputation prunes the empty queue b
        assert!(index.tq_key(b).is_some());
        index.recompute_priorities(&ShareConfig::new());
        assert!(index.tq_key(b).is_none());
        assert_eq!(index.tq_priority(a), Some(1000.0));
        assert!(!index.insert_into(9, b, 1.0));
        assert!(index.insert_into(9, a, 1.0));
        assert_eq!(index.tq_len(a), Some(3));
    }

    #[test]
    fn matching_hands_each_job_out_once() {
        let mut index = Index::new();
        for job in 0..5 {
            index.insert(job, key(|_| {}), 1.0);
        }
        index.insert(10, key(|k| k.sites = set(&["LCG.RAL.uk"])), 1.0);
        let pilot = res(|_| {});
        let none = BTreeSet::new();
        let mut rng = rng();
        let mut got: Vec<u64> = std::iter::from_fn(|| index.match_job(&pilot, &none, &mut rng))
            .map(|m| m.job_id)
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        assert_eq!((index.jobs(), index.task_queues()), (1, 1));
        let ral = res(|r| r.site = Some("LCG.RAL.uk".into()));
        assert_eq!(
            index.peek_match(&ral, &none, &mut rng).map(|m| m.job_id),
            Some(10)
        );
        assert_eq!(
            index.match_job(&ral, &none, &mut rng).map(|m| m.job_id),
            Some(10)
        );
        assert_eq!(index.match_job(&ral, &none, &mut rng), None);
    }

    #[test]
    fn lowest_job_id_first_within_a_priority() {
        let mut index = Index::new();
        for job in [30, 10, 20] {
            index.insert(job, key(|_| {}), 1.0);
        }
        let mut rng = rng();
        let order: Vec<u64> = (0..3)
            .filter_map(|_| index.match_job(&res(|_| {}), &BTreeSet::new(), &mut rng))
            .map(|m| m.job_id)
            .collect();
        assert_eq!(order, vec![10, 20, 30]);
    }

    #[test]
    fn cached_resources_see_later_queues_and_refills() {
        let mut index = Index::new();
        let none = BTreeSet::new();
        let mut rng = rng();
        let pilot = res(|_| {});
        assert_eq!(index.match_job(&pilot, &none, &mut rng), None);
        // a queue created after the resource was cached
        index.insert(1, key(|_| {}), 1.0);
        assert_eq!(
            index.match_job(&pilot, &none, &mut rng).map(|m| m.job_id),
            Some(1)
        );
        // refilling the now empty queue
        index.insert(2, key(|_| {}), 1.0);
        assert_eq!(
            index.match_job(&pilot, &none, &mut rng).map(|m| m.job_id),
            Some(2)
        );
        // a pilot with less time left shares the entry only while no queue lies in between
        index.insert(3, key(|k| k.cpu_time = 43_200), 1.0);
        let short = res(|r| r.cpu_time = 40_000);
        assert_eq!(index.match_job(&short, &none, &mut rng), None);
        assert_eq!(
            index.match_job(&pilot, &none, &mut rng).map(|m| m.job_id),
            Some(3)
        );
        // the excluded set is part of the cache key
        index.insert(4, key(|_| {}), 1.0);
        assert_eq!(index.match_job(&pilot, &set(&["User"]), &mut rng), None);
        assert_eq!(
            index.match_job(&pilot, &none, &mut rng).map(|m| m.job_id),
            Some(4)
        );
    }

    #[test]
    fn priorities_weight_the_lottery() {
        let mut index = Index::new();
        // alice's single job competes with bob's queue holding 1000 jobs: equal owner shares
        index.insert(0, key(|_| {}), 1.0);
        for job in 1..=1000 {
            index.insert(job, key(|k| k.owner = "bob".into()), 1.0);
        }
        index.recompute_priorities(&ShareConfig::new());
        let mut alice_first = 0;
        for seed in 0..200 {
            let mut rng = SmallRng::seed_from_u64(seed);
            if index
                .peek_match(&res(|_| {}), &BTreeSet::new(), &mut rng)
                .map(|m| m.job_id)
                == Some(0)
            {
                alice_first += 1;
            }
        }
        assert!((70..130).contains(&alice_first), "{alice_first}");
    }

    #[test]
    fn real_priority_weights_jobs_within_a_queue() {
        let mut index = Index::new();
        index.insert(1, key(|_| {}), 0.0001); // RealPriority 1e-5
        index.insert(2, key(|_| {}), 10.0); // RealPriority 1e6
        let first = index.match_job(&res(|_| {}), &BTreeSet::new(), &mut rng());
        assert_eq!(first.map(|m| m.job_id), Some(2));
    }

    #[test]
    fn matching_task_queues_lists_ids() {
        let mut index = Index::new();
        let a = index.insert(1, key(|_| {}), 1.0);
        let _ = index.insert(2, key(|k| k.vo = "cta".into()), 1.0);
        let c = index.insert(3, key(|k| k.cpu_time = 360), 1.0);
        let mut expected = vec![a, c];
        expected.sort_unstable();
        assert_eq!(
            index.matching_task_queues(&res(|_| {}), &BTreeSet::new()),
            expected
        );
        assert_eq!(index.task_queue_list().count(), 3);
    }
}

mod limits {
    use super::*;

    fn check(running: &[(&str, u64)], now_s: u64, expected: &[&str]) {
        let mut limits = SiteLimits::new();
        for (path, value) in [
            ("RunningLimit/LCG.CERN.cern/JobType/User", 10),
            ("RunningLimit/LCG.CERN.cern/JobType/MCSimulation", 100),
            ("RunningLimit/LCG.RAL.uk/JobType/User", 0),
            ("MatchingDelay/LCG.CERN.cern/JobType/Merge", 60),
        ] {
            assert_eq!(limits.insert_option(path, value), Ok(()));
        }
        let mut delays = DelayState::new();
        delays.record_match("LCG.CERN.cern", "Merge", 1_000, &limits);
        delays.record_match("LCG.CERN.cern", "User", 1_000, &limits); // no delay configured
        let running: HashMap<String, u64> =
            running.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect();
        let got = excluded_job_types("LCG.CERN.cern", &running, &limits, &delays, now_s);
        assert_eq!(got, set(expected), "{running:?} at {now_s}");
    }

    #[test]
    fn running_limits_and_delays() {
        check(&[], 2_000, &[]);
        check(&[("User", 9)], 2_000, &[]);
        check(&[("User", 10)], 2_000, &["User"]);
        check(
            &[("User", 11), ("MCSimulation", 100)],
            2_000,
            &["MCSimulation", "User"],
        );
        check(&[], 1_000, &["Merge"]);
        check(&[], 1_059, &["Merge"]);
        check(&[], 1_060, &[]);
    }

    #[test]
    fn zero_limit_excludes_immediately_and_other_sites_are_free() {
        let mut limits = SiteLimits::new();
        limits.set_running_limit("LCG.RAL.uk", "User", 0);
        let none = HashMap::new();
        let delays = DelayState::new();
        assert_eq!(
            excluded_job_types("LCG.RAL.uk", &none, &limits, &delays, 0),
            set(&["User"])
        );
        assert_eq!(
            excluded_job_types("LCG.CERN.cern", &none, &limits, &delays, 0),
            set(&[])
        );
        assert!(!delays.is_delayed("LCG.RAL.uk", "User", 0));
    }

    #[test]
    fn malformed_options_are_rejected() {
        let mut limits = SiteLimits::new();
        for path in [
            "RunningLimit/LCG.CERN.cern/User",
            "RunningLimit/LCG.CERN.cern/CEs/ce1/JobType/User",
            "RunningLimit/LCG.CERN.cern/Owner/alice",
            "Running/LCG.CERN.cern/JobType/User",
            "RunningLimit//JobType/User",
        ] {
            assert!(limits.insert_option(path, 1).is_err(), "{path}");
        }
        assert_eq!(limits, SiteLimits::new());
    }
}

mod explain {
    use super::*;

    fn check(
        tq: TqKey,
        recent: &[Resource],
        excluded: &[&str],
        expected_reasons: &[&str],
        summary: &str,
    ) {
        let mut index = Index::new();
        index.insert(7, tq, 1.0);
        index.insert(8, key(|k| k.owner = "bob".into()), 1.0);
        index.recompute_priorities(&ShareConfig::new());
        let got = index.explain(7, recent, &set(excluded));
        assert!(got.in_queue);
        assert_eq!(got.reasons, expected_reasons, "{got:?}");
        assert!(got.summary.starts_with(summary), "{}", got.summary);
    }

    #[test]
    fn reasons_are_worded() {
        let pilots: Vec<Resource> = (0..12).map(|_| res(|r| r.cpu_time = 3_600)).collect();
        check(
            key(|k| k.sites = set(&["LCG.X.x"])),
            &pilots,
            &[],
            &["none of the 12 recent pilots offered site LCG.X.x"],
            "not matchable by any of the 12 recent pilots: none of the 12",
        );
        check(
            key(|k| k.cpu_time = 86_400),
            &pilots,
            &[],
            &["CPUTime 86400 s exceeds what every recent pilot had (max 3600 s)"],
            "not matchable",
        );
        check(
            key(|k| {
                k.tags = set(&["MultiProcessor"]);
                k.banned_sites = set(&["LCG.CERN.cern"]);
            }),
            &pilots[..2],
            &[],
            &[
                "site LCG.CERN.cern is banned by the job (2 of 2 recent pilots ran there)",
                "tag MultiProcessor not offered by any recent pilot",
            ],
            "not matchable",
        );
        check(
            key(|_| {}),
            &pilots[..1],
            &["User"],
            &["job type User is over its RunningLimit or within its MatchingDelay"],
            "not matchable",
        );
        let mixed = [res(|r| r.cpu_time = 3_600), res(|r| r.cpu_time = 100)];
        check(
            key(|_| {}),
            &mixed,
            &[],
            &[],
            "matchable by 1 of 2 recent pilots: waiting for a pilot",
        );
        check(
            key(|_| {}),
            &[],
            &[],
            &["no recent pilots to compare with"],
            "no recent pilots",
        );
    }

    #[test]
    fn small_shares_are_pointed_out() {
        let mut index = Index::new();
        index.insert(1, key(|k| k.owner_group = "tiny".into()), 1.0);
        index.insert(2, key(|_| {}), 1.0);
        let shares = ShareConfig::new()
            .with_group("lhcb", "tiny", 0.0, false)
            .unwrap_or_default();
        index.recompute_priorities(&shares);
        let got = index.explain(1, &[res(|_| {})], &BTreeSet::new());
        assert_eq!(got.matching_pilots, 1);
        assert_eq!(
            got.summary,
            "matchable by 1 of 1 recent pilots: waiting for a pilot; lower priority than 1 other \
             task queues; group share is small: priority 0.001 vs up to 1000 for competing task queues"
        );
        let gone = index.explain(99, &[], &BTreeSet::new());
        assert!(!gone.in_queue);
        assert_eq!(gone.reasons, ["job 99 is not waiting in any task queue"]);
    }
}
