//! End-to-end: the real `diracd all` and `dirac` binaries on loopback, and a
//! Python grpcio client that knows nothing but server reflection.
//!
//! The binaries are found next to this test's executable (cargo builds every
//! workspace binary before running workspace tests).

mod ce;
mod envoy;
mod operator;
mod otlp;
mod requests;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A running `diracd all` in its own data directory, stopped with SIGTERM.
struct Diracd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Diracd {
    /// Services and agents only: no local pilots, so jobs wait.
    fn start() -> Diracd {
        Self::start_with(
            tempfile::tempdir().expect("tmp"),
            &[("DIRAC__RESOURCES__SITES", "{}".into())],
        )
    }

    fn start_with(dir: tempfile::TempDir, env: &[(&str, String)]) -> Diracd {
        // A client.yaml of an earlier run must not pass for this one.
        let _ = std::fs::remove_file(dir.path().join("client.yaml"));
        let log = std::fs::File::create(dir.path().join("diracd.log")).expect("log");
        let child = Command::new(bin("diracd"))
            .args([
                "all",
                "--listen",
                "127.0.0.1:0",
                "--auth-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start diracd");
        let d = Diracd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !d.client_config().exists() {
            assert!(
                Instant::now() < deadline,
                "diracd did not start: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn client_config(&self) -> PathBuf {
        self.dir.path().join("client.yaml")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("diracd.log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        let text = std::fs::read_to_string(self.client_config()).expect("client.yaml");
        text.lines()
            .find_map(|l| l.strip_prefix("url: "))
            .expect("url line")
            .to_string()
    }

    fn token_for(&self, user: &str) -> String {
        self.token_in(user, None)
    }

    /// A token of `user`, in `group` when given (else the default group).
    fn token_in(&self, user: &str, group: Option<&str>) -> String {
        let mut cmd = Command::new(bin("diracd"));
        cmd.args(["token", "--user", user]);
        if let Some(g) = group {
            cmd.args(["--group", g]);
        }
        let out = cmd
            .arg("--data-dir")
            .arg(self.dir.path())
            .output()
            .expect("diracd token");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `dirac ARGS` as the default user (or `token`'s), with `home` as HOME
    /// (its session directory) and `cwd` as working directory.
    fn dirac_in(&self, home: &Path, cwd: &Path, token: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin("dirac"));
        cmd.arg("--config").arg(self.client_config());
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        cmd.args(args)
            .env("HOME", home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DIRAC_URL")
            .env_remove("DIRAC_TOKEN")
            .env_remove("DIRAC_SE")
            .current_dir(cwd)
            .output()
            .expect("run dirac")
    }

    /// `dirac ARGS` as the default user (alice).
    fn dirac(&self, args: &[&str]) -> Output {
        dirac_with(&self.client_config(), args)
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        dirac_json(&self.client_config(), args)
    }

    fn stop(self) {
        drop(self.stop_and_keep());
    }

    /// SIGTERM, a clean exit, and the data directory handed to the caller.
    fn stop_and_keep(mut self) -> tempfile::TempDir {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "diracd exited with {status}: {}",
                    self.log()
                );
                return std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tmp"));
            }
            assert!(Instant::now() < deadline, "diracd ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `dirac ARGS` with the client configuration `config`.
fn dirac_with(config: &Path, args: &[&str]) -> Output {
    Command::new(bin("dirac"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("DIRAC_URL")
        .env_remove("DIRAC_TOKEN")
        .output()
        .expect("run dirac")
}

/// `dirac --json ARGS` with `config`, which must succeed.
fn dirac_json(config: &Path, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = dirac_with(config, &full);
    assert!(
        out.status.success(),
        "dirac {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

impl Drop for Diracd {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["job_id"].as_u64().expect("id"))
        .collect()
}

#[test]
fn embedded_installation_runs_the_job_lifecycle() {
    let d = Diracd::start();
    let examples = repo().join("examples");
    let files: Vec<String> = ["hello.jdl", "parametric.jdl", "multicore.jdl"]
        .iter()
        .map(|f| examples.join(f).display().to_string())
        .collect();
    let mut args = vec!["job", "submit"];
    args.extend(files.iter().map(String::as_str));
    let submitted = d.json(&args);
    let jobs = ids(&submitted);
    assert_eq!(jobs.len(), 5, "1 + 3 parametric + 1: {submitted}");

    // The optimizer takes them to Waiting.
    let id_args: Vec<String> = jobs.iter().map(u64::to_string).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut a = vec!["job", "status"];
        a.extend(id_args.iter().map(String::as_str));
        let st = d.json(&a);
        if st["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .all(|j| j["status"] == "Waiting")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jobs did not reach Waiting: {st}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let found = d.json(&[
        "job",
        "search",
        "--where",
        "JobName~param_%",
        "--sort",
        "JobID:desc",
    ]);
    assert_eq!(found["total"], 3, "{found}");
    assert_eq!(ids(&found), vec![jobs[3], jobs[2], jobs[1]]);
    let summary = d.json(&["job", "summary", "--group-by", "Status"]);
    assert_eq!(summary["rows"][0]["values"][0], "Waiting");
    assert_eq!(summary["rows"][0]["count"], 5);
    let history = d.json(&["job", "history", &id_args[0]]);
    let statuses: Vec<&str> = history["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["Received", "Checking", "Waiting"]);
    let jdl = d.json(&["job", "jdl", &id_args[4]]);
    assert!(
        jdl["jdl"].as_str().expect("jdl").contains("MultiProcessor"),
        "{jdl}"
    );

    // Another user sees none of it and cannot kill it.
    let bob = d.token_for("bob");
    let out = d.dirac(&["--token", &bob, "job", "kill", &id_args[0]]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Kill, reschedule and delete as the owner.
    let killed = d.json(&["job", "kill", &id_args[0]]);
    assert_eq!(killed["succeeded"][0], jobs[0]);
    let resched = d.json(&["job", "reschedule", &id_args[1]]);
    assert_eq!(resched["succeeded"][0], jobs[1]);
    let out = d.dirac(&["--json", "job", "delete", &id_args[0], "999999"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed item makes the exit code 1"
    );
    let deleted: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(deleted["succeeded"][0], jobs[0]);
    assert_eq!(deleted["failed"]["999999"]["code"], "NotFound");

    // Bad input is named, not a crash.
    let out = d.dirac(&["job", "search", "--where", "Colour=red"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown job parameter 'Colour'"));
    d.stop();
}

/// Where `scripts/test-tools.sh` installs the test tools.
fn test_tools() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("DIRAC_TEST_TOOLS") {
        return Some(PathBuf::from(dir));
    }
    let home = std::env::var("HOME").ok()?;
    Some(Path::new(&home).join(".cache/dirac-test-tools"))
}

/// The test tools' Python, or `None` after saying why the test skips —
/// outside CI only: in CI missing tools fail the test.
fn tools_python() -> Option<PathBuf> {
    let found = python();
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but the test-tools venv is missing: run `make test-tools`"
        );
        eprintln!("skipping: no test-tools venv (run `make test-tools`)");
    }
    found
}

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("DIRAC_TEST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let p = test_tools()?.join("venv/bin/python");
    p.exists().then_some(p)
}

#[test]
fn any_grpc_client_works_through_reflection() {
    let Some(python) = tools_python() else {
        return;
    };
    let d = Diracd::start();
    let submitted = d.json(&[
        "job",
        "submit",
        &repo().join("examples/hello.jdl").display().to_string(),
    ]);
    let id = ids(&submitted)[0];
    let token = std::fs::read_to_string(d.client_config())
        .expect("client.yaml")
        .lines()
        .find_map(|l| l.strip_prefix("token: ").map(str::to_string))
        .expect("token");
    let target = d.url().trim_start_matches("http://").to_string();
    let out = Command::new(python)
        .arg(repo().join("tests/python/reflection_client.py"))
        .args([&target, &token])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let services: Vec<&str> = v["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    for s in [
        "dirac.wms.v1.JobManager",
        "dirac.wms.v1.JobMonitoring",
        "dirac.wms.v1.JobStateUpdate",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(&s), "{s} missing from {services:?}");
    }
    assert_eq!(v["total"], 1);
    assert_eq!(v["first"], id);
    assert_eq!(v["health"], "SERVING");
    assert_eq!(v["unauthenticated"], "UNAUTHENTICATED");
    assert_eq!(
        v["not_utf8"], "INVALID_ARGUMENT",
        "an undecodable request is bad input"
    );
    d.stop();
}

#[test]
fn tls_is_served_with_rustls_when_configured() {
    let dir = tempfile::tempdir().expect("tmp");
    let (ca, cert, key) = test_ca(dir.path());
    // The TLS section comes from the environment, as YAML.
    let tls = format!("{{Cert: {cert}, Key: {key}}}");
    let d = Diracd::start_with(dir, &[("DIRAC__SERVICES__TLS", tls)]);
    let url = d.url();
    assert!(url.starts_with("https://"), "{url}");
    let text = std::fs::read_to_string(d.client_config()).expect("client.yaml");
    let with_ca = d.dir.path().join("client-ca.yaml");
    std::fs::write(&with_ca, format!("{text}ca_cert: {ca}\n")).expect("write");
    let hello = repo().join("examples/hello.jdl").display().to_string();
    let out = Command::new(bin("dirac"))
        .arg("--config")
        .arg(&with_ca)
        .args(["--json", "job", "submit", &hello])
        .output()
        .expect("dirac");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP/2 to the TLS port fails.
    let plain = url.replacen("https://", "http://", 1);
    let out = Command::new(bin("dirac"))
        .arg("--config")
        .arg(d.client_config())
        .args(["--url", &plain, "job", "search"])
        .output()
        .expect("dirac");
    assert!(!out.status.success());
    d.stop();
}

/// A throw-away CA (P-256) and a server certificate it signed for
/// 127.0.0.1 and localhost, in `dir`: (ca.pem, cert.pem, key.pem).
fn test_ca(dir: &Path) -> (String, String, String) {
    let p = |name: &str| dir.join(name).display().to_string();
    let (ca, cert, key) = (p("ca.pem"), p("cert.pem"), p("key.pem"));
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: Vec<Vec<String>> = vec![
        [
            &["req", "-x509"][..],
            &ec[..],
            &[
                "-days",
                "1",
                "-subj",
                "/CN=dirac-test-ca",
                "-keyout",
                &p("ca.key"),
                "-out",
                &ca,
            ],
        ]
        .concat(),
        [
            &["req"][..],
            &ec[..],
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                &key,
                "-out",
                &p("req.csr"),
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            &p("req.csr"),
            "-CA",
            &ca,
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &p("ext.cnf"),
            "-out",
            &cert,
        ],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(str::to_string).collect())
    .collect();
    for args in steps {
        let made = Command::new("openssl")
            .args(&args)
            .output()
            .expect("openssl");
        assert!(
            made.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    (ca, cert, key)
}

/// Poll `dirac --json job status IDS` until every job is in a final state.
fn wait_final(d: &Diracd, ids: &[u64], timeout: Duration) -> Vec<serde_json::Value> {
    let args: Vec<String> = ids.iter().map(u64::to_string).collect();
    let deadline = Instant::now() + timeout;
    loop {
        let mut a = vec!["job", "status"];
        a.extend(args.iter().map(String::as_str));
        let st = d.json(&a);
        let jobs = st["jobs"].as_array().expect("jobs").clone();
        if jobs
            .iter()
            .all(|j| matches!(j["status"].as_str(), Some("Done" | "Failed" | "Killed")))
        {
            return jobs;
        }
        assert!(
            Instant::now() < deadline,
            "jobs did not finish: {st}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn local_pilots_run_jobs_to_done() {
    let d = Diracd::start_with(tempfile::tempdir().expect("tmp"), &[]);
    let failing = d.dir.path().join("fail.jdl");
    std::fs::write(&failing, "[ Executable = \"/bin/sh\"; Arguments = \"-c 'echo oops >&2; exit 3'\"; JobName = \"fails\"; ]")
        .expect("write");
    let hello = repo().join("examples/hello.jdl").display().to_string();
    let param = repo().join("examples/parametric.jdl").display().to_string();
    let with_token = d.dir.path().join("token.jdl");
    std::fs::write(
        &with_token,
        r#"[ Executable = "/bin/sh"; Arguments = "-c 'test -n \"$DIRAC_JOB_TOKEN\"'"; JobName = "token"; ]"#,
    )
    .expect("write");
    let submitted = d.json(&[
        "job",
        "submit",
        &hello,
        &param,
        &failing.display().to_string(),
        &with_token.display().to_string(),
    ]);
    let jobs = ids(&submitted);
    assert_eq!(jobs.len(), 6);
    let done = wait_final(&d, &jobs, Duration::from_secs(90));
    let by_id = |id: u64| {
        done.iter()
            .find(|j| j["job_id"] == id)
            .expect("job")
            .clone()
    };
    for id in &jobs[..4] {
        let j = by_id(*id);
        assert_eq!(j["status"], "Done", "{j}");
        assert_eq!(j["site"], "LCG.Local.local", "{j}");
    }
    let token_job = by_id(jobs[5]);
    assert_eq!(
        token_job["status"], "Done",
        "the payload got its job token: {token_job}"
    );
    let failed = by_id(jobs[4]);
    assert_eq!(failed["status"], "Failed", "{failed}");
    assert_eq!(failed["application_status"], "Exit code 3", "{failed}");
    let history = d.json(&["job", "history", &jobs[0].to_string()]);
    let statuses: Vec<&str> = history["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["status"].as_str())
        .collect();
    for step in [
        "Received",
        "Checking",
        "Waiting",
        "Matched",
        "Running",
        "Completing",
        "Done",
    ] {
        assert!(statuses.contains(&step), "{step} missing from {statuses:?}");
    }
    d.stop();
}

#[test]
fn a_killed_pilot_leaves_no_job_running() {
    let d = Diracd::start_with(
        tempfile::tempdir().expect("tmp"),
        &[
            ("DIRAC__SERVICES__AGENTS__STALLEDTIMES", "3".into()),
            ("DIRAC__SERVICES__AGENTS__POLLINGTIMES", "1".into()),
        ],
    );
    let jdl = d.dir.path().join("sleep.jdl");
    std::fs::write(
        &jdl,
        "[ Executable = \"/bin/sleep\"; Arguments = \"20\"; JobName = \"sleeper\"; ]",
    )
    .expect("write");
    let id = ids(&d.json(&["job", "submit", &jdl.display().to_string()]))[0];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = d.json(&["job", "status", &id.to_string()]);
        if matches!(
            st["jobs"][0]["status"].as_str(),
            Some("Running" | "Stalled")
        ) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job never ran: {st}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // kill -9 the pilot (its work directory is under this data dir).
    let pattern = format!("{}/pilots/", d.dir.path().display());
    let killed = Command::new("pkill")
        .args(["-9", "-f", &pattern])
        .status()
        .expect("pkill");
    assert!(killed.success(), "no pilot process to kill");
    let done = wait_final(&d, &[id], Duration::from_secs(60));
    assert_eq!(done[0]["status"], "Failed", "{}", done[0]);
    assert_eq!(
        done[0]["minor_status"], "Job stalled: pilot not running",
        "{}",
        done[0]
    );
    d.stop();
}

#[test]
fn agents_run_on_their_own() {
    let d = Diracd::start();
    let out = Command::new(bin("diracd"))
        .args(["agent", "nonsense", "--data-dir"])
        .arg(d.dir.path())
        .output()
        .expect("diracd agent");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown agent 'nonsense'"));
    let mut agent = Command::new(bin("diracd"))
        .args(["agent", "stalled-jobs", "--data-dir"])
        .arg(d.dir.path())
        .env("DIRAC__RESOURCES__SITES", "{}")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agent");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        agent.try_wait().expect("wait").is_none(),
        "the agent exited early"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let status = agent.wait().expect("wait");
    assert!(status.success(), "agent exit: {status}");
    d.stop();
}

#[test]
fn no_secret_reaches_the_logs() {
    let d = Diracd::start_with(
        tempfile::tempdir().expect("tmp"),
        &[
            ("RUST_LOG", "debug".into()),
            ("DIRAC__SERVICES__LOGFORMAT", "json".into()),
        ],
    );
    let hello = repo().join("examples/hello.jdl").display().to_string();
    let id = ids(&d.json(&["job", "submit", &hello]))[0];
    wait_final(&d, &[id], Duration::from_secs(60));
    // A refused call with a bad token is logged too.
    let out = d.dirac(&[
        "--token",
        "forged.token.value",
        "job",
        "status",
        &id.to_string(),
    ]);
    assert!(!out.status.success());
    let kept = d.stop_and_keep();
    let dir = kept.path();
    let client_yaml = std::fs::read_to_string(dir.join("client.yaml")).expect("client.yaml");
    let log = std::fs::read_to_string(dir.join("diracd.log")).expect("log");
    assert!(
        log.contains("\"component\""),
        "json logs carry the component"
    );
    let text = |name: &str| std::fs::read_to_string(dir.join(name)).expect(name);
    let token = client_yaml
        .lines()
        .find_map(|l| l.strip_prefix("token: ").map(str::to_string))
        .expect("token");
    let key: String = text("signing-key.pem")
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let vault_key = text("token-vault.key").trim().to_string();
    for (what, secret) in [
        ("user token", token.as_str()),
        ("signing key", key.as_str()),
        ("vault key", vault_key.as_str()),
    ] {
        // Any 24-character piece of the secret would do: look for its signature part.
        let piece = &secret[secret.len() - 24..];
        assert!(!log.contains(piece), "the {what} appears in the log");
    }
    assert!(
        !log.contains("forged.token.value"),
        "a presented token appears in the log"
    );
}

#[test]
fn dirac_login_with_the_development_login() {
    use std::io::BufRead as _;
    let d = Diracd::start_with(
        tempfile::tempdir().expect("tmp"),
        &[
            ("DIRAC__RESOURCES__SITES", "{}".into()),
            ("DIRAC__SERVICES__AUTH__DEVLOGIN", "true".into()),
        ],
    );
    let home = tempfile::tempdir().expect("home");
    let dirac = |args: &[&str]| {
        let mut c = Command::new(bin("dirac"));
        c.arg("--config")
            .arg(d.client_config())
            .args(args)
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME");
        c.env_remove("DIRAC_TOKEN").env_remove("DIRAC_URL");
        c
    };
    let mut login = dirac(&["login", "dteam"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("login");
    let stderr = login.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("To log in, open ").map(str::to_string))
        .expect("a verification url");
    let code = url.rsplit("user_code=").next().expect("code").to_string();
    let base = url.split("/api/auth/").next().expect("base").to_string();
    // The user approves in a browser: here, the development login form.
    let approved = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "POST",
            "-d",
            &format!("user_code={code}"),
            "-d",
            "username=bob",
            "-d",
            "action=approve",
        ])
        .arg(format!("{base}/api/auth/device/verify"))
        .output()
        .expect("curl");
    assert!(
        approved.status.success(),
        "approval failed: {}",
        String::from_utf8_lossy(&approved.stdout)
    );
    let out = login.wait_with_output().expect("login ends");
    assert!(
        out.status.success(),
        "login failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("bob (dteam:bob) in group dteam_user of dteam"),
        "{said}"
    );
    let creds = home.path().join(".config/dirac/credentials.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&creds)
                .expect("credentials")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    // The login wins over the token in client.yaml: the services see bob.
    let who = dirac(&["--json", "whoami"]).output().expect("whoami");
    let who: serde_json::Value = serde_json::from_slice(&who.stdout).expect("json");
    assert_eq!(who["preferred_username"], "bob");
    let hello = repo().join("examples/hello.jdl").display().to_string();
    let submitted = dirac(&["--json", "job", "submit", &hello])
        .output()
        .expect("submit");
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let id = ids(&serde_json::from_slice(&submitted.stdout).expect("json"))[0];
    let out = d.dirac(&["--json", "job", "status", &id.to_string()]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        st["failed"][id.to_string()]["code"],
        "PermissionDenied",
        "alice must not see bob's job: {st}"
    );
    // Logout revokes and forgets; the file's token (alice) is used again.
    assert!(dirac(&["logout"]).status().expect("logout").success());
    assert!(!creds.exists());
    let who = dirac(&["--json", "whoami"]).output().expect("whoami");
    let who: serde_json::Value = serde_json::from_slice(&who.stdout).expect("json");
    assert_eq!(who["preferred_username"], "alice");
    d.stop();
}

#[test]
fn rotated_signing_keys_keep_old_tokens_valid() {
    let no_sites = [("DIRAC__RESOURCES__SITES", "{}".to_string())];
    let d = Diracd::start_with(tempfile::tempdir().expect("tmp"), &no_sites);
    let old = std::fs::read_to_string(d.client_config())
        .expect("client.yaml")
        .lines()
        .find_map(|l| l.strip_prefix("token: ").map(str::to_string))
        .expect("token");
    let dir = d.stop_and_keep();
    // The installation moves from Ed25519 to RSA keys on the way.
    let rs256 = (
        "DIRAC__SERVICES__AUTH__SIGNINGALGORITHM",
        "RS256".to_string(),
    );
    let out = Command::new(bin("diracd"))
        .args(["rotate-key", "--data-dir"])
        .arg(dir.path())
        .env(rs256.0, &rs256.1)
        .output()
        .expect("rotate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = Diracd::start_with(dir, &[no_sites[0].clone(), rs256]);
    let new = std::fs::read_to_string(d.client_config()).expect("client.yaml");
    assert!(!new.contains(&old), "a new token after the restart");
    let new_token = new
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("token");
    let header: serde_json::Value = {
        use base64::Engine as _;
        let part = new_token.split('.').next().expect("header");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("json")
    };
    assert_eq!(header["alg"], "RS256", "{header}");
    let out = d.dirac(&["job", "search"]);
    assert!(
        out.status.success(),
        "the RS256 token is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The token of the retired key still works; a forged one does not.
    let out = d.dirac(&["--token", &old, "job", "search"]);
    assert!(
        out.status.success(),
        "old token refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwks: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.dir.path().join("jwks.json")).expect("jwks"),
    )
    .expect("json");
    let kinds: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kty"].as_str())
        .collect();
    assert_eq!(kinds, ["RSA", "OKP"]);
    d.stop();
}

/// A free loopback port (bound, then released for a child to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// curl's standard output, silent, with `jar` as cookie jar if given.
fn curl(jar: Option<&Path>, args: &[&str]) -> String {
    let mut cmd = Command::new("curl");
    cmd.arg("-s");
    if let Some(jar) = jar {
        cmd.args(["-L", "-c"]).arg(jar).arg("-b").arg(jar);
    }
    let out = cmd.args(args).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Where curl ends up after following redirects (even a dead end).
const FINAL_URL: [&str; 4] = ["-o", "/dev/null", "-w", "%{url_effective}"];

/// A child process killed and reaped when the test ends, panics included.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn idp_dir() -> Option<PathBuf> {
    let dir = test_tools()?.join("idp");
    dir.join("node_modules/oidc-provider")
        .exists()
        .then_some(dir)
}

/// `dirac login` federated through a real OIDC provider (panva's
/// oidc-provider on Node): code + PKCE, ID token checked, `wlcg.groups`
/// mapped to DIRAC groups through `IdPRole`.
#[test]
fn federated_login_through_a_real_identity_provider() {
    use std::io::BufRead as _;
    let Some(idp_home) = idp_dir() else {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but oidc-provider is missing: run `make test-tools`"
        );
        eprintln!("skipping: no oidc-provider (run `make test-tools`)");
        return;
    };
    // The IdP is started after diracd, whose AuthServer port is only known
    // then; diracd asks the IdP nothing until the first login.
    let idp_port = free_port();
    let dir = tempfile::tempdir().expect("tmp");
    let secret = dir.path().join("idp-secret");
    std::fs::write(&secret, "dirac-auth-secret").expect("secret");
    let config = format!(
        "Registry:
  VOs:
    dteam:
      DefaultGroup: dteam_user
      IdP: {{ URL: 'http://127.0.0.1:{idp_port}', ClientID: dirac-auth, ClientSecretFile: '{}' }}
      Users:
        bob: {{ Sub: bob }}
        eve: {{ Sub: eve }}
      Groups:
        dteam_user: {{ Properties: [NormalUser], Users: [bob, eve], IdPRole: /dteam }}
        dteam_admin:
          Properties: [NormalUser, JobAdministrator]
          # Membership comes from the IdP only.
          Users: []
          IdPRole: /dteam/admin
Services:
  LogFormat: text
  # On, to show it never stands in for the VO's IdP.
  Auth:
    DevLogin: true
    Clients:
      notebook: {{ RedirectURIs: ['http://127.0.0.1/cb'] }}
",
        secret.display()
    );
    std::fs::write(dir.path().join("dirac.yaml"), config).expect("write config");
    let d = Diracd::start_with(dir, &[]);
    let client = std::fs::read_to_string(d.client_config()).expect("client.yaml");
    let auth_url = client
        .lines()
        .find_map(|l| l.strip_prefix("auth_url:"))
        .map(|u| u.trim().trim_matches(['\'', '"']).to_string())
        .expect("auth_url in client.yaml");
    let callback = format!("{auth_url}/api/auth/federation/callback");
    // ESM resolves packages from the script's own directory.
    let script = idp_home.join("idp.mjs");
    std::fs::copy(repo().join("tests/idp/idp.mjs"), &script).expect("copy idp.mjs");
    let mut idp = Reaped(
        Command::new("node")
            .arg(&script)
            .args([&idp_port.to_string(), &callback])
            .current_dir(&idp_home)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node"),
    );
    let mut idp_out = std::io::BufReader::new(idp.0.stdout.take().expect("stdout")).lines();
    let ready = idp_out.by_ref().map_while(Result::ok).any(|l| l == "ready");
    assert!(ready, "the identity provider did not start");
    // Keep draining: the IdP dies of EPIPE if its stdout is closed.
    std::thread::spawn(move || idp_out.for_each(drop));

    let home = tempfile::tempdir().expect("home");
    let login = |group: &str| {
        Command::new(bin("dirac"))
            .arg("--config")
            .arg(d.client_config())
            .args(["login", "dteam", "--group", group])
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("login")
    };
    // Follow the verification URL to the IdP's login form and log in there.
    let browse = |url: &str, user: &str| -> String {
        let jar = home.path().join(format!("cookies-{user}"));
        let interaction = curl(Some(&jar), &[&FINAL_URL[..], &[url]].concat());
        assert!(
            interaction.contains("/interaction/"),
            "not at the IdP login form: {interaction}\n{}",
            d.log()
        );
        let login = format!("login={user}");
        curl(
            Some(&jar),
            &[
                "-d",
                "prompt=login",
                "-d",
                &login,
                "-d",
                "password=any",
                &interaction,
            ],
        )
    };
    let verification_url = |child: &mut std::process::Child| {
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("To log in, open ").map(str::to_string))
            .expect("a verification url");
        let rest =
            std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
        (url, rest)
    };

    // bob holds /dteam/admin at the IdP: he becomes dteam_admin.
    let mut cli = login("dteam_admin");
    let (url, errors) = verification_url(&mut cli);
    let page = browse(&url, "bob");
    assert!(
        page.contains("Logged in as bob in group dteam_admin"),
        "{page}"
    );
    let out = cli.wait_with_output().expect("login ends");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        errors.join().unwrap_or_default()
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("bob (dteam:bob) in group dteam_admin of dteam"),
        "{said}"
    );
    assert!(said.contains("JobAdministrator"), "{said}");
    // The federated session refreshes (rotation) without asking the IdP;
    // presenting the rotated-out token again revokes the whole session.
    let creds: serde_json::Value = serde_json::from_slice(
        &std::fs::read(home.path().join(".config/dirac/credentials.json")).expect("credentials"),
    )
    .expect("json");
    let token_url = format!("{auth_url}/api/auth/token");
    let refresh = |token: &str| -> serde_json::Value {
        let form = format!("refresh_token={token}");
        let out = curl(
            None,
            &["-d", "grant_type=refresh_token", "-d", &form, &token_url],
        );
        serde_json::from_str(&out).expect("json")
    };
    let old = creds["refresh_token"].as_str().expect("refresh token");
    let rotated = refresh(old);
    let next = rotated["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{rotated}"));
    assert_eq!(rotated["scope"], "vo:dteam group:dteam_admin", "{rotated}");
    assert_eq!(refresh(old)["error"], "invalid_grant");
    assert_eq!(
        refresh(next)["error"],
        "invalid_grant",
        "the family is revoked"
    );

    // eve's IdP groups do not include /dteam/admin: refused at the callback.
    let mut cli = login("dteam_admin");
    let (url, errors) = verification_url(&mut cli);
    let page = browse(&url, "eve");
    assert!(page.contains("does not make"), "{page}");
    // The waiting CLI is told at once.
    let out = cli.wait_with_output().expect("login ends");
    let said = errors.join().unwrap_or_default();
    assert!(
        !out.status.success() && said.contains("access_denied"),
        "{said}"
    );

    // mallory's IdP account calls itself bob: no registered name is taken.
    let mut cli = login("dteam_admin");
    let (url, _) = verification_url(&mut cli);
    let page = browse(&url, "mallory");
    assert!(page.contains("registered without"), "{page}");
    let _ = cli.kill();

    // alice is not registered: the IdP's /dteam makes her a dteam_user.
    let mut cli = login("dteam_user");
    let (url, errors) = verification_url(&mut cli);
    let page = browse(&url, "alice");
    assert!(
        page.contains("Logged in as alice in group dteam_user"),
        "{page}"
    );
    let out = cli.wait_with_output().expect("login ends");
    assert!(
        out.status.success(),
        "{}",
        errors.join().unwrap_or_default()
    );

    // A web client: authorization code + PKCE, the user logs in at the IdP.
    let jar = home.path().join("cookies-web");
    let web =
        |extra: &[&str], url: &str| curl(Some(&jar), &[extra, &FINAL_URL[..], &[url]].concat());
    let (verifier, challenge) = (
        "dBjftJeZ4CVP-mJ92ZLSTJ8QsZZgyqxjHkUJtKYkKCU",
        "j3yHXpD1iMP57S7Wg9wf_PxATnq2nwvh71oHnbWdl40",
    );
    // Nothing listens there: curl stops at the client's redirect URI.
    let redirect = format!("http://127.0.0.1:{}/cb", free_port());
    let interaction = web(
        &[],
        &format!(
            "{auth_url}/api/auth/authorize?response_type=code&client_id=notebook\
             &redirect_uri={redirect}&scope=vo:dteam%20group:dteam_admin&state=s1\
             &code_challenge={challenge}&code_challenge_method=S256"
        ),
    );
    assert!(interaction.contains("/interaction/"), "{interaction}");
    let back = web(
        &[
            "-d",
            "prompt=login",
            "-d",
            "login=bob",
            "-d",
            "password=any",
        ],
        &interaction,
    );
    let code = back
        .strip_prefix(&format!("{redirect}?code="))
        .and_then(|q| q.strip_suffix("&state=s1"))
        .unwrap_or_else(|| panic!("not back at the client: {back}"));
    let (code, verifier_field, redirect_field) = (
        format!("code={code}"),
        format!("code_verifier={verifier}"),
        format!("redirect_uri={redirect}"),
    );
    let tokens = curl(
        None,
        &[
            "-d",
            "grant_type=authorization_code",
            "-d",
            "client_id=notebook",
            "-d",
            &code,
            "-d",
            &verifier_field,
            "--data-urlencode",
            &redirect_field,
            &token_url,
        ],
    );
    let tokens: serde_json::Value = serde_json::from_str(&tokens).expect("json");
    let access = tokens["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{tokens}"));
    let bearer = format!("Authorization: Bearer {access}");
    let info = curl(
        None,
        &["-H", &bearer, &format!("{auth_url}/api/auth/userinfo")],
    );
    assert!(
        info.contains("dteam:bob") && info.contains("dteam_admin"),
        "{info}"
    );

    // The TokenManager mints pilot-submission tokens from the same IdP:
    // client credentials, WLCG compute scopes, the CE as audience.
    let manager = dirac_tokens::TokenManager::new(dirac_core::config::IdpConfig {
        url: format!("http://127.0.0.1:{idp_port}"),
        client_id: "dirac-auth".into(),
        client_secret_file: Some(secret.clone()),
        group_claim: "wlcg.groups".into(),
    });
    let claims_of = |jwt: &str| -> serde_json::Value {
        use base64::Engine as _;
        let payload = jwt.split('.').nth(1).expect("a JWT");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("claims")
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let condor = dirac_tokens::ce_audience("HTCondorCE", "ce.example.org", 9619);
    let arc = dirac_tokens::ce_audience("ARC", "arc.example.org", 443);
    let (first, again, other) = rt.block_on(async {
        (
            manager
                .pilot_submission_token(&condor)
                .await
                .expect("token"),
            manager
                .pilot_submission_token(&condor)
                .await
                .expect("token"),
            manager.pilot_submission_token(&arc).await.expect("token"),
        )
    });
    let c = claims_of(&first.token);
    assert_eq!(c["aud"], "ce.example.org:9619", "{c}");
    assert_eq!(c["iss"], format!("http://127.0.0.1:{idp_port}"), "{c}");
    for s in [
        "compute.create",
        "compute.read",
        "compute.modify",
        "compute.cancel",
    ] {
        assert!(c["scope"].as_str().unwrap_or_default().contains(s), "{c}");
    }
    assert_eq!(first.token, again.token, "a valid token is reused");
    assert_eq!(
        claims_of(&other.token)["aud"],
        "https://arc.example.org:443"
    );
    assert!(
        !format!("{first:?}").contains(&first.token),
        "token in Debug"
    );
    // A wrong client secret is refused, with the IdP's reason.
    let wrong = home.path().join("wrong-secret");
    std::fs::write(&wrong, "not-the-secret").expect("secret");
    let refused = rt.block_on(
        dirac_tokens::TokenManager::new(dirac_core::config::IdpConfig {
            url: format!("http://127.0.0.1:{idp_port}"),
            client_id: "dirac-auth".into(),
            client_secret_file: Some(wrong),
            group_claim: "wlcg.groups".into(),
        })
        .pilot_submission_token(&condor),
    );
    assert!(
        matches!(&refused, Err(dirac_tokens::TokenError::Refused(m)) if m.contains("invalid_client")),
        "{refused:?}"
    );

    // The TokenManager works on bob's behalf with the refresh token his
    // login left, sealed in AuthDB under the installation's vault key.
    let db_url = format!("sqlite://{}", d.dir.path().join("jobdb.sqlite").display());
    let idp_config = dirac_core::config::IdpConfig {
        url: format!("http://127.0.0.1:{idp_port}"),
        client_id: "dirac-auth".into(),
        client_secret_file: Some(secret.clone()),
        group_claim: "wlcg.groups".into(),
    };
    let sealed_row = |user: &str| -> Option<String> {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys; r=sqlite3.connect(sys.argv[1]).execute(\
                 'SELECT Sealed FROM IdPTokens WHERE Username=?',(sys.argv[2],)).fetchone(); \
                 print(r[0] if r else '')",
            ])
            .arg(d.dir.path().join("jobdb.sqlite"))
            .arg(user)
            .output()
            .expect("python3");
        let row = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!row.is_empty()).then_some(row)
    };
    let before = sealed_row("bob").expect("bob's IdP token is kept");
    assert!(before.starts_with("xc1."), "sealed, not plain: {before}");
    let (user, storage, refused, stranger, wrong_key) = rt.block_on(async {
        let vault = dirac_auth::TokenVault::open(
            dirac_core::db::Db::connect(&db_url, 2)
                .await
                .expect("AuthDB"),
        )
        .await
        .expect("vault");
        let sealer = dirac_tokens::Sealer::from_file(&d.dir.path().join("token-vault.key"))
            .expect("vault key");
        let tokens = dirac_tokens::TokenManager::new(idp_config.clone()).with_sealer(sealer);
        let user = tokens.user_token(&vault, "bob", "", None).await;
        let read = dirac_tokens::storage_scope("read", "/dteam/data").expect("scope");
        let create = dirac_tokens::storage_scope("create", "/dteam/user/b/bob").expect("scope");
        let storage = tokens
            .storage_token(&vault, "bob", "https://se.example.org", &[read, create])
            .await;
        let other_vo = dirac_tokens::storage_scope("read", "/atlas").expect("scope");
        let refused = tokens
            .storage_token(&vault, "bob", "https://se.example.org", &[other_vo])
            .await;
        let stranger = tokens.user_token(&vault, "nobody", "", None).await;
        let other_key =
            dirac_tokens::Sealer::load_or_create(&home.path().join("other.key")).expect("key");
        let wrong_key = dirac_tokens::TokenManager::new(idp_config.clone())
            .with_sealer(other_key)
            .user_token(&vault, "bob", "", None)
            .await;
        (user, storage, refused, stranger, wrong_key)
    });
    let user = user.expect("a user token from bob's kept refresh token");
    assert!(user.scope.contains("wlcg.groups"), "{user:?}");
    let info = curl(
        None,
        &[
            "-H",
            &format!("Authorization: Bearer {}", user.token),
            &format!("http://127.0.0.1:{idp_port}/me"),
        ],
    );
    assert!(
        info.contains("/dteam/admin"),
        "the IdP knows bob by it: {info}"
    );
    let after = sealed_row("bob").expect("kept");
    assert_ne!(
        before, after,
        "the rotated refresh token replaced the old one"
    );
    let storage = storage.expect("a storage token by token exchange");
    let c = claims_of(&storage.token);
    assert_eq!(c["aud"], "https://se.example.org", "{c}");
    assert_eq!(c["sub"], "bob", "{c}");
    assert_eq!(
        c["scope"], "storage.read:/dteam/data storage.create:/dteam/user/b/bob",
        "{c}"
    );
    assert!(
        matches!(&refused, Err(dirac_tokens::TokenError::Refused(m)) if m.contains("invalid_scope")),
        "bob has no /atlas: {refused:?}"
    );
    assert!(
        matches!(&stranger, Err(dirac_tokens::TokenError::NotStored(u)) if u == "nobody"),
        "{stranger:?}"
    );
    assert!(
        matches!(&wrong_key, Err(dirac_tokens::TokenError::Vault(_))),
        "{wrong_key:?}"
    );
    // The log never shows the IdP's tokens.
    assert!(!d.log().contains(&user.token) && !d.log().contains(&storage.token));

    // The development login form cannot approve a login of this VO.
    let mut cli = login("dteam_admin");
    let (url, _) = verification_url(&mut cli);
    let user_code = url.split("user_code=").nth(1).expect("user_code in url");
    let forged = curl(
        None,
        &[
            "-d",
            &format!("user_code={user_code}"),
            "-d",
            "username=eve",
            &format!("{auth_url}/api/auth/device/verify"),
        ],
    );
    assert!(forged.contains("through its identity provider"), "{forged}");
    let _ = cli.kill();
    drop(idp);
    d.stop();
}

/// The data commands against `diracd all` with two local storage elements:
/// upload, list, download with checksums, corruption detected, metadata
/// queries, replication, recursive removal that really removes.
#[test]
fn data_commands_against_the_local_storage_elements() {
    let ses = "{LOCAL-SE: {Site: LCG.Local.local, Protocols: [{Protocol: file}, {Protocol: dips}]}, \
               OTHER-SE: {Protocols: [{Protocol: file, Path: other}]}}";
    let d = Diracd::start_with(
        tempfile::tempdir().expect("tmp"),
        &[
            ("DIRAC__RESOURCES__SITES", "{}".into()),
            ("DIRAC__RESOURCES__STORAGEELEMENTS", ses.into()),
        ],
    );
    let home = tempfile::tempdir().expect("home");
    let work = tempfile::tempdir().expect("work");
    let admin_token = {
        let out = Command::new(bin("diracd"))
            .args([
                "token",
                "--user",
                "admin",
                "--group",
                "dteam_admin",
                "--data-dir",
            ])
            .arg(d.dir.path())
            .output()
            .expect("diracd token");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let run =
        |token: Option<&str>, args: &[&str]| d.dirac_in(home.path(), work.path(), token, args);
    let ok = |args: &[&str]| -> String {
        let out = run(None, args);
        assert!(
            out.status.success(),
            "dirac {args:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&ok(&[&["--json"], args].concat())).expect("json")
    };
    // Files of 0 bytes, 1 byte and a few MiB (several chunks).
    let big: Vec<u8> = (0..3_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for (name, content) in [("empty", &b""[..]), ("one", &b"x"[..]), ("big", &big[..])] {
        std::fs::write(work.path().join(name), content).expect("write");
    }
    assert_eq!(ok(&["dpwd"]).trim(), "/dteam/user/a/alice");
    let put = json(&["dput", "--se", "LOCAL-SE", "empty", "one", "big", "data/"]);
    assert_eq!(put["uploaded"].as_array().map(Vec::len), Some(3), "{put}");
    assert_eq!(put["uploaded"][1]["adler32"], "00790079");
    let listed = json(&["dls", "-l", "data"]);
    let names: Vec<&str> = listed["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["lfn"].as_str())
        .collect();
    assert_eq!(names.len(), 3, "{listed}");
    assert_eq!(listed["entries"][2]["replicas"][0]["se"], "LOCAL-SE");
    // The stored copy is where DIRAC's convention puts it.
    let stored = d.dir.path().join("se/LOCAL-SE/dteam/user/a/alice/data/big");
    assert_eq!(std::fs::read(&stored).expect("stored copy"), big);
    // Download, checksum verified, into another directory.
    let out_dir = work.path().join("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    ok(&["dcd", "data"]);
    assert_eq!(ok(&["dpwd"]).trim(), "/dteam/user/a/alice/data");
    ok(&[
        "dget",
        "-D",
        out_dir.to_str().expect("utf-8"),
        "big",
        "empty",
        "one",
    ]);
    assert_eq!(std::fs::read(out_dir.join("big")).expect("got big"), big);
    assert_eq!(
        std::fs::read(out_dir.join("empty")).expect("got empty"),
        b""
    );
    // A copy corrupted on the storage is refused and nothing is written.
    let one = d.dir.path().join("se/LOCAL-SE/dteam/user/a/alice/data/one");
    std::fs::write(&one, b"y").expect("corrupt");
    std::fs::remove_file(out_dir.join("one")).expect("rm");
    let bad = run(
        None,
        &["dget", "-D", out_dir.to_str().expect("utf-8"), "one"],
    );
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && said.contains("checksum mismatch"),
        "{said}"
    );
    assert!(!out_dir.join("one").exists(), "no half-written download");
    let leftovers: Vec<_> = std::fs::read_dir(&out_dir)
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Replication to the other SE, then sizes per SE.
    ok(&["drepl", "--se", "OTHER-SE", "big"]);
    assert_eq!(
        std::fs::read(d.dir.path().join("se/other/dteam/user/a/alice/data/big")).expect("replica"),
        big
    );
    let size = json(&["dsize", "/dteam/user/a/alice"]);
    let s = &size["sizes"]["/dteam/user/a/alice"];
    assert_eq!(s["logical_files"], 3, "{size}");
    assert_eq!(s["per_se"]["OTHER-SE"]["files"], 1, "{size}");
    // Metadata: the data manager declares fields, alice tags and finds.
    for (name, kind) in [("energy", "float"), ("particle", "string")] {
        let out = run(Some(&admin_token), &["dmeta", "add-field", name, kind]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (dir, e, p) in [
        ("mc/a", "5", "electron"),
        ("mc/b", "20", "electron"),
        ("mc/c", "50", "photon"),
        ("mc/d", "70", "muon"),
    ] {
        ok(&["dmkdir", &format!("/dteam/user/a/alice/{dir}")]);
        ok(&[
            "dput",
            "--se",
            "LOCAL-SE",
            &work.path().join("one").display().to_string(),
            &format!("/dteam/user/a/alice/{dir}/f"),
        ]);
        ok(&[
            "dmeta",
            "set",
            &format!("/dteam/user/a/alice/{dir}"),
            &format!("energy={e}"),
            &format!("particle={p}"),
        ]);
    }
    let found = json(&[
        "dfind",
        "/dteam/user/a/alice/mc",
        "energy>10 and (particle=electron or particle=photon)",
    ]);
    assert_eq!(
        found["lfns"],
        serde_json::json!(["/dteam/user/a/alice/mc/b/f", "/dteam/user/a/alice/mc/c/f"])
    );
    let meta = ok(&["dmeta", "get", "/dteam/user/a/alice/mc/c/f"]);
    assert!(
        meta.contains("energy = 50 (from /dteam/user/a/alice/mc/c)"),
        "{meta}"
    );
    let bad = run(None, &["dfind", "/dteam/user/a/alice/mc", "colour=red"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown metadata field 'colour'"));
    // Outside the VO: refused, per file, with the reason.
    let bad = run(
        None,
        &[
            "dput",
            "--se",
            "LOCAL-SE",
            &work.path().join("one").display().to_string(),
            "/atlas/x",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("outside VO dteam"));
    // A recursive removal really removes: catalog and storage.
    ok(&["dcd"]);
    let removed = json(&["drm", "-r", "data", "mc"]);
    assert_eq!(removed["files"], 7, "{removed}");
    assert_eq!(removed["failed"], serde_json::json!({}));
    let gone = run(None, &["dls", "data"]);
    assert!(!gone.status.success());
    for root in ["se/LOCAL-SE", "se/other"] {
        let files: Vec<_> = walk_files(&d.dir.path().join(root));
        assert!(files.is_empty(), "left on {root}: {files:?}");
    }
    assert!(ok(&["dse"]).contains("LOCAL-SE site=LCG.Local.local"));
    d.stop();
}

/// Every regular file below `dir`.
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A job with InputData and OutputData runs end to end: the optimizer
/// sends it to the site holding its data, the pilot downloads the input
/// with the job's token, the payload's output is uploaded and registered.
#[test]
fn jobs_read_input_data_and_register_output_data() {
    let d = Diracd::start_with(tempfile::tempdir().expect("tmp"), &[]);
    let home = tempfile::tempdir().expect("home");
    let work = tempfile::tempdir().expect("work");
    let run = |args: &[&str]| d.dirac_in(home.path(), work.path(), None, args);
    std::fs::write(work.path().join("data.txt"), "hello grid\n").expect("write");
    let put = run(&["dput", "data.txt", "/dteam/user/a/alice/in/data.txt"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let jdl = work.path().join("data.jdl");
    std::fs::write(
        &jdl,
        r#"[ Executable = "/bin/sh";
             Arguments = "-c 'tr a-z A-Z < data.txt > out.txt'";
             InputData = {"LFN:/dteam/user/a/alice/in/data.txt"};
             OutputData = {"out.txt"}; OutputPath = "results"; OutputSE = "LOCAL-SE";
             JobName = "data"; ]"#,
    )
    .expect("write");
    // InputDataByProtocol: the payload reads the file where it is; no
    // OutputSE: its output goes to the site's storage element.
    let by_url = work.path().join("url.jdl");
    std::fs::write(
        &by_url,
        r#"[ Executable = "/bin/sh";
             Arguments = "-c 'read l u < $DIRAC_INPUT_DATA_FILE; cat ${u#file://} > url.txt; test ! -e data.txt'";
             InputData = {"LFN:/dteam/user/a/alice/in/data.txt"}; InputDataPolicy = "Protocol";
             OutputData = {"url.txt"}; OutputPath = "results";
             JobName = "by-url"; ]"#,
    )
    .expect("write");
    let missing = work.path().join("missing.jdl");
    std::fs::write(
        &missing,
        r#"[ Executable = "/bin/true"; InputData = {"/dteam/user/a/alice/in/nothing"}; JobName = "nodata"; ]"#,
    )
    .expect("write");
    let jobs = ids(&d.json(&[
        "job",
        "submit",
        &jdl.display().to_string(),
        &missing.display().to_string(),
        &by_url.display().to_string(),
    ]));
    let done = wait_final(&d, &jobs, Duration::from_secs(90));
    let job = |id: u64| {
        done.iter()
            .find(|j| j["job_id"] == id)
            .expect("job")
            .clone()
    };
    let ok = job(jobs[0]);
    assert_eq!(ok["status"], "Done", "{ok}");
    assert_eq!(ok["site"], "LCG.Local.local", "{ok}");
    let url_job = job(jobs[2]);
    assert_eq!(url_job["status"], "Done", "{url_job}");
    let failed = job(jobs[1]);
    assert_eq!(failed["status"], "Failed", "{failed}");
    assert_eq!(
        failed["minor_status"], "Input Data Not Available",
        "{failed}"
    );
    assert!(
        failed["application_status"]
            .as_str()
            .unwrap_or_default()
            .contains("in/nothing"),
        "{failed}"
    );
    let replicas = d.json(&["dreplicas", "/dteam/user/a/alice/results/url.txt"]);
    assert_eq!(
        replicas["replicas"]["/dteam/user/a/alice/results/url.txt"][0]["se"], "LOCAL-SE",
        "{replicas}"
    );
    for (name, content) in [("out.txt", "HELLO GRID\n"), ("url.txt", "hello grid\n")] {
        let lfn = format!("/dteam/user/a/alice/results/{name}");
        let got = run(&["dget", "-D", work.path().to_str().expect("utf-8"), &lfn]);
        assert!(
            got.status.success(),
            "{}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(work.path().join(name)).expect(name),
            content
        );
    }
    d.stop();
}

/// Bad uploads through the StorageElement service leave nothing behind:
/// a wrong checksum, a size that does not match, data outside the VO; a
/// path that is not UTF-8 is refused by the CLI before anything is sent.
#[test]
fn the_storage_service_refuses_bad_uploads() {
    use dirac_proto::dms::{ObjectChunk, ObjectHeader, ObjectRefs, object_chunk::Kind};
    let d = Diracd::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = dirac_client::ClientConfig::from_file(&d.client_config()).expect("client.yaml");
    rt.block_on(async {
        let client = dirac_client::Client::connect(&config).expect("client");
        let put = |lfn: &str, size: u64, adler32: &str, data: &[u8]| {
            let mut se = client.storage_element();
            let chunks = vec![
                ObjectChunk {
                    kind: Some(Kind::Header(ObjectHeader {
                        se: "LOCAL-SE".into(),
                        lfn: lfn.into(),
                        size,
                        adler32: adler32.into(),
                    })),
                },
                ObjectChunk {
                    kind: Some(Kind::Data(data.to_vec())),
                },
            ];
            async move { se.put(tokio_stream::iter(chunks)).await }
        };
        let home = "/dteam/user/a/alice";
        // adler32("abc") is 024d0127.
        let wrong = put(&format!("{home}/bad"), 3, "00000001", b"abc").await;
        let e = wrong.expect_err("a wrong checksum is refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("checksum mismatch"), "{e:?}");
        let short = put(&format!("{home}/short"), 10, "024d0127", b"abc").await;
        assert!(
            short
                .expect_err("short")
                .message()
                .contains("3 bytes arrived, 10 were announced")
        );
        let outside = put("/atlas/x", 3, "024d0127", b"abc").await;
        assert_eq!(
            outside.expect_err("outside").code(),
            tonic::Code::PermissionDenied
        );
        let stat = client
            .storage_element()
            .stat(ObjectRefs {
                se: "LOCAL-SE".into(),
                lfns: vec![format!("{home}/bad"), format!("{home}/short")],
            })
            .await
            .expect("stat")
            .into_inner();
        assert!(stat.objects.is_empty(), "nothing was stored: {stat:?}");
        let good = put(&format!("{home}/good"), 3, "024d0127", b"abc").await;
        assert_eq!(good.expect("stored").into_inner().adler32, "024d0127");
    });
    // The connection lives in the runtime; diracd would stop anyway after
    // its grace period, but need not wait.
    drop(rt);
    let se_files = walk_files(&d.dir.path().join("se/LOCAL-SE"));
    assert_eq!(
        se_files,
        [d.dir.path().join("se/LOCAL-SE/dteam/user/a/alice/good")],
        "only the good upload is on the storage"
    );
    let scratch = walk_files(&d.dir.path().join("scratch"));
    assert!(scratch.is_empty(), "scratch left behind: {scratch:?}");
    // Not UTF-8: refused by the CLI with a message.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt as _;
        let out = Command::new(bin("dirac"))
            .arg("--config")
            .arg(d.client_config())
            .arg("dls")
            .arg(std::ffi::OsStr::from_bytes(b"/dteam/\xff"))
            .output()
            .expect("dirac");
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("UTF-8"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    d.stop();
}

/// With `SandboxStore.SEName` naming a configured storage element, input
/// and output sandboxes live on that SE (through its plugins) and jobs
/// work as before.
#[test]
fn sandboxes_live_on_a_storage_element() {
    let d = Diracd::start_with(
        tempfile::tempdir().expect("tmp"),
        &[("DIRAC__SERVICES__SANDBOXSTORE__SENAME", "LOCAL-SE".into())],
    );
    let work = tempfile::tempdir().expect("work");
    std::fs::write(work.path().join("input.txt"), "from the sandbox\n").expect("write");
    let jdl = work.path().join("sb.jdl");
    std::fs::write(
        &jdl,
        r#"[ Executable = "/bin/sh"; Arguments = "-c 'cp input.txt result.txt'";
             InputSandbox = {"input.txt"}; OutputSandbox = {"result.txt"}; JobName = "sb"; ]"#,
    )
    .expect("write");
    let jobs = ids(&d.json(&["job", "submit", &jdl.display().to_string()]));
    let done = wait_final(&d, &jobs, Duration::from_secs(90));
    assert_eq!(done[0]["status"], "Done", "{}", done[0]);
    let out = work.path().join("out");
    d.json(&[
        "job",
        "output",
        &jobs[0].to_string(),
        "--dir",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        std::fs::read_to_string(out.join(jobs[0].to_string()).join("result.txt")).expect("result"),
        "from the sandbox\n"
    );
    let on_se: Vec<PathBuf> = walk_files(&d.dir.path().join("se/LOCAL-SE"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    assert_eq!(
        on_se.len(),
        2,
        "input and output sandboxes on the SE: {on_se:?}"
    );
    let local: Vec<PathBuf> = walk_files(&d.dir.path().join("sandboxes"));
    assert!(local.is_empty(), "nothing in the local store: {local:?}");
    d.stop();
}
