//! Client side of the dirac-rs gRPC services, shared by the `dirac` CLI, the
//! benchmark and (later) pilots and operators.
//!
//! A newcomer starts with [`ClientConfig::resolve`] (where the server URL and
//! token come from), then [`Client::connect`] (one channel, a bearer-token
//! interceptor, one typed stub per service). [`parse_where`] and
//! [`parse_sort`] turn the CLI's search syntax into proto messages;
//! [`sandbox`] packs, checks and transfers sandbox archives.
//!
//! This crate depends on `dirac-proto` and tonic only: never on sqlx or a
//! service crate.

mod client;
mod config;
pub mod data;
mod error;
pub mod login;
mod query;
pub mod sandbox;
pub mod tls;

pub use client::{
    AuthChannel, AuthInterceptor, Client, FileCatalog, JobManager, JobMonitoring, JobStateUpdate,
    MAX_MESSAGE_SIZE, Matcher, PilotManager, ReqManager, SandboxStore, StorageElement,
};
pub use config::{ClientConfig, Env, MapEnv, ProcessEnv, default_config_path};
pub use error::ClientError;
pub use query::{parse_sort, parse_where};
