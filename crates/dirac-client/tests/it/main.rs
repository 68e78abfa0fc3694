//! The client against an in-process fake JobManager on loopback: the token
//! travels as a bearer header and replies come back intact.

use std::collections::HashMap;
use std::net::SocketAddr;

use dirac_client::{Client, ClientConfig};
use dirac_proto::common::{BulkResult, Ids, ItemError};
use dirac_proto::wms::job_manager_server::{JobManager, JobManagerServer};
use dirac_proto::wms::{
    RescheduleJobsRequest, SubmitJobsRequest, SubmitJobsResponse, SubmittedJob,
};
use tonic::{Request, Response, Status};

const TOKEN: &str = "header.payload.signature";

struct FakeManager;

fn authorize<T>(request: &Request<T>) -> Result<(), Status> {
    let header = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if header == Some(&format!("Bearer {TOKEN}")) {
        Ok(())
    } else {
        Err(Status::unauthenticated("missing or wrong token"))
    }
}

#[tonic::async_trait]
impl JobManager for FakeManager {
    async fn submit_jobs(
        &self,
        request: Request<SubmitJobsRequest>,
    ) -> Result<Response<SubmitJobsResponse>, Status> {
        authorize(&request)?;
        let request = request.into_inner();
        let jobs = (0..request.jdls.len())
            .map(|i| SubmittedJob {
                job_id: 100 + i as u64,
                status: "Received".to_owned(),
                minor_status: "Job accepted".to_owned(),
                submission_time: String::new(),
                jdl_index: u32::try_from(i).unwrap_or(u32::MAX),
            })
            .collect();
        Ok(Response::new(SubmitJobsResponse {
            jobs,
            replayed: !request.request_id.is_empty(),
        }))
    }

    async fn kill_jobs(&self, request: Request<Ids>) -> Result<Response<BulkResult>, Status> {
        authorize(&request)?;
        let (ok, bad): (Vec<u64>, Vec<u64>) = request
            .into_inner()
            .ids
            .into_iter()
            .partition(|id| id % 2 == 0);
        let failed: HashMap<u64, ItemError> = bad
            .into_iter()
            .map(|id| {
                (
                    id,
                    ItemError {
                        code: "NotFound".to_owned(),
                        message: format!("job {id} does not exist"),
                    },
                )
            })
            .collect();
        Ok(Response::new(BulkResult {
            succeeded: ok,
            failed,
        }))
    }

    async fn delete_jobs(&self, request: Request<Ids>) -> Result<Response<BulkResult>, Status> {
        authorize(&request)?;
        Err(Status::permission_denied("not yours"))
    }

    async fn reschedule_jobs(
        &self,
        request: Request<RescheduleJobsRequest>,
    ) -> Result<Response<BulkResult>, Status> {
        authorize(&request)?;
        Ok(Response::new(BulkResult::default()))
    }
}

async fn start() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(JobManagerServer::new(FakeManager))
            .serve_with_incoming(incoming),
    );
    addr
}

fn config(addr: SocketAddr, token: Option<&str>) -> ClientConfig {
    ClientConfig {
        url: format!("http://{addr}"),
        token: token.map(str::to_owned),
        ca_cert: None,
        auth_url: None,
    }
}

#[tokio::test]
async fn calls_carry_the_bearer_token() {
    let addr = start().await;
    let client = Client::connect(&config(addr, Some(TOKEN))).expect("client");
    let response = client
        .submit_jdls(vec!["[A=1;]".to_owned(), "[A=2;]".to_owned()], None)
        .await
        .expect("submit");
    let ids: Vec<_> = response
        .jobs
        .iter()
        .map(|j| (j.job_id, j.jdl_index))
        .collect();
    assert_eq!(ids, [(100, 0), (101, 1)]);
    assert!(!response.replayed);

    let replay = client
        .submit_jdls(vec!["[A=1;]".to_owned()], Some("r1".to_owned()))
        .await
        .expect("submit");
    assert!(replay.replayed);

    let bulk = client.kill_jobs(vec![2, 3, 4]).await.expect("kill");
    assert_eq!(bulk.succeeded, [2, 4]);
    assert_eq!(bulk.failed[&3].code, "NotFound");

    let status = client.delete_jobs(vec![1]).await.expect_err("denied");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn eager_connect_works_and_missing_token_is_unauthenticated() {
    let addr = start().await;
    let client = Client::connect_now(&config(addr, None))
        .await
        .expect("connect");
    let status = client.kill_jobs(vec![1]).await.expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}
