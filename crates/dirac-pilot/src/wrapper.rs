//! The JobWrapper: runs one matched job from its JDL to its final status.
//!
//! Order of the reports (every status update has source `JobWrapper`):
//!
//! 1. parameters `Pilot_Reference`, `GridCE`, `CEQueue`, `PilotBenchmark`;
//!    `Running` / `Job Initialization`
//! 2. with `SB:` input sandboxes: `Running` / `Downloading InputSandbox`
//! 3. `Running` / `Application`, then heartbeats while the payload runs
//! 4. with an OutputSandbox: `Completing` / `Uploading Output Sandbox`, then
//!    `Completing` / `Output Sandbox Uploaded` once assigned
//! 5. parameters `CPUConsumed`, `WallClockTime`, `ExitCode`, then the final
//!    status (see [`final_status`])
//!
//! A wrapper never panics and never gives up on the first server error: each
//! report is retried, then logged and skipped.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dirac_client::data::DataError;
use dirac_client::sandbox;
use dirac_proto::wms::Heartbeat;
use rustix::process::{Pid, Signal};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::jobspec::{self, JobSpec};
use crate::report::{Reporter, with_retry};
use crate::watchdog::{self, Stop};

/// How often the watchdog looks at the payload between heartbeats.
const POLL: Duration = Duration::from_millis(100);
/// CPU and memory are read from /proc every this many polls (1 s).
const LIMIT_CHECK_EVERY: u64 = 10;
/// Time between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Lines of standard output sent with each heartbeat.
const STDOUT_TAIL_LINES: usize = 20;

/// What every wrapper of this pilot shares.
#[derive(Debug)]
pub struct WrapperContext {
    pub reporter: Reporter,
    pub stamp: String,
    pub site: String,
    pub ce: String,
    pub queue: String,
    pub benchmark: f64,
    /// Absolute; each job runs in `<work_dir>/<job_id>`.
    pub work_dir: PathBuf,
    pub heartbeat: Duration,
    pub keep_job_dirs: bool,
    /// `PATH` given to payloads.
    pub path_env: OsString,
    /// Push mode: payloads run on a CE through this.
    pub remote: Option<crate::remote::Remote>,
    /// Turns true when the pilot is being terminated.
    pub shutdown: watch::Receiver<bool>,
}

/// Where InputDataByProtocol leaves the `LFN URL` lines for the payload.
pub const INPUT_DATA_FILE: &str = "input-data.txt";

/// How a job ended, as far as this pilot knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Failed,
    /// The server killed it; its status was left to the server.
    Killed,
}

/// The minor status of a job whose outputs wait for its failover request
/// (the WMS's `PENDING_REQUESTS`).
const PENDING_REQUESTS: &str = "Pending Requests";

/// The final report after the payload ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalStatus {
    pub status: &'static str,
    pub minor_status: &'static str,
    pub application_status: String,
}

/// The final status of a payload that ran: `stop` is why the watchdog
/// stopped it, if it did.
pub fn final_status(exit_code: i32, stop: Option<Stop>, output_failed: bool) -> FinalStatus {
    let application_status = if exit_code == 0 {
        "Application Finished Successfully".to_owned()
    } else {
        format!("Exit code {exit_code}")
    };
    let (status, minor_status) = match stop {
        Some(Stop::WallClock) => ("Failed", "Job has exceeded maximum wall clock time"),
        Some(Stop::CpuLimit) => ("Failed", "Job has reached the CPU limit of the queue"),
        Some(Stop::Memory) => ("Failed", "Job has exceeded its memory limit (MaxRAM)"),
        Some(Stop::KillCommand) => ("", "Received Kill signal"),
        Some(Stop::PilotShutdown) => ("Failed", "Received Kill signal"),
        None if output_failed => ("Failed", "Failed Uploading Output Sandbox"),
        None if exit_code == 0 => ("Done", "Execution Complete"),
        None => ("Failed", "Application Finished With Errors"),
    };
    FinalStatus {
        status,
        minor_status,
        application_status,
    }
}

/// An exit code, with death by signal N as 128 + N like a shell.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// A relative path that stays below its root.
pub fn contained(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    let ok = p
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && p.components().any(|c| matches!(c, Component::Normal(_)));
    ok.then(|| p.to_path_buf())
}

/// The payload's whole environment.
pub fn payload_env(
    job_id: u64,
    site: &str,
    processors: u32,
    job_dir: &Path,
    path: &OsString,
    extra: &[(String, String)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), path.clone()),
        ("HOME".into(), job_dir.as_os_str().to_owned()),
        ("TMPDIR".into(), job_dir.as_os_str().to_owned()),
        ("DIRACJOBID".into(), job_id.to_string().into()),
        ("JOBID".into(), job_id.to_string().into()),
        ("DIRAC_SITE".into(), site.into()),
        ("OMP_NUM_THREADS".into(), processors.to_string().into()),
        ("NCPUS".into(), processors.to_string().into()),
    ];
    for (key, value) in extra {
        let key = OsString::from(key);
        env.retain(|(k, _)| *k != key);
        env.push((key, value.into()));
    }
    env
}

/// Where the executable is: a file of the job directory (made executable),
/// a path relative to it, or a name looked up in `PATH`.
pub fn resolve_executable(executable: &str, job_dir: &Path) -> PathBuf {
    let path = Path::new(executable);
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let local = job_dir.join(path);
    if local.is_file() {
        if let Ok(meta) = std::fs::metadata(&local) {
            let mut perms = meta.permissions();
            if perms.mode() & 0o100 == 0 {
                perms.set_mode(perms.mode() | 0o700);
                let _ = std::fs::set_permissions(&local, perms);
            }
        }
        return local;
    }
    if executable.contains('/') {
        local
    } else {
        path.to_path_buf()
    }
}

fn signal_group(pgid: i32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pgid) {
        // ESRCH (the group is gone) is fine.
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// What the watchdog saw of a payload.
struct Supervised {
    status: std::io::Result<ExitStatus>,
    stop: Option<Stop>,
    cpu_secs: f64,
    wall_secs: f64,
}

struct Job<'a> {
    ctx: &'a WrapperContext,
    job_id: u64,
}

impl Job<'_> {
    async fn status(&self, status: &str, minor: &str, application: &str) {
        tracing::info!(
            job_id = self.job_id,
            status,
            minor_status = minor,
            application_status = application,
            "job status"
        );
        if let Err(e) = self
            .ctx
            .reporter
            .set_job_status(self.job_id, status, minor, application)
            .await
        {
            tracing::warn!(job_id = self.job_id, code = ?e.code(), error = e.message(), "cannot set job status");
        }
    }

    async fn parameters(&self, parameters: &[(&str, String)]) {
        if let Err(e) = self
            .ctx
            .reporter
            .set_job_parameters(self.job_id, parameters)
            .await
        {
            tracing::warn!(job_id = self.job_id, code = ?e.code(), error = e.message(), "cannot set job parameters");
        }
    }

    async fn fail(&self, minor: &str, reason: &str) -> Outcome {
        tracing::warn!(
            job_id = self.job_id,
            minor_status = minor,
            reason,
            "job failed"
        );
        self.status("Failed", minor, reason).await;
        Outcome::Failed
    }

    async fn download_inputs(&self, spec: &JobSpec, job_dir: &Path) -> Result<(), String> {
        for pfn in spec.sandbox_refs() {
            let client = self.ctx.reporter.client();
            let policy = self.ctx.reporter.policy();
            let mut last = None;
            let mut bytes = None;
            for attempt in 0..policy.attempts {
                match sandbox::download(client, pfn).await {
                    Ok(b) => {
                        bytes = Some(b);
                        break;
                    }
                    Err(e) => {
                        let transient = e
                            .status()
                            .is_some_and(|s| crate::report::is_transient(s.code()));
                        last = Some(e.to_string());
                        if !transient {
                            break;
                        }
                        tokio::time::sleep(policy.delay(attempt)).await;
                    }
                }
            }
            let bytes = bytes.ok_or_else(|| {
                format!(
                    "cannot download {pfn}: {}",
                    last.unwrap_or_else(|| "no attempt".to_owned())
                )
            })?;
            let dest = job_dir.to_path_buf();
            let size = bytes.len();
            tokio::task::spawn_blocking(move || sandbox::unpack(&bytes, &dest))
                .await
                .map_err(|e| format!("unpacking {pfn} stopped: {e}"))?
                .map_err(|e| format!("cannot unpack {pfn}: {e}"))?;
            tracing::info!(
                job_id = self.job_id,
                pfn,
                bytes = size,
                "input sandbox unpacked"
            );
        }
        for other in spec.input_sandbox.iter().filter(|e| !e.starts_with("SB:")) {
            tracing::warn!(
                job_id = self.job_id,
                entry = other.as_str(),
                "input sandbox entry not supported, skipped"
            );
        }
        Ok(())
    }

    /// InputDataByProtocol: the URL of each input file, one `LFN URL` line
    /// each in `input-data.txt` of the job directory (the payload finds it
    /// through `DIRAC_INPUT_DATA_FILE`).
    async fn resolve_input_urls(
        &self,
        spec: &JobSpec,
        job_dir: &Path,
        job_token: &str,
    ) -> Result<(), String> {
        let client = self
            .ctx
            .reporter
            .client()
            .with_token(job_token)
            .map_err(|e| format!("cannot use the job token: {e}"))?;
        let resp = client
            .storage_element()
            .get_access_urls(dirac_proto::dms::UrlsRequest {
                lfns: spec.input_data.clone(),
                protocol: String::new(),
            })
            .await
            .map_err(|s| format!("cannot resolve input data: {}", s.message()))?
            .into_inner();
        let mut lines = String::new();
        for lfn in &spec.input_data {
            let url = resp
                .urls
                .get(lfn)
                .and_then(|u| u.urls.first())
                .ok_or_else(|| match resp.failed.get(lfn) {
                    Some(e) => format!("{lfn}: {}", e.message),
                    None => format!("{lfn}: no replica can be read by protocol"),
                })?;
            lines.push_str(&format!("{lfn} {url}\n"));
        }
        tokio::fs::write(job_dir.join(INPUT_DATA_FILE), lines)
            .await
            .map_err(|e| format!("cannot write {INPUT_DATA_FILE}: {e}"))?;
        tracing::info!(
            job_id = self.job_id,
            files = spec.input_data.len(),
            "input data resolved to URLs"
        );
        Ok(())
    }

    /// Uploads and registers each OutputData file, trying the OutputSE
    /// list in order (by default the storage elements of this site). A file
    /// stored whose registration failed (the catalog down) is not lost:
    /// it comes back as a `RegisterFile` operation for a failover request.
    async fn upload_output_data(
        &self,
        spec: &JobSpec,
        job_dir: &Path,
        data: Option<&dirac_client::data::DataManager>,
    ) -> Result<Vec<dirac_proto::rms::Operation>, (String, Vec<dirac_proto::rms::Operation>)> {
        let mut failover = Vec::new();
        match self
            .store_output_data(spec, job_dir, data, &mut failover)
            .await
        {
            Ok(()) => Ok(failover),
            Err(e) => Err((e, failover)),
        }
    }

    async fn store_output_data(
        &self,
        spec: &JobSpec,
        job_dir: &Path,
        data: Option<&dirac_client::data::DataManager>,
        failover: &mut Vec<dirac_proto::rms::Operation>,
    ) -> Result<(), String> {
        let dm = data.ok_or("the matcher sent no job token to write data with")?;
        let mut listed: Option<Vec<dirac_proto::dms::StorageElementInfo>> = None;
        let ses = if spec.output_se.is_empty() {
            let here: Vec<String> = Self::storage_elements(dm, &mut listed)
                .await?
                .iter()
                .filter(|se| se.site == self.ctx.site && se.write_access != "Banned")
                .map(|se| se.name.clone())
                .collect();
            if here.is_empty() {
                return Err(format!(
                    "no OutputSE given and site {} has no storage element",
                    self.ctx.site
                ));
            }
            here
        } else {
            spec.output_se.clone()
        };
        for (local, lfn) in spec.output_lfns(self.job_id)? {
            let path = contained(&local)
                .map(|p| job_dir.join(p))
                .ok_or_else(|| format!("OutputData: '{local}' is not inside the job directory"))?;
            if !path.is_file() {
                return Err(format!("OutputData: {local} was not produced"));
            }
            let mut errors = Vec::new();
            if self
                .store_one(dm, &path, &lfn, &ses, failover, &mut errors)
                .await?
                .is_some()
            {
                continue;
            }
            // No OutputSE took it: a failover SE (this site's first) keeps
            // it, and a request moves it where it belongs (DIRAC's
            // transferAndRegisterFileFailover).
            let mut failovers: Vec<&dirac_proto::dms::StorageElementInfo> =
                Self::storage_elements(dm, &mut listed)
                    .await?
                    .iter()
                    .filter(|se| {
                        se.failover && se.write_access != "Banned" && !ses.contains(&se.name)
                    })
                    .collect();
            failovers.sort_by_key(|se| se.site != self.ctx.site);
            let failovers: Vec<String> = failovers.iter().map(|se| se.name.clone()).collect();
            let Some(at) = self
                .store_one(dm, &path, &lfn, &failovers, failover, &mut errors)
                .await?
            else {
                return Err(format!("{lfn}: {}", errors.join("; ")));
            };
            let (size, adler32) = dirac_client::data::local_checksum(&path)
                .await
                .map_err(|e| e.to_string())?;
            tracing::warn!(
                job_id = self.job_id,
                lfn,
                failover_se = at,
                "output kept on a failover SE: a request moves it"
            );
            let file = dirac_proto::rms::File {
                lfn: lfn.clone(),
                size,
                checksum: adler32,
                checksum_type: "ADLER32".into(),
                ..Default::default()
            };
            failover.push(dirac_proto::rms::Operation {
                r#type: "ReplicateAndRegister".into(),
                source_se: vec![at.clone()],
                target_se: vec![ses[0].clone()],
                files: vec![file.clone()],
                ..Default::default()
            });
            failover.push(dirac_proto::rms::Operation {
                r#type: "RemoveReplica".into(),
                target_se: vec![at],
                files: vec![file],
                ..Default::default()
            });
        }
        Ok(())
    }

    /// The installation's storage elements, listed once per job with the
    /// job's token (the pilot's own may not).
    async fn storage_elements<'a>(
        dm: &dirac_client::data::DataManager,
        listed: &'a mut Option<Vec<dirac_proto::dms::StorageElementInfo>>,
    ) -> Result<&'a Vec<dirac_proto::dms::StorageElementInfo>, String> {
        if listed.is_none() {
            let list = dm
                .client()
                .storage_element()
                .list_storage_elements(dirac_proto::dms::Empty {})
                .await
                .map_err(|s| format!("cannot list the storage elements: {}", s.message()))?
                .into_inner();
            *listed = Some(list.storage_elements);
        }
        Ok(listed.get_or_insert_with(Vec::new))
    }

    /// Store `path` as `lfn` on the first of `ses` that takes it; the SE,
    /// or `None` (the reasons in `errors`). Stored but not registered (the
    /// catalog down): a `RegisterFile` operation for the failover request.
    async fn store_one(
        &self,
        dm: &dirac_client::data::DataManager,
        path: &Path,
        lfn: &str,
        ses: &[String],
        failover: &mut Vec<dirac_proto::rms::Operation>,
        errors: &mut Vec<String>,
    ) -> Result<Option<String>, String> {
        for se in ses {
            match dm.put_and_register(path, lfn, se, true, &|_, _| {}).await {
                Err(DataError::Failed {
                    stage: "register",
                    message,
                    ..
                }) => {
                    let (size, adler32) = dirac_client::data::local_checksum(path)
                        .await
                        .map_err(|e| e.to_string())?;
                    tracing::warn!(
                        job_id = self.job_id,
                        lfn,
                        se,
                        error = message,
                        "registration failed: a failover request registers it"
                    );
                    failover.push(dirac_proto::rms::Operation {
                        r#type: "RegisterFile".into(),
                        target_se: vec![se.clone()],
                        files: vec![dirac_proto::rms::File {
                            lfn: lfn.to_string(),
                            size,
                            checksum: adler32,
                            checksum_type: "ADLER32".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    });
                    return Ok(Some(se.clone()));
                }
                Ok((size, adler32)) => {
                    tracing::info!(
                        job_id = self.job_id,
                        lfn,
                        se,
                        size,
                        adler32,
                        "output data stored"
                    );
                    return Ok(Some(se.clone()));
                }
                Err(e) => errors.push(format!("{se}: {e}")),
            }
        }
        Ok(None)
    }

    /// Put the failover request of this job (its token: the request is the
    /// owner's, for this job).
    async fn put_failover_request(
        &self,
        dm: &dirac_client::data::DataManager,
        operations: Vec<dirac_proto::rms::Operation>,
    ) -> Result<u64, String> {
        let request = dirac_proto::rms::Request {
            name: format!("Job_{}_failover", self.job_id),
            job_id: self.job_id,
            source_component: format!("Job_{}", self.job_id),
            operations,
            ..Default::default()
        };
        let policy = self.ctx.reporter.policy();
        let ids = with_retry(policy, "PutRequests", || {
            let request = request.clone();
            async move {
                dm.client()
                    .req_manager()
                    .put_requests(dirac_proto::rms::PutRequestsRequest {
                        requests: vec![request],
                    })
                    .await
            }
        })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner()
        .request_ids;
        ids.first()
            .copied()
            .ok_or_else(|| "the ReqManager returned no request id".to_string())
    }

    /// Packs, uploads and assigns the output sandbox; `Ok(false)` when none
    /// of its files exist.
    async fn upload_outputs(&self, spec: &JobSpec, job_dir: &Path) -> Result<bool, String> {
        let mut files = Vec::new();
        for entry in &spec.output_sandbox {
            match contained(entry) {
                Some(rel) if job_dir.join(&rel).exists() => files.push(rel),
                Some(_) => {
                    tracing::warn!(
                        job_id = self.job_id,
                        file = entry.as_str(),
                        "output sandbox file missing"
                    );
                }
                None => {
                    tracing::warn!(
                        job_id = self.job_id,
                        file = entry.as_str(),
                        "output sandbox path refused"
                    );
                }
            }
        }
        if files.is_empty() {
            return Ok(false);
        }
        let base = job_dir.to_path_buf();
        let bytes = tokio::task::spawn_blocking(move || sandbox::pack(&files, &base))
            .await
            .map_err(|e| format!("packing stopped: {e}"))?
            .map_err(|e| format!("cannot pack the output sandbox: {e}"))?;
        let size = bytes.len();
        let reporter = &self.ctx.reporter;
        let pfn = with_retry(reporter.policy(), "UploadSandbox", || {
            let bytes = bytes.clone();
            async move {
                sandbox::upload(reporter.client(), bytes)
                    .await
                    .map_err(|e| match e {
                        sandbox::SandboxError::Rpc(status) => *status,
                        other => tonic::Status::internal(other.to_string()),
                    })
            }
        })
        .await
        .map_err(|s| format!("cannot upload the output sandbox: {}", s.message()))?;
        reporter
            .assign_output_sandbox(self.job_id, &pfn)
            .await
            .map_err(|s| format!("cannot assign the output sandbox: {}", s.message()))?;
        tracing::info!(
            job_id = self.job_id,
            pfn,
            bytes = size,
            "output sandbox uploaded"
        );
        Ok(true)
    }

    /// Watches the payload until it exits: heartbeats, Kill commands,
    /// wall-clock limit, pilot shutdown.
    async fn supervise(
        &self,
        child: &mut Child,
        pid: i32,
        spec: &JobSpec,
        job_dir: &Path,
        stdout_path: &Path,
    ) -> Supervised {
        let start = Instant::now();
        let limit = spec.wall_clock_limit_secs();
        let period = self.ctx.heartbeat;
        let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = self.ctx.shutdown.clone();
        let mut stop: Option<Stop> = None;
        let mut kill_at: Option<Instant> = None;
        let mut cpu_secs: f64 = 0.0;
        let mut polls: u64 = 0;

        let terminate = |why: Stop, stop: &mut Option<Stop>, kill_at: &mut Option<Instant>| {
            if stop.is_none() {
                tracing::warn!(job_id = self.job_id, reason = ?why, "stopping the payload");
                *stop = Some(why);
                signal_group(pid, Signal::TERM);
                *kill_at = Some(Instant::now() + KILL_GRACE);
            }
        };

        loop {
            tokio::select! {
                _ = poll.tick() => {
                    match watchdog::process_stat(pid) {
                        Some(stat) if stat.state == 'Z' || stat.state == 'X' => {
                            cpu_secs = cpu_secs.max(watchdog::ticks_to_secs(stat.cpu_ticks));
                            break;
                        }
                        Some(_) => {}
                        None => break,
                    }
                    if kill_at.is_some_and(|t| Instant::now() >= t) {
                        signal_group(pid, Signal::KILL);
                        kill_at = None;
                    }
                    if watchdog::wall_clock_exceeded(start.elapsed().as_secs_f64(), limit) {
                        terminate(Stop::WallClock, &mut stop, &mut kill_at);
                    }
                    polls += 1;
                    if polls.is_multiple_of(LIMIT_CHECK_EVERY) {
                        let usage = watchdog::group_usage(pid);
                        cpu_secs = cpu_secs.max(usage.cpu_secs);
                        if let Some(why) =
                            watchdog::limit_broken(cpu_secs, spec.cpu_limit_secs(), usage.rss_mb, spec.max_ram_mb)
                        {
                            terminate(why, &mut stop, &mut kill_at);
                        }
                    }
                }
                _ = beats.tick() => {
                    let usage = watchdog::group_usage(pid);
                    cpu_secs = cpu_secs.max(usage.cpu_secs);
                    let heartbeat = Heartbeat {
                        job_id: self.job_id,
                        load_average: watchdog::load_average(),
                        memory_used: usage.rss_mb,
                        vsize: usage.vsize_mb,
                        available_disk_space: crate::node::free_disk_mb(job_dir).unwrap_or(0) as f64,
                        cpu_consumed: cpu_secs,
                        wall_clock_time: start.elapsed().as_secs_f64(),
                        standard_output: watchdog::read_tail(stdout_path, STDOUT_TAIL_LINES, 64 * 1024),
                    };
                    let timeout = period.max(Duration::from_secs(10));
                    match tokio::time::timeout(timeout, self.ctx.reporter.heartbeat(heartbeat)).await {
                        Ok(Ok(commands)) => {
                            for command in commands {
                                tracing::info!(job_id = self.job_id, command = command.command, "job command received");
                                if command.command.eq_ignore_ascii_case("Kill") {
                                    terminate(Stop::KillCommand, &mut stop, &mut kill_at);
                                }
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(job_id = self.job_id, code = ?e.code(), error = e.message(), "heartbeat failed");
                        }
                        Err(_) => tracing::warn!(job_id = self.job_id, "heartbeat timed out"),
                    }
                }
                () = crate::agent::shutdown_requested(&mut shutdown), if stop.is_none() => {
                    terminate(Stop::PilotShutdown, &mut stop, &mut kill_at);
                }
            }
        }
        // The leader exited: nothing of its group may outlive it.
        signal_group(pid, Signal::KILL);
        let status = child.wait().await;
        Supervised {
            status,
            stop,
            cpu_secs,
            wall_secs: start.elapsed().as_secs_f64(),
        }
    }
}

/// Runs one job; reports everything and returns how it ended.
/// `job_token`, when the server sent one, reaches the payload as
/// `DIRAC_JOB_TOKEN`: the owner's token for this job only.
pub async fn run_job(
    ctx: Arc<WrapperContext>,
    job_id: u64,
    jdl: String,
    job_token: String,
) -> Outcome {
    let job = Job { ctx: &ctx, job_id };
    job.parameters(&[
        ("Pilot_Reference", ctx.stamp.clone()),
        ("GridCE", ctx.ce.clone()),
        ("CEQueue", ctx.queue.clone()),
        ("PilotBenchmark", format!("{:.2}", ctx.benchmark)),
    ])
    .await;
    job.status("Running", "Job Initialization", "").await;

    let spec = match jobspec::parse(&jdl) {
        Ok(spec) => spec,
        Err(e) => return job.fail("Illegal Job JDL", &e).await,
    };
    let job_dir = ctx.work_dir.join(job_id.to_string());
    if let Err(e) = tokio::fs::create_dir_all(&job_dir).await {
        return job
            .fail(
                "Exception During Execution",
                &format!("cannot create the job directory: {e}"),
            )
            .await;
    }

    if spec.sandbox_refs().next().is_some() {
        job.status("Running", "Downloading InputSandbox", "").await;
    }
    if let Err(e) = job.download_inputs(&spec, &job_dir).await {
        return job.fail("Failed Downloading InputSandbox", &e).await;
    }
    // Data is read and written as the job's owner, with the job's token.
    let data = if job_token.is_empty() {
        None
    } else {
        ctx.reporter
            .client()
            .with_token(&job_token)
            .ok()
            .map(dirac_client::data::DataManager::new)
    };
    if !spec.input_data.is_empty() {
        job.status("Running", "Downloading InputData", "").await;
        let Some(dm) = &data else {
            return job
                .fail(
                    "Input Data Not Available",
                    "the matcher sent no job token to read data with",
                )
                .await;
        };
        if spec.input_by_protocol() {
            match job.resolve_input_urls(&spec, &job_dir, &job_token).await {
                Ok(()) => {}
                Err(e) => return job.fail("Input Data Not Available", &e).await,
            }
        } else {
            for lfn in &spec.input_data {
                let name = lfn.rsplit('/').next().unwrap_or("input");
                if let Err(e) = dm.get_file(lfn, &job_dir.join(name), &|_, _| {}).await {
                    return job.fail("Input Data Not Available", &e.to_string()).await;
                }
                tracing::info!(job_id, lfn, "input data downloaded");
            }
        }
    }

    let stdout_name = contained(&spec.std_output).unwrap_or_else(|| PathBuf::from("std.out"));
    let stderr_name = contained(&spec.std_error).unwrap_or_else(|| PathBuf::from("std.err"));
    let stdout_path = job_dir.join(&stdout_name);
    let stderr_path = job_dir.join(&stderr_name);
    let files = std::fs::File::create(&stdout_path).and_then(|out| {
        let err = if stderr_path == stdout_path {
            out.try_clone()?
        } else {
            std::fs::File::create(&stderr_path)?
        };
        Ok((out, err))
    });
    let (out, err) = match files {
        Ok(files) => files,
        Err(e) => {
            return job
                .fail(
                    "Exception During Execution",
                    &format!("cannot create the output files: {e}"),
                )
                .await;
        }
    };

    let mut extra = spec.environment.clone();
    if spec.input_by_protocol() && !spec.input_data.is_empty() {
        extra.push((
            "DIRAC_INPUT_DATA_FILE".to_owned(),
            job_dir.join(INPUT_DATA_FILE).display().to_string(),
        ));
    }
    if !job_token.is_empty() {
        extra.retain(|(k, _)| k != "DIRAC_JOB_TOKEN");
        extra.push(("DIRAC_JOB_TOKEN".to_owned(), job_token));
    }
    let executable = resolve_executable(&spec.executable, &job_dir);
    let env = payload_env(
        job_id,
        &ctx.site,
        spec.processors,
        &job_dir,
        &ctx.path_env,
        &extra,
    );
    let remote_dir = ctx
        .remote
        .as_ref()
        .map(|r| (r, r.job_dir(&ctx.stamp, job_id)));
    let mut command = match &remote_dir {
        None => {
            let mut c = Command::new(&executable);
            c.args(&spec.arguments)
                .current_dir(&job_dir)
                .env_clear()
                .envs(env);
            c
        }
        Some((remote, rdir)) => {
            job.status("Running", "Sending the job to the CE", "").await;
            if let Err(e) = remote.stage_in(&job_dir, rdir).await {
                return job.fail("Exception During Execution", &e).await;
            }
            remote.command(
                rdir,
                &job_dir,
                &executable.display().to_string(),
                &spec.arguments,
                &env,
            )
        }
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(true);

    job.status("Running", "Application", "").await;
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let minor = if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) {
                "Application not found"
            } else {
                "Exception During Execution"
            };
            return job
                .fail(minor, &format!("cannot start {}: {e}", spec.executable))
                .await;
        }
    };
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        let _ = child.kill().await;
        return job
            .fail(
                "Exception During Execution",
                "the payload has no process id",
            )
            .await;
    };
    tracing::info!(job_id, pid, executable = %executable.display(), "payload started");

    let run = job
        .supervise(&mut child, pid, &spec, &job_dir, &stdout_path)
        .await;
    if let Some((remote, rdir)) = &remote_dir
        && let Err(e) = remote.stage_out(&job_dir, rdir).await
    {
        // The outputs stayed on the CE: the job cannot complete.
        tracing::warn!(job_id, error = %e, "push mode: outputs not retrieved");
        return job.fail("Exception During Execution", &e).await;
    }
    let code = match &run.status {
        Ok(status) => exit_code(*status),
        Err(e) => {
            tracing::warn!(job_id, error = %e, "cannot read the payload exit status");
            -1
        }
    };
    tracing::info!(
        job_id,
        exit_code = code,
        cpu_secs = run.cpu_secs,
        wall_secs = run.wall_secs,
        "payload ended"
    );
    let accounting = [
        ("CPUConsumed", format!("{:.2}", run.cpu_secs)),
        ("WallClockTime", format!("{:.2}", run.wall_secs)),
        ("ExitCode", code.to_string()),
    ];

    if matches!(run.stop, Some(Stop::KillCommand | Stop::PilotShutdown)) {
        job.parameters(&accounting).await;
        let last = final_status(code, run.stop, false);
        job.status(last.status, last.minor_status, "").await;
        return if run.stop == Some(Stop::KillCommand) {
            Outcome::Killed
        } else {
            Outcome::Failed
        };
    }

    let mut output_failed = false;
    if !spec.output_sandbox.is_empty() {
        job.status("Completing", "Uploading Output Sandbox", "")
            .await;
        match job.upload_outputs(&spec, &job_dir).await {
            Ok(true) => {
                job.status("Completing", "Output Sandbox Uploaded", "")
                    .await
            }
            Ok(false) => tracing::warn!(job_id, "no output sandbox file exists, nothing uploaded"),
            Err(e) => {
                tracing::warn!(job_id, error = e, "output sandbox failed");
                output_failed = true;
            }
        }
    }

    let mut pending_request = None;
    if !spec.output_data.is_empty() && code == 0 && run.stop.is_none() {
        job.status("Completing", "Uploading Output Data", "").await;
        match job.upload_output_data(&spec, &job_dir, data.as_ref()).await {
            Err((e, stored)) => {
                // What was stored before the failure still gets registered.
                if let (false, Some(dm)) = (stored.is_empty(), data.as_ref())
                    && let Err(put) = job.put_failover_request(dm, stored).await
                {
                    tracing::warn!(job_id, error = put, "cannot put the failover request");
                }
                job.parameters(&accounting).await;
                return job.fail("Uploading Job OutputData", &e).await;
            }
            Ok(failover) if !failover.is_empty() => {
                let Some(dm) = data.as_ref() else {
                    return job.fail("Failed sending requests", "no job token").await;
                };
                // The job says it waits before its request exists: the
                // agent may finish the request at once, and must then find
                // the job waiting for it.
                if !output_failed {
                    job.status(
                        "Completed",
                        PENDING_REQUESTS,
                        "Application Finished Successfully",
                    )
                    .await;
                }
                match job.put_failover_request(dm, failover).await {
                    Ok(id) => pending_request = Some(id),
                    Err(e) => {
                        job.parameters(&accounting).await;
                        return job.fail("Failed sending requests", &e).await;
                    }
                }
            }
            Ok(_) => {}
        }
    }

    job.parameters(&accounting).await;
    let mut last = final_status(code, run.stop, output_failed);
    if let Some(request) = pending_request
        && last.status == "Done"
    {
        // Already reported Completed / Pending Requests: Done once the
        // request is (the RequestExecutingAgent finishes the job).
        tracing::info!(job_id, request, "outputs pending in a failover request");
        last.status = "Completed";
        last.minor_status = PENDING_REQUESTS;
    } else {
        let application = if run.stop.is_some() {
            ""
        } else {
            last.application_status.as_str()
        };
        job.status(last.status, last.minor_status, application)
            .await;
    }

    let outcome = if matches!(last.status, "Done" | "Completed") {
        Outcome::Done
    } else {
        Outcome::Failed
    };
    if outcome == Outcome::Done
        && !ctx.keep_job_dirs
        && let Err(e) = tokio::fs::remove_dir_all(&job_dir).await
    {
        tracing::warn!(job_id, error = %e, "cannot remove the job directory");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses() {
        let check = |code, stop, out_failed, want: (&str, &str, &str)| {
            let got = final_status(code, stop, out_failed);
            assert_eq!(
                (
                    got.status,
                    got.minor_status,
                    got.application_status.as_str()
                ),
                want,
                "{code} {stop:?} {out_failed}"
            );
        };
        check(
            0,
            None,
            false,
            (
                "Done",
                "Execution Complete",
                "Application Finished Successfully",
            ),
        );
        check(
            3,
            None,
            false,
            ("Failed", "Application Finished With Errors", "Exit code 3"),
        );
        check(
            0,
            None,
            true,
            (
                "Failed",
                "Failed Uploading Output Sandbox",
                "Application Finished Successfully",
            ),
        );
        check(
            143,
            Some(Stop::WallClock),
            false,
            (
                "Failed",
                "Job has exceeded maximum wall clock time",
                "Exit code 143",
            ),
        );
        check(
            143,
            Some(Stop::KillCommand),
            false,
            ("", "Received Kill signal", "Exit code 143"),
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
    }

    #[test]
    fn contained_paths() {
        assert_eq!(contained("a/b.txt"), Some(PathBuf::from("a/b.txt")));
        assert_eq!(contained("./x"), Some(PathBuf::from("./x")));
        for bad in ["/etc/passwd", "../x", "a/../../x", "", "."] {
            assert_eq!(contained(bad), None, "{bad}");
        }
    }

    #[test]
    fn environment_is_clean_and_complete() {
        let env = payload_env(
            42,
            "DIRAC.Test.org",
            4,
            Path::new("/w/42"),
            &OsString::from("/usr/bin:/bin"),
            &[("OMP_NUM_THREADS".to_owned(), "2".to_owned())],
        );
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        };
        assert_eq!(get("PATH").as_deref(), Some("/usr/bin:/bin"));
        assert_eq!(get("HOME").as_deref(), Some("/w/42"));
        assert_eq!(get("DIRACJOBID").as_deref(), Some("42"));
        assert_eq!(get("DIRAC_SITE").as_deref(), Some("DIRAC.Test.org"));
        assert_eq!(get("NCPUS").as_deref(), Some("4"));
        assert_eq!(get("OMP_NUM_THREADS").as_deref(), Some("2"));
        assert_eq!(
            env.iter().filter(|(k, _)| k == "OMP_NUM_THREADS").count(),
            1
        );
        assert!(get("DIRAC_PILOT_TOKEN").is_none());
    }

    #[test]
    fn executables() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("run.sh"), "#!/bin/sh\n").expect("write");
        let local = resolve_executable("run.sh", dir.path());
        assert_eq!(local, dir.path().join("run.sh"));
        let mode = std::fs::metadata(&local)
            .expect("meta")
            .permissions()
            .mode();
        assert_ne!(mode & 0o100, 0, "made executable");
        assert_eq!(
            resolve_executable("echo", dir.path()),
            PathBuf::from("echo")
        );
        assert_eq!(
            resolve_executable("./bin/x", dir.path()),
            dir.path().join("./bin/x")
        );
        assert_eq!(
            resolve_executable("/bin/sh", dir.path()),
            PathBuf::from("/bin/sh")
        );
    }
}
