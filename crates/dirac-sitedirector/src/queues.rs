//! Queues from `Resources.Sites.<site>.CEs.<ce>.Queues` and the CE
//! connectors serving them. The Kubernetes `ComputingElement` resources
//! feed the same `CeConfig` structs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dirac_ce::arc::ArcCe;
use dirac_ce::htcondor::HtCondorCe;
use dirac_ce::http::HttpClient;
use dirac_ce::kubernetes::{KubeSettings, KubernetesCe};
use dirac_ce::openstack::{CloudSettings, Credentials, OpenStackCe};
use dirac_ce::shell::SshTarget;
use dirac_ce::{BatchCe, BatchSystem, PilotLaunch, PilotSource, Shell};
use dirac_ce::{CeError, TokenFile, TokenSource};
use dirac_core::config::{CeConfig, DiracConfig, QueueConfig};
use dirac_matcher::ResourceDescription;

use crate::QueueSpec;
use crate::plan::Limits;

/// Where pilots come from and whom they call.
#[derive(Clone)]
pub struct PilotEndpoints {
    /// The services' URL and the AuthServer's, as worker nodes reach them.
    pub url: String,
    pub auth_url: String,
    /// Where remote wrappers fetch `dirac-pilot` (URL or worker-node path).
    pub pilot_source: String,
    /// The binary beside this server, for the local CE.
    pub local_pilot: PathBuf,
    /// sha256 of the pilot binary (both sources serve the same file).
    pub pilot_sha256: String,
    /// Work directory of the local CE (and of the HTCondor tools).
    pub local_work_dir: PathBuf,
    /// Tokens for CEs that take them (the TokenManager), if the VO has an IdP.
    pub tokens: Option<Arc<dyn TokenSource>>,
}

/// CE types this director has connectors for.
pub const SUPPORTED: &[&str] = &[
    "local",
    "ssh",
    "slurm",
    "kubernetes",
    "openstack",
    "htcondorce",
    "arc",
];

/// Every queue of the configuration this director serves; CEs of types it
/// has no connector for yet are named in the second list.
pub fn from_config(
    config: &DiracConfig,
    ep: &PilotEndpoints,
    timeout: Duration,
) -> (Vec<QueueSpec>, Vec<String>) {
    let sd = &config.services.site_director;
    let vo = sd
        .vo
        .clone()
        .or_else(|| config.registry.vos.keys().next().cloned())
        .unwrap_or_default();
    let mut queues = Vec::new();
    let mut skipped = Vec::new();
    for (site, sc) in &config.resources.sites {
        if !sd.sites.is_empty() && !sd.sites.contains(site) {
            continue;
        }
        for (ce_name, cc) in &sc.ces {
            if !sd.ce_types.is_empty() && !sd.ce_types.contains(&cc.ce_type) {
                continue;
            }
            if !SUPPORTED.contains(&cc.ce_type.as_str()) {
                skipped.push(format!("{site}/{ce_name} ({})", cc.ce_type));
                continue;
            }
            for (queue, qc) in &cc.queues {
                let launch = launch(config, ep, &vo, site, ce_name, cc, queue, qc);
                let ce: Arc<dyn dirac_ce::ComputingElement> = match cc.ce_type.as_str() {
                    "kubernetes" => Arc::new(kubernetes_ce(ce_name, cc, launch)),
                    "htcondorce" => Arc::new(htcondor_ce(cc, launch, ep, timeout)),
                    "arc" => match arc_ce(cc, queue, launch, ep, timeout) {
                        Ok(ce) => Arc::new(ce),
                        Err(e) => {
                            skipped.push(format!("{site}/{ce_name} ({e})"));
                            continue;
                        }
                    },
                    "openstack" => match openstack_ce(ce_name, cc, launch, timeout) {
                        Ok(ce) => Arc::new(ce),
                        Err(e) => {
                            skipped.push(format!("{site}/{ce_name} ({e})"));
                            continue;
                        }
                    },
                    "ssh" if cc.push_mode => Arc::new(push_ce(ce_name, cc, launch, ep, timeout)),
                    _ => Arc::new(batch_ce(ce_name, cc, queue, launch, ep, timeout)),
                };
                queues.push(QueueSpec {
                    site: site.clone(),
                    ce_name: ce_name.clone(),
                    ce_type: cc.ce_type.clone(),
                    queue: queue.clone(),
                    vo: vo.clone(),
                    limits: Limits {
                        max_total: qc.max_total_jobs,
                        max_waiting: qc.max_waiting_jobs,
                    },
                    resource: resource(&vo, site, ce_name, cc, qc),
                    ce,
                    kill_on_stop: cc.ce_type == "local" || cc.push_mode,
                });
            }
        }
    }
    (queues, skipped)
}

fn cpu_time(qc: &QueueConfig) -> u64 {
    if qc.max_cpu_time == 0 {
        86_400
    } else {
        qc.max_cpu_time
    }
}

fn tags(cc: &CeConfig, qc: &QueueConfig) -> Vec<String> {
    let mut t: Vec<String> = cc.tags.iter().chain(&qc.tags).cloned().collect();
    t.sort();
    t.dedup();
    t
}

/// The resource description the queue's pilots will send.
pub fn resource(
    vo: &str,
    site: &str,
    ce: &str,
    cc: &CeConfig,
    qc: &QueueConfig,
) -> ResourceDescription {
    ResourceDescription {
        vo: vo.to_string(),
        site: Some(site.to_string()),
        grid_ce: Some(ce.to_string()),
        platforms: qc.platform.iter().cloned().collect(),
        cpu_time: i64::try_from(cpu_time(qc)).unwrap_or(i64::MAX),
        number_of_processors: i64::try_from(qc.number_of_processors.max(1)).unwrap_or(1),
        max_ram_mb: i64::try_from(qc.max_ram).unwrap_or(0),
        tags: tags(cc, qc),
        ..ResourceDescription::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn launch(
    config: &DiracConfig,
    ep: &PilotEndpoints,
    vo: &str,
    site: &str,
    ce: &str,
    cc: &CeConfig,
    queue: &str,
    qc: &QueueConfig,
) -> PilotLaunch {
    let local = cc.ce_type == "local";
    PilotLaunch {
        source: if local {
            PilotSource::Path(ep.local_pilot.display().to_string())
        } else {
            PilotSource::parse(&ep.pilot_source)
        },
        sha256: ep.pilot_sha256.clone(),
        url: ep.url.clone(),
        auth_url: ep.auth_url.clone(),
        vo: vo.to_string(),
        site: site.to_string(),
        ce: ce.to_string(),
        queue: queue.to_string(),
        cores: qc.number_of_processors.max(1),
        cpu_time: cpu_time(qc),
        max_ram_mb: qc.max_ram,
        tags: tags(cc, qc),
        platform: qc.platform.clone(),
        options: config.services.site_director.pilot_options.clone(),
    }
}

fn secret_file(path: &Path) -> Result<String, CeError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| CeError::Config(format!("{}: {e}", path.display())))
}

fn openstack_ce(
    name: &str,
    cc: &CeConfig,
    launch: PilotLaunch,
    timeout: Duration,
) -> Result<OpenStackCe, CeError> {
    // Validation made sure one of the two kinds of credentials is complete.
    let credentials = match (&cc.app_credential_id, &cc.app_credential_secret_file) {
        (Some(id), Some(file)) => Credentials::ApplicationCredential {
            id: id.clone(),
            secret: secret_file(file)?,
        },
        _ => Credentials::Password {
            user: cc.user.clone().unwrap_or_default(),
            user_domain: cc.user_domain.clone().unwrap_or_else(|| "Default".into()),
            password: secret_file(cc.password_file.as_deref().unwrap_or(Path::new("")))?,
            project: cc.project.clone().unwrap_or_default(),
            project_domain: cc
                .project_domain
                .clone()
                .unwrap_or_else(|| "Default".into()),
        },
    };
    OpenStackCe::new(
        name.to_string(),
        CloudSettings {
            keystone_url: cc.keystone_url.clone().unwrap_or_default(),
            credentials,
            region: cc.region.clone(),
            image: cc.image.clone().unwrap_or_default(),
            flavor: cc.flavor.clone().unwrap_or_default(),
            network: cc.network.clone(),
            key_name: cc.key_name.clone(),
            max_lifetime: cc.max_lifetime.unwrap_or(2 * 86_400),
        },
        launch,
        timeout,
    )
}

/// The token for a CE: its own file, else the TokenManager's.
fn token_source(cc: &CeConfig, ep: &PilotEndpoints) -> Option<Arc<dyn TokenSource>> {
    match &cc.token_file {
        Some(f) => Some(Arc::new(TokenFile(f.clone()))),
        None => ep.tokens.clone(),
    }
}

fn htcondor_ce(
    cc: &CeConfig,
    launch: PilotLaunch,
    ep: &PilotEndpoints,
    timeout: Duration,
) -> HtCondorCe {
    let host = cc.host.clone().unwrap_or_default();
    let port = cc.port.unwrap_or(9619);
    HtCondorCe {
        audience: cc
            .token_audience
            .clone()
            .unwrap_or_else(|| format!("{host}:{port}")),
        host,
        port,
        work_dir: ep.local_work_dir.join("htcondorce"),
        launch,
        use_local_schedd: cc.use_local_schedd,
        token: token_source(cc, ep),
        timeout,
    }
}

fn arc_ce(
    cc: &CeConfig,
    queue: &str,
    launch: PilotLaunch,
    ep: &PilotEndpoints,
    timeout: Duration,
) -> Result<ArcCe, CeError> {
    let cert = match (&cc.cert_file, &cc.key_file) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        (Some(c), None) => Some((c.as_path(), c.as_path())),
        _ => None,
    };
    let http = HttpClient::new(cc.ca_file.as_deref(), cert, timeout)?;
    // A client certificate is the credential unless a token is asked for.
    let token = match (&cc.token_file, cert) {
        (Some(f), _) => Some(Arc::new(TokenFile(f.clone())) as Arc<dyn TokenSource>),
        (None, Some(_)) => None,
        (None, None) => ep.tokens.clone(),
    };
    Ok(ArcCe::new(
        cc.host.clone().unwrap_or_default(),
        cc.port.unwrap_or(443),
        queue.to_string(),
        launch,
        token,
        cc.token_audience.clone(),
        http,
    ))
}

fn kubernetes_ce(name: &str, cc: &CeConfig, launch: PilotLaunch) -> KubernetesCe {
    KubernetesCe::new(
        name.to_string(),
        KubeSettings {
            namespace: cc.namespace.clone().unwrap_or_else(|| "default".into()),
            image: cc.image.clone().unwrap_or_default(),
            service_account: cc.service_account.clone(),
            node_selector: cc.node_selector.clone(),
            ttl_seconds_after_finished: cc.ttl_seconds_after_finished.unwrap_or(600),
            kube_config: cc.kube_config.clone(),
        },
        launch,
    )
}

/// Push mode: pilots on this host (the local CE's way) whose payloads go
/// to the ssh CE's host.
fn push_ce(
    name: &str,
    cc: &CeConfig,
    mut launch: PilotLaunch,
    ep: &PilotEndpoints,
    timeout: Duration,
) -> BatchCe {
    let target = SshTarget {
        host: cc.host.clone().unwrap_or_default(),
        port: cc.ssh_port.unwrap_or(22),
        user: cc.ssh_user.clone(),
        key: cc.ssh_key.clone(),
        known_hosts: cc.ssh_known_hosts.clone(),
    };
    launch.source = PilotSource::Path(ep.local_pilot.display().to_string());
    launch.options.extend([
        "--remote-shell".to_string(),
        shell_words::join(target.ssh_command()),
        "--remote-work-dir".to_string(),
        cc.work_dir.clone().unwrap_or_else(|| "dirac-push".into()),
    ]);
    BatchCe {
        name: name.to_string(),
        shell: Shell::Local,
        system: BatchSystem::Host,
        work_dir: ep
            .local_work_dir
            .join(format!("{name}-push"))
            .display()
            .to_string(),
        partition: None,
        launch,
        timeout,
    }
}

fn batch_ce(
    name: &str,
    cc: &CeConfig,
    queue: &str,
    launch: PilotLaunch,
    ep: &PilotEndpoints,
    timeout: Duration,
) -> BatchCe {
    let slurm = cc.ce_type == "slurm" || cc.batch_system.as_deref() == Some("Slurm");
    // A slurm CE without a host runs sbatch here.
    let shell = match (&cc.host, cc.ce_type.as_str()) {
        (_, "local") | (None, _) => Shell::Local,
        (Some(host), _) => Shell::Ssh(SshTarget {
            host: host.clone(),
            port: cc.ssh_port.unwrap_or(22),
            user: cc.ssh_user.clone(),
            key: cc.ssh_key.clone(),
            known_hosts: cc.ssh_known_hosts.clone(),
        }),
    };
    let work_dir = match (&cc.work_dir, &shell) {
        (Some(w), _) => w.clone(),
        (None, Shell::Local) => ep.local_work_dir.join(name).display().to_string(),
        (None, Shell::Ssh(_)) => "dirac-pilots".to_string(),
    };
    BatchCe {
        name: name.to_string(),
        shell,
        system: if slurm {
            BatchSystem::Slurm
        } else {
            BatchSystem::Host
        },
        work_dir,
        partition: slurm.then(|| queue.to_string()),
        launch,
        timeout,
    }
}
