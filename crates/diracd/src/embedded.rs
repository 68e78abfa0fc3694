//! The embedded installation: every service and agent in one process, SQLite
//! files and the signing key in the data directory, a ready `client.yaml`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use dirac_core::auth::{AuthLayer, Identity, PolicyTable, TokenIssuer, TokenVerifier};
use dirac_core::config::{DiracConfig, ProcessEnv};
use dirac_core::db::Db;
use dirac_core::server::{ServiceSet, serve, shutdown_signal};
use dirac_rms::agent::AGENTS as RMS_AGENTS;
use dirac_wms::sandbox::LocalBackend;
use dirac_wms::{JobDb, Wms};

use crate::keys::Keys;

/// The configuration written on first start of an embedded installation.
pub const DEFAULT_CONFIG: &str = include_str!("../../../examples/dirac.yaml");

const DB_CONNECTIONS: u32 = 16;

pub(crate) fn load_config(
    data_dir: &Path,
    explicit: Option<PathBuf>,
) -> anyhow::Result<DiracConfig> {
    let path = match explicit {
        Some(p) => p,
        None => {
            let p = data_dir.join("dirac.yaml");
            if !p.exists() {
                std::fs::write(&p, DEFAULT_CONFIG)
                    .with_context(|| format!("write {}", p.display()))?;
            }
            p
        }
    };
    Ok(DiracConfig::load(Some(&path), &ProcessEnv)?)
}

/// The identity of `user` in `vo`/`group` as the registry defines it.
pub fn identity_of(
    config: &DiracConfig,
    user: &str,
    vo: Option<&str>,
    group: Option<&str>,
) -> anyhow::Result<Identity> {
    let (vo_name, voc) = match vo {
        Some(v) => (
            v,
            config
                .registry
                .vos
                .get(v)
                .with_context(|| format!("unknown VO '{v}'"))?,
        ),
        None => config
            .registry
            .vos
            .iter()
            .find(|(_, c)| c.users.contains_key(user))
            .map(|(n, c)| (n.as_str(), c))
            .with_context(|| format!("user '{user}' is in no VO"))?,
    };
    if !voc.users.contains_key(user) {
        bail!("user '{user}' is not registered in VO '{vo_name}'");
    }
    let group = match group {
        Some(g) => g.to_string(),
        None if voc
            .groups
            .get(&voc.default_group)
            .is_some_and(|g| g.users.iter().any(|u| u == user)) =>
        {
            voc.default_group.clone()
        }
        None => config
            .groups_of(vo_name, user)
            .next()
            .with_context(|| format!("user '{user}' is in no group of '{vo_name}'"))?
            .to_string(),
    };
    let gc = voc
        .groups
        .get(&group)
        .with_context(|| format!("unknown group '{group}' in VO '{vo_name}'"))?;
    if !gc.users.iter().any(|u| u == user) {
        bail!("user '{user}' is not a member of group '{group}'");
    }
    Ok(Identity {
        sub: format!("{vo_name}:{user}"),
        username: user.to_string(),
        vo: vo_name.to_string(),
        group,
        properties: gc.properties.clone(),
        job: None,
    })
}

/// The user the embedded client configuration acts as: the first member of
/// the first VO's default group.
fn default_identity(config: &DiracConfig) -> anyhow::Result<Identity> {
    let (vo, voc) = config
        .registry
        .vos
        .iter()
        .next()
        .context("the registry has no VO")?;
    let user = voc
        .groups
        .get(&voc.default_group)
        .and_then(|g| g.users.first())
        .with_context(|| format!("default group of '{vo}' has no user"))?;
    identity_of(config, user, Some(vo), Some(&voc.default_group))
}

pub fn token(
    data_dir: &Path,
    config: Option<PathBuf>,
    user: &str,
    vo: Option<&str>,
    group: Option<&str>,
    lifetime: Option<u64>,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let config = load_config(data_dir, config)?;
    let identity = identity_of(&config, user, vo, group)?;
    Ok(Keys::new(data_dir, &config).issuer(&config)?.issue(
        &identity,
        lifetime.unwrap_or(config.services.auth.token_lifetime),
    )?)
}

pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

/// `diracd rotate-key`: retire the signing key, create a new one. Tokens of
/// the retired key keep verifying until its file in `retired-keys/` is
/// deleted; restart the services to sign with the new key.
pub fn rotate_key(data_dir: &Path, config: Option<PathBuf>) -> anyhow::Result<String> {
    let config = load_config(data_dir, config)?;
    let ring = Keys::new(data_dir, &config).rotate(&config)?;
    std::fs::write(data_dir.join("jwks.json"), ring.jwks().to_string())?;
    Ok(ring.kid().to_string())
}

/// JobDB's database (a SQLite file in the data directory by default); the
/// AuthServer's tables live beside it.
pub(crate) async fn job_db(config: &DiracConfig, data_dir: &Path) -> anyhow::Result<Db> {
    let url = config
        .services
        .databases
        .job_db
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("jobdb.sqlite").display()));
    Db::connect(&url, DB_CONNECTIONS)
        .await
        .with_context(|| format!("connect to {}", dirac_core::db::redact(&url)))
}

/// The WMS over the configured database (SQLite in the data directory by
/// default), its task queues loaded.
pub(crate) async fn open_wms(
    config: &Arc<DiracConfig>,
    data_dir: &Path,
) -> anyhow::Result<Arc<Wms>> {
    let jobdb = JobDb::open(job_db(config, data_dir).await?)
        .await
        .context("migrate JobDB")?;
    let sandbox_root = config
        .services
        .sandbox_store
        .base_path
        .clone()
        .unwrap_or_else(|| data_dir.join("sandboxes"));
    let se_name = &config.services.sandbox_store.se_name;
    let backend: Arc<dyn dirac_wms::sandbox::SandboxBackend> =
        match config.resources.storage_elements.get(se_name) {
            // The sandbox store on a configured storage element (S3 as in
            // DiracX, XRootD, WebDAV …), through its plugins.
            Some(se) => {
                let se = dirac_storage::StorageElement::new(se_name, se, &data_dir.join("se"))
                    .map_err(|e| anyhow::anyhow!("sandbox store on {se_name}: {e}"))?;
                tracing::info!(se = %se_name, "sandboxes kept on a storage element");
                Arc::new(SeSandboxes::new(
                    Arc::new(se),
                    sandbox_root.join(".staging"),
                )?)
            }
            None => Arc::new(
                LocalBackend::new(sandbox_root.clone())
                    .with_context(|| format!("sandbox store at {}", sandbox_root.display()))?,
            ),
        };
    let wms = Wms::new(jobdb, config.clone(), backend);
    let queued = dirac_wms::matching::resync(&wms)
        .await
        .context("load task queues")?;
    tracing::info!(queued, "matcher index loaded");

    Ok(wms)
}

/// The file catalog (in JobDB's database unless `FileCatalogDB` is set)
/// and the storage elements.
pub(crate) async fn open_dms(
    config: &Arc<DiracConfig>,
    data_dir: &Path,
    job_db: &Db,
) -> anyhow::Result<dirac_dms::Dms> {
    let db = match &config.services.databases.file_catalog_db {
        Some(url) => Db::connect(url, DB_CONNECTIONS)
            .await
            .with_context(|| format!("connect to {}", dirac_core::db::redact(url)))?,
        None => job_db.clone(),
    };
    dirac_dms::Dms::open(db, config.clone(), data_dir)
        .await
        .map_err(|e| anyhow::anyhow!("FileCatalogDB and storage elements: {e}"))
}

/// The request management services on ReqDB (JobDB's database unless
/// `ReqDB` is set).
pub(crate) async fn open_rms(config: &DiracConfig, job_db: &Db) -> anyhow::Result<dirac_rms::Rms> {
    let db = match &config.services.databases.req_db {
        Some(url) => Db::connect(url, DB_CONNECTIONS)
            .await
            .with_context(|| format!("connect to {}", dirac_core::db::redact(url)))?,
        None => job_db.clone(),
    };
    dirac_rms::Rms::open(db)
        .await
        .map_err(|e| anyhow::anyhow!("ReqDB: {e}"))
}

/// Sandboxes on a storage element: `SB:<SE>|/<path>` is the file `/<path>`
/// of that SE.
struct SeSandboxes {
    se: Arc<dirac_storage::StorageElement>,
    staging: PathBuf,
}

impl SeSandboxes {
    fn new(se: Arc<dirac_storage::StorageElement>, staging: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&staging)
            .with_context(|| format!("create {}", staging.display()))?;
        Ok(SeSandboxes { se, staging })
    }

    fn lfn(path: &str) -> String {
        format!("/{}", path.trim_start_matches('/'))
    }

    fn scratch(&self) -> PathBuf {
        self.staging
            .join(format!("{:032x}", rand::random::<u128>()))
    }
}

fn io_error(e: dirac_storage::StorageError) -> std::io::Error {
    let kind = match &e {
        dirac_storage::StorageError::NotFound(_) => std::io::ErrorKind::NotFound,
        dirac_storage::StorageError::PermissionDenied(_) => std::io::ErrorKind::PermissionDenied,
        dirac_storage::StorageError::Invalid(_) => std::io::ErrorKind::InvalidInput,
        _ => std::io::ErrorKind::Other,
    };
    std::io::Error::new(kind, e.to_string())
}

#[async_trait::async_trait]
impl dirac_wms::sandbox::SandboxBackend for SeSandboxes {
    async fn put(&self, path: &str, staged: &Path) -> std::io::Result<()> {
        // The store verified the archive's sha256; the SE gets it moved
        // (a local SE) or copied once, with its Adler32.
        let (size, adler32) = dirac_storage::checksum::of_file(staged).await?;
        let known = dirac_storage::Stat {
            size,
            adler32: Some(adler32),
        };
        let stored = self.se.put_owned(&Self::lfn(path), staged, &known).await;
        let _ = tokio::fs::remove_file(staged).await;
        stored.map(drop).map_err(io_error)
    }

    async fn get(&self, path: &str) -> std::io::Result<Vec<u8>> {
        let tmp = self.scratch();
        let got = self.se.get(&Self::lfn(path), &tmp).await.map_err(io_error);
        let bytes = match got {
            Ok(_) => tokio::fs::read(&tmp).await,
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&tmp).await;
        bytes
    }

    async fn delete(&self, path: &str) -> std::io::Result<()> {
        self.se.remove(&Self::lfn(path)).await.map_err(io_error)
    }

    fn staging_path(&self) -> PathBuf {
        self.scratch()
    }
}

/// The WMS's InputData step over the file catalog: replicas as the job's
/// owner may see them.
struct CatalogReplicas(Arc<dirac_dms::Catalog>);

#[async_trait::async_trait]
impl dirac_wms::inputdata::ReplicaCatalog for CatalogReplicas {
    async fn replicas(
        &self,
        owner: &dirac_wms::inputdata::Owner,
        lfns: &[String],
    ) -> Result<dirac_wms::inputdata::Replicas, String> {
        let caller = dirac_dms::perms::Caller {
            username: owner.user.clone(),
            group: owner.group.clone(),
            vo: owner.vo.clone(),
            admin: false,
        };
        let (found, failed) = self
            .0
            .get_files(&caller, lfns, false)
            .await
            .map_err(|e| e.to_string())?;
        let mut out: dirac_wms::inputdata::Replicas = found
            .into_iter()
            .map(|(lfn, (_, replicas))| (lfn, Ok(replicas.into_iter().map(|r| r.se).collect())))
            .collect();
        out.extend(failed.into_iter().map(|(lfn, e)| (lfn, Err(e.to_string()))));
        Ok(out)
    }
}

/// `diracd agent NAME`: one agent until SIGTERM.
pub async fn run_agent(
    name: &str,
    data_dir: &Path,
    config: Option<PathBuf>,
    once: bool,
) -> anyhow::Result<()> {
    if !dirac_wms::agents::AGENTS.contains(&name)
        && !RMS_AGENTS.contains(&name)
        && name != "site-director"
    {
        bail!(
            "unknown agent '{name}' (one of {}, {}, site-director)",
            dirac_wms::agents::AGENTS.join(", "),
            RMS_AGENTS.join(", ")
        );
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let config = Arc::new(load_config(data_dir, config)?);
    let _telemetry = dirac_core::telemetry::init(
        &format!("diracd-agent-{name}"),
        &config.services.log_format,
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    if name == "site-director" {
        return run_site_director(data_dir, config, once).await;
    }
    if RMS_AGENTS.contains(&name) {
        return run_rms_agent(name, data_dir, &config, once).await;
    }
    let wms = open_wms(&config, data_dir).await?;
    if name == "optimizer" {
        enable_input_data(&wms, &config, data_dir).await?;
    }
    if once {
        let done = dirac_wms::agents::run_once(name, &wms).await?;
        tracing::info!(agent = name, %done, "one cycle done");
        return Ok(());
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = dirac_wms::agents::spawn(name, &wms, &stop_rx).context("spawn agent")?;
    tracing::info!(agent = name, "agent running");
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = task.await;
    Ok(())
}

/// This process's name in the claims it makes (the pod's name in
/// Kubernetes).
fn agent_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "diracd".into());
    format!("{host}-{}", std::process::id())
}

/// Jobs waiting `Completed / Pending Requests` end with their requests:
/// when every request of the job is final and was put by the job's owner
/// (a request tied to someone else's job never ends it).
struct WmsJobs {
    wms: Arc<Wms>,
    reqdb: Arc<dirac_rms::ReqDb>,
}

impl WmsJobs {
    /// Finish `job_id` if every request its owner put for it is final:
    /// Done when all are Done, Failed when one failed or was canceled — or
    /// when none is left at all (deleted before they ended the job).
    async fn finish_job(&self, job_id: u64) -> anyhow::Result<bool> {
        use dirac_rms::model::ReqStatus;
        use dirac_rms::reqdb::ListQuery;
        let owners = self.wms.db.owners(&[job_id]).await?;
        let Some(job) = owners.get(&job_id) else {
            return Ok(false);
        };
        let of_job = |statuses: Vec<ReqStatus>| ListQuery {
            statuses,
            job_ids: vec![job_id],
            owner: Some((job.owner.clone(), job.vo.clone())),
            limit: 1,
        };
        let any = |statuses: Vec<ReqStatus>| {
            let q = of_job(statuses);
            async move { self.reqdb.list(&q).await.map(|found| !found.is_empty()) }
        };
        if any(vec![
            ReqStatus::Waiting,
            ReqStatus::Assigned,
            ReqStatus::Scheduled,
        ])
        .await?
        {
            return Ok(false);
        }
        let failed = any(vec![ReqStatus::Failed, ReqStatus::Canceled]).await?;
        let done = any(vec![ReqStatus::Done]).await?;
        Ok(dirac_wms::agents::requests_finished(&self.wms, job_id, done && !failed).await?)
    }
}

#[async_trait::async_trait]
impl dirac_rms::agent::JobFinalizer for WmsJobs {
    async fn request_final(&self, request: &dirac_rms::model::Request) {
        let job_id = request.job_id;
        let owner = match self.wms.db.owners(&[job_id]).await {
            Ok(mut owners) => owners.remove(&job_id),
            Err(e) => {
                tracing::warn!(job_id, error = %e, "cannot read the job of a request");
                return;
            }
        };
        if owner.is_none_or(|j| j.owner != request.owner || j.vo != request.vo) {
            tracing::warn!(
                job_id,
                request = request.id,
                "a request of another owner names this job: ignored"
            );
            return;
        }
        match self.finish_job(job_id).await {
            Ok(true) => {
                tracing::info!(job_id, status = %request.status, "job finished with its requests")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(job_id, error = %e, "cannot finish the job of a request"),
        }
    }

    async fn sweep(&self) -> u64 {
        // Long enough for an agent to have told the job itself.
        let waiting = match dirac_wms::agents::jobs_pending_requests(&self.wms, 3600).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for jobs waiting for requests");
                return 0;
            }
        };
        let mut finished = 0;
        for job_id in waiting {
            match self.finish_job(job_id).await {
                Ok(true) => finished += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(job_id, error = %e, "cannot finish a waiting job"),
            }
        }
        finished
    }
}

/// The request-management agents in `names`, the executing one acting on
/// `dms`'s catalog and storage elements and ending the jobs of `wms`.
pub(crate) fn spawn_rms_agents(
    names: &[&str],
    rms: &dirac_rms::Rms,
    dms: &dirac_dms::Dms,
    wms: &Arc<Wms>,
    config: &DiracConfig,
    data_dir: &Path,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let settings = dirac_rms::agent::Settings::from_config(&config.services.requests);
    let mut tasks = Vec::new();
    let jobs: Arc<dyn dirac_rms::agent::JobFinalizer> = Arc::new(WmsJobs {
        wms: wms.clone(),
        reqdb: rms.reqdb.clone(),
    });
    if names.contains(&"request-executing") {
        tasks.push(dirac_rms::agent::spawn_executing(
            rms.reqdb.clone(),
            Arc::new(rms_handlers(dms, data_dir)),
            Some(jobs.clone()),
            agent_identity(),
            settings.clone(),
            stop,
        ));
    }
    if names.contains(&"clean-reqdb") {
        tasks.push(dirac_rms::agent::spawn_cleaning(
            rms.reqdb.clone(),
            Some(jobs),
            settings,
            stop,
        ));
    }
    tasks
}

fn rms_handlers(dms: &dirac_dms::Dms, data_dir: &Path) -> dirac_rms::handlers::DmsHandlers {
    dirac_rms::handlers::DmsHandlers {
        catalog: dms.catalog.clone(),
        storage: dms.storage.clone(),
        scratch: data_dir.join("scratch").join("requests"),
    }
}

/// `diracd agent request-executing|clean-reqdb`.
async fn run_rms_agent(
    name: &str,
    data_dir: &Path,
    config: &Arc<DiracConfig>,
    once: bool,
) -> anyhow::Result<()> {
    let wms = open_wms(config, data_dir).await?;
    let db = wms.db.db().clone();
    let rms = open_rms(config, &db).await?;
    let dms = open_dms(config, data_dir, &db).await?;
    if once {
        let settings = dirac_rms::agent::Settings::from_config(&config.services.requests);
        let jobs = WmsJobs {
            wms: wms.clone(),
            reqdb: rms.reqdb.clone(),
        };
        if name == "request-executing" {
            let handlers = rms_handlers(&dms, data_dir);
            let cycle = dirac_rms::agent::execute_once(
                &rms.reqdb,
                &handlers,
                Some(&jobs),
                &agent_identity(),
                &settings,
            )
            .await?;
            tracing::info!(agent = name, ?cycle, "one cycle done");
        } else {
            let (kicked, deleted) =
                dirac_rms::agent::clean_once(&rms.reqdb, Some(&jobs), &settings).await?;
            tracing::info!(agent = name, kicked, deleted, "one cycle done");
        }
        return Ok(());
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = spawn_rms_agents(&[name], &rms, &dms, &wms, config, data_dir, &stop_rx);
    tracing::info!(agent = name, "agent running");
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

/// The AuthServer (its tables beside JobDB's).
pub(crate) async fn open_auth(
    config: &Arc<DiracConfig>,
    keys: &Keys,
    db: &Db,
    issuer: Arc<TokenIssuer>,
    auth_url: &str,
) -> anyhow::Result<Arc<dirac_auth::AuthServer>> {
    dirac_auth::AuthServer::open(
        db.clone(),
        config.clone(),
        issuer,
        dirac_auth::AuthSettings {
            access_lifetime_s: config.services.auth.access_token_lifetime,
            refresh_lifetime_s: config.services.auth.refresh_token_lifetime,
            dev_login: config.services.auth.dev_login,
            public_url: auth_url.to_string(),
            pilot_pepper: keys.pepper()?,
            vault_key_file: Some(keys.vault_key(config)?),
            ..dirac_auth::AuthSettings::default()
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("AuthServer: {e}"))
}

/// The AuthServer at `auth_url`, its AuthAdmin service added to `services`
/// (its HTTP endpoints are served by [`spawn_auth_http`]).
pub(crate) async fn start_auth(
    config: &Arc<DiracConfig>,
    keys: &Keys,
    db: &Db,
    issuer: Arc<TokenIssuer>,
    auth_url: &str,
    services: &mut ServiceSet,
) -> anyhow::Result<Arc<dirac_auth::AuthServer>> {
    let auth = open_auth(config, keys, db, issuer, auth_url).await?;
    services.add(dirac_proto::auth::auth_admin_server::AuthAdminServer::new(
        dirac_auth::admin::AdminService(auth.clone()),
    ));
    if config.services.auth.dev_login {
        tracing::warn!(url = %auth_url, "development login enabled: any registered user logs in by name");
    }
    Ok(auth)
}

/// Serve `services` until SIGTERM, then stop `tasks` through `stop`.
pub(crate) async fn serve_then_stop(
    listener: tokio::net::TcpListener,
    services: ServiceSet,
    verifier: TokenVerifier,
    config: &DiracConfig,
    stop_signal: impl std::future::Future<Output = ()> + Send,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<()> {
    let served = serve(
        listener,
        services,
        AuthLayer::new(policy_table(), verifier),
        config.services.tls.as_ref(),
        stop_signal,
    )
    .await;
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    served?;
    Ok(())
}

/// `diracd agent site-director`: the SiteDirector on its own. Pilots call
/// the services at `Services.PublicURL` and the AuthServer at
/// `Services.Auth.PublicURL`; secrets go into the shared AuthDB with the
/// installation's pilot pepper (`DATA_DIR/pilot-pepper`, shared by every
/// replica).
async fn run_site_director(
    data_dir: &Path,
    config: Arc<DiracConfig>,
    once: bool,
) -> anyhow::Result<()> {
    let url = config
        .services
        .public_url
        .clone()
        .context("Services.PublicURL must say where pilots reach the services")?;
    let auth_url = config
        .services
        .auth
        .public_url
        .clone()
        .context("Services.Auth.PublicURL must say where pilots reach the AuthServer")?;
    let wms = open_wms(&config, data_dir).await?;
    let keys = Keys::new(data_dir, &config);
    let issuer = Arc::new(keys.issuer(&config)?);
    let auth = open_auth(&config, &keys, wms.db.db(), issuer, &auth_url).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The demand comes from the task queues: this process's copy of them
    // (and of the site mask) is reloaded from TaskQueueDB once per cycle.
    let polling = config.services.site_director.polling_time.unwrap_or(60);
    let reload_every = std::time::Duration::from_secs((polling / 2).clamp(1, 30));
    let registry = Arc::new(crate::site_director::WmsRegistry::new(
        wms,
        auth,
        Some(reload_every),
    ));
    let (mut director, _) =
        crate::site_director::build(&config, registry, &url, &auth_url, data_dir, 60)?
            .context("no queue of Resources.Sites has a CE this SiteDirector can serve")?;
    if once {
        let report = director.cycle().await;
        tracing::info!(
            agent = "site-director",
            submitted = report.submitted(),
            states = report.status_updates,
            "one cycle done"
        );
        return Ok(());
    }
    let task = tokio::spawn(director.run(stop_rx));
    tracing::info!(agent = "site-director", "agent running");
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = task.await;
    Ok(())
}

/// The AuthServer's HTTP endpoints (OAuth2/OIDC, JWKS, and the pilot
/// binary when `dirac-pilot` is beside `diracd`) until `stop`.
pub(crate) fn spawn_auth_http(
    auth: Arc<dirac_auth::AuthServer>,
    listener: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|v| *v).await;
        };
        let router = match crate::site_director::pilot_binary() {
            Ok(bin) => auth.router().merge(crate::site_director::pilot_files(bin)),
            Err(_) => auth.router(),
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "AuthServer stopped");
        }
    })
}

/// The WMS's InputData step over the file catalog (its own connection when
/// `FileCatalogDB` is set).
pub(crate) async fn enable_input_data(
    wms: &Wms,
    config: &Arc<DiracConfig>,
    data_dir: &Path,
) -> anyhow::Result<dirac_dms::Dms> {
    let dms = open_dms(config, data_dir, wms.db.db()).await?;
    wms.enable_input_data(Arc::new(CatalogReplicas(dms.catalog.clone())));
    Ok(dms)
}

/// What verifies the callers' tokens: `VerificationKeys` when set (a file
/// or the AuthServer's JWKS URL: no private key needed), else the
/// installation's own signing ring.
pub(crate) fn verifier(config: &DiracConfig, keys: &Keys) -> anyhow::Result<TokenVerifier> {
    Ok(match &config.services.auth.verification_keys {
        Some(path) => TokenVerifier::from_file(
            path,
            &config.services.auth.issuer,
            &config.services.auth.audience,
        )?,
        None => keys.issuer(config)?.verifier(),
    })
}

/// The access policy of every method the installation serves.
pub fn policy_table() -> PolicyTable {
    let mut policies = PolicyTable::new();
    dirac_wms::policy::register(&mut policies);
    dirac_auth::admin::register(&mut policies);
    dirac_dms::policy::register(&mut policies);
    dirac_rms::policy::register(&mut policies);
    policies
}

pub async fn run_all(server: &crate::ServerArgs) -> anyhow::Result<()> {
    let data_dir = server.data_dir.as_path();
    let client_file = data_dir.join("client.yaml");
    let _ = std::fs::remove_file(&client_file);
    let mut config = server.load()?;
    if config.services.site_director.pilot_options.is_empty() {
        // Local pilots of the embedded installation: quick to match, quick
        // to leave when the queues are empty.
        let drain = data_dir.join("pilots").join("drain");
        config.services.site_director.pilot_options = [
            "--max-cycles",
            "50",
            "--stop-after-failed-matches",
            "3",
            "--polling-time",
            "1",
            "--heartbeat",
            "10",
            "--drain-file",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .chain([drain.display().to_string()])
        .collect();
    }
    config.validate()?;
    let _telemetry = dirac_core::telemetry::init(
        "diracd",
        &config.services.log_format,
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    // Before client.yaml announces the server: a SIGTERM from then on is a
    // clean stop, however far the start-up has got.
    let stop_signal = shutdown_signal();
    let config = Arc::new(config);

    let wms = open_wms(&config, data_dir).await?;
    let keys = Keys::new(data_dir, &config);
    let issuer = keys.issuer(&config)?;
    let verifier = verifier(&config, &keys)?;
    std::fs::write(data_dir.join("jwks.json"), issuer.jwks().to_string())?;
    let mut services = ServiceSet::new();
    wms.register_services(&mut services);
    let dms = enable_input_data(&wms, &config, data_dir).await?;
    dms.register_services(&mut services);
    let rms = open_rms(&config, wms.db.db()).await?;
    rms.register_services(&mut services);

    let listener = tokio::net::TcpListener::bind(&config.services.listen)
        .await
        .with_context(|| format!("listen on {}", config.services.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if config.services.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let public = config
        .services
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    // The AuthServer's HTTP endpoints (OAuth2 device flow, JWKS, …).
    let auth_listener = tokio::net::TcpListener::bind(&config.services.auth.http_listen)
        .await
        .with_context(|| format!("listen on {}", config.services.auth.http_listen))?;
    let auth_addr = auth_listener.local_addr()?;
    let auth_url = config
        .services
        .auth
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{auth_addr}"));
    let issuer = Arc::new(issuer);
    wms.enable_job_tokens(issuer.clone());
    let auth = start_auth(
        &config,
        &keys,
        wms.db.db(),
        issuer.clone(),
        &auth_url,
        &mut services,
    )
    .await?;
    let who = default_identity(&config)?;
    let token = issuer.issue(&who, config.services.auth.token_lifetime)?;
    write_private(
        &client_file,
        &format!("url: {public}\nauth_url: {auth_url}\ntoken: {token}\n"),
    )
    .with_context(|| format!("write {}", client_file.display()))?;
    tracing::info!(%addr, user = %who.sub, client_config = %client_file.display(), "diracd all is serving");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = dirac_wms::agents::spawn_all(&wms, &stop_rx);
    tasks.extend(spawn_rms_agents(
        RMS_AGENTS, &rms, &dms, &wms, &config, data_dir, &stop_rx,
    ));
    let registry = Arc::new(crate::site_director::WmsRegistry::new(
        wms.clone(),
        auth.clone(),
        None,
    ));
    match crate::site_director::build(&config, registry, &public, &auth_url, data_dir, 2) {
        Ok(Some((director, control))) => {
            wms.enable_pilot_control(control);
            tasks.push(tokio::spawn(director.run(stop_rx.clone())));
        }
        Ok(None) => tracing::info!("no computing element configured: no pilots are submitted"),
        Err(e) => tracing::warn!(error = %e, "SiteDirector disabled"),
    }
    tasks.push(spawn_auth_http(auth, auth_listener, stop_rx.clone()));
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

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    /// Every RPC of the contract has an explicit access policy: a method
    /// added to a .proto without one fails here (and is refused at run time).
    #[test]
    fn every_rpc_has_an_access_policy() {
        let fds = prost_types::FileDescriptorSet::decode(dirac_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let table = policy_table();
        let mut checked = 0;
        for file in &fds.file {
            let package = file.package();
            if !package.starts_with("dirac.") {
                continue;
            }
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{package}.{}/{}", service.name(), method.name());
                    assert!(table.get(&path).is_some(), "{path} has no access policy");
                    checked += 1;
                }
            }
        }
        assert!(checked >= 14, "only {checked} methods found");
        // And nothing in the table names a method that does not exist.
        for path in table.paths() {
            if path.starts_with("/dirac.") {
                let (svc, method) = path.trim_start_matches('/').split_once('/').expect("path");
                let (package, name) = svc.rsplit_once('.').expect("service");
                let exists = fds.file.iter().filter(|f| f.package() == package).any(|f| {
                    f.service
                        .iter()
                        .any(|s| s.name() == name && s.method.iter().any(|m| m.name() == method))
                });
                assert!(exists, "policy for unknown method {path}");
            }
        }
    }

    #[test]
    fn embedded_default_configuration_is_valid_and_names_users() {
        let env = std::collections::BTreeMap::new();
        let config =
            DiracConfig::from_yaml(DEFAULT_CONFIG, "examples/dirac.yaml", &env).expect("valid");
        let who = default_identity(&config).expect("default user");
        assert_eq!(
            (who.username.as_str(), who.group.as_str()),
            ("alice", "dteam_user")
        );
        let admin = identity_of(&config, "admin", None, Some("dteam_admin")).expect("admin");
        assert!(admin.has("JobAdministrator"));
        assert!(identity_of(&config, "admin", None, Some("dteam_pilot")).is_err());
        assert!(identity_of(&config, "mallory", None, None).is_err());
    }
}
