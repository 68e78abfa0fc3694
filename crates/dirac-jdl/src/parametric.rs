//! Parametric job expansion and placeholder substitution, following DIRAC's `ParametricJob`.
//!
//! A parametric ClassAd defines one or more parameter sequences:
//!
//! - the unnamed sequence: `Parameters = { list }`, or `Parameters = N` with optional
//!   `ParameterStart` (default 1), `ParameterStep` (default 0) and `ParameterFactor` (default 1),
//!   giving `v[0] = start`, `v[i] = v[i-1] * factor + step`;
//! - named sequences: the same attributes with a `.Name` suffix (`Parameters.A`, `ParameterStart.A`).
//!
//! Every sequence has the same length N, and [`expand`] produces N jobs in which `%s`, `%(Name)s`
//! and `%n` are replaced. `%j` is left for [`substitute_job_id`] once the job has an id.

use std::fmt::Write as _;

use crate::ad::{ClassAd, Value};

/// A malformed parametric description. Displays as `Attribute: message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{attribute}: {message}")]
pub struct ParametricError {
    pub attribute: String,
    pub message: String,
}

fn err(attribute: &str, message: impl Into<String>) -> ParametricError {
    ParametricError {
        attribute: attribute.to_owned(),
        message: message.into(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Parameters,
    Start,
    Step,
    Factor,
}

const KEYS: [(&str, Key); 4] = [
    ("Parameters", Key::Parameters),
    ("ParameterStart", Key::Start),
    ("ParameterStep", Key::Step),
    ("ParameterFactor", Key::Factor),
];

/// Classifies `Parameters`, `ParameterStart.A` and so on; the sequence name is `None` for the
/// unnamed sequence.
fn parameter_key(name: &str) -> Option<(Key, Option<&str>)> {
    KEYS.iter().find_map(|&(prefix, key)| {
        let rest = name.strip_prefix(prefix)?;
        if rest.is_empty() {
            return Some((key, None));
        }
        let seq = rest.strip_prefix('.')?;
        (!seq.is_empty()).then_some((key, Some(seq)))
    })
}

/// Whether the ad has `Parameters` or any `Parameters.X`.
pub fn is_parametric(ad: &ClassAd) -> bool {
    ad.iter()
        .any(|(name, _)| matches!(parameter_key(name), Some((Key::Parameters, _))))
}

#[derive(Clone, Copy, Debug)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            // Precision loss is acceptable: floats are only used once a float is involved.
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

fn number(name: &str, value: &Value) -> Result<Num, ParametricError> {
    let text = match value {
        Value::Int(i) => return Ok(Num::Int(*i)),
        Value::Str(s) => s.trim(),
        Value::List(_) | Value::Ad(_) => return Err(err(name, "expected a number")),
    };
    if let Ok(i) = text.parse::<i64>() {
        return Ok(Num::Int(i));
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(Num::Float(f)),
        _ => Err(err(name, format!("illegal value '{text}'"))),
    }
}

/// Prints a float so that it reads as one: `3.0`, `0.5`, `1e300`.
fn float_text(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

#[derive(Default)]
struct Sequence<'a> {
    name: Option<&'a str>,
    list: Option<&'a [Value]>,
    start: Option<Num>,
    step: Option<Num>,
    factor: Option<Num>,
    /// Attribute to blame for arithmetic errors.
    origin: &'a str,
}

impl Sequence<'_> {
    fn values(&self, n: usize) -> Result<Vec<Value>, ParametricError> {
        if let Some(list) = self.list {
            return Ok(list.to_vec());
        }
        let start = self.start.unwrap_or(Num::Int(1));
        let step = self.step.unwrap_or(Num::Int(0));
        let factor = self.factor.unwrap_or(Num::Int(1));
        let mut out = Vec::with_capacity(n);
        if let (Num::Int(start), Num::Int(step), Num::Int(factor)) = (start, step, factor) {
            let mut v = start;
            for i in 0..n {
                if i > 0 {
                    v = v
                        .checked_mul(factor)
                        .and_then(|x| x.checked_add(step))
                        .ok_or_else(|| {
                            err(self.origin, "parameter sequence overflows a 64-bit integer")
                        })?;
                }
                out.push(Value::Int(v));
            }
        } else {
            let (step, factor) = (step.as_f64(), factor.as_f64());
            let mut v = start.as_f64();
            for i in 0..n {
                if i > 0 {
                    v = v * factor + step;
                }
                if !v.is_finite() {
                    return Err(err(
                        self.origin,
                        "parameter sequence overflows a 64-bit float",
                    ));
                }
                out.push(Value::Str(float_text(v)));
            }
        }
        Ok(out)
    }
}

/// Text that a placeholder expands to inside a larger string.
fn value_text(value: &Value) -> String {
    match value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::List(_) | Value::Ad(_) => {
            let mut out = String::new();
            value.write_inline(&mut out);
            out
        }
    }
}

/// Expands a parametric ad into its jobs; a non-parametric ad gives itself.
///
/// Each job loses the `Parameters*`, `ParameterStart*`, `ParameterStep*` and `ParameterFactor*`
/// attributes and gains `Parameter` (or `Parameter.<name>`) and `ParameterNumber`.
pub fn expand(ad: &ClassAd, max_jobs: usize) -> Result<Vec<ClassAd>, ParametricError> {
    if !is_parametric(ad) {
        return Ok(vec![ad.clone()]);
    }

    // The common length of all `Parameters*` vectors.
    let mut length: Option<(i64, &str)> = None;
    for (name, value) in ad.iter() {
        if !matches!(parameter_key(name), Some((Key::Parameters, _))) {
            continue;
        }
        let this = match value {
            Value::List(items) => i64::try_from(items.len()).unwrap_or(i64::MAX),
            other => other
                .as_int()
                .ok_or_else(|| err(name, "expected a list or an integer"))?,
        };
        if let Some((previous, previous_name)) = length
            && previous != this
        {
            return Err(err(
                name,
                format!(
                    "different length of parameter vectors: {previous_name} has {previous}, {name} has {this}"
                ),
            ));
        }
        length = Some((this, name));
    }
    let Some((count, count_attr)) = length else {
        return Ok(vec![ad.clone()]);
    };
    if count < 1 {
        return Err(err(
            count_attr,
            format!("the number of parameters must be at least 1, got {count}"),
        ));
    }
    let n = usize::try_from(count).unwrap_or(usize::MAX);
    if n > max_jobs {
        return Err(err(
            count_attr,
            format!("{n} parametric jobs exceed the limit of {max_jobs}"),
        ));
    }

    // Gather the sequences in order of first appearance.
    let mut sequences: Vec<Sequence<'_>> = Vec::new();
    for (name, value) in ad.iter() {
        let Some((key, seq_name)) = parameter_key(name) else {
            continue;
        };
        let index = match sequences.iter().position(|s| s.name == seq_name) {
            Some(i) => i,
            None => {
                sequences.push(Sequence {
                    name: seq_name,
                    origin: name,
                    ..Sequence::default()
                });
                sequences.len() - 1
            }
        };
        let seq = &mut sequences[index];
        match key {
            Key::Parameters => {
                if let Value::List(items) = value {
                    seq.list = Some(items);
                }
            }
            Key::Start => seq.start = Some(number(name, value)?),
            Key::Step => seq.step = Some(number(name, value)?),
            Key::Factor => seq.factor = Some(number(name, value)?),
        }
    }
    let columns = sequences
        .iter()
        .map(|s| Ok((s.name, s.values(n)?)))
        .collect::<Result<Vec<_>, ParametricError>>()?;

    let mut template = ad.clone();
    template.retain(|name| parameter_key(name).is_none());
    let width = (n - 1).to_string().len();

    let mut jobs = Vec::with_capacity(n);
    for i in 0..n {
        let row: Vec<Binding<'_>> = columns
            .iter()
            .map(|(name, values)| Binding {
                name: *name,
                value: &values[i],
                text: value_text(&values[i]),
            })
            .collect();
        let ctx = Context {
            index: format!("{i:0width$}"),
            row: &row,
        };
        let mut job = template.clone();
        job.values_mut().for_each(|v| ctx.substitute(v));
        for binding in &row {
            let attribute = match binding.name {
                None => "Parameter".to_owned(),
                Some(name) => format!("Parameter.{name}"),
            };
            job.set(attribute, binding.value.clone());
        }
        job.set(
            "ParameterNumber",
            Value::Int(i64::try_from(i).unwrap_or(i64::MAX)),
        );
        jobs.push(job);
    }
    Ok(jobs)
}

struct Binding<'a> {
    name: Option<&'a str>,
    value: &'a Value,
    text: String,
}

struct Context<'a> {
    index: String,
    row: &'a [Binding<'a>],
}

impl Context<'_> {
    fn lookup(&self, name: Option<&str>) -> Option<&Binding<'_>> {
        self.row.iter().find(|b| b.name == name)
    }

    fn substitute(&self, value: &mut Value) {
        match value {
            Value::Str(s) => {
                if let Some(new) = self.substitute_str(s) {
                    *value = new;
                }
            }
            Value::List(items) => items.iter_mut().for_each(|v| self.substitute(v)),
            Value::Ad(ad) => ad.values_mut().for_each(|v| self.substitute(v)),
            Value::Int(_) => {}
        }
    }

    /// Returns the replacement when `s` holds a placeholder. A string that is exactly one
    /// sequence placeholder takes the parameter's value itself, so a list stays a list.
    fn substitute_str(&self, s: &str) -> Option<Value> {
        if !s.contains('%') {
            return None;
        }
        let whole = s.trim();
        let whole_name = if whole == "%s" {
            Some(None)
        } else {
            whole
                .strip_prefix("%(")
                .and_then(placeholder_name)
                .filter(|name| name.len() + 4 == whole.len())
                .map(Some)
        };
        if let Some(binding) = whole_name.and_then(|name| self.lookup(name)) {
            return Some(binding.value.clone());
        }

        let mut out = String::with_capacity(s.len() + 16);
        let mut changed = false;
        let mut rest = s;
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            let tail = &rest[at + 1..];
            let (replacement, consumed) = match tail.as_bytes().first() {
                Some(b'n') => (Some(self.index.as_str()), 1),
                Some(b's') => (self.lookup(None).map(|b| b.text.as_str()), 1),
                Some(b'(') => match placeholder_name(&tail[1..]) {
                    Some(name) => (
                        self.lookup(Some(name)).map(|b| b.text.as_str()),
                        name.len() + 3,
                    ),
                    None => (None, 0),
                },
                _ => (None, 0),
            };
            match replacement {
                Some(text) => {
                    out.push_str(text);
                    changed = true;
                    rest = &tail[consumed..];
                }
                None => {
                    out.push('%');
                    rest = tail;
                }
            }
        }
        out.push_str(rest);
        changed.then_some(Value::Str(out))
    }
}

/// The sequence name at the start of `text` when it is followed by `)s` (the text after `%(`).
/// Names use attribute-name characters only, which keeps scanning linear.
fn placeholder_name(text: &str) -> Option<&str> {
    let end = text
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.'))
        .unwrap_or(text.len());
    (end > 0 && text[end..].starts_with(")s")).then(|| &text[..end])
}

/// Replaces `%j` with `job_id` in every string value, recursively.
pub fn substitute_job_id(ad: &mut ClassAd, job_id: u64) {
    fn walk(value: &mut Value, id: &str) {
        match value {
            Value::Str(s) if s.contains("%j") => *s = s.replace("%j", id),
            Value::List(items) => items.iter_mut().for_each(|v| walk(v, id)),
            Value::Ad(ad) => ad.values_mut().for_each(|v| walk(v, id)),
            Value::Str(_) | Value::Int(_) => {}
        }
    }
    let mut id = String::new();
    let _ = write!(id, "{job_id}");
    ad.values_mut().for_each(|v| walk(v, &id));
}
