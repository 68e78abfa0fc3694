//! The WMS gRPC services in-process on loopback, with real tokens: access
//! policies, ownership, bad input, bulk semantics.

use std::sync::Arc;

use dirac_core::auth::{AuthLayer, Identity, PolicyTable, TokenIssuer};
use dirac_core::db::Backend;
use dirac_core::server::{ServiceSet, serve};
use dirac_core::testing::TestDb;
use dirac_proto::common::{Filter, Ids};
use dirac_proto::wms::job_manager_client::JobManagerClient;
use dirac_proto::wms::job_monitoring_client::JobMonitoringClient;
use dirac_proto::wms::job_state_update_client::JobStateUpdateClient;
use dirac_proto::wms::{
    GetJdlRequest, Heartbeat, HeartbeatRequest, RescheduleJobsRequest, SearchJobsRequest,
    SetJobStatusRequest, StatusUpdate, SubmitJobsRequest, SummaryRequest,
};
use dirac_wms::{JobDb, Wms};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::support::config;

type Auth = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;

struct Sandbox {
    url: String,
    issuer: TokenIssuer,
    wms: Arc<Wms>,
    _dir: tempfile::TempDir,
    _db: TestDb,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn who(user: &str, group: &str, props: &[&str]) -> Identity {
    Identity {
        sub: format!("dteam:{user}"),
        username: user.into(),
        vo: "dteam".into(),
        group: group.into(),
        properties: props.iter().map(|p| p.to_string()).collect(),
        job: None,
    }
}

impl Sandbox {
    async fn start() -> Sandbox {
        let t = TestDb::new(Backend::Sqlite).await.expect("sqlite");
        let db = JobDb::open(t.db.clone()).await.expect("migrate");
        let wms = Wms::new(db, config(), crate::support::sandbox_backend());
        let dir = tempfile::tempdir().expect("tmp");
        let issuer = TokenIssuer::load_or_create(&dir.path().join("key.pem"), "test", "dirac-test")
            .expect("key");
        // The same key signs job tokens at match time.
        wms.enable_job_tokens(Arc::new(
            TokenIssuer::load_or_create(&dir.path().join("key.pem"), "test", "dirac-test")
                .expect("key"),
        ));
        let mut policies = PolicyTable::new();
        dirac_wms::policy::register(&mut policies);
        let mut services = ServiceSet::new();
        wms.register_services(&mut services);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let layer = AuthLayer::new(policies, issuer.verifier());
        tokio::spawn(async move {
            let _ = serve(listener, services, layer, None, async {
                let _ = stopped.await;
            })
            .await;
        });
        Sandbox {
            url,
            issuer,
            wms,
            _dir: dir,
            _db: t,
            stop: Some(stop),
        }
    }

    fn auth(&self, id: Option<&Identity>) -> Auth {
        let header = id.map(|i| format!("Bearer {}", self.issuer.issue(i, 600).expect("token")));
        Box::new(move |mut req: tonic::Request<()>| {
            if let Some(h) = &header {
                req.metadata_mut()
                    .insert("authorization", h.parse().expect("header"));
            }
            Ok(req)
        })
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }

    async fn manager(
        &self,
        id: Option<&Identity>,
    ) -> JobManagerClient<InterceptedService<Channel, Auth>> {
        JobManagerClient::with_interceptor(self.channel().await, self.auth(id))
    }

    async fn monitoring(
        &self,
        id: Option<&Identity>,
    ) -> JobMonitoringClient<InterceptedService<Channel, Auth>> {
        JobMonitoringClient::with_interceptor(self.channel().await, self.auth(id))
    }

    async fn updates(
        &self,
        id: Option<&Identity>,
    ) -> JobStateUpdateClient<InterceptedService<Channel, Auth>> {
        JobStateUpdateClient::with_interceptor(self.channel().await, self.auth(id))
    }
}

const JDL: &str = r#"[ Executable = "/bin/echo"; JobName = "svc"; ]"#;

fn jdls(n: usize) -> Vec<String> {
    vec![JDL.to_string(); n]
}

#[tokio::test]
async fn ownership_is_enforced_per_job() {
    let sb = Sandbox::start().await;
    let alice = who("alice", "dteam_user", &["NormalUser"]);
    let bob = who("bob", "dteam_user", &["NormalUser"]);
    let admin = who("admin", "dteam_admin", &["NormalUser", "JobAdministrator"]);
    let mon = who("mon", "dteam_mon", &["JobMonitor"]);

    let submitted = sb
        .manager(Some(&alice))
        .await
        .submit_jobs(SubmitJobsRequest {
            jdls: jdls(2),
            request_id: String::new(),
        })
        .await
        .expect("submit")
        .into_inner();
    let ids: Vec<u64> = submitted.jobs.iter().map(|j| j.job_id).collect();

    // Bob sees nothing of alice's and cannot kill her jobs.
    let got = sb
        .monitoring(Some(&bob))
        .await
        .get_jobs(Ids { ids: ids.clone() })
        .await
        .expect("call")
        .into_inner();
    assert!(got.jobs.is_empty());
    assert!(
        got.failed
            .values()
            .all(|e| e.code == "PermissionDenied" && !e.message.contains("alice")),
        "{:?}",
        got.failed
    );
    let search = sb
        .monitoring(Some(&bob))
        .await
        .search_jobs(SearchJobsRequest::default())
        .await
        .expect("search");
    assert_eq!(search.into_inner().total, 0);
    let killed = sb
        .manager(Some(&bob))
        .await
        .kill_jobs(Ids { ids: ids.clone() })
        .await
        .expect("call")
        .into_inner();
    assert!(killed.succeeded.is_empty());
    assert_eq!(killed.failed.len(), 2);
    let err = sb
        .monitoring(Some(&bob))
        .await
        .get_jdl(GetJdlRequest {
            job_id: ids[0],
            original: true,
        })
        .await
        .expect_err("denied");
    assert_eq!(err.code(), Code::PermissionDenied);

    // A monitor reads, an administrator manages, unknown jobs are NotFound.
    let read = sb
        .monitoring(Some(&mon))
        .await
        .get_jobs(Ids { ids: ids.clone() })
        .await
        .expect("call")
        .into_inner();
    assert_eq!(read.jobs.len(), 2);
    let denied = sb
        .manager(Some(&mon))
        .await
        .kill_jobs(Ids { ids: ids.clone() })
        .await
        .expect_err("no property");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let killed = sb
        .manager(Some(&admin))
        .await
        .kill_jobs(Ids {
            ids: vec![ids[0], 987_654],
        })
        .await
        .expect("call")
        .into_inner();
    assert_eq!(killed.succeeded, vec![ids[0]]);
    assert_eq!(killed.failed[&987_654].code, "NotFound");
    let err = sb
        .monitoring(Some(&alice))
        .await
        .get_jdl(GetJdlRequest {
            job_id: 987_654,
            original: false,
        })
        .await
        .expect_err("nf");
    assert_eq!(err.code(), Code::NotFound);

    // Alice manages her own: killing again is a no-op success, a deleted job
    // cannot be killed.
    let again = sb
        .manager(Some(&alice))
        .await
        .kill_jobs(Ids { ids: ids.clone() })
        .await
        .expect("call")
        .into_inner();
    assert_eq!(again.succeeded, ids);
    let history = sb
        .monitoring(Some(&alice))
        .await
        .get_history(Ids { ids: vec![ids[0]] })
        .await
        .expect("h")
        .into_inner();
    assert_eq!(
        history.histories[0]
            .entries
            .iter()
            .filter(|e| e.status == "Killed")
            .count(),
        1
    );
    let deleted = sb
        .manager(Some(&alice))
        .await
        .delete_jobs(Ids { ids: vec![ids[0]] })
        .await
        .expect("call")
        .into_inner();
    assert_eq!(deleted.succeeded, vec![ids[0]]);
    let late = sb
        .manager(Some(&alice))
        .await
        .kill_jobs(Ids { ids: vec![ids[0]] })
        .await
        .expect("call")
        .into_inner();
    assert_eq!(late.failed[&ids[0]].code, "FailedPrecondition");
    assert!(
        late.failed[&ids[0]].message.contains("is Deleted"),
        "{:?}",
        late.failed
    );
}

#[tokio::test]
async fn calls_without_a_valid_token_are_refused() {
    let sb = Sandbox::start().await;
    let err = sb
        .monitoring(None)
        .await
        .search_jobs(SearchJobsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let pilot = who("pilot", "dteam_pilot", &["GenericPilot"]);
    let err = sb
        .manager(Some(&pilot))
        .await
        .submit_jobs(SubmitJobsRequest {
            jdls: jdls(1),
            request_id: String::new(),
        })
        .await
        .expect_err("pilots do not submit");
    assert_eq!(err.code(), Code::PermissionDenied);
    let other =
        TokenIssuer::load_or_create(&sb._dir.path().join("other.pem"), "test", "dirac-test")
            .expect("key");
    let forged = other
        .issue(&who("alice", "dteam_user", &["NormalUser"]), 60)
        .expect("token");
    let mut client = JobMonitoringClient::with_interceptor(
        sb.channel().await,
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {forged}").parse().expect("header"),
            );
            Ok(r)
        },
    );
    let err = client
        .search_jobs(SearchJobsRequest::default())
        .await
        .expect_err("wrong key");
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn bad_submissions_are_refused_whole() {
    let sb = Sandbox::start().await;
    let alice = who("alice", "dteam_user", &["NormalUser"]);
    let mut m = sb.manager(Some(&alice)).await;
    let mut bad = jdls(3);
    bad[1] = "[ Executable = \"x\"; CPUTime = 1; ]".into();
    bad.push("[ Executable = ".into());
    let err = m
        .submit_jobs(SubmitJobsRequest {
            jdls: bad,
            request_id: String::new(),
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("jdl[1]: CPUTime"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("jdl[3]"), "{}", err.message());
    let total = sb
        .monitoring(Some(&alice))
        .await
        .search_jobs(SearchJobsRequest::default())
        .await
        .expect("search");
    assert_eq!(
        total.into_inner().total,
        0,
        "nothing of a refused request is written"
    );

    let err = m
        .submit_jobs(SubmitJobsRequest {
            jdls: vec![],
            request_id: String::new(),
        })
        .await
        .expect_err("empty");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = m
        .submit_jobs(SubmitJobsRequest {
            jdls: vec!["[ Executable = \"x\"; Parameters = 100000; ]".into()],
            request_id: String::new(),
        })
        .await
        .expect_err("too many");
    assert!(
        matches!(err.code(), Code::InvalidArgument | Code::ResourceExhausted),
        "{err:?}"
    );

    // A retried request id creates nothing new.
    let req = SubmitJobsRequest {
        jdls: jdls(3),
        request_id: "retry-me".into(),
    };
    let first = m
        .submit_jobs(req.clone())
        .await
        .expect("first")
        .into_inner();
    let second = m.submit_jobs(req).await.expect("second").into_inner();
    assert!(!first.replayed && second.replayed);
    assert_eq!(
        first.jobs.iter().map(|j| j.job_id).collect::<Vec<_>>(),
        second.jobs.iter().map(|j| j.job_id).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn search_rejects_bad_filters_and_streams() {
    let sb = Sandbox::start().await;
    let alice = who("alice", "dteam_user", &["NormalUser"]);
    sb.manager(Some(&alice))
        .await
        .submit_jobs(SubmitJobsRequest {
            jdls: jdls(1200),
            request_id: String::new(),
        })
        .await
        .expect("submit");
    let mut mon = sb.monitoring(Some(&alice)).await;
    for (filter, expected) in [
        (
            Filter {
                parameter: "Status".into(),
                operator: "regex".into(),
                value: "x".into(),
                values: vec![],
            },
            "unknown operator",
        ),
        (
            Filter {
                parameter: "Colour".into(),
                operator: "eq".into(),
                value: "x".into(),
                values: vec![],
            },
            "unknown job parameter",
        ),
        (
            Filter {
                parameter: "JobID".into(),
                operator: "eq".into(),
                value: "one".into(),
                values: vec![],
            },
            "not an integer",
        ),
    ] {
        let err = mon
            .search_jobs(SearchJobsRequest {
                filters: vec![filter],
                ..Default::default()
            })
            .await
            .expect_err("bad filter");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(expected), "{}", err.message());
    }
    let err = mon
        .search_jobs(SearchJobsRequest {
            limit: 10_001,
            ..Default::default()
        })
        .await
        .expect_err("limit");
    assert_eq!(err.code(), Code::InvalidArgument);
    let page = mon
        .search_jobs(SearchJobsRequest {
            limit: 10,
            offset: 5,
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner();
    assert_eq!((page.jobs.len(), page.total), (10, 1200));
    let mut stream = mon
        .stream_jobs(SearchJobsRequest::default())
        .await
        .expect("stream")
        .into_inner();
    let mut n = 0;
    let mut last = 0;
    while let Some(job) = stream.message().await.expect("item") {
        assert!(job.job_id > last);
        last = job.job_id;
        n += 1;
    }
    assert_eq!(n, 1200);
    let summary = mon
        .summary(SummaryRequest {
            grouping: vec!["Owner".into()],
            filters: vec![],
        })
        .await
        .expect("summary");
    assert_eq!(summary.into_inner().rows[0].count, 1200);
}

#[tokio::test]
async fn pilots_report_status_and_receive_kill_commands() {
    let sb = Sandbox::start().await;
    let alice = who("alice", "dteam_user", &["NormalUser"]);
    let pilot = who("pilot", "dteam_pilot", &["GenericPilot"]);
    let ids: Vec<u64> = sb
        .manager(Some(&alice))
        .await
        .submit_jobs(SubmitJobsRequest {
            jdls: jdls(1),
            request_id: String::new(),
        })
        .await
        .expect("submit")
        .into_inner()
        .jobs
        .iter()
        .map(|j| j.job_id)
        .collect();
    let id = ids[0];
    dirac_wms::optimizer::optimize_once(&sb.wms, 10)
        .await
        .expect("optimize");
    let mut up = sb.updates(Some(&pilot)).await;
    let status = |s: &str, minor: &str| StatusUpdate {
        job_id: id,
        time: None,
        status: s.into(),
        minor_status: minor.into(),
        application_status: String::new(),
        source: "JobAgent".into(),
    };
    let r = up
        .set_job_status(SetJobStatusRequest {
            updates: vec![status("Matched", "Assigned")],
            force: false,
        })
        .await
        .expect("matched")
        .into_inner();
    assert_eq!(r.succeeded[&id].status, "Matched");
    // Heartbeat revives Matched to Running.
    up.send_heartbeat(HeartbeatRequest {
        heartbeats: vec![Heartbeat {
            job_id: id,
            ..Default::default()
        }],
    })
    .await
    .expect("beat");
    let job = &sb
        .monitoring(Some(&alice))
        .await
        .get_jobs(Ids { ids: ids.clone() })
        .await
        .expect("jobs")
        .into_inner()
        .jobs[0];
    assert_eq!(job.status, "Running");
    // Unknown statuses and forcing without JobAdministrator are refused.
    let r = up
        .set_job_status(SetJobStatusRequest {
            updates: vec![status("Exploded", "")],
            force: false,
        })
        .await
        .expect("call")
        .into_inner();
    assert_eq!(r.failed[&id].code, "InvalidArgument");
    let err = up
        .set_job_status(SetJobStatusRequest {
            updates: vec![status("Done", "")],
            force: true,
        })
        .await
        .expect_err("force");
    assert_eq!(err.code(), Code::PermissionDenied);
    // The owner kills it; the pilot's next heartbeat carries the command.
    sb.manager(Some(&alice))
        .await
        .kill_jobs(Ids { ids: ids.clone() })
        .await
        .expect("kill");
    let commands = up
        .send_heartbeat(HeartbeatRequest {
            heartbeats: vec![Heartbeat {
                job_id: id,
                ..Default::default()
            }],
        })
        .await
        .expect("beat")
        .into_inner()
        .commands;
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0].command, "Kill");
    // A killed job can be rescheduled (as in DIRAC).
    let reschedule = RescheduleJobsRequest {
        job_ids: ids.clone(),
        reset_counter: false,
    };
    let r = sb
        .manager(Some(&alice))
        .await
        .reschedule_jobs(reschedule.clone())
        .await
        .expect("call")
        .into_inner();
    assert_eq!(r.succeeded, ids);
    // Run it again, kill it, and reschedule before the pilot heard of the
    // kill: that Kill is cancelled so it cannot reach the next payload.
    dirac_wms::optimizer::optimize_once(&sb.wms, 10)
        .await
        .expect("optimize");
    let matched = up
        .set_job_status(SetJobStatusRequest {
            updates: vec![status("Matched", "Assigned")],
            force: false,
        })
        .await
        .expect("matched")
        .into_inner();
    assert_eq!(matched.succeeded[&id].status, "Matched", "{matched:?}");
    sb.manager(Some(&alice))
        .await
        .kill_jobs(Ids { ids: ids.clone() })
        .await
        .expect("kill");
    let r = sb
        .manager(Some(&alice))
        .await
        .reschedule_jobs(reschedule)
        .await
        .expect("call")
        .into_inner();
    assert_eq!(r.succeeded, ids);
    let commands = up
        .send_heartbeat(HeartbeatRequest {
            heartbeats: vec![Heartbeat {
                job_id: id,
                ..Default::default()
            }],
        })
        .await
        .expect("beat")
        .into_inner()
        .commands;
    assert!(commands.is_empty(), "{commands:?}");
    // Reports from a clock in the future are refused per item.
    let mut late = status("Running", "");
    late.time = Some(prost_types::Timestamp {
        seconds: 32_503_680_000,
        nanos: 0,
    });
    let r = up
        .set_job_status(SetJobStatusRequest {
            updates: vec![late],
            force: false,
        })
        .await
        .expect("call")
        .into_inner();
    assert_eq!(r.failed[&id].code, "InvalidArgument");
}

mod sandboxes {
    use dirac_proto::wms::sandbox_chunk::Kind;
    use dirac_proto::wms::sandbox_store_client::SandboxStoreClient;
    use dirac_proto::wms::{
        AssignSandboxesRequest, DownloadSandboxRequest, JobSandboxesRequest, SandboxChunk,
        SandboxHeader, SubmitJobsRequest,
    };
    use sha2::Digest as _;
    use tonic::Code;

    use super::{Sandbox, who};

    fn chunks(header: SandboxHeader, data: &[u8]) -> Vec<SandboxChunk> {
        let mut out = vec![SandboxChunk {
            kind: Some(Kind::Header(header)),
        }];
        out.extend(data.chunks(1000).map(|c| SandboxChunk {
            kind: Some(Kind::Data(c.to_vec())),
        }));
        out
    }

    fn header(data: &[u8]) -> SandboxHeader {
        let sum: String = sha2::Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        SandboxHeader {
            size: data.len() as u64,
            checksum: sum,
            format: "tar.gz".into(),
        }
    }

    #[tokio::test]
    async fn sandboxes_round_trip_with_checksums() {
        let sb = Sandbox::start().await;
        let alice = who("alice", "dteam_user", &["NormalUser"]);
        let bob = who("bob", "dteam_user", &["NormalUser"]);
        let pilot = who("pilot", "dteam_pilot", &["GenericPilot"]);
        let sb = &sb;
        let client = |id: &dirac_core::auth::Identity| {
            let auth = sb.auth(Some(id));
            async move { SandboxStoreClient::with_interceptor(sb.channel().await, auth) }
        };
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut store = client(&alice).await;
        let up = store
            .upload_sandbox(tokio_stream::iter(chunks(header(&data), &data)))
            .await
            .expect("upload")
            .into_inner();
        assert!(
            up.pfn
                .starts_with("SB:ProductionSandboxSE|/dteam/dteam_user/alice/"),
            "{}",
            up.pfn
        );
        assert!(!up.existed);
        // Same content again: deduplicated, nothing re-sent is needed.
        let again = store
            .upload_sandbox(tokio_stream::iter(chunks(header(&data), &[])))
            .await
            .expect("dedup")
            .into_inner();
        assert_eq!((again.pfn.as_str(), again.existed), (up.pfn.as_str(), true));

        // Download: the same bytes, the same checksum.
        let mut stream = store
            .download_sandbox(DownloadSandboxRequest {
                pfn: up.pfn.clone(),
            })
            .await
            .expect("download")
            .into_inner();
        let mut got = Vec::new();
        let mut announced = None;
        while let Some(chunk) = stream.message().await.expect("chunk") {
            match chunk.kind {
                Some(Kind::Header(h)) => announced = Some(h),
                Some(Kind::Data(d)) => got.extend_from_slice(&d),
                None => {}
            }
        }
        assert_eq!(got, data);
        assert_eq!(announced.expect("header").checksum, header(&data).checksum);

        // Another user cannot read it; a pilot of the VO can.
        let err = client(&bob)
            .await
            .download_sandbox(DownloadSandboxRequest {
                pfn: up.pfn.clone(),
            })
            .await
            .expect_err("bob");
        assert_eq!(err.code(), Code::PermissionDenied);
        assert!(
            client(&pilot)
                .await
                .download_sandbox(DownloadSandboxRequest {
                    pfn: up.pfn.clone()
                })
                .await
                .is_ok()
        );

        // Corrupt, truncated and oversized uploads are refused; nothing is stored.
        let other: Vec<u8> = data.iter().map(|b| b ^ 1).collect();
        let mut lying = header(&other);
        lying.checksum = header(&data).checksum.replace('a', "b").replace('0', "1");
        let err = store
            .upload_sandbox(tokio_stream::iter(chunks(lying.clone(), &other)))
            .await
            .expect_err("corrupt");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains("checksum mismatch"),
            "{}",
            err.message()
        );
        let err = store
            .upload_sandbox(tokio_stream::iter(chunks(header(&other), &other[..100])))
            .await
            .expect_err("short");
        assert!(err.message().contains("truncated"), "{}", err.message());
        let mut huge = header(&other);
        huge.size = 101 * 1024 * 1024;
        let err = store
            .upload_sandbox(tokio_stream::iter(chunks(huge, &[])))
            .await
            .expect_err("huge");
        assert!(
            err.message().contains("over the limit"),
            "{}",
            err.message()
        );
        let unknown = format!("SB:ProductionSandboxSE|/dteam/dteam_user/alice/{}", "x");
        let err = store
            .download_sandbox(DownloadSandboxRequest { pfn: unknown })
            .await
            .expect_err("none");
        assert_eq!(err.code(), Code::NotFound);

        // Assigned to a job as its output; listed with the job.
        let job = sb
            .manager(Some(&alice))
            .await
            .submit_jobs(SubmitJobsRequest {
                jdls: vec!["[ Executable = \"x\"; ]".into()],
                request_id: String::new(),
            })
            .await
            .expect("submit")
            .into_inner()
            .jobs[0]
            .job_id;
        store
            .assign_sandboxes(AssignSandboxesRequest {
                job_id: job,
                kind: "Output".into(),
                pfns: vec![up.pfn.clone()],
            })
            .await
            .expect("assign");
        let listed = store
            .get_job_sandboxes(JobSandboxesRequest { job_id: job })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(listed.output, vec![up.pfn.clone()]);
        let err = client(&bob)
            .await
            .get_job_sandboxes(JobSandboxesRequest { job_id: job })
            .await
            .expect_err("bob");
        assert_eq!(err.code(), Code::PermissionDenied);
    }
}

mod job_tokens {
    use dirac_proto::common::Ids;
    use dirac_proto::wms::matcher_client::MatcherClient;
    use dirac_proto::wms::{
        RequestJobRequest, ResourceDescription, SearchJobsRequest, SetJobStatusRequest,
        StatusUpdate, SubmitJobsRequest,
    };
    use tonic::transport::Channel;

    use super::{Sandbox, who};

    #[tokio::test]
    async fn a_job_token_acts_for_its_job_only_while_it_runs() {
        let sb = Sandbox::start().await;
        let alice = who("alice", "dteam_user", &["NormalUser"]);
        let pilot = who("pilot", "dteam_pilot", &["GenericPilot"]);
        let ids: Vec<u64> = sb
            .manager(Some(&alice))
            .await
            .submit_jobs(SubmitJobsRequest {
                jdls: vec!["[ Executable = \"x\"; CPUTime = 600; ]".into(); 2],
                request_id: String::new(),
            })
            .await
            .expect("submit")
            .into_inner()
            .jobs
            .iter()
            .map(|j| j.job_id)
            .collect();
        dirac_wms::optimizer::optimize_once(&sb.wms, 10)
            .await
            .expect("optimize");
        let mut matcher =
            MatcherClient::with_interceptor(sb.channel().await, sb.auth(Some(&pilot)));
        let reply = matcher
            .request_job(RequestJobRequest {
                resource: Some(ResourceDescription {
                    site: "LCG.Test.ch".into(),
                    cpu_time: 86_400,
                    number_of_processors: 1,
                    ..Default::default()
                }),
            })
            .await
            .expect("match")
            .into_inner();
        assert!(reply.matched);
        assert!(!reply.job_token.is_empty());
        let (mine, other) = (
            reply.job_id,
            *ids.iter().find(|i| **i != reply.job_id).expect("other"),
        );
        let token = reply.job_token.clone();
        let channel: Channel = sb.channel().await;
        let bearer = format!("Bearer {token}");
        let auth = move |mut r: tonic::Request<()>| {
            r.metadata_mut()
                .insert("authorization", bearer.parse().expect("header"));
            Ok(r)
        };
        let mut mon =
            dirac_proto::wms::job_monitoring_client::JobMonitoringClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            );
        let got = mon
            .get_jobs(Ids {
                ids: vec![mine, other],
            })
            .await
            .expect("call")
            .into_inner();
        assert_eq!(
            got.jobs.iter().map(|j| j.job_id).collect::<Vec<_>>(),
            vec![mine]
        );
        assert_eq!(got.failed[&other].code, "PermissionDenied");
        let found = mon
            .search_jobs(SearchJobsRequest::default())
            .await
            .expect("search")
            .into_inner();
        assert_eq!(found.total, 1, "a job token sees its job only");
        // The job ends: its token stops working.
        let mut up = sb.updates(Some(&pilot)).await;
        for status in ["Running", "Done"] {
            up.set_job_status(SetJobStatusRequest {
                updates: vec![StatusUpdate {
                    job_id: mine,
                    status: status.into(),
                    source: "JobWrapper".into(),
                    ..Default::default()
                }],
                force: false,
            })
            .await
            .expect("status");
        }
        let after = mon
            .get_jobs(Ids { ids: vec![mine] })
            .await
            .expect("call")
            .into_inner();
        assert!(after.jobs.is_empty());
        assert!(
            after.failed[&mine].message.contains("has ended"),
            "{:?}",
            after.failed
        );
    }
}
