//! JobDB on every backend.

use std::collections::BTreeMap;

use dirac_core::config::{JobSchedulingOps, Operations};
use dirac_proto::common::Filter;
use dirac_proto::wms::{Heartbeat, JobParameter};
use dirac_wms::JobDb;
use dirac_wms::jobdb::Apply;
use dirac_wms::optimizer::optimize_once;
use dirac_wms::search::{Scope, build_grouping, build_order, build_where};
use dirac_wms::state::{JobStatus, Update};
use dirac_wms::submit::{Submitter, prepare};
use dirac_wms::{Wms, WmsError};

use crate::support::{ALICE, config, submit};

const JDL: &str =
    r#"[ Executable = "/bin/echo"; JobName = "n"; JobGroup = "g1"; Site = "LCG.A.a"; ]"#;

fn t(sec: u32) -> String {
    format!("2030-01-01T00:00:{sec:02}.000000Z")
}

fn up(sec: u32, status: Option<JobStatus>, minor: &str, source: &str) -> Update {
    Update {
        time: t(sec),
        status,
        minor_status: (!minor.is_empty()).then(|| minor.to_string()),
        application_status: None,
        source: source.into(),
    }
}

fn f(p: &str, op: &str, v: &str, vs: &[&str]) -> Filter {
    Filter {
        parameter: p.into(),
        operator: op.into(),
        value: v.into(),
        values: vs.iter().map(|s| s.to_string()).collect(),
    }
}

/// Force `id` to `status` at the current time.
async fn force_now(db: &JobDb, id: u64, status: JobStatus) {
    let mut updates = BTreeMap::new();
    let mut u = up(0, Some(status), "", "Test");
    u.time = dirac_core::time::now();
    updates.insert(id, vec![u]);
    db.apply_updates(updates, Apply::Forced)
        .await
        .expect("forced status");
}

async fn status_of(db: &JobDb, id: u64) -> String {
    db.jobs(&[id]).await.expect("jobs")[0].status.clone()
}

async fn submit_search_and_optimize(db: JobDb) {
    let bob = Submitter {
        owner: "bob",
        ..ALICE
    };
    let ids = submit(
        &db,
        &ALICE,
        &[
            JDL,
            JDL,
            r#"[ Executable = "x"; Parameters = { "a", "b" }; JobGroup = "g2"; ]"#,
        ],
    )
    .await;
    assert_eq!(ids.len(), 4);
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids are consecutive: {ids:?}"
    );
    let bobs = submit(&db, &bob, &[JDL]).await;
    assert!(bobs[0] > ids[3]);

    let jobs = db.jobs(&ids).await.expect("jobs");
    assert_eq!(jobs.len(), 4);
    assert!(
        jobs.iter().all(|j| j.status == "Received"
            && j.minor_status == "Job accepted"
            && j.owner == "alice")
    );
    assert_eq!(jobs[0].site, "LCG.A.a");
    assert_eq!(jobs[3].site, "ANY");
    assert_eq!(jobs[3].cpu_time, 86_400);

    // Search: scoped, filtered, sorted, paged.
    let scope = Scope::Owner {
        owner: "alice",
        vo: "dteam",
    };
    let w = build_where(&[f("JobGroup", "eq", "g1", &[])], scope).expect("where");
    assert_eq!(db.count(&w).await.expect("count"), 2);
    let w = build_where(&[], scope).expect("where");
    let order = build_order(&[dirac_proto::common::Sort {
        parameter: "JobID".into(),
        direction: "desc".into(),
    }])
    .expect("order");
    let page = db.search(&w, &order, 3, 0).await.expect("search");
    assert_eq!(
        page.iter().map(|j| j.job_id).collect::<Vec<_>>(),
        vec![ids[3], ids[2], ids[1]]
    );
    let page2 = db.search(&w, &order, 3, 3).await.expect("search");
    assert_eq!(
        page2.iter().map(|j| j.job_id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    let all = build_where(&[], Scope::All).expect("where");
    assert_eq!(db.count(&all).await.expect("count"), 5);
    let cases: Vec<(Filter, u64)> = vec![
        (f("JobID", "gt", &ids[1].to_string(), &[]), 3),
        (f("JobID", "lt", &ids[1].to_string(), &[]), 1),
        (f("JobGroup", "neq", "g1", &[]), 2),
        (f("JobGroup", "like", "g%", &[]), 5),
        (f("JobGroup", "not like", "%1", &[]), 2),
        (f("Owner", "in", "", &["bob", "nobody"]), 1),
        (f("Owner", "not in", "", &["bob"]), 4),
        (f("Site", "eq", "ANY", &[]), 2),
    ];
    for (filter, expected) in cases {
        let w = build_where(std::slice::from_ref(&filter), Scope::All).expect("where");
        assert_eq!(db.count(&w).await.expect("count"), expected, "{filter:?}");
    }
    let summary = db
        .summary(
            &build_grouping(&["Owner".into(), "JobGroup".into()]).expect("grouping"),
            &all,
        )
        .await
        .expect("summary");
    let rows: Vec<(Vec<String>, u64)> = summary.into_iter().map(|r| (r.values, r.count)).collect();
    assert_eq!(
        rows,
        vec![
            (vec!["alice".to_string(), "g1".to_string()], 2),
            (vec!["alice".to_string(), "g2".to_string()], 2),
            (vec!["bob".to_string(), "g1".to_string()], 1),
        ]
    );

    // The optimizer moves them all to Waiting, recording the history.
    let wms = Wms::new(db.clone(), config(), crate::support::sandbox_backend());
    assert_eq!(optimize_once(&wms, 100).await.expect("optimize"), 5);
    assert_eq!(optimize_once(&wms, 100).await.expect("optimize"), 0);
    assert_eq!(status_of(&db, ids[0]).await, "Waiting");
    let history = db.history(&[ids[0]]).await.expect("history");
    let steps: Vec<(&str, &str)> = history[&ids[0]]
        .iter()
        .map(|h| (h.status.as_str(), h.minor_status.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            ("Received", "Job accepted"),
            ("Checking", "JobSanity"),
            ("Waiting", "Pilot Agent Submission")
        ]
    );
}

async fn optimizer_fails_jobs_of_unknown_users(db: JobDb) {
    let ghost = Submitter {
        owner: "ghost",
        owner_group: "dteam_user",
        vo: "dteam",
    };
    let ids = submit(&db, &ghost, &[JDL]).await;
    let wms = Wms::new(db.clone(), config(), crate::support::sandbox_backend());
    optimize_once(&wms, 10).await.expect("optimize");
    let job = &db.jobs(&ids).await.expect("jobs")[0];
    assert_eq!(
        (job.status.as_str(), job.minor_status.as_str()),
        ("Failed", "Illegal Job JDL")
    );
    assert!(
        job.application_status.contains("ghost"),
        "{}",
        job.application_status
    );
    assert!(!job.end_exec_time.is_empty());
}

async fn status_updates_follow_the_state_machine(db: JobDb) {
    let ids = submit(&db, &ALICE, &[JDL]).await;
    let id = ids[0];
    let mut updates = BTreeMap::new();
    updates.insert(
        id,
        vec![
            up(3, Some(JobStatus::Running), "Application", "JobWrapper"),
            up(
                1,
                Some(JobStatus::Waiting),
                "Pilot Agent Submission",
                "Optimizer",
            ),
            up(2, Some(JobStatus::Matched), "Assigned", "Matcher"),
        ],
    );
    let r = db
        .apply_updates(updates, Apply::Reported)
        .await
        .expect("apply");
    let state = r[&id].as_ref().expect("ok");
    assert_eq!(state.status, JobStatus::Running);
    assert_eq!(state.start_exec_time.as_deref(), Some(t(3).as_str()));
    let job = &db.jobs(&ids).await.expect("jobs")[0];
    assert_eq!(
        (job.status.as_str(), job.minor_status.as_str()),
        ("Running", "Application")
    );
    assert_eq!(job.start_exec_time, t(3));
    assert!(
        !job.heart_beat_time.is_empty(),
        "JobWrapper updates count as heartbeats"
    );

    // A disallowed transition is ignored and recorded with (SM); an older
    // update does not apply.
    let mut updates = BTreeMap::new();
    updates.insert(
        id,
        vec![
            up(4, Some(JobStatus::Waiting), "", "Bogus"),
            up(0, Some(JobStatus::Killed), "", "Late"),
        ],
    );
    db.apply_updates(updates, Apply::Reported)
        .await
        .expect("apply");
    assert_eq!(status_of(&db, id).await, "Running");
    let h = &db.history(&[id]).await.expect("history")[&id];
    assert!(
        h.iter()
            .any(|e| e.source == "Bogus(SM)" && e.status == "Running"),
        "{h:?}"
    );
    assert!(h.iter().any(|e| e.source == "Late"));

    // Forced, it applies.
    let mut updates = BTreeMap::new();
    updates.insert(id, vec![up(5, Some(JobStatus::Waiting), "", "Admin")]);
    db.apply_updates(updates, Apply::Forced)
        .await
        .expect("apply");
    assert_eq!(status_of(&db, id).await, "Waiting");

    // Done sets EndExecTime; unknown jobs are NotFound.
    let mut updates = BTreeMap::new();
    updates.insert(
        id,
        vec![
            up(6, Some(JobStatus::Matched), "", "M"),
            up(7, Some(JobStatus::Running), "", "J"),
            up(8, Some(JobStatus::Done), "Execution Complete", "J"),
        ],
    );
    updates.insert(999_999, vec![up(6, Some(JobStatus::Running), "", "J")]);
    let r = db
        .apply_updates(updates, Apply::Reported)
        .await
        .expect("apply");
    assert!(matches!(r[&999_999], Err(WmsError::NotFound(_))));
    let job = &db.jobs(&ids).await.expect("jobs")[0];
    assert_eq!(job.status, "Done");
    assert_eq!(job.end_exec_time, t(8));
    assert_eq!(
        job.start_exec_time,
        t(3),
        "StartExecTime stays the first Running"
    );
}

async fn kill_commands_reach_the_heartbeat_once(db: JobDb) {
    let ids = submit(&db, &ALICE, &[JDL, JDL]).await;
    let mut updates = BTreeMap::new();
    for id in &ids {
        updates.insert(
            *id,
            vec![
                up(1, Some(JobStatus::Waiting), "", "O"),
                up(2, Some(JobStatus::Matched), "", "M"),
                up(3, Some(JobStatus::Running), "", "J"),
            ],
        );
    }
    db.apply_updates(updates, Apply::Reported)
        .await
        .expect("apply");
    let mut kill = BTreeMap::new();
    kill.insert(
        ids[0],
        vec![up(
            4,
            Some(JobStatus::Killed),
            "Marked for termination",
            "JobManager",
        )],
    );
    db.apply_updates(kill, Apply::Reported).await.expect("kill");
    let beat = |id| Heartbeat {
        job_id: id,
        load_average: 1.5,
        cpu_consumed: 10.0,
        standard_output: "line".into(),
        ..Default::default()
    };
    let (commands, existing) = db
        .heartbeat(&[beat(ids[0]), beat(ids[1]), beat(424_242)])
        .await
        .expect("beat");
    assert_eq!(existing.len(), 2);
    assert_eq!(commands.len(), 1);
    assert_eq!(
        (commands[0].job_id, commands[0].command.as_str()),
        (ids[0], "Kill")
    );
    let (again, _) = db.heartbeat(&[beat(ids[0])]).await.expect("beat");
    assert!(again.is_empty(), "commands are delivered once");
    let params = db.parameters(&[ids[1]]).await.expect("params");
    assert_eq!(params.len(), 1);
    assert_eq!(
        (params[0].name.as_str(), params[0].value.as_str()),
        ("StandardOutput", "line")
    );
    assert!(
        !db.jobs(&[ids[1]]).await.expect("jobs")[0]
            .heart_beat_time
            .is_empty()
    );
}

async fn reschedule_counts_and_fails_past_the_limit(db: JobDb) {
    let ids = submit(&db, &ALICE, &[JDL, JDL]).await;
    let (id, gone) = (ids[0], ids[1]);
    let ops = Operations {
        job_scheduling: JobSchedulingOps {
            max_rescheduling: 2,
            reschedule_delays: vec![3600],
            ..JobSchedulingOps::default()
        },
        ..Operations::default()
    };
    let param = |v: &str| JobParameter {
        job_id: id,
        name: "CPUNormalizationFactor".into(),
        value: v.into(),
    };
    // Deleted jobs cannot come back.
    force_now(&db, gone, JobStatus::Deleted).await;
    let r = db
        .reschedule(&[gone], &ops, false, "JobManager")
        .await
        .expect("reschedule");
    assert!(matches!(r[&gone], Err(WmsError::FailedPrecondition(_))));
    let mut expected_counter = 0;
    for (round, reset) in [(1, false), (2, false), (3, true), (4, false), (5, false)] {
        db.set_parameters(&[param(&round.to_string())])
            .await
            .expect("param");
        force_now(&db, id, JobStatus::Running).await;
        let r = db
            .reschedule(&[id], &ops, reset, "JobManager")
            .await
            .expect("reschedule");
        expected_counter = if reset { 0 } else { expected_counter + 1 };
        assert_eq!(
            r[&id].as_ref().ok(),
            Some(&JobStatus::Received),
            "round {round}"
        );
        let job = &db.jobs(&[id]).await.expect("jobs")[0];
        assert_eq!(job.reschedule_counter, expected_counter, "round {round}");
        assert_eq!(
            (job.status.as_str(), job.minor_status.as_str()),
            ("Received", "Job Rescheduled")
        );
        assert_eq!(job.site, "LCG.A.a");
        assert!(
            db.parameters(&[id]).await.expect("params").is_empty(),
            "parameters move to the attic"
        );
        if expected_counter > 0 {
            // Held by the reschedule delay: the optimizer does not take it.
            let (_, claimed) = db
                .claim_received(10, &ops.job_scheduling.reschedule_delays)
                .await
                .expect("claim");
            assert!(claimed.is_empty(), "round {round}");
        }
        let (_, claimed) = db.claim_received(10, &[0]).await.expect("claim");
        assert_eq!(claimed.len(), 1, "round {round}");
    }
    // Past MaxRescheduling the job fails, and the caller hears it.
    force_now(&db, id, JobStatus::Running).await;
    let r = db
        .reschedule(&[id], &ops, false, "JobManager")
        .await
        .expect("reschedule");
    assert!(
        matches!(&r[&id], Err(WmsError::FailedPrecondition(m)) if m.contains("maximum")),
        "{r:?}"
    );
    let job = &db.jobs(&[id]).await.expect("jobs")[0];
    assert_eq!(
        (job.status.as_str(), job.minor_status.as_str()),
        ("Failed", "Maximum of reschedulings reached")
    );
}

async fn request_ids_make_submission_idempotent(db: JobDb) {
    let jdls = vec![
        JDL.to_string(),
        r#"[ Executable = "x"; Parameters = 3; ]"#.to_string(),
    ];
    let jobs = prepare(&jdls, &ALICE, &Default::default()).expect("valid");
    let first = db.allocate_ids(jobs.len() as u64).await.expect("ids");
    let submitted = db
        .insert_jobs(first, &jobs, &ALICE, Some("req-1"))
        .await
        .expect("insert");
    let replay = db
        .find_submission("req-1", "alice", "dteam")
        .await
        .expect("find")
        .expect("known");
    assert_eq!(
        replay
            .iter()
            .map(|j| (j.job_id, j.jdl_index))
            .collect::<Vec<_>>(),
        submitted
            .iter()
            .map(|j| (j.job_id, j.jdl_index))
            .collect::<Vec<_>>()
    );
    assert!(
        db.find_submission("req-1", "bob", "dteam")
            .await
            .expect("find")
            .is_none(),
        "request ids are per user"
    );
    // A second insert with the same id is refused and writes nothing.
    let again = db.allocate_ids(jobs.len() as u64).await.expect("ids");
    assert!(
        db.insert_jobs(again, &jobs, &ALICE, Some("req-1"))
            .await
            .is_err()
    );
    assert!(
        db.jobs(&[again]).await.expect("jobs").is_empty(),
        "the refused transaction left no job"
    );
}

async fn concurrent_optimizers_never_share_a_job(db: JobDb) {
    let jdls: Vec<&str> = std::iter::repeat_n(JDL, 300).collect();
    submit(&db, &ALICE, &jdls).await;
    let (a, b) = tokio::join!(db.claim_received(200, &[0]), db.claim_received(200, &[0]));
    let (a, b) = (a.expect("claim a").1, b.expect("claim b").1);
    let mut all: Vec<u64> = a.iter().chain(b.iter()).map(|c| c.job_id).collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "a job was claimed twice");
    assert_eq!(n, 300);
    // Claims of a dead optimizer go back to Received and are claimed again.
    assert_eq!(db.release_stale_claims(3600).await.expect("release"), 0);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(db.release_stale_claims(0).await.expect("release"), 300);
    assert_eq!(
        db.claim_received(1000, &[0]).await.expect("claim").1.len(),
        300
    );
}

crate::backend_tests!(
    submit_search_and_optimize,
    optimizer_fails_jobs_of_unknown_users,
    status_updates_follow_the_state_machine,
    kill_commands_reach_the_heartbeat_once,
    reschedule_counts_and_fails_past_the_limit,
    request_ids_make_submission_idempotent,
    concurrent_optimizers_never_share_a_job,
);
