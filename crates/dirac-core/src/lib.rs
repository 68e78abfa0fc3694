//! Shared runtime of every dirac-rs service and agent.
//!
//! Start with [`config`] (the `dirac.yaml` model), then [`auth`] (tokens, the
//! policy table and the tower layer every request passes), [`db`] (one SQL
//! layer over SQLite, MariaDB and PostgreSQL) and [`server`] (health,
//! reflection, TLS, shutdown). [`error`] maps every service's errors to gRPC
//! statuses in one place.

pub mod agent;
pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod server;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
