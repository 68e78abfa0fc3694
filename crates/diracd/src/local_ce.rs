//! The local computing element of the embedded installation: pilots are
//! `dirac-pilot` child processes, at most `MaxTotalJobs` of the local CE's
//! queue at a time, started while jobs wait. A minimal site director: the
//! SiteDirector issue generalises it to remote CEs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use dirac_core::config::DiracConfig;
use dirac_wms::Wms;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tracing::Instrument as _;

/// Where and how local pilots run.
#[derive(Debug, Clone)]
pub struct LocalCe {
    pub pilot_bin: PathBuf,
    pub url: String,
    /// AuthServer base URL, where pilots exchange their secrets.
    pub auth_url: String,
    pub work_dir: PathBuf,
    pub vo: String,
    pub site: String,
    pub ce: String,
    pub queue: String,
    pub slots: usize,
    pub cpu_time: u64,
    /// Cores each pilot offers (the queue's NumberOfProcessors).
    pub cores: u64,
}

impl LocalCe {
    /// The first `local` CE of the configuration, if any.
    pub fn from_config(
        config: &DiracConfig,
        vo: &str,
        pilot_bin: PathBuf,
        url: String,
        auth_url: String,
        data_dir: &Path,
    ) -> Option<Self> {
        for (site, sc) in &config.resources.sites {
            for (ce, cc) in &sc.ces {
                if cc.ce_type != "local" {
                    continue;
                }
                let (queue, qc) = cc.queues.iter().next()?;
                return Some(LocalCe {
                    pilot_bin,
                    url,
                    auth_url,
                    work_dir: data_dir.join("pilots"),
                    vo: vo.to_string(),
                    site: site.clone(),
                    ce: ce.clone(),
                    queue: queue.clone(),
                    slots: usize::try_from(qc.max_total_jobs.max(1)).unwrap_or(1),
                    cpu_time: if qc.max_cpu_time == 0 {
                        86_400
                    } else {
                        qc.max_cpu_time
                    },
                    cores: qc.number_of_processors.max(1),
                });
            }
        }
        None
    }

    fn command(&self, stamp: &str, secret_file: &Path) -> Command {
        let mut cmd = Command::new(&self.pilot_bin);
        cmd.arg("--url")
            .arg(&self.url)
            .args(["--auth-url", &self.auth_url, "--pilot-secret-file"])
            .arg(secret_file)
            .args([
                "--vo",
                &self.vo,
                "--site",
                &self.site,
                "--ce",
                &self.ce,
                "--queue",
                &self.queue,
            ])
            .args([
                "--stamp",
                stamp,
                "--cores",
                &self.cores.to_string(),
                "--cpu-time",
                &self.cpu_time.to_string(),
            ])
            .args([
                "--max-cycles",
                "50",
                "--stop-after-failed-matches",
                "3",
                "--polling-time",
                "1",
            ])
            .args(["--heartbeat", "10", "--drain-file"])
            .arg(self.work_dir.join("drain"))
            .arg("--work-dir")
            .arg(self.work_dir.join(stamp))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        cmd
    }
}

/// Start pilots while jobs wait, up to the slot limit; reap them as they end.
pub async fn run(
    ce: LocalCe,
    wms: Arc<Wms>,
    auth: Arc<dirac_auth::AuthServer>,
    mut shutdown: watch::Receiver<bool>,
) {
    let span = tracing::info_span!("agent", component = "LocalCE");
    async move {
        if let Err(e) = std::fs::create_dir_all(&ce.work_dir) {
            tracing::warn!(error = %e, "local CE disabled: no work directory");
            return;
        }
        let mut children: Vec<(String, Child)> = Vec::new();
        loop {
            children.retain_mut(|(stamp, child)| match child.try_wait() {
                Ok(Some(status)) => {
                    tracing::info!(pilot = %stamp, %status, "pilot ended");
                    if !status.success() {
                        let wms = wms.clone();
                        let stamp = stamp.clone();
                        tokio::spawn(async move {
                            let _ = wms.pilots.set_status(&stamp, "Failed", &format!("pilot exited with {status}")).await;
                        });
                    }
                    false
                }
                Ok(None) => true,
                Err(_) => false,
            });
            let waiting = wms.matcher.queued();
            let free = ce.slots.saturating_sub(children.len());
            for _ in 0..free.min(waiting) {
                let stamp = format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
                let pilot = dirac_proto::wms::Pilot {
                    stamp: stamp.clone(),
                    reference: format!("local://{}/{stamp}", ce.ce),
                    vo: ce.vo.clone(),
                    site: ce.site.clone(),
                    ce: ce.ce.clone(),
                    queue: ce.queue.clone(),
                    grid_type: "Local".into(),
                    status: "Submitted".into(),
                    ..Default::default()
                };
                if let Err(e) = wms.pilots.register(&[pilot]).await {
                    tracing::warn!(error = %e, "cannot register a local pilot");
                    break;
                }
                let secret_file = ce.work_dir.join(format!("{stamp}.secret"));
                let written = match auth.create_pilot_secrets(&ce.vo, std::slice::from_ref(&ce.site), 1, 600, 1).await {
                    Ok(secrets) => write_secret(&secret_file, secrets.first().map(String::as_str).unwrap_or_default()),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                };
                if let Err(e) = written {
                    tracing::warn!(error = %e, "cannot create a pilot secret");
                    break;
                }
                match ce.command(&stamp, &secret_file).spawn() {
                    Ok(child) => {
                        tracing::info!(pilot = %stamp, waiting, "pilot started");
                        children.push((stamp, child));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, bin = %ce.pilot_bin.display(), "cannot start a pilot");
                        let _ = wms.pilots.set_status(&stamp, "Aborted", &format!("cannot start: {e}")).await;
                        break;
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                for (_, child) in &mut children {
                    let _ = child.start_kill();
                }
                return;
            }
        }
    }
    .instrument(span)
    .await;
}

/// Write a secret readable by this user only.
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(secret.as_bytes())
}
