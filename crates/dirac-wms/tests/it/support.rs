//! Shared helpers: a scenario runs once per database backend.

use std::future::Future;
use std::sync::Arc;

use dirac_core::config::{DiracConfig, JobDescriptionOps};
use dirac_core::db::Backend;
use dirac_core::testing::TestDb;
use dirac_wms::JobDb;
use dirac_wms::submit::{Submitter, prepare};

pub const ALICE: Submitter<'static> = Submitter {
    owner: "alice",
    owner_group: "dteam_user",
    vo: "dteam",
};

pub const CONFIG: &str = r#"
Registry:
  VOs:
    dteam:
      DefaultGroup: dteam_user
      Users: { alice: {}, bob: {}, carol: {}, admin: {}, pilot: {}, mon: {} }
      Groups:
        dteam_user: { Properties: [NormalUser], Users: [alice, bob] }
        dteam_share: { Properties: [NormalUser, JobSharing], Users: [carol] }
        dteam_admin: { Properties: [NormalUser, JobAdministrator], Users: [admin] }
        dteam_pilot: { Properties: [GenericPilot], Users: [pilot] }
        dteam_mon: { Properties: [JobMonitor], Users: [mon] }
    lhcb:
      DefaultGroup: lhcb_user
      Users: { alice: {} }
      Groups:
        lhcb_user: { Properties: [NormalUser], Users: [alice] }
Operations:
  JobScheduling: { MaxRescheduling: 2, RescheduleDelays: [0] }
"#;

pub fn config() -> Arc<DiracConfig> {
    let env = std::collections::BTreeMap::new();
    Arc::new(DiracConfig::from_yaml(CONFIG, "test", &env).expect("test config"))
}

/// Run `scenario` on a fresh database of `backend` (skipped outside CI when
/// the server is missing).
pub async fn on<F, Fut>(backend: Backend, scenario: F)
where
    F: FnOnce(JobDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(t) = TestDb::new(backend).await else {
        return;
    };
    // Two replicas starting at once: one migrates, the other waits and
    // finds nothing to do.
    let (a, b) = tokio::join!(JobDb::open(t.db.clone()), JobDb::open(t.db.clone()));
    let db = a.expect("migrate");
    b.expect("concurrent migrate");
    // Migrating again is a no-op.
    JobDb::open(db.db().clone()).await.expect("migrate again");
    scenario(db).await;
    t.cleanup().await;
}

/// Submit `jdls` as alice (or `who`); returns the job ids.
pub async fn submit(db: &JobDb, who: &Submitter<'_>, jdls: &[&str]) -> Vec<u64> {
    let jdls: Vec<String> = jdls.iter().map(|s| s.to_string()).collect();
    let jobs = prepare(&jdls, who, &JobDescriptionOps::default()).expect("valid jdls");
    let first = db.allocate_ids(jobs.len() as u64).await.expect("ids");
    db.insert_jobs(first, &jobs, who, None)
        .await
        .expect("insert")
        .iter()
        .map(|j| j.job_id)
        .collect()
}

/// Generates one test per backend for each scenario function.
#[macro_export]
macro_rules! backend_tests {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $scenario() { $crate::support::on(dirac_core::db::Backend::Sqlite, super::$scenario).await; })*
        }
        mod mysql {
            $(#[tokio::test] async fn $scenario() { $crate::support::on(dirac_core::db::Backend::MySql, super::$scenario).await; })*
        }
        mod postgres {
            $(#[tokio::test] async fn $scenario() { $crate::support::on(dirac_core::db::Backend::Postgres, super::$scenario).await; })*
        }
    };
}

/// A sandbox store in a fresh temporary directory (kept for the process).
pub fn sandbox_backend() -> Arc<dyn dirac_wms::sandbox::SandboxBackend> {
    let dir = tempfile::tempdir().expect("tmp").keep();
    Arc::new(dirac_wms::sandbox::LocalBackend::new(dir).expect("sandbox store"))
}
