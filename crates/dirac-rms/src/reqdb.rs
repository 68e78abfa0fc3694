//! ReqDB: requests with their operations and files on SQLite, MariaDB or
//! PostgreSQL. A request is stored whole in one transaction; agents claim
//! Waiting requests with an atomic `UPDATE … WHERE Status = 'Waiting'` (no
//! two agents ever hold the same request, unlike DIRAC's random pick) and
//! write the outcome back only while they still hold it, so a cancellation
//! or a kick in between is never overwritten.

use std::collections::BTreeMap;

use dirac_core::db::{Db, list_placeholders, retry_deadlocks};
use sqlx::Row as _;

use crate::error::{Result, RmsError};
use crate::model::{File, FileStatus, OpStatus, Operation, ReqStatus, Request, settle_request};

/// Ids per IN list.
const CHUNK: usize = 500;
/// Tries of a write the database picks as a deadlock victim (concurrent
/// agents' claims and saves meet in the same index pages on MariaDB).
const DEADLOCK_TRIES: u32 = 8;

const REQUEST_COLUMNS: &str = "RequestID, Name, Owner, OwnerGroup, VO, JobID, Status, Error, \
     SourceComponent, CreationTime, SubmitTime, LastUpdate, NotBefore";
const OPERATION_COLUMNS: &str = "OperationID, RequestID, Type, Status, Arguments, SourceSE, \
     TargetSE, Catalog, Error, CreationTime, SubmitTime, LastUpdate";
const FILE_COLUMNS: &str =
    "FileID, OperationID, LFN, PFN, GUID, Size, Checksum, ChecksumType, Status, Attempt, Error";

/// A request without its operations, for listings.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub id: u64,
    pub name: String,
    pub owner: String,
    pub owner_group: String,
    pub vo: String,
    pub job_id: u64,
    pub status: ReqStatus,
    pub error: String,
    pub last_update: i64,
    pub current_operation: String,
}

/// Which requests a listing returns.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub statuses: Vec<ReqStatus>,
    pub job_ids: Vec<u64>,
    /// Only this owner's (user, VO); `None`: everyone's.
    pub owner: Option<(String, String)>,
    pub limit: u64,
}

fn id(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn db_id(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn corrupt(what: &str, value: &str) -> RmsError {
    RmsError::Db(sqlx::Error::Protocol(format!(
        "ReqDB holds an unknown {what} '{value}'"
    )))
}

fn ses(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

pub struct ReqDb {
    db: Db,
}

impl ReqDb {
    /// ReqDB on `db`, migrated.
    pub async fn open(db: Db) -> Result<Self> {
        db.migrate("ReqDB", crate::schema::MIGRATIONS).await?;
        Ok(ReqDb { db })
    }

    /// Store new requests whole (one transaction) and return their ids.
    /// Statuses start from DIRAC's rules: the first operation Waiting, the
    /// others Queued, files Waiting.
    pub async fn put(&self, requests: Vec<Request>, now: i64) -> Result<Vec<u64>> {
        retry_deadlocks(DEADLOCK_TRIES, RmsError::sql, || {
            self.try_put(requests.clone(), now)
        })
        .await
    }

    async fn try_put(&self, requests: Vec<Request>, now: i64) -> Result<Vec<u64>> {
        let n_ops: usize = requests.iter().map(|r| r.operations.len()).sum();
        let n_files: usize = requests
            .iter()
            .flat_map(|r| &r.operations)
            .map(|o| o.files.len())
            .sum();
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let mut next_request = self
            .db
            .allocate_ids("RMS_Sequences", "Requests", count(requests.len()))
            .await?;
        let mut next_op = self
            .db
            .allocate_ids("RMS_Sequences", "Operations", count(n_ops))
            .await?;
        let mut next_file = self
            .db
            .allocate_ids("RMS_Sequences", "Files", count(n_files))
            .await?;
        let mut ids = Vec::with_capacity(requests.len());
        let mut tx = self.db.pool().begin().await?;
        for mut r in requests {
            r.id = next_request;
            next_request += 1;
            r.status = ReqStatus::Waiting;
            for op in &mut r.operations {
                op.status = OpStatus::Queued;
                for f in &mut op.files {
                    f.status = FileStatus::Waiting;
                    f.attempt = 0;
                    f.error.clear();
                }
            }
            settle_request(&mut r);
            sqlx::query(self.db.sql(
                "INSERT INTO RMS_Requests (RequestID, Name, Owner, OwnerGroup, VO, JobID, Status, Error, \
                 SourceComponent, CreationTime, SubmitTime, LastUpdate, NotBefore, ClaimedBy, ClaimedAt) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?, '', 0)",
            ))
            .bind(db_id(r.id))
            .bind(r.name.clone())
            .bind(r.owner.clone())
            .bind(r.owner_group.clone())
            .bind(r.vo.clone())
            .bind(db_id(r.job_id))
            .bind(r.status.as_str())
            .bind(r.source_component.clone())
            .bind(now)
            .bind(now)
            .bind(now)
            .bind(r.not_before.max(now))
            .execute(&mut *tx)
            .await?;
            for (order, op) in r.operations.iter().enumerate() {
                let op_id = next_op;
                next_op += 1;
                sqlx::query(self.db.sql(
                    "INSERT INTO RMS_Operations (OperationID, RequestID, OpOrder, Type, Status, Arguments, \
                     SourceSE, TargetSE, Catalog, Error, CreationTime, SubmitTime, LastUpdate) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?)",
                ))
                .bind(db_id(op_id))
                .bind(db_id(r.id))
                .bind(i32::try_from(order).unwrap_or(i32::MAX))
                .bind(op.kind.clone())
                .bind(op.status.as_str())
                .bind(op.arguments.clone())
                .bind(op.source_se.join(","))
                .bind(op.target_se.join(","))
                .bind(op.catalog.clone())
                .bind(now)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                for f in &op.files {
                    sqlx::query(self.db.sql(
                        "INSERT INTO RMS_Files (FileID, OperationID, LFN, PFN, GUID, Size, Checksum, \
                         ChecksumType, Status, Attempt, Error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, '')",
                    ))
                    .bind(db_id(next_file))
                    .bind(db_id(op_id))
                    .bind(f.lfn.clone())
                    .bind(f.pfn.clone())
                    .bind(f.guid.clone())
                    .bind(db_id(f.size))
                    .bind(f.checksum.clone())
                    .bind(f.checksum_type.clone())
                    .bind(f.status.as_str())
                    .execute(&mut *tx)
                    .await?;
                    next_file += 1;
                }
            }
            ids.push(r.id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Rows of `SELECT {columns} FROM {table} WHERE {key} IN (ids) {order}`,
    /// in chunks of [`CHUNK`] ids.
    async fn rows_in(
        &self,
        columns: &str,
        table: &str,
        key: &str,
        ids: &[u64],
        order: &str,
    ) -> Result<Vec<sqlx::any::AnyRow>> {
        let mut rows = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT {columns} FROM {table} WHERE {key} IN ({}) {order}",
                list_placeholders(chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for i in chunk {
                q = q.bind(db_id(*i));
            }
            rows.extend(q.fetch_all(self.db.pool()).await?);
        }
        Ok(rows)
    }

    /// Whole requests by id; unknown ids are absent.
    pub async fn get(&self, ids: &[u64]) -> Result<BTreeMap<u64, Request>> {
        let mut out = BTreeMap::new();
        for row in self
            .rows_in(REQUEST_COLUMNS, "RMS_Requests", "RequestID", ids, "")
            .await?
        {
            let r = request_row(&row)?;
            out.insert(r.id, r);
        }
        let request_ids: Vec<u64> = out.keys().copied().collect();
        let mut op_owner: BTreeMap<u64, u64> = BTreeMap::new();
        for row in self
            .rows_in(
                OPERATION_COLUMNS,
                "RMS_Operations",
                "RequestID",
                &request_ids,
                "ORDER BY RequestID, OpOrder",
            )
            .await?
        {
            let (request_id, op) = operation_row(&row)?;
            op_owner.insert(op.id, request_id);
            if let Some(r) = out.get_mut(&request_id) {
                r.operations.push(op);
            }
        }
        let op_ids: Vec<u64> = op_owner.keys().copied().collect();
        for row in self
            .rows_in(
                FILE_COLUMNS,
                "RMS_Files",
                "OperationID",
                &op_ids,
                "ORDER BY FileID",
            )
            .await?
        {
            let (op_id, file) = file_row(&row)?;
            let op = op_owner
                .get(&op_id)
                .and_then(|r| out.get_mut(r))
                .and_then(|r| r.operations.iter_mut().find(|o| o.id == op_id));
            if let Some(op) = op {
                op.files.push(file);
            }
        }
        Ok(out)
    }

    /// Requests without their operations, newest first.
    pub async fn list(&self, q: &ListQuery) -> Result<Vec<Summary>> {
        let mut conditions = Vec::new();
        if !q.statuses.is_empty() {
            conditions.push(format!(
                "r.Status IN ({})",
                list_placeholders(q.statuses.len())
            ));
        }
        if !q.job_ids.is_empty() {
            conditions.push(format!(
                "r.JobID IN ({})",
                list_placeholders(q.job_ids.len().min(CHUNK))
            ));
        }
        if q.owner.is_some() {
            conditions.push("r.Owner = ? AND r.VO = ?".into());
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        // The current operation: the Waiting or Scheduled one.
        let sql = format!(
            "SELECT r.RequestID, r.Name, r.Owner, r.OwnerGroup, r.VO, r.JobID, r.Status, r.Error, r.LastUpdate, \
             (SELECT o.Type FROM RMS_Operations o WHERE o.RequestID = r.RequestID \
              AND o.Status IN ('Waiting', 'Scheduled') ORDER BY o.OpOrder LIMIT 1) \
             FROM RMS_Requests r {filter} ORDER BY r.RequestID DESC LIMIT ?"
        );
        let mut query = sqlx::query(self.db.sql_dynamic(sql));
        for s in &q.statuses {
            query = query.bind(s.as_str());
        }
        for j in q.job_ids.iter().take(CHUNK) {
            query = query.bind(db_id(*j));
        }
        if let Some((owner, vo)) = &q.owner {
            query = query.bind(owner.clone()).bind(vo.clone());
        }
        query = query.bind(db_id(q.limit));
        let mut out = Vec::new();
        for row in query.fetch_all(self.db.pool()).await? {
            let status: String = row.try_get(6)?;
            out.push(Summary {
                id: id(row.try_get(0)?),
                name: row.try_get(1)?,
                owner: row.try_get(2)?,
                owner_group: row.try_get(3)?,
                vo: row.try_get(4)?,
                job_id: id(row.try_get(5)?),
                status: ReqStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
                error: row.try_get(7)?,
                last_update: row.try_get(8)?,
                current_operation: row.try_get::<Option<String>, _>(9)?.unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// Cancel requests that are not final: the request and its pending
    /// operations become Canceled. Returns whether each id was canceled
    /// (`false`: unknown or already final).
    pub async fn cancel(&self, ids: &[u64], now: i64) -> Result<BTreeMap<u64, bool>> {
        retry_deadlocks(DEADLOCK_TRIES, RmsError::sql, || self.try_cancel(ids, now)).await
    }

    async fn try_cancel(&self, ids: &[u64], now: i64) -> Result<BTreeMap<u64, bool>> {
        let mut out = BTreeMap::new();
        let mut tx = self.db.pool().begin().await?;
        for i in ids {
            let done = sqlx::query(self.db.sql(
                "UPDATE RMS_Requests SET Status = 'Canceled', LastUpdate = ?, ClaimedBy = '', ClaimedAt = 0 \
                 WHERE RequestID = ? AND Status NOT IN ('Done', 'Failed', 'Canceled')",
            ))
            .bind(now)
            .bind(db_id(*i))
            .execute(&mut *tx)
            .await?;
            let canceled = done.rows_affected() == 1;
            if canceled {
                sqlx::query(self.db.sql(
                    "UPDATE RMS_Operations SET Status = 'Canceled', LastUpdate = ? \
                     WHERE RequestID = ? AND Status NOT IN ('Done', 'Failed', 'Canceled')",
                ))
                .bind(now)
                .bind(db_id(*i))
                .execute(&mut *tx)
                .await?;
            }
            out.insert(*i, canceled);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Delete requests in a final state with their operations and files.
    /// Returns whether each id was deleted (`false`: unknown or not final).
    pub async fn delete(&self, ids: &[u64]) -> Result<BTreeMap<u64, bool>> {
        retry_deadlocks(DEADLOCK_TRIES, RmsError::sql, || self.try_delete(ids)).await
    }

    async fn try_delete(&self, ids: &[u64]) -> Result<BTreeMap<u64, bool>> {
        let mut out = BTreeMap::new();
        let mut tx = self.db.pool().begin().await?;
        for i in ids {
            let done = sqlx::query(self.db.sql(
                "DELETE FROM RMS_Requests WHERE RequestID = ? AND Status IN ('Done', 'Failed', 'Canceled')",
            ))
            .bind(db_id(*i))
            .execute(&mut *tx)
            .await?;
            let deleted = done.rows_affected() == 1;
            if deleted {
                sqlx::query(self.db.sql(
                    "DELETE FROM RMS_Files WHERE OperationID IN \
                     (SELECT OperationID FROM RMS_Operations WHERE RequestID = ?)",
                ))
                .bind(db_id(*i))
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    self.db
                        .sql("DELETE FROM RMS_Operations WHERE RequestID = ?"),
                )
                .bind(db_id(*i))
                .execute(&mut *tx)
                .await?;
            }
            out.insert(*i, deleted);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Claim up to `n` Waiting requests whose back-off has passed, oldest
    /// update first, for `agent`. Each claim is an atomic conditional
    /// update: concurrent agents never get the same request.
    pub async fn claim(&self, n: u64, agent: &str, now: i64) -> Result<Vec<Request>> {
        let candidates: Vec<i64> = sqlx::query_scalar(self.db.sql(
            "SELECT RequestID FROM RMS_Requests WHERE Status = 'Waiting' AND NotBefore <= ? \
             ORDER BY LastUpdate, RequestID LIMIT ?",
        ))
        .bind(now)
        .bind(db_id(n.saturating_mul(2)))
        .fetch_all(self.db.pool())
        .await?;
        let mut claimed = Vec::new();
        for candidate in candidates {
            if claimed.len() as u64 >= n {
                break;
            }
            let done = retry_deadlocks(
                DEADLOCK_TRIES,
                |e: &sqlx::Error| Some(e),
                || {
                    sqlx::query(self.db.sql(
                        "UPDATE RMS_Requests SET Status = 'Assigned', ClaimedBy = ?, ClaimedAt = ?, \
                         LastUpdate = ? WHERE RequestID = ? AND Status = 'Waiting'",
                    ))
                    .bind(agent.to_string())
                    .bind(now)
                    .bind(now)
                    .bind(candidate)
                    .execute(self.db.pool())
                },
            )
            .await?;
            if done.rows_affected() == 1 {
                claimed.push(id(candidate));
            }
        }
        Ok(self.get(&claimed).await?.into_values().collect())
    }

    /// Renew `agent`'s claim on a request; `false` when it no longer holds
    /// it (canceled, or kicked and claimed by another agent).
    pub async fn refresh(&self, id: u64, agent: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(self.db.sql(
            "UPDATE RMS_Requests SET ClaimedAt = ? WHERE RequestID = ? AND Status = 'Assigned' AND ClaimedBy = ?",
        ))
        .bind(now)
        .bind(db_id(id))
        .bind(agent.to_string())
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Write back what an agent did with a request it holds: the request's,
    /// operations' and files' states, errors, attempts and back-off. Returns
    /// `false` (and writes nothing) when the agent no longer holds it — the
    /// request was canceled, or kicked and claimed again.
    pub async fn save(&self, r: &Request, agent: &str, now: i64) -> Result<bool> {
        retry_deadlocks(DEADLOCK_TRIES, RmsError::sql, || {
            self.try_save(r, agent, now)
        })
        .await
    }

    async fn try_save(&self, r: &Request, agent: &str, now: i64) -> Result<bool> {
        let mut tx = self.db.pool().begin().await?;
        let done = sqlx::query(self.db.sql(
            "UPDATE RMS_Requests SET Status = ?, Error = ?, NotBefore = ?, LastUpdate = ?, \
             ClaimedBy = '', ClaimedAt = 0 WHERE RequestID = ? AND Status = 'Assigned' AND ClaimedBy = ?",
        ))
        .bind(r.status.as_str())
        .bind(r.error.clone())
        .bind(r.not_before)
        .bind(now)
        .bind(db_id(r.id))
        .bind(agent.to_string())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        for op in &r.operations {
            sqlx::query(self.db.sql(
                "UPDATE RMS_Operations SET Status = ?, Error = ?, LastUpdate = ? \
                 WHERE OperationID = ? AND RequestID = ?",
            ))
            .bind(op.status.as_str())
            .bind(op.error.clone())
            .bind(now)
            .bind(db_id(op.id))
            .bind(db_id(r.id))
            .execute(&mut *tx)
            .await?;
            for f in &op.files {
                sqlx::query(self.db.sql(
                    "UPDATE RMS_Files SET Status = ?, Attempt = ?, Error = ?, PFN = ? \
                     WHERE FileID = ? AND OperationID = ?",
                ))
                .bind(f.status.as_str())
                .bind(i64::from(f.attempt))
                .bind(f.error.clone())
                .bind(f.pfn.clone())
                .bind(db_id(f.id))
                .bind(db_id(op.id))
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Requests an agent has held since before `before` (it died) go back
    /// to Waiting (DIRAC's CleanReqDBAgent "kick"). Returns how many.
    pub async fn kick(&self, before: i64, now: i64) -> Result<u64> {
        let done = sqlx::query(self.db.sql(
            "UPDATE RMS_Requests SET Status = 'Waiting', ClaimedBy = '', ClaimedAt = 0, LastUpdate = ? \
             WHERE Status = 'Assigned' AND ClaimedAt < ?",
        ))
        .bind(now)
        .bind(before)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Delete up to `limit` requests in `statuses` last updated before
    /// `before`. Returns how many.
    pub async fn clean(&self, statuses: &[ReqStatus], before: i64, limit: u64) -> Result<u64> {
        if statuses.iter().any(|s| !s.is_final()) {
            return Err(RmsError::InvalidArgument(
                "only final requests are cleaned".into(),
            ));
        }
        if statuses.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "SELECT RequestID FROM RMS_Requests WHERE Status IN ({}) AND LastUpdate < ? \
             ORDER BY LastUpdate LIMIT ?",
            list_placeholders(statuses.len())
        );
        let mut q = sqlx::query_scalar(self.db.sql_dynamic(sql));
        for s in statuses {
            q = q.bind(s.as_str());
        }
        let old: Vec<i64> = q
            .bind(before)
            .bind(db_id(limit))
            .fetch_all(self.db.pool())
            .await?;
        let ids: Vec<u64> = old.into_iter().map(id).collect();
        let deleted = self.delete(&ids).await?;
        Ok(deleted.values().filter(|d| **d).count() as u64)
    }
}

fn request_row(row: &sqlx::any::AnyRow) -> Result<Request> {
    let status: String = row.try_get(6)?;
    Ok(Request {
        id: id(row.try_get(0)?),
        name: row.try_get(1)?,
        owner: row.try_get(2)?,
        owner_group: row.try_get(3)?,
        vo: row.try_get(4)?,
        job_id: id(row.try_get(5)?),
        status: ReqStatus::parse(&status).ok_or_else(|| corrupt("request status", &status))?,
        error: row.try_get(7)?,
        source_component: row.try_get(8)?,
        operations: Vec::new(),
        creation_time: row.try_get(9)?,
        submit_time: row.try_get(10)?,
        last_update: row.try_get(11)?,
        not_before: row.try_get(12)?,
    })
}

fn operation_row(row: &sqlx::any::AnyRow) -> Result<(u64, Operation)> {
    let status: String = row.try_get(3)?;
    let source: String = row.try_get(5)?;
    let target: String = row.try_get(6)?;
    Ok((
        id(row.try_get(1)?),
        Operation {
            id: id(row.try_get(0)?),
            kind: row.try_get(2)?,
            status: OpStatus::parse(&status).ok_or_else(|| corrupt("operation status", &status))?,
            arguments: row.try_get(4)?,
            source_se: ses(&source),
            target_se: ses(&target),
            catalog: row.try_get(7)?,
            error: row.try_get(8)?,
            files: Vec::new(),
            creation_time: row.try_get(9)?,
            submit_time: row.try_get(10)?,
            last_update: row.try_get(11)?,
        },
    ))
}

fn file_row(row: &sqlx::any::AnyRow) -> Result<(u64, File)> {
    let status: String = row.try_get(8)?;
    Ok((
        id(row.try_get(1)?),
        File {
            id: id(row.try_get(0)?),
            lfn: row.try_get(2)?,
            pfn: row.try_get(3)?,
            guid: row.try_get(4)?,
            size: id(row.try_get(5)?),
            checksum: row.try_get(6)?,
            checksum_type: row.try_get(7)?,
            status: FileStatus::parse(&status).ok_or_else(|| corrupt("file status", &status))?,
            attempt: u32::try_from(row.try_get::<i64, _>(9)?).unwrap_or(0),
            error: row.try_get(10)?,
        },
    ))
}
