//! SandboxStore: sandboxes uploaded in chunks with a sha256 the server
//! verifies, deduplicated per owner, stored through a [`SandboxBackend`]
//! (a local directory now; object stores come with data management), and
//! linked to jobs as Input or Output (SandboxMetadataDB).

use std::path::{Path, PathBuf};

use dirac_core::auth::Identity;
use dirac_core::db::{Backend, Db};
use dirac_core::time;
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::io::AsyncWriteExt;

use crate::error::{Result, WmsError};

/// Archive formats a sandbox may have.
pub const FORMATS: &[&str] = &["tar.gz", "tar.zst", "tar.bz2"];
/// Size of download chunks.
pub const CHUNK: usize = 1024 * 1024;

/// Where sandbox bytes live. Paths are relative, `/`-separated, validated.
#[tonic::async_trait]
pub trait SandboxBackend: Send + Sync {
    /// Store the file at `staged` (which the backend may move) under `path`.
    async fn put(&self, path: &str, staged: &Path) -> std::io::Result<()>;
    /// The whole object.
    async fn get(&self, path: &str) -> std::io::Result<Vec<u8>>;
    async fn delete(&self, path: &str) -> std::io::Result<()>;
    /// A scratch file for an upload in progress.
    fn staging_path(&self) -> PathBuf;
}

/// Sandboxes as files below a directory.
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    pub fn new(root: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join(".staging"))?;
        Ok(LocalBackend { root })
    }

    fn full(&self, path: &str) -> std::io::Result<PathBuf> {
        if path.split('/').any(|c| c == ".." || c == ".") || path.contains('\\') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "path escapes the store",
            ));
        }
        Ok(self.root.join(path.trim_start_matches('/')))
    }
}

#[tonic::async_trait]
impl SandboxBackend for LocalBackend {
    async fn put(&self, path: &str, staged: &Path) -> std::io::Result<()> {
        let full = self.full(path)?;
        if let Some(dir) = full.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::rename(staged, full).await
    }

    async fn get(&self, path: &str) -> std::io::Result<Vec<u8>> {
        tokio::fs::read(self.full(path)?).await
    }

    async fn delete(&self, path: &str) -> std::io::Result<()> {
        match tokio::fs::remove_file(self.full(path)?).await {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn staging_path(&self) -> PathBuf {
        self.root
            .join(".staging")
            .join(format!("{:032x}", rand::random::<u128>()))
    }
}

/// A parsed `SB:<SE>|<path>` reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Pfn {
    pub se: String,
    pub path: String,
}

impl Pfn {
    pub fn parse(pfn: &str) -> Result<Pfn> {
        let bad = || {
            WmsError::InvalidArgument(format!(
                "'{}' is not a sandbox reference SB:<SE>|<path>",
                crate::jobdb::clip(pfn, 80)
            ))
        };
        let rest = pfn.strip_prefix("SB:").ok_or_else(bad)?;
        let (se, path) = rest.split_once('|').ok_or_else(bad)?;
        if se.is_empty() || !path.starts_with('/') || path.len() > 240 {
            return Err(bad());
        }
        Ok(Pfn {
            se: se.into(),
            path: path.into(),
        })
    }

    pub fn render(&self) -> String {
        format!("SB:{}|{}", self.se, self.path)
    }
}

/// Check an upload header.
pub fn check_header(size: u64, checksum: &str, format: &str, max_bytes: u64) -> Result<()> {
    if size == 0 {
        return Err(WmsError::InvalidArgument(
            "an empty sandbox cannot be stored".into(),
        ));
    }
    if size > max_bytes {
        return Err(WmsError::InvalidArgument(format!(
            "sandbox of {size} bytes is over the limit of {} MiB (Services.SandboxStore.MaxSandboxSizeMiB)",
            max_bytes / (1024 * 1024)
        )));
    }
    if checksum.len() != 64
        || !checksum
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(WmsError::InvalidArgument(
            "checksum must be 64 lowercase hex digits of sha256".into(),
        ));
    }
    if !FORMATS.contains(&format) {
        return Err(WmsError::InvalidArgument(format!(
            "format '{format}' is not one of {}",
            FORMATS.join(", ")
        )));
    }
    Ok(())
}

/// Where an owner's sandbox with this checksum is stored.
pub fn sandbox_path(who: &Identity, checksum: &str, format: &str) -> String {
    let clean = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    format!(
        "/{}/{}/{}/{}/{checksum}.{format}",
        clean(&who.vo),
        clean(&who.group),
        clean(&who.username),
        &checksum[..2]
    )
}

/// Receives an upload into a staging file while hashing it.
pub struct Staging {
    pub path: PathBuf,
    file: tokio::fs::File,
    hasher: Sha256,
    pub written: u64,
    expected: u64,
}

impl Staging {
    pub async fn create(path: PathBuf, expected: u64) -> Result<Staging> {
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| WmsError::Internal(format!("staging {}: {e}", path.display())))?;
        Ok(Staging {
            path,
            file,
            hasher: Sha256::new(),
            written: 0,
            expected,
        })
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.written += data.len() as u64;
        if self.written > self.expected {
            return Err(WmsError::InvalidArgument(format!(
                "more data than the announced {} bytes",
                self.expected
            )));
        }
        self.hasher.update(data);
        self.file
            .write_all(data)
            .await
            .map_err(|e| WmsError::Internal(format!("staging write: {e}")))
    }

    /// Verify size and checksum; the staging file is ready to store.
    pub async fn finish(mut self, checksum: &str) -> Result<PathBuf> {
        self.file
            .flush()
            .await
            .map_err(|e| WmsError::Internal(format!("staging flush: {e}")))?;
        if self.written != self.expected {
            return Err(WmsError::InvalidArgument(format!(
                "truncated upload: {} of {} bytes",
                self.written, self.expected
            )));
        }
        let got = hex(&self.hasher.finalize());
        if got != checksum {
            return Err(WmsError::InvalidArgument(format!(
                "checksum mismatch: announced {checksum}, received {got}"
            )));
        }
        Ok(self.path)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stored sandbox's metadata.
#[derive(Debug, Clone)]
pub struct SandboxRow {
    pub id: i64,
    pub owner: String,
    pub owner_group: String,
    pub vo: String,
    pub path: String,
    pub bytes: u64,
    pub checksum: String,
    pub format: String,
}

/// SandboxMetadataDB.
#[derive(Clone, Debug)]
pub struct SandboxDb {
    db: Db,
}

impl SandboxDb {
    pub fn new(db: Db) -> Self {
        SandboxDb { db }
    }

    pub async fn find(&self, pfn: &str) -> Result<Option<SandboxRow>> {
        let row = sqlx::query(self.db.sql(
            "SELECT SBId, Owner, OwnerGroup, VO, PFN, Bytes, Checksum, Format FROM sb_SandBoxes WHERE PFN = ?",
        ))
        .bind(pfn.to_string())
        .fetch_optional(self.db.pool())
        .await?;
        let Some(r) = row else { return Ok(None) };
        let pfn: String = r.try_get(4)?;
        Ok(Some(SandboxRow {
            id: r.try_get(0)?,
            owner: r.try_get(1)?,
            owner_group: r.try_get(2)?,
            vo: r.try_get(3)?,
            path: Pfn::parse(&pfn).map(|p| p.path).unwrap_or_default(),
            bytes: u64::try_from(r.try_get::<i64, _>(5)?).unwrap_or(0),
            checksum: r.try_get(6)?,
            format: r.try_get(7)?,
        }))
    }

    /// Record a stored sandbox; `false` when it was known already.
    pub async fn insert(
        &self,
        who: &Identity,
        se: &str,
        pfn: &str,
        bytes: u64,
        checksum: &str,
        format: &str,
    ) -> Result<bool> {
        let now = time::now();
        let sql = match self.db.backend() {
            Backend::MySql => {
                "INSERT IGNORE INTO sb_SandBoxes (Owner, OwnerGroup, VO, SEName, PFN, Bytes, Checksum, Format, \
                 RegistrationTime, LastAccessTime, Assigned) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)"
            }
            _ => {
                "INSERT INTO sb_SandBoxes (Owner, OwnerGroup, VO, SEName, PFN, Bytes, Checksum, Format, \
                 RegistrationTime, LastAccessTime, Assigned) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT DO NOTHING"
            }
        };
        let done = sqlx::query(self.db.sql(sql))
            .bind(who.username.clone())
            .bind(who.group.clone())
            .bind(who.vo.clone())
            .bind(se.to_string())
            .bind(pfn.to_string())
            .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
            .bind(checksum.to_string())
            .bind(format.to_string())
            .bind(now.clone())
            .bind(now)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn touch(&self, id: i64) -> Result<()> {
        sqlx::query(
            self.db
                .sql("UPDATE sb_SandBoxes SET LastAccessTime = ? WHERE SBId = ?"),
        )
        .bind(time::now())
        .bind(id)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Link sandboxes to a job as `kind` (Input or Output).
    pub async fn assign(&self, job_id: u64, kind: &str, ids: &[i64]) -> Result<()> {
        let mut tx = self.db.pool().begin().await?;
        let insert = match self.db.backend() {
            Backend::MySql => {
                "INSERT IGNORE INTO sb_EntityMapping (SBId, JobID, Type) VALUES (?, ?, ?)"
            }
            _ => {
                "INSERT INTO sb_EntityMapping (SBId, JobID, Type) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
            }
        };
        for id in ids {
            sqlx::query(self.db.sql(insert))
                .bind(*id)
                .bind(i64::try_from(job_id).unwrap_or(i64::MAX))
                .bind(kind.to_string())
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                self.db
                    .sql("UPDATE sb_SandBoxes SET Assigned = 1 WHERE SBId = ?"),
            )
            .bind(*id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The jobs a sandbox is assigned to.
    pub async fn jobs_of(&self, id: i64) -> Result<Vec<u64>> {
        let rows = sqlx::query(
            self.db
                .sql("SELECT JobID FROM sb_EntityMapping WHERE SBId = ? ORDER BY JobID"),
        )
        .bind(id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| Ok(u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0)))
            .collect()
    }

    /// (Input, Output) references of a job.
    pub async fn of_job(&self, job_id: u64) -> Result<(Vec<String>, Vec<String>)> {
        let rows = sqlx::query(self.db.sql(
            "SELECT m.Type, s.PFN FROM sb_EntityMapping m JOIN sb_SandBoxes s ON s.SBId = m.SBId \
             WHERE m.JobID = ? ORDER BY s.SBId",
        ))
        .bind(i64::try_from(job_id).unwrap_or(i64::MAX))
        .fetch_all(self.db.pool())
        .await?;
        let (mut input, mut output) = (Vec::new(), Vec::new());
        for r in rows {
            let kind: String = r.try_get(0)?;
            let pfn: String = r.try_get(1)?;
            if kind == "Input" {
                input.push(pfn)
            } else {
                output.push(pfn)
            }
        }
        Ok((input, output))
    }

    /// Unlink the sandboxes of removed jobs; those left without a job
    /// become unassigned (and are purged after the grace period).
    pub async fn unassign_jobs(&self, job_ids: &[u64]) -> Result<()> {
        if job_ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.pool().begin().await?;
        for chunk in job_ids.chunks(1000) {
            let sql = format!(
                "DELETE FROM sb_EntityMapping WHERE JobID IN ({})",
                dirac_core::db::list_placeholders(chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for id in chunk {
                q = q.bind(i64::try_from(*id).unwrap_or(i64::MAX));
            }
            q.execute(&mut *tx).await?;
        }
        sqlx::query(
            "UPDATE sb_SandBoxes SET Assigned = 0 WHERE Assigned = 1 AND SBId NOT IN (SELECT SBId FROM sb_EntityMapping)",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Unassigned sandboxes not accessed since `before`: (id, path).
    pub async fn unused(&self, before: &str, limit: u64) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query(self.db.sql(
            "SELECT SBId, PFN FROM sb_SandBoxes WHERE Assigned = 0 AND LastAccessTime < ? ORDER BY SBId LIMIT ?",
        ))
        .bind(before.to_string())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.db.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let pfn: String = r.try_get(1)?;
            out.push((
                r.try_get(0)?,
                Pfn::parse(&pfn).map(|p| p.path).unwrap_or_default(),
            ));
        }
        Ok(out)
    }

    pub async fn delete(&self, id: i64) -> Result<()> {
        sqlx::query(
            self.db
                .sql("DELETE FROM sb_SandBoxes WHERE SBId = ? AND Assigned = 0"),
        )
        .bind(id)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_headers() {
        let p = Pfn::parse("SB:ProductionSandboxSE|/dteam/g/alice/ab/ab.tar.gz").expect("pfn");
        assert_eq!(p.se, "ProductionSandboxSE");
        assert_eq!(
            p.render(),
            "SB:ProductionSandboxSE|/dteam/g/alice/ab/ab.tar.gz"
        );
        for bad in ["ProductionSandboxSE|/x", "SB:|/x", "SB:SE|x", "SB:SE"] {
            assert!(Pfn::parse(bad).is_err(), "{bad}");
        }
        let sum = "a".repeat(64);
        assert!(check_header(10, &sum, "tar.gz", 100).is_ok());
        assert!(check_header(0, &sum, "tar.gz", 100).is_err());
        assert!(
            check_header(101, &sum, "tar.gz", 100)
                .expect_err("big")
                .to_string()
                .contains("over the limit")
        );
        assert!(check_header(10, "ABC", "tar.gz", 100).is_err());
        assert!(check_header(10, &sum, "zip", 100).is_err());
    }

    #[tokio::test]
    async fn staging_verifies_size_and_checksum() {
        let dir = tempfile::tempdir().expect("tmp");
        let data = b"hello sandbox";
        let sum = hex(&Sha256::digest(data));
        let mut s = Staging::create(dir.path().join("a"), data.len() as u64)
            .await
            .expect("create");
        s.write(data).await.expect("write");
        assert!(s.finish(&sum).await.is_ok());
        let mut s = Staging::create(dir.path().join("b"), data.len() as u64)
            .await
            .expect("create");
        s.write(&data[..5]).await.expect("write");
        assert!(
            s.finish(&sum)
                .await
                .expect_err("short")
                .to_string()
                .contains("truncated")
        );
        let mut s = Staging::create(dir.path().join("c"), data.len() as u64)
            .await
            .expect("create");
        s.write(b"HELLO SANDBOX").await.expect("write");
        assert!(
            s.finish(&sum)
                .await
                .expect_err("corrupt")
                .to_string()
                .contains("checksum mismatch")
        );
        let mut s = Staging::create(dir.path().join("d"), 3)
            .await
            .expect("create");
        assert!(s.write(data).await.is_err());
        let backend = LocalBackend::new(dir.path().join("store")).expect("backend");
        assert!(backend.get("/../etc/passwd").await.is_err());
    }
}
