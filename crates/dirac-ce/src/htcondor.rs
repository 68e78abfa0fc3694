//! HTCondorCE: pilots submitted to the CE's own schedd (`-pool CE:9619
//! -remote CE`, input spooled) with `condor_submit`, followed with
//! `condor_q` and `condor_history`, killed with `condor_rm`, their output
//! fetched with `condor_transfer_data` — the HTCondor tools, as DIRAC's
//! HTCondorCEComputingElement drives them (ADR 0009). Authentication is a
//! WLCG token with the CE as audience, handed to the tools the way
//! HTCondor's clients read it (`_CONDOR_SCITOKENS_FILE`).
//!
//! One submit description per cycle: one proc per pilot (`queue stamp in
//! (…)`), each running its own wrapper (`<stamp>.sh`, which holds its
//! one-time secret), so references are `htcondorce://<ce>/<cluster>.<proc>`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;

use crate::wrapper::PilotLaunch;
use crate::{CeError, ComputingElement, PilotJob, PilotState, TokenSource};

#[derive(Clone)]
pub struct HtCondorCe {
    /// The CE's host name (also the schedd's name).
    pub host: String,
    pub port: u16,
    /// Local directory for descriptions, wrappers, tokens and outputs.
    pub work_dir: PathBuf,
    pub launch: PilotLaunch,
    /// Submit to the local schedd (`universe = grid`) instead of the CE's.
    pub use_local_schedd: bool,
    pub token: Option<Arc<dyn TokenSource>>,
    /// Token audience (default `<host>:<port>`).
    pub audience: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for HtCondorCe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HtCondorCe")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// What the tools said.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A job's state from `JobStatus` and, for held jobs, the hold codes.
fn condor_state(
    status: u32,
    hold_code: Option<u32>,
    hold_subcode: Option<u32>,
    exit_code: Option<i64>,
) -> PilotState {
    match status {
        1 => PilotState::Waiting,
        2 | 6 | 7 => PilotState::Running,
        3 => PilotState::Aborted,
        4 if exit_code.is_some_and(|c| c != 0) => PilotState::Failed,
        4 => PilotState::Done,
        // Held while its input is spooled: still waiting.
        5 if hold_code == Some(16) => PilotState::Waiting,
        // on_exit_hold: the pilot exited non-zero.
        5 if hold_code == Some(3) && hold_subcode == Some(55) => PilotState::Failed,
        5 => PilotState::Aborted,
        _ => PilotState::Unknown,
    }
}

fn num<T: std::str::FromStr>(s: Option<&str>) -> Option<T> {
    s.and_then(|v| v.parse().ok())
}

/// A job id `C.P` of a reference of this CE.
fn valid_id(id: &str) -> bool {
    let mut parts = id.split('.');
    matches!((parts.next(), parts.next(), parts.next()),
        (Some(c), Some(p), None) if !c.is_empty() && !p.is_empty()
            && c.bytes().all(|b| b.is_ascii_digit()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A submit-description value in HTCondor's quoted form: `'` doubled.
fn quoted_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''").replace('"', "\"\""))
}

impl HtCondorCe {
    fn dir(&self) -> PathBuf {
        self.work_dir.join(&self.host)
    }

    fn id_of<'r>(&self, reference: &'r str) -> Option<&'r str> {
        let id = reference
            .strip_prefix("htcondorce://")?
            .strip_prefix(self.host.as_str())?
            .strip_prefix('/')?;
        valid_id(id).then_some(id)
    }

    /// `-pool CE:PORT -name CE` (nothing for the local schedd).
    fn schedd_args(&self) -> Vec<String> {
        if self.use_local_schedd {
            Vec::new()
        } else {
            vec![
                "-pool".into(),
                format!("{}:{}", self.host, self.port),
                "-name".into(),
                self.host.clone(),
            ]
        }
    }

    /// Run one HTCondor tool with the token in place.
    async fn tool(&self, program: &str, args: &[String]) -> Result<Ran, CeError> {
        let dir = self.dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| CeError::Config(format!("{}: {e}", dir.display())))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(source) = &self.token {
            let token = source.token(&self.audience).await?;
            let file = dir.join(".token");
            write_private(&file, &token)
                .map_err(|e| CeError::Config(format!("{}: {e}", file.display())))?;
            cmd.env("_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS", "SCITOKENS")
                .env("_CONDOR_SCITOKENS_FILE", &file);
        }
        let out = tokio::time::timeout(self.timeout, cmd.output())
            .await
            .map_err(|_| CeError::Timeout(self.timeout.as_secs()))?
            .map_err(|e| CeError::Unreachable(format!("{program}: {e}")))?;
        Ok(Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// The submit description of one batch of pilots.
    pub fn description(&self, stamps: &[&str]) -> String {
        let dir = self.dir();
        let cores = self.launch.cores.max(1);
        let mut d = String::from("# dirac-rs HTCondorCE pilot submission\n");
        if self.use_local_schedd {
            d.push_str(&format!(
                "universe = grid\ngrid_resource = condor {h} {h}:{p}\n",
                h = self.host,
                p = self.port
            ));
        } else {
            d.push_str("universe = vanilla\n");
        }
        d.push_str(&format!(
            "executable = {}/$(stamp).sh\n\
             initialdir = {}\n\
             output = $(Cluster).$(Process).out\n\
             error = $(Cluster).$(Process).err\n\
             log = $(Cluster).$(Process).log\n\
             transfer_output_files = \"\"\n\
             should_transfer_files = YES\n\
             when_to_transfer_output = ON_EXIT_OR_EVICT\n\
             environment = \"DIRAC_PILOT_STAMP=$(stamp) HTCONDOR_JOBID=$(Cluster).$(Process) DIRAC_QUEUE={}\"\n\
             request_cpus = {cores}\n\
             +xcount = {cores}\n",
            dir.display(),
            dir.display(),
            quoted_word(&self.launch.queue),
        ));
        if self.launch.max_ram_mb > 0 {
            d.push_str(&format!(
                "request_memory = {m}\n+maxMemory = {m}\n",
                m = self.launch.max_ram_mb
            ));
        }
        d.push_str(
            "kill_sig = SIGTERM\n\
             on_exit_hold = ExitCode =!= 0\n\
             on_exit_hold_subcode = 55\n\
             periodic_remove = (JobStatus != 1) && (JobStatus != 2) && ((time() - EnteredCurrentStatus) > (1 * 24 * 3600))\n\
             +PilotStamp = \"$(stamp)\"\n",
        );
        d.push_str(&format!("queue stamp in ({})\n", stamps.join(", ")));
        d
    }

    /// `JobStatus` and friends of `ids` from condor_q, then condor_history
    /// for those that left the queue.
    async fn query(&self, ids: &[&str]) -> Result<HashMap<String, (PilotState, u32)>, CeError> {
        let mut out = HashMap::new();
        let mut args = self.schedd_args();
        args.extend(ids.iter().map(|s| s.to_string()));
        args.extend(
            [
                "-af:j",
                "JobStatus",
                "HoldReasonCode",
                "HoldReasonSubCode",
                "HoldReason",
            ]
            .map(String::from),
        );
        let q = self.tool("condor_q", &args).await?;
        if q.code != 0 {
            return Err(CeError::Unreachable(format!(
                "condor_q: {}",
                q.stderr.trim()
            )));
        }
        for line in q.stdout.lines() {
            let mut f = line.splitn(5, ' ');
            let (Some(id), Some(status)) = (f.next(), num::<u32>(f.next())) else {
                continue;
            };
            let (code, sub) = (num(f.next()), num(f.next()));
            out.insert(
                id.to_string(),
                (condor_state(status, code, sub, None), status),
            );
        }
        let gone: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !out.contains_key(*id))
            .collect();
        if !gone.is_empty() {
            let mut args = self.schedd_args();
            args.extend(gone.iter().map(|s| s.to_string()));
            args.extend(["-af:j", "JobStatus", "ExitCode"].map(String::from));
            let h = self.tool("condor_history", &args).await?;
            if h.code != 0 {
                return Err(CeError::Unreachable(format!(
                    "condor_history: {}",
                    h.stderr.trim()
                )));
            }
            for line in h.stdout.lines() {
                let mut f = line.split(' ');
                let (Some(id), Some(status)) = (f.next(), num::<u32>(f.next())) else {
                    continue;
                };
                // Newest first: the first line of an id wins.
                out.entry(id.to_string())
                    .or_insert((condor_state(status, None, None, num(f.next())), status));
            }
        }
        Ok(out)
    }

    /// Fetch the outputs of finished spooled jobs (which lets them leave the
    /// queue for the history).
    async fn transfer(&self, ids: &[&str]) -> Result<(), CeError> {
        if ids.is_empty() || self.use_local_schedd {
            return Ok(());
        }
        let mut args = self.schedd_args();
        args.extend(ids.iter().map(|s| s.to_string()));
        let t = self.tool("condor_transfer_data", &args).await?;
        if t.code != 0 {
            return Err(CeError::Failed(format!(
                "condor_transfer_data: {}",
                t.stderr.trim()
            )));
        }
        Ok(())
    }
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    std::fs::rename(tmp, path)
}

#[async_trait::async_trait]
impl ComputingElement for HtCondorCe {
    fn grid_type(&self) -> &'static str {
        "HTCondorCE"
    }

    async fn submit(&self, pilots: &[PilotJob]) -> Result<Vec<Result<String, CeError>>, CeError> {
        if pilots.is_empty() {
            return Ok(Vec::new());
        }
        let dir = self.dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| CeError::Config(format!("{}: {e}", dir.display())))?;
        let mut stamps = Vec::with_capacity(pilots.len());
        for p in pilots {
            if p.stamp.is_empty() || !p.stamp.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(CeError::Failed(format!(
                    "invalid pilot stamp {:?}",
                    p.stamp
                )));
            }
            let wrapper = dir.join(format!("{}.sh", p.stamp));
            write_private(&wrapper, &self.launch.wrapper(&p.stamp, &p.secret, ""))
                .and_then(|()| {
                    use std::os::unix::fs::PermissionsExt as _;
                    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(|e| CeError::Config(format!("{}: {e}", wrapper.display())))?;
            stamps.push(p.stamp.as_str());
        }
        let sub = dir.join(format!("{}.sub", stamps[0]));
        std::fs::write(&sub, self.description(&stamps))
            .map_err(|e| CeError::Config(format!("{}: {e}", sub.display())))?;
        let mut args = vec!["-terse".to_string()];
        if !self.use_local_schedd {
            args.extend([
                "-pool".into(),
                format!("{}:{}", self.host, self.port),
                "-remote".into(),
                self.host.clone(),
            ]);
        }
        args.push(sub.display().to_string());
        let ran = self.tool("condor_submit", &args).await;
        // The wrappers were spooled (or not): their secrets stay nowhere here.
        for s in &stamps {
            let _ = std::fs::remove_file(dir.join(format!("{s}.sh")));
        }
        let ran = ran?;
        // With -remote the ids are printed before the spooling: an exit
        // code other than 0 means failure whatever stdout says.
        if ran.code != 0 {
            let msg = ran.stderr.trim().to_string();
            return Err(
                if msg.contains("Can't find address") || msg.contains("AUTHENTICATE") {
                    CeError::Unreachable(format!("condor_submit: {msg}"))
                } else {
                    CeError::Failed(format!("condor_submit: {msg}"))
                },
            );
        }
        let line = ran
            .stdout
            .lines()
            .find(|l| l.contains(" - "))
            .unwrap_or_default();
        let parse = |s: &str| -> Option<(u64, u64)> {
            let (c, p) = s.trim().split_once('.')?;
            Some((c.parse().ok()?, p.parse().ok()?))
        };
        let (first, last) = line
            .split_once(" - ")
            .and_then(|(a, b)| Some((parse(a)?, parse(b)?)))
            .ok_or_else(|| {
                CeError::Failed(format!("condor_submit answered {:?}", ran.stdout.trim()))
            })?;
        if first.0 != last.0 || last.1 < first.1 || (last.1 - first.1 + 1) as usize != pilots.len()
        {
            return Err(CeError::Failed(format!(
                "condor_submit queued {line:?} for {} pilots",
                pilots.len()
            )));
        }
        Ok((first.1..=last.1)
            .map(|proc| Ok(format!("htcondorce://{}/{}.{proc}", self.host, first.0)))
            .collect())
    }

    async fn status(&self, references: &[String]) -> Result<HashMap<String, PilotState>, CeError> {
        let ids: Vec<&str> = references.iter().filter_map(|r| self.id_of(r)).collect();
        let found = if ids.is_empty() {
            HashMap::new()
        } else {
            self.query(&ids).await?
        };
        // Finished spooled jobs wait in the queue for their outputs.
        let finished: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| {
                found
                    .get(*id)
                    .is_some_and(|(s, raw)| s.is_final() && *raw != 3)
            })
            .collect();
        if let Err(e) = self.transfer(&finished).await {
            tracing::warn!(ce = %self.host, error = %e, "cannot fetch pilot outputs");
        }
        Ok(references
            .iter()
            .map(|r| {
                let state = self
                    .id_of(r)
                    .and_then(|id| found.get(id))
                    .map(|(s, _)| *s)
                    .unwrap_or(PilotState::Unknown);
                (r.clone(), state)
            })
            .collect())
    }

    async fn kill(&self, references: &[String]) -> Result<(), CeError> {
        let ids: Vec<String> = references
            .iter()
            .filter_map(|r| self.id_of(r))
            .map(String::from)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut args = self.schedd_args();
        args.extend(ids);
        let ran = self.tool("condor_rm", &args).await?;
        // Jobs that are gone already are fine; anything else is not.
        let real_errors: Vec<&str> = ran
            .stderr
            .lines()
            .filter(|l| {
                !l.trim().is_empty() && !l.contains("not found") && !l.contains("already marked")
            })
            .collect();
        if ran.code != 0 && !real_errors.is_empty() {
            return Err(CeError::Failed(format!(
                "condor_rm: {}",
                real_errors.join(" ")
            )));
        }
        Ok(())
    }

    async fn logs(&self, reference: &str) -> Result<String, CeError> {
        let id = self
            .id_of(reference)
            .ok_or_else(|| CeError::Failed(format!("not a pilot of {}: {reference}", self.host)))?;
        let out = self.dir().join(format!("{id}.out"));
        if !out.exists() {
            self.transfer(&[id]).await?;
        }
        let mut text = std::fs::read_to_string(&out)
            .map_err(|_| CeError::Failed(format!("no output for {id} yet")))?;
        if let Ok(err) = std::fs::read_to_string(self.dir().join(format!("{id}.err"))) {
            text.push_str(&err);
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_dirac() {
        assert_eq!(condor_state(1, None, None, None), PilotState::Waiting);
        assert_eq!(condor_state(2, None, None, None), PilotState::Running);
        assert_eq!(condor_state(4, None, None, Some(0)), PilotState::Done);
        assert_eq!(condor_state(4, None, None, Some(2)), PilotState::Failed);
        assert_eq!(condor_state(5, Some(16), None, None), PilotState::Waiting);
        assert_eq!(condor_state(5, Some(3), Some(55), None), PilotState::Failed);
        assert_eq!(condor_state(5, Some(1), None, None), PilotState::Aborted);
        assert_eq!(condor_state(3, None, None, None), PilotState::Aborted);
    }

    #[test]
    fn ids_and_quoting() {
        assert!(valid_id("12.0") && !valid_id("12") && !valid_id("1.2.3") && !valid_id("a.0"));
        assert_eq!(quoted_word("long queue"), "'long queue'");
        assert_eq!(quoted_word("it's"), "'it''s'");
    }
}
