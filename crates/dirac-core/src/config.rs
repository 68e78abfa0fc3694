//! The installation's configuration: one YAML file (`dirac.yaml`) with DIRAC's
//! concepts — `Registry`, `Resources`, `Operations`, `Services` — overridable
//! from the environment and validated at start with errors naming the key.
//!
//! Environment overrides: `DIRAC__<SECTION>__<KEY>…=value` sets one key; the
//! path is matched case-insensitively against the known keys and the value is
//! read as YAML (`DIRAC__OPERATIONS__JOBSCHEDULING__MAXRESCHEDULING=5`). The
//! environment is read through [`EnvSource`] so tests inject their own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

/// DIRAC security properties known to the installation.
pub const KNOWN_PROPERTIES: &[&str] = &[
    "TrustedHost",
    "NormalUser",
    "CSAdministrator",
    "JobSharing",
    "ServiceAdministrator",
    "JobAdministrator",
    "JobMonitor",
    "AccountingMonitor",
    "Pilot",
    "GenericPilot",
    "SiteManager",
    "UserManager",
    "Operator",
    "FullDelegation",
    "LimitedDelegation",
    "PrivateLimitedDelegation",
    "ProxyManagement",
    "ProductionManagement",
    "ProductionSharing",
    "ProductionUser",
    "PPGAuthority",
    "BookkeepingManagement",
    "AlarmsManagement",
    "FileCatalogManagement",
    "StageAllowed",
];

/// Where environment variables come from.
pub trait EnvSource: Send + Sync {
    /// Every `(name, value)` pair.
    fn vars(&self) -> Vec<(String, String)>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

/// A fixed set of variables, for tests.
impl EnvSource for BTreeMap<String, String> {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid YAML: {source}")]
    Yaml {
        path: String,
        source: serde_yaml_ng::Error,
    },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DiracConfig {
    #[serde(default)]
    pub registry: Registry,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub operations: Operations,
    #[serde(default)]
    pub services: Services,
}

/// Who may use the installation: VOs, their users and groups.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Registry {
    #[serde(default, rename = "VOs")]
    pub vos: BTreeMap<String, VoConfig>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct VoConfig {
    pub default_group: String,
    /// The VO's identity provider: users log in there (federation).
    #[serde(default, rename = "IdP")]
    pub idp: Option<IdpConfig>,
    /// Users keyed by user name (DIRAC's PreferedUsername).
    #[serde(default)]
    pub users: BTreeMap<String, UserConfig>,
    #[serde(default)]
    pub groups: BTreeMap<String, GroupConfig>,
}

/// An OpenID Connect identity provider of a VO.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct IdpConfig {
    /// Issuer URL (its `/.well-known/openid-configuration` is read).
    #[serde(rename = "URL")]
    pub url: String,
    #[serde(rename = "ClientID")]
    pub client_id: String,
    /// File holding the client secret (kept out of the configuration).
    pub client_secret_file: Option<PathBuf>,
    /// ID-token claim listing the user's groups (`wlcg.groups`; for EGI
    /// Check-In `eduperson_entitlement`).
    #[serde(default = "default_group_claim")]
    pub group_claim: String,
}

fn default_group_claim() -> String {
    "wlcg.groups".into()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct UserConfig {
    /// Subject at the VO's identity provider.
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub suspended: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct GroupConfig {
    #[serde(default)]
    pub properties: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default = "default_job_share")]
    pub job_share: u64,
    /// The IdP group-claim value that makes a user a member (federation),
    /// e.g. `/dteam/admin`; such users need not be listed in `Users`.
    #[serde(default, rename = "IdPRole")]
    pub idp_role: Option<String>,
}

fn default_job_share() -> u64 {
    1000
}

/// Computing and storage resources.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub sites: BTreeMap<String, SiteConfig>,
    #[serde(default, rename = "StorageElements")]
    pub storage_elements: BTreeMap<String, StorageElementConfig>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SiteConfig {
    #[serde(default, rename = "CEs")]
    pub ces: BTreeMap<String, CeConfig>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CeConfig {
    /// Connector: local, htcondorce, arc, openstack, kubernetes, slurm, ssh.
    #[serde(rename = "CEType")]
    pub ce_type: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// `ssh` and `slurm` CEs reached over SSH: the login (default: the
    /// agent's user), port (22), private key and known-hosts file.
    #[serde(default, rename = "SSHUser")]
    pub ssh_user: Option<String>,
    #[serde(default, rename = "SSHPort")]
    pub ssh_port: Option<u16>,
    #[serde(default, rename = "SSHKey")]
    pub ssh_key: Option<PathBuf>,
    #[serde(default, rename = "SSHKnownHosts")]
    pub ssh_known_hosts: Option<PathBuf>,
    /// Batch system behind an `ssh` CE: `Host` (processes on the host,
    /// default) or `Slurm`. A `slurm` CE is Slurm, over SSH when `Host` is set.
    #[serde(default)]
    pub batch_system: Option<String>,
    /// Directory on the CE's side for pilot wrappers and outputs (default
    /// `$HOME/dirac-pilots`; the data directory for the local CE).
    #[serde(default)]
    pub work_dir: Option<String>,
    /// `kubernetes` CEs: the namespace pilots run in (default `default`),
    /// the image (it needs bash, curl or wget, and sha256sum), the service
    /// account, node selector, seconds finished Jobs are kept (600) and a
    /// kubeconfig file (default: in-cluster or `$KUBECONFIG`).
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub service_account: Option<String>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, rename = "TTLSecondsAfterFinished")]
    pub ttl_seconds_after_finished: Option<u32>,
    #[serde(default)]
    pub kube_config: Option<PathBuf>,
    /// Service port of `arc` (443) and `htcondorce` (9619) CEs.
    #[serde(default)]
    pub port: Option<u16>,
    /// `arc`: CA bundle to trust, and an X.509 client certificate and key
    /// (PEM) when the CE is not given a token.
    #[serde(default, rename = "CAFile")]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// `arc` and `htcondorce`: audience of the WLCG token the TokenManager
    /// mints for pilot submission (default `https://<Host>:<Port>`).
    #[serde(default)]
    pub token_audience: Option<String>,
    /// `arc` and `htcondorce`: a file holding the token, kept fresh by
    /// something else (default: the TokenManager, from the VO's IdP).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `ssh`: push mode (DIRAC's PushJobAgent) for sites whose worker nodes
    /// cannot reach the services: pilots run on the SiteDirector's host and
    /// send each payload, with its job directory, to `Host` over SSH.
    #[serde(default)]
    pub push_mode: bool,
    /// `htcondorce`: submit to the local schedd rather than the CE's.
    #[serde(default)]
    pub use_local_schedd: bool,
    /// `openstack`: Keystone v3 URL, and either a user (name, domain,
    /// password file, project, project domain) or an application
    /// credential (id, secret file); flavor, network, region, key pair and
    /// the lifetime after which a VM is deleted whatever it does (seconds,
    /// default 2 days).
    #[serde(default, rename = "KeystoneURL")]
    pub keystone_url: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub user_domain: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub project_domain: Option<String>,
    #[serde(default, rename = "AppCredentialID")]
    pub app_credential_id: Option<String>,
    #[serde(default)]
    pub app_credential_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub flavor: Option<String>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub key_name: Option<String>,
    #[serde(default)]
    pub max_lifetime: Option<u64>,
    #[serde(default)]
    pub queues: BTreeMap<String, QueueConfig>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct QueueConfig {
    #[serde(default, rename = "maxCPUTime")]
    pub max_cpu_time: u64,
    #[serde(default)]
    pub max_total_jobs: u64,
    #[serde(default)]
    pub max_waiting_jobs: u64,
    #[serde(default)]
    pub number_of_processors: u64,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub platform: Option<String>,
    /// Memory per pilot slot, MB (0: unknown).
    #[serde(default, rename = "MaxRAM")]
    pub max_ram: u64,
}

/// A storage element: where it is (its site), how it is reached (protocol
/// sections in preference order) and what it may be used for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct StorageElementConfig {
    /// The site the SE belongs to: jobs with input data on it may run there.
    #[serde(default)]
    pub site: Option<String>,
    /// Protocol sections; reads and writes try them in this order unless
    /// `AccessProtocols`/`WriteProtocols` say otherwise.
    pub protocols: Vec<SeProtocolConfig>,
    /// Protocols for reading, in preference order (default: all).
    #[serde(default)]
    pub access_protocols: Vec<String>,
    /// Protocols for writing and removing, in preference order (default: all).
    #[serde(default)]
    pub write_protocols: Vec<String>,
    #[serde(default)]
    pub read_access: SeAccess,
    #[serde(default)]
    pub write_access: SeAccess,
    /// Where a `{"Total": bytes, "Free": bytes}` JSON document sits on the
    /// storage, for protocols that cannot tell free space themselves
    /// (default `/<vo>/occupancy.json`).
    #[serde(default, rename = "OccupancyLFN")]
    pub occupancy_lfn: Option<String>,
}

/// DIRAC's SE access flags.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum SeAccess {
    #[default]
    Active,
    /// Usable, but chosen last.
    Degraded,
    Banned,
}

/// One protocol section of a storage element. The physical name of a file
/// is `<protocol>://<host>:<port><path>/<lfn>` (DIRAC's convention).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SeProtocolConfig {
    /// `file` (a directory of the server, served to clients as `dips`),
    /// `dips` (the installation's StorageElement service), `root`, `https`,
    /// `s3`.
    pub protocol: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// Base path: a directory for `file`, the export prefix for `root` and
    /// `https`, the bucket (and optional prefix) for `s3`.
    #[serde(default)]
    pub path: String,
    /// `s3`: the endpoint URL (`https://s3.example.org`, or
    /// `http://127.0.0.1:9000`; default AWS), region (default us-east-1)
    /// and files holding the access key id and the secret key.
    #[serde(default, rename = "EndpointURL")]
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub access_key_file: Option<PathBuf>,
    #[serde(default)]
    pub secret_key_file: Option<PathBuf>,
    /// `https`: a CA bundle to trust besides the system roots.
    #[serde(default, rename = "CAFile")]
    pub ca_file: Option<PathBuf>,
    /// `https` and `root`: a WLCG bearer token for the storage, in a file
    /// kept fresh by something else; read again for every transfer.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// Protocols a storage-element section may name.
pub const SE_PROTOCOLS: [&str; 5] = ["file", "dips", "root", "https", "s3"];

/// Operational policy: JDL defaults and limits, scheduling.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Operations {
    #[serde(default)]
    pub job_description: JobDescriptionOps,
    #[serde(default)]
    pub job_scheduling: JobSchedulingOps,
    #[serde(default)]
    pub data_management: DataManagementOps,
}

/// Data management policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub struct DataManagementOps {
    /// Storage elements a job's output goes to when none of its OutputSE
    /// takes it (DIRAC's Tier1-Failover group); a request then moves it
    /// where it belongs.
    #[serde(rename = "FailoverSEs")]
    pub failover_ses: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub struct JobDescriptionOps {
    #[serde(rename = "DefaultCPUTime")]
    pub default_cpu_time: i64,
    #[serde(rename = "MinCPUTime")]
    pub min_cpu_time: i64,
    #[serde(rename = "MaxCPUTime")]
    pub max_cpu_time: i64,
    pub default_priority: i64,
    pub max_priority: i64,
    pub max_input_data: usize,
    pub allowed_job_types: Vec<String>,
    pub max_number_of_processors: i64,
    /// Known platforms; empty means any.
    pub platforms: Vec<String>,
    /// Jobs one parametric JDL may expand into.
    pub max_parametric_jobs: usize,
    /// Jobs one submission request may create in all.
    pub max_jobs_per_request: usize,
    /// Bytes of one JDL.
    #[serde(rename = "MaxJDLSize")]
    pub max_jdl_size: usize,
}

impl Default for JobDescriptionOps {
    /// DIRAC's defaults, which the JDL validator owns.
    fn default() -> Self {
        let p = dirac_jdl::Policy::default();
        Self {
            default_cpu_time: p.default_cpu_time,
            min_cpu_time: p.min_cpu_time,
            max_cpu_time: p.max_cpu_time,
            default_priority: p.default_priority,
            max_priority: p.max_priority,
            max_input_data: p.max_input_data,
            allowed_job_types: p.allowed_job_types,
            max_number_of_processors: p.max_processors,
            platforms: p.platforms,
            max_parametric_jobs: p.max_parametric_jobs,
            max_jobs_per_request: 20_000,
            max_jdl_size: 64 * 1024,
        }
    }
}

impl JobDescriptionOps {
    /// The validator's policy under these operations settings.
    pub fn jdl_policy(&self) -> dirac_jdl::Policy {
        dirac_jdl::Policy {
            default_cpu_time: self.default_cpu_time,
            min_cpu_time: self.min_cpu_time,
            max_cpu_time: self.max_cpu_time,
            default_priority: self.default_priority,
            max_priority: self.max_priority,
            max_input_data: self.max_input_data,
            allowed_job_types: self.allowed_job_types.clone(),
            max_processors: self.max_number_of_processors,
            platforms: self.platforms.clone(),
            max_parametric_jobs: self.max_parametric_jobs,
            ..dirac_jdl::Policy::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub struct JobSchedulingOps {
    pub max_rescheduling: u32,
    /// Seconds a rescheduled job is held, indexed by its reschedule count.
    pub reschedule_delays: Vec<u64>,
    /// `RunningLimit.<Site>.JobType.<Value>: N`: at most N Running, Matched or
    /// Stalled jobs of that type at the site.
    pub running_limit: BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>,
    /// `MatchingDelay.<Site>.JobType.<Value>: seconds` between two matches of
    /// that type at the site.
    pub matching_delay: BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>,
}

impl Default for JobSchedulingOps {
    fn default() -> Self {
        Self {
            max_rescheduling: 3,
            reschedule_delays: vec![60, 180, 300, 600],
            running_limit: BTreeMap::new(),
            matching_delay: BTreeMap::new(),
        }
    }
}

/// How the services run: addresses, databases, TLS, token verification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub struct Services {
    pub listen: String,
    /// URL clients use to reach the services (written into client.yaml).
    #[serde(rename = "PublicURL")]
    pub public_url: Option<String>,
    pub databases: Databases,
    #[serde(rename = "RedisURL")]
    pub redis_url: Option<String>,
    pub tls: Option<TlsConfig>,
    pub auth: AuthConfig,
    pub sandbox_store: SandboxStoreConfig,
    pub agents: AgentsConfig,
    pub site_director: SiteDirectorConfig,
    /// The RequestExecutingAgent and the ReqDB cleaner.
    pub requests: RequestsConfig,
    /// `json` (default) or `text`.
    pub log_format: String,
}

/// Request management agents (DIRAC's RequestExecutingAgent and
/// CleanReqDBAgent defaults).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub struct RequestsConfig {
    /// Requests one cycle claims.
    pub requests_per_cycle: u64,
    /// Requests one agent executes at once.
    pub concurrency: u64,
    /// Attempts per file before it fails.
    pub max_attempts: u32,
    /// Minutes between attempts instead of `2·ln(attempt)`.
    pub constant_request_delay: Option<u64>,
    /// Seconds between cycles.
    pub polling_time: u64,
    /// Hours an agent may hold a request before it goes back to Waiting.
    pub kick_grace_hours: u64,
    /// Days Done and Failed requests are kept.
    pub delete_grace_days: u64,
}

impl Default for RequestsConfig {
    fn default() -> Self {
        Self {
            requests_per_cycle: 100,
            concurrency: 20,
            max_attempts: 256,
            constant_request_delay: None,
            polling_time: 60,
            kick_grace_hours: 1,
            delete_grace_days: 60,
        }
    }
}

/// Settings of the agents (DIRAC's defaults).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// Seconds without any update before a Running/Completing job is Stalled
    /// (DIRAC: watchdog cycle 1800 s × (StalledTimeHours 2 + 0.5)).
    pub stalled_time_s: u64,
    /// Seconds a job may stay Stalled before it is Failed (1800 × 6.5).
    pub failed_time_s: u64,
    /// Seconds a job may stay Matched before it is rescheduled.
    pub matched_time_s: u64,
    /// Sites whose stalled jobs are rescheduled rather than failed.
    pub stalled_jobs_to_reschedule_sites: Vec<String>,
    /// Days after which Done / Failed / Killed jobs are marked Deleted.
    pub delete_done_after_days: u64,
    pub delete_failed_after_days: u64,
    pub delete_killed_after_days: u64,
    /// Days after which Deleted jobs are removed from the database.
    pub remove_deleted_after_days: u64,
    /// Seconds between agent cycles.
    pub polling_time_s: u64,
    /// Days a pilot may stay in a transient state without an update before
    /// the PilotStatus agent marks it Deleted (DIRAC's PilotStalledDays).
    pub pilot_stalled_days: u64,
    /// Days after which finished, accounted pilots are removed (Aborted
    /// ones sooner).
    pub clear_pilots_days: u64,
    pub clear_aborted_pilots_days: u64,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            stalled_time_s: 4500,
            failed_time_s: 11_700,
            matched_time_s: 7200,
            stalled_jobs_to_reschedule_sites: Vec::new(),
            delete_done_after_days: 7,
            delete_failed_after_days: 14,
            delete_killed_after_days: 7,
            remove_deleted_after_days: 1,
            polling_time_s: 60,
            pilot_stalled_days: 3,
            clear_pilots_days: 30,
            clear_aborted_pilots_days: 7,
        }
    }
}

/// The SiteDirector: which queues it feeds and how fast (DIRAC's defaults).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub struct SiteDirectorConfig {
    /// VO whose pilots are submitted (default: the registry's first).
    #[serde(rename = "VO")]
    pub vo: Option<String>,
    /// Sites and CE types served (empty: all).
    pub sites: Vec<String>,
    #[serde(rename = "CETypes")]
    pub ce_types: Vec<String>,
    /// Seconds between cycles (default 60; 2 in `diracd all`).
    pub polling_time: Option<u64>,
    /// At most this many pilots per queue and cycle (DIRAC's MaxPilotsToSubmit).
    pub max_pilots_per_cycle: u64,
    /// Ramp-up: the first cycle of a queue submits at most this many; each
    /// cycle after a successful submission doubles it up to the maximum.
    pub initial_pilots_per_cycle: u64,
    /// Cycles a queue is skipped after its CE failed (doubling on repeats,
    /// at most 8 times this).
    pub failed_queue_cycle_factor: u64,
    /// Pilot states are polled from the CEs every this many cycles.
    pub pilot_status_update_cycle_factor: u64,
    /// Seconds one CE call may take before the queue counts as failed.
    #[serde(rename = "CETimeout")]
    pub ce_timeout: u64,
    /// Seconds a pilot the CE does not know stays before it is Aborted.
    pub unknown_pilot_grace: u64,
    /// Queues handled at once (their CE calls overlap).
    pub concurrency: u64,
    /// Where the wrapper fetches `dirac-pilot`: an http(s) URL or a path on
    /// the worker node (CVMFS). Default: the AuthServer's `/pilot/dirac-pilot`,
    /// or the binary beside `diracd` for the local CE.
    #[serde(rename = "PilotURL")]
    pub pilot_url: Option<String>,
    /// Extra `dirac-pilot` options (`--max-cycles 10`, ...).
    pub pilot_options: Vec<String>,
}

impl Default for SiteDirectorConfig {
    fn default() -> Self {
        Self {
            vo: None,
            sites: Vec::new(),
            ce_types: Vec::new(),
            polling_time: None,
            max_pilots_per_cycle: 100,
            initial_pilots_per_cycle: 10,
            failed_queue_cycle_factor: 10,
            pilot_status_update_cycle_factor: 10,
            ce_timeout: 60,
            unknown_pilot_grace: 3600,
            concurrency: 100,
            pilot_url: None,
            pilot_options: Vec::new(),
        }
    }
}

/// Where sandboxes live and how large they may be.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub struct SandboxStoreConfig {
    /// Logical storage element name in `SB:<SE>|<path>` references.
    #[serde(rename = "SEName")]
    pub se_name: String,
    /// Directory of the local backend (default: DATA_DIR/sandboxes).
    pub base_path: Option<PathBuf>,
    #[serde(rename = "MaxSandboxSizeMiB")]
    pub max_sandbox_size_mib: u64,
    /// Days an unassigned sandbox is kept.
    pub unassigned_grace_days: u64,
}

impl Default for SandboxStoreConfig {
    fn default() -> Self {
        Self {
            se_name: "ProductionSandboxSE".into(),
            base_path: None,
            max_sandbox_size_mib: 100,
            unassigned_grace_days: 7,
        }
    }
}

impl Default for Services {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            databases: Databases::default(),
            redis_url: None,
            tls: None,
            auth: AuthConfig::default(),
            sandbox_store: SandboxStoreConfig::default(),
            agents: AgentsConfig::default(),
            site_director: SiteDirectorConfig::default(),
            requests: RequestsConfig::default(),
            log_format: "json".into(),
        }
    }
}

/// Database URLs: `sqlite://PATH`, `mysql://…`, `postgres://…`. Empty means
/// the embedded default (a SQLite file in the data directory).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub struct Databases {
    #[serde(rename = "JobDB")]
    pub job_db: Option<String>,
    /// The file catalog's database; JobDB's when unset.
    #[serde(rename = "FileCatalogDB")]
    pub file_catalog_db: Option<String>,
    /// The request database (ReqDB); JobDB's when unset.
    #[serde(rename = "ReqDB")]
    pub req_db: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `iss` of the installation's tokens.
    pub issuer: String,
    /// `aud` the services accept.
    pub audience: String,
    /// A JWKS document or an Ed25519 public key (PEM) to verify tokens with.
    /// Unset in the embedded installation, which signs its own tokens.
    pub verification_keys: Option<PathBuf>,
    /// Lifetime of the tokens the embedded installation signs, in seconds.
    pub token_lifetime: u64,
    /// Kind of signing key made when none exists (or on rotation):
    /// `EdDSA` (default) or `RS256`. Keys of both kinds verify side by side.
    pub signing_algorithm: crate::auth::SigningAlgorithm,
    /// Address of the AuthServer's HTTP endpoints (OAuth2/OIDC).
    pub http_listen: String,
    /// Public base URL of those endpoints (default `http://<HttpListen>`).
    #[serde(rename = "PublicURL")]
    pub public_url: Option<String>,
    /// Development login: any registered user logs in by name, no identity
    /// provider. For the embedded installation on a laptop only.
    pub dev_login: bool,
    /// Access token lifetime of `dirac login`, seconds.
    pub access_token_lifetime: u64,
    /// Refresh token lifetime, seconds.
    pub refresh_token_lifetime: u64,
    /// OAuth clients allowed the authorization-code flow, by client id.
    pub clients: BTreeMap<String, OAuthClientConfig>,
    /// The TokenManager's vault key (32 bytes, base64), which seals the
    /// IdP refresh tokens kept in AuthDB. In Kubernetes a mounted Secret;
    /// the embedded installation makes `DATA_DIR/token-vault.key`.
    pub token_vault_key_file: Option<PathBuf>,
    /// Directory of the installation's secrets, read and never made: the
    /// signing key `signing-key.pem` (every other `*.pem` there is a retired
    /// key that still verifies), `pilot-pepper` and `token-vault.key`. In Kubernetes a mounted Secret
    /// shared by every replica; unset, the embedded installation makes them
    /// once in its data directory.
    pub keys_dir: Option<PathBuf>,
}

/// An OAuth client of the authorization-code flow.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct OAuthClientConfig {
    /// Exact redirect URIs; a loopback `http://127.0.0.1/…` or
    /// `http://localhost/…` one allows any port (RFC 8252).
    #[serde(rename = "RedirectURIs")]
    pub redirect_uris: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "dirac-rs".into(),
            audience: "dirac-rs".into(),
            http_listen: "127.0.0.1:8081".into(),
            public_url: None,
            dev_login: false,
            access_token_lifetime: 1200,
            refresh_token_lifetime: 7 * 86_400,
            verification_keys: None,
            token_lifetime: 30 * 86_400,
            signing_algorithm: crate::auth::SigningAlgorithm::EdDSA,
            clients: BTreeMap::new(),
            token_vault_key_file: None,
            keys_dir: None,
        }
    }
}

impl DiracConfig {
    /// Read `path` (if given), apply the environment, validate.
    pub fn load(path: Option<&Path>, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?,
                p.display().to_string(),
            ),
            None => (String::new(), "<defaults>".to_string()),
        };
        Self::from_yaml(&text, &origin, env)
    }

    /// Parse YAML text, apply the environment, validate.
    pub fn from_yaml(text: &str, origin: &str, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut tree: Value = if text.trim().is_empty() {
            Value::Mapping(Mapping::new())
        } else {
            serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Yaml {
                path: origin.to_string(),
                source,
            })?
        };
        if !tree.is_mapping() {
            return Err(invalid("<root>", "the configuration must be a mapping"));
        }
        // Known keys come from the defaults so overrides of unset keys work.
        let defaults = serde_yaml_ng::to_value(DiracConfig::default())
            .map_err(|e| invalid("<root>", e.to_string()))?;
        apply_env(&mut tree, &defaults, env)?;
        let config: DiracConfig = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            invalid(
                if key == "." { "<root>".into() } else { key },
                e.into_inner().to_string(),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Check what types alone cannot: references between sections, bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (vo, voc) in &self.registry.vos {
            let base = format!("Registry.VOs.{vo}");
            if !voc.groups.contains_key(&voc.default_group) {
                return Err(invalid(
                    format!("{base}.DefaultGroup"),
                    format!("unknown group '{}'", voc.default_group),
                ));
            }
            for (group, gc) in &voc.groups {
                for user in &gc.users {
                    if !voc.users.contains_key(user) {
                        return Err(invalid(
                            format!("{base}.Groups.{group}.Users"),
                            format!("unknown user '{user}'"),
                        ));
                    }
                }
                for prop in &gc.properties {
                    if !KNOWN_PROPERTIES.contains(&prop.as_str()) {
                        return Err(invalid(
                            format!("{base}.Groups.{group}.Properties"),
                            format!("unknown property '{prop}'"),
                        ));
                    }
                }
            }
        }
        if let Some(se) = self
            .operations
            .data_management
            .failover_ses
            .iter()
            .find(|se| !self.resources.storage_elements.contains_key(*se))
        {
            return Err(invalid(
                "Operations.DataManagement.FailoverSEs".to_string(),
                format!("unknown storage element '{se}'"),
            ));
        }
        for (se, sec) in &self.resources.storage_elements {
            let base = format!("Resources.StorageElements.{se}");
            if sec.protocols.is_empty() {
                return Err(invalid(
                    format!("{base}.Protocols"),
                    "at least one protocol section is needed".to_string(),
                ));
            }
            for p in &sec.protocols {
                if !SE_PROTOCOLS.contains(&p.protocol.as_str()) {
                    return Err(invalid(
                        format!("{base}.Protocols"),
                        format!(
                            "unknown protocol '{}' (one of {})",
                            p.protocol,
                            SE_PROTOCOLS.join(", ")
                        ),
                    ));
                }
            }
            for (key, list) in [
                ("AccessProtocols", &sec.access_protocols),
                ("WriteProtocols", &sec.write_protocols),
            ] {
                if let Some(p) = list
                    .iter()
                    .find(|p| !sec.protocols.iter().any(|s| &s.protocol == *p))
                {
                    return Err(invalid(
                        format!("{base}.{key}"),
                        format!("'{p}' has no protocol section"),
                    ));
                }
            }
        }
        let jd = &self.operations.job_description;
        let jdk = "Operations.JobDescription";
        if jd.min_cpu_time > jd.max_cpu_time {
            return Err(invalid(
                format!("{jdk}.MinCPUTime"),
                "is larger than MaxCPUTime",
            ));
        }
        if jd.default_cpu_time < jd.min_cpu_time || jd.default_cpu_time > jd.max_cpu_time {
            return Err(invalid(
                format!("{jdk}.DefaultCPUTime"),
                format!("must lie within [{}, {}]", jd.min_cpu_time, jd.max_cpu_time),
            ));
        }
        if jd.default_priority < 0 || jd.default_priority > jd.max_priority {
            return Err(invalid(
                format!("{jdk}.DefaultPriority"),
                format!("must lie within [0, {}]", jd.max_priority),
            ));
        }
        if jd.allowed_job_types.is_empty() {
            return Err(invalid(
                format!("{jdk}.AllowedJobTypes"),
                "must not be empty",
            ));
        }
        for (key, v) in [
            ("MaxParametricJobs", jd.max_parametric_jobs),
            ("MaxJobsPerRequest", jd.max_jobs_per_request),
            ("MaxJDLSize", jd.max_jdl_size),
        ] {
            if v == 0 {
                return Err(invalid(format!("{jdk}.{key}"), "must be positive"));
            }
        }
        if self
            .operations
            .job_scheduling
            .reschedule_delays
            .iter()
            .any(|d| *d > 30 * 86_400)
        {
            return Err(invalid(
                "Operations.JobScheduling.RescheduleDelays",
                "a delay is longer than 30 days (2592000 s)",
            ));
        }
        if self.operations.job_scheduling.reschedule_delays.is_empty() {
            return Err(invalid(
                "Operations.JobScheduling.RescheduleDelays",
                "must list at least one delay",
            ));
        }
        if self
            .services
            .auth
            .http_listen
            .parse::<SocketAddr>()
            .is_err()
        {
            return Err(invalid(
                "Services.Auth.HttpListen",
                format!(
                    "'{}' is not an address like 127.0.0.1:8081",
                    self.services.auth.http_listen
                ),
            ));
        }
        if self.services.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "Services.Listen",
                format!(
                    "'{}' is not an address like 127.0.0.1:8080",
                    self.services.listen
                ),
            ));
        }
        if let Some(url) = &self.services.databases.job_db {
            crate::db::Backend::from_url(url)
                .map_err(|e| invalid("Services.Databases.JobDB", e.to_string()))?;
        }
        for (name, table) in [
            (
                "RunningLimit",
                &self.operations.job_scheduling.running_limit,
            ),
            (
                "MatchingDelay",
                &self.operations.job_scheduling.matching_delay,
            ),
        ] {
            for (site, attrs) in table {
                for attr in attrs.keys() {
                    if attr != "JobType" {
                        return Err(invalid(
                            format!("Operations.JobScheduling.{name}.{site}.{attr}"),
                            "only JobType limits are supported",
                        ));
                    }
                }
            }
        }
        let ag = &self.services.agents;
        if ag.polling_time_s == 0 || ag.stalled_time_s == 0 || ag.failed_time_s == 0 {
            return Err(invalid(
                "Services.Agents",
                "PollingTimeS, StalledTimeS and FailedTimeS must be positive",
            ));
        }
        let sb = &self.services.sandbox_store;
        if sb.max_sandbox_size_mib == 0 || sb.max_sandbox_size_mib > 100 * 1024 {
            return Err(invalid(
                "Services.SandboxStore.MaxSandboxSizeMiB",
                "must lie within [1, 102400]",
            ));
        }
        if sb.se_name.is_empty() || sb.se_name.contains('|') || sb.se_name.len() > 64 {
            return Err(invalid(
                "Services.SandboxStore.SEName",
                "must have 1 to 64 characters and no '|'",
            ));
        }
        let sd = &self.services.site_director;
        if sd.max_pilots_per_cycle == 0 || sd.initial_pilots_per_cycle == 0 {
            return Err(invalid(
                "Services.SiteDirector",
                "MaxPilotsPerCycle and InitialPilotsPerCycle must be at least 1",
            ));
        }
        if sd.ce_timeout == 0 || sd.pilot_status_update_cycle_factor == 0 {
            return Err(invalid(
                "Services.SiteDirector",
                "CETimeout and PilotStatusUpdateCycleFactor must be at least 1",
            ));
        }
        if !matches!(self.services.log_format.as_str(), "json" | "text") {
            return Err(invalid("Services.LogFormat", "must be 'json' or 'text'"));
        }
        for (site, sc) in &self.resources.sites {
            for (ce, cc) in &sc.ces {
                const TYPES: &[&str] = &[
                    "local",
                    "htcondorce",
                    "arc",
                    "openstack",
                    "kubernetes",
                    "slurm",
                    "ssh",
                ];
                if !TYPES.contains(&cc.ce_type.as_str()) {
                    return Err(invalid(
                        format!("Resources.Sites.{site}.CEs.{ce}.CEType"),
                        format!(
                            "unknown type '{}' (one of {})",
                            cc.ce_type,
                            TYPES.join(", ")
                        ),
                    ));
                }
                if let Some(bs) = &cc.batch_system
                    && !matches!(bs.as_str(), "Host" | "Slurm")
                {
                    return Err(invalid(
                        format!("Resources.Sites.{site}.CEs.{ce}.BatchSystem"),
                        format!("unknown batch system '{bs}' (Host or Slurm)"),
                    ));
                }
                if cc.ce_type == "openstack" {
                    let key = |k: &str| format!("Resources.Sites.{site}.CEs.{ce}.{k}");
                    if cc.keystone_url.is_none() {
                        return Err(invalid(
                            key("KeystoneURL"),
                            "an openstack CE needs Keystone",
                        ));
                    }
                    if cc.image.is_none() || cc.flavor.is_none() {
                        return Err(invalid(
                            key("Image"),
                            "an openstack CE needs Image and Flavor",
                        ));
                    }
                    let password =
                        cc.user.is_some() && cc.password_file.is_some() && cc.project.is_some();
                    let app =
                        cc.app_credential_id.is_some() && cc.app_credential_secret_file.is_some();
                    if !password && !app {
                        return Err(invalid(
                            key("AppCredentialID"),
                            "an openstack CE needs User, PasswordFile and Project, or AppCredentialID and AppCredentialSecretFile",
                        ));
                    }
                }
                if matches!(cc.ce_type.as_str(), "arc" | "htcondorce") && cc.host.is_none() {
                    return Err(invalid(
                        format!("Resources.Sites.{site}.CEs.{ce}.Host"),
                        format!("an {} CE needs a host", cc.ce_type),
                    ));
                }
                if cc.ce_type == "kubernetes" && cc.image.is_none() {
                    return Err(invalid(
                        format!("Resources.Sites.{site}.CEs.{ce}.Image"),
                        "a kubernetes CE needs the pilot image",
                    ));
                }
                if cc.push_mode && cc.ce_type != "ssh" {
                    return Err(invalid(
                        format!("Resources.Sites.{site}.CEs.{ce}.PushMode"),
                        "push mode is for ssh CEs",
                    ));
                }
                if cc.ce_type == "ssh" && cc.host.is_none() {
                    return Err(invalid(
                        format!("Resources.Sites.{site}.CEs.{ce}.Host"),
                        "an ssh CE needs a host",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The groups `user` of `vo` belongs to.
    pub fn groups_of<'a>(&'a self, vo: &str, user: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.registry
            .vos
            .get(vo)
            .into_iter()
            .flat_map(|v| v.groups.iter())
            .filter(move |(_, g)| g.users.iter().any(|u| u == user))
            .map(|(name, _)| name.as_str())
    }
}

const ENV_PREFIX: &str = "DIRAC__";

fn apply_env(tree: &mut Value, defaults: &Value, env: &dyn EnvSource) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .vars()
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (var, raw) in vars {
        let segments: Vec<&str> = var[ENV_PREFIX.len()..].split("__").collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(ConfigError::Env {
                var,
                message: "empty key segment".into(),
            });
        }
        let value: Value = serde_yaml_ng::from_str(&raw).unwrap_or(Value::String(raw.clone()));
        set_path(tree, Some(defaults), &segments, value).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
    }
    Ok(())
}

fn find_key(map: &Mapping, segment: &str) -> Option<Value> {
    map.keys()
        .find(|k| k.as_str().is_some_and(|s| s.eq_ignore_ascii_case(segment)))
        .cloned()
}

fn set_path(
    node: &mut Value,
    defaults: Option<&Value>,
    segments: &[&str],
    value: Value,
) -> Result<(), String> {
    let Some((first, rest)) = segments.split_first() else {
        *node = value;
        return Ok(());
    };
    if node.is_null() {
        *node = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(map) = node else {
        return Err(format!("'{first}' is below a key that holds no mapping"));
    };
    let default_map = defaults.and_then(Value::as_mapping);
    let key = find_key(map, first)
        .or_else(|| default_map.and_then(|d| find_key(d, first)))
        .ok_or_else(|| format!("unknown configuration key '{first}'"))?;
    let child_default = default_map.and_then(|d| d.get(&key));
    let child = map.entry(key).or_insert(Value::Null);
    set_path(child, child_default, rest, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const SAMPLE: &str = r#"
Registry:
  VOs:
    dteam:
      DefaultGroup: dteam_user
      Users:
        alice: {}
        admin: {}
      Groups:
        dteam_user: { Properties: [NormalUser], Users: [alice, admin] }
        dteam_admin: { Properties: [JobAdministrator, NormalUser], Users: [admin], JobShare: 10 }
Operations:
  JobScheduling:
    MaxRescheduling: 2
"#;

    #[test]
    fn loads_sample_with_defaults() {
        let c = DiracConfig::from_yaml(SAMPLE, "t", &env(&[])).expect("valid");
        assert_eq!(c.operations.job_scheduling.max_rescheduling, 2);
        assert_eq!(c.operations.job_description.max_cpu_time, 500_000);
        assert_eq!(c.registry.vos["dteam"].groups["dteam_user"].job_share, 1000);
        let groups: Vec<_> = c.groups_of("dteam", "admin").collect();
        assert_eq!(groups, ["dteam_admin", "dteam_user"]);
    }

    #[test]
    fn env_overrides_known_keys_case_insensitively() {
        let c = DiracConfig::from_yaml(
            SAMPLE,
            "t",
            &env(&[
                ("DIRAC__OPERATIONS__JOBSCHEDULING__MAXRESCHEDULING", "7"),
                ("DIRAC__SERVICES__LISTEN", "127.0.0.1:9999"),
                ("DIRAC__SERVICES__DATABASES__JOBDB", "sqlite:///tmp/x.db"),
                ("OTHER", "ignored"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.operations.job_scheduling.max_rescheduling, 7);
        assert_eq!(c.services.listen, "127.0.0.1:9999");
        assert_eq!(
            c.services.databases.job_db.as_deref(),
            Some("sqlite:///tmp/x.db")
        );
    }

    fn check_error(yaml: &str, vars: &[(&str, &str)], expected: &str) {
        let err = DiracConfig::from_yaml(yaml, "t", &env(vars)).expect_err("must fail");
        let text = err.to_string();
        assert!(
            text.contains(expected),
            "error '{text}' does not contain '{expected}'"
        );
    }

    #[test]
    fn errors_name_the_key() {
        check_error(
            "Registry: {VOs: {v: {DefaultGroup: g}}}",
            &[],
            "Registry.VOs.v.DefaultGroup: unknown group 'g'",
        );
        check_error(
            "Registry: {VOs: {v: {DefaultGroup: g, Groups: {g: {Users: [bob]}}}}}",
            &[],
            "Registry.VOs.v.Groups.g.Users: unknown user 'bob'",
        );
        check_error(
            "Registry: {VOs: {v: {DefaultGroup: g, Groups: {g: {Properties: [Root]}}}}}",
            &[],
            "unknown property 'Root'",
        );
        check_error(
            "Operations: {JobScheduling: {MaxRescheduling: many}}",
            &[],
            "Operations.JobScheduling.MaxRescheduling",
        );
        check_error("Services: {Lisen: 1}", &[], "unknown field `Lisen`");
        check_error("Services: {Listen: nowhere}", &[], "Services.Listen");
        check_error(
            "Services: {Databases: {JobDB: 'oracle://x'}}",
            &[],
            "Services.Databases.JobDB",
        );
        check_error(
            "Operations: {JobDescription: {MinCPUTime: 10, MaxCPUTime: 5}}",
            &[],
            "MinCPUTime",
        );
        check_error(
            "",
            &[("DIRAC__SERVICES__NOPE", "1")],
            "DIRAC__SERVICES__NOPE: unknown configuration key 'NOPE'",
        );
        check_error("[1, 2]", &[], "must be a mapping");
        check_error("a: [", &[], "invalid YAML");
        check_error(
            "Resources: {Sites: {S: {CEs: {ce1: {CEType: gram}}}}}",
            &[],
            "Resources.Sites.S.CEs.ce1.CEType",
        );
    }
}
