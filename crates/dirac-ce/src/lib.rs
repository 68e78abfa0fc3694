//! Computing elements: where the SiteDirector sends pilots.
//!
//! A [`ComputingElement`] submits pilot wrappers in bulk, reports the state of
//! many pilots at once, kills them and fetches their output. Each pilot gets a
//! stamp (its identity in PilotAgentsDB) and a one-time secret, both baked
//! into its wrapper ([`wrapper`]): the wrapper fetches `dirac-pilot`, checks
//! its sha256 and runs it.
//!
//! Connectors here: [`batch::BatchCe`] drives a batch system through a shell
//! — on this host (the `local` CE) or on a login node over SSH (DIRAC's
//! SSHComputingElement) — with the batch systems `Host` (plain processes) and
//! `Slurm`.

pub mod arc;
pub mod batch;
pub mod htcondor;
pub mod http;
pub mod kubernetes;
pub mod openstack;
pub mod shell;
pub mod wrapper;

use std::collections::HashMap;

pub use batch::{BatchCe, BatchSystem};
pub use shell::Shell;
pub use wrapper::{PilotLaunch, PilotSource};

/// One pilot to submit: its stamp and the secret it exchanges for a token.
#[derive(Clone)]
pub struct PilotJob {
    pub stamp: String,
    pub secret: String,
}

impl std::fmt::Debug for PilotJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PilotJob")
            .field("stamp", &self.stamp)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A pilot's state as the CE sees it, in DIRAC's pilot vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PilotState {
    Waiting,
    Running,
    Done,
    Failed,
    Aborted,
    /// The CE does not know the reference (any more).
    Unknown,
}

impl PilotState {
    pub fn as_str(self) -> &'static str {
        match self {
            PilotState::Waiting => "Waiting",
            PilotState::Running => "Running",
            PilotState::Done => "Done",
            PilotState::Failed => "Failed",
            PilotState::Aborted => "Aborted",
            PilotState::Unknown => "Unknown",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            PilotState::Done | PilotState::Failed | PilotState::Aborted
        )
    }
}

/// Occupancy a CE reports of its own (pilots of ours waiting and running).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slots {
    pub waiting: u64,
    pub running: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CeError {
    /// The CE could not be reached (connection, authentication).
    #[error("CE unreachable: {0}")]
    Unreachable(String),
    /// The CE answered but refused or failed the operation.
    #[error("CE error: {0}")]
    Failed(String),
    #[error("CE call timed out after {0} s")]
    Timeout(u64),
    /// The CE's configuration cannot work.
    #[error("CE configuration: {0}")]
    Config(String),
}

/// What every connector offers. References are the CE's names for pilots
/// (`ssh://host/…`, `slurm://host/1234`); they are what PilotAgentsDB keeps.
#[async_trait::async_trait]
pub trait ComputingElement: Send + Sync {
    /// DIRAC's GridType of pilots submitted here (`Local`, `SSH`, `Slurm`…).
    fn grid_type(&self) -> &'static str;

    /// Submit one wrapper per pilot. The outer error means nothing was
    /// submitted; otherwise one result per pilot, in order.
    async fn submit(&self, pilots: &[PilotJob]) -> Result<Vec<Result<String, CeError>>, CeError>;

    /// States of many pilots in one call; references the CE does not know
    /// are `Unknown`.
    async fn status(&self, references: &[String]) -> Result<HashMap<String, PilotState>, CeError>;

    /// Kill pilots (idempotent: finished or unknown pilots are fine).
    async fn kill(&self, references: &[String]) -> Result<(), CeError>;

    /// The pilot's output (stdout and stderr), the tail when it is long.
    async fn logs(&self, reference: &str) -> Result<String, CeError>;

    /// Periodic clean-up at the CE, whatever PilotAgentsDB says (the cloud
    /// CE deletes halted and over-age machines here).
    async fn housekeeping(&self) -> Result<(), CeError> {
        Ok(())
    }

    /// Waiting and running pilots as the CE counts them, when it can;
    /// otherwise the SiteDirector counts from PilotAgentsDB.
    async fn available(&self) -> Result<Option<Slots>, CeError> {
        Ok(None)
    }
}

/// Where CEs that authenticate with tokens get them: the TokenManager
/// (client credentials at the VO's IdP) or a file kept fresh elsewhere.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync {
    /// An access token for `audience` (the CE).
    async fn token(&self, audience: &str) -> Result<String, CeError>;
}

/// A token file kept fresh by something else (oidc-agent, htgettoken…):
/// the first line that is not empty or a comment.
#[derive(Debug, Clone)]
pub struct TokenFile(pub std::path::PathBuf);

#[async_trait::async_trait]
impl TokenSource for TokenFile {
    async fn token(&self, _audience: &str) -> Result<String, CeError> {
        let text = tokio::fs::read_to_string(&self.0)
            .await
            .map_err(|e| CeError::Config(format!("token file {}: {e}", self.0.display())))?;
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .ok_or_else(|| {
                CeError::Config(format!("token file {} holds no token", self.0.display()))
            })
    }
}

/// A fresh pilot stamp: 32 hex digits, as DIRAC's.
pub fn new_stamp() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}
