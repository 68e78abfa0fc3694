//! JobDB and JobLoggingDB: the SQL side of the WMS, written once for SQLite,
//! MariaDB/MySQL and PostgreSQL. Decisions (state machine, validation) are
//! made by pure code; this module reads what they need and writes what they
//! decided, one transaction per bulk call.

use std::collections::{BTreeMap, HashMap};

use dirac_core::config::Operations;
use dirac_core::db::{Backend, Db, list_placeholders, values_placeholders};
use dirac_core::time;
use dirac_proto::wms::{HistoryEntry, Job, JobCommand, JobParameter, SubmittedJob, SummaryRow};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};

use crate::error::{Result, WmsError};
use crate::search::{Bind, ColumnType, Where};
use crate::state::{self, CurrentState, HistoryRecord, JobStatus, Update};
use crate::submit::{NewJob, Submitter};

/// Rows of one multi-row INSERT; keeps every backend under its bind limit.
const INSERT_CHUNK: usize = 1000;
/// Ids in one `IN (...)` list.
const IN_CHUNK: usize = 1000;

const JOB_SELECT: &str = "JobID, Status, MinorStatus, ApplicationStatus, Owner, OwnerGroup, VO, JobName, \
    JobGroup, JobType, Site, UserPriority, SubmissionTime, LastUpdateTime, StartExecTime, EndExecTime, \
    HeartBeatTime, RescheduleTime, RescheduleCounter, CPUTime";

fn job_from_row(row: &AnyRow) -> std::result::Result<Job, sqlx::Error> {
    let opt = |i: usize| -> std::result::Result<String, sqlx::Error> {
        Ok(row.try_get::<Option<String>, _>(i)?.unwrap_or_default())
    };
    Ok(Job {
        job_id: to_u64(row.try_get::<i64, _>(0)?),
        status: row.try_get(1)?,
        minor_status: row.try_get(2)?,
        application_status: row.try_get(3)?,
        owner: row.try_get(4)?,
        owner_group: row.try_get(5)?,
        vo: row.try_get(6)?,
        job_name: row.try_get(7)?,
        job_group: row.try_get(8)?,
        job_type: row.try_get(9)?,
        site: row.try_get(10)?,
        user_priority: row.try_get(11)?,
        submission_time: row.try_get(12)?,
        last_update_time: row.try_get(13)?,
        start_exec_time: opt(14)?,
        end_exec_time: opt(15)?,
        heart_beat_time: opt(16)?,
        reschedule_time: opt(17)?,
        reschedule_counter: u32::try_from(row.try_get::<i64, _>(18)?).unwrap_or(u32::MAX),
        cpu_time: to_u64(row.try_get::<i64, _>(19)?),
    })
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Cut `s` to at most `max` characters (column widths).
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

pub(crate) fn bind_all<'a>(
    mut q: Query<'a, Any, AnyArguments>,
    binds: &[Bind],
) -> Query<'a, Any, AnyArguments> {
    for b in binds {
        q = match b {
            Bind::Int(i) => q.bind(*i),
            Bind::Text(s) => q.bind(s.clone()),
        };
    }
    q
}

fn bind_ids<'a>(mut q: Query<'a, Any, AnyArguments>, ids: &[u64]) -> Query<'a, Any, AnyArguments> {
    for id in ids {
        q = q.bind(to_i64(*id));
    }
    q
}

/// Who owns a job and where it stands, for access checks.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOwner {
    pub owner: String,
    pub owner_group: String,
    pub vo: String,
    pub status: String,
}

/// A job the optimizer claimed.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job_id: u64,
    pub user_priority: f64,
    pub owner: String,
    pub owner_group: String,
    pub vo: String,
    pub reschedule_counter: i64,
    pub submission_time: String,
    pub jdl: String,
}

/// The optimizer's verdict on one claimed job.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// To Waiting, in this task queue.
    Waiting(Box<dirac_matcher::TqKey>),
    /// To Failed, with DIRAC's minor status for the rejection and the reason.
    Failed { minor: &'static str, reason: String },
}

/// Minor statuses of jobs the optimizers reject (DIRAC's JobMinorStatus).
pub const ILLEGAL_JDL: &str = "Illegal Job JDL";
pub const INPUT_DATA_NOT_AVAILABLE: &str = "Input Data Not Available";
pub const NO_CANDIDATE_SITES: &str = "No candidate sites available";

impl Verdict {
    /// Rejected by JobSanity.
    pub fn illegal(reason: impl Into<String>) -> Self {
        Verdict::Failed {
            minor: ILLEGAL_JDL,
            reason: reason.into(),
        }
    }
}

/// A job row locked for a status change.
#[derive(Debug, Clone)]
struct Locked {
    state: CurrentState,
    reschedule_counter: i64,
    vo: String,
}

/// How status updates are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// Reports from worker nodes and agents, at the time they carry.
    Reported,
    /// The server's own decisions (kill, delete, heartbeat revival): never
    /// older than what is recorded.
    Server,
    /// An administrator's forced change: the state machine is bypassed.
    Forced,
}

/// What a bulk status change did to one job.
pub type ItemResult<T> = std::result::Result<T, WmsError>;

#[derive(Clone, Debug)]
pub struct JobDb {
    db: Db,
    pub task_queues: crate::taskqueuedb::TaskQueueDb,
}

impl JobDb {
    /// Wrap a pool and bring its schema up to date.
    pub async fn open(db: Db) -> Result<Self> {
        db.migrate("JobDB", crate::schema::MIGRATIONS).await?;
        Ok(JobDb {
            task_queues: crate::taskqueuedb::TaskQueueDb::new(db.clone()),
            db,
        })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    fn for_update(&self) -> &'static str {
        match self.db.backend() {
            Backend::Sqlite => "",
            _ => " FOR UPDATE",
        }
    }

    /// Reserve `n` consecutive job ids; returns the first.
    pub async fn allocate_ids(&self, n: u64) -> Result<u64> {
        Ok(self.db.allocate_ids("JobIdSequence", "Jobs", n).await?)
    }

    /// Insert the jobs of one submission (ids `first..first+len`) and, when
    /// given, the request id that makes a retry return them, in one
    /// transaction. Returns `AlreadyExists` when the request id was taken by
    /// a concurrent call.
    pub async fn insert_jobs(
        &self,
        first: u64,
        jobs: &[NewJob],
        who: &Submitter<'_>,
        request_id: Option<&str>,
    ) -> Result<Vec<SubmittedJob>> {
        let now = time::now();
        let mut tx = self.db.pool().begin().await?;
        const COLUMNS: usize = 19;
        for (chunk_no, chunk) in jobs.chunks(INSERT_CHUNK).enumerate() {
            let sql = format!(
                "INSERT INTO Jobs (JobID, JobType, JobGroup, Site, JobName, Owner, OwnerGroup, VO, \
                 SubmissionTime, LastUpdateTime, LastStatusTime, Status, MinorStatus, ApplicationStatus, \
                 UserPriority, RescheduleCounter, CPUTime, JDL, Lease) VALUES {}",
                values_placeholders(COLUMNS, chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for (i, job) in chunk.iter().enumerate() {
                let id = first + (chunk_no * INSERT_CHUNK + i) as u64;
                let jdl = if job.jdl.contains("%j") {
                    job.jdl.replace("%j", &id.to_string())
                } else {
                    job.jdl.clone()
                };
                q = q
                    .bind(to_i64(id))
                    .bind(job.job_type.clone())
                    .bind(job.job_group.clone())
                    .bind(job.site.clone())
                    .bind(job.job_name.clone())
                    .bind(who.owner.to_string())
                    .bind(who.owner_group.to_string())
                    .bind(who.vo.to_string())
                    .bind(now.clone())
                    .bind(now.clone())
                    .bind(now.clone())
                    .bind("Received")
                    .bind("Job accepted")
                    .bind("Unknown")
                    .bind(job.user_priority)
                    .bind(0_i64)
                    .bind(job.cpu_time)
                    .bind(jdl)
                    .bind(None::<String>);
            }
            q.execute(&mut *tx).await?;
        }
        if let Some(rid) = request_id {
            let per_jdl = jobs_per_jdl(jobs);
            let inserted = sqlx::query(self.db.sql(
                "INSERT INTO SubmitRequests (RequestID, Owner, VO, FirstJobID, JobsPerJdl, CreationTime) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            ))
            .bind(rid.to_string())
            .bind(who.owner.to_string())
            .bind(who.vo.to_string())
            .bind(to_i64(first))
            .bind(per_jdl)
            .bind(now.clone())
            .execute(&mut *tx)
            .await;
            if let Err(e) = inserted {
                if is_unique_violation(&e) {
                    return Err(WmsError::FailedPrecondition(format!(
                        "request id '{rid}' is being submitted"
                    )));
                }
                return Err(e.into());
            }
        }
        tx.commit().await?;
        Ok(jobs
            .iter()
            .enumerate()
            .map(|(i, j)| SubmittedJob {
                job_id: first + i as u64,
                status: "Received".into(),
                minor_status: "Job accepted".into(),
                submission_time: now.clone(),
                jdl_index: j.jdl_index,
            })
            .collect())
    }

    /// The jobs an earlier submission with this request id created.
    pub async fn find_submission(
        &self,
        request_id: &str,
        owner: &str,
        vo: &str,
    ) -> Result<Option<Vec<SubmittedJob>>> {
        let row = sqlx::query(self.db.sql(
            "SELECT FirstJobID, JobsPerJdl FROM SubmitRequests WHERE RequestID = ? AND Owner = ? AND VO = ?",
        ))
        .bind(request_id.to_string())
        .bind(owner.to_string())
        .bind(vo.to_string())
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let first = to_u64(row.try_get::<i64, _>(0)?);
        let per_jdl: String = row.try_get(1)?;
        let mut indexes = Vec::new();
        for (jdl_index, count) in per_jdl.split(',').filter(|s| !s.is_empty()).enumerate() {
            let count: usize = count
                .parse()
                .map_err(|_| WmsError::Internal("corrupt JobsPerJdl".into()))?;
            indexes.extend(std::iter::repeat_n(
                u32::try_from(jdl_index).unwrap_or(u32::MAX),
                count,
            ));
        }
        let ids: Vec<u64> = (first..first + indexes.len() as u64).collect();
        let jobs: HashMap<u64, Job> = self
            .jobs(&ids)
            .await?
            .into_iter()
            .map(|j| (j.job_id, j))
            .collect();
        Ok(Some(
            ids.iter()
                .zip(indexes)
                .filter_map(|(id, jdl_index)| {
                    jobs.get(id).map(|j| SubmittedJob {
                        job_id: *id,
                        status: j.status.clone(),
                        minor_status: j.minor_status.clone(),
                        submission_time: j.submission_time.clone(),
                        jdl_index,
                    })
                })
                .collect(),
        ))
    }

    /// Attributes of the jobs that exist among `ids`.
    pub async fn jobs(&self, ids: &[u64]) -> Result<Vec<Job>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT {JOB_SELECT} FROM Jobs WHERE JobID IN ({}) ORDER BY JobID",
                list_placeholders(chunk.len())
            );
            let rows = bind_ids(sqlx::query(self.db.sql_dynamic(sql)), chunk)
                .fetch_all(self.db.pool())
                .await?;
            for row in &rows {
                out.push(job_from_row(row)?);
            }
        }
        Ok(out)
    }

    /// Owner and status of the jobs that exist among `ids`.
    pub async fn owners(&self, ids: &[u64]) -> Result<HashMap<u64, JobOwner>> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT JobID, Owner, OwnerGroup, VO, Status FROM Jobs WHERE JobID IN ({})",
                list_placeholders(chunk.len())
            );
            let rows = bind_ids(sqlx::query(self.db.sql_dynamic(sql)), chunk)
                .fetch_all(self.db.pool())
                .await?;
            for row in rows {
                out.insert(
                    to_u64(row.try_get::<i64, _>(0)?),
                    JobOwner {
                        owner: row.try_get(1)?,
                        owner_group: row.try_get(2)?,
                        vo: row.try_get(3)?,
                        status: row.try_get(4)?,
                    },
                );
            }
        }
        Ok(out)
    }

    /// The stored JDL of a job.
    pub async fn jdl(&self, id: u64) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar(self.db.sql("SELECT JDL FROM Jobs WHERE JobID = ?"))
                .bind(to_i64(id))
                .fetch_optional(self.db.pool())
                .await?,
        )
    }

    /// History of each job, oldest first.
    pub async fn history(&self, ids: &[u64]) -> Result<HashMap<u64, Vec<HistoryEntry>>> {
        let mut out: HashMap<u64, Vec<HistoryEntry>> = HashMap::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT JobID, Status, MinorStatus, ApplicationStatus, StatusTime, Source FROM LoggingInfo \
                 WHERE JobID IN ({}) ORDER BY JobID, StatusTime, SeqID",
                list_placeholders(chunk.len())
            );
            let rows = bind_ids(sqlx::query(self.db.sql_dynamic(sql)), chunk)
                .fetch_all(self.db.pool())
                .await?;
            for row in rows {
                out.entry(to_u64(row.try_get::<i64, _>(0)?))
                    .or_default()
                    .push(HistoryEntry {
                        status: row.try_get(1)?,
                        minor_status: row.try_get(2)?,
                        application_status: row.try_get(3)?,
                        status_time: row.try_get(4)?,
                        source: row.try_get(5)?,
                    });
            }
        }
        Ok(out)
    }

    /// One page of jobs matching `w`.
    pub async fn search(
        &self,
        w: &Where,
        order: &str,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_SELECT} FROM Jobs WHERE {} ORDER BY {order} LIMIT ? OFFSET ?",
            w.sql
        );
        let q = bind_all(sqlx::query(self.db.sql_dynamic(sql)), &w.binds)
            .bind(to_i64(limit))
            .bind(to_i64(offset));
        let rows = q.fetch_all(self.db.pool()).await?;
        rows.iter()
            .map(|r| job_from_row(r).map_err(WmsError::from))
            .collect()
    }

    /// Number of jobs matching `w`.
    pub async fn count(&self, w: &Where) -> Result<u64> {
        let sql = format!("SELECT COUNT(*) FROM Jobs WHERE {}", w.sql);
        let row = bind_all(sqlx::query(self.db.sql_dynamic(sql)), &w.binds)
            .fetch_one(self.db.pool())
            .await?;
        Ok(to_u64(row.try_get::<i64, _>(0)?))
    }

    /// Job counts grouped by `columns`.
    pub async fn summary(
        &self,
        columns: &[(&'static str, ColumnType)],
        w: &Where,
    ) -> Result<Vec<SummaryRow>> {
        let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
        let list = names.join(", ");
        let sql = format!(
            "SELECT {list}, COUNT(*) FROM Jobs WHERE {} GROUP BY {list} ORDER BY {list}",
            w.sql
        );
        let rows = bind_all(sqlx::query(self.db.sql_dynamic(sql)), &w.binds)
            .fetch_all(self.db.pool())
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(columns.len());
            for (i, (_, ty)) in columns.iter().enumerate() {
                values.push(match ty {
                    ColumnType::Int => row
                        .try_get::<Option<i64>, _>(i)?
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                    ColumnType::Text => row.try_get::<Option<String>, _>(i)?.unwrap_or_default(),
                });
            }
            out.push(SummaryRow {
                values,
                count: to_u64(row.try_get::<i64, _>(columns.len())?),
            });
        }
        Ok(out)
    }

    pub async fn parameters(&self, ids: &[u64]) -> Result<Vec<JobParameter>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT JobID, Name, Value FROM JobParameters WHERE JobID IN ({}) ORDER BY JobID, Name",
                list_placeholders(chunk.len())
            );
            let rows = bind_ids(sqlx::query(self.db.sql_dynamic(sql)), chunk)
                .fetch_all(self.db.pool())
                .await?;
            for row in rows {
                out.push(JobParameter {
                    job_id: to_u64(row.try_get::<i64, _>(0)?),
                    name: row.try_get(1)?,
                    value: row.try_get(2)?,
                });
            }
        }
        Ok(out)
    }

    /// Insert or replace job parameters.
    pub async fn set_parameters(&self, params: &[JobParameter]) -> Result<()> {
        let mut tx = self.db.pool().begin().await?;
        self.upsert_parameters(&mut tx, params).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn upsert_parameters(
        &self,
        tx: &mut sqlx::Transaction<'static, Any>,
        params: &[JobParameter],
    ) -> Result<()> {
        // Last value wins within one call.
        let mut last: BTreeMap<(u64, &str), &str> = BTreeMap::new();
        for p in params {
            last.insert((p.job_id, p.name.as_str()), p.value.as_str());
        }
        let rows: Vec<_> = last.into_iter().collect();
        for chunk in rows.chunks(INSERT_CHUNK) {
            let conflict = match self.db.backend() {
                Backend::MySql => "ON DUPLICATE KEY UPDATE Value = VALUES(Value)",
                _ => "ON CONFLICT (JobID, Name) DO UPDATE SET Value = excluded.Value",
            };
            let sql = format!(
                "INSERT INTO JobParameters (JobID, Name, Value) VALUES {} {conflict}",
                values_placeholders(3, chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for ((id, name), value) in chunk {
                q = q
                    .bind(to_i64(*id))
                    .bind(name.to_string())
                    .bind(value.to_string());
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    async fn insert_history(
        &self,
        tx: &mut sqlx::Transaction<'static, Any>,
        rows: &[(u64, HistoryRecord)],
    ) -> Result<()> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO LoggingInfo (JobID, Status, MinorStatus, ApplicationStatus, StatusTime, Source) VALUES {}",
                values_placeholders(6, chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for (id, h) in chunk {
                q = q
                    .bind(to_i64(*id))
                    .bind(clip(&h.status, 32))
                    .bind(clip(&h.minor_status, 128))
                    .bind(clip(&h.application_status, 255))
                    .bind(h.time.clone())
                    .bind(clip(&h.source, 64));
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    async fn insert_commands(
        &self,
        tx: &mut sqlx::Transaction<'static, Any>,
        cmds: &[(u64, &str)],
    ) -> Result<()> {
        let now = time::now();
        for chunk in cmds.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO JobCommands (JobID, Command, Arguments, Status, ReceptionTime) VALUES {}",
                values_placeholders(5, chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for (id, cmd) in chunk {
                q = q
                    .bind(to_i64(*id))
                    .bind(cmd.to_string())
                    .bind(String::new())
                    .bind("Received")
                    .bind(now.clone());
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Lock the rows of `ids` (in ascending order, the one lock order every
    /// bulk path uses) and read their status.
    async fn lock_states(
        &self,
        tx: &mut sqlx::Transaction<'static, Any>,
        ids: &[u64],
    ) -> Result<BTreeMap<u64, Locked>> {
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut out = BTreeMap::new();
        for chunk in sorted.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT JobID, Status, MinorStatus, ApplicationStatus, LastStatusTime, StartExecTime, \
                 EndExecTime, RescheduleCounter, VO FROM Jobs WHERE JobID IN ({}) ORDER BY JobID{}",
                list_placeholders(chunk.len()),
                self.for_update()
            );
            let rows = bind_ids(sqlx::query(self.db.sql_dynamic(sql)), chunk)
                .fetch_all(&mut **tx)
                .await?;
            for row in rows {
                let id = to_u64(row.try_get::<i64, _>(0)?);
                let status: String = row.try_get(1)?;
                let status = status
                    .parse::<JobStatus>()
                    .map_err(|e| WmsError::Internal(format!("job {id}: {e}")))?;
                out.insert(
                    id,
                    Locked {
                        state: CurrentState {
                            status,
                            minor_status: row.try_get(2)?,
                            application_status: row.try_get(3)?,
                            status_time: row.try_get(4)?,
                            start_exec_time: row.try_get(5)?,
                            end_exec_time: row.try_get(6)?,
                        },
                        reschedule_counter: row.try_get(7)?,
                        vo: row.try_get(8)?,
                    },
                );
            }
        }
        Ok(out)
    }

    async fn write_state(
        &self,
        tx: &mut sqlx::Transaction<'static, Any>,
        id: u64,
        s: &CurrentState,
        was: JobStatus,
        heartbeat: bool,
    ) -> Result<()> {
        let now = time::now();
        // Any status change ends an optimizer's claim on the job.
        let sql = if heartbeat {
            "UPDATE Jobs SET Status = ?, MinorStatus = ?, ApplicationStatus = ?, LastStatusTime = ?, \
             StartExecTime = ?, EndExecTime = ?, LastUpdateTime = ?, Lease = NULL, HeartBeatTime = ? \
             WHERE JobID = ?"
        } else {
            "UPDATE Jobs SET Status = ?, MinorStatus = ?, ApplicationStatus = ?, LastStatusTime = ?, \
             StartExecTime = ?, EndExecTime = ?, LastUpdateTime = ?, Lease = NULL WHERE JobID = ?"
        };
        let mut q = sqlx::query(self.db.sql(sql))
            .bind(s.status.as_str())
            .bind(clip(&s.minor_status, 128))
            .bind(clip(&s.application_status, 255))
            .bind(s.status_time.clone())
            .bind(s.start_exec_time.clone())
            .bind(s.end_exec_time.clone())
            .bind(now.clone());
        if heartbeat {
            q = q.bind(now);
        }
        q.bind(to_i64(id)).execute(&mut **tx).await?;
        // A job leaving Waiting leaves its task queue in the same transaction.
        if was == JobStatus::Waiting && s.status != JobStatus::Waiting {
            self.task_queues.remove(tx, &[id]).await?;
        }
        Ok(())
    }

    /// Apply timestamped status updates to many jobs in one transaction.
    /// Jobs that do not exist come back as `NotFound`. With
    /// `Apply::Server` the updates are the server's own decisions (kill,
    /// delete): they apply after whatever was recorded before, whatever a
    /// worker node's clock said.
    pub async fn apply_updates(
        &self,
        updates: BTreeMap<u64, Vec<Update>>,
        mode: Apply,
    ) -> Result<BTreeMap<u64, ItemResult<CurrentState>>> {
        let ids: Vec<u64> = updates.keys().copied().collect();
        let mut tx = self.db.pool().begin().await?;
        let current = self.lock_states(&mut tx, &ids).await?;
        let mut results = BTreeMap::new();
        let mut history = Vec::new();
        let mut kills = Vec::new();
        for (id, ups) in updates {
            let Some(locked) = current.get(&id) else {
                results.insert(
                    id,
                    Err(WmsError::NotFound(format!("job {id} does not exist"))),
                );
                continue;
            };
            let cur = &locked.state;
            let mut ups = ups;
            if mode == Apply::Server {
                for u in &mut ups {
                    if u.time < cur.status_time {
                        u.time.clone_from(&cur.status_time);
                    }
                }
            }
            let outcome = state::apply(cur, &ups, mode == Apply::Forced);
            let heartbeat = ups
                .iter()
                .any(|u| u.source.starts_with("Job") || u.source == "Heartbeat");
            self.write_state(&mut tx, id, &outcome.state, cur.status, heartbeat)
                .await?;
            if outcome.status_changed
                && matches!(outcome.state.status, JobStatus::Killed | JobStatus::Deleted)
                && cur.status.is_active()
            {
                kills.push((id, "Kill"));
            }
            history.extend(outcome.history.into_iter().map(|h| (id, h)));
            results.insert(id, Ok(outcome.state));
        }
        self.insert_history(&mut tx, &history).await?;
        self.insert_commands(&mut tx, &kills).await?;
        tx.commit().await?;
        Ok(results)
    }

    /// Reschedule jobs (DIRAC's JobDB.rescheduleJob): back to Received with
    /// the counter raised, parameters moved to the attic and pending commands
    /// cancelled; past `MaxRescheduling` the job fails instead, reported as a
    /// per-item FailedPrecondition. Deleted jobs cannot come back.
    pub async fn reschedule(
        &self,
        ids: &[u64],
        ops: &Operations,
        reset_counter: bool,
        source: &str,
    ) -> Result<BTreeMap<u64, ItemResult<JobStatus>>> {
        let mut tx = self.db.pool().begin().await?;
        let current = self.lock_states(&mut tx, ids).await?;
        let now = time::now();
        let mut results = BTreeMap::new();
        let mut history = Vec::new();
        for id in ids {
            let Some(locked) = current.get(id) else {
                results.insert(
                    *id,
                    Err(WmsError::NotFound(format!("job {id} does not exist"))),
                );
                continue;
            };
            let cur = &locked.state;
            if cur.status == JobStatus::Deleted {
                results.insert(
                    *id,
                    Err(WmsError::FailedPrecondition(format!(
                        "job {id} is Deleted and cannot be rescheduled"
                    ))),
                );
                continue;
            }
            let counter = if reset_counter {
                0
            } else {
                locked.reschedule_counter + 1
            };
            history.push((
                *id,
                record(
                    JobStatus::Rescheduled,
                    "Going to reschedule job",
                    &cur.application_status,
                    &now,
                    source,
                ),
            ));
            if counter > i64::from(ops.job_scheduling.max_rescheduling) {
                let mut failed = cur.clone();
                failed.status = JobStatus::Failed;
                failed.minor_status = "Maximum of reschedulings reached".into();
                failed.status_time.clone_from(&now);
                failed.end_exec_time.get_or_insert_with(|| now.clone());
                self.write_state(&mut tx, *id, &failed, cur.status, false)
                    .await?;
                history.push((
                    *id,
                    record(
                        JobStatus::Failed,
                        &failed.minor_status,
                        &failed.application_status,
                        &now,
                        source,
                    ),
                ));
                results.insert(
                    *id,
                    Err(WmsError::FailedPrecondition(format!(
                        "job {id}: maximum of {} reschedulings reached; the job is Failed",
                        ops.job_scheduling.max_rescheduling
                    ))),
                );
                continue;
            }
            // Parameters of this attempt go to the attic under the next free
            // cycle; pending commands of the previous payload must not reach
            // the next one.
            sqlx::query(self.db.sql(
                "INSERT INTO AtticJobParameters (JobID, Name, Value, RescheduleCycle) \
                 SELECT JobID, Name, Value, \
                 (SELECT COALESCE(MAX(RescheduleCycle), -1) + 1 FROM AtticJobParameters WHERE JobID = ?) \
                 FROM JobParameters WHERE JobID = ?",
            ))
            .bind(to_i64(*id))
            .bind(to_i64(*id))
            .execute(&mut *tx)
            .await?;
            self.task_queues.remove(&mut tx, &[*id]).await?;
            sqlx::query(self.db.sql("DELETE FROM JobParameters WHERE JobID = ?"))
                .bind(to_i64(*id))
                .execute(&mut *tx)
                .await?;
            sqlx::query(self.db.sql(
                "UPDATE JobCommands SET Status = 'Cancelled' WHERE JobID = ? AND Status = 'Received'",
            ))
            .bind(to_i64(*id))
            .execute(&mut *tx)
            .await?;
            let jdl: String =
                sqlx::query_scalar(self.db.sql("SELECT JDL FROM Jobs WHERE JobID = ?"))
                    .bind(to_i64(*id))
                    .fetch_one(&mut *tx)
                    .await?;
            let site = dirac_jdl::ClassAd::parse(&jdl)
                .ok()
                .and_then(|ad| {
                    dirac_jdl::validate(&ad, &ops.job_description.jdl_policy(), &locked.vo).ok()
                })
                .map_or_else(|| "ANY".to_string(), |d| crate::submit::site_column(&d));
            sqlx::query(self.db.sql(
                "UPDATE Jobs SET Status = 'Received', MinorStatus = 'Job Rescheduled', \
                 ApplicationStatus = 'Unknown', RescheduleCounter = ?, RescheduleTime = ?, LastStatusTime = ?, \
                 LastUpdateTime = ?, Site = ?, StartExecTime = NULL, EndExecTime = NULL, HeartBeatTime = NULL, \
                 Lease = NULL WHERE JobID = ?",
            ))
            .bind(counter)
            .bind(now.clone())
            .bind(now.clone())
            .bind(now.clone())
            .bind(site)
            .bind(to_i64(*id))
            .execute(&mut *tx)
            .await?;
            history.push((
                *id,
                record(
                    JobStatus::Received,
                    "Job Rescheduled",
                    "Unknown",
                    &now,
                    source,
                ),
            ));
            results.insert(*id, Ok(JobStatus::Received));
        }
        self.insert_history(&mut tx, &history).await?;
        tx.commit().await?;
        Ok(results)
    }

    /// Record heartbeats: HeartBeatTime, the dynamic data, the standard
    /// output peek as a job parameter; returns the pending commands (each
    /// delivered once) and the jobs that exist.
    pub async fn heartbeat(
        &self,
        beats: &[dirac_proto::wms::Heartbeat],
    ) -> Result<(Vec<JobCommand>, Vec<u64>)> {
        let now = time::now();
        let mut ids: Vec<u64> = beats.iter().map(|b| b.job_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut tx = self.db.pool().begin().await?;
        let mut existing = Vec::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT JobID FROM Jobs WHERE JobID IN ({}) ORDER BY JobID{}",
                list_placeholders(chunk.len()),
                self.for_update()
            );
            for row in bind_ids(sqlx::query(self.db.sql_dynamic(sql)), chunk)
                .fetch_all(&mut *tx)
                .await?
            {
                existing.push(to_u64(row.try_get::<i64, _>(0)?));
            }
            let sql = format!(
                "UPDATE Jobs SET HeartBeatTime = ?, LastUpdateTime = ? WHERE JobID IN ({})",
                list_placeholders(chunk.len())
            );
            bind_ids(
                sqlx::query(self.db.sql_dynamic(sql))
                    .bind(now.clone())
                    .bind(now.clone()),
                chunk,
            )
            .execute(&mut *tx)
            .await?;
        }
        let mut dynamic = Vec::new();
        let mut peeks = Vec::new();
        let known: std::collections::HashSet<u64> = existing.iter().copied().collect();
        for b in beats.iter().filter(|b| known.contains(&b.job_id)) {
            for (name, value) in [
                ("LoadAverage", b.load_average),
                ("MemoryUsed", b.memory_used),
                ("Vsize", b.vsize),
                ("AvailableDiskSpace", b.available_disk_space),
                ("CPUConsumed", b.cpu_consumed),
                ("WallClockTime", b.wall_clock_time),
            ] {
                dynamic.push((b.job_id, name, value.to_string()));
            }
            if !b.standard_output.is_empty() {
                peeks.push(JobParameter {
                    job_id: b.job_id,
                    name: "StandardOutput".into(),
                    value: clip(&b.standard_output, 16_384),
                });
            }
        }
        for chunk in dynamic.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO HeartBeatLoggingInfo (JobID, Name, Value, HeartBeatTime) VALUES {}",
                values_placeholders(4, chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for (id, name, value) in chunk {
                q = q
                    .bind(to_i64(*id))
                    .bind(name.to_string())
                    .bind(value.clone())
                    .bind(now.clone());
            }
            q.execute(&mut *tx).await?;
        }
        self.upsert_parameters(&mut tx, &peeks).await?;
        let mut commands = Vec::new();
        for chunk in existing.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT ID, JobID, Command, Arguments FROM JobCommands WHERE Status = 'Received' AND JobID IN ({}) \
                 ORDER BY ID{}",
                list_placeholders(chunk.len()),
                self.for_update()
            );
            let rows = bind_ids(sqlx::query(self.db.sql_dynamic(sql)), chunk)
                .fetch_all(&mut *tx)
                .await?;
            let mut cmd_ids = Vec::new();
            for row in rows {
                cmd_ids.push(to_u64(row.try_get::<i64, _>(0)?));
                commands.push(JobCommand {
                    job_id: to_u64(row.try_get::<i64, _>(1)?),
                    command: row.try_get(2)?,
                    arguments: row.try_get(3)?,
                });
            }
            if !cmd_ids.is_empty() {
                let sql = format!(
                    "UPDATE JobCommands SET Status = 'Sent', ExecutionTime = ? WHERE ID IN ({})",
                    list_placeholders(cmd_ids.len())
                );
                bind_ids(
                    sqlx::query(self.db.sql_dynamic(sql)).bind(now.clone()),
                    &cmd_ids,
                )
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok((commands, existing))
    }

    /// Claim up to `limit` Received jobs whose reschedule delay has passed
    /// for the optimizer: they move to Checking under a fresh lease,
    /// atomically across replicas. No ORDER BY: the (Status, Site) index
    /// finds the next Received jobs without sorting all of them.
    pub async fn claim_received(
        &self,
        limit: u64,
        delays: &[u64],
    ) -> Result<(String, Vec<Claimed>)> {
        let lease = format!("{:032x}", rand::random::<u128>());
        let now = time::now();
        let mut eligible = String::from(
            "Status = 'Received' AND (RescheduleCounter = 0 OR RescheduleTime <= CASE",
        );
        let mut binds = Vec::new();
        for (i, d) in delays.iter().enumerate() {
            eligible.push_str(&format!(" WHEN RescheduleCounter = {} THEN ?", i + 1));
            binds.push(time::ago(*d));
        }
        eligible.push_str(" ELSE ? END)");
        binds.push(time::ago(delays.last().copied().unwrap_or(0)));
        let set = "Status = 'Checking', MinorStatus = 'JobSanity', Lease = ?, LastUpdateTime = ?, \
                   LastStatusTime = ?";
        let sql = match self.db.backend() {
            Backend::MySql => format!("UPDATE Jobs SET {set} WHERE {eligible} LIMIT ?"),
            Backend::Postgres => format!(
                "UPDATE Jobs SET {set} WHERE JobID IN (SELECT JobID FROM Jobs WHERE {eligible} \
                 LIMIT ? FOR UPDATE SKIP LOCKED)"
            ),
            Backend::Sqlite => format!(
                "UPDATE Jobs SET {set} WHERE JobID IN (SELECT JobID FROM Jobs WHERE {eligible} LIMIT ?)"
            ),
        };
        let mut q = sqlx::query(self.db.sql_dynamic(sql))
            .bind(lease.clone())
            .bind(now.clone())
            .bind(now.clone());
        for b in binds {
            q = q.bind(b);
        }
        let done = q.bind(to_i64(limit)).execute(self.db.pool()).await?;
        if done.rows_affected() == 0 {
            return Ok((lease, Vec::new()));
        }
        let rows = sqlx::query(self.db.sql(
            "SELECT JobID, Owner, OwnerGroup, VO, RescheduleCounter, SubmissionTime, JDL, UserPriority FROM Jobs \
             WHERE Status = 'Checking' AND Lease = ? ORDER BY JobID",
        ))
        .bind(lease.clone())
        .fetch_all(self.db.pool())
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            claimed.push(Claimed {
                job_id: to_u64(row.try_get::<i64, _>(0)?),
                owner: row.try_get(1)?,
                owner_group: row.try_get(2)?,
                vo: row.try_get(3)?,
                reschedule_counter: row.try_get(4)?,
                submission_time: row.try_get(5)?,
                jdl: row.try_get(6)?,
                user_priority: row.try_get::<i64, _>(7)? as f64,
            });
        }
        Ok((lease, claimed))
    }

    /// Give jobs whose optimizer claim is older than `stale_after_s` back to
    /// Received (their optimizer died); returns how many.
    pub async fn release_stale_claims(&self, stale_after_s: u64) -> Result<u64> {
        let done = sqlx::query(self.db.sql(
            "UPDATE Jobs SET Status = 'Received', MinorStatus = 'Job accepted', Lease = NULL \
             WHERE Status = 'Checking' AND Lease IS NOT NULL AND LastUpdateTime < ?",
        ))
        .bind(time::ago(stale_after_s))
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Record the optimizer's verdicts on jobs claimed under `lease`. Jobs
    /// that left Checking meanwhile (killed, deleted, reclaimed) keep their
    /// new state: only rows still held under the lease are touched.
    pub async fn finish_checking(
        &self,
        lease: &str,
        claim_time: &str,
        verdicts: &[(Claimed, Verdict)],
    ) -> Result<Vec<crate::taskqueuedb::Queued>> {
        let now = time::now();
        let mut tx = self.db.pool().begin().await?;
        // Lock what is still ours, in ascending order.
        let held: std::collections::HashSet<u64> = sqlx::query(self.db.sql_dynamic(format!(
            "SELECT JobID FROM Jobs WHERE Lease = ? AND Status = 'Checking' ORDER BY JobID{}",
            self.for_update()
        )))
        .bind(lease.to_string())
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>(0).map(to_u64))
        .collect::<std::result::Result<_, _>>()?;
        let mut history = Vec::with_capacity(verdicts.len() * 3);
        let waiting: Vec<u64> = verdicts
            .iter()
            .filter(|(c, v)| matches!(v, Verdict::Waiting(_)) && held.contains(&c.job_id))
            .map(|(c, _)| c.job_id)
            .collect();
        for chunk in waiting.chunks(IN_CHUNK) {
            let sql = format!(
                "UPDATE Jobs SET Status = 'Waiting', MinorStatus = 'Pilot Agent Submission', Lease = NULL, \
                 LastStatusTime = ?, LastUpdateTime = ? WHERE Lease = ? AND JobID IN ({})",
                list_placeholders(chunk.len())
            );
            let q = sqlx::query(self.db.sql_dynamic(sql))
                .bind(now.clone())
                .bind(now.clone())
                .bind(lease.to_string());
            bind_ids(q, chunk).execute(&mut *tx).await?;
        }
        for (c, verdict) in verdicts.iter().filter(|(c, _)| held.contains(&c.job_id)) {
            if c.reschedule_counter == 0 {
                history.push((
                    c.job_id,
                    record(
                        JobStatus::Received,
                        "Job accepted",
                        "Unknown",
                        &c.submission_time,
                        "JobManager",
                    ),
                ));
            }
            history.push((
                c.job_id,
                record(
                    JobStatus::Checking,
                    "JobSanity",
                    "Unknown",
                    claim_time,
                    "Optimizer",
                ),
            ));
            match verdict {
                Verdict::Waiting(_) => {
                    history.push((
                        c.job_id,
                        record(
                            JobStatus::Waiting,
                            "Pilot Agent Submission",
                            "Unknown",
                            &now,
                            "JobSanity",
                        ),
                    ));
                }
                Verdict::Failed { minor, reason } => {
                    sqlx::query(self.db.sql(
                        "UPDATE Jobs SET Status = 'Failed', MinorStatus = ?, ApplicationStatus = ?, \
                         Lease = NULL, LastStatusTime = ?, LastUpdateTime = ?, EndExecTime = ? \
                         WHERE JobID = ? AND Lease = ?",
                    ))
                    .bind(minor)
                    .bind(clip(reason, 255))
                    .bind(now.clone())
                    .bind(now.clone())
                    .bind(now.clone())
                    .bind(to_i64(c.job_id))
                    .bind(lease.to_string())
                    .execute(&mut *tx)
                    .await?;
                    history.push((
                        c.job_id,
                        record(JobStatus::Failed, minor, reason, &now, "JobSanity"),
                    ));
                }
            }
        }
        self.insert_history(&mut tx, &history).await?;
        // Waiting jobs enter their task queues in the same transaction.
        let queued: Vec<crate::taskqueuedb::Queued> = verdicts
            .iter()
            .filter(|(c, _)| held.contains(&c.job_id))
            .filter_map(|(c, v)| match v {
                Verdict::Waiting(key) => Some(crate::taskqueuedb::Queued {
                    job_id: c.job_id,
                    key: (**key).clone(),
                    user_priority: c.user_priority,
                }),
                Verdict::Failed { .. } => None,
            })
            .collect();
        self.task_queues.insert(&mut tx, &queued).await?;
        tx.commit().await?;
        Ok(queued)
    }
}

fn record(status: JobStatus, minor: &str, app: &str, time: &str, source: &str) -> HistoryRecord {
    HistoryRecord {
        status: status.as_str().into(),
        minor_status: minor.into(),
        application_status: app.into(),
        time: time.into(),
        source: source.into(),
    }
}

/// `"1,1,3"`: jobs created from each JDL of a submission, in order.
fn jobs_per_jdl(jobs: &[NewJob]) -> String {
    let mut counts: Vec<usize> = Vec::new();
    for j in jobs {
        let i = j.jdl_index as usize;
        if counts.len() <= i {
            counts.resize(i + 1, 0);
        }
        counts[i] += 1;
    }
    counts
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            d.is_unique_violation()
                || d.message().contains("Duplicate entry")
                || d.message().contains("UNIQUE constraint")
        }
        _ => false,
    }
}

/// A job the matcher took for a pilot.
#[derive(Debug, Clone)]
pub struct MatchedJob {
    pub job_id: u64,
    pub job_type: String,
    pub jdl: String,
    pub owner: String,
    pub owner_group: String,
    pub vo: String,
}

impl JobDb {
    /// Queue a command (e.g. Kill) for each job, delivered at its next heartbeat.
    pub async fn queue_commands(&self, job_ids: &[u64], command: &str) -> Result<()> {
        if job_ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.pool().begin().await?;
        let cmds: Vec<(u64, &str)> = job_ids.iter().map(|id| (*id, command)).collect();
        self.insert_commands(&mut tx, &cmds).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Remove jobs and everything recorded about them (JobCleaningAgent).
    pub async fn remove_jobs(&self, job_ids: &[u64]) -> Result<()> {
        for chunk in job_ids.chunks(IN_CHUNK) {
            let mut tx = self.db.pool().begin().await?;
            for table in [
                "LoggingInfo",
                "JobParameters",
                "AtticJobParameters",
                "HeartBeatLoggingInfo",
                "JobCommands",
                "tq_Jobs",
                "Jobs",
            ] {
                let sql = format!(
                    "DELETE FROM {table} WHERE JobID IN ({})",
                    list_placeholders(chunk.len())
                );
                bind_ids(sqlx::query(self.db.sql_dynamic(sql)), chunk)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }
}

/// One pilot's claim in a batch: the proposed job, the pilot's site and stamp.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub job_id: u64,
    pub site: String,
    pub pilot_stamp: Option<String>,
}

impl JobDb {
    /// Claim many proposed jobs for many pilots in one transaction (the
    /// matcher's batch). Task-queue rows are locked with SKIP LOCKED and
    /// deleted, so a job another replica holds is skipped, never shared;
    /// jobs still Waiting become Matched at their pilot's site. Returns the
    /// jobs this transaction took.
    pub async fn claim_many(
        &self,
        wanted: &[ClaimRequest],
        pilots: &crate::pilotdb::PilotDb,
    ) -> Result<HashMap<u64, MatchedJob>> {
        let mut out = HashMap::new();
        if wanted.is_empty() {
            return Ok(out);
        }
        let mut ids: Vec<u64> = wanted.iter().map(|w| w.job_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let skip = match self.db.backend() {
            Backend::Sqlite => "",
            _ => " FOR UPDATE SKIP LOCKED",
        };
        let mut tx = self.db.pool().begin().await?;
        let mut queued = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT JobID FROM tq_Jobs WHERE JobID IN ({}) ORDER BY JobID{skip}",
                list_placeholders(chunk.len())
            );
            for row in bind_ids(sqlx::query(self.db.sql_dynamic(sql)), chunk)
                .fetch_all(&mut *tx)
                .await?
            {
                queued.push(to_u64(row.try_get::<i64, _>(0)?));
            }
        }
        if queued.is_empty() {
            tx.commit().await?;
            return Ok(out);
        }
        self.task_queues.remove(&mut tx, &queued).await?;
        let mut rows = Vec::with_capacity(queued.len());
        for chunk in queued.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT JobID, Status, Owner, OwnerGroup, VO, JDL, JobType FROM Jobs WHERE JobID IN ({}) ORDER BY JobID{}",
                list_placeholders(chunk.len()),
                self.for_update()
            );
            rows.extend(
                bind_ids(sqlx::query(self.db.sql_dynamic(sql)), chunk)
                    .fetch_all(&mut *tx)
                    .await?,
            );
        }
        let by_job: HashMap<u64, &ClaimRequest> = wanted.iter().map(|w| (w.job_id, w)).collect();
        let now = time::now();
        let mut by_site: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut history = Vec::new();
        let mut params = Vec::new();
        let mut mapping: Vec<(String, u64)> = Vec::new();
        for row in rows {
            let id = to_u64(row.try_get::<i64, _>(0)?);
            let status: String = row.try_get(1)?;
            let Some(req) = by_job.get(&id) else { continue };
            if status != "Waiting" {
                continue; // a stale queue entry, now gone
            }
            by_site.entry(clip(&req.site, 128)).or_default().push(id);
            history.push((
                id,
                record(JobStatus::Matched, "Assigned", "Unknown", &now, "Matcher"),
            ));
            if let Some(stamp) = &req.pilot_stamp {
                params.push(JobParameter {
                    job_id: id,
                    name: "Pilot_Reference".into(),
                    value: stamp.clone(),
                });
                mapping.push((stamp.clone(), id));
            }
            out.insert(
                id,
                MatchedJob {
                    job_id: id,
                    owner: row.try_get(2)?,
                    owner_group: row.try_get(3)?,
                    vo: row.try_get(4)?,
                    jdl: row.try_get(5)?,
                    job_type: row.try_get(6)?,
                },
            );
        }
        for (site, jobs) in &by_site {
            for chunk in jobs.chunks(IN_CHUNK) {
                let sql = format!(
                    "UPDATE Jobs SET Status = 'Matched', MinorStatus = 'Assigned', Site = ?, LastStatusTime = ?, \
                     LastUpdateTime = ? WHERE JobID IN ({})",
                    list_placeholders(chunk.len())
                );
                let q = sqlx::query(self.db.sql_dynamic(sql))
                    .bind(site.clone())
                    .bind(now.clone())
                    .bind(now.clone());
                bind_ids(q, chunk).execute(&mut *tx).await?;
            }
        }
        self.insert_history(&mut tx, &history).await?;
        self.upsert_parameters(&mut tx, &params).await?;
        pilots.map_jobs(&mut tx, &mapping).await?;
        tx.commit().await?;
        Ok(out)
    }
}

impl JobDb {
    /// Running, Matched and Stalled jobs at `site` by job type (the Limiter).
    pub async fn running_by_job_type(&self, site: &str) -> Result<HashMap<String, u64>> {
        let rows = sqlx::query(self.db.sql(
            "SELECT JobType, COUNT(*) FROM Jobs WHERE Site = ? AND Status IN ('Running', 'Matched', 'Stalled') \
             GROUP BY JobType",
        ))
        .bind(site.to_string())
        .fetch_all(self.db.pool())
        .await?;
        let mut out = HashMap::new();
        for r in rows {
            out.insert(r.try_get::<String, _>(0)?, to_u64(r.try_get::<i64, _>(1)?));
        }
        Ok(out)
    }
}
