//! The RequestExecutingAgent's cycle with scripted handlers (the real
//! handlers run against the catalog and storage elements in the end-to-end
//! tests): operations in order within one cycle, retries with back-off,
//! MaxAttempts, failures carried up to the request, the cleaner.

use std::collections::BTreeMap;
use std::sync::Mutex;

use dirac_core::db::Backend;
use dirac_core::testing::TestDb;
use dirac_rms::ReqDb;
use dirac_rms::agent::{Handlers, Owner, Settings, clean_once, execute_once};
use dirac_rms::model::{FileStatus, Operation, ReqStatus};

use super::request;

/// Scripted handlers: per LFN, what happens at each attempt.
#[derive(Default)]
struct Script {
    outcomes: Mutex<BTreeMap<String, Vec<FileStatus>>>,
    calls: Mutex<Vec<(String, String)>>,
}

#[async_trait::async_trait]
impl Handlers for Script {
    async fn execute(&self, owner: &Owner, op: &mut Operation) {
        for f in op
            .files
            .iter_mut()
            .filter(|f| f.status == FileStatus::Waiting)
        {
            self.calls
                .lock()
                .expect("calls")
                .push((op.kind.clone(), format!("{}:{}", owner.user, f.lfn)));
            f.attempt += 1;
            let next = self
                .outcomes
                .lock()
                .expect("script")
                .get_mut(&f.lfn)
                .and_then(|v| (!v.is_empty()).then(|| v.remove(0)))
                .unwrap_or(FileStatus::Done);
            f.status = next;
            f.error = match next {
                FileStatus::Waiting => "SE down".into(),
                FileStatus::Failed => "no such file".into(),
                _ => String::new(),
            };
        }
    }
}

#[tokio::test]
async fn operations_run_in_order_and_failures_wait_or_fail() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let reqdb = ReqDb::open(db.db.clone()).await.expect("open");
    let now = chrono::Utc::now().timestamp();
    let ok = reqdb
        .put(vec![request("ok", "alice", 0)], now)
        .await
        .expect("put")[0];
    let retry = reqdb
        .put(vec![request("retry", "bob", 0)], now)
        .await
        .expect("put")[0];
    let script = Script::default();
    {
        let mut s = script.outcomes.lock().expect("script");
        // Both requests name the same files and "ok" runs first: the
        // second file succeeds for alice, then waits at each of bob's
        // attempts.
        s.insert(
            "/dteam/a/2".into(),
            vec![
                FileStatus::Done,
                FileStatus::Waiting,
                FileStatus::Waiting,
                FileStatus::Waiting,
            ],
        );
    }
    // One at a time: the script hands out outcomes in call order.
    let settings = Settings {
        max_attempts: 3,
        concurrency: 1,
        ..Settings::default()
    };
    let c = execute_once(&reqdb, &script, None, "agent-1", &settings)
        .await
        .expect("cycle");
    assert_eq!((c.claimed, c.done, c.waiting), (2, 1, 1), "{c:?}");
    let got = reqdb.get(&[ok, retry]).await.expect("get");
    // Both operations of "ok" ran in one cycle, as its owner.
    assert_eq!(got[&ok].status, ReqStatus::Done);
    assert!(script.calls.lock().expect("calls").contains(&(
        "ReplicateAndRegister".to_string(),
        "alice:/dteam/a/1".to_string()
    )));
    // bob's request waits; the first attempt backs off by 2·ln(1) = 0.
    let r = &got[&retry];
    assert_eq!(r.status, ReqStatus::Waiting);
    assert_eq!(r.operations[0].files[1].attempt, 1);
    assert_eq!(r.operations[0].files[1].error, "SE down");

    // Next cycles: attempt 2 backs off (2·ln 2 minutes) ...
    let c = execute_once(&reqdb, &script, None, "agent-1", &settings)
        .await
        .expect("cycle");
    assert_eq!(c.waiting, 1);
    let r = reqdb
        .get(&[retry])
        .await
        .expect("get")
        .remove(&retry)
        .expect("r");
    assert!(
        r.not_before > chrono::Utc::now().timestamp() + 60,
        "{}",
        r.not_before
    );
    assert!(
        execute_once(&reqdb, &script, None, "agent-1", &settings)
            .await
            .expect("cycle")
            .claimed
            == 0
    );

    // ... and at MaxAttempts the file fails, and with it the request.
    sqlx::query("UPDATE RMS_Requests SET NotBefore = 0 WHERE RequestID = ?")
        .bind(i64::try_from(retry).expect("id"))
        .execute(db.db.pool())
        .await
        .expect("reset back-off");
    let c = execute_once(&reqdb, &script, None, "agent-1", &settings)
        .await
        .expect("cycle");
    assert_eq!(c.failed, 1, "{c:?}");
    let r = reqdb
        .get(&[retry])
        .await
        .expect("get")
        .remove(&retry)
        .expect("r");
    assert_eq!(r.status, ReqStatus::Failed);
    assert_eq!(r.operations[0].files[1].status, FileStatus::Failed);
    assert!(
        r.operations[0].files[1]
            .error
            .contains("gave up after 3 attempts"),
        "{r:?}"
    );
    assert!(r.error.contains("RegisterFile failed"), "{}", r.error);

    // The cleaner keeps recent final requests.
    assert_eq!(
        clean_once(&reqdb, None, &settings).await.expect("clean"),
        (0, 0)
    );
    db.cleanup().await;
}
