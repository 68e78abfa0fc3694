//! `diracd serve SUBSYSTEM`: one subsystem's gRPC services in a process of
//! their own, the shape of a Kubernetes Deployment behind envoy, which
//! routes each gRPC package to its subsystem. Every replica is stateless:
//! the state is in SQL, the keys come from `Services.Auth.KeysDir` (a
//! mounted Secret), and sandboxes live on a storage element or a shared
//! volume.
//!
//! - `wms`: JobManager, JobMonitoring, JobStateUpdate, Matcher,
//!   PilotManager, SandboxStore, SiteMask, with the optimizer (claims under
//!   a lease), a periodic reload of the task queues (jobs other replicas
//!   queued) and job cleaning (beside the sandboxes it removes); the other
//!   agents run as `diracd agent`.
//! - `dms`: FileCatalog and StorageElement.
//! - `rms`: ReqManager (requests for the RequestExecutingAgent).
//! - `auth`: AuthAdmin over gRPC, and the OAuth2/OIDC endpoints over HTTP
//!   (`Services.Auth.HttpListen`).

use std::sync::Arc;

use anyhow::Context as _;
use dirac_core::config::DiracConfig;
use dirac_core::server::{ServiceSet, shutdown_signal};

use crate::embedded::{
    enable_input_data, job_db, open_dms, open_rms, open_wms, serve_then_stop, spawn_auth_http,
    start_auth, verifier,
};
use crate::keys::Keys;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Subsystem {
    Wms,
    Dms,
    Rms,
    Auth,
}

impl Subsystem {
    pub fn name(self) -> &'static str {
        match self {
            Subsystem::Wms => "wms",
            Subsystem::Dms => "dms",
            Subsystem::Rms => "rms",
            Subsystem::Auth => "auth",
        }
    }
}

/// Agents that run inside every WMS replica: the optimizer (woken by this
/// replica's submissions), the reload of the matcher index, and job
/// cleaning (it removes sandboxes, which live where the WMS keeps them:
/// its volume or storage element). All claim their work.
const WMS_INLINE_AGENTS: [&str; 3] = ["optimizer", "task-queues", "job-cleaning"];

pub async fn run(subsystem: Subsystem, server: &crate::ServerArgs) -> anyhow::Result<()> {
    let data_dir = server.data_dir.as_path();
    let config = server.load()?;
    config.validate()?;
    let _telemetry = dirac_core::telemetry::init(
        &format!("diracd-{}", subsystem.name()),
        &config.services.log_format,
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    let stop_signal = shutdown_signal();
    let config = Arc::new(config);
    let keys = Keys::new(data_dir, &config);
    // The DMS only verifies: with VerificationKeys (the AuthServer's JWKS)
    // it never reads the private signing key.
    let verifier = verifier(&config, &keys)?;
    let ring = || keys.issuer(&config).map(Arc::new);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut services = ServiceSet::new();
    match subsystem {
        Subsystem::Wms => {
            let wms = open_wms(&config, data_dir).await?;
            wms.enable_job_tokens(ring()?);
            enable_input_data(&wms, &config, data_dir).await?;
            wms.register_services(&mut services);
            for agent in WMS_INLINE_AGENTS {
                tasks.extend(dirac_wms::agents::spawn(agent, &wms, &stop_rx));
            }
        }
        Subsystem::Dms => {
            refuse_pod_local_storage(&config)?;
            let db = job_db(&config, data_dir).await?;
            open_dms(&config, data_dir, &db)
                .await?
                .register_services(&mut services);
        }
        Subsystem::Rms => {
            let db = job_db(&config, data_dir).await?;
            open_rms(&config, &db)
                .await?
                .register_services(&mut services);
        }
        Subsystem::Auth => {
            // Discovery, device verification and federation callbacks name
            // this URL: no guess from a listen address.
            let public = config.services.auth.public_url.clone().context(
                "Services.Auth.PublicURL must say where users and pilots reach the AuthServer \
                 (envoy's public URL)",
            )?;
            let http = tokio::net::TcpListener::bind(&config.services.auth.http_listen)
                .await
                .with_context(|| format!("listen on {}", config.services.auth.http_listen))?;
            let db = job_db(&config, data_dir).await?;
            let auth = start_auth(&config, &keys, &db, ring()?, &public, &mut services).await?;
            tracing::info!(addr = %http.local_addr()?, %public, "AuthServer HTTP endpoints");
            tasks.push(spawn_auth_http(auth, http, stop_rx.clone()));
        }
    }

    let listener = tokio::net::TcpListener::bind(&config.services.listen)
        .await
        .with_context(|| format!("listen on {}", config.services.listen))?;
    tracing::info!(addr = %listener.local_addr()?, subsystem = subsystem.name(), "diracd serve is serving");
    serve_then_stop(
        listener,
        services,
        verifier,
        &config,
        stop_signal,
        stop_tx,
        tasks,
    )
    .await
}

/// A `file` storage element whose path is relative (or empty) would live
/// in this replica's scratch directory: lost on restart, and invisible to
/// the other replicas.
fn refuse_pod_local_storage(config: &DiracConfig) -> anyhow::Result<()> {
    for (name, se) in &config.resources.storage_elements {
        for p in &se.protocols {
            if p.protocol == "file" && !std::path::Path::new(&p.path).is_absolute() {
                anyhow::bail!(
                    "Resources.StorageElements.{name}: a file protocol with the relative path {:?} \
                     would keep files in one replica's data directory; give it an absolute Path \
                     on a volume every DMS replica mounts",
                    p.path
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_storage_must_be_shared() {
        let yaml = |path: &str| {
            format!(
                "Resources:\n  StorageElements:\n    SE-1:\n      Protocols:\n        - {{Protocol: file, Path: '{path}'}}\n"
            )
        };
        let env = std::collections::BTreeMap::new();
        for (path, ok) in [("/shared/se", true), ("se-1", false), ("", false)] {
            let config = DiracConfig::from_yaml(&yaml(path), "t.yaml", &env).expect("config");
            let refused = refuse_pod_local_storage(&config);
            assert_eq!(refused.is_ok(), ok, "{path:?}: {refused:?}");
            if !ok {
                let e = refused.expect_err("refused");
                assert!(e.to_string().contains("SE-1"), "{e}");
            }
        }
    }
}
