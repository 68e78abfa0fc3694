//! One channel to the server and the typed service stubs on top of it.

use std::time::Duration;

use dirac_proto::common::{BulkResult, Filter, Ids, Sort};
use dirac_proto::wms::job_manager_client::JobManagerClient;
use dirac_proto::wms::job_monitoring_client::JobMonitoringClient;
use dirac_proto::wms::job_state_update_client::JobStateUpdateClient;
use dirac_proto::wms::matcher_client::MatcherClient;
use dirac_proto::wms::pilot_manager_client::PilotManagerClient;
use dirac_proto::wms::sandbox_store_client::SandboxStoreClient;
use dirac_proto::wms::{
    GetHistoryResponse, GetJdlRequest, GetJobsResponse, Job, RescheduleJobsRequest,
    SearchJobsRequest, SearchJobsResponse, SubmitJobsRequest, SubmitJobsResponse, SummaryRequest,
    SummaryResponse,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status, Streaming};

use crate::{ClientConfig, ClientError};

/// Largest message sent or accepted (a search page or a big bulk submission).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Adds `authorization: Bearer <token>` to every call (nothing without a token).
#[derive(Clone, Default)]
pub struct AuthInterceptor {
    header: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for AuthInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthInterceptor")
            .field("token", &self.header.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl AuthInterceptor {
    /// Fails when the token cannot be an HTTP header value.
    pub fn new(token: Option<&str>) -> Result<Self, ClientError> {
        let header = match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => {
                if t.chars()
                    .any(|c| c.is_whitespace() || !c.is_ascii_graphic())
                {
                    return Err(ClientError::InvalidToken);
                }
                let mut value = MetadataValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| ClientError::InvalidToken)?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Self { header })
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// The channel every stub uses: the transport plus the token.
pub type AuthChannel = InterceptedService<Channel, AuthInterceptor>;
/// Submission, kill, delete, reschedule.
pub type JobManager = JobManagerClient<AuthChannel>;
/// Reads: jobs, JDL, history, search, summary.
pub type JobMonitoring = JobMonitoringClient<AuthChannel>;
/// Status reports from pilots and agents.
pub type JobStateUpdate = JobStateUpdateClient<AuthChannel>;
/// Hands waiting jobs to pilots.
pub type Matcher = MatcherClient<AuthChannel>;
/// Uploads, downloads and assigns sandboxes.
pub type SandboxStore = SandboxStoreClient<AuthChannel>;
/// Pilot registration, states and logs.
pub type PilotManager = PilotManagerClient<AuthChannel>;
/// The site mask stub.
pub type SiteMask = dirac_proto::wms::site_mask_client::SiteMaskClient<AuthChannel>;
/// The file catalog.
pub type FileCatalog = dirac_proto::dms::file_catalog_client::FileCatalogClient<AuthChannel>;
/// ReqManager stub with the auth interceptor.
pub type ReqManager = dirac_proto::rms::req_manager_client::ReqManagerClient<AuthChannel>;
/// The installation's storage elements (`dips`).
pub type StorageElement =
    dirac_proto::dms::storage_element_client::StorageElementClient<AuthChannel>;

/// A connection to one dirac-rs server. Cheap to clone; clones share the channel.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    auth: AuthInterceptor,
}

fn endpoint(config: &ClientConfig) -> Result<Endpoint, ClientError> {
    config.validate()?;
    let url = config.url.trim().to_owned();
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| ClientError::InvalidUrl {
            url: url.clone(),
            reason: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if config.is_tls() {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(path) = &config.ca_cert {
            let pem = std::fs::read(path).map_err(|source| ClientError::CaCertRead {
                path: path.clone(),
                source,
            })?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|source| ClientError::Tls { url, source })?;
    }
    Ok(endpoint)
}

impl Client {
    /// Builds a lazily connected client: nothing goes over the network until
    /// the first call, whose error then says why the server is unreachable.
    ///
    /// Must be called inside a tokio runtime.
    pub fn connect(config: &ClientConfig) -> Result<Self, ClientError> {
        let auth = AuthInterceptor::new(config.token.as_deref())?;
        let channel = endpoint(config)?.connect_lazy();
        Ok(Self { channel, auth })
    }

    /// Like [`Client::connect`] but opens the connection now (benchmarks keep
    /// the handshake out of their timings).
    pub async fn connect_now(config: &ClientConfig) -> Result<Self, ClientError> {
        let auth = AuthInterceptor::new(config.token.as_deref())?;
        let channel = endpoint(config)?
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                url: config.url.trim().to_owned(),
                source,
            })?;
        Ok(Self { channel, auth })
    }

    /// The same connection, calling with another token (a pilot acting
    /// with a job's token).
    pub fn with_token(&self, token: &str) -> Result<Self, ClientError> {
        Ok(Self {
            channel: self.channel.clone(),
            auth: AuthInterceptor::new(Some(token))?,
        })
    }

    fn intercepted(&self) -> AuthChannel {
        InterceptedService::new(self.channel.clone(), self.auth.clone())
    }

    /// The JobManager stub.
    pub fn job_manager(&self) -> JobManager {
        JobManagerClient::new(self.intercepted())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// The JobMonitoring stub.
    pub fn job_monitoring(&self) -> JobMonitoring {
        JobMonitoringClient::new(self.intercepted())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// The JobStateUpdate stub.
    pub fn job_state_update(&self) -> JobStateUpdate {
        JobStateUpdateClient::new(self.intercepted())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// The Matcher stub.
    pub fn matcher(&self) -> Matcher {
        MatcherClient::new(self.intercepted())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// The SandboxStore stub.
    pub fn sandbox_store(&self) -> SandboxStore {
        SandboxStoreClient::new(self.intercepted())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// The PilotManager stub.
    pub fn pilot_manager(&self) -> PilotManager {
        PilotManagerClient::new(self.intercepted())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// The SiteMask stub.
    pub fn site_mask(&self) -> SiteMask {
        dirac_proto::wms::site_mask_client::SiteMaskClient::new(self.intercepted())
    }

    /// The FileCatalog stub.
    pub fn file_catalog(&self) -> FileCatalog {
        FileCatalog::new(self.intercepted())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// The ReqManager stub.
    pub fn req_manager(&self) -> ReqManager {
        ReqManager::new(self.intercepted())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// The StorageElement stub.
    pub fn storage_element(&self) -> StorageElement {
        StorageElement::new(self.intercepted())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// Submits JDL texts in one call; `request_id` makes a retry idempotent.
    pub async fn submit_jdls(
        &self,
        jdls: Vec<String>,
        request_id: Option<String>,
    ) -> Result<SubmitJobsResponse, Status> {
        let request = SubmitJobsRequest {
            jdls,
            request_id: request_id.unwrap_or_default(),
        };
        Ok(self.job_manager().submit_jobs(request).await?.into_inner())
    }

    /// Kills jobs.
    pub async fn kill_jobs(&self, ids: Vec<u64>) -> Result<BulkResult, Status> {
        Ok(self
            .job_manager()
            .kill_jobs(Ids { ids })
            .await?
            .into_inner())
    }

    /// Deletes jobs.
    pub async fn delete_jobs(&self, ids: Vec<u64>) -> Result<BulkResult, Status> {
        Ok(self
            .job_manager()
            .delete_jobs(Ids { ids })
            .await?
            .into_inner())
    }

    /// Reschedules jobs, optionally resetting their reschedule counters.
    pub async fn reschedule_jobs(
        &self,
        job_ids: Vec<u64>,
        reset_counter: bool,
    ) -> Result<BulkResult, Status> {
        let request = RescheduleJobsRequest {
            job_ids,
            reset_counter,
        };
        Ok(self
            .job_manager()
            .reschedule_jobs(request)
            .await?
            .into_inner())
    }

    /// Attributes of the given jobs, and why the others could not be read.
    pub async fn get_jobs(&self, ids: Vec<u64>) -> Result<GetJobsResponse, Status> {
        Ok(self
            .job_monitoring()
            .get_jobs(Ids { ids })
            .await?
            .into_inner())
    }

    /// The JDL of one job, as stored or (`original`) as submitted.
    pub async fn get_jdl(&self, job_id: u64, original: bool) -> Result<String, Status> {
        let request = GetJdlRequest { job_id, original };
        Ok(self
            .job_monitoring()
            .get_jdl(request)
            .await?
            .into_inner()
            .jdl)
    }

    /// Status history of the given jobs.
    pub async fn get_history(&self, ids: Vec<u64>) -> Result<GetHistoryResponse, Status> {
        Ok(self
            .job_monitoring()
            .get_history(Ids { ids })
            .await?
            .into_inner())
    }

    /// One page of a search.
    pub async fn search_jobs(
        &self,
        filters: Vec<Filter>,
        sort: Vec<Sort>,
        limit: u32,
        offset: u64,
    ) -> Result<SearchJobsResponse, Status> {
        let request = SearchJobsRequest {
            filters,
            sort,
            limit,
            offset,
        };
        Ok(self
            .job_monitoring()
            .search_jobs(request)
            .await?
            .into_inner())
    }

    /// Every job matching the filters, collected from the streaming call.
    pub async fn stream_all_jobs(
        &self,
        filters: Vec<Filter>,
        sort: Vec<Sort>,
    ) -> Result<Vec<Job>, Status> {
        let request = SearchJobsRequest {
            filters,
            sort,
            limit: 0,
            offset: 0,
        };
        let mut stream: Streaming<Job> = self
            .job_monitoring()
            .stream_jobs(request)
            .await?
            .into_inner();
        let mut jobs = Vec::new();
        while let Some(job) = stream.message().await? {
            jobs.push(job);
        }
        Ok(jobs)
    }

    /// Job counts grouped by the given attributes.
    pub async fn summary(
        &self,
        grouping: Vec<String>,
        filters: Vec<Filter>,
    ) -> Result<SummaryResponse, Status> {
        let request = SummaryRequest { grouping, filters };
        Ok(self.job_monitoring().summary(request).await?.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, token: Option<&str>) -> ClientConfig {
        ClientConfig {
            url: url.to_owned(),
            token: token.map(str::to_owned),
            ca_cert: None,
            auth_url: None,
        }
    }

    #[test]
    fn interceptor_adds_bearer_header() {
        let mut auth = AuthInterceptor::new(Some(" abc.def ")).expect("token");
        let request = auth.call(Request::new(())).expect("intercept");
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        assert_eq!(header, Some("Bearer abc.def"));

        let mut none = AuthInterceptor::new(None).expect("no token");
        let request = none.call(Request::new(())).expect("intercept");
        assert!(request.metadata().get("authorization").is_none());
    }

    #[test]
    fn bad_tokens_are_refused_without_echo() {
        for token in ["a b", "caf\u{e9}", "line\nbreak"] {
            let err = AuthInterceptor::new(Some(token)).expect_err(token);
            assert!(!err.to_string().contains(token));
        }
    }

    #[tokio::test]
    async fn connect_is_lazy_and_checks_config() {
        assert!(Client::connect(&config("http://127.0.0.1:1", Some("t"))).is_ok());
        assert!(matches!(
            Client::connect(&config("", None)),
            Err(ClientError::NoUrl { .. })
        ));
        let mut tls = config("https://localhost:1", None);
        tls.ca_cert = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            Client::connect(&tls),
            Err(ClientError::CaCertRead { .. })
        ));
    }

    #[tokio::test]
    async fn unreachable_server_is_a_status() {
        let client = Client::connect(&config("http://127.0.0.1:1", None)).expect("client");
        let status = client.get_jobs(vec![1]).await.expect_err("no server");
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
}
