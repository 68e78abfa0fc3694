//! Command-line flags and the validated runtime configuration built from them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// A DIRAC pilot: registers itself, matches jobs and runs them.
#[derive(Parser, Clone)]
#[command(name = "dirac-pilot", version, about)]
pub struct Args {
    /// Server URL, `http://host:port` or `https://host:port`.
    #[arg(long)]
    pub url: String,
    /// File holding the bearer token (wins over --token).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Bearer token of a user with the GenericPilot property.
    #[arg(long, env = "DIRAC_PILOT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding a one-time pilot secret, exchanged at the AuthServer
    /// (`--auth-url`) for a pilot token; needs `--stamp`.
    #[arg(long, requires_all = ["auth_url", "stamp"])]
    pub pilot_secret_file: Option<PathBuf>,
    /// AuthServer base URL, for `--pilot-secret-file`.
    #[arg(long)]
    pub auth_url: Option<String>,
    /// CA certificate (PEM) of the server, for https.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    #[arg(long)]
    pub vo: String,
    #[arg(long)]
    pub site: String,
    #[arg(long)]
    pub ce: String,
    #[arg(long)]
    pub queue: String,
    /// Pilot stamp (default: 32 random hex digits).
    #[arg(long)]
    pub stamp: Option<String>,
    /// Cores offered (default: the cores this process may use).
    #[arg(long)]
    pub cores: Option<u32>,
    /// Memory offered in MB (default: MemTotal of /proc/meminfo).
    #[arg(long)]
    pub max_ram_mb: Option<u64>,
    /// CPU seconds left in the batch slot.
    #[arg(long, default_value_t = 86_400)]
    pub cpu_time: i64,
    /// Tags offered, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Tags a job must require to be matched, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub required_tags: Vec<String>,
    /// Platform string (default: detected, e.g. Linux_x86_64_glibc-2.36).
    #[arg(long)]
    pub platform: Option<String>,
    /// Working directory (default: ./pilot-<stamp>).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Largest number of job requests.
    #[arg(long, default_value_t = 100)]
    pub max_cycles: u32,
    /// Stop after this many consecutive requests that matched nothing.
    #[arg(long, default_value_t = 10)]
    pub stop_after_failed_matches: u32,
    /// Seconds between job requests (fractions allowed).
    #[arg(long, default_value_t = 20.0)]
    pub polling_time: f64,
    /// Seconds between job heartbeats (fractions allowed).
    #[arg(long, default_value_t = 30.0)]
    pub heartbeat: f64,
    /// The pilot stops matching when this file exists.
    #[arg(long, default_value = "/var/lib/dirac_drain")]
    pub drain_file: PathBuf,
    /// Keep the directories of successful jobs (failed ones are always kept).
    #[arg(long)]
    pub keep_job_dirs: bool,
    /// Log JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
    /// Push mode: run each payload on a CE without outbound connectivity,
    /// through this command (e.g. `ssh -p 22 user@login.hpc.example`), which
    /// gets a shell command line as its last argument. The job directory is
    /// copied there and back.
    #[arg(long, value_name = "COMMAND")]
    pub remote_shell: Option<String>,
    /// Push mode: where job directories go on the CE (relative: to the
    /// login's home).
    #[arg(long, default_value = "dirac-push", value_name = "DIR")]
    pub remote_work_dir: String,
}

impl fmt::Debug for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Args")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .finish_non_exhaustive()
    }
}

/// The pilot's settings once checked.
#[derive(Clone)]
pub struct PilotConfig {
    pub url: String,
    pub token: String,
    pub ca_cert: Option<PathBuf>,
    pub vo: String,
    pub site: String,
    pub ce: String,
    pub queue: String,
    pub stamp: String,
    pub cores: Option<u32>,
    pub max_ram_mb: Option<u64>,
    pub cpu_time: i64,
    pub tags: Vec<String>,
    pub required_tags: Vec<String>,
    pub platform: Option<String>,
    pub work_dir: PathBuf,
    pub max_cycles: u32,
    pub stop_after_failed_matches: u32,
    pub polling_time: Duration,
    pub heartbeat: Duration,
    pub drain_file: PathBuf,
    pub keep_job_dirs: bool,
    /// Push mode: where payloads run.
    pub remote: Option<crate::remote::Remote>,
}

impl fmt::Debug for PilotConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PilotConfig")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("stamp", &self.stamp)
            .field("site", &self.site)
            .field("ce", &self.ce)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// 32 random lowercase hex digits.
pub fn random_stamp() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn seconds(flag: &str, value: f64) -> Result<Duration, String> {
    if !value.is_finite() || value <= 0.0 || value > 86_400.0 {
        return Err(format!(
            "--{flag} must be a number of seconds in (0, 86400], got {value}"
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

fn required(flag: &str, value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("--{flag} must not be empty"));
    }
    Ok(value.to_owned())
}

fn clean_list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

impl PilotConfig {
    /// Checks the flags; `token` is the token already read from the file or
    /// the flag. Messages name the bad flag and never the token.
    pub fn new(args: &Args, token: String) -> Result<Self, String> {
        if token.trim().is_empty() {
            return Err("no token: pass --token-file, --token or set DIRAC_PILOT_TOKEN".to_owned());
        }
        let stamp = match &args.stamp {
            Some(s) => required("stamp", s)?,
            None => random_stamp(),
        };
        if stamp.len() > 64
            || !stamp
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "--stamp {stamp:?} must be at most 64 letters, digits, '-', '_' or '.'"
            ));
        }
        if args.cores == Some(0) {
            return Err("--cores must be at least 1".to_owned());
        }
        if args.max_ram_mb == Some(0) {
            return Err("--max-ram-mb must be positive".to_owned());
        }
        if args.cpu_time <= 0 {
            return Err(format!(
                "--cpu-time must be positive, got {}",
                args.cpu_time
            ));
        }
        if args.max_cycles == 0 {
            return Err("--max-cycles must be at least 1".to_owned());
        }
        if args.stop_after_failed_matches == 0 {
            return Err("--stop-after-failed-matches must be at least 1".to_owned());
        }
        let work_dir = args
            .work_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("pilot-{stamp}")));
        Ok(Self {
            url: required("url", &args.url)?,
            token: token.trim().to_owned(),
            ca_cert: args.ca_cert.clone(),
            vo: required("vo", &args.vo)?,
            site: required("site", &args.site)?,
            ce: required("ce", &args.ce)?,
            queue: required("queue", &args.queue)?,
            stamp,
            cores: args.cores,
            max_ram_mb: args.max_ram_mb,
            cpu_time: args.cpu_time,
            tags: clean_list(&args.tags),
            required_tags: clean_list(&args.required_tags),
            platform: args
                .platform
                .as_deref()
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned),
            work_dir,
            max_cycles: args.max_cycles,
            stop_after_failed_matches: args.stop_after_failed_matches,
            polling_time: seconds("polling-time", args.polling_time)?,
            heartbeat: seconds("heartbeat", args.heartbeat)?,
            drain_file: args.drain_file.clone(),
            keep_job_dirs: args.keep_job_dirs,
            remote: args
                .remote_shell
                .as_deref()
                .map(|shell| crate::remote::Remote::parse(shell, &args.remote_work_dir))
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec![
            "dirac-pilot",
            "--url",
            "http://127.0.0.1:1",
            "--vo",
            "vo",
            "--site",
            "DIRAC.Test.org",
            "--ce",
            "ce.test.org",
            "--queue",
            "q",
        ];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).expect("args")
    }

    #[test]
    fn defaults() {
        let cfg = PilotConfig::new(&args(&[]), "tok".to_owned()).expect("config");
        assert_eq!(cfg.stamp.len(), 32);
        assert!(cfg.stamp.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(cfg.work_dir, PathBuf::from(format!("pilot-{}", cfg.stamp)));
        assert_eq!(cfg.polling_time, Duration::from_secs(20));
        assert_eq!(cfg.heartbeat, Duration::from_secs(30));
        assert_eq!(cfg.max_cycles, 100);
        assert_eq!(cfg.stop_after_failed_matches, 10);
        assert_eq!(cfg.cpu_time, 86_400);
        assert_eq!(cfg.drain_file, PathBuf::from("/var/lib/dirac_drain"));
        assert_ne!(random_stamp(), random_stamp());
    }

    #[test]
    fn flags() {
        let a = args(&[
            "--polling-time",
            "0.2",
            "--heartbeat",
            "1",
            "--tags",
            "GPU, MultiProcessor,",
            "--stamp",
            "abc",
            "--cores",
            "3",
        ]);
        let cfg = PilotConfig::new(&a, " tok\n".to_owned()).expect("config");
        assert_eq!(cfg.polling_time, Duration::from_millis(200));
        assert_eq!(cfg.tags, ["GPU", "MultiProcessor"]);
        assert_eq!(cfg.stamp, "abc");
        assert_eq!(cfg.token, "tok");
        assert_eq!(cfg.cores, Some(3));
    }

    #[test]
    fn bad_flags_are_named() {
        let check = |extra: &[&str], fragment: &str| {
            let msg = PilotConfig::new(&args(extra), "secret".to_owned())
                .map(|_| ())
                .expect_err(fragment);
            assert!(msg.contains(fragment), "{msg} lacks {fragment}");
            assert!(!msg.contains("secret"));
        };
        check(&["--polling-time", "0"], "--polling-time");
        check(&["--heartbeat", "NaN"], "--heartbeat");
        check(&["--stamp", "a b"], "--stamp");
        check(&["--cores", "0"], "--cores");
        check(&["--cpu-time", "0"], "--cpu-time");
        check(&["--stamp", " "], "--stamp must not be empty");
        let msg = PilotConfig::new(&args(&[]), " ".to_owned())
            .map(|_| ())
            .expect_err("token");
        assert!(msg.contains("no token"));
    }

    #[test]
    fn debug_hides_the_token() {
        let a = args(&["--token", "secret-token"]);
        assert!(!format!("{a:?}").contains("secret-token"));
        let cfg = PilotConfig::new(&a, "secret-token".to_owned()).expect("config");
        assert!(!format!("{cfg:?}").contains("secret-token"));
    }
}
