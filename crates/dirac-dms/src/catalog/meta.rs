//! Typed metadata (int, float, string, date) on directories, inherited by
//! everything below them, and on files; and the query language compiled
//! to SQL.
//!
//! Fields are declared per VO with a type and a scope (DIRAC: a field is a
//! directory field or a file field, never both). A directory field is set
//! on one directory of a branch only (not again above or below it), so
//! every file has at most one value per field and a query needs no
//! "nearest ancestor" search: a semi-join over the directories that set it,
//! expanded to everything below them, is exact.
//! Values are stored in one column per type with an index on
//! (field, value), without DDL at run time (DIRAC creates a table per
//! field).

use std::collections::BTreeMap;

use dirac_core::db::list_placeholders;
use sqlx::Row as _;

use super::{Catalog, GOOD};
use crate::error::{DmsError, Result};
use crate::lfn::{Lfn, clip};
use crate::perms::{Caller, Want};
use crate::query::{self, Expr, Op, Test};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaType {
    Int,
    Float,
    Str,
    Date,
}

impl MetaType {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "int" | "integer" => Ok(MetaType::Int),
            "float" | "double" => Ok(MetaType::Float),
            "string" | "str" | "varchar" => Ok(MetaType::Str),
            "date" | "datetime" => Ok(MetaType::Date),
            _ => Err(DmsError::InvalidArgument(format!(
                "metadata type '{}' is not int, float, string or date",
                clip(s)
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MetaType::Int => "int",
            MetaType::Float => "float",
            MetaType::Str => "string",
            MetaType::Date => "date",
        }
    }

    /// The value column of this type (dates are Unix seconds).
    fn column(self) -> &'static str {
        match self {
            MetaType::Int | MetaType::Date => "IntValue",
            MetaType::Float => "FloatValue",
            MetaType::Str => "StrValue",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Directory,
    File,
}

impl Scope {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "" | "directory" | "dir" | "-d" => Ok(Scope::Directory),
            "file" | "-f" => Ok(Scope::File),
            _ => Err(DmsError::InvalidArgument(format!(
                "metadata scope '{}' is not directory or file",
                clip(s)
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scope::Directory => "directory",
            Scope::File => "file",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub kind: MetaType,
    pub scope: Scope,
}

/// A stored value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Str(String),
    /// Unix seconds, UTC.
    Date(i64),
}

impl Value {
    /// `text` as a value of `kind`.
    pub fn parse(kind: MetaType, text: &str, field: &str) -> Result<Value> {
        let bad = || {
            DmsError::InvalidArgument(format!(
                "{field}: '{}' is not a {} value",
                clip(text),
                kind.name()
            ))
        };
        match kind {
            MetaType::Int => text.trim().parse().map(Value::Int).map_err(|_| bad()),
            MetaType::Float => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Value::Float)
                .ok_or_else(bad),
            MetaType::Str => {
                if text.len() > 255 {
                    return Err(DmsError::InvalidArgument(format!(
                        "{field}: a string value is at most 255 bytes"
                    )));
                }
                Ok(Value::Str(text.to_string()))
            }
            MetaType::Date => parse_date(text).map(Value::Date).ok_or_else(bad),
        }
    }

    pub fn display(&self) -> String {
        match self {
            Value::Int(v) => v.to_string(),
            Value::Float(v) => v.to_string(),
            Value::Str(s) => s.clone(),
            Value::Date(t) => chrono::DateTime::from_timestamp(*t, 0)
                .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_default(),
        }
    }

    pub(crate) fn bind<'q>(
        &self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        match self {
            Value::Int(v) | Value::Date(v) => q.bind(*v),
            Value::Float(v) => q.bind(*v),
            Value::Str(s) => q.bind(s.clone()),
        }
    }
}

/// RFC 3339, `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DD` (UTC) to Unix seconds.
pub fn parse_date(text: &str) -> Option<i64> {
    let t = text.trim();
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Some(d.timestamp());
    }
    for f in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(d) = chrono::NaiveDateTime::parse_from_str(t, f) {
            return Some(d.and_utc().timestamp());
        }
    }
    chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp())
}

/// File attributes usable in queries, with their column and type.
const STANDARD: [(&str, &str, MetaType); 10] = [
    ("Size", "f.Size", MetaType::Int),
    ("Name", "f.Name", MetaType::Str),
    ("FileName", "f.Name", MetaType::Str),
    ("Owner", "f.Owner", MetaType::Str),
    ("User", "f.Owner", MetaType::Str),
    ("Group", "f.OwnerGroup", MetaType::Str),
    ("GUID", "f.GUID", MetaType::Str),
    ("Checksum", "f.Checksum", MetaType::Str),
    ("CreationDate", "f.CreationTime", MetaType::Date),
    ("ModificationDate", "f.ModificationTime", MetaType::Date),
];
/// Names that are not standard columns but mean something in queries.
const SPECIAL: [&str; 2] = ["SE", "Status"];

fn standard(name: &str) -> Option<(&'static str, MetaType)> {
    STANDARD
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, c, t)| (*c, *t))
}

fn check_field_name(name: &str) -> Result<()> {
    let ok = name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(DmsError::InvalidArgument(format!(
            "metadata field name '{}' must be a letter then letters, digits or '_' (at most 64)",
            clip(name)
        )));
    }
    if standard(name).is_some() || SPECIAL.iter().any(|s| s.eq_ignore_ascii_case(name)) {
        return Err(DmsError::InvalidArgument(format!(
            "'{name}' is a file attribute, not a metadata field"
        )));
    }
    if ["and", "or", "not", "in"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(name))
    {
        return Err(DmsError::InvalidArgument(format!(
            "'{name}' is a word of the query language"
        )));
    }
    Ok(())
}

/// SQL text and the values it binds, in order.
pub struct Compiled {
    pub sql: String,
    pub binds: Vec<Value>,
}

impl Catalog {
    /// Declare a metadata field of the caller's VO.
    pub async fn add_field(&self, caller: &Caller, field: &Field) -> Result<()> {
        check_field_name(&field.name)?;
        let existing = self.fields(&caller.vo).await?;
        if let Some(old) = existing.get(&field.name) {
            if old == field {
                return Ok(());
            }
            return Err(DmsError::AlreadyExists(format!(
                "field {} exists as a {} {} field",
                field.name,
                old.scope.name(),
                old.kind.name()
            )));
        }
        let done = sqlx::query(
            self.db
                .sql("INSERT INTO FC_MetaFields (VO, Name, Type, Scope) VALUES (?, ?, ?, ?)"),
        )
        .bind(caller.vo.clone())
        .bind(field.name.clone())
        .bind(field.kind.name())
        .bind(field.scope.name())
        .execute(self.db.pool())
        .await;
        match done {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Err(
                DmsError::AlreadyExists(format!("field {} exists", field.name)),
            ),
            Err(e) => Err(e.into()),
        }
    }

    /// Remove a field and every value of it in the caller's VO.
    pub async fn remove_field(&self, caller: &Caller, name: &str) -> Result<()> {
        let fields = self.fields(&caller.vo).await?;
        let Some(field) = fields.get(name) else {
            return Err(DmsError::NotFound(format!(
                "no metadata field '{}'",
                clip(name)
            )));
        };
        let vo_root = Lfn::parse(&format!("/{}", caller.vo)).map_err(DmsError::InvalidArgument)?;
        let root = self.dir(&vo_root).await?;
        let mut tx = self.db.pool().begin().await?;
        if let Some(root) = root {
            let sql = match field.scope {
                Scope::Directory => {
                    "DELETE FROM FC_DirMeta WHERE Field = ? AND DirID IN \
                     (SELECT Descendant FROM FC_DirClosure WHERE Ancestor = ?)"
                }
                Scope::File => {
                    "DELETE FROM FC_FileMeta WHERE Field = ? AND FileID IN (SELECT f.FileID FROM FC_Files f \
                     JOIN FC_DirClosure c ON c.Descendant = f.DirID WHERE c.Ancestor = ?)"
                }
            };
            sqlx::query(self.db.sql(sql))
                .bind(name.to_string())
                .bind(root.id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            self.db
                .sql("DELETE FROM FC_MetaFields WHERE VO = ? AND Name = ?"),
        )
        .bind(caller.vo.clone())
        .bind(name.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The fields of `vo`, by name.
    pub async fn fields(&self, vo: &str) -> Result<BTreeMap<String, Field>> {
        let rows = sqlx::query(
            self.db
                .sql("SELECT Name, Type, Scope FROM FC_MetaFields WHERE VO = ? ORDER BY Name"),
        )
        .bind(vo.to_string())
        .fetch_all(self.db.pool())
        .await?;
        let mut out = BTreeMap::new();
        for r in rows {
            let name: String = r.try_get(0)?;
            let kind: String = r.try_get(1)?;
            let scope: String = r.try_get(2)?;
            out.insert(
                name.clone(),
                Field {
                    name,
                    kind: MetaType::parse(&kind)?,
                    scope: Scope::parse(&scope)?,
                },
            );
        }
        Ok(out)
    }

    /// Set metadata on a directory (directory fields) or a file (file
    /// fields); the caller needs write access to it.
    pub async fn set_metadata(
        &self,
        caller: &Caller,
        path: &str,
        values: &BTreeMap<String, String>,
    ) -> Result<()> {
        super::with_retry(|| self.try_set_metadata(caller, path, values)).await
    }

    async fn try_set_metadata(
        &self,
        caller: &Caller,
        path: &str,
        values: &BTreeMap<String, String>,
    ) -> Result<()> {
        let l = Lfn::parse(path).map_err(DmsError::InvalidArgument)?;
        caller.check_vo(&l)?;
        let fields = self.fields(&caller.vo).await?;
        let target = self.target(caller, &l, Want::Write).await?;
        let mut typed = Vec::new();
        for (name, text) in values {
            let field = fields.get(name).ok_or_else(|| {
                DmsError::InvalidArgument(format!(
                    "unknown metadata field '{}' (declare it first)",
                    clip(name)
                ))
            })?;
            let wanted = match target {
                Target::Dir(_) => Scope::Directory,
                Target::File(_) => Scope::File,
            };
            if field.scope != wanted {
                return Err(DmsError::InvalidArgument(format!(
                    "{name} is a {} field; {l} is a {}",
                    field.scope.name(),
                    wanted.name()
                )));
            }
            typed.push((field.clone(), Value::parse(field.kind, text, name)?));
        }
        let mut tx = self.db.pool().begin().await?;
        for (field, value) in typed {
            match target {
                Target::Dir(id) => {
                    // One directory per branch holds a field.
                    let clash: Option<(String, i64)> = sqlx::query_as(self.db.sql(
                        "SELECT d.Path, c.Depth FROM FC_DirMeta m JOIN FC_DirClosure c ON c.Ancestor = m.DirID \
                         JOIN FC_Dirs d ON d.DirID = m.DirID WHERE c.Descendant = ? AND c.Depth > 0 AND m.Field = ? \
                         UNION ALL SELECT d.Path, -c.Depth FROM FC_DirMeta m JOIN FC_DirClosure c ON c.Descendant = m.DirID \
                         JOIN FC_Dirs d ON d.DirID = m.DirID WHERE c.Ancestor = ? AND c.Depth > 0 AND m.Field = ?",
                    ))
                    .bind(id)
                    .bind(field.name.clone())
                    .bind(id)
                    .bind(field.name.clone())
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some((other, depth)) = clash {
                        return Err(DmsError::FailedPrecondition(format!(
                            "{} is set on {other} {}; a directory field is set once per branch",
                            field.name,
                            if depth > 0 { "above" } else { "below" }
                        )));
                    }
                    self.put_value(&mut tx, "FC_DirMeta", "DirID", id, &field, &value)
                        .await?;
                }
                Target::File(id) => {
                    self.put_value(&mut tx, "FC_FileMeta", "FileID", id, &field, &value)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn put_value(
        &self,
        tx: &mut sqlx::AnyConnection,
        table: &'static str,
        key: &'static str,
        id: i64,
        field: &Field,
        value: &Value,
    ) -> Result<()> {
        sqlx::query(
            self.db
                .sql_dynamic(format!("DELETE FROM {table} WHERE {key} = ? AND Field = ?")),
        )
        .bind(id)
        .bind(field.name.clone())
        .execute(&mut *tx)
        .await?;
        let q = sqlx::query(self.db.sql_dynamic(format!(
            "INSERT INTO {table} ({key}, Field, {}) VALUES (?, ?, ?)",
            field.kind.column()
        )))
        .bind(id)
        .bind(field.name.clone());
        value.bind(q).execute(&mut *tx).await?;
        Ok(())
    }

    /// Remove metadata values from a directory or a file.
    pub async fn remove_metadata(
        &self,
        caller: &Caller,
        path: &str,
        names: &[String],
    ) -> Result<()> {
        let l = Lfn::parse(path).map_err(DmsError::InvalidArgument)?;
        caller.check_vo(&l)?;
        let (table, key, id) = match self.target(caller, &l, Want::Write).await? {
            Target::Dir(id) => ("FC_DirMeta", "DirID", id),
            Target::File(id) => ("FC_FileMeta", "FileID", id),
        };
        if names.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "DELETE FROM {table} WHERE {key} = ? AND Field IN ({})",
            list_placeholders(names.len())
        );
        let mut q = sqlx::query(self.db.sql_dynamic(sql)).bind(id);
        for n in names {
            q = q.bind(n.clone());
        }
        q.execute(self.db.pool()).await?;
        Ok(())
    }

    /// The metadata of each path: its own values and those it inherits,
    /// with the directory that sets them.
    pub async fn get_metadata(
        &self,
        caller: &Caller,
        paths: &[String],
    ) -> Result<(
        BTreeMap<String, BTreeMap<String, (Value, Option<String>)>>,
        BTreeMap<String, DmsError>,
    )> {
        let mut out = BTreeMap::new();
        let mut failed = BTreeMap::new();
        let fields = self.fields(&caller.vo).await?;
        for p in paths {
            let r = async {
                let l = Lfn::parse(p).map_err(DmsError::InvalidArgument)?;
                caller.check_vo(&l)?;
                let target = self.target(caller, &l, Want::Read).await?;
                let mut values: BTreeMap<String, (Value, Option<String>)> = BTreeMap::new();
                let (own_table, own_key, own_id, dir_id) = match target {
                    Target::Dir(id) => ("FC_DirMeta", "DirID", id, id),
                    Target::File(id) => {
                        let dir: i64 = sqlx::query_scalar(
                            self.db.sql("SELECT DirID FROM FC_Files WHERE FileID = ?"),
                        )
                        .bind(id)
                        .fetch_one(self.db.pool())
                        .await?;
                        ("FC_FileMeta", "FileID", id, dir)
                    }
                };
                let own = sqlx::query(self.db.sql_dynamic(format!(
                    "SELECT Field, IntValue, FloatValue, StrValue FROM {own_table} WHERE {own_key} = ?"
                )))
                .bind(own_id)
                .fetch_all(self.db.pool())
                .await?;
                for r in own {
                    if let Some(v) = read_value(&r, &fields)? {
                        values.insert(v.0, (v.1, None));
                    }
                }
                let inherited = sqlx::query(self.db.sql(
                    "SELECT m.Field, m.IntValue, m.FloatValue, m.StrValue, d.Path FROM FC_DirMeta m \
                     JOIN FC_DirClosure c ON c.Ancestor = m.DirID JOIN FC_Dirs d ON d.DirID = m.DirID \
                     WHERE c.Descendant = ? AND m.DirID <> ?",
                ))
                .bind(dir_id)
                .bind(own_id * i64::from(matches!(target, Target::Dir(_))))
                .fetch_all(self.db.pool())
                .await?;
                for r in inherited {
                    if let Some(v) = read_value(&r, &fields)? {
                        let from: String = r.try_get(4)?;
                        values.entry(v.0).or_insert((v.1, Some(from)));
                    }
                }
                Ok::<_, DmsError>(values)
            }
            .await;
            match r {
                Ok(v) => {
                    out.insert(p.clone(), v);
                }
                Err(e) => {
                    failed.insert(p.clone(), e);
                }
            }
        }
        Ok((out, failed))
    }

    /// The directory or file at `l`, checked for `want`.
    async fn target(&self, caller: &Caller, l: &Lfn, want: Want) -> Result<Target> {
        if let Some(d) = self.dir(l).await? {
            d.perm.check(caller, want, l.as_str())?;
            return Ok(Target::Dir(d.id));
        }
        let (mut found, mut failed) = self.lookup_files(caller, &[l.to_string()], want).await?;
        if let Some(e) = failed.remove(l.as_str()) {
            return Err(match e {
                DmsError::NotFound(_) => {
                    DmsError::NotFound(format!("{l}: no such file or directory"))
                }
                e => e,
            });
        }
        let f = found
            .remove(l.as_str())
            .ok_or_else(|| DmsError::NotFound(format!("{l}: no such file or directory")))?;
        Ok(Target::File(f.id))
    }

    /// Compile a query of the caller's VO to a condition on `f` (FC_Files).
    pub async fn compile(&self, caller: &Caller, text: &str) -> Result<Option<Compiled>> {
        let Some(expr) =
            query::parse(text).map_err(|e| DmsError::InvalidArgument(format!("query: {e}")))?
        else {
            return Ok(None);
        };
        let fields = self.fields(&caller.vo).await?;
        let mut binds = Vec::new();
        let sql = compile_expr(&expr, &fields, &mut binds)?;
        Ok(Some(Compiled { sql, binds }))
    }

    /// One page of the files below `root` (a readable directory) matching
    /// `query`: (file id, LFN) after `after`, in id order.
    pub async fn find_page(
        &self,
        root: i64,
        query: Option<&Compiled>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>> {
        let cond = query
            .map(|c| format!(" AND ({})", c.sql))
            .unwrap_or_default();
        // Files in id order from `after` (the primary key), each checked
        // against the subtree and the query's sets, each set computed once:
        // a page costs the files it passes over, and a whole query the
        // files of the catalog once, however the pages fall.
        let sql = format!(
            "SELECT {}f.FileID, d.Path, f.Name FROM FC_Files f{} JOIN FC_Dirs d ON d.DirID = f.DirID \
             WHERE f.FileID > ? AND f.Status = ? \
             AND f.DirID IN (SELECT c.Descendant FROM FC_DirClosure c WHERE c.Ancestor = ?){cond} \
             ORDER BY f.FileID LIMIT ?",
            self.straight(),
            self.force("PRIMARY")
        );
        let mut q = sqlx::query(self.db.sql_dynamic(sql))
            .bind(after)
            .bind(GOOD)
            .bind(root);
        if let Some(c) = query {
            for b in &c.binds {
                q = b.bind(q);
            }
        }
        let rows = q
            .bind(i64::try_from(limit).unwrap_or(1000))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let (id, dir, name): (i64, String, String) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                Ok((id, format!("{dir}/{name}")))
            })
            .collect()
    }
}

#[derive(Clone, Copy)]
enum Target {
    Dir(i64),
    File(i64),
}

fn read_value(
    r: &sqlx::any::AnyRow,
    fields: &BTreeMap<String, Field>,
) -> std::result::Result<Option<(String, Value)>, sqlx::Error> {
    let name: String = r.try_get(0)?;
    let Some(field) = fields.get(&name) else {
        return Ok(None);
    };
    let v = match field.kind {
        MetaType::Int => r.try_get::<Option<i64>, _>(1)?.map(Value::Int),
        MetaType::Date => r.try_get::<Option<i64>, _>(1)?.map(Value::Date),
        MetaType::Float => r.try_get::<Option<f64>, _>(2)?.map(Value::Float),
        MetaType::Str => r.try_get::<Option<String>, _>(3)?.map(Value::Str),
    };
    Ok(v.map(|v| (name, v)))
}

fn compile_expr(
    e: &Expr,
    fields: &BTreeMap<String, Field>,
    binds: &mut Vec<Value>,
) -> Result<String> {
    Ok(match e {
        Expr::And(items) | Expr::Or(items) => {
            let joiner = if matches!(e, Expr::And(_)) {
                " AND "
            } else {
                " OR "
            };
            let parts = items
                .iter()
                .map(|i| compile_expr(i, fields, binds))
                .collect::<Result<Vec<_>>>()?;
            format!("({})", parts.join(joiner))
        }
        Expr::Not(inner) => format!("NOT ({})", compile_expr(inner, fields, binds)?),
        Expr::Pred(p) => compile_pred(&p.field, &p.test, fields, binds)?,
    })
}

/// `col op ?` (or `col IN (…)`) for a test on a value column.
fn value_test(
    col: &str,
    kind: MetaType,
    field: &str,
    test: &Test,
    binds: &mut Vec<Value>,
) -> Result<String> {
    Ok(match test {
        Test::Cmp(op, v) => {
            // Strings compare too (byte order), as DIRAC allows.
            binds.push(Value::parse(kind, v, field)?);
            format!("{col} {} ?", op.sql())
        }
        Test::In(vs) | Test::NotIn(vs) => {
            for v in vs {
                binds.push(Value::parse(kind, v, field)?);
            }
            format!(
                "{col} {}IN ({})",
                if matches!(test, Test::NotIn(_)) {
                    "NOT "
                } else {
                    ""
                },
                list_placeholders(vs.len())
            )
        }
        Test::Any | Test::Missing => {
            return Err(DmsError::Internal(format!(
                "{field}: Any/Missing is not a value test"
            )));
        }
    })
}

fn compile_pred(
    name: &str,
    test: &Test,
    fields: &BTreeMap<String, Field>,
    binds: &mut Vec<Value>,
) -> Result<String> {
    if name.eq_ignore_ascii_case("SE") {
        return Ok(match test {
            Test::Any => "f.FileID IN (SELECT r.FileID FROM FC_Replicas r)".into(),
            Test::Missing => "f.FileID NOT IN (SELECT r.FileID FROM FC_Replicas r)".into(),
            Test::Cmp(Op::Ne, _) | Test::NotIn(_) => {
                // "not at these SEs": no replica at any of them.
                let positive = match test {
                    Test::Cmp(_, v) => Test::In(vec![v.clone()]),
                    Test::NotIn(vs) => Test::In(vs.clone()),
                    _ => Test::Any,
                };
                format!(
                    "f.FileID NOT IN (SELECT r.FileID FROM FC_Replicas r WHERE {})",
                    value_test("r.SE", MetaType::Str, name, &positive, binds)?
                )
            }
            Test::Cmp(Op::Eq, _) | Test::In(_) => format!(
                "f.FileID IN (SELECT r.FileID FROM FC_Replicas r WHERE {})",
                value_test("r.SE", MetaType::Str, name, test, binds)?
            ),
            Test::Cmp(..) => {
                return Err(DmsError::InvalidArgument(
                    "SE takes =, !=, in, not in, Any or Missing".into(),
                ));
            }
        });
    }
    if name.eq_ignore_ascii_case("Status") {
        return match test {
            Test::Any => Ok("1 = 1".into()),
            Test::Missing => Ok("1 = 0".into()),
            _ => value_test("f.Status", MetaType::Str, name, test, binds),
        };
    }
    if let Some((col, kind)) = standard(name) {
        return match test {
            Test::Any => Ok("1 = 1".into()),
            Test::Missing => Ok("1 = 0".into()),
            _ => value_test(col, kind, name, test, binds),
        };
    }
    let field = fields.get(name).ok_or_else(|| {
        DmsError::InvalidArgument(format!("query: unknown metadata field '{}'", clip(name)))
    })?;
    // Uncorrelated IN subqueries: the database computes each set once (the
    // directories a directory field selects, expanded to everything below
    // them; the files a file field selects) and joins it on an index,
    // instead of probing per file.
    let (key, set) = match field.scope {
        Scope::File => (
            "f.FileID",
            "SELECT m.FileID FROM FC_FileMeta m WHERE m.Field = ?",
        ),
        Scope::Directory => (
            "f.DirID",
            "SELECT c2.Descendant FROM FC_DirMeta m JOIN FC_DirClosure c2 ON c2.Ancestor = m.DirID WHERE m.Field = ?",
        ),
    };
    binds.push(Value::Str(field.name.clone()));
    Ok(match test {
        Test::Any => format!("{key} IN ({set})"),
        Test::Missing => format!("{key} NOT IN ({set})"),
        _ => {
            let cond = value_test(
                &format!("m.{}", field.kind.column()),
                field.kind,
                name,
                test,
                binds,
            )?;
            format!("{key} IN ({set} AND {cond})")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> BTreeMap<String, Field> {
        [
            ("energy", MetaType::Float, Scope::Directory),
            ("particle", MetaType::Str, Scope::Directory),
            ("run", MetaType::Int, Scope::File),
            ("taken", MetaType::Date, Scope::File),
        ]
        .into_iter()
        .map(|(n, k, s)| {
            (
                n.to_string(),
                Field {
                    name: n.into(),
                    kind: k,
                    scope: s,
                },
            )
        })
        .collect()
    }

    fn compile(text: &str) -> Result<Compiled> {
        let expr = query::parse(text)
            .map_err(DmsError::InvalidArgument)?
            .expect("non-empty");
        let mut binds = Vec::new();
        let sql = compile_expr(&expr, &fields(), &mut binds)?;
        Ok(Compiled { sql, binds })
    }

    #[test]
    fn values_are_bound_never_spliced() {
        let c = compile("particle='x'' OR 1=1 --' and run in (1,2) and Size>5").expect("compiles");
        assert!(!c.sql.contains("OR 1=1"), "{}", c.sql);
        assert_eq!(c.sql.matches('?').count(), c.binds.len());
        assert_eq!(c.binds[0], Value::Str("particle".into()));
    }

    #[test]
    fn types_and_names_are_checked() {
        for (text, says) in [
            ("run=abc", "not a int value"),
            ("energy>high", "not a float value"),
            ("taken<yesterday", "not a date value"),
            ("nosuch=1", "unknown metadata field"),
            ("SE>x", "SE takes"),
            ("Size=1.5", "not a int value"),
        ] {
            let err = compile(text).err().expect(text).to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
        assert!(compile("taken>=2024-01-01 and taken<'2024-02-01 12:00:00'").is_ok());
        assert!(compile("particle=Missing or energy=Any").is_ok());
        assert!(check_field_name("Size").is_err());
        assert!(check_field_name("or").is_err());
        assert!(check_field_name("9x").is_err());
        assert!(check_field_name("run_number").is_ok());
        assert_eq!(parse_date("2024-01-01"), Some(1_704_067_200));
        assert_eq!(Value::Date(1_704_067_200).display(), "2024-01-01T00:00:00Z");
    }
}
