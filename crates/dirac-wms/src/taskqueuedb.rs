//! TaskQueueDB: the SQL source of truth of which Waiting job sits in which
//! task queue. The in-memory index of `dirac-matcher` is a cache of it,
//! rebuilt from here at start and periodically; a job is handed out only if
//! its `tq_Jobs` row is deleted by the matcher's transaction, so replicas
//! never hand out the same job.

use std::collections::{BTreeMap, BTreeSet};

use dirac_core::db::{Backend, Db, list_placeholders, values_placeholders};
use dirac_core::time;
use dirac_jdl::JobDescription;
use dirac_matcher::TqKey;
use sha2::{Digest, Sha256};
use sqlx::{Any, Row};

use crate::error::Result;

/// The task-queue key of a job (DIRAC's TQ definition).
pub fn key_for(
    desc: &JobDescription,
    owner: &str,
    group: &str,
    vo: &str,
    segments: &[u64],
) -> TqKey {
    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<String>>();
    TqKey {
        owner: owner.to_string(),
        owner_group: group.to_string(),
        vo: vo.to_string(),
        cpu_time: dirac_matcher::cpu_segment(u64::try_from(desc.cpu_time).unwrap_or(0), segments),
        sites: set(&desc.sites),
        grid_ces: desc.grid_ce.iter().cloned().collect(),
        banned_sites: set(&desc.banned_sites),
        platforms: desc.platform.iter().cloned().collect(),
        job_types: std::iter::once(desc.job_type.clone()).collect(),
        tags: set(&desc.tags),
    }
}

fn json(set: &BTreeSet<String>) -> String {
    serde_json::to_string(set).unwrap_or_else(|_| "[]".into())
}

fn from_json(text: &str) -> BTreeSet<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// A stable hash of the whole key: one row per distinct task queue.
pub fn key_hash(key: &TqKey) -> String {
    let mut h = Sha256::new();
    for part in [&key.owner, &key.owner_group, &key.vo] {
        h.update(part.as_bytes());
        h.update([0x1f]);
    }
    h.update(key.cpu_time.to_le_bytes());
    for set in [
        &key.sites,
        &key.grid_ces,
        &key.banned_sites,
        &key.platforms,
        &key.job_types,
        &key.tags,
    ] {
        h.update(json(set).as_bytes());
        h.update([0x1e]);
    }
    crate::sandbox::hex(&h.finalize())
}

/// A job in its task queue, as the index needs it.
#[derive(Debug, Clone)]
pub struct Queued {
    pub job_id: u64,
    pub key: TqKey,
    pub user_priority: f64,
}

#[derive(Clone, Debug)]
pub struct TaskQueueDb {
    db: Db,
}

impl TaskQueueDb {
    pub fn new(db: Db) -> Self {
        TaskQueueDb { db }
    }

    /// Put jobs into their task queues (creating queues as needed).
    pub async fn insert(
        &self,
        tx: &mut sqlx::Transaction<'static, Any>,
        jobs: &[Queued],
    ) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let now = time::now();
        let mut ids: BTreeMap<String, i64> = BTreeMap::new();
        for q in jobs {
            let hash = key_hash(&q.key);
            if ids.contains_key(&hash) {
                continue;
            }
            let insert = match self.db.backend() {
                Backend::MySql => {
                    "INSERT IGNORE INTO tq_TaskQueues (KeyHash, Owner, OwnerGroup, VO, CPUTime, Sites, GridCEs, \
                     BannedSites, Platforms, JobTypes, Tags, CreationTime) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                }
                _ => {
                    "INSERT INTO tq_TaskQueues (KeyHash, Owner, OwnerGroup, VO, CPUTime, Sites, GridCEs, \
                     BannedSites, Platforms, JobTypes, Tags, CreationTime) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT DO NOTHING"
                }
            };
            let k = &q.key;
            sqlx::query(self.db.sql(insert))
                .bind(hash.clone())
                .bind(k.owner.clone())
                .bind(k.owner_group.clone())
                .bind(k.vo.clone())
                .bind(i64::try_from(k.cpu_time).unwrap_or(i64::MAX))
                .bind(json(&k.sites))
                .bind(json(&k.grid_ces))
                .bind(json(&k.banned_sites))
                .bind(json(&k.platforms))
                .bind(json(&k.job_types))
                .bind(json(&k.tags))
                .bind(now.clone())
                .execute(&mut **tx)
                .await?;
            let id: i64 = sqlx::query_scalar(
                self.db
                    .sql("SELECT TQId FROM tq_TaskQueues WHERE KeyHash = ?"),
            )
            .bind(hash.clone())
            .fetch_one(&mut **tx)
            .await?;
            ids.insert(hash, id);
        }
        let job_ids: Vec<u64> = jobs.iter().map(|q| q.job_id).collect();
        self.remove(tx, &job_ids).await?;
        for chunk in jobs.chunks(1000) {
            let sql = format!(
                "INSERT INTO tq_Jobs (JobID, TQId, UserPriority, InsertTime) VALUES {}",
                values_placeholders(4, chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for job in chunk {
                let tq = ids.get(&key_hash(&job.key)).copied().unwrap_or_default();
                q = q
                    .bind(i64::try_from(job.job_id).unwrap_or(i64::MAX))
                    .bind(tq)
                    .bind(job.user_priority)
                    .bind(now.clone());
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Take jobs out of their task queues.
    pub async fn remove(
        &self,
        tx: &mut sqlx::Transaction<'static, Any>,
        job_ids: &[u64],
    ) -> Result<()> {
        for chunk in job_ids.chunks(1000) {
            let sql = format!(
                "DELETE FROM tq_Jobs WHERE JobID IN ({})",
                list_placeholders(chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for id in chunk {
                q = q.bind(i64::try_from(*id).unwrap_or(i64::MAX));
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// The atomic claim: true if this transaction took the job out of its
    /// queue (no other matcher can have it).
    pub async fn claim(
        &self,
        tx: &mut sqlx::Transaction<'static, Any>,
        job_id: u64,
    ) -> Result<bool> {
        let done = sqlx::query(self.db.sql("DELETE FROM tq_Jobs WHERE JobID = ?"))
            .bind(i64::try_from(job_id).unwrap_or(i64::MAX))
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every queued job with its key, to (re)build the index.
    pub async fn load(&self) -> Result<Vec<Queued>> {
        let rows = sqlx::query(
            "SELECT j.JobID, j.UserPriority, q.Owner, q.OwnerGroup, q.VO, q.CPUTime, q.Sites, q.GridCEs, \
             q.BannedSites, q.Platforms, q.JobTypes, q.Tags FROM tq_Jobs j JOIN tq_TaskQueues q ON q.TQId = j.TQId",
        )
        .fetch_all(self.db.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let text = |i: usize| -> std::result::Result<String, sqlx::Error> { r.try_get(i) };
            out.push(Queued {
                job_id: u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
                user_priority: r.try_get(1)?,
                key: TqKey {
                    owner: text(2)?,
                    owner_group: text(3)?,
                    vo: text(4)?,
                    cpu_time: u64::try_from(r.try_get::<i64, _>(5)?).unwrap_or(0),
                    sites: from_json(&text(6)?),
                    grid_ces: from_json(&text(7)?),
                    banned_sites: from_json(&text(8)?),
                    platforms: from_json(&text(9)?),
                    job_types: from_json(&text(10)?),
                    tags: from_json(&text(11)?),
                },
            });
        }
        Ok(out)
    }

    /// Drop task queues without jobs; returns how many.
    pub async fn delete_empty(&self) -> Result<u64> {
        let done =
            sqlx::query("DELETE FROM tq_TaskQueues WHERE TQId NOT IN (SELECT TQId FROM tq_Jobs)")
                .execute(self.db.pool())
                .await?;
        Ok(done.rows_affected())
    }
}
