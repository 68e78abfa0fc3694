//! DiracX's job search language turned into SQL, as plain functions: filters
//! (eq, neq, gt, lt, like, not like, in, not in) over a fixed catalogue of
//! Jobs columns, sort keys and summary groupings. Every identifier comes from
//! the catalogue and every value is bound, so no user text reaches the SQL.

use dirac_proto::common::{Filter, Sort};

use crate::error::WmsError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Int,
    Text,
}

/// Searchable Jobs columns, in the order `JOB_SELECT` reads them.
pub const COLUMNS: &[(&str, ColumnType)] = &[
    ("JobID", ColumnType::Int),
    ("Status", ColumnType::Text),
    ("MinorStatus", ColumnType::Text),
    ("ApplicationStatus", ColumnType::Text),
    ("Owner", ColumnType::Text),
    ("OwnerGroup", ColumnType::Text),
    ("VO", ColumnType::Text),
    ("JobName", ColumnType::Text),
    ("JobGroup", ColumnType::Text),
    ("JobType", ColumnType::Text),
    ("Site", ColumnType::Text),
    ("UserPriority", ColumnType::Int),
    ("SubmissionTime", ColumnType::Text),
    ("LastUpdateTime", ColumnType::Text),
    ("StartExecTime", ColumnType::Text),
    ("EndExecTime", ColumnType::Text),
    ("HeartBeatTime", ColumnType::Text),
    ("RescheduleTime", ColumnType::Text),
    ("RescheduleCounter", ColumnType::Int),
    ("CPUTime", ColumnType::Int),
];

/// A value to bind.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Int(i64),
    Text(String),
}

/// A WHERE clause (without the keyword; `1=1` when empty) and its binds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Where {
    pub sql: String,
    pub binds: Vec<Bind>,
}

/// Most values all filters of one search may carry (every backend's bind
/// limit is above it).
pub const MAX_BINDS: usize = 30_000;

/// Most values one `in` filter may carry.
pub const MAX_IN_VALUES: usize = 10_000;

/// The searchable columns of one table.
#[derive(Debug, Clone, Copy)]
pub struct Catalogue {
    /// What a row is, for messages ("job", "pilot").
    pub what: &'static str,
    pub columns: &'static [(&'static str, ColumnType)],
}

/// Jobs columns.
pub const JOBS: Catalogue = Catalogue {
    what: "job",
    columns: COLUMNS,
};

/// PilotAgents columns.
pub const PILOTS: Catalogue = Catalogue {
    what: "pilot",
    columns: &[
        ("PilotID", ColumnType::Int),
        ("PilotStamp", ColumnType::Text),
        ("PilotJobReference", ColumnType::Text),
        ("VO", ColumnType::Text),
        ("GridSite", ColumnType::Text),
        ("DestinationSite", ColumnType::Text),
        ("Queue", ColumnType::Text),
        ("GridType", ColumnType::Text),
        ("Status", ColumnType::Text),
        ("SubmissionTime", ColumnType::Text),
        ("LastUpdateTime", ColumnType::Text),
        ("CurrentJobID", ColumnType::Int),
    ],
};

impl Catalogue {
    pub fn column(&self, name: &str) -> Result<(&'static str, ColumnType), WmsError> {
        self.columns
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(name))
            .copied()
            .ok_or_else(|| {
                let known: Vec<&str> = self.columns.iter().map(|(c, _)| *c).collect();
                WmsError::InvalidArgument(format!(
                    "unknown {} parameter '{name}' (known: {})",
                    self.what,
                    known.join(", ")
                ))
            })
    }
}

/// A Jobs column by (case-insensitive) name.
pub fn column(name: &str) -> Result<(&'static str, ColumnType), WmsError> {
    JOBS.column(name)
}

fn bind(col: &str, ty: ColumnType, value: &str) -> Result<Bind, WmsError> {
    match ty {
        ColumnType::Text => Ok(Bind::Text(value.to_string())),
        ColumnType::Int => {
            value.trim().parse::<i64>().map(Bind::Int).map_err(|_| {
                WmsError::InvalidArgument(format!("{col}: '{value}' is not an integer"))
            })
        }
    }
}

/// Which jobs a caller may see at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    All,
    /// Every job of this VO.
    Vo {
        vo: &'a str,
    },
    /// One job (job tokens).
    Job {
        job_id: u64,
        vo: &'a str,
    },
    /// Jobs of this user in this VO.
    Owner {
        owner: &'a str,
        vo: &'a str,
    },
    /// Jobs of this group in this VO (JobSharing).
    Group {
        group: &'a str,
        vo: &'a str,
    },
}

/// AND of `filters` within the caller's scope.
pub fn build_where(filters: &[Filter], scope: Scope<'_>) -> Result<Where, WmsError> {
    build_where_in(&JOBS, filters, scope)
}

/// AND of `filters` over the columns of `catalogue`, within `scope`.
pub fn build_where_in(
    catalogue: &Catalogue,
    filters: &[Filter],
    scope: Scope<'_>,
) -> Result<Where, WmsError> {
    let mut parts = Vec::new();
    let mut binds = Vec::new();
    match scope {
        Scope::All => {}
        Scope::Vo { vo } => {
            parts.push("VO = ?".to_string());
            binds.push(Bind::Text(vo.to_string()));
        }
        Scope::Job { job_id, vo } => {
            parts.push("JobID = ? AND VO = ?".to_string());
            binds.push(Bind::Int(i64::try_from(job_id).unwrap_or(i64::MAX)));
            binds.push(Bind::Text(vo.to_string()));
        }
        Scope::Owner { owner, vo } => {
            parts.push("Owner = ? AND VO = ?".to_string());
            binds.push(Bind::Text(owner.to_string()));
            binds.push(Bind::Text(vo.to_string()));
        }
        Scope::Group { group, vo } => {
            parts.push("OwnerGroup = ? AND VO = ?".to_string());
            binds.push(Bind::Text(group.to_string()));
            binds.push(Bind::Text(vo.to_string()));
        }
    }
    for f in filters {
        let (col, ty) = catalogue.column(&f.parameter)?;
        let op = f.operator.trim().to_ascii_lowercase();
        let scalar = |sql_op: &str,
                      parts: &mut Vec<String>,
                      binds: &mut Vec<Bind>|
         -> Result<(), WmsError> {
            if !f.values.is_empty() {
                return Err(WmsError::InvalidArgument(format!(
                    "{col}: operator '{op}' takes one value, not a list"
                )));
            }
            binds.push(bind(col, ty, &f.value)?);
            parts.push(format!("{col} {sql_op} ?"));
            Ok(())
        };
        match op.as_str() {
            "eq" => scalar("=", &mut parts, &mut binds)?,
            "neq" => scalar("<>", &mut parts, &mut binds)?,
            "gt" => scalar(">", &mut parts, &mut binds)?,
            "lt" => scalar("<", &mut parts, &mut binds)?,
            "like" | "not like" => {
                if ty != ColumnType::Text {
                    return Err(WmsError::InvalidArgument(format!(
                        "{col}: '{op}' needs a text parameter"
                    )));
                }
                scalar(
                    if op == "like" { "LIKE" } else { "NOT LIKE" },
                    &mut parts,
                    &mut binds,
                )?;
            }
            "in" | "not in" => {
                if f.values.is_empty() {
                    return Err(WmsError::InvalidArgument(format!(
                        "{col}: operator '{op}' needs a list of values"
                    )));
                }
                if f.values.len() > MAX_IN_VALUES {
                    return Err(WmsError::InvalidArgument(format!(
                        "{col}: at most {MAX_IN_VALUES} values in one '{op}'"
                    )));
                }
                for v in &f.values {
                    binds.push(bind(col, ty, v)?);
                }
                let list = dirac_core::db::list_placeholders(f.values.len());
                parts.push(format!(
                    "{col} {} ({list})",
                    if op == "in" { "IN" } else { "NOT IN" }
                ));
            }
            other => {
                return Err(WmsError::InvalidArgument(format!(
                    "{col}: unknown operator '{other}' (eq, neq, gt, lt, like, not like, in, not in)"
                )));
            }
        }
    }
    if binds.len() > MAX_BINDS {
        return Err(WmsError::InvalidArgument(format!(
            "the filters carry {} values; at most {MAX_BINDS} in one search",
            binds.len()
        )));
    }
    let sql = if parts.is_empty() {
        "1=1".to_string()
    } else {
        parts.join(" AND ")
    };
    Ok(Where { sql, binds })
}

/// ORDER BY list; JobID breaks ties so pages are stable.
pub fn build_order(sort: &[Sort]) -> Result<String, WmsError> {
    let mut keys = Vec::new();
    let mut has_id = false;
    for s in sort {
        let (col, _) = column(&s.parameter)?;
        let dir = match s.direction.to_ascii_lowercase().as_str() {
            "" | "asc" => "ASC",
            "desc" => "DESC",
            other => {
                return Err(WmsError::InvalidArgument(format!(
                    "sort {col}: unknown direction '{other}' (asc or desc)"
                )));
            }
        };
        has_id |= col == "JobID";
        keys.push(format!("{col} {dir}"));
    }
    if !has_id {
        keys.push("JobID ASC".into());
    }
    Ok(keys.join(", "))
}

/// Columns of a summary, validated and deduplicated, in request order.
pub fn build_grouping(grouping: &[String]) -> Result<Vec<(&'static str, ColumnType)>, WmsError> {
    if grouping.is_empty() {
        return Err(WmsError::InvalidArgument(
            "summary needs at least one grouping parameter".into(),
        ));
    }
    let mut cols: Vec<(&'static str, ColumnType)> = Vec::new();
    for g in grouping {
        let c = column(g)?;
        if !cols.contains(&c) {
            cols.push(c);
        }
    }
    Ok(cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(p: &str, op: &str, v: &str, vs: &[&str]) -> Filter {
        Filter {
            parameter: p.into(),
            operator: op.into(),
            value: v.into(),
            values: vs.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn check(filter: Filter, expected: Result<(&str, Vec<Bind>), &str>) {
        let got = build_where(&[filter], Scope::All);
        match (got, expected) {
            (Ok(w), Ok((sql, binds))) => {
                assert_eq!(w.sql, sql);
                assert_eq!(w.binds, binds);
            }
            (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "'{e}' lacks '{msg}'"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn every_operator() {
        let t = |s: &str| Bind::Text(s.into());
        check(
            f("Status", "eq", "Waiting", &[]),
            Ok(("Status = ?", vec![t("Waiting")])),
        );
        check(
            f("status", "neq", "Done", &[]),
            Ok(("Status <> ?", vec![t("Done")])),
        );
        check(
            f("JobID", "gt", "10", &[]),
            Ok(("JobID > ?", vec![Bind::Int(10)])),
        );
        check(
            f("JobID", "lt", " 5 ", &[]),
            Ok(("JobID < ?", vec![Bind::Int(5)])),
        );
        check(
            f("JobName", "like", "bench_%", &[]),
            Ok(("JobName LIKE ?", vec![t("bench_%")])),
        );
        check(
            f("JobName", "not like", "x%", &[]),
            Ok(("JobName NOT LIKE ?", vec![t("x%")])),
        );
        check(
            f("Site", "in", "", &["A", "B"]),
            Ok(("Site IN (?, ?)", vec![t("A"), t("B")])),
        );
        check(
            f("JobID", "not in", "", &["1", "2"]),
            Ok(("JobID NOT IN (?, ?)", vec![Bind::Int(1), Bind::Int(2)])),
        );
    }

    #[test]
    fn bad_filters_name_the_problem() {
        check(
            f("Status", "regex", "x", &[]),
            Err("unknown operator 'regex'"),
        );
        check(
            f("Nope", "eq", "x", &[]),
            Err("unknown job parameter 'Nope'"),
        );
        check(
            f("JobID", "eq", "ten", &[]),
            Err("JobID: 'ten' is not an integer"),
        );
        check(f("JobID", "like", "1%", &[]), Err("needs a text parameter"));
        check(f("Site", "in", "", &[]), Err("needs a list of values"));
        check(f("Site", "eq", "A", &["B"]), Err("takes one value"));
        check(
            f("Status; DROP TABLE Jobs", "eq", "x", &[]),
            Err("unknown job parameter"),
        );
    }

    #[test]
    fn too_many_values_are_refused() {
        let values: Vec<String> = (0..MAX_IN_VALUES).map(|i| i.to_string()).collect();
        let filter = Filter {
            parameter: "JobID".into(),
            operator: "in".into(),
            value: String::new(),
            values,
        };
        let four = vec![filter.clone(), filter.clone(), filter.clone(), filter];
        assert!(build_where(&four[..3], Scope::All).is_ok());
        let err = build_where(&four, Scope::All)
            .map(|_| ())
            .expect_err("over the bind limit");
        assert!(err.to_string().contains("at most 30000"), "{err}");
    }

    #[test]
    fn owner_scope_and_conjunction() {
        let w = build_where(
            &[f("Status", "eq", "Done", &[])],
            Scope::Owner {
                owner: "alice",
                vo: "dteam",
            },
        )
        .expect("ok");
        assert_eq!(w.sql, "Owner = ? AND VO = ? AND Status = ?");
        assert_eq!(w.binds.len(), 3);
        assert_eq!(build_where(&[], Scope::All).expect("ok").sql, "1=1");
        let g = build_where(
            &[],
            Scope::Group {
                group: "g",
                vo: "v",
            },
        )
        .expect("ok");
        assert_eq!(g.sql, "OwnerGroup = ? AND VO = ?");
    }

    #[test]
    fn sort_and_grouping() {
        let s = |p: &str, d: &str| Sort {
            parameter: p.into(),
            direction: d.into(),
        };
        assert_eq!(build_order(&[]).expect("ok"), "JobID ASC");
        assert_eq!(
            build_order(&[s("Site", "desc")]).expect("ok"),
            "Site DESC, JobID ASC"
        );
        assert_eq!(
            build_order(&[s("JobID", "desc")]).expect("ok"),
            "JobID DESC"
        );
        assert!(build_order(&[s("Site", "sideways")]).is_err());
        assert_eq!(
            build_grouping(&["Status".into(), "status".into(), "Site".into()])
                .expect("ok")
                .len(),
            2
        );
        assert!(build_grouping(&[]).is_err());
    }
}
