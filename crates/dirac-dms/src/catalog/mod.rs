//! The FileCatalogDB repository: the namespace (directories with their
//! closure table), files, replicas and the usage counters.
//!
//! Every bulk write is planned from reads first (which directories exist,
//! which files, whose permission allows what), then applied in one
//! transaction of multi-row INSERTs with ids reserved beforehand. A
//! concurrent writer that wins a race makes the transaction fail on a
//! unique index; the operation is then planned again from what is there
//! now, so no file is half-registered and no request is lost.
//!
//! [`meta`] adds typed metadata and the query language's SQL, [`datasets`]
//! datasets and ancestry.

pub mod datasets;
pub mod meta;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use dirac_core::config::DiracConfig;
use dirac_core::db::{Backend, Db, list_placeholders, values_placeholders};
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;

use crate::error::{DmsError, Result};
use crate::lfn::{Lfn, clip};
use crate::perms::{
    Caller, DIR_MODE, FILE_MODE, Perm, SYSTEM_MODE, SYSTEM_OWNER, Want, check_mode,
};

/// Largest number of bound parameters in one statement.
const MAX_PARAMS: usize = 8000;
/// Longest IN list: MariaDB turns longer ones (1000 by default) into a
/// derived table, and then scans the whole table instead of the index.
const MAX_IN: usize = 500;
/// Largest number of items in one bulk call.
pub const MAX_BULK: usize = 100_000;
/// Visible status of files and replicas.
pub const GOOD: &str = "AprioriGood";
/// Times an operation is planned again after losing a race.
const ATTEMPTS: usize = 4;

/// Outcome per path of a bulk call (DIRAC's Successful/Failed).
pub type Outcome = BTreeMap<String, std::result::Result<(), DmsError>>;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(crate) fn hash(path: &str) -> String {
    format!("{:x}", Sha256::digest(path.as_bytes()))
}

/// A file's lookup key: 64 bits of the SHA-256 of its LFN. Not unique
/// (rows found by it are checked by name); one IN list of integers is what
/// every backend plans fastest for bulk lookups.
pub(crate) fn file_key(lfn: &str) -> i64 {
    let d = Sha256::digest(lfn.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| DmsError::InvalidArgument(format!("{v} is too large")))
}

/// Lost a race: a unique index met a concurrent insert, or the database
/// chose this transaction as a deadlock victim (MariaDB 1213, PostgreSQL
/// 40P01/40001). Planning again from what is there now is safe.
fn retryable(e: &DmsError) -> bool {
    match e {
        DmsError::Db(e @ sqlx::Error::Database(d)) => {
            d.is_unique_violation() || dirac_core::db::is_deadlock(e)
        }
        _ => false,
    }
}

/// Run a planned write again while it loses races, a little later each
/// time.
pub(crate) async fn with_retry<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    for n in 1..=ATTEMPTS {
        match attempt().await {
            Err(e) if retryable(&e) && n < ATTEMPTS => {
                tokio::time::sleep(std::time::Duration::from_millis(
                    rand::random_range(5..50) * n as u64,
                ))
                .await;
            }
            other => return other,
        }
    }
    Err(DmsError::Unavailable(
        "the catalog is too busy; retry".into(),
    ))
}

/// A directory row.
#[derive(Debug, Clone)]
pub struct DirRow {
    pub id: i64,
    pub path: String,
    pub perm: Perm,
    pub ctime: i64,
    pub mtime: i64,
}

/// A file row (without replicas).
#[derive(Debug, Clone)]
pub struct FileRow {
    pub id: i64,
    pub dir_id: i64,
    pub lfn: String,
    pub size: i64,
    pub checksum: String,
    pub checksum_type: String,
    pub guid: String,
    pub perm: Perm,
    pub status: String,
    pub ctime: i64,
    pub mtime: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaRow {
    pub se: String,
    pub pfn: Option<String>,
    pub status: String,
}

/// A file to register.
#[derive(Debug, Clone, Default)]
pub struct NewFile {
    pub lfn: String,
    pub size: u64,
    pub checksum: String,
    pub checksum_type: String,
    pub guid: String,
    pub mode: u32,
    pub replicas: Vec<(String, String)>,
    /// Set by the catalog when it made the GUID (128 random bits): such a
    /// GUID is not looked up before the insert, the unique index stands
    /// guard.
    pub guid_generated: bool,
}

/// A listing entry.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir(DirRow),
    File(FileRow, Vec<ReplicaRow>),
}

/// Where a streamed listing continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    Dirs(i64),
    /// Files of one directory after this file id.
    Files(i64),
    /// Files of a subtree: directories from `dir` on, in id order, and in
    /// `dir` the files after `file`.
    TreeFiles {
        dir: i64,
        file: i64,
    },
    Done,
}

/// Usage of one directory subtree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub logical_size: u64,
    pub logical_files: u64,
    pub directories: u64,
    pub per_se: BTreeMap<String, (u64, u64)>,
}

/// One drifted counter found by a repair.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    pub path: String,
    pub se: String,
    pub was: (u64, u64),
    pub now: (u64, u64),
}

pub struct Catalog {
    db: Db,
    config: Arc<DiracConfig>,
    /// Rows registered since the last ANALYZE (PostgreSQL), and the table
    /// size then: bulk loads outrun autovacuum, and a planner that still
    /// thinks the tables empty scans them for every bulk lookup.
    since_analyze: Arc<std::sync::atomic::AtomicU64>,
    analyzed: Arc<std::sync::atomic::AtomicU64>,
}

/// Rows registered before statistics are refreshed, at the least.
const ANALYZE_EVERY: u64 = 20_000;

const DIR_COLUMNS: &str = "DirID, Path, Owner, OwnerGroup, Mode, CreationTime, ModificationTime";
const FILE_COLUMNS: &str = "f.FileID, f.DirID, d.Path, f.Name, f.Size, f.Checksum, f.ChecksumType, f.GUID, \
                            f.Owner, f.OwnerGroup, f.Mode, f.Status, f.CreationTime, f.ModificationTime";

fn dir_row(r: &sqlx::any::AnyRow) -> std::result::Result<DirRow, sqlx::Error> {
    Ok(DirRow {
        id: r.try_get(0)?,
        path: r.try_get(1)?,
        perm: Perm {
            owner: r.try_get(2)?,
            group: r.try_get(3)?,
            mode: u32::try_from(r.try_get::<i32, _>(4)?).unwrap_or(0),
        },
        ctime: r.try_get(5)?,
        mtime: r.try_get(6)?,
    })
}

fn file_row(r: &sqlx::any::AnyRow) -> std::result::Result<FileRow, sqlx::Error> {
    let dir: String = r.try_get(2)?;
    let name: String = r.try_get(3)?;
    Ok(FileRow {
        id: r.try_get(0)?,
        dir_id: r.try_get(1)?,
        lfn: format!("{dir}/{name}"),
        size: r.try_get(4)?,
        checksum: r.try_get(5)?,
        checksum_type: r.try_get(6)?,
        guid: r.try_get(7)?,
        perm: Perm {
            owner: r.try_get(8)?,
            group: r.try_get(9)?,
            mode: u32::try_from(r.try_get::<i32, _>(10)?).unwrap_or(0),
        },
        status: r.try_get(11)?,
        ctime: r.try_get(12)?,
        mtime: r.try_get(13)?,
    })
}

/// A checked checksum: lowercase hex, Adler32 padded to 8 digits.
fn normalise_checksum(value: &str, kind: &str) -> std::result::Result<(String, String), String> {
    let kind = match kind.to_ascii_lowercase().as_str() {
        "" | "adler32" | "ad" => "Adler32",
        "md5" => "MD5",
        other => {
            return Err(format!(
                "checksum type '{}' is not Adler32 or MD5",
                clip(other)
            ));
        }
    };
    let v = value.trim().to_ascii_lowercase();
    if v.is_empty() {
        return Err("a checksum is required".into());
    }
    if !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("checksum '{}' is not hexadecimal", clip(value)));
    }
    let v = match kind {
        "Adler32" if v.len() <= 8 => format!("{v:0>8}"),
        "MD5" if v.len() == 32 => v,
        _ => return Err(format!("checksum '{}' is not a valid {kind}", clip(value))),
    };
    Ok((v, kind.to_string()))
}

fn new_guid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn check_guid(g: &str) -> std::result::Result<(), String> {
    if g.len() > 64 || !g.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!(
            "GUID '{}' is not 1-64 letters, digits or dashes",
            clip(g)
        ));
    }
    Ok(())
}

/// Paths checked for the caller: the valid ones of its VO, and why the
/// others are refused.
pub(crate) fn parse_paths(
    caller: &Caller,
    paths: &[String],
) -> (Vec<(String, Lfn)>, BTreeMap<String, DmsError>) {
    let mut parsed = Vec::new();
    let mut failed = BTreeMap::new();
    for p in paths {
        match Lfn::parse(p)
            .map_err(DmsError::InvalidArgument)
            .and_then(|l| caller.check_vo(&l).map(|()| l))
        {
            Ok(l) => parsed.push((p.clone(), l)),
            Err(e) => {
                failed.insert(p.clone(), e);
            }
        }
    }
    (parsed, failed)
}

/// One directory the catalog is about to create.
#[derive(Debug, Clone)]
struct PlannedDir {
    path: Lfn,
    perm: Perm,
}

impl Catalog {
    /// Migrate the FileCatalogDB and open it.
    pub async fn open(db: Db, config: Arc<DiracConfig>) -> Result<Self> {
        db.migrate("FileCatalogDB", crate::schema::MIGRATIONS)
            .await?;
        Ok(Catalog {
            db,
            config,
            since_analyze: Arc::default(),
            analyzed: Arc::default(),
        })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// An index hint for MariaDB, whose optimizer turns bulk lookups into
    /// table scans while a freshly filled table's statistics are stale.
    pub(crate) fn force(&self, index: &str) -> String {
        if self.db.backend() == Backend::MySql {
            format!(" FORCE INDEX ({index})")
        } else {
            String::new()
        }
    }

    /// `STRAIGHT_JOIN ` for MariaDB: the files drive the join, so rows come
    /// in index order and a LIMIT stops the scan (instead of sorting every
    /// match of the directories first).
    pub(crate) fn straight(&self) -> &'static str {
        if self.db.backend() == Backend::MySql {
            "STRAIGHT_JOIN "
        } else {
            ""
        }
    }

    /// Run each `DELETE … WHERE <key> = ?` with `id`.
    pub(crate) async fn delete_by_id(
        &self,
        tx: &mut sqlx::AnyConnection,
        statements: &[&'static str],
        id: i64,
    ) -> Result<()> {
        for sql in statements {
            sqlx::query(self.db.sql(sql))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    /// `SUM(expr)` as a BIGINT on every backend (MariaDB and PostgreSQL
    /// answer DECIMAL, which the Any driver does not read), 0 when empty.
    pub(crate) fn sum(&self, expr: &str) -> String {
        let int = if self.db.backend() == Backend::MySql {
            "SIGNED"
        } else {
            "BIGINT"
        };
        format!("CAST(COALESCE(SUM({expr}), 0) AS {int})")
    }

    pub fn config(&self) -> &DiracConfig {
        &self.config
    }

    fn check_se(&self, se: &str) -> std::result::Result<(), String> {
        if self.config.resources.storage_elements.contains_key(se) {
            Ok(())
        } else {
            Err(format!("unknown storage element '{}'", clip(se)))
        }
    }

    // ---- reads shared by every operation ----

    /// Existing directories among `paths`, by path.
    pub async fn dirs(&self, paths: &[&str]) -> Result<HashMap<String, DirRow>> {
        let mut out = HashMap::new();
        let unique: BTreeSet<&str> = paths.iter().copied().collect();
        let unique: Vec<&str> = unique.into_iter().collect();
        for chunk in unique.chunks(MAX_IN) {
            let sql = format!(
                "SELECT {DIR_COLUMNS} FROM FC_Dirs{} WHERE PathHash IN ({})",
                self.force("FC_DirsPath"),
                list_placeholders(chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for p in chunk {
                q = q.bind(hash(p));
            }
            for r in q.fetch_all(self.db.pool()).await? {
                let d = dir_row(&r)?;
                out.insert(d.path.clone(), d);
            }
        }
        Ok(out)
    }

    pub async fn dir(&self, path: &Lfn) -> Result<Option<DirRow>> {
        Ok(self.dirs(&[path.as_str()]).await?.remove(path.as_str()))
    }

    /// Existing files among `lfns` (whose parents are in `dirs`), by LFN.
    /// Existing files among `lfns`, by LFN: one indexed IN list of
    /// 64-bit keys, each row checked against the LFN asked for.
    async fn files_in(&self, lfns: &[&Lfn]) -> Result<HashMap<String, FileRow>> {
        let wanted: BTreeSet<&str> = lfns.iter().map(|l| l.as_str()).collect();
        let lookup: Vec<i64> = lfns
            .iter()
            .map(|l| file_key(l.as_str()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut out = HashMap::new();
        for chunk in lookup.chunks(MAX_IN) {
            let sql = format!(
                "SELECT {FILE_COLUMNS} FROM FC_Files f{} JOIN FC_Dirs d ON d.DirID = f.DirID \
                 WHERE f.FileKey IN ({})",
                self.force("FC_FilesKey"),
                list_placeholders(chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for k in chunk {
                q = q.bind(*k);
            }
            for r in q.fetch_all(self.db.pool()).await? {
                let f = file_row(&r)?;
                // A key shared by another file is not this one.
                if wanted.contains(f.lfn.as_str()) {
                    out.insert(f.lfn.clone(), f);
                }
            }
        }
        Ok(out)
    }

    /// Replicas of the files `ids`.
    pub async fn replicas(
        &self,
        ids: &[i64],
        all_status: bool,
    ) -> Result<HashMap<i64, Vec<ReplicaRow>>> {
        let mut out: HashMap<i64, Vec<ReplicaRow>> = HashMap::new();
        for chunk in ids.chunks(MAX_IN) {
            let sql = format!(
                "SELECT FileID, SE, PFN, Status FROM FC_Replicas{} WHERE FileID IN ({}) ORDER BY FileID, SE",
                self.force("PRIMARY"),
                list_placeholders(chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(self.db.pool()).await? {
                let status: String = r.try_get(3)?;
                if !all_status && status != GOOD {
                    continue;
                }
                out.entry(r.try_get(0)?).or_default().push(ReplicaRow {
                    se: r.try_get(1)?,
                    pfn: r.try_get::<Option<String>, _>(2)?.filter(|p| !p.is_empty()),
                    status,
                });
            }
        }
        Ok(out)
    }

    // ---- directories ----

    /// Plan the directories needed so that every path of `wanted` exists:
    /// the missing ones in creation order, or why one cannot be made.
    fn plan_dirs(
        caller: &Caller,
        wanted: &[Lfn],
        existing: &HashMap<String, DirRow>,
        files_in_way: &BTreeSet<String>,
    ) -> (Vec<PlannedDir>, HashMap<String, DmsError>) {
        let home = caller.home();
        let mut planned: BTreeMap<String, PlannedDir> = BTreeMap::new();
        let mut failed: HashMap<String, DmsError> = HashMap::new();
        let mut chains: Vec<Vec<Lfn>> = wanted
            .iter()
            .map(|w| {
                let mut chain = w.ancestors();
                chain.push(w.clone());
                chain
            })
            .collect();
        chains.sort_by_key(|c| c.len());
        for chain in chains {
            let target = chain.last().map(|l| l.to_string()).unwrap_or_default();
            let mut parent: Option<Perm> = None;
            for dir in &chain {
                let key = dir.as_str();
                if let Some(e) = failed.get(key) {
                    let e = DmsError::FailedPrecondition(format!("cannot make {target}: {e}"));
                    failed.insert(target.clone(), e);
                    break;
                }
                if let Some(d) = existing.get(key) {
                    parent = Some(d.perm.clone());
                    continue;
                }
                if let Some(p) = planned.get(key) {
                    parent = Some(p.perm.clone());
                    continue;
                }
                if files_in_way.contains(key) {
                    failed.insert(
                        key.to_string(),
                        DmsError::AlreadyExists(format!("{key} is a file")),
                    );
                    if key != target {
                        failed.insert(
                            target.clone(),
                            DmsError::FailedPrecondition(format!(
                                "cannot make {target}: {key} is a file"
                            )),
                        );
                    }
                    break;
                }
                let system = Perm {
                    owner: SYSTEM_OWNER.into(),
                    group: String::new(),
                    mode: SYSTEM_MODE,
                };
                // The VO root and the way to the caller's home are the
                // catalog's own; the home is the caller's.
                let perm = match (&parent, &home) {
                    (None, _) => system,
                    (_, Some(h)) if h.as_str() == key => Perm {
                        owner: caller.username.clone(),
                        group: caller.group.clone(),
                        mode: SYSTEM_MODE,
                    },
                    (_, Some(h)) if dir.contains(h) => system,
                    (Some(p), _) => {
                        if let Err(e) = p.check(
                            caller,
                            Want::Write,
                            dir.parent().as_ref().map_or("", Lfn::as_str),
                        ) {
                            failed.insert(key.to_string(), e);
                            if key != target {
                                let e = DmsError::PermissionDenied(format!(
                                    "cannot make {target}: no write access to {}",
                                    dir.parent().map(|p| p.to_string()).unwrap_or_default()
                                ));
                                failed.insert(target.clone(), e);
                            }
                            break;
                        }
                        Perm {
                            owner: caller.username.clone(),
                            group: caller.group.clone(),
                            mode: DIR_MODE,
                        }
                    }
                };
                planned.insert(
                    key.to_string(),
                    PlannedDir {
                        path: dir.clone(),
                        perm: perm.clone(),
                    },
                );
                parent = Some(perm);
            }
        }
        let mut order: Vec<PlannedDir> = planned.into_values().collect();
        order.sort_by_key(|d| (d.path.depth(), d.path.clone()));
        // A failed target must not leave its planned parents behind alone:
        // they are still fine to create (mkdir -p semantics).
        (order, failed)
    }

    /// Names among `paths` that are files (in the way of directories).
    async fn files_named(&self, paths: &[Lfn]) -> Result<BTreeSet<String>> {
        let refs: Vec<&Lfn> = paths.iter().collect();
        Ok(self.files_in(&refs).await?.into_keys().collect())
    }

    /// Insert planned directories with ids from `first`; `known` holds the
    /// ids of every existing ancestor.
    async fn insert_dirs(
        &self,
        tx: &mut sqlx::AnyConnection,
        planned: &[PlannedDir],
        first: i64,
        known: &mut HashMap<String, i64>,
    ) -> Result<()> {
        if planned.is_empty() {
            return Ok(());
        }
        let t = now();
        let mut rows = Vec::with_capacity(planned.len());
        let mut closure: Vec<(i64, i64, i64)> = Vec::new();
        for (i, d) in planned.iter().enumerate() {
            let id = first + i as i64;
            let parent_id = match d.path.parent() {
                Some(p) => *known.get(p.as_str()).ok_or_else(|| {
                    DmsError::Internal(format!("parent of {} not planned", d.path))
                })?,
                None => 0,
            };
            let mut ancestors = d.path.ancestors();
            ancestors.push(d.path.clone());
            known.insert(d.path.to_string(), id);
            let n = ancestors.len() as i64;
            for (k, a) in ancestors.iter().enumerate() {
                let aid = *known
                    .get(a.as_str())
                    .ok_or_else(|| DmsError::Internal(format!("ancestor {a} unknown")))?;
                closure.push((aid, id, n - 1 - k as i64));
            }
            rows.push((id, parent_id, d));
        }
        for chunk in rows.chunks(MAX_PARAMS / 10) {
            let sql = format!(
                "INSERT INTO FC_Dirs (DirID, ParentID, Name, Path, PathHash, Owner, OwnerGroup, Mode, \
                 CreationTime, ModificationTime) VALUES {}",
                values_placeholders(10, chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for (id, parent, d) in chunk {
                q = q
                    .bind(*id)
                    .bind(*parent)
                    .bind(d.path.name().to_string())
                    .bind(d.path.to_string())
                    .bind(hash(d.path.as_str()))
                    .bind(d.perm.owner.clone())
                    .bind(d.perm.group.clone())
                    .bind(i32::try_from(d.perm.mode).unwrap_or(0))
                    .bind(t)
                    .bind(t);
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in closure.chunks(MAX_PARAMS / 3) {
            let sql = format!(
                "INSERT INTO FC_DirClosure (Ancestor, Descendant, Depth) VALUES {}",
                values_placeholders(3, chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for (a, d, depth) in chunk {
                q = q
                    .bind(*a)
                    .bind(*d)
                    .bind(i32::try_from(*depth).unwrap_or(i32::MAX));
            }
            q.execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// Look up `wanted` and every ancestor; plan what is missing.
    async fn resolve_dirs(
        &self,
        caller: &Caller,
        wanted: &[Lfn],
    ) -> Result<(
        HashMap<String, DirRow>,
        Vec<PlannedDir>,
        HashMap<String, DmsError>,
    )> {
        self.resolve_dirs_and(caller, wanted, &[]).await
    }

    /// [`resolve_dirs`](Self::resolve_dirs), looking up the directories
    /// `also` in the same query (they are in the answer's map when they
    /// exist).
    async fn resolve_dirs_and(
        &self,
        caller: &Caller,
        wanted: &[Lfn],
        also: &[&str],
    ) -> Result<(
        HashMap<String, DirRow>,
        Vec<PlannedDir>,
        HashMap<String, DmsError>,
    )> {
        let mut all: BTreeSet<String> = BTreeSet::new();
        for w in wanted {
            all.insert(w.to_string());
            for a in w.ancestors() {
                all.insert(a.to_string());
            }
        }
        let mut refs: Vec<&str> = all.iter().map(String::as_str).collect();
        refs.extend_from_slice(also);
        let existing = self.dirs(&refs).await?;
        let missing: Vec<Lfn> = all
            .iter()
            .filter(|p| !existing.contains_key(*p))
            .filter_map(|p| Lfn::parse(p).ok())
            .collect();
        let in_way = if missing.is_empty() {
            BTreeSet::new()
        } else {
            self.files_named(&missing).await?
        };
        let (planned, failed) = Self::plan_dirs(caller, wanted, &existing, &in_way);
        Ok((existing, planned, failed))
    }

    /// Make directories (and their missing parents).
    pub async fn create_directories(&self, caller: &Caller, paths: &[String]) -> Result<Outcome> {
        let (wanted, refused) = parse_paths(caller, paths);
        let mut out: Outcome = refused.into_iter().map(|(k, e)| (k, Err(e))).collect();
        let lfns: Vec<Lfn> = wanted.iter().map(|(_, l)| l.clone()).collect();
        let mut failed = with_retry(|| async {
            let (existing, planned, failed) = self.resolve_dirs(caller, &lfns).await?;
            self.apply_dirs(&existing, &planned).await?;
            Ok(failed)
        })
        .await?;
        for (input, l) in &wanted {
            let r = match failed.remove(l.as_str()) {
                Some(e) => Err(e),
                None => Ok(()),
            };
            out.insert(input.clone(), r);
        }
        Ok(out)
    }

    async fn apply_dirs(
        &self,
        existing: &HashMap<String, DirRow>,
        planned: &[PlannedDir],
    ) -> Result<()> {
        if planned.is_empty() {
            return Ok(());
        }
        let first = i64::try_from(
            self.db
                .allocate_ids("FC_Sequences", "Dirs", planned.len() as u64)
                .await?,
        )
        .map_err(|_| DmsError::Internal("directory ids exhausted".into()))?;
        let mut known: HashMap<String, i64> =
            existing.iter().map(|(k, d)| (k.clone(), d.id)).collect();
        let mut tx = self.db.pool().begin().await?;
        self.insert_dirs(&mut tx, planned, first, &mut known)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Remove empty directories.
    pub async fn remove_directories(&self, caller: &Caller, paths: &[String]) -> Result<Outcome> {
        let mut out = Outcome::new();
        for p in paths {
            let r = self.remove_directory(caller, p).await;
            out.insert(p.clone(), r);
        }
        Ok(out)
    }

    async fn remove_directory(&self, caller: &Caller, path: &str) -> Result<()> {
        let l = Lfn::parse(path).map_err(DmsError::InvalidArgument)?;
        caller.check_vo(&l)?;
        let Some(d) = self.dir(&l).await? else {
            // Removing what is not there succeeds (DIRAC).
            return Ok(());
        };
        if let Some(parent) = l.parent() {
            if let Some(p) = self.dir(&parent).await? {
                p.perm.check(caller, Want::Write, parent.as_str())?;
            }
        } else if !caller.admin {
            return Err(DmsError::PermissionDenied(format!(
                "only a catalog administrator removes {l}"
            )));
        }
        let mut tx = self.db.pool().begin().await?;
        let children: i64 = sqlx::query_scalar(
            self.db
                .sql("SELECT COUNT(*) FROM FC_Dirs WHERE ParentID = ?"),
        )
        .bind(d.id)
        .fetch_one(&mut *tx)
        .await?;
        let files: i64 =
            sqlx::query_scalar(self.db.sql("SELECT COUNT(*) FROM FC_Files WHERE DirID = ?"))
                .bind(d.id)
                .fetch_one(&mut *tx)
                .await?;
        if children + files > 0 {
            return Err(DmsError::FailedPrecondition(format!(
                "{l} is not empty ({children} directories, {files} files)"
            )));
        }
        self.delete_by_id(
            &mut tx,
            &[
                "DELETE FROM FC_DirClosure WHERE Descendant = ?",
                "DELETE FROM FC_DirMeta WHERE DirID = ?",
                "DELETE FROM FC_DirUsage WHERE DirID = ?",
                "DELETE FROM FC_Dirs WHERE DirID = ?",
            ],
            d.id,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- files ----

    /// Register files with their replicas; missing directories are made.
    pub async fn add_files(&self, caller: &Caller, files: Vec<NewFile>) -> Result<Outcome> {
        if files.len() > MAX_BULK {
            return Err(DmsError::InvalidArgument(format!(
                "more than {MAX_BULK} files in one call"
            )));
        }
        let mut out = Outcome::new();
        let mut valid: Vec<(Lfn, NewFile)> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut guids = BTreeSet::new();
        for mut f in files {
            let key = f.lfn.clone();
            let checked = (|| -> std::result::Result<Lfn, DmsError> {
                let l = Lfn::parse(&f.lfn).map_err(DmsError::InvalidArgument)?;
                caller.check_vo(&l)?;
                if l.parent().is_none() {
                    return Err(DmsError::InvalidArgument(format!(
                        "{l} is a VO root, not a file"
                    )));
                }
                let (sum, kind) = normalise_checksum(&f.checksum, &f.checksum_type)
                    .map_err(|e| DmsError::InvalidArgument(format!("{l}: {e}")))?;
                f.checksum = sum;
                f.checksum_type = kind;
                if f.guid.is_empty() {
                    f.guid = new_guid();
                    f.guid_generated = true;
                }
                check_guid(&f.guid).map_err(DmsError::InvalidArgument)?;
                f.mode = if f.mode == 0 {
                    FILE_MODE
                } else {
                    check_mode(f.mode)?
                };
                to_i64(f.size)?;
                if f.replicas.is_empty() {
                    return Err(DmsError::InvalidArgument(format!(
                        "{l}: a replica (SE) is required"
                    )));
                }
                for (se, pfn) in &f.replicas {
                    self.check_se(se)
                        .map_err(|e| DmsError::InvalidArgument(format!("{l}: {e}")))?;
                    if pfn.len() > 1024 {
                        return Err(DmsError::InvalidArgument(format!(
                            "{l}: PFN longer than 1024 bytes"
                        )));
                    }
                }
                if !seen.insert(l.to_string()) {
                    return Err(DmsError::InvalidArgument(format!("{l} is listed twice")));
                }
                if !guids.insert(f.guid.clone()) {
                    return Err(DmsError::InvalidArgument(format!(
                        "{l}: GUID {} is listed twice",
                        f.guid
                    )));
                }
                Ok(l)
            })();
            match checked {
                Ok(l) => valid.push((l, f)),
                Err(e) => {
                    out.insert(key, Err(e));
                }
            }
        }
        let done = with_retry(|| self.try_add_files(caller, &valid)).await?;
        out.extend(done);
        Ok(out)
    }

    async fn try_add_files(&self, caller: &Caller, files: &[(Lfn, NewFile)]) -> Result<Outcome> {
        let mut out = Outcome::new();
        let parents: Vec<Lfn> = files
            .iter()
            .filter_map(|(l, _)| l.parent())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let lfn_strs: Vec<&str> = files.iter().map(|(l, _)| l.as_str()).collect();
        // The files' own paths ride along: one of them may be a directory.
        let (existing_dirs, planned, dir_failed) =
            self.resolve_dirs_and(caller, &parents, &lfn_strs).await?;
        let lfn_refs: Vec<&Lfn> = files.iter().map(|(l, _)| l).collect();
        let existing_files = self.files_in(&lfn_refs).await?;
        let dirs_named = &existing_dirs;
        let guid_owner = self
            .guid_owners(
                files
                    .iter()
                    .filter(|(_, f)| !f.guid_generated)
                    .map(|(_, f)| f.guid.as_str()),
            )
            .await?;
        let existing_replicas = {
            let ids: Vec<i64> = existing_files.values().map(|f| f.id).collect();
            self.replicas(&ids, true).await?
        };
        let planned_perm: HashMap<&str, &Perm> =
            planned.iter().map(|p| (p.path.as_str(), &p.perm)).collect();

        let mut new_files: Vec<(&Lfn, &NewFile)> = Vec::new();
        let mut new_replicas: Vec<(String, String, String)> = Vec::new(); // (lfn, se, pfn) of existing files
        for (l, f) in files {
            let parent = l.parent().unwrap_or_else(|| l.clone());
            let decided = (|| -> std::result::Result<bool, DmsError> {
                if let Some(e) = dir_failed.get(parent.as_str()) {
                    return Err(DmsError::FailedPrecondition(format!("{l}: {e}")));
                }
                if dirs_named.contains_key(l.as_str()) {
                    return Err(DmsError::AlreadyExists(format!("{l} is a directory")));
                }
                let parent_perm = existing_dirs
                    .get(parent.as_str())
                    .map(|d| &d.perm)
                    .or_else(|| planned_perm.get(parent.as_str()).copied())
                    .ok_or_else(|| {
                        DmsError::Internal(format!("{parent} neither exists nor is planned"))
                    })?;
                if let Some(old) = existing_files.get(l.as_str()) {
                    if old.size as u64 != f.size || old.checksum != f.checksum || old.guid != f.guid
                    {
                        return Err(DmsError::AlreadyExists(format!(
                            "{l} exists with another size, checksum or GUID"
                        )));
                    }
                    // The same file again: only replicas it lacks are added.
                    parent_perm.check(caller, Want::Write, parent.as_str())?;
                    return Ok(false);
                }
                parent_perm.check(caller, Want::Write, parent.as_str())?;
                if let Some(other) = guid_owner.get(&f.guid) {
                    return Err(DmsError::AlreadyExists(format!(
                        "{l}: GUID {} is used by {other}",
                        f.guid
                    )));
                }
                Ok(true)
            })();
            match decided {
                Ok(true) => {
                    new_files.push((l, f));
                    out.insert(f.lfn.clone(), Ok(()));
                }
                Ok(false) => {
                    let old = &existing_files[l.as_str()];
                    let have: BTreeSet<&str> = existing_replicas
                        .get(&old.id)
                        .map(|r| r.iter().map(|x| x.se.as_str()).collect())
                        .unwrap_or_default();
                    for (se, pfn) in &f.replicas {
                        if !have.contains(se.as_str()) {
                            new_replicas.push((l.to_string(), se.clone(), pfn.clone()));
                        }
                    }
                    out.insert(f.lfn.clone(), Ok(()));
                }
                Err(e) => {
                    out.insert(f.lfn.clone(), Err(e));
                }
            }
        }
        // Only the directories that successful files need are made.
        let needed: BTreeSet<String> = new_files
            .iter()
            .filter_map(|(l, _)| l.parent())
            .flat_map(|p| {
                let mut v = p.ancestors();
                v.push(p);
                v
            })
            .map(|p| p.to_string())
            .collect();
        let planned: Vec<PlannedDir> = planned
            .into_iter()
            .filter(|p| needed.contains(p.path.as_str()))
            .collect();
        if new_files.is_empty() && new_replicas.is_empty() && planned.is_empty() {
            return Ok(out);
        }
        let first_dir = if planned.is_empty() {
            0
        } else {
            i64::try_from(
                self.db
                    .allocate_ids("FC_Sequences", "Dirs", planned.len() as u64)
                    .await?,
            )
            .map_err(|_| DmsError::Internal("directory ids exhausted".into()))?
        };
        let first_file = if new_files.is_empty() {
            0
        } else {
            i64::try_from(
                self.db
                    .allocate_ids("FC_Sequences", "Files", new_files.len() as u64)
                    .await?,
            )
            .map_err(|_| DmsError::Internal("file ids exhausted".into()))?
        };
        let mut known: HashMap<String, i64> = existing_dirs
            .iter()
            .map(|(k, d)| (k.clone(), d.id))
            .collect();
        let mut tx = self.db.pool().begin().await?;
        self.insert_dirs(&mut tx, &planned, first_dir, &mut known)
            .await?;
        let t = now();
        let mut usage: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
        let mut replica_rows: Vec<(i64, String, String)> = Vec::new();
        let mut rows = Vec::with_capacity(new_files.len());
        for (i, (l, f)) in new_files.iter().enumerate() {
            let id = first_file + i as i64;
            let parent = l.parent().map(|p| p.to_string()).unwrap_or_default();
            let dir_id = *known
                .get(&parent)
                .ok_or_else(|| DmsError::Internal(format!("directory {parent} has no id")))?;
            let size = to_i64(f.size)?;
            let u = usage.entry((dir_id, String::new())).or_default();
            u.0 += size;
            u.1 += 1;
            for (se, pfn) in &f.replicas {
                let u = usage.entry((dir_id, se.clone())).or_default();
                u.0 += size;
                u.1 += 1;
                replica_rows.push((id, se.clone(), pfn.clone()));
            }
            rows.push((id, dir_id, *l, *f, size));
        }
        for chunk in rows.chunks(MAX_PARAMS / 14) {
            let sql = format!(
                "INSERT INTO FC_Files (FileID, DirID, Name, FileKey, Size, Checksum, ChecksumType, GUID, Owner, \
                 OwnerGroup, Mode, Status, CreationTime, ModificationTime) VALUES {}",
                values_placeholders(14, chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for (id, dir_id, l, f, size) in chunk {
                q = q
                    .bind(*id)
                    .bind(*dir_id)
                    .bind(l.name().to_string())
                    .bind(file_key(l.as_str()))
                    .bind(*size)
                    .bind(f.checksum.clone())
                    .bind(f.checksum_type.clone())
                    .bind(f.guid.clone())
                    .bind(caller.username.clone())
                    .bind(caller.group.clone())
                    .bind(i32::try_from(f.mode).unwrap_or(0))
                    .bind(GOOD)
                    .bind(t)
                    .bind(t);
            }
            q.execute(&mut *tx).await?;
        }
        if !new_replicas.is_empty() {
            for (lfn, se, pfn) in &new_replicas {
                let old = &existing_files[lfn.as_str()];
                replica_rows.push((old.id, se.clone(), pfn.clone()));
                let u = usage.entry((old.dir_id, se.clone())).or_default();
                u.0 += old.size;
                u.1 += 1;
            }
        }
        self.insert_replicas(&mut tx, &replica_rows, t).await?;
        self.add_usage(&mut tx, &usage).await?;
        tx.commit().await?;
        self.after_bulk_insert(new_files.len() as u64);
        Ok(out)
    }

    /// On PostgreSQL, refresh the catalog's statistics in the background
    /// once the rows registered since the last refresh reach the table's
    /// size then (at least [`ANALYZE_EVERY`]): the planner then keeps to
    /// the indexes while a catalog is being filled.
    fn after_bulk_insert(&self, rows: u64) {
        use std::sync::atomic::Ordering;
        if self.db.backend() != Backend::Postgres || rows == 0 {
            return;
        }
        let since = self.since_analyze.fetch_add(rows, Ordering::Relaxed) + rows;
        let base = self.analyzed.load(Ordering::Relaxed);
        if since < base.max(ANALYZE_EVERY) {
            return;
        }
        self.since_analyze.store(0, Ordering::Relaxed);
        self.analyzed.store(base + since, Ordering::Relaxed);
        let db = self.db.clone();
        tokio::spawn(async move {
            for table in [
                "FC_Files",
                "FC_Replicas",
                "FC_Dirs",
                "FC_DirClosure",
                "FC_DirUsage",
            ] {
                if let Err(e) = sqlx::query(db.sql_dynamic(format!("ANALYZE {table}")))
                    .execute(db.pool())
                    .await
                {
                    tracing::warn!(table, error = %e, "cannot refresh statistics");
                }
            }
            tracing::debug!(rows = base + since, "catalog statistics refreshed");
        });
    }

    async fn guid_owners<'a>(
        &self,
        guids: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<String, String>> {
        let guids: Vec<&str> = guids.collect();
        let mut out = HashMap::new();
        for chunk in guids.chunks(MAX_IN) {
            let sql = format!(
                "SELECT f.GUID, d.Path, f.Name FROM FC_Files f{} JOIN FC_Dirs d ON d.DirID = f.DirID \
                 WHERE f.GUID IN ({})",
                self.force("FC_FilesGUID"),
                list_placeholders(chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for g in chunk {
                q = q.bind(g.to_string());
            }
            for r in q.fetch_all(self.db.pool()).await? {
                let (g, d, n): (String, String, String) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                out.insert(g, format!("{d}/{n}"));
            }
        }
        Ok(out)
    }

    async fn insert_replicas(
        &self,
        tx: &mut sqlx::AnyConnection,
        rows: &[(i64, String, String)],
        t: i64,
    ) -> Result<()> {
        for chunk in rows.chunks(MAX_PARAMS / 5) {
            let sql = format!(
                "INSERT INTO FC_Replicas (FileID, SE, Status, PFN, CreationTime) VALUES {}",
                values_placeholders(5, chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for (id, se, pfn) in chunk {
                q = q
                    .bind(*id)
                    .bind(se.clone())
                    .bind(GOOD)
                    .bind(if pfn.is_empty() {
                        None
                    } else {
                        Some(pfn.clone())
                    })
                    .bind(t);
            }
            q.execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// Add (or subtract) usage per (directory, SE); "" is the logical
    /// count. Rows are written in key order so concurrent writers lock in
    /// the same order.
    async fn add_usage(
        &self,
        tx: &mut sqlx::AnyConnection,
        usage: &BTreeMap<(i64, String), (i64, i64)>,
    ) -> Result<()> {
        let rows: Vec<_> = usage
            .iter()
            .filter(|(_, (s, n))| *s != 0 || *n != 0)
            .collect();
        for chunk in rows.chunks(MAX_PARAMS / 4) {
            let values = values_placeholders(4, chunk.len());
            let sql = match self.db.backend() {
                Backend::MySql => format!(
                    "INSERT INTO FC_DirUsage (DirID, SE, Size, Files) VALUES {values} \
                     ON DUPLICATE KEY UPDATE Size = Size + VALUES(Size), Files = Files + VALUES(Files)"
                ),
                _ => format!(
                    "INSERT INTO FC_DirUsage (DirID, SE, Size, Files) VALUES {values} \
                     ON CONFLICT (DirID, SE) DO UPDATE SET Size = FC_DirUsage.Size + excluded.Size, \
                     Files = FC_DirUsage.Files + excluded.Files"
                ),
            };
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for ((dir, se), (size, files)) in chunk {
                q = q.bind(*dir).bind(se.clone()).bind(*size).bind(*files);
            }
            q.execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// Files with their replicas; missing ones are `NotFound`.
    pub async fn get_files(
        &self,
        caller: &Caller,
        lfns: &[String],
        all_status: bool,
    ) -> Result<(
        BTreeMap<String, (FileRow, Vec<ReplicaRow>)>,
        BTreeMap<String, DmsError>,
    )> {
        let (found, mut failed) = self.lookup_files(caller, lfns, Want::Read).await?;
        let ids: Vec<i64> = found.values().map(|f| f.id).collect();
        let mut replicas = self.replicas(&ids, all_status).await?;
        let mut out = BTreeMap::new();
        for (input, f) in found {
            if !all_status && f.status != GOOD {
                failed.insert(
                    input,
                    DmsError::NotFound(format!("{}: no such file", f.lfn)),
                );
                continue;
            }
            let r = replicas.remove(&f.id).unwrap_or_default();
            out.insert(input, (f, r));
        }
        Ok((out, failed))
    }

    /// Resolve `lfns` to files the caller may `want`.
    async fn lookup_files(
        &self,
        caller: &Caller,
        lfns: &[String],
        want: Want,
    ) -> Result<(BTreeMap<String, FileRow>, BTreeMap<String, DmsError>)> {
        if lfns.len() > MAX_BULK {
            return Err(DmsError::InvalidArgument(format!(
                "more than {MAX_BULK} paths in one call"
            )));
        }
        let (parsed, mut failed) = parse_paths(caller, lfns);
        let refs: Vec<&Lfn> = parsed.iter().map(|(_, l)| l).collect();
        let mut files = self.files_in(&refs).await?;
        let mut found = BTreeMap::new();
        for (input, l) in parsed {
            match files.remove(l.as_str()) {
                Some(f) => match f.perm.check(caller, want, l.as_str()) {
                    Ok(()) => {
                        found.insert(input, f);
                    }
                    Err(e) => {
                        failed.insert(input, e);
                    }
                },
                None => {
                    failed.insert(input, DmsError::NotFound(format!("{l}: no such file")));
                }
            }
        }
        Ok((found, failed))
    }

    /// Remove file entries with their replica entries; the caller needs
    /// write access to the parent directory. Missing files succeed.
    pub async fn remove_files(&self, caller: &Caller, lfns: &[String]) -> Result<Outcome> {
        with_retry(|| self.try_remove_files(caller, lfns)).await
    }

    async fn try_remove_files(&self, caller: &Caller, lfns: &[String]) -> Result<Outcome> {
        let (found, failed) = self.lookup_files(caller, lfns, Want::Read).await?;
        let mut out: Outcome = Outcome::new();
        for (input, e) in failed {
            match e {
                DmsError::NotFound(_) => out.insert(input, Ok(())),
                e => out.insert(input, Err(e)),
            };
        }
        let parent_paths: Vec<String> = found
            .values()
            .filter_map(|f| Lfn::parse(&f.lfn).ok()?.parent().map(|p| p.to_string()))
            .collect();
        let refs: Vec<&str> = parent_paths.iter().map(String::as_str).collect();
        let dirs = self.dirs(&refs).await?;
        let by_id: HashMap<i64, &DirRow> = dirs.values().map(|d| (d.id, d)).collect();
        let mut doomed: Vec<&FileRow> = Vec::new();
        for (input, f) in &found {
            let allowed = by_id
                .get(&f.dir_id)
                .map(|d| d.perm.check(caller, Want::Write, &d.path))
                .unwrap_or(Ok(()));
            match allowed {
                Ok(()) => {
                    doomed.push(f);
                    out.insert(input.clone(), Ok(()));
                }
                Err(e) => {
                    out.insert(input.clone(), Err(e));
                }
            }
        }
        if doomed.is_empty() {
            return Ok(out);
        }
        let ids: Vec<i64> = doomed.iter().map(|f| f.id).collect();
        let replicas = self.replicas(&ids, true).await?;
        let mut usage: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
        for f in &doomed {
            let u = usage.entry((f.dir_id, String::new())).or_default();
            u.0 -= f.size;
            u.1 -= 1;
            for r in replicas.get(&f.id).map(Vec::as_slice).unwrap_or_default() {
                let u = usage.entry((f.dir_id, r.se.clone())).or_default();
                u.0 -= f.size;
                u.1 -= 1;
            }
        }
        let mut tx = self.db.pool().begin().await?;
        for chunk in ids.chunks(MAX_IN) {
            for table in ["FC_Replicas", "FC_FileMeta", "FC_DatasetFiles", "FC_Files"] {
                let sql = format!(
                    "DELETE FROM {table} WHERE FileID IN ({})",
                    list_placeholders(chunk.len())
                );
                let mut q = sqlx::query(self.db.sql_dynamic(sql));
                for id in chunk {
                    q = q.bind(*id);
                }
                q.execute(&mut *tx).await?;
            }
            for column in ["FileID", "AncestorID"] {
                let sql = format!(
                    "DELETE FROM FC_Ancestors WHERE {column} IN ({})",
                    list_placeholders(chunk.len())
                );
                let mut q = sqlx::query(self.db.sql_dynamic(sql));
                for id in chunk {
                    q = q.bind(*id);
                }
                q.execute(&mut *tx).await?;
            }
        }
        self.add_usage(&mut tx, &usage).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Add replicas to registered files (write access to the directory).
    pub async fn add_replicas(
        &self,
        caller: &Caller,
        replicas: &[(String, String, String)],
    ) -> Result<Outcome> {
        self.change_replicas(caller, replicas, true).await
    }

    /// Remove replica entries; removing one that is not there succeeds.
    pub async fn remove_replicas(
        &self,
        caller: &Caller,
        replicas: &[(String, String, String)],
    ) -> Result<Outcome> {
        self.change_replicas(caller, replicas, false).await
    }

    async fn change_replicas(
        &self,
        caller: &Caller,
        replicas: &[(String, String, String)],
        add: bool,
    ) -> Result<Outcome> {
        with_retry(|| self.try_change_replicas(caller, replicas, add)).await
    }

    async fn try_change_replicas(
        &self,
        caller: &Caller,
        replicas: &[(String, String, String)],
        add: bool,
    ) -> Result<Outcome> {
        let lfns: Vec<String> = replicas
            .iter()
            .map(|(l, _, _)| l.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let (found, failed) = self.lookup_files(caller, &lfns, Want::Read).await?;
        let mut out = Outcome::new();
        for (input, e) in failed {
            out.insert(input, Err(e));
        }
        let parent_paths: Vec<String> = found
            .values()
            .filter_map(|f| Lfn::parse(&f.lfn).ok()?.parent().map(|p| p.to_string()))
            .collect();
        let refs: Vec<&str> = parent_paths.iter().map(String::as_str).collect();
        let dirs = self.dirs(&refs).await?;
        let by_id: HashMap<i64, &DirRow> = dirs.values().map(|d| (d.id, d)).collect();
        let ids: Vec<i64> = found.values().map(|f| f.id).collect();
        let existing = self.replicas(&ids, true).await?;
        let mut inserts: Vec<(i64, String, String)> = Vec::new();
        let mut deletes: Vec<(i64, String)> = Vec::new();
        let mut usage: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
        let mut pending: BTreeSet<(i64, String)> = BTreeSet::new();
        for (lfn, se, pfn) in replicas {
            if out.get(lfn).is_some_and(|r| r.is_err()) {
                continue;
            }
            let Some(f) = found.get(lfn) else { continue };
            let decided = (|| -> std::result::Result<bool, DmsError> {
                if add {
                    self.check_se(se)
                        .map_err(|e| DmsError::InvalidArgument(format!("{lfn}: {e}")))?;
                }
                if let Some(d) = by_id.get(&f.dir_id) {
                    d.perm.check(caller, Want::Write, &d.path)?;
                }
                let has = existing
                    .get(&f.id)
                    .is_some_and(|r| r.iter().any(|x| &x.se == se));
                Ok(has != add && pending.insert((f.id, se.clone())))
            })();
            match decided {
                Ok(true) => {
                    let delta = if add { 1 } else { -1 };
                    let u = usage.entry((f.dir_id, se.clone())).or_default();
                    u.0 += delta * f.size;
                    u.1 += delta;
                    if add {
                        inserts.push((f.id, se.clone(), pfn.clone()));
                    } else {
                        deletes.push((f.id, se.clone()));
                    }
                    out.entry(lfn.clone()).or_insert(Ok(()));
                }
                Ok(false) => {
                    out.entry(lfn.clone()).or_insert(Ok(()));
                }
                Err(e) => {
                    out.insert(lfn.clone(), Err(e));
                }
            }
        }
        if inserts.is_empty() && deletes.is_empty() {
            return Ok(out);
        }
        let mut tx = self.db.pool().begin().await?;
        self.insert_replicas(&mut tx, &inserts, now()).await?;
        for chunk in deletes.chunks(MAX_IN) {
            let sql = format!(
                "DELETE FROM FC_Replicas WHERE (FileID, SE) IN ({})",
                values_placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for (id, se) in chunk {
                q = q.bind(*id).bind(se.clone());
            }
            q.execute(&mut *tx).await?;
        }
        self.add_usage(&mut tx, &usage).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// What each path is: "File", "Directory" or "" (nothing).
    pub async fn exists(
        &self,
        caller: &Caller,
        paths: &[String],
    ) -> Result<(BTreeMap<String, String>, BTreeMap<String, DmsError>)> {
        let mut kinds = BTreeMap::new();
        let (parsed, failed) = parse_paths(caller, paths);
        let mut lookups: Vec<String> = parsed.iter().map(|(_, l)| l.to_string()).collect();
        lookups.extend(
            parsed
                .iter()
                .filter_map(|(_, l)| l.parent())
                .map(|p| p.to_string()),
        );
        let refs: Vec<&str> = lookups.iter().map(String::as_str).collect();
        let dirs = self.dirs(&refs).await?;
        let lrefs: Vec<&Lfn> = parsed.iter().map(|(_, l)| l).collect();
        let files = self.files_in(&lrefs).await?;
        for (input, l) in parsed {
            let kind = if dirs.contains_key(l.as_str()) {
                "Directory"
            } else if files.contains_key(l.as_str()) {
                "File"
            } else {
                ""
            };
            kinds.insert(input, kind.to_string());
        }
        Ok((kinds, failed))
    }

    /// Directories (owner, group, mode, times); missing ones are `NotFound`.
    pub async fn get_directories(
        &self,
        caller: &Caller,
        paths: &[String],
    ) -> Result<(BTreeMap<String, DirRow>, BTreeMap<String, DmsError>)> {
        let mut found = BTreeMap::new();
        let (parsed, mut failed) = parse_paths(caller, paths);
        let refs: Vec<&str> = parsed.iter().map(|(_, l)| l.as_str()).collect();
        let mut dirs = self.dirs(&refs).await?;
        for (input, l) in parsed {
            match dirs.remove(l.as_str()) {
                Some(d) => {
                    found.insert(input, d);
                }
                None => {
                    failed.insert(input, DmsError::NotFound(format!("{l}: no such directory")));
                }
            }
        }
        Ok((found, failed))
    }

    // ---- listing ----

    /// The directory a listing starts from, checked for read access.
    pub async fn readable_dir(&self, caller: &Caller, path: &str) -> Result<DirRow> {
        let l = Lfn::parse(path).map_err(DmsError::InvalidArgument)?;
        caller.check_vo(&l)?;
        let d = self
            .dir(&l)
            .await?
            .ok_or_else(|| DmsError::NotFound(format!("{l}: no such directory")))?;
        d.perm.check(caller, Want::Read, l.as_str())?;
        Ok(d)
    }

    /// One page of a listing of `dir`: subdirectories first (by id, so
    /// parents come before children in a recursive listing), then files.
    pub async fn list_page(
        &self,
        dir: &DirRow,
        recursive: bool,
        with_replicas: bool,
        cursor: Cursor,
        limit: usize,
    ) -> Result<(Vec<Entry>, Cursor)> {
        let limit_i = i64::try_from(limit).unwrap_or(1000);
        match cursor {
            Cursor::Done => Ok((Vec::new(), Cursor::Done)),
            Cursor::Dirs(after) => {
                let sql = if recursive {
                    format!(
                        "SELECT {} FROM FC_Dirs d JOIN FC_DirClosure c ON c.Descendant = d.DirID \
                         WHERE c.Ancestor = ? AND c.Depth > 0 AND d.DirID > ? ORDER BY d.DirID LIMIT ?",
                        DIR_COLUMNS
                            .split(", ")
                            .map(|c| format!("d.{c}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                } else {
                    format!(
                        "SELECT {DIR_COLUMNS} FROM FC_Dirs WHERE ParentID = ? AND DirID > ? ORDER BY DirID LIMIT ?"
                    )
                };
                let rows = sqlx::query(self.db.sql_dynamic(sql))
                    .bind(dir.id)
                    .bind(after)
                    .bind(limit_i)
                    .fetch_all(self.db.pool())
                    .await?;
                let entries: Vec<Entry> = rows
                    .iter()
                    .map(dir_row)
                    .collect::<std::result::Result<Vec<_>, _>>()?
                    .into_iter()
                    .map(Entry::Dir)
                    .collect();
                let next = match entries.last() {
                    Some(Entry::Dir(d)) if entries.len() == limit => Cursor::Dirs(d.id),
                    _ if recursive => Cursor::TreeFiles { dir: 0, file: 0 },
                    _ => Cursor::Files(0),
                };
                Ok((entries, next))
            }
            Cursor::TreeFiles { .. } | Cursor::Files(_) => {
                let (files, next) = match cursor {
                    Cursor::TreeFiles { dir: from, file } => {
                        self.tree_files(dir.id, from, file, limit).await?
                    }
                    Cursor::Files(after) => {
                        let sql = format!(
                            "SELECT {}{FILE_COLUMNS} FROM FC_Files f{} JOIN FC_Dirs d ON d.DirID = f.DirID \
                             WHERE f.DirID = ? AND f.FileID > ? ORDER BY f.FileID LIMIT ?",
                            self.straight(),
                            self.force("FC_FilesDir")
                        );
                        let rows = sqlx::query(self.db.sql_dynamic(sql))
                            .bind(dir.id)
                            .bind(after)
                            .bind(limit_i)
                            .fetch_all(self.db.pool())
                            .await?;
                        let files: Vec<FileRow> = rows
                            .iter()
                            .map(file_row)
                            .collect::<std::result::Result<_, _>>()?;
                        let next = match files.last() {
                            Some(f) if files.len() == limit => Cursor::Files(f.id),
                            _ => Cursor::Done,
                        };
                        (files, next)
                    }
                    _ => (Vec::new(), Cursor::Done),
                };
                let mut replicas = if with_replicas {
                    let ids: Vec<i64> = files.iter().map(|f| f.id).collect();
                    self.replicas(&ids, false).await?
                } else {
                    HashMap::new()
                };
                let entries = files
                    .into_iter()
                    .map(|f| {
                        let r = replicas.remove(&f.id).unwrap_or_default();
                        Entry::File(f, r)
                    })
                    .collect();
                Ok((entries, next))
            }
        }
    }

    /// One page of a subtree's files: the next 500 directories of the
    /// subtree from `from` on, and their files in (directory, id) order
    /// after (`from`, `file`), on the (DirID, FileID) index.
    async fn tree_files(
        &self,
        root: i64,
        from: i64,
        file: i64,
        limit: usize,
    ) -> Result<(Vec<FileRow>, Cursor)> {
        let dirs: Vec<i64> = sqlx::query_scalar(self.db.sql_dynamic(format!(
            "SELECT Descendant FROM FC_DirClosure{} WHERE Ancestor = ? AND Descendant >= ? \
             ORDER BY Descendant LIMIT {MAX_IN}",
            self.force("PRIMARY")
        )))
        .bind(root)
        .bind(from)
        .fetch_all(self.db.pool())
        .await?;
        let Some(&last_dir) = dirs.last() else {
            return Ok((Vec::new(), Cursor::Done));
        };
        // The rest of the current directory, then the next directories of
        // the page: both plain ranges of the (DirID, FileID) index, read
        // in index order and stopped at the limit.
        let limit_i = i64::try_from(limit).unwrap_or(1000);
        let mut files: Vec<FileRow> = Vec::new();
        if dirs.first() == Some(&from) {
            let sql = format!(
                "SELECT {}{FILE_COLUMNS} FROM FC_Files f{} JOIN FC_Dirs d ON d.DirID = f.DirID \
                 WHERE f.DirID = ? AND f.FileID > ? ORDER BY f.FileID LIMIT ?",
                self.straight(),
                self.force("FC_FilesDir")
            );
            let rows = sqlx::query(self.db.sql_dynamic(sql))
                .bind(from)
                .bind(file)
                .bind(limit_i)
                .fetch_all(self.db.pool())
                .await?;
            files = rows
                .iter()
                .map(file_row)
                .collect::<std::result::Result<_, _>>()?;
        }
        let rest: Vec<i64> = dirs.iter().copied().filter(|d| *d > from).collect();
        if files.len() < limit && !rest.is_empty() {
            let sql = format!(
                "SELECT {}{FILE_COLUMNS} FROM FC_Files f{} JOIN FC_Dirs d ON d.DirID = f.DirID \
                 WHERE f.DirID IN ({}) ORDER BY f.DirID, f.FileID LIMIT ?",
                self.straight(),
                self.force("FC_FilesDir"),
                list_placeholders(rest.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for d in &rest {
                q = q.bind(*d);
            }
            let rows = q
                .bind(i64::try_from(limit - files.len()).unwrap_or(1000))
                .fetch_all(self.db.pool())
                .await?;
            for r in &rows {
                files.push(file_row(r)?);
            }
        }
        let next = match files.last() {
            Some(f) if files.len() == limit => Cursor::TreeFiles {
                dir: f.dir_id,
                file: f.id,
            },
            _ if dirs.len() == MAX_IN => Cursor::TreeFiles {
                dir: last_dir + 1,
                file: 0,
            },
            _ => Cursor::Done,
        };
        Ok((files, next))
    }

    // ---- usage ----

    /// Size and file counts below each directory, logical and per SE.
    pub async fn directory_size(
        &self,
        caller: &Caller,
        paths: &[String],
    ) -> Result<(BTreeMap<String, Usage>, BTreeMap<String, DmsError>)> {
        let mut out = BTreeMap::new();
        let mut failed = BTreeMap::new();
        for p in paths {
            let d = match self.readable_dir(caller, p).await {
                Ok(d) => d,
                Err(e) => {
                    failed.insert(p.clone(), e);
                    continue;
                }
            };
            let rows = sqlx::query(self.db.sql_dynamic(format!(
                "SELECT u.SE, {}, {} FROM FC_DirUsage u \
                 JOIN FC_DirClosure c ON c.Descendant = u.DirID WHERE c.Ancestor = ? GROUP BY u.SE",
                self.sum("u.Size"),
                self.sum("u.Files")
            )))
            .bind(d.id)
            .fetch_all(self.db.pool())
            .await?;
            let mut usage = Usage::default();
            for r in rows {
                let se: String = r.try_get(0)?;
                let size = sum_u64(&r, 1)?;
                let files = sum_u64(&r, 2)?;
                if se.is_empty() {
                    usage.logical_size = size;
                    usage.logical_files = files;
                } else if size > 0 || files > 0 {
                    usage.per_se.insert(se, (size, files));
                }
            }
            let dirs: i64 = sqlx::query_scalar(
                self.db
                    .sql("SELECT COUNT(*) FROM FC_DirClosure WHERE Ancestor = ? AND Depth > 0"),
            )
            .bind(d.id)
            .fetch_one(self.db.pool())
            .await?;
            usage.directories = u64::try_from(dirs).unwrap_or(0);
            out.insert(p.clone(), usage);
        }
        Ok((out, failed))
    }

    /// Recompute the usage counters of every directory below `path` from
    /// the files and replicas, rewrite those that drifted, and report them.
    pub async fn repair_usage(&self, caller: &Caller, path: &str) -> Result<(u64, Vec<Drift>)> {
        if !caller.admin {
            return Err(DmsError::PermissionDenied(
                "repairing counters needs FileCatalogManagement".into(),
            ));
        }
        let d = self.readable_dir(caller, path).await?;
        let mut tx = self.db.pool().begin().await?;
        let current = sqlx::query(self.db.sql(
            "SELECT u.DirID, u.SE, u.Size, u.Files FROM FC_DirUsage u JOIN FC_DirClosure c ON c.Descendant = u.DirID \
             WHERE c.Ancestor = ?",
        ))
        .bind(d.id)
        .fetch_all(&mut *tx)
        .await?;
        let mut was: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
        for r in current {
            was.insert(
                (r.try_get(0)?, r.try_get(1)?),
                (r.try_get(2)?, r.try_get(3)?),
            );
        }
        let mut now_: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
        let (size, count) = (self.sum("f.Size"), self.sum("1"));
        for sql in [
            format!(
                "SELECT f.DirID, '', {size}, {count} FROM FC_Files f \
                 JOIN FC_DirClosure c ON c.Descendant = f.DirID WHERE c.Ancestor = ? GROUP BY f.DirID"
            ),
            format!(
                "SELECT f.DirID, r.SE, {size}, {count} FROM FC_Files f JOIN FC_Replicas r ON r.FileID = f.FileID \
                 JOIN FC_DirClosure c ON c.Descendant = f.DirID WHERE c.Ancestor = ? GROUP BY f.DirID, r.SE"
            ),
        ] {
            for r in sqlx::query(self.db.sql_dynamic(sql))
                .bind(d.id)
                .fetch_all(&mut *tx)
                .await?
            {
                let se: String = r.try_get(1)?;
                now_.insert((r.try_get(0)?, se), (r.try_get(2)?, r.try_get(3)?));
            }
        }
        let keys: BTreeSet<(i64, String)> = was.keys().chain(now_.keys()).cloned().collect();
        let mut drifted = Vec::new();
        for key in keys {
            let a = was.get(&key).copied().unwrap_or((0, 0));
            let b = now_.get(&key).copied().unwrap_or((0, 0));
            if a != b {
                drifted.push((key, a, b));
            }
        }
        for ((dir, se), _, b) in &drifted {
            sqlx::query(
                self.db
                    .sql("DELETE FROM FC_DirUsage WHERE DirID = ? AND SE = ?"),
            )
            .bind(*dir)
            .bind(se.clone())
            .execute(&mut *tx)
            .await?;
            if *b != (0, 0) {
                sqlx::query(
                    self.db.sql(
                        "INSERT INTO FC_DirUsage (DirID, SE, Size, Files) VALUES (?, ?, ?, ?)",
                    ),
                )
                .bind(*dir)
                .bind(se.clone())
                .bind(b.0)
                .bind(b.1)
                .execute(&mut *tx)
                .await?;
            }
        }
        let dirs: i64 = sqlx::query_scalar(
            self.db
                .sql("SELECT COUNT(*) FROM FC_DirClosure WHERE Ancestor = ?"),
        )
        .bind(d.id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let ids: Vec<i64> = drifted.iter().map(|((id, _), _, _)| *id).collect();
        let paths = self.dir_paths(&ids).await?;
        let clamp = |v: i64| u64::try_from(v).unwrap_or(0);
        let report = drifted
            .into_iter()
            .map(|((dir, se), a, b)| Drift {
                path: paths.get(&dir).cloned().unwrap_or_default(),
                se,
                was: (clamp(a.0), clamp(a.1)),
                now: (clamp(b.0), clamp(b.1)),
            })
            .collect();
        Ok((u64::try_from(dirs).unwrap_or(0), report))
    }

    pub(crate) async fn dir_paths(&self, ids: &[i64]) -> Result<HashMap<i64, String>> {
        let mut out = HashMap::new();
        let ids: Vec<i64> = ids
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for chunk in ids.chunks(MAX_IN) {
            let sql = format!(
                "SELECT DirID, Path FROM FC_Dirs WHERE DirID IN ({})",
                list_placeholders(chunk.len())
            );
            let mut q = sqlx::query(self.db.sql_dynamic(sql));
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(self.db.pool()).await? {
                out.insert(r.try_get(0)?, r.try_get(1)?);
            }
        }
        Ok(out)
    }

    // ---- access to stored files ----

    /// May the caller create (or replace) the file `lfn`: its directory
    /// exists and is writable, or could be made by the caller.
    pub async fn may_write_file(&self, caller: &Caller, lfn: &str) -> Result<Lfn> {
        let l = Lfn::parse(lfn).map_err(DmsError::InvalidArgument)?;
        caller.check_vo(&l)?;
        let parent = l
            .parent()
            .ok_or_else(|| DmsError::InvalidArgument(format!("{l} is a VO root, not a file")))?;
        let (existing, _planned, failed) = self
            .resolve_dirs(caller, std::slice::from_ref(&parent))
            .await?;
        if let Some(e) = failed.get(parent.as_str()) {
            return Err(DmsError::PermissionDenied(format!("{l}: {e}")));
        }
        if let Some(d) = existing.get(parent.as_str()) {
            d.perm.check(caller, Want::Write, parent.as_str())?;
        }
        Ok(l)
    }

    /// May the caller read the stored file `lfn`: a registered file they
    /// may read, or an unregistered one they could have written.
    pub async fn may_read_file(&self, caller: &Caller, lfn: &str) -> Result<Lfn> {
        let (mut found, mut failed) = self
            .lookup_files(caller, &[lfn.to_string()], Want::Read)
            .await?;
        if found.remove(lfn).is_some() {
            return Lfn::parse(lfn).map_err(DmsError::InvalidArgument);
        }
        match failed.remove(lfn) {
            Some(DmsError::NotFound(_)) | None => self.may_write_file(caller, lfn).await,
            Some(e) => Err(e),
        }
    }

    // ---- permissions ----

    /// chmod: the owner or an administrator, optionally on a whole subtree.
    pub async fn change_mode(
        &self,
        caller: &Caller,
        paths: &[String],
        mode: u32,
        recursive: bool,
    ) -> Result<Outcome> {
        let mode = check_mode(mode)?;
        self.change_perm(caller, paths, recursive, |p| {
            if !caller.admin && p.owner != caller.username {
                return Err("only the owner or a catalog administrator changes the mode".into());
            }
            Ok(Perm { mode, ..p.clone() })
        })
        .await
    }

    /// chown/chgrp: an administrator; the owner may change the group to a
    /// group of the VO they are a member of.
    pub async fn change_owner(
        &self,
        caller: &Caller,
        paths: &[String],
        owner: &str,
        group: &str,
        recursive: bool,
    ) -> Result<Outcome> {
        let voc = self.config.registry.vos.get(&caller.vo);
        if !owner.is_empty()
            && !voc.is_some_and(|v| {
                v.users.contains_key(owner)
                    || v.groups
                        .values()
                        .any(|g| g.users.iter().any(|u| u == owner))
            })
        {
            return Err(DmsError::InvalidArgument(format!(
                "'{}' is not a user of VO {}",
                clip(owner),
                caller.vo
            )));
        }
        let group_members = voc.and_then(|v| v.groups.get(group));
        if !group.is_empty() && group_members.is_none() {
            return Err(DmsError::InvalidArgument(format!(
                "'{}' is not a group of VO {}",
                clip(group),
                caller.vo
            )));
        }
        let member = group_members.is_some_and(|g| g.users.iter().any(|u| u == &caller.username));
        self.change_perm(caller, paths, recursive, |p| {
            if !caller.admin {
                if !owner.is_empty() && owner != p.owner {
                    return Err("only a catalog administrator changes the owner".into());
                }
                if p.owner != caller.username {
                    return Err(
                        "only the owner or a catalog administrator changes the group".into(),
                    );
                }
                if !group.is_empty() && !member {
                    return Err(format!("you are not a member of group {group}"));
                }
            }
            Ok(Perm {
                owner: if owner.is_empty() {
                    p.owner.clone()
                } else {
                    owner.to_string()
                },
                group: if group.is_empty() {
                    p.group.clone()
                } else {
                    group.to_string()
                },
                mode: p.mode,
            })
        })
        .await
    }

    async fn change_perm(
        &self,
        caller: &Caller,
        paths: &[String],
        recursive: bool,
        change: impl Fn(&Perm) -> std::result::Result<Perm, String>,
    ) -> Result<Outcome> {
        let mut out = Outcome::new();
        for p in paths {
            let r = async {
                let l = Lfn::parse(p).map_err(DmsError::InvalidArgument)?;
                caller.check_vo(&l)?;
                let t = now();
                if let Some(d) = self.dir(&l).await? {
                    let new = change(&d.perm).map_err(|m| DmsError::PermissionDenied(format!("{l}: {m}")))?;
                    let mut tx = self.db.pool().begin().await?;
                    let mut rows: Vec<(bool, i64, Perm)> = vec![(true, d.id, new)];
                    if recursive {
                        let subdirs = sqlx::query(self.db.sql_dynamic(SUBTREE_DIRS.to_string()))
                            .bind(d.id)
                            .fetch_all(&mut *tx)
                            .await?;
                        for r in subdirs {
                            let sub = dir_row(&r)?;
                            let new = change(&sub.perm).map_err(|m| DmsError::PermissionDenied(format!("{}: {m}", sub.path)))?;
                            rows.push((true, sub.id, new));
                        }
                        let files = sqlx::query(self.db.sql_dynamic(SUBTREE_FILES.to_string()))
                            .bind(d.id)
                            .fetch_all(&mut *tx)
                            .await?;
                        for r in files {
                            let f = file_row(&r)?;
                            let new = change(&f.perm).map_err(|m| DmsError::PermissionDenied(format!("{}: {m}", f.lfn)))?;
                            rows.push((false, f.id, new));
                        }
                    }
                    for (is_dir, id, perm) in rows {
                        let sql = if is_dir {
                            "UPDATE FC_Dirs SET Owner = ?, OwnerGroup = ?, Mode = ?, ModificationTime = ? WHERE DirID = ?"
                        } else {
                            "UPDATE FC_Files SET Owner = ?, OwnerGroup = ?, Mode = ?, ModificationTime = ? WHERE FileID = ?"
                        };
                        sqlx::query(self.db.sql(sql))
                            .bind(perm.owner)
                            .bind(perm.group)
                            .bind(i32::try_from(perm.mode).unwrap_or(0))
                            .bind(t)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    return Ok(());
                }
                let (mut found, mut failed) = self.lookup_files(caller, std::slice::from_ref(p), Want::Read).await?;
                if let Some(e) = failed.remove(p) {
                    return Err(e);
                }
                let f = found.remove(p).ok_or_else(|| DmsError::NotFound(format!("{l}: no such file or directory")))?;
                let new = change(&f.perm).map_err(|m| DmsError::PermissionDenied(format!("{l}: {m}")))?;
                sqlx::query(self.db.sql("UPDATE FC_Files SET Owner = ?, OwnerGroup = ?, Mode = ?, ModificationTime = ? WHERE FileID = ?"))
                    .bind(new.owner)
                    .bind(new.group)
                    .bind(i32::try_from(new.mode).unwrap_or(0))
                    .bind(t)
                    .bind(f.id)
                    .execute(self.db.pool())
                    .await?;
                Ok(())
            }
            .await;
            out.insert(p.clone(), r);
        }
        Ok(out)
    }
}

static SUBTREE_DIRS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {} FROM FC_Dirs d JOIN FC_DirClosure c ON c.Descendant = d.DirID WHERE c.Ancestor = ? AND c.Depth > 0",
        DIR_COLUMNS
            .split(", ")
            .map(|c| format!("d.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
});

static SUBTREE_FILES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {FILE_COLUMNS} FROM FC_Files f JOIN FC_Dirs d ON d.DirID = f.DirID \
         JOIN FC_DirClosure c ON c.Descendant = f.DirID WHERE c.Ancestor = ?"
    )
});

/// A column made by [`Catalog::sum`], never negative.
pub(crate) fn sum_u64(r: &sqlx::any::AnyRow, i: usize) -> std::result::Result<u64, sqlx::Error> {
    Ok(u64::try_from(r.try_get::<i64, _>(i)?).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_normalised_or_refused() {
        assert_eq!(
            normalise_checksum("ABC", "adler32").expect("ok"),
            ("00000abc".into(), "Adler32".into())
        );
        assert_eq!(normalise_checksum("1", "").expect("ok").0, "00000001");
        assert!(normalise_checksum("xyz", "Adler32").is_err());
        assert!(normalise_checksum("123456789", "Adler32").is_err());
        assert!(normalise_checksum("", "Adler32").is_err());
        assert!(normalise_checksum("d41d8cd98f00b204e9800998ecf8427e", "MD5").is_ok());
        assert!(normalise_checksum("abc", "sha1").is_err());
        assert!(check_guid(&new_guid()).is_ok());
        assert!(check_guid("a b").is_err());
    }
}
