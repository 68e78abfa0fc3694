//! The data model ([`Value`], [`ClassAd`]) and the canonical printer.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use crate::parse::{ParseError, parse_classad};

/// One attribute value.
///
/// Quoted strings and bare tokens both become [`Value::Str`]; a bare token that parses as an
/// `i64` becomes [`Value::Int`]. Floats, placeholders such as `%(X)s`, `yes`, `ANY` and paths
/// stay strings.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    List(Vec<Value>),
    Ad(ClassAd),
}

impl Value {
    /// The string, for [`Value::Str`] only.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Scalars as one string, lists flattened to the strings of their scalar items, ads as nothing.
    pub fn to_strings(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_strings(&mut out);
        out
    }

    fn collect_strings(&self, out: &mut Vec<String>) {
        match self {
            Value::Str(s) => out.push(s.clone()),
            Value::Int(i) => out.push(i.to_string()),
            Value::List(items) => items.iter().for_each(|v| v.collect_strings(out)),
            Value::Ad(_) => {}
        }
    }

    /// The integer, for [`Value::Int`] or a [`Value::Str`] that parses as `i64` once trimmed.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// Whether this value prints on the same line as its attribute name.
    fn is_inline(&self) -> bool {
        match self {
            Value::Str(_) | Value::Int(_) => true,
            Value::Ad(ad) => ad.is_empty(),
            Value::List(items) => {
                const MAX_INLINE_WIDTH: usize = 60;
                let mut width = 0;
                for item in items {
                    width += match item {
                        Value::Str(s) => s.len() + 4,
                        Value::Int(i) => i.to_string().len() + 2,
                        _ => return false,
                    };
                    if width > MAX_INLINE_WIDTH {
                        return false;
                    }
                }
                true
            }
        }
    }

    /// Writes the value on one line (lists as `{ a, b }`, ads as `[ A = 1; ]`).
    pub(crate) fn write_inline(&self, out: &mut String) {
        match self {
            Value::Str(s) => write_quoted(out, s),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::List(items) if items.is_empty() => out.push_str("{}"),
            Value::List(items) => {
                out.push_str("{ ");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write_inline(out);
                }
                out.push_str(" }");
            }
            Value::Ad(ad) if ad.is_empty() => out.push_str("[]"),
            Value::Ad(ad) => {
                out.push_str("[ ");
                for (name, value) in ad.iter() {
                    out.push_str(name);
                    out.push_str(" = ");
                    value.write_inline(out);
                    out.push_str("; ");
                }
                out.push(']');
            }
        }
    }

    /// Writes a multi-line value whose opening bracket sits at `indent`.
    fn write_block(&self, out: &mut String, indent: usize) {
        match self {
            Value::List(items) => {
                push_indent(out, indent);
                out.push_str("{\n");
                for (i, item) in items.iter().enumerate() {
                    if item.is_inline() {
                        push_indent(out, indent + 4);
                        item.write_inline(out);
                    } else {
                        item.write_block(out, indent + 4);
                    }
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                push_indent(out, indent);
                out.push('}');
            }
            Value::Ad(ad) => {
                push_indent(out, indent);
                out.push_str("[\n");
                ad.write_attributes(out, indent + 4);
                push_indent(out, indent);
                out.push(']');
            }
            Value::Str(_) | Value::Int(_) => {
                push_indent(out, indent);
                self.write_inline(out);
            }
        }
    }
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn write_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

/// A ClassAd: insertion-ordered attributes with case-sensitive names.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ClassAd {
    attrs: Vec<(String, Value)>,
}

impl ClassAd {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses JDL text; the outer `[ ... ]` is optional.
    pub fn parse(text: &str) -> Result<ClassAd, ParseError> {
        parse_classad(text)
    }

    pub(crate) fn from_attrs(attrs: Vec<(String, Value)>) -> Self {
        Self { attrs }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Case-insensitive lookup; returns the attribute's real name with its value.
    pub fn get_ci(&self, name: &str) -> Option<(&str, &Value)> {
        self.attrs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(n, v)| (n.as_str(), v))
    }

    /// Replaces the value in place when the attribute exists, appends it otherwise.
    pub fn set(&mut self, name: impl Into<String>, value: Value) {
        let name = name.into();
        match self.attrs.iter_mut().find(|(n, _)| *n == name) {
            Some((_, slot)) => *slot = value,
            None => self.attrs.push((name, value)),
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let index = self.attrs.iter().position(|(n, _)| n == name)?;
        Some(self.attrs.remove(index).1)
    }

    /// Keeps only the attributes for which `keep` returns true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.attrs.retain(|(n, _)| keep(n));
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut Value> {
        self.attrs.iter_mut().map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.attrs.iter().map(|(n, v)| (n.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.attrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }

    /// Canonical multi-line JDL: `[`, one 4-space indented `Name = value;` line per attribute, `]`.
    pub fn to_jdl(&self) -> String {
        let mut out = String::with_capacity(64 + 48 * self.attrs.len());
        out.push_str("[\n");
        self.write_attributes(&mut out, 4);
        out.push(']');
        out
    }

    fn write_attributes(&self, out: &mut String, indent: usize) {
        for (name, value) in &self.attrs {
            push_indent(out, indent);
            out.push_str(name);
            if value.is_inline() {
                out.push_str(" = ");
                value.write_inline(out);
            } else {
                out.push_str(" =\n");
                value.write_block(out, indent + 4);
            }
            out.push_str(";\n");
        }
    }
}

impl fmt::Display for ClassAd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_jdl())
    }
}

impl FromStr for ClassAd {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ClassAd::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Value {
        Value::List(items.iter().map(|s| Value::from(*s)).collect())
    }

    #[test]
    fn accessors() {
        assert_eq!(Value::from("x").as_str(), Some("x"));
        assert_eq!(Value::Int(3).as_str(), None);
        assert_eq!(Value::Int(3).as_int(), Some(3));
        assert_eq!(Value::from(" 42 ").as_int(), Some(42));
        assert_eq!(Value::from("4.2").as_int(), None);
        assert_eq!(list(&["1"]).as_int(), None);
        assert_eq!(Value::Int(7).to_strings(), vec!["7"]);
        let nested = Value::List(vec![
            list(&["a", "b"]),
            Value::Int(1),
            Value::Ad(ClassAd::new()),
        ]);
        assert_eq!(nested.to_strings(), vec!["a", "b", "1"]);
        assert!(Value::Ad(ClassAd::new()).to_strings().is_empty());
    }

    #[test]
    fn set_get_remove_keep_order() {
        let mut ad = ClassAd::new();
        ad.set("B", Value::Int(1));
        ad.set("A", Value::from("x"));
        ad.set("B", Value::Int(2));
        assert_eq!(ad.iter().map(|(n, _)| n).collect::<Vec<_>>(), ["B", "A"]);
        assert_eq!(ad.get("B"), Some(&Value::Int(2)));
        assert_eq!(ad.get("b"), None);
        assert_eq!(ad.get_ci("b"), Some(("B", &Value::Int(2))));
        assert_eq!(ad.remove("B"), Some(Value::Int(2)));
        assert_eq!(ad.remove("B"), None);
        assert_eq!(ad.len(), 1);
        assert!(!ad.is_empty());
    }

    #[test]
    fn prints_canonical_text() {
        let mut inner = ClassAd::new();
        inner.set("CPUTime", Value::Int(5));
        let mut ad = ClassAd::new();
        ad.set("Executable", Value::from("say \"hi\" \\o/"));
        ad.set("CPUTime", Value::Int(86400));
        ad.set("Tags", list(&["a", "b"]));
        ad.set("Empty", Value::List(vec![]));
        ad.set(
            "Long",
            list(&[
                "a-rather-long-file-name-number-one.txt",
                "another-long-file-name.log",
            ]),
        );
        ad.set("Nested", Value::List(vec![list(&["x"]), Value::Int(1)]));
        ad.set("JobRequirements", Value::Ad(inner));
        let expected = r#"[
    Executable = "say \"hi\" \\o/";
    CPUTime = 86400;
    Tags = { "a", "b" };
    Empty = {};
    Long =
        {
            "a-rather-long-file-name-number-one.txt",
            "another-long-file-name.log"
        };
    Nested =
        {
            { "x" },
            1
        };
    JobRequirements =
        [
            CPUTime = 5;
        ];
]"#;
        assert_eq!(ad.to_jdl(), expected);
        assert_eq!(ad.to_string(), expected);
        assert_eq!(ClassAd::parse(expected), Ok(ad));
    }

    #[test]
    fn inline_ad_in_list_round_trips() {
        let mut inner = ClassAd::new();
        inner.set("A", Value::Int(1));
        let v = Value::List(vec![Value::Ad(inner), Value::Ad(ClassAd::new())]);
        let mut text = String::new();
        v.write_inline(&mut text);
        assert_eq!(text, "{ [ A = 1; ], [] }");
        let mut ad = ClassAd::new();
        ad.set("X", v);
        assert_eq!(ad.to_jdl().parse::<ClassAd>(), Ok(ad));
    }
}
