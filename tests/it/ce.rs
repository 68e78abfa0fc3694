//! Pilots submitted by the SiteDirector through real batch-system peers run
//! real jobs from `diracd all`: an OpenSSH server (the ssh CE, processes on
//! the host) and a one-node Slurm cluster (the slurm CE). The wrappers fetch
//! `dirac-pilot` over HTTP from the installation and check its sha256.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Diracd, free_port, ids, repo, wait_final};

const NETNS_MARK: &str = "DIRAC_CE_IN_NETNS";

fn have(program: &str) -> bool {
    Command::new("sh")
        .args([
            "-c",
            &format!("command -v {program} || test -x /usr/sbin/{program}"),
        ])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Skip (or, under CI, fail) when a peer is not installed.
fn peers_installed(programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs.iter().copied().filter(|p| !have(p)).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI=true but {missing:?} missing: run `make test-tools` (scripts/ce-servers.sh)"
    );
    eprintln!("skipping: {missing:?} not installed (scripts/ce-servers.sh, make test-tools)");
    false
}

fn pilots(d: &Diracd, grid_type: &str) -> Vec<serde_json::Value> {
    let list = d.json(&["pilot", "list", "--where", &format!("GridType={grid_type}")]);
    list["pilots"].as_array().expect("pilots").clone()
}

/// Jobs of examples/hello.jdl and examples/parametric.jdl end Done at `site`.
fn run_jobs_at(d: &Diracd, site: &str) {
    let hello = repo().join("examples/hello.jdl").display().to_string();
    let param = repo().join("examples/parametric.jdl").display().to_string();
    let jobs = ids(&d.json(&["job", "submit", &hello, &param]));
    assert!(jobs.len() >= 2);
    let done = wait_final(d, &jobs, Duration::from_secs(120));
    for j in &done {
        assert_eq!(j["status"], "Done", "{j}\n{}", d.log());
        assert_eq!(j["site"], site, "{j}");
    }
}

/// The pilots' outputs in the CE's work directory: each wrapper checked the
/// binary it downloaded and left neither its secret nor the binary behind.
fn check_pilot_outputs(work_dir: &Path) {
    let outs: Vec<_> = std::fs::read_dir(work_dir)
        .expect("CE work directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "out"))
        .collect();
    assert!(
        !outs.is_empty(),
        "no pilot output in {}",
        work_dir.display()
    );
    for out in outs {
        let text = std::fs::read_to_string(&out).expect("read output");
        assert!(
            text.contains("starting dirac-pilot"),
            "{}: {text}",
            out.display()
        );
        let stamp = out.file_stem().and_then(|s| s.to_str()).expect("stamp");
        if work_dir.join(format!("{stamp}.rc")).exists() {
            assert!(
                !work_dir.join(stamp).join("secret").exists(),
                "secret left behind"
            );
            assert!(
                !work_dir.join(format!("{stamp}.sh")).exists(),
                "wrapper left behind"
            );
        }
    }
}

#[test]
fn pilots_through_ssh_run_jobs() {
    if !peers_installed(&["sshd", "ssh", "ssh-keygen", "curl", "sha256sum"]) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let ssh_dir = tmp.path().join("ssh");
    let work_dir = tmp.path().join("remote-work");
    let port = free_port();
    let out = Command::new(repo().join("tests/ce/sshd.sh"))
        .arg(&ssh_dir)
        .arg(port.to_string())
        .output()
        .expect("tests/ce/sshd.sh");
    assert!(
        out.status.success(),
        "sshd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sshd_pid = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let sites = format!(
        "{{LCG.SSH.test: {{CEs: {{ssh.test: {{CEType: ssh, Host: 127.0.0.1, SSHPort: {port}, \
         SSHKey: '{}', SSHKnownHosts: '{}', WorkDir: '{}', \
         Queues: {{default: {{MaxTotalJobs: 2, MaxWaitingJobs: 2, NumberOfProcessors: 1}}}}}}}}}}}}",
        ssh_dir.join("id_ed25519").display(),
        ssh_dir.join("known_hosts").display(),
        work_dir.display(),
    );
    let d = Diracd::start_with(
        tempfile::tempdir().expect("tmp"),
        &[("DIRAC__RESOURCES__SITES", sites)],
    );
    run_jobs_at(&d, "LCG.SSH.test");
    let pilots = pilots(&d, "SSH");
    assert!(!pilots.is_empty(), "{}", d.log());
    for p in &pilots {
        let reference = p["reference"].as_str().unwrap_or_default();
        assert!(reference.starts_with("ssh://ssh.test/"), "{p}");
        assert_eq!(p["site"], "LCG.SSH.test", "{p}");
    }
    check_pilot_outputs(&work_dir);
    d.stop();
    let _ = Command::new("kill").arg(&sshd_pid).status();
}

#[test]
fn pilots_through_slurm_run_jobs() {
    const TEST: &str = "ce::pilots_through_slurm_run_jobs";
    if std::env::var_os(NETNS_MARK).is_none() {
        if !peers_installed(&["unshare", "slurmctld", "slurmd", "sbatch", "munged", "curl"]) {
            return;
        }
        // Slurm binds every interface: its own network, mounts and host name.
        let exe = std::env::current_exe().expect("test binary");
        let out = Command::new("unshare")
            .args(["-n", "-m", "-u", "--propagation", "private"])
            .arg(&exe)
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(NETNS_MARK, "1")
            .output()
            .expect("unshare");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "inside the namespace: {text}");
        assert!(
            text.contains("1 passed"),
            "the inner test did not run: {text}"
        );
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let slurm = tmp.path().join("slurm");
    let work_dir = tmp.path().join("slurm-work");
    let out = Command::new(repo().join("tests/ce/slurm.sh"))
        .arg(&slurm)
        .output()
        .expect("tests/ce/slurm.sh");
    assert!(
        out.status.success(),
        "slurm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sites = format!(
        "{{LCG.Slurm.test: {{CEs: {{slurm.test: {{CEType: slurm, WorkDir: '{}', \
         Queues: {{debug: {{MaxTotalJobs: 2, MaxWaitingJobs: 2, NumberOfProcessors: 1}}}}}}}}}}}}",
        work_dir.display(),
    );
    let d = Diracd::start_with(
        tempfile::tempdir().expect("tmp"),
        &[
            ("DIRAC__RESOURCES__SITES", sites),
            ("SLURM_CONF", slurm.join("slurm.conf").display().to_string()),
        ],
    );
    run_jobs_at(&d, "LCG.Slurm.test");
    let pilots = pilots(&d, "Slurm");
    assert!(!pilots.is_empty(), "{}", d.log());
    for p in &pilots {
        let reference = p["reference"].as_str().unwrap_or_default();
        assert!(reference.starts_with("slurm://slurm.test/"), "{p}");
    }
    check_pilot_outputs(&work_dir);
    d.stop();
    for pid_file in ["slurmd.pid", "slurmctld.pid", "munge.pid"] {
        if let Ok(pid) = std::fs::read_to_string(slurm.join(pid_file)) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// `diracd token` for `user` in `group`.
fn token(d: &Diracd, user: &str, group: &str) -> String {
    let out = Command::new(super::bin("diracd"))
        .args(["token", "--user", user, "--group", group, "--data-dir"])
        .arg(d.dir.path())
        .output()
        .expect("diracd token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn as_operator(d: &Diracd, op: &str, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["--json", "--token", op];
    full.extend_from_slice(args);
    let out = d.dirac(&full);
    assert!(
        out.status.success(),
        "dirac {args:?}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Operators see the queues, ban a site (its pilots then get test jobs
/// only, and the SiteDirector sends none for user jobs), allow it again,
/// read a pilot's output at its CE and kill it.
#[test]
fn operators_ban_sites_and_kill_pilots() {
    let d = Diracd::start_with(tempfile::tempdir().expect("tmp"), &[]);
    let op = token(&d, "admin", "dteam_operator");
    let queues = as_operator(&d, &op, &["ce", "status"]);
    let q = &queues["queues"][0];
    assert_eq!(
        (q["site"].as_str(), q["ce_type"].as_str()),
        (Some("LCG.Local.local"), Some("local")),
        "{queues}"
    );

    // A normal user may not ban a site.
    let out = d.dirac(&["site", "ban", "LCG.Local.local", "--reason", "x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.dirac(&["--token", &op, "site", "ban", "LCG.Local.local"]);
    assert!(!out.status.success(), "a ban needs a reason");

    let banned = as_operator(
        &d,
        &op,
        &["site", "ban", "LCG.Local.local", "--reason", "downtime"],
    );
    assert_eq!(banned["sites"][0]["status"], "Banned", "{banned}");
    let user_job = d.dir.path().join("user.jdl");
    std::fs::write(
        &user_job,
        "[ Executable = \"/bin/sleep\"; Arguments = \"60\"; JobName = \"user\"; ]",
    )
    .expect("write");
    let test_job = d.dir.path().join("test.jdl");
    std::fs::write(
        &test_job,
        "[ Executable = \"/bin/true\"; JobName = \"sam\"; JobType = \"Test\"; ]",
    )
    .expect("write");
    let user = ids(&d.json(&["job", "submit", &user_job.display().to_string()]))[0];
    let test = ids(&d.json(&["job", "submit", &test_job.display().to_string()]))[0];
    let done = wait_final(&d, &[test], Duration::from_secs(60));
    assert_eq!(
        done[0]["status"], "Done",
        "the test job runs at the banned site: {}",
        done[0]
    );
    let st = d.json(&["job", "status", &user.to_string()]);
    assert_eq!(
        st["jobs"][0]["status"], "Waiting",
        "no user job at a banned site: {st}"
    );
    let queues = as_operator(&d, &op, &["ce", "status", "--site", "LCG.Local.local"]);
    assert_eq!(queues["queues"][0]["site_banned"], true, "{queues}");
    assert_eq!(
        queues["queues"][0]["waiting_jobs"], 0,
        "user jobs are no demand there: {queues}"
    );

    // Allowed again: the user job starts; its pilot's output is at the CE.
    as_operator(&d, &op, &["site", "allow", "LCG.Local.local"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let stamp = loop {
        let st = d.json(&["job", "status", &user.to_string()]);
        if st["jobs"][0]["status"] == "Running" {
            let pilots = as_operator(&d, &op, &["pilot", "list", "--where", "Status=Running"]);
            if let Some(p) = pilots["pilots"].as_array().and_then(|p| {
                p.iter().find(|p| {
                    p["job_ids"]
                        .as_array()
                        .is_some_and(|j| j.iter().any(|id| id.as_u64() == Some(user)))
                })
            }) {
                break p["stamp"].as_str().expect("stamp").to_string();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the user job never ran: {st}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let output = as_operator(&d, &op, &["pilot", "logs", "--ce", &stamp]);
    assert!(
        output["text"]
            .as_str()
            .is_some_and(|t| t.contains("starting dirac-pilot")),
        "{output}"
    );
    let killed = as_operator(&d, &op, &["pilot", "kill", &stamp]);
    assert_eq!(killed["killed"][0], stamp.as_str(), "{killed}");
    let shown = as_operator(&d, &op, &["pilot", "show", &stamp]);
    assert_eq!(shown["pilots"][0]["status"], "Aborted", "{shown}");
    assert!(
        shown["pilots"][0]["status_reason"]
            .as_str()
            .is_some_and(|r| r.contains("killed by admin")),
        "{shown}"
    );
    // Killing it again is a per-item failure, not a crash.
    let out = d.dirac(&["--token", &op, "pilot", "kill", &stamp]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Aborted already"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.stop();
}
