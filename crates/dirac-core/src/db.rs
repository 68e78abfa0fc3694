//! One database layer for SQLite (embedded default), MariaDB/MySQL and
//! PostgreSQL: an sqlx `Any` pool, `?` placeholders rewritten for PostgreSQL,
//! and a small versioned migration runner where each migration carries the
//! DDL of every backend. Repository code is written once; per-backend SQL only
//! where dialects differ (`Db::backend`).

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, AssertSqlSafe, ConnectOptions, Executor, SqlSafeStr, SqlStr};

/// Which SQL server a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    MySql,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
#[error("unsupported database url '{0}': use sqlite://, mysql:// or postgres://")]
pub struct UnsupportedUrl(String);

impl Backend {
    pub fn from_url(url: &str) -> Result<Self, UnsupportedUrl> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "mysql" | "mariadb" => Ok(Backend::MySql),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(UnsupportedUrl(redact(url))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::MySql => "mysql",
            Backend::Postgres => "postgres",
        }
    }
}

/// A URL with its password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A connection pool and the backend it talks to.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Connect to `url`. SQLite files are created when missing and run in WAL
    /// mode behind a single connection (SQLite has one writer anyway, and one
    /// connection can never meet a busy snapshot).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url).map_err(|e| sqlx::Error::Configuration(e.into()))?;
        let url = match backend {
            Backend::Sqlite if !url.contains('?') && !url.contains(":memory:") => {
                Cow::Owned(format!("{url}?mode=rwc"))
            }
            _ => Cow::Borrowed(url),
        };
        let options = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
        let pool_options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(30))
            .max_connections(if backend == Backend::Sqlite {
                1
            } else {
                max_connections.max(1)
            });
        let pool_options = match backend {
            Backend::Sqlite => pool_options.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
                         PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON",
                    )
                    .await?;
                    Ok(())
                })
            }),
            Backend::MySql => pool_options.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("SET SESSION sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES'")
                        .await?;
                    Ok(())
                })
            }),
            Backend::Postgres => pool_options,
        };
        let pool = pool_options.connect_with(options).await?;
        Ok(Db { pool, backend })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// SQL written with `?` placeholders, in this backend's dialect.
    pub fn sql(&self, query: &'static str) -> SqlStr {
        match self.backend {
            Backend::Postgres => AssertSqlSafe(numbered_placeholders(query)).into_sql_str(),
            _ => SqlStr::from_static(query),
        }
    }

    /// Like [`Db::sql`] for SQL assembled at run time. Callers guarantee that
    /// every value is bound and every identifier comes from a fixed list.
    pub fn sql_dynamic(&self, query: String) -> SqlStr {
        match self.backend {
            Backend::Postgres => AssertSqlSafe(numbered_placeholders(&query)).into_sql_str(),
            _ => AssertSqlSafe(query).into_sql_str(),
        }
    }

    /// Reserve `n` consecutive ids from the row `name` of the sequence
    /// table `table` (`Name`, `NextID` columns); returns the first. Ids are
    /// never handed out twice, even to concurrent callers; a failed insert
    /// leaves a gap.
    pub async fn allocate_ids(
        &self,
        table: &'static str,
        name: &str,
        n: u64,
    ) -> Result<u64, sqlx::Error> {
        let n = i64::try_from(n).unwrap_or(i64::MAX / 2);
        let next: i64 = match self.backend {
            Backend::MySql => {
                let done = sqlx::query(self.sql_dynamic(format!(
                    "UPDATE {table} SET NextID = LAST_INSERT_ID(NextID + ?) WHERE Name = ?"
                )))
                .bind(n)
                .bind(name.to_string())
                .execute(&self.pool)
                .await?;
                done.last_insert_id().ok_or_else(|| {
                    sqlx::Error::Protocol(format!("no id from the sequence {table}.{name}"))
                })?
            }
            _ => {
                sqlx::query_scalar(self.sql_dynamic(format!(
                    "UPDATE {table} SET NextID = NextID + ? WHERE Name = ? RETURNING NextID"
                )))
                .bind(n)
                .bind(name.to_string())
                .fetch_one(&self.pool)
                .await?
            }
        };
        Ok(u64::try_from(next - n).unwrap_or(0))
    }

    /// Apply the migrations of `component` that this database has not seen,
    /// in version order. Concurrent starters wait on a database lock; on
    /// SQLite and PostgreSQL each migration and its version row commit
    /// together (MariaDB commits DDL implicitly).
    pub async fn migrate(
        &self,
        component: &str,
        migrations: &[Migration],
    ) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        match self.backend {
            Backend::MySql => {
                conn.execute("SELECT GET_LOCK('dirac_migrations', 120)")
                    .await?;
            }
            Backend::Postgres => {
                conn.execute("SELECT pg_advisory_lock(7217051101)").await?;
            }
            Backend::Sqlite => {}
        }
        let result = self.migrate_locked(&mut conn, component, migrations).await;
        match self.backend {
            Backend::MySql => {
                conn.execute("SELECT RELEASE_LOCK('dirac_migrations')")
                    .await?;
            }
            Backend::Postgres => {
                conn.execute("SELECT pg_advisory_unlock(7217051101)")
                    .await?;
            }
            Backend::Sqlite => {}
        }
        result
    }

    async fn migrate_locked(
        &self,
        conn: &mut sqlx::AnyConnection,
        component: &str,
        migrations: &[Migration],
    ) -> Result<(), sqlx::Error> {
        use sqlx::Connection as _;
        conn.execute(
            "CREATE TABLE IF NOT EXISTS dirac_schema_versions (\
             Component VARCHAR(64) NOT NULL, Version BIGINT NOT NULL, \
             Description VARCHAR(255) NOT NULL, PRIMARY KEY (Component, Version))",
        )
        .await?;
        let applied: Vec<i64> =
            sqlx::query_scalar(self.sql(
                "SELECT Version FROM dirac_schema_versions WHERE Component = ? ORDER BY Version",
            ))
            .bind(component.to_string())
            .fetch_all(&mut *conn)
            .await?;
        for m in migrations {
            if applied.contains(&m.version) {
                continue;
            }
            tracing::info!(
                component,
                version = m.version,
                description = m.description,
                "applying migration"
            );
            let statements = match self.backend {
                Backend::Sqlite => m.sqlite,
                Backend::MySql => m.mysql,
                Backend::Postgres => m.postgres,
            };
            let record = sqlx::query(self.sql(
                "INSERT INTO dirac_schema_versions (Component, Version, Description) VALUES (?, ?, ?)",
            ))
            .bind(component.to_string())
            .bind(m.version)
            .bind(m.description);
            if self.backend == Backend::MySql {
                for statement in statements {
                    conn.execute(*statement).await?;
                }
                record.execute(&mut *conn).await?;
            } else {
                let mut tx = conn.begin().await?;
                for statement in statements {
                    tx.execute(*statement).await?;
                }
                record.execute(&mut *tx).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }
}

/// The database gave up on this transaction to let a concurrent one
/// through (a deadlock victim: MariaDB 1213, SQLSTATE 40001; PostgreSQL
/// 40P01 or a serialization failure 40001). Running it again is safe.
pub fn is_deadlock(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => matches!(d.code().as_deref(), Some("40001" | "40P01")),
        _ => false,
    }
}

/// Run `attempt` again (up to `tries` times, a little later each time)
/// while `sql_error` finds a deadlock victim in its error.
pub async fn retry_deadlocks<T, E, F, Fut>(
    tries: u32,
    sql_error: impl Fn(&E) -> Option<&sqlx::Error>,
    mut attempt: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut n = 1;
    loop {
        match attempt().await {
            Err(e) if n < tries && sql_error(&e).is_some_and(is_deadlock) => {
                tokio::time::sleep(std::time::Duration::from_millis(
                    rand::random_range(5..50) * u64::from(n),
                ))
                .await;
                n += 1;
            }
            other => return other,
        }
    }
}

/// One schema change, written for each backend.
pub struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub sqlite: &'static [&'static str],
    pub mysql: &'static [&'static str],
    pub postgres: &'static [&'static str],
}

/// `?` → `$1, $2, …` outside quoted strings and identifiers.
pub fn numbered_placeholders(query: &str) -> String {
    let mut out = String::with_capacity(query.len() + 16);
    let mut n = 0;
    let mut quote: Option<char> = None;
    for c in query.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (None, '?') => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            (None, c) => out.push(c),
        }
    }
    out
}

/// `(?, ?, ?), (?, ?, ?)` for a multi-row INSERT of `rows` rows.
pub fn values_placeholders(columns: usize, rows: usize) -> String {
    let one = format!("({})", vec!["?"; columns].join(", "));
    vec![one; rows].join(", ")
}

/// `?, ?, ?` for an IN list of `n` items.
pub fn list_placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            numbered_placeholders("SELECT '?' , \"a?\" FROM t WHERE a = ? AND b IN (?, ?)"),
            "SELECT '?' , \"a?\" FROM t WHERE a = $1 AND b IN ($2, $3)"
        );
        assert_eq!(values_placeholders(2, 2), "(?, ?), (?, ?)");
        assert_eq!(list_placeholders(3), "?, ?, ?");
    }

    #[test]
    fn backends_from_urls() {
        assert_eq!(
            Backend::from_url("sqlite://x.db").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("mysql://root@h/db").ok(),
            Some(Backend::MySql)
        );
        assert_eq!(
            Backend::from_url("postgresql://h/db").ok(),
            Some(Backend::Postgres)
        );
        let err = Backend::from_url("oracle://u:secret@h/db").expect_err("unsupported");
        assert!(!err.to_string().contains("secret"));
    }
}
