//! The ReqManager's handlers with the identities the auth layer puts on
//! each call: owners from the token, other owners' requests invisible,
//! job tokens limited to their job's failover requests, administrators
//! seeing everyone's, bad requests refused with the reason.

use std::sync::Arc;

use dirac_core::auth::Identity;
use dirac_core::db::Backend;
use dirac_core::testing::TestDb;
use dirac_proto::common::Ids;
use dirac_proto::rms::req_manager_server::ReqManager as _;
use dirac_proto::rms::{self as pb, ListRequestsRequest, PutRequestsRequest};
use dirac_rms::ReqDb;
use dirac_rms::service::ReqManagerService;
use tonic::Code;

fn who(user: &str, properties: &[&str], job: Option<u64>) -> Identity {
    Identity {
        sub: format!("dteam:{user}"),
        username: user.into(),
        vo: "dteam".into(),
        group: "dteam_user".into(),
        properties: properties.iter().map(|p| (*p).to_string()).collect(),
        job,
    }
}

fn call<T>(msg: T, id: &Identity) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.extensions_mut().insert(id.clone());
    r
}

fn failover(job_id: u64) -> pb::Request {
    pb::Request {
        name: "failover".into(),
        // Ignored: the owner comes from the token.
        owner: "mallory".into(),
        job_id,
        operations: vec![pb::Operation {
            r#type: "RegisterFile".into(),
            target_se: vec!["SE-A".into()],
            files: vec![pb::File {
                lfn: "/dteam/user/a/alice/out.root".into(),
                size: 10,
                checksum: "0a0b0c0d".into(),
                checksum_type: "ADLER32".into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn owners_jobs_and_administrators() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let svc = ReqManagerService(Arc::new(ReqDb::open(db.db.clone()).await.expect("open")));
    let alice = who("alice", &["NormalUser"], None);
    let bob = who("bob", &["NormalUser"], None);
    let job = who("alice", &["NormalUser"], Some(42));
    let operator = who("admin", &["Operator"], None);

    let put = |r: pb::Request, id: &Identity| {
        let svc = svc.clone();
        let id = id.clone();
        async move {
            svc.put_requests(call(PutRequestsRequest { requests: vec![r] }, &id))
                .await
                .map(|r| r.into_inner().request_ids[0])
        }
    };
    let mine = put(failover(0), &alice).await.expect("put");
    // A job's token puts the failover of its own job, not another's.
    let from_job = put(failover(0), &job).await.expect("put");
    let other_job = put(failover(7), &job).await.expect_err("other job");
    assert_eq!(other_job.code(), Code::PermissionDenied);
    // A user cannot tie a request to a job (its end would end the job).
    let foreign = put(failover(42), &bob).await.expect_err("bob for job 42");
    assert_eq!(foreign.code(), Code::PermissionDenied);
    // A job token puts failover operations only.
    let mut removal = failover(0);
    removal.operations[0].r#type = "RemoveFile".into();
    removal.operations[0].target_se.clear();
    let refused = put(removal, &job).await.expect_err("RemoveFile by a job");
    assert_eq!(refused.code(), Code::PermissionDenied);
    // Bad requests are refused whole, naming the problem.
    let mut bad = failover(0);
    bad.operations[0].files[0].lfn = "relative/path".into();
    let refused = put(bad, &alice).await.expect_err("bad lfn");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("not a valid LFN"),
        "{}",
        refused.message()
    );

    let got = svc
        .get_requests(call(
            Ids {
                ids: vec![mine, from_job],
            },
            &alice,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.requests.len(), 2);
    let r = got
        .requests
        .iter()
        .find(|r| r.request_id == from_job)
        .expect("job's");
    assert_eq!(
        (r.owner.as_str(), r.job_id, r.status.as_str()),
        ("alice", 42, "Waiting")
    );
    assert_eq!(r.operations[0].status, "Waiting");

    // Bob sees none of them, and cannot cancel them.
    let got = svc
        .get_requests(call(Ids { ids: vec![mine] }, &bob))
        .await
        .expect("get")
        .into_inner();
    assert!(got.requests.is_empty());
    assert_eq!(got.failed[&mine].code, "NotFound");
    let canceled = svc
        .cancel_requests(call(Ids { ids: vec![mine] }, &bob))
        .await
        .expect("cancel")
        .into_inner();
    assert!(canceled.succeeded.is_empty());
    let listed = svc
        .list_requests(call(ListRequestsRequest::default(), &bob))
        .await
        .expect("list")
        .into_inner();
    assert!(listed.requests.is_empty());
    let everyone = svc
        .list_requests(call(
            ListRequestsRequest {
                all_owners: true,
                ..Default::default()
            },
            &bob,
        ))
        .await
        .expect_err("not an administrator");
    assert_eq!(everyone.code(), Code::PermissionDenied);

    // A job token does nothing else.
    let denied = svc
        .list_requests(call(ListRequestsRequest::default(), &job))
        .await
        .expect_err("job token");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // The operator sees everyone's and cancels; the owner deletes.
    let all = svc
        .list_requests(call(
            ListRequestsRequest {
                all_owners: true,
                statuses: vec!["Waiting".into()],
                ..Default::default()
            },
            &operator,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(all.requests.len(), 2);
    assert!(
        all.requests
            .iter()
            .all(|r| r.current_operation == "RegisterFile")
    );
    let bad_status = svc
        .list_requests(call(
            ListRequestsRequest {
                statuses: vec!["Sleeping".into()],
                ..Default::default()
            },
            &alice,
        ))
        .await
        .expect_err("bad status");
    assert!(bad_status.message().contains("Sleeping"));
    let not_final = svc
        .delete_requests(call(Ids { ids: vec![mine] }, &alice))
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(not_final.failed[&mine].code, "FailedPrecondition");
    let canceled = svc
        .cancel_requests(call(Ids { ids: vec![mine] }, &operator))
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(canceled.succeeded, vec![mine]);
    let deleted = svc
        .delete_requests(call(Ids { ids: vec![mine] }, &alice))
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.succeeded, vec![mine]);
    db.cleanup().await;
}
