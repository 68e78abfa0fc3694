//! Test support (feature `testing`): throw-away databases on every backend.
//!
//! Each test gets its own uniquely named database on the MariaDB and
//! PostgreSQL servers (URLs from `DIRAC_TEST_MYSQL_URL` and
//! `DIRAC_TEST_POSTGRES_URL`, defaulting to the local servers), or a SQLite
//! file in a temporary directory. When a server cannot be reached the test is
//! skipped with a message — unless `CI=true`, where it fails.

use sqlx::{AnyPool, AssertSqlSafe, Executor};

use crate::db::{Backend, Db};

pub const ALL_BACKENDS: [Backend; 3] = [Backend::Sqlite, Backend::MySql, Backend::Postgres];

/// A database that exists for one test.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    admin_url: Option<String>,
    name: String,
    _dir: Option<tempfile::TempDir>,
}

fn server_url(backend: Backend) -> Option<String> {
    let (var, default) = match backend {
        Backend::MySql => ("DIRAC_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306"),
        Backend::Postgres => (
            "DIRAC_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432",
        ),
        Backend::Sqlite => return None,
    };
    Some(std::env::var(var).unwrap_or_else(|_| default.to_string()))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

impl TestDb {
    /// A fresh database on `backend`, or `None` (with a message) when the
    /// server is unreachable outside CI.
    ///
    /// # Panics
    /// In CI when the server is unreachable, and when the database cannot be
    /// created on a reachable server.
    pub async fn new(backend: Backend) -> Option<TestDb> {
        let name = format!("dirac_test_{:016x}", rand::random::<u64>());
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                let db = Db::connect(&url, 4).await.expect("open sqlite");
                Some(TestDb {
                    db,
                    url,
                    admin_url: None,
                    name,
                    _dir: Some(dir),
                })
            }
            Backend::MySql | Backend::Postgres => {
                let base = server_url(backend)?;
                let admin_url = match backend {
                    Backend::MySql => format!("{base}/mysql"),
                    _ => format!("{base}/postgres"),
                };
                sqlx::any::install_default_drivers();
                let admin = match AnyPool::connect(&admin_url).await {
                    Ok(p) => p,
                    Err(e) if !in_ci() => {
                        eprintln!("skipping {} test: server unreachable: {e}", backend.name());
                        return None;
                    }
                    Err(e) => panic!(
                        "CI=true and the {} server is unreachable: {e}",
                        backend.name()
                    ),
                };
                admin
                    .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create test database");
                admin.close().await;
                let url = format!("{base}/{name}");
                let db = Db::connect(&url, 8)
                    .await
                    .expect("connect to test database");
                Some(TestDb {
                    db,
                    url,
                    admin_url: Some(admin_url),
                    name,
                    _dir: None,
                })
            }
        }
    }

    /// Drop the database. Call at the end of the test.
    pub async fn cleanup(self) {
        self.db.pool().close().await;
        if let Some(admin_url) = &self.admin_url
            && let Ok(admin) = AnyPool::connect(admin_url).await
        {
            let _ = admin
                .execute(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {}",
                    self.name
                )))
                .await;
            admin.close().await;
        }
    }
}
