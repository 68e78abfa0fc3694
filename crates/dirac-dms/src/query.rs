//! The metadata query language of `dirac dfind`: DIRAC's (`field=v`,
//! `field=v1,v2` for "in", `field<v`, `Any`, `Missing`, predicates side by
//! side are ANDed) plus `and`, `or`, `not` and parentheses:
//!
//! ```text
//! energy>10 and (particle=electron or particle=photon)
//! run in (1, 2, 3) not SE=CERN-DST  quality!=bad  tag=Missing
//! ```
//!
//! Pure: text to [`Expr`]. Field names and value types are checked against
//! the catalog's fields when the query is compiled to SQL.

/// Longest query text accepted.
pub const MAX_QUERY_LEN: usize = 16 * 1024;
/// Most predicates in one query.
pub const MAX_PREDICATES: usize = 256;
/// Deepest nesting of parentheses and `not`.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Pred(Pred),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pred {
    pub field: String,
    pub test: Test,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Cmp(Op, String),
    In(Vec<String>),
    NotIn(Vec<String>),
    /// The field has a value.
    Any,
    /// The field has no value.
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

impl Op {
    pub fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Gt => ">",
            Op::Lt => "<",
            Op::Ge => ">=",
            Op::Le => "<=",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    Comma,
    Op(Op),
    Word(String),
    Quoted(String),
}

fn is_word_char(c: char) -> bool {
    !(c.is_whitespace()
        || c.is_control()
        || matches!(c, '(' | ')' | ',' | '\'' | '"' | '=' | '!' | '<' | '>'))
}

fn tokenize(text: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '(' => out.push(Tok::Open),
            ')' => out.push(Tok::Close),
            ',' => out.push(Tok::Comma),
            '=' => {
                // `==` is `=`.
                if chars.peek().is_some_and(|(_, n)| *n == '=') {
                    chars.next();
                }
                out.push(Tok::Op(Op::Eq));
            }
            '!' => match chars.next() {
                Some((_, '=')) => out.push(Tok::Op(Op::Ne)),
                _ => return Err(format!("'!' at {at} must be '!='")),
            },
            '<' | '>' => {
                let eq = chars.peek().is_some_and(|(_, n)| *n == '=');
                if eq {
                    chars.next();
                }
                out.push(Tok::Op(match (c, eq) {
                    ('<', false) => Op::Lt,
                    ('<', true) => Op::Le,
                    ('>', false) => Op::Gt,
                    _ => Op::Ge,
                }));
            }
            '\'' | '"' => {
                // A doubled quote stands for itself (`'it''s'`).
                let mut s = String::new();
                let mut closed = false;
                while let Some((_, n)) = chars.next() {
                    if n == c {
                        if chars.peek().is_some_and(|(_, m)| *m == c) {
                            chars.next();
                            s.push(c);
                            continue;
                        }
                        closed = true;
                        break;
                    }
                    s.push(n);
                }
                if !closed {
                    return Err(format!("the quote opened at {at} is not closed"));
                }
                out.push(Tok::Quoted(s));
            }
            c if c.is_control() => {
                return Err(format!("control character U+{:04X} at {at}", c as u32));
            }
            _ => {
                let mut s = c.to_string();
                while let Some((_, n)) = chars.peek().copied() {
                    if !is_word_char(n) {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push(Tok::Word(s));
            }
        }
    }
    Ok(out)
}

fn keyword(t: Option<&Tok>, kw: &str) -> bool {
    matches!(t, Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
    predicates: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.and()?];
        while keyword(self.peek(), "or") {
            self.pos += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.unary()?];
        loop {
            match self.peek() {
                None | Some(Tok::Close) => break,
                t if keyword(t, "or") => break,
                t if keyword(t, "and") => {
                    self.pos += 1;
                }
                _ => {}
            }
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(items)
        })
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        let e = if keyword(self.peek(), "not") {
            self.pos += 1;
            Expr::Not(Box::new(self.unary()?))
        } else if self.peek() == Some(&Tok::Open) {
            self.pos += 1;
            let inner = self.or()?;
            match self.next() {
                Some(Tok::Close) => inner,
                _ => return Err("a '(' is not closed".into()),
            }
        } else {
            Expr::Pred(self.predicate()?)
        };
        self.depth -= 1;
        Ok(e)
    }

    fn predicate(&mut self) -> Result<Pred, String> {
        let field = match self.next() {
            Some(Tok::Word(w))
                if !["and", "or", "not", "in"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k)) =>
            {
                w
            }
            Some(t) => return Err(format!("expected a field name, found {}", show(&t))),
            None => return Err("expected a field name, found the end".into()),
        };
        self.predicates += 1;
        if self.predicates > MAX_PREDICATES {
            return Err(format!("more than {MAX_PREDICATES} conditions"));
        }
        let test = match self.next() {
            Some(Tok::Op(op)) => {
                let first = self.value(&field)?;
                if op == Op::Eq && matches!(&first, (v, false) if v == "Any") {
                    Test::Any
                } else if op == Op::Eq && matches!(&first, (v, false) if v == "Missing") {
                    Test::Missing
                } else if self.peek() == Some(&Tok::Comma) {
                    // DIRAC's `field=v1,v2`.
                    let mut values = vec![first.0];
                    while self.peek() == Some(&Tok::Comma) {
                        self.pos += 1;
                        values.push(self.value(&field)?.0);
                    }
                    match op {
                        Op::Eq => Test::In(values),
                        Op::Ne => Test::NotIn(values),
                        _ => return Err(format!("{field}: a list of values needs '=' or '!='")),
                    }
                } else {
                    Test::Cmp(op, first.0)
                }
            }
            t if keyword(t.as_ref(), "in") => Test::In(self.list(&field)?),
            t if keyword(t.as_ref(), "not") => {
                if !keyword(self.next().as_ref(), "in") {
                    return Err(format!("{field}: 'not' after a field must be 'not in'"));
                }
                Test::NotIn(self.list(&field)?)
            }
            Some(t) => return Err(format!("{field}: expected an operator, found {}", show(&t))),
            None => return Err(format!("{field}: expected an operator, found the end")),
        };
        Ok(Pred { field, test })
    }

    /// A value and whether it was quoted.
    fn value(&mut self, field: &str) -> Result<(String, bool), String> {
        match self.next() {
            Some(Tok::Word(w)) => Ok((w, false)),
            Some(Tok::Quoted(q)) => Ok((q, true)),
            Some(t) => Err(format!("{field}: expected a value, found {}", show(&t))),
            None => Err(format!("{field}: expected a value, found the end")),
        }
    }

    fn list(&mut self, field: &str) -> Result<Vec<String>, String> {
        if self.next() != Some(Tok::Open) {
            return Err(format!("{field}: 'in' needs a list in parentheses"));
        }
        let mut values = vec![self.value(field)?.0];
        loop {
            match self.next() {
                Some(Tok::Comma) => values.push(self.value(field)?.0),
                Some(Tok::Close) => return Ok(values),
                _ => return Err(format!("{field}: the list is not closed with ')'")),
            }
        }
    }
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Open => "'('".into(),
        Tok::Close => "')'".into(),
        Tok::Comma => "','".into(),
        Tok::Op(op) => format!("'{}'", op.sql()),
        Tok::Word(w) => format!("'{w}'"),
        Tok::Quoted(q) => format!("'{q}'"),
    }
}

/// Parse a query; `None` for an empty one (every file).
pub fn parse(text: &str) -> Result<Option<Expr>, String> {
    if text.len() > MAX_QUERY_LEN {
        return Err(format!("the query is longer than {MAX_QUERY_LEN} bytes"));
    }
    let toks = tokenize(text)?;
    if toks.is_empty() {
        return Ok(None);
    }
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
        predicates: 0,
    };
    let e = p.or()?;
    match p.peek() {
        None => Ok(Some(e)),
        Some(Tok::Close) => Err("a ')' has no '('".into()),
        Some(t) => Err(format!("unexpected {}", show(t))),
    }
}

/// Every predicate of `e`.
pub fn predicates(e: &Expr) -> Vec<&Pred> {
    match e {
        Expr::Pred(p) => vec![p],
        Expr::Not(inner) => predicates(inner),
        Expr::And(items) | Expr::Or(items) => items.iter().flat_map(predicates).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(field: &str, test: Test) -> Expr {
        Expr::Pred(Pred {
            field: field.into(),
            test,
        })
    }

    fn cmp(field: &str, op: Op, v: &str) -> Expr {
        p(field, Test::Cmp(op, v.into()))
    }

    #[test]
    fn the_issue_example_and_precedence() {
        assert_eq!(
            parse("energy>10 and (particle=electron or particle=photon)").expect("ok"),
            Some(Expr::And(vec![
                cmp("energy", Op::Gt, "10"),
                Expr::Or(vec![
                    cmp("particle", Op::Eq, "electron"),
                    cmp("particle", Op::Eq, "photon"),
                ]),
            ]))
        );
        // and binds tighter than or; juxtaposition is and.
        assert_eq!(
            parse("a=1 b=2 or c=3").expect("ok"),
            Some(Expr::Or(vec![
                Expr::And(vec![cmp("a", Op::Eq, "1"), cmp("b", Op::Eq, "2")]),
                cmp("c", Op::Eq, "3"),
            ]))
        );
    }

    #[test]
    fn dirac_forms_and_lists() {
        let check =
            |text: &str, want: Expr| assert_eq!(parse(text).expect(text), Some(want), "{text}");
        check(
            "run=1,2,3",
            p("run", Test::In(vec!["1".into(), "2".into(), "3".into()])),
        );
        check(
            "run!=1,2",
            p("run", Test::NotIn(vec!["1".into(), "2".into()])),
        );
        check(
            "run in (1, 2)",
            p("run", Test::In(vec!["1".into(), "2".into()])),
        );
        check("run NOT IN (1)", p("run", Test::NotIn(vec!["1".into()])));
        check("tag=Any", p("tag", Test::Any));
        check("tag=Missing", p("tag", Test::Missing));
        check("tag='Missing'", cmp("tag", Op::Eq, "Missing"));
        check("x>=1.5", cmp("x", Op::Ge, "1.5"));
        check("n='it''s'", cmp("n", Op::Eq, "it's"));
        check("x<=-2", cmp("x", Op::Le, "-2"));
        check(
            "d<'2024-01-01 10:00:00'",
            cmp("d", Op::Lt, "2024-01-01 10:00:00"),
        );
        check(
            "not (a=1 or b==2)",
            Expr::Not(Box::new(Expr::Or(vec![
                cmp("a", Op::Eq, "1"),
                cmp("b", Op::Eq, "2"),
            ]))),
        );
        assert_eq!(parse("  ").expect("empty"), None);
    }

    #[test]
    fn bad_queries_are_named() {
        for (text, says) in [
            ("a=", "expected a value"),
            ("=1", "expected a field"),
            ("(a=1", "not closed"),
            ("a=1)", "has no '('"),
            ("a ! 1", "must be '!='"),
            ("a='x", "not closed"),
            ("a>1,2", "needs '=' or '!='"),
            ("a in 1", "list in parentheses"),
            ("a in (1 2)", "not closed"),
            ("and=1", "expected a field"),
            ("a=1 or", "found the end"),
            ("a\u{0}=1", "control character"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
        }
        let deep = format!("{}a=1{}", "(".repeat(40), ")".repeat(40));
        assert!(parse(&deep).expect_err("deep").contains("deeper"));
        let many = vec!["a=1"; MAX_PREDICATES + 1].join(" ");
        assert!(parse(&many).expect_err("many").contains("conditions"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in ".{0,200}") {
            let _ = parse(&text);
        }
    }
}
