//! Everything the pilot tells the server, each call retried with backoff
//! when the failure looks transient.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use dirac_client::Client;
use dirac_proto::wms::{
    AppendPilotLogRequest, Heartbeat, HeartbeatRequest, JobCommand, JobParameter, Pilot,
    RegisterPilotsRequest, RequestJobRequest, RequestJobResponse, ResourceDescription,
    SetJobParametersRequest, SetJobStatusRequest, SetPilotStatusRequest, StatusUpdate,
};
use tonic::{Code, Status};

/// The `Source` of every status update the job wrapper sends.
pub const SOURCE: &str = "JobWrapper";

/// How often and how patiently a call is retried.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts, the first one included.
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base: Duration::from_millis(500),
            max: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (0 for the first retry): doubling
    /// from `base`, capped at `max`.
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(16));
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// Whether a failed call may succeed when tried again.
pub fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Internal
            | Code::ResourceExhausted
            | Code::Aborted
    )
}

/// Runs `call` until it succeeds, fails for good, or runs out of attempts.
pub async fn with_retry<T, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    mut call: F,
) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut retry = 0;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(status) if is_transient(status.code()) && retry + 1 < policy.attempts => {
                let delay = policy.delay(retry);
                tracing::warn!(
                    call = what,
                    code = ?status.code(),
                    error = status.message(),
                    retry_in_ms = delay.as_millis() as u64,
                    "server call failed, retrying"
                );
                tokio::time::sleep(delay).await;
                retry += 1;
            }
            Err(status) => return Err(status),
        }
    }
}

/// Now as a protobuf timestamp.
pub fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

/// The pilot's view of the server.
#[derive(Clone, Debug)]
pub struct Reporter {
    client: Client,
    policy: RetryPolicy,
}

impl Reporter {
    pub fn new(client: Client, policy: RetryPolicy) -> Self {
        Self { client, policy }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// Registers the pilot; an `AlreadyExists` refusal (a SiteDirector
    /// registered it) is fine.
    pub async fn register_pilot(&self, pilot: Pilot) -> Result<(), Status> {
        let stamp = pilot.stamp.clone();
        let response = with_retry(self.policy, "RegisterPilots", || {
            let request = RegisterPilotsRequest {
                pilots: vec![pilot.clone()],
            };
            let mut stub = self.client.pilot_manager();
            async move { stub.register_pilots(request).await }
        })
        .await?
        .into_inner();
        match response.failed.get(&stamp) {
            None => Ok(()),
            Some(item) if item.code == "AlreadyExists" => {
                tracing::info!(stamp, "pilot already registered");
                Ok(())
            }
            Some(item) => Err(Status::new(
                code_from_name(&item.code),
                format!("pilot registration refused: {}", item.message),
            )),
        }
    }

    pub async fn set_pilot_status(
        &self,
        stamp: &str,
        status: &str,
        reason: &str,
    ) -> Result<(), Status> {
        with_retry(self.policy, "SetPilotStatus", || {
            let request = SetPilotStatusRequest {
                stamp: stamp.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
            };
            let mut stub = self.client.pilot_manager();
            async move { stub.set_pilot_status(request).await }
        })
        .await
        .map(|_| ())
    }

    pub async fn append_pilot_log(&self, stamp: &str, text: String) -> Result<(), Status> {
        with_retry(self.policy, "AppendPilotLog", || {
            let request = AppendPilotLogRequest {
                stamp: stamp.to_owned(),
                text: text.clone(),
            };
            let mut stub = self.client.pilot_manager();
            async move { stub.append_pilot_log(request).await }
        })
        .await
        .map(|_| ())
    }

    /// One match attempt (not retried: the agent loop is the retry).
    pub async fn request_job(
        &self,
        resource: ResourceDescription,
    ) -> Result<RequestJobResponse, Status> {
        let request = RequestJobRequest {
            resource: Some(resource),
        };
        Ok(self
            .client
            .matcher()
            .request_job(request)
            .await?
            .into_inner())
    }

    /// Sets a job's status; empty fields are left unchanged by the server.
    /// The time is taken once, so that a retried update keeps its place.
    pub async fn set_job_status(
        &self,
        job_id: u64,
        status: &str,
        minor_status: &str,
        application_status: &str,
    ) -> Result<(), Status> {
        let update = StatusUpdate {
            job_id,
            time: Some(now()),
            status: status.to_owned(),
            minor_status: minor_status.to_owned(),
            application_status: application_status.to_owned(),
            source: SOURCE.to_owned(),
        };
        let response = with_retry(self.policy, "SetJobStatus", || {
            let request = SetJobStatusRequest {
                updates: vec![update.clone()],
                force: false,
            };
            let mut stub = self.client.job_state_update();
            async move { stub.set_job_status(request).await }
        })
        .await?
        .into_inner();
        if let Some(item) = response.failed.get(&job_id) {
            return Err(Status::new(
                code_from_name(&item.code),
                format!("status update refused: {}", item.message),
            ));
        }
        Ok(())
    }

    pub async fn set_job_parameters(
        &self,
        job_id: u64,
        parameters: &[(&str, String)],
    ) -> Result<(), Status> {
        let parameters: Vec<JobParameter> = parameters
            .iter()
            .map(|(name, value)| JobParameter {
                job_id,
                name: (*name).to_owned(),
                value: value.clone(),
            })
            .collect();
        let response = with_retry(self.policy, "SetJobParameters", || {
            let request = SetJobParametersRequest {
                parameters: parameters.clone(),
            };
            let mut stub = self.client.job_state_update();
            async move { stub.set_job_parameters(request).await }
        })
        .await?
        .into_inner();
        if let Some(item) = response.failed.get(&job_id) {
            return Err(Status::new(
                code_from_name(&item.code),
                format!("job parameters refused: {}", item.message),
            ));
        }
        Ok(())
    }

    /// Sends one heartbeat (not retried: the next one is the retry) and
    /// returns the commands for this job.
    pub async fn heartbeat(&self, heartbeat: Heartbeat) -> Result<Vec<JobCommand>, Status> {
        let job_id = heartbeat.job_id;
        let request = HeartbeatRequest {
            heartbeats: vec![heartbeat],
        };
        let response = self
            .client
            .job_state_update()
            .send_heartbeat(request)
            .await?
            .into_inner();
        if let Some(item) = response.failed.get(&job_id) {
            tracing::warn!(
                job_id,
                code = item.code,
                error = item.message,
                "heartbeat refused"
            );
        }
        Ok(commands_for(job_id, response.commands))
    }

    /// Assigns an uploaded output sandbox to its job.
    pub async fn assign_output_sandbox(&self, job_id: u64, pfn: &str) -> Result<(), Status> {
        let response = with_retry(self.policy, "AssignSandboxes", || {
            let request = dirac_proto::wms::AssignSandboxesRequest {
                job_id,
                kind: "Output".to_owned(),
                pfns: vec![pfn.to_owned()],
            };
            let mut stub = self.client.sandbox_store();
            async move { stub.assign_sandboxes(request).await }
        })
        .await?
        .into_inner();
        if let Some(item) = response.failed.get(&job_id) {
            return Err(Status::new(
                code_from_name(&item.code),
                format!("sandbox assignment refused: {}", item.message),
            ));
        }
        Ok(())
    }
}

/// The commands of one job among those a heartbeat returned.
pub fn commands_for(job_id: u64, commands: Vec<JobCommand>) -> Vec<JobCommand> {
    commands
        .into_iter()
        .filter(|c| c.job_id == job_id)
        .collect()
}

/// A gRPC code from its name as a bulk result's `ItemError` spells it.
pub fn code_from_name(name: &str) -> Code {
    let codes: HashMap<&str, Code> = [
        ("InvalidArgument", Code::InvalidArgument),
        ("NotFound", Code::NotFound),
        ("AlreadyExists", Code::AlreadyExists),
        ("PermissionDenied", Code::PermissionDenied),
        ("FailedPrecondition", Code::FailedPrecondition),
        ("Unauthenticated", Code::Unauthenticated),
        ("ResourceExhausted", Code::ResourceExhausted),
        ("Unavailable", Code::Unavailable),
        ("Internal", Code::Internal),
        ("Aborted", Code::Aborted),
        ("OutOfRange", Code::OutOfRange),
        ("Unimplemented", Code::Unimplemented),
    ]
    .into_iter()
    .collect();
    codes.get(name).copied().unwrap_or(Code::Unknown)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn delays_double_and_cap() {
        let p = RetryPolicy::default();
        let delays: Vec<u64> = (0..7).map(|r| p.delay(r).as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(p.delay(u32::MAX), p.max);
    }

    #[test]
    fn transient_codes() {
        assert!(is_transient(Code::Unavailable));
        assert!(!is_transient(Code::PermissionDenied));
        assert!(!is_transient(Code::InvalidArgument));
        assert_eq!(code_from_name("AlreadyExists"), Code::AlreadyExists);
        assert_eq!(code_from_name("Nonsense"), Code::Unknown);
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn retries_transient_failures_only() {
        let calls = AtomicU32::new(0);
        let result = with_retry(fast(), "t", || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(Status::unavailable("down"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.ok(), Some(2));

        let calls = AtomicU32::new(0);
        let result: Result<(), Status> = with_retry(fast(), "t", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(Status::unavailable("down")) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicU32::new(0);
        let result: Result<(), Status> = with_retry(fast(), "t", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(Status::permission_denied("no")) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn commands_are_filtered_by_job() {
        let cmd = |job_id: u64| JobCommand {
            job_id,
            command: "Kill".to_owned(),
            arguments: String::new(),
        };
        let got = commands_for(2, vec![cmd(1), cmd(2), cmd(3)]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].job_id, 2);
    }
}
