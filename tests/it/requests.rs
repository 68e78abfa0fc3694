//! Requests end to end on `diracd all`: the CLI puts them, the
//! RequestExecutingAgent carries them out against the real catalog and
//! the local storage elements with the owner's rights — a replica made and
//! registered, one removed, a file removed everywhere — and a request that
//! can never succeed fails with the reason.

use std::path::Path;
use std::time::{Duration, Instant};

use super::Diracd;

/// Every file below `dir` whose path ends with `name`.
fn on_disk(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    super::walk_files(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(name))
        .collect()
}

/// Poll job `id` until its status is one of `until`; its attributes.
fn wait_job(d: &Diracd, id: u64, until: &[&str]) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let job = d.json(&["job", "status", &id.to_string()])["jobs"][0].clone();
        if until.iter().any(|s| job["status"] == *s) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id}: {job}\n{}", d.log());
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn wait_request(d: &Diracd, id: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = d.json(&["request", "show", &id.to_string()]);
        let r = shown["requests"][0].clone();
        if matches!(r["status"].as_str(), Some("Done" | "Failed" | "Canceled")) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "request {id} not final: {r}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_agent_replicates_and_removes_files() {
    let ses = "{LOCAL-SE: {Site: LCG.Local.local, Protocols: [{Protocol: file}, {Protocol: dips}]}, \
               SE-2: {Protocols: [{Protocol: file, Path: se-two}]}}";
    let d = Diracd::start_with(
        tempfile::tempdir().expect("tmp"),
        &[
            ("DIRAC__RESOURCES__SITES", "{}".into()),
            ("DIRAC__RESOURCES__STORAGEELEMENTS", ses.into()),
            ("DIRAC__SERVICES__REQUESTS__POLLINGTIME", "1".into()),
        ],
    );
    let work = tempfile::tempdir().expect("work");
    let local = work.path().join("payload.txt");
    std::fs::write(&local, "replicate me\n").expect("write");
    let lfn = "/dteam/user/a/alice/requests/payload.txt";
    d.json(&[
        "dput",
        "--se",
        "LOCAL-SE",
        &local.display().to_string(),
        lfn,
    ]);
    let se_two = d.dir.path().join("se").join("se-two");

    // Bob may read alice's file but not remove it: his request fails with
    // the reason and nothing is touched.
    let bob = d.token_for("bob");
    let home = tempfile::tempdir().expect("home");
    let as_bob = |args: &[&str]| -> serde_json::Value {
        let out = d.dirac_in(
            home.path(),
            work.path(),
            Some(&bob),
            &[&["--json"], args].concat(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let put = as_bob(&["request", "put", "RemoveFile", lfn]);
    let id = put["request_ids"][0].to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let r = loop {
        let r = as_bob(&["request", "show", &id])["requests"][0].clone();
        if r["status"] == "Failed" || r["status"] == "Done" {
            break r;
        }
        assert!(Instant::now() < deadline, "{r}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(r["status"], "Failed", "{r}");
    assert!(
        r["error"].as_str().unwrap_or("").contains("write access"),
        "{r}"
    );
    // Alice does not even see bob's request.
    assert!(!d.dirac(&["request", "show", &id]).status.success());
    let replicas = d.json(&["dreplicas", lfn]);
    assert_eq!(replicas["replicas"][lfn][0]["se"], "LOCAL-SE", "{replicas}");

    // A replica at SE-2, copied and registered by the agent.
    let put = d.json(&[
        "request",
        "put",
        "ReplicateAndRegister",
        "--target",
        "SE-2",
        lfn,
    ]);
    let id = put["request_ids"][0].as_u64().expect("id");
    let r = wait_request(&d, id);
    assert_eq!(r["status"], "Done", "{r}");
    assert_eq!(r["operations"][0]["files"][0]["status"], "Done");
    let replicas = d.json(&["dreplicas", lfn]);
    let ses: Vec<&str> = replicas["replicas"][lfn]
        .as_array()
        .expect("replicas")
        .iter()
        .filter_map(|r| r["se"].as_str())
        .collect();
    assert_eq!(ses, vec!["LOCAL-SE", "SE-2"], "{replicas}");
    let copies = on_disk(&se_two, "payload.txt");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        std::fs::read_to_string(&copies[0]).expect("read"),
        "replicate me\n"
    );

    // The last replica cannot go with RemoveReplica; the first one can.
    let put = d.json(&[
        "request",
        "put",
        "RemoveReplica",
        "--target",
        "LOCAL-SE,SE-2",
        lfn,
    ]);
    let r = wait_request(&d, put["request_ids"][0].as_u64().expect("id"));
    assert_eq!(r["status"], "Failed", "{r}");
    assert!(
        r["error"].as_str().unwrap_or("").contains("last replica"),
        "{r}"
    );
    let put = d.json(&[
        "request",
        "put",
        "RemoveReplica",
        "--target",
        "LOCAL-SE",
        lfn,
    ]);
    let r = wait_request(&d, put["request_ids"][0].as_u64().expect("id"));
    assert_eq!(r["status"], "Done", "{r}");
    let replicas = d.json(&["dreplicas", lfn]);
    assert_eq!(
        replicas["replicas"][lfn].as_array().map(Vec::len),
        Some(1),
        "{replicas}"
    );

    // RemoveFile: every copy and the entry.
    let put = d.json(&["request", "put", "RemoveFile", lfn]);
    let r = wait_request(&d, put["request_ids"][0].as_u64().expect("id"));
    assert_eq!(r["status"], "Done", "{r}");
    assert!(on_disk(&se_two, "payload.txt").is_empty());
    let gone = d.dirac(&["dreplicas", lfn]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("no such file"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );

    // A file that is not there can never be replicated: Failed at once.
    let missing = "/dteam/user/a/alice/requests/missing.txt";
    let put = d.json(&[
        "request",
        "put",
        "ReplicateAndRegister",
        "--target",
        "SE-2",
        missing,
    ]);
    let r = wait_request(&d, put["request_ids"][0].as_u64().expect("id"));
    assert_eq!(r["status"], "Failed", "{r}");
    assert!(
        r["operations"][0]["files"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("not in the catalog"),
        "{r}"
    );
    // Bad requests are refused when put, naming the problem.
    let out = d.dirac(&["request", "put", "Frobnicate", lfn]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown operation type"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = d.json(&["request", "list", "--status", "Failed"]);
    assert_eq!(
        listed["requests"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    d.stop();
}

/// A job whose output cannot be registered (the catalog refuses writes:
/// a MariaDB trigger stands for a catalog that is down), waiting
/// `Completed / Pending Requests` with its failover request.
struct Failover {
    rt: tokio::runtime::Runtime,
    fc: dirac_core::testing::TestDb,
    d: Diracd,
    work: tempfile::TempDir,
    job: u64,
    request: u64,
}

const FAILOVER_LFN: &str = "/dteam/user/a/alice/failover/out.txt";

impl Failover {
    fn start(env: &[(&str, String)]) -> Option<Failover> {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let fc = rt.block_on(dirac_core::testing::TestDb::new(
            dirac_core::db::Backend::MySql,
        ))?;
        let mut all = vec![
            ("DIRAC__SERVICES__DATABASES__FILECATALOGDB", fc.url.clone()),
            ("DIRAC__SERVICES__REQUESTS__POLLINGTIME", "1".into()),
            (
                "DIRAC__SERVICES__REQUESTS__CONSTANTREQUESTDELAY",
                "0".into(),
            ),
        ];
        all.extend(env.iter().cloned());
        let d = Diracd::start_with(tempfile::tempdir().expect("tmp"), &all);
        let work = tempfile::tempdir().expect("work");
        let jdl = work.path().join("out.jdl");
        std::fs::write(
            &jdl,
            r#"[ Executable = "/bin/sh"; Arguments = "-c 'echo result > out.txt'";
                 OutputData = {"out.txt"}; OutputPath = "failover"; OutputSE = "LOCAL-SE";
                 JobName = "failover"; ]"#,
        )
        .expect("write");
        // Reads work, new files cannot be registered.
        rt.block_on(async {
            sqlx::query(
                "CREATE TRIGGER catalog_down BEFORE INSERT ON FC_Files FOR EACH ROW \
                 SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'catalog down for the test'",
            )
            .execute(fc.db.pool())
            .await
            .expect("trigger");
        });
        let submitted = d.json(&["job", "submit", &jdl.display().to_string()]);
        let job = submitted["jobs"][0]["job_id"].as_u64().expect("id");
        let status = wait_job(&d, job, &["Completed", "Failed", "Done"]);
        assert_eq!(
            (status["status"].as_str(), status["minor_status"].as_str()),
            (Some("Completed"), Some("Pending Requests")),
            "{status}"
        );
        let requests = d.json(&["request", "list", "--job", &job.to_string()]);
        let request = requests["requests"][0].clone();
        assert_eq!(request["name"], format!("Job_{job}_failover"), "{requests}");
        let request = request["request_id"].as_u64().expect("request id");
        assert!(
            !d.dirac(&["dreplicas", FAILOVER_LFN]).status.success(),
            "not registered yet"
        );
        Some(Failover {
            rt,
            fc,
            d,
            work,
            job,
            request,
        })
    }

    /// The job's final (status, minor status).
    fn wait_job(&self) -> (String, String) {
        let job = wait_job(&self.d, self.job, &["Done", "Failed"]);
        (
            job["status"].as_str().unwrap_or_default().to_string(),
            job["minor_status"].as_str().unwrap_or_default().to_string(),
        )
    }

    fn stop(self) {
        self.d.stop();
        self.rt.block_on(self.fc.cleanup());
    }
}

/// Once the catalog is back the RequestExecutingAgent registers the file
/// and the job ends `Done / Requests Done`.
#[test]
fn a_failed_registration_becomes_a_failover_request() {
    let Some(f) = Failover::start(&[]) else {
        return;
    };
    f.rt.block_on(async {
        sqlx::query("DROP TRIGGER catalog_down")
            .execute(f.fc.db.pool())
            .await
            .expect("drop trigger");
    });
    let r = wait_request(&f.d, f.request);
    assert_eq!(r["status"], "Done", "{r}");
    assert_eq!(f.wait_job(), ("Done".into(), "Requests Done".into()));
    let replicas = f.d.json(&["dreplicas", FAILOVER_LFN]);
    assert_eq!(
        replicas["replicas"][FAILOVER_LFN][0]["se"], "LOCAL-SE",
        "{replicas}"
    );
    let home = tempfile::tempdir().expect("home");
    let got =
        f.d.dirac_in(home.path(), f.work.path(), None, &["dget", FAILOVER_LFN]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(f.work.path().join("out.txt")).expect("read"),
        "result\n"
    );
    f.stop();
}

/// A catalog that stays down: after MaxAttempts the request fails, and so
/// does the job.
#[test]
fn a_failover_request_that_fails_fails_its_job() {
    let Some(f) = Failover::start(&[("DIRAC__SERVICES__REQUESTS__MAXATTEMPTS", "2".into())]) else {
        return;
    };
    let r = wait_request(&f.d, f.request);
    assert_eq!(r["status"], "Failed", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap_or("")
            .contains("gave up after 2 attempts"),
        "{r}"
    );
    assert_eq!(f.wait_job(), ("Failed".into(), "Requests Failed".into()));
    f.stop();
}

/// The OutputSE refuses the output (its directory cannot be made: a file
/// stands where it should be): the pilot stores it on the failover SE, the
/// job waits `Completed / Pending Requests`, and once the OutputSE works
/// the agent moves the file there (ReplicateAndRegister, then
/// RemoveReplica from the failover SE) and ends the job Done.
#[test]
fn outputs_go_to_a_failover_se_and_are_moved_later() {
    let blocked = tempfile::tempdir().expect("tmp");
    let blocker = blocked.path().join("blocker");
    std::fs::write(&blocker, "not a directory").expect("write");
    let down_root = blocker.join("se");
    let ses = format!(
        "{{LOCAL-SE: {{Site: LCG.Local.local, Protocols: [{{Protocol: file}}, {{Protocol: dips}}]}}, \
         SE-DOWN: {{Protocols: [{{Protocol: file, Path: '{}'}}]}}}}",
        down_root.display()
    );
    let d = Diracd::start_with(
        tempfile::tempdir().expect("tmp"),
        &[
            ("DIRAC__RESOURCES__STORAGEELEMENTS", ses),
            (
                "DIRAC__OPERATIONS__DATAMANAGEMENT__FAILOVERSES",
                "[LOCAL-SE]".into(),
            ),
            ("DIRAC__SERVICES__REQUESTS__POLLINGTIME", "1".into()),
            (
                "DIRAC__SERVICES__REQUESTS__CONSTANTREQUESTDELAY",
                "0".into(),
            ),
        ],
    );
    let work = tempfile::tempdir().expect("work");
    let jdl = work.path().join("out.jdl");
    std::fs::write(
        &jdl,
        r#"[ Executable = "/bin/sh"; Arguments = "-c 'echo moved > out.txt'";
             OutputData = {"out.txt"}; OutputPath = "moved"; OutputSE = "SE-DOWN";
             JobName = "failover-se"; ]"#,
    )
    .expect("write");
    let submitted = d.json(&["job", "submit", &jdl.display().to_string()]);
    let job = submitted["jobs"][0]["job_id"].as_u64().expect("id");
    let lfn = "/dteam/user/a/alice/moved/out.txt";
    let status = wait_job(&d, job, &["Completed", "Failed", "Done"]);
    assert_eq!(
        (status["status"].as_str(), status["minor_status"].as_str()),
        (Some("Completed"), Some("Pending Requests")),
        "{status}"
    );
    // Kept on the failover SE meanwhile; the request waits to move it.
    let replicas = d.json(&["dreplicas", lfn]);
    assert_eq!(replicas["replicas"][lfn][0]["se"], "LOCAL-SE", "{replicas}");
    let requests = d.json(&["request", "list", "--job", &job.to_string()]);
    let request = requests["requests"][0].clone();
    assert_eq!(
        request["current_operation"], "ReplicateAndRegister",
        "{requests}"
    );
    assert_eq!(request["status"], "Waiting", "{requests}");

    // The OutputSE works again.
    std::fs::remove_file(&blocker).expect("unblock");
    let r = wait_request(&d, request["request_id"].as_u64().expect("id"));
    assert_eq!(r["status"], "Done", "{r}");
    let ops: Vec<&str> = r["operations"]
        .as_array()
        .expect("ops")
        .iter()
        .filter_map(|o| o["type"].as_str())
        .collect();
    assert_eq!(ops, vec!["ReplicateAndRegister", "RemoveReplica"]);
    let st = wait_job(&d, job, &["Done", "Failed"]);
    assert_eq!(
        (st["status"].as_str(), st["minor_status"].as_str()),
        (Some("Done"), Some("Requests Done")),
        "{st}"
    );
    let replicas = d.json(&["dreplicas", lfn]);
    let at: Vec<&str> = replicas["replicas"][lfn]
        .as_array()
        .expect("replicas")
        .iter()
        .filter_map(|r| r["se"].as_str())
        .collect();
    assert_eq!(at, vec!["SE-DOWN"], "{replicas}");
    let copies = on_disk(&down_root, "out.txt");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        std::fs::read_to_string(&copies[0]).expect("read"),
        "moved\n"
    );
    assert!(
        on_disk(&d.dir.path().join("se"), "moved/out.txt").is_empty(),
        "failover copy left"
    );
    d.stop();
}
