//! Matching on every backend: replicas racing for the same jobs, task
//! queues following status changes, stalled-job recovery.

use std::collections::BTreeMap;
use std::sync::Arc;

use dirac_matcher::{Resource, ResourceDescription};
use dirac_proto::wms::Pilot;
use dirac_wms::agents::stalled_jobs_once;
use dirac_wms::jobdb::Apply;
use dirac_wms::optimizer::optimize_once;
use dirac_wms::state::{JobStatus, Update};
use dirac_wms::{JobDb, Wms};

use crate::support::{ALICE, config, sandbox_backend, submit};

const JDL: &str = r#"[ Executable = "/bin/true"; JobName = "m"; CPUTime = 600; ]"#;

fn pilot_resource(site: &str) -> Resource {
    ResourceDescription {
        vo: "dteam".into(),
        owner: None,
        owner_group: None,
        site: Some(site.into()),
        grid_ce: Some("ce.local".into()),
        platforms: vec![],
        cpu_time: 86_400,
        number_of_processors: 1,
        max_ram_mb: 2048,
        whole_node: false,
        tags: vec![],
        required_tags: vec![],
        job_types: vec![],
    }
    .into_resource()
    .expect("valid resource")
}

fn now(status: JobStatus, source: &str) -> Update {
    Update {
        time: dirac_core::time::now(),
        status: Some(status),
        minor_status: None,
        application_status: None,
        source: source.into(),
    }
}

async fn replicas_never_hand_out_a_job_twice(db: JobDb) {
    submit(&db, &ALICE, &vec![JDL; 60]).await;
    let a = Wms::new(db.clone(), config(), sandbox_backend());
    assert_eq!(optimize_once(&a, 1000).await.expect("optimize"), 60);
    // A second replica with its own index, loaded from TaskQueueDB.
    let b = Wms::new(
        JobDb::open(db.db().clone()).await.expect("open"),
        config(),
        sandbox_backend(),
    );
    assert_eq!(dirac_wms::matching::resync(&b).await.expect("resync"), 60);
    assert_eq!(a.matcher.queued(), 60);
    let resource = pilot_resource("LCG.Test.ch");
    let take = |w: Arc<Wms>, r: Resource| async move {
        let mut got = Vec::new();
        while let Some(job) = w.match_job(&r, "LCG.Test.ch", None).await.expect("match") {
            got.push(job.job_id);
        }
        got
    };
    let (x, y) = tokio::join!(
        take(a.clone(), resource.clone()),
        take(b.clone(), resource.clone())
    );
    let mut all: Vec<u64> = x.iter().chain(y.iter()).copied().collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "a job was handed out twice");
    assert_eq!(n, 60, "every job was handed out once");
    let jobs = db.jobs(&all).await.expect("jobs");
    assert!(
        jobs.iter()
            .all(|j| j.status == "Matched" && j.site == "LCG.Test.ch")
    );
    assert!(db.task_queues.load().await.expect("load").is_empty());
}

async fn killed_jobs_leave_their_task_queue(db: JobDb) {
    let ids = submit(&db, &ALICE, &[JDL, JDL]).await;
    let w = Wms::new(db.clone(), config(), sandbox_backend());
    optimize_once(&w, 10).await.expect("optimize");
    assert_eq!(db.task_queues.load().await.expect("load").len(), 2);
    let mut kill = BTreeMap::new();
    kill.insert(ids[0], vec![now(JobStatus::Killed, "JobManager")]);
    db.apply_updates(kill, Apply::Server).await.expect("kill");
    let queued: Vec<u64> = db
        .task_queues
        .load()
        .await
        .expect("load")
        .iter()
        .map(|q| q.job_id)
        .collect();
    assert_eq!(queued, vec![ids[1]]);
    // The stale index entry of the killed job is never handed out.
    let resource = pilot_resource("LCG.Test.ch");
    let first = w
        .match_job(&resource, "LCG.Test.ch", None)
        .await
        .expect("match")
        .expect("one job");
    assert_eq!(first.job_id, ids[1]);
    assert!(
        w.match_job(&resource, "LCG.Test.ch", None)
            .await
            .expect("match")
            .is_none()
    );
    // A pilot that asks for more than it has is refused by validation.
    let bad = ResourceDescription {
        vo: "dteam".into(),
        cpu_time: -5,
        number_of_processors: 1,
        ..Default::default()
    };
    assert!(bad.into_resource().is_err());
}

async fn stalled_jobs_fail_when_their_pilot_is_gone(db: JobDb) {
    let ids = submit(&db, &ALICE, &[JDL, JDL]).await;
    let mut cfg = (*config()).clone();
    cfg.services.agents.stalled_time_s = 1;
    let w = Wms::new(db.clone(), Arc::new(cfg), sandbox_backend());
    optimize_once(&w, 10).await.expect("optimize");
    w.pilots
        .register(&[
            Pilot {
                stamp: "deadpilot".into(),
                vo: "dteam".into(),
                status: "Running".into(),
                ..Default::default()
            },
            Pilot {
                stamp: "livepilot".into(),
                vo: "dteam".into(),
                status: "Running".into(),
                ..Default::default()
            },
        ])
        .await
        .expect("register");
    let resource = pilot_resource("LCG.Test.ch");
    let a = w
        .match_job(&resource, "LCG.Test.ch", Some("deadpilot"))
        .await
        .expect("match")
        .expect("job");
    let b = w
        .match_job(&resource, "LCG.Test.ch", Some("livepilot"))
        .await
        .expect("match")
        .expect("job");
    let mut running = BTreeMap::new();
    running.insert(a.job_id, vec![now(JobStatus::Running, "JobWrapper")]);
    running.insert(b.job_id, vec![now(JobStatus::Running, "JobWrapper")]);
    db.apply_updates(running, Apply::Reported)
        .await
        .expect("running");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // No heartbeat for longer than StalledTimeS: both Stalled.
    let (stalled, failed, _) = stalled_jobs_once(&w).await.expect("cycle");
    assert_eq!((stalled, failed), (2, 0));
    // The pilot of the first job is gone: it fails at once, with a Kill.
    w.pilots
        .set_status("deadpilot", "Done", "gone")
        .await
        .expect("status");
    let (_, failed, _) = stalled_jobs_once(&w).await.expect("cycle");
    assert_eq!(failed, 1);
    let jobs = db.jobs(&[a.job_id, b.job_id]).await.expect("jobs");
    let by_id: BTreeMap<u64, (&str, &str)> = jobs
        .iter()
        .map(|j| (j.job_id, (j.status.as_str(), j.minor_status.as_str())))
        .collect();
    assert_eq!(
        by_id[&a.job_id],
        ("Failed", "Job stalled: pilot not running")
    );
    assert_eq!(by_id[&b.job_id].0, "Stalled");
    // The live pilot's heartbeat brings its job back to Running.
    let beat = dirac_proto::wms::Heartbeat {
        job_id: b.job_id,
        ..Default::default()
    };
    db.heartbeat(&[beat]).await.expect("beat");
    let mut revive = BTreeMap::new();
    revive.insert(b.job_id, vec![now(JobStatus::Running, "Heartbeat")]);
    db.apply_updates(revive, Apply::Server)
        .await
        .expect("revive");
    assert_eq!(
        db.jobs(&[b.job_id]).await.expect("jobs")[0].status,
        "Running"
    );
    let _ = ids;
}

/// A pilot its CE lost (the SiteDirector ended it Aborted): its stalled job
/// is rescheduled at a site listed in StalledJobsToRescheduleSites.
async fn stalled_jobs_of_a_lost_pilot_are_rescheduled(db: JobDb) {
    submit(&db, &ALICE, &[JDL]).await;
    let mut cfg = (*config()).clone();
    cfg.services.agents.stalled_time_s = 1;
    cfg.services.agents.stalled_jobs_to_reschedule_sites = vec!["LCG.Test.ch".into()];
    let w = Wms::new(db.clone(), Arc::new(cfg), sandbox_backend());
    optimize_once(&w, 10).await.expect("optimize");
    w.pilots
        .register(&[Pilot {
            stamp: "lostpilot".into(),
            vo: "dteam".into(),
            status: "Running".into(),
            ..Default::default()
        }])
        .await
        .expect("register");
    let job = w
        .match_job(
            &pilot_resource("LCG.Test.ch"),
            "LCG.Test.ch",
            Some("lostpilot"),
        )
        .await
        .expect("match")
        .expect("job");
    let mut running = BTreeMap::new();
    running.insert(job.job_id, vec![now(JobStatus::Running, "JobWrapper")]);
    db.apply_updates(running, Apply::Reported)
        .await
        .expect("running");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (stalled, _, _) = stalled_jobs_once(&w).await.expect("cycle");
    assert_eq!(stalled, 1);
    w.pilots
        .set_status(
            "lostpilot",
            "Aborted",
            "unknown to the CE past the grace period",
        )
        .await
        .expect("aborted");
    let (_, failed, rescheduled) = stalled_jobs_once(&w).await.expect("cycle");
    assert_eq!((failed, rescheduled), (0, 1));
    let j = &db.jobs(&[job.job_id]).await.expect("jobs")[0];
    assert_eq!(
        (j.status.as_str(), j.reschedule_counter),
        ("Received", 1),
        "{j:?}"
    );
}

/// The PilotStatus agent: silent pilots end Deleted unless a job of theirs
/// still runs; finished pilots are accounted once, even when a cycle stops
/// between writing the record and flagging the pilot; old ones are removed.
async fn pilots_are_accounted_once_and_cleared(db: JobDb) {
    submit(&db, &ALICE, &[JDL]).await;
    let mut cfg = (*config()).clone();
    cfg.services.agents.pilot_stalled_days = 0;
    cfg.services.agents.clear_pilots_days = 0;
    cfg.services.agents.clear_aborted_pilots_days = 0;
    let w = Wms::new(db.clone(), Arc::new(cfg), sandbox_backend());
    optimize_once(&w, 10).await.expect("optimize");
    let pilot = |stamp: &str, status: &str| Pilot {
        stamp: stamp.into(),
        vo: "dteam".into(),
        site: "LCG.Test.ch".into(),
        ce: "ce.test".into(),
        queue: "q".into(),
        grid_type: "SSH".into(),
        status: status.into(),
        ..Default::default()
    };
    w.pilots
        .register(&[
            pilot("busy", "Running"),
            pilot("silent", "Submitted"),
            pilot("ended", "Running"),
        ])
        .await
        .expect("register");
    w.pilots
        .set_references(&[("silent".into(), "ssh://ce.test/silent".into())])
        .await
        .expect("references");
    let active = w.pilots.active("ce.test", "q").await.expect("active");
    assert_eq!(active.len(), 3);
    assert!(active.iter().any(|p| p.reference == "ssh://ce.test/silent"));
    let job = w
        .match_job(&pilot_resource("LCG.Test.ch"), "LCG.Test.ch", Some("busy"))
        .await
        .expect("match")
        .expect("a job");
    let mut running = BTreeMap::new();
    running.insert(job.job_id, vec![now(JobStatus::Running, "JobWrapper")]);
    db.apply_updates(running, Apply::Reported)
        .await
        .expect("running");
    w.pilots
        .set_status("ended", "Done", "ran 0 jobs")
        .await
        .expect("done");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;

    let (deleted, accounted, cleared) = dirac_wms::agents::pilot_status_once(&w)
        .await
        .expect("cycle");
    assert_eq!(
        deleted, 1,
        "only the silent pilot: the busy one has a running job"
    );
    assert_eq!(accounted, 2, "the ended and the deleted pilot");
    assert_eq!(cleared, 2);
    let left = w
        .pilots
        .get(&["busy".into(), "silent".into(), "ended".into()])
        .await
        .expect("get");
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].stamp.as_str(), left[0].status.as_str()),
        ("busy", "Running")
    );

    // A cycle that wrote the record but stopped before flagging the pilot:
    // the next one does not count it again.
    w.pilots
        .set_status("busy", "Done", "ran 1 job")
        .await
        .expect("done");
    assert_eq!(w.pilots.account_finished(10).await.expect("account"), 1);
    sqlx::query(w.db.db().sql("UPDATE PilotAgents SET AccountingSent = 0"))
        .execute(w.db.db().pool())
        .await
        .expect("reset");
    assert_eq!(w.pilots.account_finished(10).await.expect("account"), 1);
    let summary = w.pilots.accounting("").await.expect("accounting");
    let total: u64 = summary.iter().map(|r| r.3).sum();
    assert_eq!(total, 3, "{summary:?}");
    let done = summary
        .iter()
        .find(|r| r.2 == "Done" && r.1 == "ce.test")
        .expect("Done row");
    assert_eq!(
        (done.3, done.4),
        (2, 1),
        "two Done pilots that ran one job: {summary:?}"
    );
}

async fn running_limits_hold_jobs_back_at_a_site(db: JobDb) {
    submit(&db, &ALICE, &[JDL, JDL, JDL]).await;
    let mut cfg = (*config()).clone();
    let mut per_type = BTreeMap::new();
    per_type.insert("User".to_string(), 1u64);
    let mut attrs = BTreeMap::new();
    attrs.insert("JobType".to_string(), per_type);
    cfg.operations
        .job_scheduling
        .running_limit
        .insert("LCG.Full.ch".into(), attrs);
    let w = Wms::new(db.clone(), Arc::new(cfg), sandbox_backend());
    optimize_once(&w, 10).await.expect("optimize");
    let full = pilot_resource("LCG.Full.ch");
    assert!(
        w.match_job(&full, "LCG.Full.ch", None)
            .await
            .expect("match")
            .is_some()
    );
    // One User job runs there: the limit of 1 is reached.
    assert!(
        w.match_job(&full, "LCG.Full.ch", None)
            .await
            .expect("match")
            .is_none()
    );
    // Another site still gets work.
    assert!(
        w.match_job(&pilot_resource("LCG.Free.ch"), "LCG.Free.ch", None)
            .await
            .expect("match")
            .is_some()
    );
    // "Why isn't my job running?" names the limit.
    let all = dirac_wms::search::build_where(&[], dirac_wms::search::Scope::All).expect("where");
    let waiting = db
        .search(&all, "JobID ASC", 10, 0)
        .await
        .expect("search")
        .into_iter()
        .find(|j| j.status == "Waiting")
        .expect("a waiting job");
    let why = w.explain_job(waiting.job_id, "Waiting").await;
    assert!(
        why.reasons
            .iter()
            .any(|r| r.contains("held back at LCG.Full.ch")),
        "{:?}",
        why.reasons
    );
}

async fn input_sandboxes_are_checked_and_assigned(db: JobDb) {
    let w = Wms::new(db.clone(), config(), sandbox_backend());
    let alice = dirac_core::auth::Identity {
        sub: "dteam:alice".into(),
        username: "alice".into(),
        vo: "dteam".into(),
        group: "dteam_user".into(),
        properties: vec!["NormalUser".into()],
        job: None,
    };
    let pfn = "SB:ProductionSandboxSE|/dteam/dteam_user/alice/ab/abcd.tar.gz";
    w.sandboxes
        .insert(
            &alice,
            "ProductionSandboxSE",
            pfn,
            10,
            &"a".repeat(64),
            "tar.gz",
        )
        .await
        .expect("insert");
    let good = format!("[ Executable = \"x\"; InputSandbox = {{ \"{pfn}\", \"LFN:/dteam/f\" }}; ]");
    let missing = "[ Executable = \"x\"; InputSandbox = { \"SB:ProductionSandboxSE|/dteam/dteam_user/alice/00/none.tar.gz\" }; ]";
    let nowhere = "[ Executable = \"x\"; Site = \"LCG.Nowhere.xx\"; ]";
    let ids = submit(&db, &ALICE, &[&good, missing]).await;
    optimize_once(&w, 10).await.expect("optimize");
    let jobs = db.jobs(&ids).await.expect("jobs");
    assert_eq!(jobs[0].status, "Waiting", "{:?}", jobs[0]);
    assert_eq!(
        (jobs[1].status.as_str(), jobs[1].minor_status.as_str()),
        ("Failed", "Illegal Job JDL")
    );
    assert!(
        jobs[1].application_status.contains("no sandbox"),
        "{}",
        jobs[1].application_status
    );
    let (input, output) = w.sandboxes.of_job(ids[0]).await.expect("sandboxes");
    assert_eq!((input, output.len()), (vec![pfn.to_string()], 0));
    // A site that is not configured: no candidate (when sites are configured).
    let mut cfg = (*config()).clone();
    cfg.resources
        .sites
        .insert("LCG.Real.ch".into(), Default::default());
    let w = Wms::new(db.clone(), Arc::new(cfg), sandbox_backend());
    let id = submit(&db, &ALICE, &[nowhere]).await[0];
    optimize_once(&w, 10).await.expect("optimize");
    let job = &db.jobs(&[id]).await.expect("jobs")[0];
    assert_eq!(job.status, "Failed");
    assert!(
        job.application_status
            .starts_with("No candidate sites available"),
        "{}",
        job.application_status
    );
}

crate::backend_tests!(
    running_limits_hold_jobs_back_at_a_site,
    input_sandboxes_are_checked_and_assigned,
    replicas_never_hand_out_a_job_twice,
    killed_jobs_leave_their_task_queue,
    stalled_jobs_fail_when_their_pilot_is_gone,
    pilots_are_accounted_once_and_cleared,
    stalled_jobs_of_a_lost_pilot_are_rescheduled,
);
