//! PilotAgentsDB: pilots, their states, the jobs they ran and their logs.

use std::collections::HashMap;

use dirac_core::db::{Backend, Db, list_placeholders};
use dirac_core::time;
use dirac_proto::wms::Pilot;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Result, WmsError};
use crate::jobdb::clip;
use crate::search::Where;

/// DIRAC's pilot states, plus `Empty` (ran, matched nothing; DIRAC #7636).
pub const PILOT_STATES: &[&str] = &[
    "Submitted",
    "Waiting",
    "Scheduled",
    "Running",
    "Done",
    "Failed",
    "Aborted",
    "Deleted",
    "Unknown",
    "Empty",
];

/// States a pilot never leaves.
pub const FINAL_PILOT_STATES: &[&str] = &["Done", "Failed", "Aborted", "Deleted", "Empty"];

/// Most bytes of log kept per pilot.
pub const MAX_LOG_BYTES: usize = 1024 * 1024;

const PILOT_SELECT: &str = "PilotID, PilotStamp, PilotJobReference, VO, GridSite, DestinationSite, Queue, GridType, \
    Status, StatusReason, SubmissionTime, LastUpdateTime, BenchMark";

fn pilot_from_row(row: &AnyRow) -> std::result::Result<(i64, Pilot), sqlx::Error> {
    Ok((
        row.try_get(0)?,
        Pilot {
            stamp: row.try_get(1)?,
            reference: row.try_get(2)?,
            vo: row.try_get(3)?,
            site: row.try_get(4)?,
            ce: row.try_get(5)?,
            queue: row.try_get(6)?,
            grid_type: row.try_get(7)?,
            status: row.try_get(8)?,
            status_reason: row.try_get(9)?,
            submission_time: row.try_get(10)?,
            last_update_time: row.try_get(11)?,
            benchmark: row.try_get(12)?,
            job_ids: Vec::new(),
        },
    ))
}

/// Check a pilot stamp: 1 to 32 characters of `[A-Za-z0-9_-]`.
pub fn valid_stamp(stamp: &str) -> Result<()> {
    if stamp.is_empty()
        || stamp.len() > 32
        || !stamp
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(WmsError::InvalidArgument(format!(
            "pilot stamp '{}' must have 1 to 32 characters of [A-Za-z0-9_-]",
            clip(stamp, 40)
        )));
    }
    Ok(())
}

#[derive(Clone, Debug)]
pub struct PilotDb {
    db: Db,
}

impl PilotDb {
    /// Shares the WMS database (migrated by `JobDb::open`).
    pub fn new(db: Db) -> Self {
        PilotDb { db }
    }

    /// Register pilots; a stamp that exists is an `AlreadyExists` item.
    pub async fn register(&self, pilots: &[Pilot]) -> Result<HashMap<String, Result<()>>> {
        let now = time::now();
        let mut out = HashMap::new();
        for p in pilots {
            let r = async {
                valid_stamp(&p.stamp)?;
                let status = if p.status.is_empty() { "Submitted" } else { p.status.as_str() };
                if !PILOT_STATES.contains(&status) {
                    return Err(WmsError::InvalidArgument(format!("unknown pilot status '{status}'")));
                }
                let done = sqlx::query(self.db.sql(
                    "INSERT INTO PilotAgents (PilotStamp, PilotJobReference, VO, GridSite, DestinationSite, Queue, \
                     GridType, Status, StatusReason, SubmissionTime, LastUpdateTime, BenchMark, CurrentJobID) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, 0)",
                ))
                .bind(p.stamp.clone())
                .bind(clip(if p.reference.is_empty() { &p.stamp } else { &p.reference }, 255))
                .bind(clip(&p.vo, 64))
                .bind(clip(&p.site, 128))
                .bind(clip(&p.ce, 128))
                .bind(clip(&p.queue, 128))
                .bind(clip(&p.grid_type, 32))
                .bind(status.to_string())
                .bind(now.clone())
                .bind(now.clone())
                .bind(if p.benchmark.is_finite() { p.benchmark } else { 0.0 })
                .execute(self.db.pool())
                .await;
                match done {
                    Ok(_) => Ok(()),
                    Err(e) if crate::jobdb::is_unique_violation(&e) => {
                        Err(WmsError::AlreadyExists(format!("pilot {} is registered already", p.stamp)))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            .await;
            out.insert(p.stamp.clone(), r);
        }
        Ok(out)
    }

    /// Pilots by stamp, with the jobs each ran.
    pub async fn get(&self, stamps: &[String]) -> Result<Vec<Pilot>> {
        let mut out = Vec::new();
        for chunk in stamps.chunks(1000) {
            let sql = format!(
                "SELECT {PILOT_SELECT} FROM PilotAgents WHERE PilotStamp IN ({})",
                list_placeholders(chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for s in chunk {
                q = q.bind(s.clone());
            }
            let rows = q.fetch_all(self.db.pool()).await?;
            let mut pilots = Vec::with_capacity(rows.len());
            for row in &rows {
                pilots.push(pilot_from_row(row)?);
            }
            self.attach_jobs(&mut pilots).await?;
            out.extend(pilots.into_iter().map(|(_, p)| p));
        }
        Ok(out)
    }

    async fn attach_jobs(&self, pilots: &mut [(i64, Pilot)]) -> Result<()> {
        if pilots.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT PilotID, JobID FROM JobToPilotMapping WHERE PilotID IN ({}) ORDER BY JobID",
            list_placeholders(pilots.len())
        );
        let mut q = sqlx::query(self.db.sql_dynamic(sql));
        for (id, _) in pilots.iter() {
            q = q.bind(*id);
        }
        let mut by_id: HashMap<i64, Vec<u64>> = HashMap::new();
        for row in q.fetch_all(self.db.pool()).await? {
            by_id
                .entry(row.try_get(0)?)
                .or_default()
                .push(u64::try_from(row.try_get::<i64, _>(1)?).unwrap_or(0));
        }
        for (id, p) in pilots.iter_mut() {
            p.job_ids = by_id.remove(id).unwrap_or_default();
        }
        Ok(())
    }

    pub async fn search(&self, w: &Where, limit: u64, offset: u64) -> Result<(Vec<Pilot>, u64)> {
        let sql = format!(
            "SELECT {PILOT_SELECT} FROM PilotAgents WHERE {} ORDER BY PilotID LIMIT ? OFFSET ?",
            w.sql
        );
        let q = crate::jobdb::bind_all(sqlx::query(self.db.sql_dynamic(sql)), &w.binds)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(i64::try_from(offset).unwrap_or(i64::MAX));
        let rows = q.fetch_all(self.db.pool()).await?;
        let mut pilots = Vec::with_capacity(rows.len());
        for row in &rows {
            pilots.push(pilot_from_row(row)?);
        }
        self.attach_jobs(&mut pilots).await?;
        let count = format!("SELECT COUNT(*) FROM PilotAgents WHERE {}", w.sql);
        let total: i64 = crate::jobdb::bind_all(sqlx::query(self.db.sql_dynamic(count)), &w.binds)
            .fetch_one(self.db.pool())
            .await?
            .try_get(0)?;
        Ok((
            pilots.into_iter().map(|(_, p)| p).collect(),
            u64::try_from(total).unwrap_or(0),
        ))
    }

    /// Set a pilot's state; a pilot in a final state keeps it.
    pub async fn set_status(&self, stamp: &str, status: &str, reason: &str) -> Result<Pilot> {
        valid_stamp(stamp)?;
        if !PILOT_STATES.contains(&status) {
            return Err(WmsError::InvalidArgument(format!(
                "unknown pilot status '{}' (one of {})",
                clip(status, 40),
                PILOT_STATES.join(", ")
            )));
        }
        let current = self.get(&[stamp.to_string()]).await?;
        let Some(pilot) = current.first() else {
            return Err(WmsError::NotFound(format!(
                "pilot {stamp} is not registered"
            )));
        };
        if FINAL_PILOT_STATES.contains(&pilot.status.as_str()) && pilot.status != status {
            return Err(WmsError::FailedPrecondition(format!(
                "pilot {stamp} is {} already",
                pilot.status
            )));
        }
        sqlx::query(self.db.sql(
            "UPDATE PilotAgents SET Status = ?, StatusReason = ?, LastUpdateTime = ? WHERE PilotStamp = ?",
        ))
        .bind(status.to_string())
        .bind(clip(reason, 255))
        .bind(time::now())
        .bind(stamp.to_string())
        .execute(self.db.pool())
        .await?;
        let mut updated = self.get(&[stamp.to_string()]).await?;
        updated
            .pop()
            .ok_or_else(|| WmsError::NotFound(format!("pilot {stamp} is not registered")))
    }

    /// Append to a pilot's log, keeping the last `MAX_LOG_BYTES`.
    pub async fn append_log(&self, stamp: &str, text: &str) -> Result<()> {
        valid_stamp(stamp)?;
        let mut tx = self.db.pool().begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            self.db
                .sql("SELECT PilotID FROM PilotAgents WHERE PilotStamp = ?"),
        )
        .bind(stamp.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Err(WmsError::NotFound(format!(
                "pilot {stamp} is not registered"
            )));
        };
        let old: Option<String> =
            sqlx::query_scalar(self.db.sql("SELECT Log FROM PilotOutput WHERE PilotID = ?"))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let mut log = old.clone().unwrap_or_default();
        log.push_str(text);
        if log.len() > MAX_LOG_BYTES {
            let mut cut = log.len() - MAX_LOG_BYTES;
            while !log.is_char_boundary(cut) {
                cut += 1;
            }
            log = log[cut..].to_string();
        }
        let sql = if old.is_some() {
            "UPDATE PilotOutput SET Log = ? WHERE PilotID = ?"
        } else {
            "INSERT INTO PilotOutput (Log, PilotID) VALUES (?, ?)"
        };
        sqlx::query(self.db.sql(sql))
            .bind(log)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn log(&self, stamp: &str) -> Result<Option<(String, String)>> {
        valid_stamp(stamp)?;
        let row = sqlx::query(self.db.sql(
            "SELECT p.VO, COALESCE(o.Log, '') FROM PilotAgents p LEFT JOIN PilotOutput o ON o.PilotID = p.PilotID \
             WHERE p.PilotStamp = ?",
        ))
        .bind(stamp.to_string())
        .fetch_optional(self.db.pool())
        .await?;
        Ok(match row {
            Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
            None => None,
        })
    }

    /// Number of pilots per status at a CE (for local pilot submission).
    /// Pilots in a transient state not updated since `before` and none of
    /// whose jobs is still active (a job silent too long is the
    /// StalledJobAgent's): DIRAC's PilotStalledDays.
    pub async fn stalled(&self, before: &str, limit: u64) -> Result<Vec<String>> {
        let stamps: Vec<String> = sqlx::query_scalar(self.db.sql(
            "SELECT p.PilotStamp FROM PilotAgents p \
             WHERE p.Status IN ('Submitted', 'Waiting', 'Scheduled', 'Running', 'Unknown') \
             AND p.LastUpdateTime < ? AND NOT EXISTS (SELECT 1 FROM JobToPilotMapping m \
             JOIN Jobs j ON j.JobID = m.JobID WHERE m.PilotID = p.PilotID \
             AND j.Status IN ('Matched', 'Running', 'Completing')) \
             ORDER BY p.PilotID LIMIT ?",
        ))
        .bind(before.to_string())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.db.pool())
        .await?;
        Ok(stamps)
    }

    /// One accounting record per finished pilot not yet accounted, then the
    /// pilot flagged (`AccountingSent`). A record written by a run that
    /// stopped before flagging is kept as it is, never counted twice.
    pub async fn account_finished(&self, limit: u64) -> Result<u64> {
        let rows = sqlx::query(self.db.sql(
            "SELECT p.PilotID, p.PilotStamp, p.VO, p.GridSite, p.DestinationSite, p.Queue, p.GridType, \
             p.Status, p.SubmissionTime, p.LastUpdateTime, \
             (SELECT COUNT(*) FROM JobToPilotMapping m WHERE m.PilotID = p.PilotID) \
             FROM PilotAgents p WHERE p.AccountingSent = 0 \
             AND p.Status IN ('Done', 'Failed', 'Aborted', 'Deleted', 'Empty') ORDER BY p.PilotID LIMIT ?",
        ))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.db.pool())
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let insert = match self.db.backend() {
            Backend::MySql => {
                "INSERT IGNORE INTO PilotAccounting (PilotStamp, VO, GridSite, DestinationSite, Queue, GridType, \
                 Status, Jobs, SubmissionTime, EndTime) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            }
            Backend::Postgres | Backend::Sqlite => {
                "INSERT INTO PilotAccounting (PilotStamp, VO, GridSite, DestinationSite, Queue, GridType, \
                 Status, Jobs, SubmissionTime, EndTime) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (PilotStamp) DO NOTHING"
            }
        };
        let mut tx = self.db.pool().begin().await?;
        for row in &rows {
            let id: i64 = row.try_get(0)?;
            let mut q = sqlx::query(self.db.sql(insert));
            for i in 1..=7 {
                q = q.bind(row.try_get::<String, _>(i)?);
            }
            q.bind(row.try_get::<i64, _>(10)?)
                .bind(row.try_get::<String, _>(8)?)
                .bind(row.try_get::<String, _>(9)?)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                self.db
                    .sql("UPDATE PilotAgents SET AccountingSent = 1 WHERE PilotID = ?"),
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// Pilot accounting: finished pilots per (site, CE, status) ended at or
    /// after `since`, with the jobs they ran.
    pub async fn accounting(&self, since: &str) -> Result<Vec<(String, String, String, u64, u64)>> {
        // SUM is DECIMAL on MariaDB and NUMERIC on PostgreSQL: cast it back.
        let sql = match self.db.backend() {
            Backend::MySql => {
                "SELECT GridSite, DestinationSite, Status, COUNT(*), CAST(SUM(Jobs) AS SIGNED) \
                 FROM PilotAccounting WHERE EndTime >= ? GROUP BY GridSite, DestinationSite, Status \
                 ORDER BY GridSite, DestinationSite, Status"
            }
            Backend::Postgres | Backend::Sqlite => {
                "SELECT GridSite, DestinationSite, Status, COUNT(*), CAST(SUM(Jobs) AS BIGINT) \
                 FROM PilotAccounting WHERE EndTime >= ? GROUP BY GridSite, DestinationSite, Status \
                 ORDER BY GridSite, DestinationSite, Status"
            }
        };
        let rows = sqlx::query(self.db.sql(sql))
            .bind(since.to_string())
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get(3)?;
                let jobs: i64 = r.try_get(4)?;
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    u64::try_from(n).unwrap_or(0),
                    u64::try_from(jobs).unwrap_or(0),
                ))
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(WmsError::from)
    }

    /// Remove finished, accounted pilots last updated before `before`
    /// (Aborted ones: before `aborted_before`), with their logs and job links.
    pub async fn clear(&self, before: &str, aborted_before: &str, limit: u64) -> Result<u64> {
        let ids: Vec<i64> = sqlx::query_scalar(self.db.sql(
            "SELECT PilotID FROM PilotAgents WHERE AccountingSent = 1 AND \
             ((Status IN ('Done', 'Failed', 'Deleted', 'Empty') AND LastUpdateTime < ?) \
             OR (Status = 'Aborted' AND LastUpdateTime < ?)) ORDER BY PilotID LIMIT ?",
        ))
        .bind(before.to_string())
        .bind(aborted_before.to_string())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.db.pool())
        .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let mut tx = self.db.pool().begin().await?;
        for table in ["PilotOutput", "JobToPilotMapping", "PilotAgents"] {
            let sql = format!(
                "DELETE FROM {table} WHERE PilotID IN ({})",
                list_placeholders(ids.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for id in &ids {
                q = q.bind(*id);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(ids.len() as u64)
    }

    /// Record the CE's references of submitted pilots.
    pub async fn set_references(&self, references: &[(String, String)]) -> Result<()> {
        let mut tx = self.db.pool().begin().await?;
        for (stamp, reference) in references {
            sqlx::query(self.db.sql(
                "UPDATE PilotAgents SET PilotJobReference = ?, LastUpdateTime = ? WHERE PilotStamp = ?",
            ))
            .bind(clip(reference, 255))
            .bind(time::now())
            .bind(stamp.clone())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Pilots of one CE queue not in a final state (the SiteDirector's view).
    pub async fn active(&self, ce: &str, queue: &str) -> Result<Vec<Pilot>> {
        let sql = format!(
            "SELECT {PILOT_SELECT} FROM PilotAgents WHERE DestinationSite = ? AND Queue = ? \
             AND Status IN ('Submitted', 'Waiting', 'Scheduled', 'Running', 'Unknown')"
        );
        let rows = sqlx::query(self.db.sql_dynamic(sql))
            .bind(ce.to_string())
            .bind(queue.to_string())
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| pilot_from_row(r).map(|(_, p)| p).map_err(WmsError::from))
            .collect()
    }

    pub async fn count_active(&self, ce: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(self.db.sql(
            "SELECT COUNT(*) FROM PilotAgents WHERE DestinationSite = ? AND Status IN ('Submitted', 'Waiting', 'Scheduled', 'Running')",
        ))
        .bind(ce.to_string())
        .fetch_one(self.db.pool())
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

impl PilotDb {
    /// The status of the pilot that last took each job (via Pilot_Reference).
    pub async fn status_of_jobs(&self, job_ids: &[u64]) -> Result<HashMap<u64, String>> {
        let mut out = HashMap::new();
        for chunk in job_ids.chunks(1000) {
            let sql = format!(
                "SELECT j.JobID, p.Status FROM JobParameters j JOIN PilotAgents p ON p.PilotStamp = j.Value \
                 WHERE j.Name = 'Pilot_Reference' AND j.JobID IN ({})",
                list_placeholders(chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for id in chunk {
                q = q.bind(i64::try_from(*id).unwrap_or(i64::MAX));
            }
            for row in q.fetch_all(self.db.pool()).await? {
                out.insert(
                    u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0),
                    row.try_get(1)?,
                );
            }
        }
        Ok(out)
    }
}

impl PilotDb {
    /// Record many (pilot stamp, job) pairs inside the matcher's transaction.
    pub async fn map_jobs(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        pairs: &[(String, u64)],
    ) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut stamps: Vec<&str> = pairs.iter().map(|(s, _)| s.as_str()).collect();
        stamps.sort_unstable();
        stamps.dedup();
        let mut ids: HashMap<String, i64> = HashMap::new();
        for chunk in stamps.chunks(1000) {
            let sql = format!(
                "SELECT PilotStamp, PilotID FROM PilotAgents WHERE PilotStamp IN ({})",
                list_placeholders(chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for s in chunk {
                q = q.bind(s.to_string());
            }
            for row in q.fetch_all(&mut **tx).await? {
                ids.insert(row.try_get(0)?, row.try_get(1)?);
            }
        }
        let now = time::now();
        let known: Vec<(i64, i64)> = pairs
            .iter()
            .filter_map(|(s, job)| {
                ids.get(s)
                    .map(|id| (*id, i64::try_from(*job).unwrap_or(i64::MAX)))
            })
            .collect();
        for (pilot, job) in &known {
            sqlx::query(self.db.sql(
                "UPDATE PilotAgents SET CurrentJobID = ?, Status = 'Running', LastUpdateTime = ? WHERE PilotID = ?",
            ))
            .bind(*job)
            .bind(now.clone())
            .bind(*pilot)
            .execute(&mut **tx)
            .await?;
        }
        for chunk in known.chunks(1000) {
            let values = dirac_core::db::values_placeholders(3, chunk.len());
            let sql = match self.db.backend() {
                Backend::MySql => format!(
                    "INSERT IGNORE INTO JobToPilotMapping (PilotID, JobID, StartTime) VALUES {values}"
                ),
                _ => format!(
                    "INSERT INTO JobToPilotMapping (PilotID, JobID, StartTime) VALUES {values} ON CONFLICT DO NOTHING"
                ),
            };
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for (pilot, job) in chunk {
                q = q.bind(*pilot).bind(*job).bind(now.clone());
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }
}
