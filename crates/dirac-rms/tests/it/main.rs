//! ReqDB on every reachable database backend: requests stored whole,
//! DIRAC's initial states, atomic claims by concurrent agents, back-off,
//! outcomes written only by the holder, cancellation, kicks, cleaning.

mod agent;
mod service;

use std::collections::BTreeSet;
use std::sync::Arc;

use dirac_core::testing::{ALL_BACKENDS, TestDb};
use dirac_rms::ReqDb;
use dirac_rms::model::{
    File, FileStatus, OpStatus, Operation, ReqStatus, Request, retry_delay_s, settle_request,
};
use dirac_rms::reqdb::ListQuery;

async fn each_backend(test: impl AsyncFn(ReqDb)) {
    for backend in ALL_BACKENDS {
        let Some(db) = TestDb::new(backend).await else {
            continue;
        };
        let reqdb = ReqDb::open(db.db.clone()).await.expect("open");
        // Opening again applies nothing twice.
        ReqDb::open(db.db.clone()).await.expect("reopen");
        eprintln!("backend {backend:?}");
        test(reqdb).await;
        db.cleanup().await;
    }
}

fn file(lfn: &str) -> File {
    File {
        id: 0,
        lfn: lfn.into(),
        pfn: String::new(),
        guid: String::new(),
        size: 42,
        checksum: "0a0b0c0d".into(),
        checksum_type: "ADLER32".into(),
        status: FileStatus::Waiting,
        attempt: 0,
        error: String::new(),
    }
}

fn op(kind: &str, files: &[&str], target: &str) -> Operation {
    Operation {
        id: 0,
        kind: kind.into(),
        status: OpStatus::Queued,
        arguments: String::new(),
        source_se: vec![],
        target_se: if target.is_empty() {
            vec![]
        } else {
            target.split(',').map(String::from).collect()
        },
        catalog: String::new(),
        error: String::new(),
        files: files.iter().map(|l| file(l)).collect(),
        creation_time: 0,
        submit_time: 0,
        last_update: 0,
    }
}

fn request(name: &str, owner: &str, job_id: u64) -> Request {
    Request {
        id: 0,
        name: name.into(),
        owner: owner.into(),
        owner_group: "dteam_user".into(),
        vo: "dteam".into(),
        job_id,
        status: ReqStatus::Waiting,
        error: String::new(),
        source_component: "JobWrapper".into(),
        operations: vec![
            op("RegisterFile", &["/dteam/a/1", "/dteam/a/2"], "SE-A"),
            op("ReplicateAndRegister", &["/dteam/a/1"], "SE-B,SE-C"),
        ],
        creation_time: 0,
        submit_time: 0,
        last_update: 0,
        not_before: 0,
    }
}

const NOW: i64 = 1_800_000_000;

#[tokio::test]
async fn requests_are_stored_whole_with_their_initial_states() {
    each_backend(async |db| {
        let ids = db
            .put(vec![request("a", "alice", 7), request("b", "bob", 0)], NOW)
            .await
            .expect("put");
        assert_eq!(ids.len(), 2);
        let got = db.get(&[ids[0], ids[1], 999_999]).await.expect("get");
        assert_eq!(got.len(), 2, "unknown ids are absent");
        let a = &got[&ids[0]];
        assert_eq!(
            (a.name.as_str(), a.owner.as_str(), a.job_id),
            ("a", "alice", 7)
        );
        assert_eq!(a.status, ReqStatus::Waiting);
        assert_eq!(a.creation_time, NOW);
        assert_eq!(a.operations.len(), 2);
        assert_eq!(a.operations[0].kind, "RegisterFile");
        assert_eq!(a.operations[0].status, OpStatus::Waiting, "the current one");
        assert_eq!(a.operations[1].status, OpStatus::Queued);
        assert_eq!(a.operations[1].target_se, vec!["SE-B", "SE-C"]);
        let f = &a.operations[0].files[1];
        assert_eq!(
            (
                f.lfn.as_str(),
                f.size,
                f.checksum.as_str(),
                f.checksum_type.as_str()
            ),
            ("/dteam/a/2", 42, "0a0b0c0d", "ADLER32")
        );
        assert_eq!(f.status, FileStatus::Waiting);
        assert!(a.operations[0].files[0].id != f.id);

        let mine = db
            .list(&ListQuery {
                owner: Some(("alice".into(), "dteam".into())),
                limit: 10,
                ..ListQuery::default()
            })
            .await
            .expect("list");
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].current_operation, "RegisterFile");
        let by_job = db
            .list(&ListQuery {
                job_ids: vec![7],
                statuses: vec![ReqStatus::Waiting],
                limit: 10,
                ..ListQuery::default()
            })
            .await
            .expect("list");
        assert_eq!(
            by_job.iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![ids[0]]
        );
        let done = db
            .list(&ListQuery {
                statuses: vec![ReqStatus::Done],
                limit: 10,
                ..ListQuery::default()
            })
            .await
            .expect("list");
        assert!(done.is_empty());
    })
    .await;
}

#[tokio::test]
async fn concurrent_agents_never_claim_the_same_request() {
    each_backend(async |db| {
        let db = Arc::new(db);
        let ids = db
            .put(
                (0..40)
                    .map(|i| request(&format!("r{i}"), "alice", 0))
                    .collect(),
                NOW,
            )
            .await
            .expect("put");
        // Not yet eligible: its back-off runs until later.
        let mut later = request("later", "alice", 0);
        later.not_before = NOW + 600;
        let later = db.put(vec![later], NOW).await.expect("put")[0];

        let agents: Vec<_> = (0..4)
            .map(|a| {
                let db = db.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let got = db
                            .claim(3, &format!("agent-{a}"), NOW)
                            .await
                            .expect("claim");
                        if got.is_empty() {
                            return mine;
                        }
                        for r in got {
                            assert_eq!(r.status, ReqStatus::Assigned);
                            mine.push(r.id);
                        }
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for a in agents {
            all.extend(a.await.expect("agent"));
        }
        let distinct: BTreeSet<u64> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len(), "a request claimed twice");
        assert_eq!(distinct, ids.iter().copied().collect::<BTreeSet<_>>());
        assert!(!distinct.contains(&later));
        // Once its back-off has passed it is claimed.
        let got = db.claim(10, "agent-9", NOW + 601).await.expect("claim");
        assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), vec![later]);
    })
    .await;
}

#[tokio::test]
async fn only_the_holder_writes_the_outcome() {
    each_backend(async |db| {
        let id = db
            .put(vec![request("r", "alice", 0)], NOW)
            .await
            .expect("put")[0];
        let mut r = db.claim(1, "agent-1", NOW).await.expect("claim").remove(0);
        assert_eq!(r.id, id);

        // The first operation's files: one registered, one failed this
        // time (tried again later, after a back-off).
        r.operations[0].files[0].status = FileStatus::Done;
        r.operations[0].files[0].attempt = 1;
        r.operations[0].files[1].attempt = 3;
        r.operations[0].files[1].error = "catalog unreachable".into();
        settle_request(&mut r);
        assert_eq!(r.status, ReqStatus::Waiting);
        r.not_before = NOW + i64::try_from(retry_delay_s(3, None)).expect("delay");
        assert!(
            !db.save(&r, "agent-2", NOW).await.expect("save"),
            "not the holder"
        );
        assert!(db.save(&r, "agent-1", NOW).await.expect("save"));
        let stored = db.get(&[id]).await.expect("get").remove(&id).expect("r");
        assert_eq!(stored.status, ReqStatus::Waiting);
        assert_eq!(stored.not_before, r.not_before);
        assert_eq!(stored.operations[0].files[0].status, FileStatus::Done);
        assert_eq!(stored.operations[0].files[1].attempt, 3);
        assert_eq!(stored.operations[0].files[1].error, "catalog unreachable");
        assert!(
            db.claim(1, "agent-1", NOW + 1)
                .await
                .expect("claim")
                .is_empty(),
            "backing off"
        );

        // Claimed again, then canceled by its owner: the agent's outcome
        // is not written over the cancellation.
        let mut again = db
            .claim(1, "agent-1", r.not_before)
            .await
            .expect("claim")
            .remove(0);
        let canceled = db.cancel(&[id, 424_242], NOW).await.expect("cancel");
        assert!(canceled[&id]);
        assert!(!canceled[&424_242], "unknown");
        again.operations[0].files[1].status = FileStatus::Done;
        settle_request(&mut again);
        assert!(!db.save(&again, "agent-1", NOW).await.expect("save"));
        let stored = db.get(&[id]).await.expect("get").remove(&id).expect("r");
        assert_eq!(stored.status, ReqStatus::Canceled);
        assert_eq!(stored.operations[0].status, OpStatus::Canceled);
        assert_eq!(stored.operations[0].files[1].status, FileStatus::Waiting);
        assert!(
            !db.cancel(&[id], NOW).await.expect("cancel")[&id],
            "already final"
        );

        // Final: it can be deleted, with everything it held.
        assert!(db.delete(&[id]).await.expect("delete")[&id]);
        assert!(db.get(&[id]).await.expect("get").is_empty());
    })
    .await;
}

#[tokio::test]
async fn dead_agents_are_kicked_and_old_requests_cleaned() {
    each_backend(async |db| {
        let ids = db
            .put(
                vec![request("a", "alice", 0), request("b", "alice", 0)],
                NOW,
            )
            .await
            .expect("put");
        let held = db.claim(1, "agent-dead", NOW).await.expect("claim");
        assert_eq!(held.len(), 1);
        // A live request cannot be deleted.
        assert!(!db.delete(&[held[0].id]).await.expect("delete")[&held[0].id]);
        assert_eq!(
            db.kick(NOW - 10, NOW).await.expect("kick"),
            0,
            "not stale yet"
        );
        assert_eq!(db.kick(NOW + 3600, NOW + 3600).await.expect("kick"), 1);
        let back = db.get(&[held[0].id]).await.expect("get");
        assert_eq!(back[&held[0].id].status, ReqStatus::Waiting);

        // One finishes; cleaning removes final requests older than asked.
        let mut r = db
            .claim(1, "agent-1", NOW + 3600)
            .await
            .expect("claim")
            .remove(0);
        for op in &mut r.operations {
            for f in &mut op.files {
                f.status = FileStatus::Done;
            }
        }
        settle_request(&mut r);
        assert_eq!(r.status, ReqStatus::Done);
        assert!(db.save(&r, "agent-1", NOW + 3600).await.expect("save"));
        assert!(
            db.clean(&[ReqStatus::Waiting], NOW, 10).await.is_err(),
            "only final ones"
        );
        assert_eq!(
            db.clean(&[ReqStatus::Done], NOW + 3600, 10)
                .await
                .expect("clean"),
            0
        );
        assert_eq!(
            db.clean(&[ReqStatus::Done], NOW + 3601, 10)
                .await
                .expect("clean"),
            1
        );
        let left = db.get(&ids).await.expect("get");
        assert_eq!(left.len(), 1);
        assert!(!left.contains_key(&r.id));
    })
    .await;
}
