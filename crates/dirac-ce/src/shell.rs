//! Where batch-system commands run: a bash on this host, or one on a login
//! node reached with the `ssh` client (DIRAC's SSHComputingElement). A
//! script always travels on standard input, so nothing secret shows on a
//! command line, and one connection does a whole bulk operation.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use crate::CeError;

#[derive(Debug, Clone)]
pub enum Shell {
    Local,
    Ssh(SshTarget),
}

#[derive(Debug, Clone)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub key: Option<PathBuf>,
    /// Known-hosts file; without one the user's own is used, and an unknown
    /// host key is refused (never accepted blindly).
    pub known_hosts: Option<PathBuf>,
}

impl SshTarget {
    /// `ssh` with this target's options and host, ready for a remote
    /// command as its last argument.
    pub fn ssh_command(&self) -> Vec<String> {
        let mut w: Vec<String> = [
            "ssh",
            "-T",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=20",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "LogLevel=ERROR",
            "-p",
        ]
        .map(String::from)
        .to_vec();
        w.push(self.port.to_string());
        if let Some(key) = &self.key {
            w.extend(["-i".to_string(), key.display().to_string()]);
            w.extend(["-o".to_string(), "IdentitiesOnly=yes".to_string()]);
        }
        if let Some(kh) = &self.known_hosts {
            w.extend([
                "-o".to_string(),
                format!("UserKnownHostsFile={}", kh.display()),
            ]);
        }
        if let Some(user) = &self.user {
            w.extend(["-l".to_string(), user.clone()]);
        }
        w.push(self.host.clone());
        w
    }
}

/// What a script printed, and how it ended.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Shell {
    /// A name for references and logs: `localhost` or the SSH host.
    pub fn host(&self) -> &str {
        match self {
            Shell::Local => "localhost",
            Shell::Ssh(t) => &t.host,
        }
    }

    fn command(&self) -> Command {
        match self {
            Shell::Local => {
                let mut c = Command::new("bash");
                c.arg("-s");
                c
            }
            Shell::Ssh(t) => {
                let words = t.ssh_command();
                let mut c = Command::new(&words[0]);
                c.args(&words[1..]).arg("bash -s");
                c
            }
        }
    }

    /// Run `script` with bash; an SSH failure to connect (exit 255) is
    /// `Unreachable`, running out of `timeout` is `Timeout` (the process is
    /// killed).
    pub async fn run(&self, script: &str, timeout: Duration) -> Result<Output, CeError> {
        let mut child = self
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| CeError::Unreachable(format!("cannot start the shell: {e}")))?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| CeError::Unreachable("no stdin".into()))?;
        let script = script.to_string();
        let feed = async move {
            // A shell that exits early closes its stdin: not an error here.
            let _ = stdin.write_all(script.as_bytes()).await;
            let _ = stdin.shutdown().await;
        };
        let run = async {
            let ((), out) = tokio::join!(feed, child.wait_with_output());
            out
        };
        let out = tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| CeError::Timeout(timeout.as_secs()))?
            .map_err(|e| CeError::Unreachable(format!("shell: {e}")))?;
        let out = Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if matches!(self, Shell::Ssh(_)) && out.code == 255 {
            return Err(CeError::Unreachable(format!(
                "ssh {}: {}",
                self.host(),
                out.stderr.trim()
            )));
        }
        Ok(out)
    }
}
