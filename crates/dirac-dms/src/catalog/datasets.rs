//! Datasets (a named query bound to a directory, dynamic or frozen into a
//! file list) and file ancestry (a transitive closure with depths, so
//! "ancestors to any depth" is one indexed query).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use dirac_core::db::{list_placeholders, values_placeholders};
use sqlx::Row as _;

use super::meta::Compiled;
use super::{Catalog, GOOD, MAX_IN, MAX_PARAMS, Outcome, hash, now, sum_u64};
use crate::error::{DmsError, Result};
use crate::lfn::Lfn;
use crate::perms::{Caller, Perm, Want};

pub const DYNAMIC: &str = "Dynamic";
pub const FROZEN: &str = "Frozen";

#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub id: i64,
    pub name: String,
    pub path: String,
    pub query: String,
    pub status: String,
    pub owner: String,
    pub group: String,
    pub files: u64,
    pub size: u64,
    pub ctime: i64,
}

const DATASET_COLUMNS: &str =
    "DatasetID, Name, Path, Query, Status, Owner, OwnerGroup, Files, Size, CreationTime";

fn dataset_row(r: &sqlx::any::AnyRow) -> std::result::Result<Dataset, sqlx::Error> {
    Ok(Dataset {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        path: r.try_get(2)?,
        query: r.try_get(3)?,
        status: r.try_get(4)?,
        owner: r.try_get(5)?,
        group: r.try_get(6)?,
        files: u64::try_from(r.try_get::<i64, _>(7)?).unwrap_or(0),
        size: u64::try_from(r.try_get::<i64, _>(8)?).unwrap_or(0),
        ctime: r.try_get(9)?,
    })
}

impl Catalog {
    /// Files and bytes a query matches below `root`.
    async fn count(&self, root: i64, query: Option<&Compiled>) -> Result<(u64, u64)> {
        let cond = query
            .map(|c| format!(" AND ({})", c.sql))
            .unwrap_or_default();
        let sql = format!(
            "SELECT {}, {} FROM FC_Files f JOIN FC_DirClosure c ON c.Descendant = f.DirID \
             WHERE c.Ancestor = ? AND f.Status = ?{cond}",
            self.sum("1"),
            self.sum("f.Size")
        );
        let mut q = sqlx::query(self.db.sql_dynamic(sql)).bind(root).bind(GOOD);
        if let Some(c) = query {
            for b in &c.binds {
                q = b.bind(q);
            }
        }
        let r = q.fetch_one(self.db.pool()).await?;
        Ok((sum_u64(&r, 0)?, sum_u64(&r, 1)?))
    }

    /// Define a dataset: `name` in the catalog namespace (its parent must be
    /// a directory the caller may write), the directory it searches, the
    /// query. It starts dynamic.
    pub async fn add_dataset(
        &self,
        caller: &Caller,
        name: &str,
        path: &str,
        query: &str,
    ) -> Result<Dataset> {
        let n = Lfn::parse(name).map_err(DmsError::InvalidArgument)?;
        caller.check_vo(&n)?;
        let parent = n.parent().ok_or_else(|| {
            DmsError::InvalidArgument(format!("{n}: a dataset name needs a directory"))
        })?;
        let pdir = self
            .dir(&parent)
            .await?
            .ok_or_else(|| DmsError::NotFound(format!("{parent}: no such directory")))?;
        pdir.perm.check(caller, Want::Write, parent.as_str())?;
        let root = self.readable_dir(caller, path).await?;
        let compiled = self.compile(caller, query).await?;
        let (files, size) = self.count(root.id, compiled.as_ref()).await?;
        let id = i64::try_from(self.db.allocate_ids("FC_Sequences", "Datasets", 1).await?)
            .map_err(|_| DmsError::Internal("dataset ids exhausted".into()))?;
        let t = now();
        let done = sqlx::query(self.db.sql(
            "INSERT INTO FC_Datasets (DatasetID, Name, NameHash, VO, Path, Query, Status, Owner, OwnerGroup, \
             CreationTime, Files, Size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(id)
        .bind(n.to_string())
        .bind(hash(n.as_str()))
        .bind(caller.vo.clone())
        .bind(root.path.clone())
        .bind(query.to_string())
        .bind(DYNAMIC)
        .bind(caller.username.clone())
        .bind(caller.group.clone())
        .bind(t)
        .bind(i64::try_from(files).unwrap_or(i64::MAX))
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .execute(self.db.pool())
        .await;
        match done {
            Ok(_) => {}
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                return Err(DmsError::AlreadyExists(format!("dataset {n} exists")));
            }
            Err(e) => return Err(e.into()),
        }
        self.dataset(caller, name).await
    }

    /// A dataset of the caller's VO.
    pub async fn dataset(&self, caller: &Caller, name: &str) -> Result<Dataset> {
        let n = Lfn::parse(name).map_err(DmsError::InvalidArgument)?;
        caller.check_vo(&n)?;
        let sql = format!("SELECT {DATASET_COLUMNS} FROM FC_Datasets WHERE NameHash = ?");
        let row = sqlx::query(self.db.sql_dynamic(sql))
            .bind(hash(n.as_str()))
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| DmsError::NotFound(format!("no dataset {n}")))?;
        Ok(dataset_row(&row)?)
    }

    fn check_owner(caller: &Caller, d: &Dataset) -> Result<()> {
        let perm = Perm {
            owner: d.owner.clone(),
            group: d.group.clone(),
            mode: 0o755,
        };
        if perm.allows(caller, Want::Write) {
            Ok(())
        } else {
            Err(DmsError::PermissionDenied(format!(
                "dataset {} belongs to {}",
                d.name, d.owner
            )))
        }
    }

    /// Freeze a dataset: its current files become its fixed list.
    pub async fn freeze_dataset(&self, caller: &Caller, name: &str) -> Result<Dataset> {
        let d = self.dataset(caller, name).await?;
        Self::check_owner(caller, &d)?;
        if d.status == FROZEN {
            return Ok(d);
        }
        let root = self.readable_dir(caller, &d.path).await?;
        let compiled = self.compile(caller, &d.query).await?;
        let mut ids = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .find_page(root.id, compiled.as_ref(), after, 10_000)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.0;
            ids.extend(page.into_iter().map(|(id, _)| id));
        }
        let (files, size) = self.count(root.id, compiled.as_ref()).await?;
        let mut tx = self.db.pool().begin().await?;
        sqlx::query(
            self.db
                .sql("DELETE FROM FC_DatasetFiles WHERE DatasetID = ?"),
        )
        .bind(d.id)
        .execute(&mut *tx)
        .await?;
        for chunk in ids.chunks(MAX_PARAMS / 2) {
            let sql = format!(
                "INSERT INTO FC_DatasetFiles (DatasetID, FileID) VALUES {}",
                values_placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for id in chunk {
                q = q.bind(d.id).bind(*id);
            }
            q.execute(&mut *tx).await?;
        }
        self.set_state(&mut tx, d.id, FROZEN, files, size).await?;
        tx.commit().await?;
        self.dataset(caller, name).await
    }

    async fn set_state(
        &self,
        tx: &mut sqlx::AnyConnection,
        id: i64,
        status: &str,
        files: u64,
        size: u64,
    ) -> Result<()> {
        sqlx::query(
            self.db
                .sql("UPDATE FC_Datasets SET Status = ?, Files = ?, Size = ? WHERE DatasetID = ?"),
        )
        .bind(status.to_string())
        .bind(i64::try_from(files).unwrap_or(i64::MAX))
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Release a frozen dataset: its query runs again each time.
    pub async fn release_dataset(&self, caller: &Caller, name: &str) -> Result<Dataset> {
        let d = self.dataset(caller, name).await?;
        Self::check_owner(caller, &d)?;
        let root = self.readable_dir(caller, &d.path).await?;
        let compiled = self.compile(caller, &d.query).await?;
        let (files, size) = self.count(root.id, compiled.as_ref()).await?;
        let mut tx = self.db.pool().begin().await?;
        sqlx::query(
            self.db
                .sql("DELETE FROM FC_DatasetFiles WHERE DatasetID = ?"),
        )
        .bind(d.id)
        .execute(&mut *tx)
        .await?;
        self.set_state(&mut tx, d.id, DYNAMIC, files, size).await?;
        tx.commit().await?;
        self.dataset(caller, name).await
    }

    pub async fn remove_dataset(&self, caller: &Caller, name: &str) -> Result<()> {
        let d = self.dataset(caller, name).await?;
        Self::check_owner(caller, &d)?;
        let mut tx = self.db.pool().begin().await?;
        self.delete_by_id(
            &mut tx,
            &[
                "DELETE FROM FC_DatasetFiles WHERE DatasetID = ?",
                "DELETE FROM FC_Datasets WHERE DatasetID = ?",
            ],
            d.id,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Datasets of the caller's VO named under `path`.
    pub async fn datasets(&self, caller: &Caller, path: &str) -> Result<Vec<Dataset>> {
        let under = Lfn::parse(path).map_err(DmsError::InvalidArgument)?;
        caller.check_vo(&under)?;
        let sql =
            format!("SELECT {DATASET_COLUMNS} FROM FC_Datasets WHERE VO = ? ORDER BY DatasetID");
        let rows = sqlx::query(self.db.sql_dynamic(sql))
            .bind(caller.vo.clone())
            .fetch_all(self.db.pool())
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let d = dataset_row(&r)?;
            if Lfn::parse(&d.name).is_ok_and(|n| under.contains(&n)) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// One page of a dataset's files: (file id, LFN) after `after`.
    pub async fn dataset_page(
        &self,
        caller: &Caller,
        d: &Dataset,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>> {
        if d.status == FROZEN {
            let rows = sqlx::query(self.db.sql(
                "SELECT f.FileID, d.Path, f.Name FROM FC_DatasetFiles s JOIN FC_Files f ON f.FileID = s.FileID \
                 JOIN FC_Dirs d ON d.DirID = f.DirID WHERE s.DatasetID = ? AND f.FileID > ? ORDER BY f.FileID LIMIT ?",
            ))
            .bind(d.id)
            .bind(after)
            .bind(i64::try_from(limit).unwrap_or(1000))
            .fetch_all(self.db.pool())
            .await?;
            return rows
                .iter()
                .map(|r| {
                    let (id, dir, name): (i64, String, String) =
                        (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                    Ok((id, format!("{dir}/{name}")))
                })
                .collect();
        }
        let root = self.readable_dir(caller, &d.path).await?;
        let compiled = self.compile(caller, &d.query).await?;
        self.find_page(root.id, compiled.as_ref(), after, limit)
            .await
    }

    // ---- ancestry ----

    /// Record that each file was made from its ancestors. The closure is
    /// kept: a file's ancestors' ancestors become its own at depth + 1.
    pub async fn add_ancestors(
        &self,
        caller: &Caller,
        links: &[(String, Vec<String>)],
    ) -> Result<Outcome> {
        let mut names: BTreeSet<String> = BTreeSet::new();
        for (l, a) in links {
            names.insert(l.clone());
            names.extend(a.iter().cloned());
        }
        let names: Vec<String> = names.into_iter().collect();
        let (found, failed) = self.lookup_files(caller, &names, Want::Read).await?;
        let mut out = Outcome::new();
        let ids: Vec<i64> = found.values().map(|f| f.id).collect();
        let known = self.ancestor_rows(&ids, false).await?;
        let mut rows: BTreeMap<(i64, i64), i64> = BTreeMap::new();
        for (lfn, ancestors) in links {
            let r = (|| -> Result<()> {
                let f = found.get(lfn).ok_or_else(|| {
                    failed.get(lfn).map_or_else(
                        || DmsError::NotFound(format!("{lfn}: no such file")),
                        |e| DmsError::FailedPrecondition(e.to_string()),
                    )
                })?;
                f.perm.check(caller, Want::Write, lfn)?;
                for a in ancestors {
                    let af = found.get(a).ok_or_else(|| {
                        DmsError::FailedPrecondition(format!(
                            "{lfn}: ancestor {a}: {}",
                            failed
                                .get(a)
                                .map_or_else(|| "no such file".to_string(), ToString::to_string)
                        ))
                    })?;
                    if af.id == f.id
                        || known
                            .get(&af.id)
                            .is_some_and(|up| up.iter().any(|(x, _)| *x == f.id))
                    {
                        return Err(DmsError::InvalidArgument(format!(
                            "{lfn}: {a} would be its own ancestor"
                        )));
                    }
                }
                Ok(())
            })();
            if r.is_ok()
                && let Some(f) = found.get(lfn)
            {
                for a in ancestors {
                    let af = &found[a];
                    let e = rows.entry((f.id, af.id)).or_insert(1);
                    *e = (*e).min(1);
                    for (up, depth) in known.get(&af.id).map(Vec::as_slice).unwrap_or_default() {
                        let e = rows.entry((f.id, *up)).or_insert(depth + 1);
                        *e = (*e).min(depth + 1);
                    }
                }
            }
            out.insert(lfn.clone(), r);
        }
        // Pairs already recorded keep their depth.
        let mut present: BTreeSet<(i64, i64)> = BTreeSet::new();
        for (f, ups) in &known {
            for (a, _) in ups {
                present.insert((*f, *a));
            }
        }
        let new: Vec<((i64, i64), i64)> = rows
            .into_iter()
            .filter(|(k, _)| !present.contains(k))
            .collect();
        let mut tx = self.db.pool().begin().await?;
        for chunk in new.chunks(MAX_PARAMS / 3) {
            let sql = format!(
                "INSERT INTO FC_Ancestors (FileID, AncestorID, Depth) VALUES {}",
                values_placeholders(3, chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for ((f, a), d) in chunk {
                q = q
                    .bind(*f)
                    .bind(*a)
                    .bind(i32::try_from(*d).unwrap_or(i32::MAX));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    /// (related file id, depth) of each file: ancestors, or descendants.
    async fn ancestor_rows(
        &self,
        ids: &[i64],
        descendants: bool,
    ) -> Result<HashMap<i64, Vec<(i64, i64)>>> {
        let (key, other) = if descendants {
            ("AncestorID", "FileID")
        } else {
            ("FileID", "AncestorID")
        };
        let mut out: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for chunk in ids.chunks(MAX_IN) {
            let sql = format!(
                "SELECT {key}, {other}, Depth FROM FC_Ancestors WHERE {key} IN ({}) ORDER BY Depth",
                list_placeholders(chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(self.db.pool()).await? {
                let depth: i32 = r.try_get(2)?;
                out.entry(r.try_get(0)?)
                    .or_default()
                    .push((r.try_get(1)?, i64::from(depth)));
            }
        }
        Ok(out)
    }

    /// Ancestors (or descendants) of each file up to `depth` (0: any).
    pub async fn lineage(
        &self,
        caller: &Caller,
        lfns: &[String],
        depth: u32,
        descendants: bool,
    ) -> Result<(
        BTreeMap<String, Vec<(String, u32)>>,
        BTreeMap<String, DmsError>,
    )> {
        let (found, failed) = self.lookup_files(caller, lfns, Want::Read).await?;
        let ids: Vec<i64> = found.values().map(|f| f.id).collect();
        let rows = self.ancestor_rows(&ids, descendants).await?;
        let related: Vec<i64> = rows
            .values()
            .flatten()
            .map(|(id, _)| *id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let names = self.file_names(&related).await?;
        let mut out = BTreeMap::new();
        for (input, f) in found {
            let list = rows
                .get(&f.id)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter(|(_, d)| depth == 0 || *d <= i64::from(depth))
                .filter_map(|(id, d)| {
                    Some((
                        names.get(id)?.clone(),
                        u32::try_from(*d).unwrap_or(u32::MAX),
                    ))
                })
                .collect();
            out.insert(input, list);
        }
        Ok((out, failed))
    }

    async fn file_names(&self, ids: &[i64]) -> Result<HashMap<i64, String>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(MAX_IN) {
            let sql = format!(
                "SELECT f.FileID, d.Path, f.Name FROM FC_Files f JOIN FC_Dirs d ON d.DirID = f.DirID WHERE f.FileID IN ({})",
                list_placeholders(chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(self.db.pool()).await? {
                let (id, dir, name): (i64, String, String) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                out.insert(id, format!("{dir}/{name}"));
            }
        }
        Ok(out)
    }
}
