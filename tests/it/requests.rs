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
