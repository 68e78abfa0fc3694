//! The pilot wrapper: a small bash script, one per pilot, that a CE runs on
//! the worker node. It makes a private work directory, writes the pilot's
//! one-time secret there, fetches `dirac-pilot` (over http(s), or copies it
//! from a path such as CVMFS), refuses a binary whose sha256 differs, and
//! runs it. Every value in the script is shell-quoted; the secret never
//! appears on a command line.

use sha2::{Digest as _, Sha256};

/// Where the wrapper gets the pilot binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PilotSource {
    /// `http://` or `https://` URL, fetched with curl (or wget).
    Url(String),
    /// A path on the worker node (CVMFS, a shared file system).
    Path(String),
}

impl PilotSource {
    /// `http(s)://…` is a URL, anything else a path on the worker node.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("http://") || s.starts_with("https://") {
            PilotSource::Url(s.to_string())
        } else {
            PilotSource::Path(s.strip_prefix("file://").unwrap_or(s).to_string())
        }
    }
}

/// Everything a pilot of one queue is started with (the stamp and secret
/// come per pilot).
#[derive(Debug, Clone)]
pub struct PilotLaunch {
    pub source: PilotSource,
    /// Lower-case hex sha256 of the pilot binary.
    pub sha256: String,
    /// The services' URL and the AuthServer's, as the worker node reaches them.
    pub url: String,
    pub auth_url: String,
    pub vo: String,
    pub site: String,
    pub ce: String,
    pub queue: String,
    pub cores: u64,
    /// Seconds of CPU time the queue grants.
    pub cpu_time: u64,
    /// MB per slot, 0 when unknown.
    pub max_ram_mb: u64,
    pub tags: Vec<String>,
    pub platform: Option<String>,
    /// Further `dirac-pilot` options, passed as they are.
    pub options: Vec<String>,
}

/// The sha256 of a file, lower-case hex.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn q(s: &str) -> std::borrow::Cow<'_, str> {
    shell_words::quote(s)
}

impl PilotLaunch {
    /// The wrapper script of one pilot. `base_dir` is where it makes its
    /// work directory (`$base_dir/<stamp>`); an empty value means
    /// `$DIRAC_PILOT_BASE`, or else the directory it is started in.
    pub fn wrapper(&self, stamp: &str, secret: &str, base_dir: &str) -> String {
        let mut args: Vec<String> = vec![
            "--url".into(),
            self.url.clone(),
            "--auth-url".into(),
            self.auth_url.clone(),
            "--vo".into(),
            self.vo.clone(),
            "--site".into(),
            self.site.clone(),
            "--ce".into(),
            self.ce.clone(),
            "--queue".into(),
            self.queue.clone(),
            "--stamp".into(),
            stamp.to_string(),
            "--cores".into(),
            self.cores.max(1).to_string(),
            "--cpu-time".into(),
            self.cpu_time.to_string(),
        ];
        if self.max_ram_mb > 0 {
            args.extend(["--max-ram-mb".into(), self.max_ram_mb.to_string()]);
        }
        if !self.tags.is_empty() {
            args.extend(["--tags".into(), self.tags.join(",")]);
        }
        if let Some(p) = &self.platform {
            args.extend(["--platform".into(), p.clone()]);
        }
        args.extend(self.options.iter().cloned());
        let args = args.iter().map(|a| q(a)).collect::<Vec<_>>().join(" ");
        let fetch = match &self.source {
            PilotSource::Url(url) => format!(
                "if command -v curl >/dev/null; then curl -fsSL --retry 3 --connect-timeout 20 -o dirac-pilot {u}; else wget -q -t 3 -O dirac-pilot {u}; fi || fail 72 \"cannot download the pilot from \"{u}",
                u = q(url)
            ),
            PilotSource::Path(path) => format!(
                "cp {p} dirac-pilot || fail 72 \"cannot copy the pilot from \"{p}",
                p = q(path)
            ),
        };
        let base = if base_dir.is_empty() {
            "\"${DIRAC_PILOT_BASE:-$PWD}\"".to_string()
        } else {
            q(base_dir).into_owned()
        };
        // A secret is a token of URL-safe characters; anything else would be
        // refused by the AuthServer anyway, so it is never interpolated raw.
        format!(
            r#"#!/bin/bash
# dirac-rs pilot wrapper, pilot {stamp}
umask 077
log() {{ printf '%s dirac-pilot-wrapper: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }}
fail() {{ log "$2"; exit "$1"; }}
work={base}/{stamp_q}
mkdir -p "$work" && cd "$work" || fail 70 "cannot make the work directory $work"
log "host $(hostname) work directory $work"
printf '%s' {secret} > secret || fail 71 "cannot write the pilot secret"
{fetch}
echo {sha}'  dirac-pilot' | sha256sum -c --status - || fail 73 "the pilot binary does not have sha256 {sha}"
chmod 700 dirac-pilot
log "starting dirac-pilot"
./dirac-pilot {args} --pilot-secret-file "$work/secret" --work-dir "$work/jobs"
rc=$?
rm -f secret dirac-pilot
log "dirac-pilot exited with $rc"
exit $rc
"#,
            stamp_q = q(stamp),
            secret = q(secret),
            sha = q(&self.sha256),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(source: PilotSource, sha256: &str) -> PilotLaunch {
        PilotLaunch {
            source,
            sha256: sha256.into(),
            url: "http://127.0.0.1:1".into(),
            auth_url: "http://127.0.0.1:2".into(),
            vo: "vo".into(),
            site: "LCG.Site.org".into(),
            ce: "ce; rm -rf /".into(),
            queue: "q$(id)".into(),
            cores: 2,
            cpu_time: 3600,
            max_ram_mb: 0,
            tags: vec!["a".into(), "b c".into()],
            platform: None,
            options: vec!["--max-cycles".into(), "1".into()],
        }
    }

    /// Run a wrapper whose "pilot" is a shell script printing its arguments.
    fn run(launch: &PilotLaunch, dir: &std::path::Path) -> (i32, String, String) {
        let script = launch.wrapper("0123abcd", "s3cr'et", dir.to_str().unwrap_or_default());
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(dir)
            .output()
            .expect("bash runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn fake_pilot(dir: &std::path::Path) -> (std::path::PathBuf, String) {
        let path = dir.join("fake-pilot");
        std::fs::write(
            &path,
            "#!/bin/bash\nprintf '%s\\n' \"$@\"\ncat \"$(dirname \"$0\")/secret\"; echo\nexit 3\n",
        )
        .expect("write");
        let sha = sha256_file(&path).expect("hash");
        (path, sha)
    }

    #[test]
    fn runs_the_checked_binary_with_quoted_arguments() {
        let dir = tempfile::tempdir().expect("tmp");
        let (path, sha) = fake_pilot(dir.path());
        let launch = launch(PilotSource::Path(path.display().to_string()), &sha);
        let (rc, out, err) = run(&launch, dir.path());
        assert_eq!(rc, 3, "the pilot's exit code is the wrapper's: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.contains(&"ce; rm -rf /"), "{out}");
        assert!(lines.contains(&"q$(id)"), "{out}");
        assert!(lines.contains(&"a,b c"), "{out}");
        assert!(
            lines.contains(&"s3cr'et"),
            "the secret arrives intact: {out}"
        );
        assert!(!out.contains("--pilot-secret-file s3cr"), "{out}");
        assert!(
            !dir.path().join("0123abcd/secret").exists(),
            "the secret is removed after the pilot"
        );
    }

    #[test]
    fn refuses_a_binary_with_another_checksum() {
        let dir = tempfile::tempdir().expect("tmp");
        let (path, _) = fake_pilot(dir.path());
        let launch = launch(
            PilotSource::Path(path.display().to_string()),
            &"0".repeat(64),
        );
        let (rc, out, err) = run(&launch, dir.path());
        assert_eq!(rc, 73, "{err}");
        assert!(out.is_empty(), "the binary did not run: {out}");
        assert!(err.contains("does not have sha256"), "{err}");
    }

    #[test]
    fn a_missing_binary_is_a_clear_failure() {
        let dir = tempfile::tempdir().expect("tmp");
        let launch = launch(PilotSource::Path("/nonexistent/dirac-pilot".into()), "00");
        let (rc, _, err) = run(&launch, dir.path());
        assert_eq!(rc, 72, "{err}");
        assert!(err.contains("cannot copy the pilot"), "{err}");
    }

    #[test]
    fn sources_parse() {
        assert_eq!(
            PilotSource::parse("https://x/p"),
            PilotSource::Url("https://x/p".into())
        );
        assert_eq!(
            PilotSource::parse("file:///cvmfs/p"),
            PilotSource::Path("/cvmfs/p".into())
        );
    }
}
