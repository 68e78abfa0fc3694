//! Push mode (DIRAC's PushJobAgent): the pilot runs on the DIRAC side, for a
//! CE whose worker nodes cannot reach the services. It matches, downloads
//! sandboxes and input data and reports as usual, but each payload runs on
//! the CE: the job directory is copied there through a shell command (`ssh
//! … login.hpc.example`, which gets a command line as its last argument),
//! the payload runs there with its environment, and the directory comes back
//! (and is removed there) before outputs are uploaded.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

fn q(s: &str) -> String {
    shell_words::quote(s).into_owned()
}

/// `PATH` of payloads on the CE's side.
const REMOTE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

#[derive(Debug, Clone)]
pub struct Remote {
    /// The command reaching the CE, e.g. `["ssh", "-p", "22", "host"]`.
    pub shell: Vec<String>,
    /// Where job directories go on the CE (relative: to the login's home).
    pub work_dir: String,
}

impl Remote {
    pub fn parse(shell: &str, work_dir: &str) -> Result<Self, String> {
        let shell = shell_words::split(shell).map_err(|e| format!("--remote-shell: {e}"))?;
        if shell.is_empty() {
            return Err("--remote-shell is empty".into());
        }
        if work_dir.is_empty()
            || work_dir.split('/').any(|c| c == "..")
            || work_dir.chars().any(|c| c.is_control())
        {
            return Err(format!(
                "--remote-work-dir {work_dir:?} is not a usable directory"
            ));
        }
        Ok(Remote {
            shell,
            work_dir: work_dir.to_string(),
        })
    }

    /// The job's directory on the CE.
    pub fn job_dir(&self, stamp: &str, job_id: u64) -> String {
        format!("{}/{stamp}-{job_id}", self.work_dir.trim_end_matches('/'))
    }

    fn through(&self, remote_command: &str) -> String {
        let mut words: Vec<String> = self.shell.iter().map(|w| q(w)).collect();
        words.push(q(remote_command));
        words.join(" ")
    }

    async fn bash(&self, script: &str) -> Result<(), String> {
        let out = Command::new("bash")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|e| format!("bash: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Copy `job_dir` to `remote_dir` on the CE.
    pub async fn stage_in(&self, job_dir: &Path, remote_dir: &str) -> Result<(), String> {
        let rd = q(remote_dir);
        let script = format!(
            "set -o pipefail; tar -C {} -cf - . | {}",
            q(&job_dir.display().to_string()),
            self.through(&format!(
                "rm -rf {rd} && mkdir -p {rd} && tar -C {rd} -xf -"
            ))
        );
        self.bash(&script)
            .await
            .map_err(|e| format!("cannot copy the job to the CE: {e}"))
    }

    /// Copy `remote_dir` back into `job_dir` and remove it on the CE.
    pub async fn stage_out(&self, job_dir: &Path, remote_dir: &str) -> Result<(), String> {
        let rd = q(remote_dir);
        let script = format!(
            "set -o pipefail; {} | tar -C {} -xf -",
            self.through(&format!("tar -C {rd} -cf - . && rm -rf {rd}")),
            q(&job_dir.display().to_string())
        );
        self.bash(&script)
            .await
            .map_err(|e| format!("cannot copy the job back from the CE: {e}"))
    }

    /// The local command that runs the payload on the CE: `executable` and
    /// `args` in `remote_dir`, with `env` (paths under the local `job_dir`
    /// moved to the remote one, `PATH` the CE's).
    pub fn command(
        &self,
        remote_dir: &str,
        job_dir: &Path,
        executable: &str,
        args: &[String],
        env: &[(OsString, OsString)],
    ) -> Command {
        let local = job_dir.display().to_string();
        let value = |v: &str| -> String {
            match v.strip_prefix(&local) {
                Some(rest) => format!("\"$PWD\"{}", q(rest)),
                None => q(v),
            }
        };
        let mut words = vec![format!("cd {} && exec env -i", q(remote_dir))];
        for (k, v) in env {
            let (k, v) = (k.to_string_lossy(), v.to_string_lossy());
            let v = if k == "PATH" {
                q(REMOTE_PATH)
            } else {
                value(&v)
            };
            words.push(format!("{}={v}", q(&k)));
        }
        let exe = match executable.strip_prefix(&local) {
            Some(rest) => format!(".{}", q(rest)),
            None => q(executable),
        };
        words.push(exe);
        words.extend(args.iter().map(|a| q(a)));
        let mut cmd = Command::new(&self.shell[0]);
        cmd.args(&self.shell[1..]).arg(words.join(" "));
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "remote shell" that is bash on this host, in another directory.
    fn local_remote(dir: &Path) -> Remote {
        Remote::parse("bash -c", &dir.join("remote").display().to_string()).expect("parse")
    }

    #[tokio::test]
    async fn a_job_goes_there_runs_and_comes_back() {
        let tmp = tempfile::tempdir().expect("tmp");
        let job_dir = tmp.path().join("job");
        std::fs::create_dir_all(&job_dir).expect("mkdir");
        std::fs::write(job_dir.join("input.txt"), "in\n").expect("write");
        let remote = local_remote(tmp.path());
        let rdir = remote.job_dir("abc", 7);
        remote.stage_in(&job_dir, &rdir).await.expect("stage in");
        assert!(Path::new(&rdir).join("input.txt").exists());
        let env = vec![
            (OsString::from("PATH"), OsString::from("/nowhere")),
            (OsString::from("HOME"), job_dir.clone().into_os_string()),
            (OsString::from("ODD"), OsString::from("a 'b' $c")),
        ];
        let out = remote
            .command(
                &rdir,
                &job_dir,
                "/bin/sh",
                &[
                    "-c".into(),
                    "cat input.txt; echo \"$HOME|$ODD|$PATH\" > result.txt; pwd >> result.txt"
                        .into(),
                ],
                &env,
            )
            .output()
            .await
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "in\n");
        remote.stage_out(&job_dir, &rdir).await.expect("stage out");
        let result = std::fs::read_to_string(job_dir.join("result.txt")).expect("result");
        let lines: Vec<&str> = result.lines().collect();
        assert_eq!(
            lines[0],
            format!("{rdir}|a 'b' $c|{REMOTE_PATH}"),
            "HOME moved, values intact"
        );
        assert_eq!(lines[1], rdir);
        assert!(!Path::new(&rdir).exists(), "removed on the CE");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Remote::parse("", "x").is_err());
        assert!(Remote::parse("ssh 'unclosed", "x").is_err());
        assert!(Remote::parse("ssh host", "../x").is_err());
    }
}
