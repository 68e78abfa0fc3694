//! The SiteDirector wired to this installation: demand from the matcher's
//! index, pilots in PilotAgentsDB, secrets from the AuthServer, and the pilot
//! binary served over HTTP for wrappers on remote worker nodes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use dirac_core::config::DiracConfig;
use dirac_matcher::ResourceDescription;
use dirac_sitedirector::queues::PilotEndpoints;
use dirac_sitedirector::{ActivePilot, NewPilot, QueueSpec, Registry, SiteDirector};
use dirac_wms::Wms;

pub struct WmsRegistry {
    pub wms: Arc<Wms>,
    pub auth: Arc<dirac_auth::AuthServer>,
    /// A SiteDirector in its own process sees jobs other processes queued
    /// only through TaskQueueDB: its copy of the task queues (and of the
    /// site mask) is reloaded when older than this. `None` in `diracd all`,
    /// whose index is the one the services keep current.
    pub reload_every: Option<std::time::Duration>,
    pub reloaded: tokio::sync::Mutex<Option<std::time::Instant>>,
}

impl WmsRegistry {
    pub fn new(
        wms: Arc<Wms>,
        auth: Arc<dirac_auth::AuthServer>,
        reload_every: Option<std::time::Duration>,
    ) -> Self {
        WmsRegistry {
            wms,
            auth,
            reload_every,
            reloaded: tokio::sync::Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl Registry for WmsRegistry {
    async fn demand(&self, resource: &ResourceDescription) -> Result<u64, String> {
        if let Some(every) = self.reload_every {
            let mut reloaded = self.reloaded.lock().await;
            if reloaded.is_none_or(|t| t.elapsed() >= every) {
                dirac_wms::matching::resync(&self.wms)
                    .await
                    .map_err(|e| format!("reload the task queues: {e}"))?;
                *reloaded = Some(std::time::Instant::now());
            }
        }
        let resource = resource
            .clone()
            .into_resource()
            .map_err(|e| e.to_string())?;
        Ok(self.wms.matcher.demand(&resource))
    }

    async fn active_pilots(&self, ce: &str, queue: &str) -> Result<Vec<ActivePilot>, String> {
        let pilots = self
            .wms
            .pilots
            .active(ce, queue)
            .await
            .map_err(|e| e.to_string())?;
        Ok(pilots
            .into_iter()
            .map(|p| ActivePilot {
                stamp: p.stamp,
                reference: p.reference,
                status: p.status,
                last_update: p.last_update_time,
            })
            .collect())
    }

    async fn pilot_secrets(
        &self,
        vo: &str,
        site: &str,
        n: usize,
        lifetime_s: u64,
    ) -> Result<Vec<String>, String> {
        self.auth
            .create_pilot_secrets(vo, &[site.to_string()], 1, lifetime_s, n)
            .await
            .map_err(|e| e.to_string())
    }

    async fn register_pilots(
        &self,
        pilots: &[NewPilot],
    ) -> Result<Vec<Result<(), String>>, String> {
        let rows: Vec<dirac_proto::wms::Pilot> = pilots
            .iter()
            .map(|p| dirac_proto::wms::Pilot {
                stamp: p.stamp.clone(),
                reference: p.reference.clone(),
                vo: p.vo.clone(),
                site: p.site.clone(),
                ce: p.ce.clone(),
                queue: p.queue.clone(),
                grid_type: p.grid_type.clone(),
                status: "Submitted".into(),
                ..Default::default()
            })
            .collect();
        let mut done = self
            .wms
            .pilots
            .register(&rows)
            .await
            .map_err(|e| e.to_string())?;
        Ok(pilots
            .iter()
            .map(|p| match done.remove(&p.stamp) {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("not recorded".into()),
            })
            .collect())
    }

    async fn set_pilot_references(&self, references: &[(String, String)]) -> Result<(), String> {
        self.wms
            .pilots
            .set_references(references)
            .await
            .map_err(|e| e.to_string())
    }

    async fn set_pilot_status(
        &self,
        stamp: &str,
        status: &str,
        reason: &str,
    ) -> Result<(), String> {
        self.wms
            .pilots
            .set_status(stamp, status, reason)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Pilot-submission tokens from the VO's IdP (client credentials), when
/// the VO federates.
struct IdpTokens(dirac_tokens::TokenManager);

#[async_trait::async_trait]
impl dirac_ce::TokenSource for IdpTokens {
    async fn token(&self, audience: &str) -> Result<String, dirac_ce::CeError> {
        self.0
            .pilot_submission_token(audience)
            .await
            .map(|t| t.token)
            .map_err(|e| dirac_ce::CeError::Unreachable(format!("no token for {audience}: {e}")))
    }
}

fn token_manager(config: &DiracConfig) -> Option<Arc<dyn dirac_ce::TokenSource>> {
    let vo = config
        .services
        .site_director
        .vo
        .clone()
        .or_else(|| config.registry.vos.keys().next().cloned())?;
    let idp = config.registry.vos.get(&vo)?.idp.clone()?;
    Some(Arc::new(IdpTokens(dirac_tokens::TokenManager::new(idp))))
}

/// `dirac-pilot` beside this binary.
pub fn pilot_binary() -> anyhow::Result<PathBuf> {
    let bin = std::env::current_exe()?.with_file_name("dirac-pilot");
    if !bin.exists() {
        anyhow::bail!(
            "{} is missing (cargo build --workspace --bins)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The PilotManager's way to the CEs: the director's queues.
pub struct CeControl {
    queues: Vec<QueueSpec>,
}

impl CeControl {
    fn find(&self, pilot: &dirac_proto::wms::Pilot) -> Result<&QueueSpec, String> {
        self.queues
            .iter()
            .find(|q| q.ce_name == pilot.ce && q.queue == pilot.queue)
            .ok_or_else(|| {
                format!(
                    "no configured queue {}/{} for pilot {}",
                    pilot.ce, pilot.queue, pilot.stamp
                )
            })
    }
}

#[async_trait::async_trait]
impl dirac_wms::sites::PilotControl for CeControl {
    fn queues(&self) -> Vec<dirac_wms::sites::QueueInfo> {
        self.queues
            .iter()
            .map(|q| dirac_wms::sites::QueueInfo {
                site: q.site.clone(),
                ce: q.ce_name.clone(),
                queue: q.queue.clone(),
                ce_type: q.ce_type.clone(),
                max_total: q.limits.max_total,
                max_waiting: q.limits.max_waiting,
                resource: q.resource.clone(),
            })
            .collect()
    }

    async fn kill(&self, pilot: &dirac_proto::wms::Pilot) -> Result<(), String> {
        let q = self.find(pilot)?;
        q.ce.kill(std::slice::from_ref(&pilot.reference))
            .await
            .map_err(|e| e.to_string())
    }

    async fn output(&self, pilot: &dirac_proto::wms::Pilot) -> Result<String, String> {
        let q = self.find(pilot)?;
        q.ce.logs(&pilot.reference).await.map_err(|e| e.to_string())
    }
}

/// The director for this configuration and the PilotManager's way to its
/// CEs, or `None` when it has no queue it can serve.
pub fn build(
    config: &DiracConfig,
    registry: Arc<dyn Registry>,
    url: &str,
    auth_url: &str,
    data_dir: &Path,
    default_polling: u64,
) -> anyhow::Result<Option<(SiteDirector, Arc<CeControl>)>> {
    let sd = &config.services.site_director;
    let local_pilot = pilot_binary()?;
    let pilot_sha256 = dirac_ce::wrapper::sha256_file(&local_pilot)
        .with_context(|| format!("read {}", local_pilot.display()))?;
    let endpoints = PilotEndpoints {
        url: url.to_string(),
        auth_url: auth_url.to_string(),
        pilot_source: sd
            .pilot_url
            .clone()
            .unwrap_or_else(|| format!("{}/pilot/dirac-pilot", auth_url.trim_end_matches('/'))),
        local_pilot,
        pilot_sha256,
        local_work_dir: data_dir.join("pilots"),
        tokens: token_manager(config),
    };
    let settings = dirac_sitedirector::Settings::from_config(sd, default_polling);
    let (queues, skipped) =
        dirac_sitedirector::queues::from_config(config, &endpoints, settings.ce_timeout);
    for ce in &skipped {
        tracing::warn!(%ce, "no connector for this CE type yet: the SiteDirector skips it");
    }
    if queues.is_empty() {
        return Ok(None);
    }
    for q in &queues {
        tracing::info!(site = %q.site, ce = %q.ce_name, queue = %q.queue, max_total = q.limits.max_total, "SiteDirector serves queue");
    }
    let control = Arc::new(CeControl {
        queues: queues.clone(),
    });
    Ok(Some((
        SiteDirector::new(queues, registry, settings),
        control,
    )))
}

/// `GET /pilot/dirac-pilot` (the binary) and `/pilot/dirac-pilot.sha256`,
/// for pilot wrappers that download it.
pub fn pilot_files(bin: PathBuf) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse as _;
    let bin = Arc::new(bin);
    let b2 = bin.clone();
    axum::Router::new()
        .route(
            "/pilot/dirac-pilot",
            axum::routing::get(move || {
                let bin = bin.clone();
                async move {
                    match tokio::fs::read(bin.as_ref()).await {
                        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes)
                            .into_response(),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the pilot binary");
                            StatusCode::NOT_FOUND.into_response()
                        }
                    }
                }
            }),
        )
        .route(
            "/pilot/dirac-pilot.sha256",
            axum::routing::get(move || {
                let bin = b2.clone();
                async move {
                    match tokio::task::spawn_blocking(move || dirac_ce::wrapper::sha256_file(&bin))
                        .await
                    {
                        Ok(Ok(sha)) => format!("{sha}  dirac-pilot\n").into_response(),
                        _ => StatusCode::NOT_FOUND.into_response(),
                    }
                }
            }),
        )
}
