//! Pilots submitted by the SiteDirector through real batch-system peers run
//! real jobs from `diracd all`: an OpenSSH server (the ssh CE, processes on
//! the host) and a one-node Slurm cluster (the slurm CE). The wrappers fetch
//! `dirac-pilot` over HTTP from the installation and check its sha256.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Diracd, free_port, ids, repo, wait_final};

const NETNS_MARK: &str = "DIRAC_CE_IN_NETNS";

/// Run the test `test` again in new namespaces (`unshare` flags: network,
/// mounts, host name …), where it finds `NETNS_MARK` set; fails unless it
/// ran and passed there.
fn rerun_in_namespaces(test: &str, namespaces: &[&str]) {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new("unshare")
        .args(namespaces)
        .args(["--propagation", "private"])
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
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
}

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

/// A real sshd on 127.0.0.1 (tests/ce/sshd.sh), stopped when dropped.
struct Sshd(String);

impl Sshd {
    fn start(dir: &Path, port: u16) -> Sshd {
        let out = Command::new(repo().join("tests/ce/sshd.sh"))
            .arg(dir)
            .arg(port.to_string())
            .output()
            .expect("tests/ce/sshd.sh");
        assert!(
            out.status.success(),
            "sshd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Sshd(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap_or_default()
                .to_string(),
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.0).status();
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
    let _sshd = Sshd::start(&ssh_dir, port);
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
}

#[test]
fn pilots_through_slurm_run_jobs() {
    const TEST: &str = "ce::pilots_through_slurm_run_jobs";
    if std::env::var_os(NETNS_MARK).is_none() {
        if !peers_installed(&["unshare", "slurmctld", "slurmd", "sbatch", "munged", "curl"]) {
            return;
        }
        // Slurm binds every interface: its own network, mounts and host name.
        rerun_in_namespaces(TEST, &["-n", "-m", "-u"]);
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

/// A token of the operators' group (site mask, pilot kills, CE output).
fn operator_token(d: &Diracd) -> String {
    d.token_in("admin", Some("dteam_operator"))
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
    let op = operator_token(&d);
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

/// `KEY=value` lines of a file.
fn env_file(path: &Path) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(path)
        .expect("env file")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Pilots as OpenStack servers: a real Keystone authenticates the CE (with
/// an application credential), and a stand-in of Nova's `/servers` API
/// (tests/ce/nova_standin.py: no real Nova can run here) checks every token
/// against that Keystone and "boots" a server by running its user-data as a
/// local process that halts (exits) at the end. Halted servers are reaped.
#[test]
fn pilots_through_openstack_run_jobs() {
    if !peers_installed(&["python3", "curl"]) {
        return;
    }
    let tools = super::test_tools().expect("tools dir");
    if !tools.join("keystone-venv/bin/python").exists() {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but Keystone is missing: run `make test-tools` (scripts/openstack-tools.sh)"
        );
        eprintln!("skipping: Keystone not installed (scripts/openstack-tools.sh)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let (kport, nport) = (free_port(), free_port());
    let kdir = tmp.path().join("keystone");
    let out = Command::new(repo().join("tests/ce/keystone.sh"))
        .arg(&kdir)
        .args([kport.to_string(), nport.to_string()])
        .output()
        .expect("keystone.sh");
    assert!(
        out.status.success(),
        "keystone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = env_file(&kdir.join("env"));
    let pilots_dir = tmp.path().join("vms");
    std::fs::create_dir_all(&pilots_dir).expect("mkdir");
    let mut nova = Command::new("python3")
        .arg(repo().join("tests/ce/nova_standin.py"))
        .args([
            "--port",
            &nport.to_string(),
            "--keystone",
            &env["KEYSTONE_URL"],
            "--state-dir",
        ])
        .arg(tmp.path().join("nova"))
        .args(["--build-seconds", "0.5", "--pass-env", "DIRAC_PILOT_BASE"])
        .env("DIRAC_PILOT_BASE", &pilots_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nova stand-in");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !tmp.path().join("nova/port").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the Nova stand-in did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let secret_file = tmp.path().join("app-cred-secret");
    std::fs::write(&secret_file, &env["APP_CRED_SECRET"]).expect("write");
    let sites = format!(
        "{{CLOUD.OpenStack.test: {{CEs: {{cloud.test: {{CEType: openstack, KeystoneURL: '{}', \
         AppCredentialID: '{}', AppCredentialSecretFile: '{}', \
         Image: 6c1c2d5e-8f7a-4b8e-9d6a-0c2f8e1a7b3d, Flavor: '1', \
         Queues: {{default: {{MaxTotalJobs: 2, MaxWaitingJobs: 2, NumberOfProcessors: 1}}}}}}}}}}}}",
        env["KEYSTONE_URL"],
        env["APP_CRED_ID"],
        secret_file.display(),
    );
    let d = Diracd::start_with(
        tempfile::tempdir().expect("tmp"),
        &[
            ("DIRAC__RESOURCES__SITES", sites),
            (
                "DIRAC__SERVICES__SITEDIRECTOR__PILOTSTATUSUPDATECYCLEFACTOR",
                "1".into(),
            ),
        ],
    );
    run_jobs_at(&d, "CLOUD.OpenStack.test");
    let pilots = pilots(&d, "Cloud");
    assert!(!pilots.is_empty(), "{}", d.log());
    for p in &pilots {
        let reference = p["reference"].as_str().unwrap_or_default();
        assert!(reference.starts_with("openstack://cloud.test/"), "{p}");
    }
    // The pilots stop once the queues are empty; their halted servers are
    // deleted by the next state poll.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = Command::new("curl")
            .args(["-s", "-H"])
            .arg(format!("X-Auth-Token: {}", keystone_token(&env)))
            .arg(format!("http://127.0.0.1:{nport}/v2.1/servers/detail"))
            .output()
            .expect("curl");
        let servers: serde_json::Value = serde_json::from_slice(&list.stdout).expect("servers");
        if servers["servers"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "servers never reaped: {servers}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    d.stop();
    let _ = nova.kill();
    let _ = nova.wait();
    if let Ok(pid) = std::fs::read_to_string(kdir.join("keystone.pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
}

/// A project token of the CE's application credential.
fn keystone_token(env: &std::collections::HashMap<String, String>) -> String {
    let body = serde_json::json!({"auth": {"identity": {"methods": ["application_credential"],
        "application_credential": {"id": env["APP_CRED_ID"], "secret": env["APP_CRED_SECRET"]}}}});
    let out = Command::new("curl")
        .args(["-s", "-i", "-H", "content-type: application/json", "-d"])
        .arg(body.to_string())
        .arg(format!("{}/auth/tokens", env["KEYSTONE_URL"]))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-subject-token")
                .then(|| v.trim().to_string())
        })
        .expect("a token")
}

/// Pilots as Kubernetes Jobs: kube-rs talks to kmock (a Kubernetes API
/// emulator) behind tests/ce/kube_standin.py, whose kubelet STAND-IN runs
/// each Job's container command as a local process (no cluster, kubelet or
/// container engine can run here) and writes the Job and Pod statuses.
#[test]
fn pilots_through_kubernetes_run_jobs() {
    let Some(python) = super::tools_python() else {
        return;
    };
    if !python
        .parent()
        .is_some_and(|bin| bin.join("../.dirac-kmock-0.8").exists())
    {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but kmock is missing: run scripts/kube-tools.sh"
        );
        eprintln!("skipping: kmock not installed (scripts/kube-tools.sh)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let kubeconfig = tmp.path().join("kubeconfig");
    let mut api = Command::new(&python)
        .arg(repo().join("tests/ce/kube_standin.py"))
        .args(["--port", "0", "--state-dir"])
        .arg(tmp.path().join("k8s"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("k8s.log")).expect("log"))
        .spawn()
        .expect("kube stand-in");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the Kubernetes stand-in did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sites = format!(
        "{{CLOUD.K8s.test: {{CEs: {{k8s.test: {{CEType: kubernetes, KubeConfig: '{}', Namespace: default, \
         Image: 'registry.example/dirac-pilot:1', TTLSecondsAfterFinished: 3600, \
         Queues: {{default: {{MaxTotalJobs: 2, MaxWaitingJobs: 2, NumberOfProcessors: 1, MaxRAM: 512}}}}}}}}}}}}",
        kubeconfig.display(),
    );
    let d = Diracd::start_with(
        tempfile::tempdir().expect("tmp"),
        &[
            ("DIRAC__RESOURCES__SITES", sites),
            (
                "DIRAC__SERVICES__SITEDIRECTOR__PILOTSTATUSUPDATECYCLEFACTOR",
                "1".into(),
            ),
        ],
    );
    run_jobs_at(&d, "CLOUD.K8s.test");
    let pilots = pilots(&d, "Kubernetes");
    assert!(!pilots.is_empty(), "{}", d.log());
    for p in &pilots {
        let reference = p["reference"].as_str().unwrap_or_default();
        assert!(
            reference.starts_with("kubernetes://k8s.test/default/"),
            "{p}"
        );
    }
    // The pilot's output, read through the pod log subresource.
    let op = operator_token(&d);
    let stamp = pilots[0]["stamp"].as_str().expect("stamp");
    let out = as_operator(&d, &op, &["pilot", "logs", "--ce", stamp]);
    assert!(
        out["text"]
            .as_str()
            .is_some_and(|t| t.contains("starting dirac-pilot")),
        "{out}"
    );
    d.stop();
    let _ = api.kill();
    let _ = api.wait();
}

/// Pilots through HTCondorCE: the connector drives `condor_submit`,
/// `condor_q`, `condor_history`, `condor_rm` and `condor_transfer_data`.
/// No HTCondor daemon or tool can be installed here, so these are the
/// scripted STAND-INS of tests/ce/condor-standin, which check every submit
/// description with HTCondor's real parser (PyPI htcondor2), demand the
/// token as HTCondor's clients present it, and run the jobs as local
/// processes.
#[test]
fn pilots_through_htcondorce_run_jobs() {
    let Some(python) = super::tools_python() else {
        return;
    };
    let has_bindings = Command::new(&python)
        .args(["-c", "import htcondor2"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_bindings {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but htcondor2 is missing: scripts/condor-tools.sh"
        );
        eprintln!("skipping: htcondor bindings not installed (scripts/condor-tools.sh)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let token = format!("eyJ.{}.sig", crate::ce::random_hex());
    let token_file = tmp.path().join("ce.token");
    std::fs::write(&token_file, format!("# the CE's token\n{token}\n")).expect("write");
    let path = format!(
        "{}:{}",
        repo().join("tests/ce/condor-standin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let sites = format!(
        "{{LCG.Condor.test: {{CEs: {{ce.htcondor.test: {{CEType: htcondorce, Host: ce.htcondor.test, \
         TokenFile: '{}', Queues: {{long: {{MaxTotalJobs: 2, MaxWaitingJobs: 2, NumberOfProcessors: 2, MaxRAM: 2000}}}}}}}}}}}}",
        token_file.display(),
    );
    let d = Diracd::start_with(
        tempfile::tempdir().expect("tmp"),
        &[
            ("DIRAC__RESOURCES__SITES", sites),
            (
                "DIRAC__SERVICES__SITEDIRECTOR__PILOTSTATUSUPDATECYCLEFACTOR",
                "1".into(),
            ),
            ("PATH", path),
            (
                "CONDOR_STANDIN_DIR",
                tmp.path().join("condor").display().to_string(),
            ),
            ("CONDOR_STANDIN_REQUIRE_TOKEN", token.clone()),
            ("CONDOR_STANDIN_SCHEDD_NAME", "ce.htcondor.test".into()),
            ("CONDOR_STANDIN_PYTHON", python.display().to_string()),
            ("CONDOR_STANDIN_PERIODIC_INTERVAL", "1".into()),
        ],
    );
    run_jobs_at(&d, "LCG.Condor.test");
    let pilots = pilots(&d, "HTCondorCE");
    assert!(!pilots.is_empty(), "{}", d.log());
    for p in &pilots {
        let reference = p["reference"].as_str().unwrap_or_default();
        assert!(
            reference.starts_with("htcondorce://ce.htcondor.test/"),
            "{p}"
        );
    }
    // The output comes back with condor_transfer_data.
    let op = operator_token(&d);
    let stamp = pilots[0]["stamp"].as_str().expect("stamp");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = d.dirac(&["--json", "--token", &op, "pilot", "logs", "--ce", stamp]);
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && text.contains("starting dirac-pilot") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pilot output: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        !d.log().contains(&token),
        "the CE token never reaches the log"
    );
    d.stop();
    let _ = std::fs::remove_dir_all(tmp.path().join("condor"));
}

pub(crate) fn random_hex() -> String {
    let mut buf = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = f.read_exact(&mut buf);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Pilots through a real ARC CE: A-REX 6 (fork batch system) in its own
/// network namespace (it binds every interface), with diracd beside it.
/// The connector submits ADL over the REST interface with a client
/// certificate, uploads each wrapper into its job's session, follows the
/// states in bulk and reads the pilot's output from the session. A-REX 6
/// offers one ECDHE curve, P-521 by default, which rustls lacks: this
/// server is started with P-256 (see docs/adr/0009).
#[test]
fn pilots_through_arc_run_jobs() {
    const TEST: &str = "ce::pilots_through_arc_run_jobs";
    if std::env::var_os(NETNS_MARK).is_none() {
        let arex = std::path::Path::new("/usr/lib/arc/arc-config-check").exists()
            || std::path::Path::new("/usr/sbin/arched").exists();
        if !arex || !peers_installed(&["unshare", "openssl", "curl"]) {
            assert!(
                std::env::var("CI").is_err(),
                "CI=true but A-REX is missing: scripts/arc-server.sh"
            );
            eprintln!("skipping: A-REX not installed (scripts/arc-server.sh)");
            return;
        }
        rerun_in_namespaces(TEST, &["-n", "-m"]);
        return;
    }
    let _ = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    let tmp = tempfile::tempdir().expect("tmp");
    // A-REX maps jobs to an unprivileged user, who must reach its files.
    let _ = Command::new("chmod").arg("755").arg(tmp.path()).status();
    let arc = tmp.path().join("arc");
    let port = free_port();
    let out = Command::new(repo().join("tests/ce/arex.sh"))
        .arg(&arc)
        .arg(port.to_string())
        .env("AREX_TLS_CURVE", "prime256v1")
        .output()
        .expect("tests/ce/arex.sh");
    assert!(
        out.status.success(),
        "A-REX: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let env = env_file(&arc.join("env"));
    let sites = format!(
        "{{ARC.Fork.test: {{CEs: {{localhost: {{CEType: arc, Host: localhost, Port: {port}, \
         CAFile: '{}', CertFile: '{}', KeyFile: '{}', \
         Queues: {{fork: {{MaxTotalJobs: 2, MaxWaitingJobs: 2, NumberOfProcessors: 1}}}}}}}}}}}}",
        env["CA"], env["CERT"], env["KEY"],
    );
    let d = Diracd::start_with(
        tempfile::tempdir().expect("tmp"),
        &[
            ("DIRAC__RESOURCES__SITES", sites),
            (
                "DIRAC__SERVICES__SITEDIRECTOR__PILOTSTATUSUPDATECYCLEFACTOR",
                "1".into(),
            ),
        ],
    );
    run_jobs_at(&d, "ARC.Fork.test");
    let pilots = pilots(&d, "ARC");
    assert!(!pilots.is_empty(), "{}", d.log());
    let op = operator_token(&d);
    let stamp = pilots[0]["stamp"].as_str().expect("stamp");
    assert!(
        pilots[0]["reference"]
            .as_str()
            .is_some_and(|r| r.starts_with("arc://localhost/")),
        "{}",
        pilots[0]
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let out = d.dirac(&["--json", "--token", &op, "pilot", "logs", "--ce", stamp]);
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && text.contains("starting dirac-pilot") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pilot output: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    d.stop();
    for key in ["AREX_PID", "WS_PID"] {
        if let Some(pid) = env.get(key) {
            let _ = Command::new("kill").arg(pid).status();
        }
    }
}

/// Push mode (DIRAC's PushJobAgent) for a site whose worker nodes cannot
/// reach the services: the pilot runs beside diracd and each payload runs
/// on the CE's host, reached through a real sshd; the job directory goes
/// there and back, and the output sandbox shows where the payload ran.
#[test]
fn jobs_pushed_to_a_ce_through_ssh() {
    if !peers_installed(&["sshd", "ssh", "ssh-keygen", "tar"]) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let ssh_dir = tmp.path().join("ssh");
    let remote = tmp.path().join("hpc-scratch");
    let port = free_port();
    let _sshd = Sshd::start(&ssh_dir, port);
    let sites = format!(
        "{{HPC.Push.test: {{CEs: {{login.hpc.test: {{CEType: ssh, PushMode: true, Host: 127.0.0.1, SSHPort: {port}, \
         SSHKey: '{}', SSHKnownHosts: '{}', WorkDir: '{}', \
         Queues: {{batch: {{MaxTotalJobs: 1, MaxWaitingJobs: 1, NumberOfProcessors: 1}}}}}}}}}}}}",
        ssh_dir.join("id_ed25519").display(),
        ssh_dir.join("known_hosts").display(),
        remote.display(),
    );
    let d = Diracd::start_with(
        tempfile::tempdir().expect("tmp"),
        &[("DIRAC__RESOURCES__SITES", sites)],
    );
    let jdl = tmp.path().join("pushed.jdl");
    std::fs::write(
        &jdl,
        r#"[ Executable = "/bin/sh"; Arguments = "-c 'cat in.txt > where.txt; cat /proc/$PPID/comm >> where.txt; pwd >> where.txt'";
            InputSandbox = {"in.txt"}; OutputSandbox = {"where.txt"}; JobName = "pushed"; ]"#,
    )
    .expect("write");
    std::fs::write(tmp.path().join("in.txt"), "from the input sandbox\n").expect("write");
    let out = d.dirac_in(
        tmp.path(),
        tmp.path(),
        None,
        &["--json", "job", "submit", &jdl.display().to_string()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs = ids(&serde_json::from_slice(&out.stdout).expect("json"));
    let done = wait_final(&d, &jobs, Duration::from_secs(90));
    assert_eq!(done[0]["status"], "Done", "{}\n{}", done[0], d.log());
    assert_eq!(done[0]["site"], "HPC.Push.test");
    let outdir = tmp.path().join("out");
    d.json(&[
        "job",
        "output",
        &jobs[0].to_string(),
        "--dir",
        outdir.to_str().expect("utf-8"),
    ]);
    let where_ = std::fs::read_to_string(outdir.join(jobs[0].to_string()).join("where.txt"))
        .expect("where.txt");
    let lines: Vec<&str> = where_.lines().collect();
    assert_eq!(lines[0], "from the input sandbox", "{where_}");
    assert_eq!(
        lines[1], "sshd",
        "the payload ran in an SSH session: {where_}"
    );
    assert!(
        lines[2].starts_with(&remote.display().to_string()),
        "in the CE's scratch: {where_}"
    );
    assert!(
        std::fs::read_dir(&remote)
            .map(|mut r| r.next().is_none())
            .unwrap_or(true),
        "the job directory was removed on the CE"
    );
    d.stop();
}

/// A CE whose tools fail (the HTCondor stand-in told to fail every
/// condor_submit as a schedd that cannot be found): the pilots recorded for
/// the submission end Aborted with the tool's message, no job is lost, and
/// the queue backs off instead of retrying every cycle.
#[test]
fn a_failing_ce_aborts_its_pilots_and_backs_off() {
    if !peers_installed(&["python3"]) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let path = format!(
        "{}:{}",
        repo().join("tests/ce/condor-standin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let sites = "{LCG.Broken.test: {CEs: {ce.broken.test: {CEType: htcondorce, Host: ce.broken.test, \
         Queues: {long: {MaxTotalJobs: 4, MaxWaitingJobs: 4}}}}}}";
    let d = Diracd::start_with(
        tempfile::tempdir().expect("tmp"),
        &[
            ("DIRAC__RESOURCES__SITES", sites.into()),
            (
                "DIRAC__SERVICES__SITEDIRECTOR__FAILEDQUEUECYCLEFACTOR",
                "1000".into(),
            ),
            ("PATH", path),
            (
                "CONDOR_STANDIN_DIR",
                tmp.path().join("condor").display().to_string(),
            ),
            ("CONDOR_STANDIN_FAIL", "condor_submit".into()),
        ],
    );
    let hello = repo().join("examples/hello.jdl").display().to_string();
    let job = ids(&d.json(&["job", "submit", &hello]))[0];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let aborted = loop {
        let list = pilots(&d, "HTCondorCE");
        if !list.is_empty() && list.iter().all(|p| p["status"] == "Aborted") {
            break list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{list:?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for p in &aborted {
        let reason = p["status_reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("submission failed") && reason.contains("schedd"),
            "{p}"
        );
    }
    // Backing off: two more cycles later, no new pilot was recorded.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        pilots(&d, "HTCondorCE").len(),
        aborted.len(),
        "the queue backs off"
    );
    let st = d.json(&["job", "status", &job.to_string()]);
    assert_eq!(
        st["jobs"][0]["status"], "Waiting",
        "the job waits for a working CE: {st}"
    );
    assert!(
        d.log().contains("CE failed: the queue backs off"),
        "{}",
        d.log()
    );
    d.stop();
}
