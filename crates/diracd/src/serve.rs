//! `diracd serve SUBSYSTEM`: one subsystem's gRPC services in a process of
//! their own, the shape of a Kubernetes Deployment behind envoy, which
//! routes each gRPC package to its subsystem. Every replica is stateless:
//! the state is in SQL, the keys come from `Services.Auth.KeysDir` (a
//! mounted Secret), and sandboxes live on a storage element or a shared
//! volume.
//!
//! - `wms`: JobManager, JobMonitoring, JobStateUpdate, Matcher,
//!   PilotManager, SandboxStore, SiteMask, with the optimizer (claims under
//!   a lease) and a periodic reload of the task queues (jobs other replicas
//!   queued); the other agents run as `diracd agent`.
//! - `dms`: FileCatalog and StorageElement.
//! - `auth`: AuthAdmin over gRPC, and the OAuth2/OIDC endpoints over HTTP
//!   (`Services.Auth.HttpListen`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use dirac_core::auth::AuthLayer;
use dirac_core::server::{ServiceSet, serve, shutdown_signal};

use crate::embedded::{
    enable_input_data, job_db, load_config, open_auth, open_dms, open_wms, policy_table,
    spawn_auth_http, verifier,
};
use crate::keys::Keys;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Subsystem {
    Wms,
    Dms,
    Auth,
}

impl Subsystem {
    pub fn name(self) -> &'static str {
        match self {
            Subsystem::Wms => "wms",
            Subsystem::Dms => "dms",
            Subsystem::Auth => "auth",
        }
    }
}

/// Agents that run inside every WMS replica: the optimizer (woken by this
/// replica's submissions) and the reload of the matcher index.
const WMS_INLINE_AGENTS: [&str; 2] = ["optimizer", "task-queues"];

pub async fn run(
    subsystem: Subsystem,
    data_dir: &Path,
    listen: Option<String>,
    auth_listen: Option<String>,
    config: Option<PathBuf>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let mut config = load_config(data_dir, config)?;
    if let Some(l) = listen {
        config.services.listen = l;
    }
    if let Some(l) = auth_listen {
        config.services.auth.http_listen = l;
    }
    config.validate()?;
    let _telemetry = dirac_core::telemetry::init(
        &format!("diracd-{}", subsystem.name()),
        &config.services.log_format,
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    let stop_signal = shutdown_signal();
    let config = Arc::new(config);
    let keys = Keys::new(data_dir, &config);
    let ring = Arc::new(keys.issuer(&config)?);
    let verifier = verifier(&config, &ring)?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut services = ServiceSet::new();
    match subsystem {
        Subsystem::Wms => {
            let wms = open_wms(&config, data_dir).await?;
            wms.enable_job_tokens(ring.clone());
            enable_input_data(&wms, &config, data_dir).await?;
            wms.register_services(&mut services);
            for agent in WMS_INLINE_AGENTS {
                tasks.extend(dirac_wms::agents::spawn(agent, &wms, &stop_rx));
            }
        }
        Subsystem::Dms => {
            let db = job_db(&config, data_dir).await?;
            open_dms(&config, data_dir, &db)
                .await?
                .register_services(&mut services);
        }
        Subsystem::Auth => {
            let http = tokio::net::TcpListener::bind(&config.services.auth.http_listen)
                .await
                .with_context(|| format!("listen on {}", config.services.auth.http_listen))?;
            let public = config
                .services
                .auth
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", config.services.auth.http_listen));
            let db = job_db(&config, data_dir).await?;
            let auth = open_auth(&config, &keys, &db, ring.clone(), &public).await?;
            services.add(dirac_proto::auth::auth_admin_server::AuthAdminServer::new(
                dirac_auth::admin::AdminService(auth.clone()),
            ));
            tracing::info!(addr = %http.local_addr()?, %public, "AuthServer HTTP endpoints");
            tasks.push(spawn_auth_http(auth, http, stop_rx.clone()));
        }
    }

    let listener = tokio::net::TcpListener::bind(&config.services.listen)
        .await
        .with_context(|| format!("listen on {}", config.services.listen))?;
    tracing::info!(addr = %listener.local_addr()?, subsystem = subsystem.name(), "diracd serve is serving");
    let served = serve(
        listener,
        services,
        AuthLayer::new(policy_table(), verifier),
        config.services.tls.as_ref(),
        stop_signal,
    )
    .await;
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    served?;
    Ok(())
}
