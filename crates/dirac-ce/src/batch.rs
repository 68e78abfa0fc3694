//! A CE that drives a batch system through a [`Shell`]: the `local` CE
//! (processes on this host), `ssh` (processes on a remote host) and `slurm`
//! (here or over SSH).
//!
//! Each pilot gets three files in the CE's work directory: `<stamp>.sh` (the
//! wrapper), `<stamp>.job` (runs the wrapper and writes its exit code to
//! `<stamp>.rc`) and `<stamp>.out` (the output). A bulk operation is one
//! script, so one SSH connection, whatever the number of pilots.

use std::collections::HashMap;
use std::time::Duration;

use crate::shell::Shell;
use crate::wrapper::PilotLaunch;
use crate::{CeError, ComputingElement, PilotJob, PilotState, Slots};

/// The largest piece of a pilot's output `logs` returns (its tail).
const LOG_TAIL_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSystem {
    /// Each pilot a process (its own session) on the shell's host.
    Host,
    /// `sbatch` into the partition named as the queue.
    Slurm,
}

#[derive(Debug, Clone)]
pub struct BatchCe {
    /// The CE's name (references read `<scheme>://<name>/…`).
    pub name: String,
    pub shell: Shell,
    pub system: BatchSystem,
    /// Work directory on the CE's side: absolute, or relative to `$HOME`.
    pub work_dir: String,
    /// Slurm partition (the queue's name).
    pub partition: Option<String>,
    pub launch: PilotLaunch,
    pub timeout: Duration,
}

fn q(s: &str) -> std::borrow::Cow<'_, str> {
    shell_words::quote(s)
}

/// A stamp is what goes into file names: refuse anything but hex digits.
fn checked_stamp(stamp: &str) -> Result<&str, CeError> {
    if !stamp.is_empty() && stamp.len() <= 64 && stamp.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(stamp)
    } else {
        Err(CeError::Failed(format!("invalid pilot stamp {stamp:?}")))
    }
}

impl BatchCe {
    fn scheme(&self) -> &'static str {
        match (&self.shell, self.system) {
            (_, BatchSystem::Slurm) => "slurm",
            (Shell::Local, BatchSystem::Host) => "local",
            (Shell::Ssh(_), BatchSystem::Host) => "ssh",
        }
    }

    /// `W=...` for the top of every script.
    fn work_dir_line(&self) -> String {
        if self.work_dir.starts_with('/') {
            format!("W={}", q(&self.work_dir))
        } else {
            format!("W=\"$HOME\"/{}", q(&self.work_dir))
        }
    }

    /// `(stamp, batch id)` of a reference of this CE.
    fn parse_reference<'r>(&self, reference: &'r str) -> Option<(&'r str, &'r str)> {
        let rest = reference.strip_prefix(self.scheme())?.strip_prefix("://")?;
        let rest = rest.strip_prefix(self.name.as_str())?.strip_prefix('/')?;
        match self.system {
            BatchSystem::Host => checked_stamp(rest).ok().map(|s| (s, s)),
            BatchSystem::Slurm => {
                let (id, stamp) = rest.split_once('/')?;
                (id.bytes().all(|b| b.is_ascii_digit()) && !id.is_empty())
                    .then_some(())
                    .and(checked_stamp(stamp).ok().map(|s| (s, id)))
            }
        }
    }

    async fn run(&self, script: &str) -> Result<String, CeError> {
        let out = self.shell.run(script, self.timeout).await?;
        if out.code != 0 {
            return Err(CeError::Failed(format!(
                "{} exited with {}: {}",
                self.shell.host(),
                out.code,
                out.stderr.trim()
            )));
        }
        Ok(out.stdout)
    }

    fn submit_script(&self, pilots: &[PilotJob]) -> Result<String, CeError> {
        let mut s = String::from("set -u\numask 077\n");
        s.push_str(&self.work_dir_line());
        s.push_str("\nmkdir -p \"$W\" || exit 1\n");
        for p in pilots {
            let stamp = checked_stamp(&p.stamp)?;
            // The job file exports DIRAC_PILOT_BASE: the work directory as
            // the CE's side spells it.
            let wrapper = self.launch.wrapper(stamp, &p.secret, "");
            let eof = format!("DIRAC_WRAPPER_EOF_{}", crate::new_stamp());
            s.push_str(&format!(
                "cat > \"$W/{stamp}.sh\" <<'{eof}'\n{wrapper}{eof}\n\
                 printf '#!/bin/bash\\nexport DIRAC_PILOT_BASE=%q\\nbash %q\\nrc=$?\\nrm -f %q\\necho $rc > %q\\nexit $rc\\n' \
                 \"$W\" \"$W/{stamp}.sh\" \"$W/{stamp}.sh\" \"$W/{stamp}.rc\" > \"$W/{stamp}.job\"\n\
                 chmod 700 \"$W/{stamp}.sh\" \"$W/{stamp}.job\"\n"
            ));
            match self.system {
                BatchSystem::Host => s.push_str(&format!(
                    "if setsid nohup bash \"$W/{stamp}.job\" > \"$W/{stamp}.out\" 2>&1 < /dev/null &\n\
                     then echo $! > \"$W/{stamp}.pid\"; echo \"OK {stamp} {stamp}\"\n\
                     else echo \"ERR {stamp} cannot start the wrapper\"; fi\n"
                )),
                BatchSystem::Slurm => {
                    let mut opts = format!(
                        "--parsable --job-name=dirac_{stamp} --output=\"$W/{stamp}.out\" --chdir=\"$W\" --cpus-per-task={}",
                        self.launch.cores.max(1)
                    );
                    if let Some(p) = &self.partition {
                        opts.push_str(&format!(" --partition={}", q(p)));
                    }
                    s.push_str(&format!(
                        "if id=$(sbatch {opts} \"$W/{stamp}.job\" 2>&1); then echo \"OK {stamp} ${{id%%;*}}\"\n\
                         else echo \"ERR {stamp} $(echo $id | tr '\\n' ' ')\"; fi\n"
                    ));
                }
            }
        }
        Ok(s)
    }
}

/// Slurm's job states in DIRAC's pilot vocabulary; `LOST` is a Host pilot
/// whose process is gone without an exit code (killed, host rebooted).
fn slurm_state(state: &str) -> PilotState {
    match state {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
        | "RESV_DEL_HOLD" => PilotState::Waiting,
        "RUNNING" | "COMPLETING" | "STAGE_OUT" | "SUSPENDED" | "SIGNALING" | "RESIZING" => {
            PilotState::Running
        }
        "COMPLETED" => PilotState::Done,
        "CANCELLED" | "REVOKED" => PilotState::Aborted,
        "FAILED" | "OUT_OF_MEMORY" | "TIMEOUT" | "NODE_FAIL" | "PREEMPTED" | "BOOT_FAIL"
        | "DEADLINE" | "SPECIAL_EXIT" | "LOST" => PilotState::Failed,
        _ => PilotState::Unknown,
    }
}

#[async_trait::async_trait]
impl ComputingElement for BatchCe {
    fn grid_type(&self) -> &'static str {
        match self.scheme() {
            "local" => "Local",
            "ssh" => "SSH",
            _ => "Slurm",
        }
    }

    async fn submit(&self, pilots: &[PilotJob]) -> Result<Vec<Result<String, CeError>>, CeError> {
        if pilots.is_empty() {
            return Ok(Vec::new());
        }
        let script = self.submit_script(pilots)?;
        let stdout = self.run(&script).await?;
        let mut answers: HashMap<&str, Result<String, CeError>> = HashMap::new();
        for line in stdout.lines() {
            let mut parts = line.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("OK"), Some(stamp), Some(id)) => {
                    let id = id.trim();
                    let reference = match self.system {
                        BatchSystem::Host => format!("{}://{}/{stamp}", self.scheme(), self.name),
                        BatchSystem::Slurm
                            if id.bytes().all(|b| b.is_ascii_digit()) && !id.is_empty() =>
                        {
                            format!("slurm://{}/{id}/{stamp}", self.name)
                        }
                        BatchSystem::Slurm => {
                            answers.insert(
                                stamp,
                                Err(CeError::Failed(format!("sbatch answered {id:?}"))),
                            );
                            continue;
                        }
                    };
                    answers.insert(stamp, Ok(reference));
                }
                (Some("ERR"), Some(stamp), rest) => {
                    answers.insert(
                        stamp,
                        Err(CeError::Failed(
                            rest.unwrap_or("submission failed").trim().to_string(),
                        )),
                    );
                }
                _ => {}
            }
        }
        Ok(pilots
            .iter()
            .map(|p| {
                answers.remove(p.stamp.as_str()).unwrap_or_else(|| {
                    Err(CeError::Failed(
                        "the CE gave no answer for this pilot".into(),
                    ))
                })
            })
            .collect())
    }

    async fn status(&self, references: &[String]) -> Result<HashMap<String, PilotState>, CeError> {
        let mut out = HashMap::new();
        let mut known: Vec<(&str, &str, &String)> = Vec::new();
        for r in references {
            match self.parse_reference(r) {
                Some((stamp, id)) => known.push((stamp, id, r)),
                None => {
                    out.insert(r.clone(), PilotState::Unknown);
                }
            }
        }
        if known.is_empty() {
            return Ok(out);
        }
        let mut s = format!("set -u\n{}\n", self.work_dir_line());
        // Running and not an unreaped zombie (kill -0 succeeds on those).
        s.push_str(
            "alive() { kill -0 \"$1\" 2>/dev/null || return 1; [ -r /proc/$1/stat ] || return 0; \
             [ \"$(cut -d' ' -f3 /proc/$1/stat)\" != Z ]; }\n",
        );
        if self.system == BatchSystem::Slurm {
            s.push_str(
                "declare -A Q\nwhile read -r id st; do Q[$id]=$st; done < <(squeue -h --me -o '%i %T')\n",
            );
        }
        for (stamp, id, _) in &known {
            if self.system == BatchSystem::Slurm {
                s.push_str(&format!(
                    "if [ -n \"${{Q[{id}]:-}}\" ]; then echo \"{stamp} Q ${{Q[{id}]}}\"\n\
                     elif [ -f \"$W/{stamp}.rc\" ]; then echo \"{stamp} RC $(cat \"$W/{stamp}.rc\")\"\n\
                     else st=$(scontrol -o show job {id} 2>/dev/null | sed -n 's/.*JobState=\\([A-Z_]*\\).*/\\1/p'); echo \"{stamp} Q ${{st:-NONE}}\"; fi\n"
                ));
            } else {
                s.push_str(&format!(
                    "if [ -f \"$W/{stamp}.rc\" ]; then echo \"{stamp} RC $(cat \"$W/{stamp}.rc\")\"\n\
                     elif [ -f \"$W/{stamp}.pid\" ] && alive \"$(cat \"$W/{stamp}.pid\")\"; then echo \"{stamp} Q RUNNING\"\n\
                     elif [ -f \"$W/{stamp}.rc\" ]; then echo \"{stamp} RC $(cat \"$W/{stamp}.rc\")\"\n\
                     else echo \"{stamp} Q LOST\"; fi\n"
                ));
            }
        }
        let stdout = self.run(&s).await?;
        let mut by_stamp: HashMap<&str, PilotState> = HashMap::new();
        for line in stdout.lines() {
            let mut parts = line.split_whitespace();
            let (Some(stamp), Some(kind), Some(value)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let state = match kind {
                "RC" if value == "0" => PilotState::Done,
                "RC" => PilotState::Failed,
                _ => slurm_state(value),
            };
            by_stamp.insert(stamp, state);
        }
        for (stamp, _, r) in known {
            out.insert(
                r.clone(),
                by_stamp.get(stamp).copied().unwrap_or(PilotState::Unknown),
            );
        }
        Ok(out)
    }

    async fn kill(&self, references: &[String]) -> Result<(), CeError> {
        let known: Vec<(&str, &str)> = references
            .iter()
            .filter_map(|r| self.parse_reference(r))
            .collect();
        if known.is_empty() {
            return Ok(());
        }
        let mut s = format!("{}\n", self.work_dir_line());
        match self.system {
            BatchSystem::Host => {
                for (stamp, _) in &known {
                    s.push_str(&format!(
                        "if [ -f \"$W/{stamp}.pid\" ] && kill -TERM -- -\"$(cat \"$W/{stamp}.pid\")\" 2>/dev/null; then [ -f \"$W/{stamp}.rc\" ] || echo 143 > \"$W/{stamp}.rc\"; fi\n"
                    ));
                }
            }
            BatchSystem::Slurm => {
                let ids: Vec<&str> = known.iter().map(|(_, id)| *id).collect();
                s.push_str(&format!("scancel {} 2>/dev/null\n", ids.join(" ")));
            }
        }
        s.push_str("exit 0\n");
        self.run(&s).await.map(|_| ())
    }

    async fn logs(&self, reference: &str) -> Result<String, CeError> {
        let (stamp, _) = self
            .parse_reference(reference)
            .ok_or_else(|| CeError::Failed(format!("not a pilot of {}: {reference}", self.name)))?;
        let s = format!(
            "{}\n[ -f \"$W/{stamp}.out\" ] || {{ echo \"no output for pilot {stamp}\" >&2; exit 3; }}\ntail -c {LOG_TAIL_BYTES} \"$W/{stamp}.out\"\n",
            self.work_dir_line()
        );
        self.run(&s).await
    }

    async fn available(&self) -> Result<Option<Slots>, CeError> {
        if self.system != BatchSystem::Slurm {
            return Ok(None);
        }
        let mut s = String::from("squeue -h --me -o '%j %T'");
        if let Some(p) = &self.partition {
            s.push_str(&format!(" -p {}", q(p)));
        }
        let stdout = self.run(&s).await?;
        let mut slots = Slots::default();
        for line in stdout.lines() {
            let mut parts = line.split_whitespace();
            let (Some(name), Some(state)) = (parts.next(), parts.next()) else {
                continue;
            };
            if !name.starts_with("dirac_") {
                continue;
            }
            match slurm_state(state) {
                PilotState::Waiting => slots.waiting += 1,
                PilotState::Running => slots.running += 1,
                _ => {}
            }
        }
        Ok(Some(slots))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrapper::{PilotSource, sha256_file};

    fn local_ce(dir: &std::path::Path, pilot: &std::path::Path) -> BatchCe {
        BatchCe {
            name: "ce.local".into(),
            shell: Shell::Local,
            system: BatchSystem::Host,
            work_dir: dir.join("pilots").display().to_string(),
            partition: None,
            launch: PilotLaunch {
                source: PilotSource::Path(pilot.display().to_string()),
                sha256: sha256_file(pilot).expect("hash"),
                url: "http://127.0.0.1:1".into(),
                auth_url: "http://127.0.0.1:2".into(),
                vo: "vo".into(),
                site: "LCG.Local.local".into(),
                ce: "ce.local".into(),
                queue: "default".into(),
                cores: 1,
                cpu_time: 60,
                max_ram_mb: 0,
                tags: Vec::new(),
                platform: None,
                options: Vec::new(),
            },
            timeout: Duration::from_secs(20),
        }
    }

    async fn wait_final(ce: &BatchCe, r: &str) -> PilotState {
        for _ in 0..200 {
            let s = ce.status(&[r.to_string()]).await.expect("status")[r];
            if s.is_final() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("pilot {r} never ended");
    }

    #[tokio::test]
    async fn host_pilots_run_report_and_are_killed() {
        let dir = tempfile::tempdir().expect("tmp");
        let pilot = dir.path().join("pilot.sh");
        // Exits 0 when its queue is 'default' and sleeps when asked to.
        std::fs::write(
            &pilot,
            "#!/bin/bash\necho \"pilot args: $*\"\ncase \"$*\" in *--sleep*) sleep 30;; esac\nexit 0\n",
        )
        .expect("write");
        let ce = local_ce(dir.path(), &pilot);
        let jobs: Vec<PilotJob> = (0..3)
            .map(|_| PilotJob {
                stamp: crate::new_stamp(),
                secret: "secret".into(),
            })
            .collect();
        let refs: Vec<String> = ce
            .submit(&jobs)
            .await
            .expect("submit")
            .into_iter()
            .map(|r| r.expect("each submitted"))
            .collect();
        assert_eq!(refs.len(), 3);
        assert!(refs[0].starts_with("local://ce.local/"), "{}", refs[0]);
        for r in &refs {
            assert_eq!(wait_final(&ce, r).await, PilotState::Done);
            let log = ce.logs(r).await.expect("logs");
            assert!(log.contains("pilot args: --url"), "{log}");
            assert!(log.contains("dirac-pilot exited with 0"), "{log}");
        }

        // A long pilot is Running, then killed, and not Done.
        let mut sleeper = ce.clone();
        sleeper.launch.options = vec!["--sleep".into()];
        let job = PilotJob {
            stamp: crate::new_stamp(),
            secret: "s".into(),
        };
        let r = sleeper
            .submit(std::slice::from_ref(&job))
            .await
            .expect("submit")[0]
            .as_ref()
            .expect("submitted")
            .clone();
        let mut state = PilotState::Unknown;
        for _ in 0..100 {
            state = sleeper
                .status(std::slice::from_ref(&r))
                .await
                .expect("status")[&r];
            if state == PilotState::Running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(state, PilotState::Running);
        sleeper.kill(std::slice::from_ref(&r)).await.expect("kill");
        let end = wait_final(&sleeper, &r).await;
        assert_eq!(
            end,
            PilotState::Failed,
            "a killed pilot did not finish well"
        );

        // A pilot this CE never started has no process: gone. Foreign
        // references are unknown.
        let other = format!("local://ce.local/{}", crate::new_stamp());
        let states = ce
            .status(&[other.clone(), "ssh://elsewhere/abc".into()])
            .await
            .expect("status");
        assert_eq!(states[&other], PilotState::Failed);
        assert_eq!(states["ssh://elsewhere/abc"], PilotState::Unknown);
        assert!(ce.logs("local://ce.local/../../etc/passwd").await.is_err());
    }

    #[tokio::test]
    async fn a_bad_stamp_is_refused_before_anything_runs() {
        let dir = tempfile::tempdir().expect("tmp");
        let pilot = dir.path().join("pilot.sh");
        std::fs::write(&pilot, "#!/bin/bash\n").expect("write");
        let ce = local_ce(dir.path(), &pilot);
        let bad = PilotJob {
            stamp: "abc; touch /tmp/x".into(),
            secret: "s".into(),
        };
        assert!(ce.submit(&[bad]).await.is_err());
        assert!(!dir.path().join("pilots").exists());
    }
}
