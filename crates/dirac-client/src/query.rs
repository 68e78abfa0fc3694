//! The CLI's search syntax, turned into proto `Filter` and `Sort` messages.
//!
//! ```text
//! Status=Waiting        eq          Site!=LCG.CERN.cern   neq
//! JobID>100             gt          JobID<200             lt
//! JobName~bench_%       like        JobName!~test%        not like
//! Status in Waiting,Running         Site not in A,B
//! ```

use dirac_proto::common::{Filter, Sort};

use crate::ClientError;

/// Symbolic operators, longest first so that `!=` wins over `=`.
const SYMBOLS: &[(&str, &str)] = &[
    ("!=", "neq"),
    ("!~", "not like"),
    ("=", "eq"),
    (">", "gt"),
    ("<", "lt"),
    ("~", "like"),
];

fn filter_err(expr: &str, reason: impl Into<String>) -> ClientError {
    ClientError::InvalidFilter {
        expr: expr.to_owned(),
        reason: reason.into(),
    }
}

/// Removes one pair of matching quotes around a value.
fn unquote(value: &str) -> &str {
    let value = value.trim();
    for q in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(q) && value.ends_with(q) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// Strips a case-insensitive keyword followed by whitespace.
fn strip_keyword<'a>(s: &'a str, keyword: &str) -> Option<&'a str> {
    let head = s.get(..keyword.len())?;
    let rest = &s[keyword.len()..];
    (head.eq_ignore_ascii_case(keyword)
        && (rest.is_empty() || rest.starts_with(char::is_whitespace)))
    .then_some(rest)
}

/// Parses one `--where` expression into a [`Filter`].
///
/// The parameter is a job attribute name (letters, digits, `_`); whitespace
/// around the operator and the values is ignored; `in` and `not in` take a
/// comma-separated list.
pub fn parse_where(expr: &str) -> Result<Filter, ClientError> {
    let text = expr.trim();
    let name_len = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    let parameter = &text[..name_len];
    if parameter.is_empty() {
        return Err(filter_err(expr, "expected a parameter name first"));
    }
    let rest = text[name_len..].trim_start();
    if rest.is_empty() {
        return Err(filter_err(
            expr,
            "missing operator (one of = != > < ~ !~ in, not in)",
        ));
    }

    let (operator, list) = if let Some(list) = strip_keyword(rest, "not") {
        let list = strip_keyword(list.trim_start(), "in")
            .ok_or_else(|| filter_err(expr, "expected \"in\" after \"not\""))?;
        ("not in", list)
    } else if let Some(list) = strip_keyword(rest, "in") {
        ("in", list)
    } else {
        let (symbol, operator) = SYMBOLS
            .iter()
            .find(|(symbol, _)| rest.starts_with(symbol))
            .ok_or_else(|| {
                filter_err(
                    expr,
                    "unknown operator (use one of = != > < ~ !~ in, not in)",
                )
            })?;
        let value = &rest[symbol.len()..];
        if (*symbol == ">" || *symbol == "<") && value.starts_with('=') {
            return Err(filter_err(
                expr,
                format!("unsupported operator {symbol}= (use > or <)"),
            ));
        }
        let value = unquote(value);
        if value.is_empty() {
            return Err(filter_err(expr, "missing value"));
        }
        return Ok(Filter {
            parameter: parameter.to_owned(),
            operator: (*operator).to_owned(),
            value: value.to_owned(),
            values: Vec::new(),
        });
    };

    if list.trim().is_empty() {
        return Err(filter_err(
            expr,
            format!("missing values after \"{operator}\""),
        ));
    }
    let values: Vec<String> = list.split(',').map(|v| unquote(v).to_owned()).collect();
    if values.iter().any(String::is_empty) {
        return Err(filter_err(
            expr,
            format!("empty value in the list of \"{operator}\""),
        ));
    }
    Ok(Filter {
        parameter: parameter.to_owned(),
        operator: operator.to_owned(),
        value: String::new(),
        values,
    })
}

/// Parses `Parameter[:asc|:desc]` into a [`Sort`]; the direction defaults to
/// `asc` and is case-insensitive.
pub fn parse_sort(expr: &str) -> Result<Sort, ClientError> {
    let err = |reason: &str| ClientError::InvalidSort {
        expr: expr.to_owned(),
        reason: reason.to_owned(),
    };
    let (parameter, direction) = match expr.split_once(':') {
        Some((p, d)) => (p.trim(), d.trim()),
        None => (expr.trim(), "asc"),
    };
    if parameter.is_empty() {
        return Err(err("missing parameter name"));
    }
    if !parameter
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(err("parameter names are letters, digits and _"));
    }
    let direction = if direction.eq_ignore_ascii_case("asc") {
        "asc"
    } else if direction.eq_ignore_ascii_case("desc") {
        "desc"
    } else {
        return Err(err("direction must be asc or desc"));
    };
    Ok(Sort {
        parameter: parameter.to_owned(),
        direction: direction.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `expected` is `Ok((parameter, operator, value, values))` or
    /// `Err(fragment of the message)`.
    fn check(expr: &str, expected: Result<(&str, &str, &str, &[&str]), &str>) {
        match (parse_where(expr), expected) {
            (Ok(f), Ok((p, op, v, vs))) => {
                assert_eq!(f.parameter, p, "parameter of {expr:?}");
                assert_eq!(f.operator, op, "operator of {expr:?}");
                assert_eq!(f.value, v, "value of {expr:?}");
                assert_eq!(f.values, vs, "values of {expr:?}");
            }
            (Err(e), Err(fragment)) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(fragment),
                    "{expr:?}: {msg:?} lacks {fragment:?}"
                );
                assert!(
                    msg.contains(&format!("{expr:?}")),
                    "{msg:?} names no expression"
                );
            }
            (got, want) => panic!("{expr:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn where_expressions() {
        let none: &[&str] = &[];
        check("Status=Waiting", Ok(("Status", "eq", "Waiting", none)));
        check(
            "  Status = Waiting  ",
            Ok(("Status", "eq", "Waiting", none)),
        );
        check(
            "Site!=LCG.CERN.cern",
            Ok(("Site", "neq", "LCG.CERN.cern", none)),
        );
        check("JobID>100", Ok(("JobID", "gt", "100", none)));
        check("JobID < 200", Ok(("JobID", "lt", "200", none)));
        check("JobName~bench_%", Ok(("JobName", "like", "bench_%", none)));
        check(
            "JobName !~ test%",
            Ok(("JobName", "not like", "test%", none)),
        );
        check("JobName=\"a b\"", Ok(("JobName", "eq", "a b", none)));
        check("JobName=x=y", Ok(("JobName", "eq", "x=y", none)));
        check(
            "Status in Waiting,Running",
            Ok(("Status", "in", "", &["Waiting", "Running"])),
        );
        check(
            "Status IN  Waiting , Running ,Done",
            Ok(("Status", "in", "", &["Waiting", "Running", "Done"])),
        );
        check("Site not in A,B", Ok(("Site", "not in", "", &["A", "B"])));
        check("Site  NOT   in  A", Ok(("Site", "not in", "", &["A"])));
        check("index=3", Ok(("index", "eq", "3", none)));
        check("inside=3", Ok(("inside", "eq", "3", none)));
    }

    #[test]
    fn where_errors() {
        check("", Err("expected a parameter name"));
        check("=Waiting", Err("expected a parameter name"));
        check("Status", Err("missing operator"));
        check("Status=", Err("missing value"));
        check("Status ?? x", Err("unknown operator"));
        check("JobID>=5", Err("unsupported operator >="));
        check("Status in A,,B", Err("empty value"));
        check("Status in ", Err("missing values after \"in\""));
        check("Site not in", Err("missing values after \"not in\""));
        check("Status not x", Err("expected \"in\""));
    }

    fn check_sort(expr: &str, expected: Result<(&str, &str), &str>) {
        match (parse_sort(expr), expected) {
            (Ok(s), Ok((p, d))) => {
                assert_eq!(
                    (s.parameter.as_str(), s.direction.as_str()),
                    (p, d),
                    "{expr:?}"
                );
            }
            (Err(e), Err(fragment)) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(fragment),
                    "{expr:?}: {msg:?} lacks {fragment:?}"
                );
                assert!(
                    msg.contains(&format!("{expr:?}")),
                    "{msg:?} names no expression"
                );
            }
            (got, want) => panic!("{expr:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn sort_expressions() {
        check_sort("JobID", Ok(("JobID", "asc")));
        check_sort("JobID:desc", Ok(("JobID", "desc")));
        check_sort("JobID:ASC", Ok(("JobID", "asc")));
        check_sort(" LastUpdateTime : Desc ", Ok(("LastUpdateTime", "desc")));
        check_sort("JobID:down", Err("direction must be asc or desc"));
        check_sort(":desc", Err("missing parameter"));
        check_sort("Job ID", Err("parameter names"));
    }
}
