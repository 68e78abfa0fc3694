//! The real `dirac-pilot` binary against in-process fake services that record
//! every call: registration, matching, sandboxes, statuses, heartbeats, kill.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dirac_client::sandbox;
use dirac_proto::common::BulkResult;
use dirac_proto::wms::job_state_update_server::{JobStateUpdate, JobStateUpdateServer};
use dirac_proto::wms::matcher_server::{Matcher, MatcherServer};
use dirac_proto::wms::pilot_manager_server::{PilotManager, PilotManagerServer};
use dirac_proto::wms::sandbox_chunk::Kind;
use dirac_proto::wms::sandbox_store_server::{SandboxStore, SandboxStoreServer};
use dirac_proto::wms::*;
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

#[derive(Default)]
struct State {
    queue: VecDeque<(u64, String)>,
    requests: Vec<ResourceDescription>,
    statuses: Vec<(u64, String, String, String, String)>,
    parameters: Vec<(u64, String, String)>,
    heartbeats: Vec<Heartbeat>,
    to_kill: HashSet<u64>,
    pilots: Vec<Pilot>,
    pilot_statuses: Vec<(String, String, String)>,
    pilot_log: String,
    sandboxes: HashMap<String, Vec<u8>>,
    assigned: Vec<(u64, String, Vec<String>)>,
    auth: Vec<String>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().expect("state lock")
    }

    fn saw<T>(&self, request: &Request<T>) {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        self.state().auth.push(auth);
    }
}

#[tonic::async_trait]
impl Matcher for Fake {
    async fn request_job(
        &self,
        request: Request<RequestJobRequest>,
    ) -> Result<Response<RequestJobResponse>, Status> {
        self.saw(&request);
        let resource = request.into_inner().resource.unwrap_or_default();
        let mut state = self.state();
        state.requests.push(resource);
        Ok(Response::new(match state.queue.pop_front() {
            Some((job_id, jdl)) => RequestJobResponse {
                matched: true,
                job_id,
                jdl,
                ..Default::default()
            },
            None => RequestJobResponse {
                no_match_reason: "no waiting job".to_owned(),
                ..Default::default()
            },
        }))
    }

    async fn explain_match(
        &self,
        _: Request<ExplainMatchRequest>,
    ) -> Result<Response<ExplainMatchResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<SandboxChunk, Status>> + Send>>;

#[tonic::async_trait]
impl SandboxStore for Fake {
    async fn upload_sandbox(
        &self,
        request: Request<Streaming<SandboxChunk>>,
    ) -> Result<Response<UploadSandboxResponse>, Status> {
        let mut stream = request.into_inner();
        let mut header = None;
        let mut data = Vec::new();
        while let Some(chunk) = stream.message().await? {
            match chunk.kind {
                Some(Kind::Header(h)) => header = Some(h),
                Some(Kind::Data(d)) => data.extend_from_slice(&d),
                None => {}
            }
        }
        let header = header.ok_or_else(|| Status::invalid_argument("no header"))?;
        assert_eq!(header.size, data.len() as u64);
        assert_eq!(header.checksum, sandbox::sha256_hex(&data));
        assert_eq!(header.format, "tar.gz");
        let pfn = format!("SB:FakeSE|/{}.tar.gz", header.checksum);
        self.state().sandboxes.insert(pfn.clone(), data);
        Ok(Response::new(UploadSandboxResponse {
            pfn,
            existed: false,
        }))
    }

    type DownloadSandboxStream = ChunkStream;

    async fn download_sandbox(
        &self,
        request: Request<DownloadSandboxRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let pfn = request.into_inner().pfn;
        let data = self
            .state()
            .sandboxes
            .get(&pfn)
            .cloned()
            .ok_or_else(|| Status::not_found(pfn))?;
        let mut chunks = vec![Ok(SandboxChunk {
            kind: Some(Kind::Header(SandboxHeader {
                size: data.len() as u64,
                checksum: sandbox::sha256_hex(&data),
                format: "tar.gz".to_owned(),
            })),
        })];
        chunks.extend(data.chunks(7).map(|c| {
            Ok(SandboxChunk {
                kind: Some(Kind::Data(c.to_vec())),
            })
        }));
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn assign_sandboxes(
        &self,
        request: Request<AssignSandboxesRequest>,
    ) -> Result<Response<BulkResult>, Status> {
        let r = request.into_inner();
        self.state().assigned.push((r.job_id, r.kind, r.pfns));
        Ok(Response::new(BulkResult {
            succeeded: vec![r.job_id],
            ..Default::default()
        }))
    }

    async fn get_job_sandboxes(
        &self,
        _: Request<JobSandboxesRequest>,
    ) -> Result<Response<JobSandboxesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

#[tonic::async_trait]
impl JobStateUpdate for Fake {
    async fn set_job_status(
        &self,
        request: Request<SetJobStatusRequest>,
    ) -> Result<Response<SetJobStatusResponse>, Status> {
        let mut state = self.state();
        for u in request.into_inner().updates {
            assert!(u.time.is_some(), "update without time");
            state.statuses.push((
                u.job_id,
                u.status,
                u.minor_status,
                u.application_status,
                u.source,
            ));
        }
        Ok(Response::new(SetJobStatusResponse::default()))
    }

    async fn send_heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let mut state = self.state();
        let mut commands = Vec::new();
        for hb in request.into_inner().heartbeats {
            if state.to_kill.remove(&hb.job_id) {
                commands.push(JobCommand {
                    job_id: hb.job_id,
                    command: "Kill".to_owned(),
                    arguments: String::new(),
                });
            }
            state.heartbeats.push(hb);
        }
        Ok(Response::new(HeartbeatResponse {
            commands,
            ..Default::default()
        }))
    }

    async fn set_job_parameters(
        &self,
        request: Request<SetJobParametersRequest>,
    ) -> Result<Response<BulkResult>, Status> {
        let mut state = self.state();
        for p in request.into_inner().parameters {
            state.parameters.push((p.job_id, p.name, p.value));
        }
        Ok(Response::new(BulkResult::default()))
    }
}

#[tonic::async_trait]
impl PilotManager for Fake {
    async fn register_pilots(
        &self,
        request: Request<RegisterPilotsRequest>,
    ) -> Result<Response<RegisterPilotsResponse>, Status> {
        let pilots = request.into_inner().pilots;
        let registered = pilots.iter().map(|p| p.stamp.clone()).collect();
        self.state().pilots.extend(pilots);
        Ok(Response::new(RegisterPilotsResponse {
            registered,
            ..Default::default()
        }))
    }

    async fn set_pilot_status(
        &self,
        request: Request<SetPilotStatusRequest>,
    ) -> Result<Response<Pilot>, Status> {
        let r = request.into_inner();
        self.state()
            .pilot_statuses
            .push((r.stamp.clone(), r.status, r.reason));
        Ok(Response::new(Pilot {
            stamp: r.stamp,
            ..Default::default()
        }))
    }

    async fn get_pilots(
        &self,
        _: Request<PilotStamps>,
    ) -> Result<Response<GetPilotsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn search_pilots(
        &self,
        _: Request<SearchPilotsRequest>,
    ) -> Result<Response<SearchPilotsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn append_pilot_log(
        &self,
        request: Request<AppendPilotLogRequest>,
    ) -> Result<Response<BulkResult>, Status> {
        self.state().pilot_log.push_str(&request.into_inner().text);
        Ok(Response::new(BulkResult::default()))
    }

    async fn get_pilot_log(
        &self,
        _: Request<PilotLogRequest>,
    ) -> Result<Response<PilotLogResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn kill_pilots(
        &self,
        _: Request<dirac_proto::wms::PilotStamps>,
    ) -> Result<Response<dirac_proto::wms::KillPilotsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_pilot_output(
        &self,
        _: Request<PilotLogRequest>,
    ) -> Result<Response<PilotLogResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_queue_status(
        &self,
        _: Request<dirac_proto::wms::QueueStatusRequest>,
    ) -> Result<Response<dirac_proto::wms::QueueStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

async fn serve(fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MatcherServer::new(fake.clone()))
            .add_service(SandboxStoreServer::new(fake.clone()))
            .add_service(JobStateUpdateServer::new(fake.clone()))
            .add_service(PilotManagerServer::new(fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

async fn run_pilot(url: &str, work: &Path, extra: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_dirac-pilot"));
    command
        .args(["--url", url, "--vo", "testvo", "--site", "DIRAC.Test.org"])
        .args([
            "--ce",
            "ce.test.org",
            "--queue",
            "short",
            "--stamp",
            "teststamp",
        ])
        .args(["--polling-time", "0.2", "--heartbeat", "1"])
        .arg("--work-dir")
        .arg(work)
        .arg("--drain-file")
        .arg(work.join("drain"))
        .args(extra)
        .env("DIRAC_PILOT_TOKEN", "pilot-secret-token")
        .env("RUST_LOG", "info")
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("pilot finished in time")
        .expect("pilot ran")
}

fn statuses_of(state: &State, job_id: u64) -> Vec<(String, String, String)> {
    state
        .statuses
        .iter()
        .filter(|s| s.0 == job_id)
        .map(|s| (s.1.clone(), s.2.clone(), s.3.clone()))
        .collect()
}

fn triple(s: &str, m: &str, a: &str) -> (String, String, String) {
    (s.to_owned(), m.to_owned(), a.to_owned())
}

fn param(state: &State, job_id: u64, name: &str) -> Option<String> {
    state
        .parameters
        .iter()
        .rev()
        .find(|p| p.0 == job_id && p.1 == name)
        .map(|p| p.2.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pilot_runs_jobs_end_to_end() {
    let fake = Fake::default();
    let url = serve(fake.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");

    // Job 1's input sandbox: a script writing a result file.
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(
        src.join("run.sh"),
        "#!/bin/sh\necho \"job $DIRACJOBID at $DIRAC_SITE with $NCPUS cpus, args: $1|$2\"\n\
         echo result > result.txt\necho oops >&2\n",
    )
    .expect("write script");
    let archive = sandbox::pack(&[PathBuf::from("run.sh")], &src).expect("pack");
    let pfn = "SB:FakeSE|/input.tar.gz".to_owned();
    {
        let mut state = fake.state();
        state.sandboxes.insert(pfn.clone(), archive);
        state.queue.push_back((
            1,
            format!(
                r#"[ Executable = "run.sh"; Arguments = "one 'two three'"; InputSandbox = {{ "{pfn}" }};
                    OutputSandbox = {{ "std.out", "std.err", "result.txt", "missing.txt" }}; CPUTime = 100; ]"#
            ),
        ));
        state.queue.push_back((
            2,
            r#"[ Executable = "/bin/sh"; Arguments = "-c 'exit 3'"; NumberOfProcessors = 1; ]"#
                .to_owned(),
        ));
        state.queue.push_back((
            3,
            r#"[ Executable = "sleep"; Arguments = "30"; ]"#.to_owned(),
        ));
        state.queue.push_back((
            4,
            r#"[ Executable = "sleep"; Arguments = "30"; CPUTime = 1; ]"#.to_owned(),
        ));
        state.queue.push_back((
            5,
            r#"[ Executable = "/bin/sh"; Arguments = "-c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'"; ]"#
                .to_owned(),
        ));
        state.queue.push_back((
            6,
            r#"[ Executable = "/bin/sh"; Arguments = "-c 'x=$(yes | head -c 20000000); sleep 30'"; MaxRAM = 4; ]"#
                .to_owned(),
        ));
        state.to_kill.insert(3);
    }

    let work = dir.path().join("work");
    let out = run_pilot(
        &url,
        &work,
        &[
            "--cores",
            "2",
            "--stop-after-failed-matches",
            "2",
            "--keep-job-dirs",
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pilot failed:\n{stderr}");
    assert!(!stderr.contains("pilot-secret-token"), "token logged");

    let state = fake.state();
    assert!(state.auth.iter().all(|a| a == "Bearer pilot-secret-token"));
    assert_eq!(state.pilots.len(), 1);
    let pilot = &state.pilots[0];
    assert_eq!(
        (
            pilot.stamp.as_str(),
            pilot.reference.as_str(),
            pilot.grid_type.as_str()
        ),
        ("teststamp", "teststamp", "Local")
    );
    assert!(pilot.benchmark > 0.0);
    assert_eq!(
        state.pilot_statuses,
        [
            ("teststamp".to_owned(), "Running".to_owned(), String::new()),
            (
                "teststamp".to_owned(),
                "Done".to_owned(),
                "ran 6 jobs".to_owned()
            ),
        ]
    );
    assert!(
        state.pilot_log.contains("worker node checked"),
        "{}",
        state.pilot_log
    );

    let first = &state.requests[0];
    assert_eq!(first.number_of_processors, 2);
    assert_eq!(
        (first.vo.as_str(), first.grid_ce.as_str()),
        ("testvo", "ce.test.org")
    );
    assert_eq!(first.pilot_stamp, "teststamp");
    assert!(first.platforms[0].starts_with("Linux_"));
    assert!(first.cpu_time > 86_000);
    // The second request offers the one core job 1 left free.
    assert_eq!(state.requests[1].number_of_processors, 1);

    // Job 1: sandbox in, payload, sandbox out, Done.
    assert_eq!(
        statuses_of(&state, 1),
        [
            triple("Running", "Job Initialization", ""),
            triple("Running", "Downloading InputSandbox", ""),
            triple("Running", "Application", ""),
            triple("Completing", "Uploading Output Sandbox", ""),
            triple("Completing", "Output Sandbox Uploaded", ""),
            triple(
                "Done",
                "Execution Complete",
                "Application Finished Successfully"
            ),
        ]
    );
    assert!(state.statuses.iter().all(|s| s.4 == "JobWrapper"));
    assert_eq!(
        param(&state, 1, "Pilot_Reference").as_deref(),
        Some("teststamp")
    );
    assert_eq!(param(&state, 1, "GridCE").as_deref(), Some("ce.test.org"));
    assert_eq!(param(&state, 1, "CEQueue").as_deref(), Some("short"));
    assert_eq!(param(&state, 1, "ExitCode").as_deref(), Some("0"));
    assert!(param(&state, 1, "WallClockTime").is_some());
    let (_, kind, pfns) = state
        .assigned
        .iter()
        .find(|a| a.0 == 1)
        .expect("output assigned");
    assert_eq!(kind, "Output");
    let output = state.sandboxes.get(&pfns[0]).expect("output stored");
    let unpacked = dir.path().join("out1");
    let mut names = sandbox::unpack(output, &unpacked).expect("unpack output");
    names.sort();
    assert_eq!(
        names,
        [
            PathBuf::from("result.txt"),
            PathBuf::from("std.err"),
            PathBuf::from("std.out")
        ]
    );
    let stdout = std::fs::read_to_string(unpacked.join("std.out")).expect("std.out");
    assert_eq!(
        stdout,
        "job 1 at DIRAC.Test.org with 1 cpus, args: one|two three\n"
    );

    // Job 2: non-zero exit.
    assert_eq!(
        statuses_of(&state, 2).last(),
        Some(&triple(
            "Failed",
            "Application Finished With Errors",
            "Exit code 3"
        ))
    );
    assert_eq!(param(&state, 2, "ExitCode").as_deref(), Some("3"));

    // Job 3: killed through its heartbeat; major status left to the server.
    assert_eq!(
        statuses_of(&state, 3).last(),
        Some(&triple("", "Received Kill signal", ""))
    );
    assert!(state.heartbeats.iter().any(|h| h.job_id == 3));

    // Job 4: CPUTime 1 gives 1.2 s of wall clock.
    assert_eq!(
        statuses_of(&state, 4).last(),
        Some(&triple(
            "Failed",
            "Job has exceeded maximum wall clock time",
            ""
        ))
    );

    // Job 6 holds 20 MB with MaxRAM = 4 MB: stopped by the memory limit.
    assert_eq!(
        statuses_of(&state, 6).last(),
        Some(&triple(
            "Failed",
            "Job has exceeded its memory limit (MaxRAM)",
            ""
        ))
    );

    // Job 5 burns CPU in a shell loop: CPU time is measured.
    let cpu: f64 = param(&state, 5, "CPUConsumed")
        .expect("cpu")
        .parse()
        .expect("number");
    assert!(cpu > 0.0, "no cpu measured for a busy job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pilot_without_jobs_is_empty() {
    let fake = Fake::default();
    let url = serve(fake.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_pilot(
        &url,
        &dir.path().join("work"),
        &["--cores", "1", "--stop-after-failed-matches", "3"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = fake.state();
    assert_eq!(state.requests.len(), 3);
    assert_eq!(
        state.pilot_statuses.last(),
        Some(&(
            "teststamp".to_owned(),
            "Empty".to_owned(),
            "matched no job: 3 consecutive failed matches".to_owned()
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_file_stops_the_pilot_at_once() {
    let fake = Fake::default();
    let url = serve(fake.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::write(work.join("drain"), "").expect("drain");
    let out = run_pilot(&url, &work, &[]).await;
    assert!(out.status.success());
    let state = fake.state();
    assert!(state.requests.is_empty());
    assert_eq!(
        state.pilot_statuses.last().map(|s| s.1.as_str()),
        Some("Empty")
    );
}
