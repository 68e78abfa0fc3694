//! Hand-written byte scanner for JDL text.
//!
//! Grammar (informal):
//!
//! ```text
//! classad   := ws ( '[' body ']' ws | body ) EOF
//! body      := ( ws name ws '=' ws value ws ( ';' | before ']' or EOF ) )*
//! value     := '"' string '"' | '{' [ value ( ',' value )* [','] ] '}' | '[' body ']' | bare
//! bare      := text up to the next ';' ',' '}' or ']' outside (), [], {} and quotes
//! ws        := whitespace, `// ...` and `# ...` line comments
//! ```

use std::collections::HashSet;

use crate::ad::{ClassAd, Value};

/// Largest accepted input.
pub const MAX_INPUT_BYTES: usize = 1 << 20;
/// Deepest accepted nesting of lists and ads.
pub const MAX_DEPTH: usize = 32;

/// A syntax error with a 1-based line and column (in characters).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

pub(crate) fn parse_classad(text: &str) -> Result<ClassAd, ParseError> {
    let mut p = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    if text.len() > MAX_INPUT_BYTES {
        return Err(p.error_at(0, format!("input is larger than {MAX_INPUT_BYTES} bytes")));
    }
    p.skip_ws();
    if p.peek() == Some(b'[') {
        let ad = p.parse_bracketed_ad(0)?;
        p.skip_ws();
        if p.pos < p.bytes.len() {
            return Err(p.error("unexpected text after the closing ']'".to_owned()));
        }
        Ok(ad)
    } else {
        p.parse_body(0, None)
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

/// Above this many attributes duplicate detection switches from a linear scan to a hash set.
const LINEAR_DUPLICATE_SCAN: usize = 32;

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn error(&self, message: String) -> ParseError {
        self.error_at(self.pos, message)
    }

    fn error_at(&self, pos: usize, message: String) -> ParseError {
        let before = &self.bytes[..pos.min(self.bytes.len())];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        // Count characters, not bytes: skip UTF-8 continuation bytes.
        let column = before[line_start..]
            .iter()
            .filter(|&&b| b & 0xC0 != 0x80)
            .count()
            + 1;
        ParseError {
            line,
            column,
            message,
        }
    }

    /// Describes the character at the cursor for error messages.
    fn found(&self) -> String {
        match self.text.get(self.pos..).and_then(|s| s.chars().next()) {
            Some(c) if c.is_control() => format!("'{}'", c.escape_default()),
            Some(c) => format!("'{c}'"),
            None => "end of input".to_owned(),
        }
    }

    fn slice(&self, start: usize, end: usize) -> Result<&'a str, ParseError> {
        self.text
            .get(start..end)
            .ok_or_else(|| self.error_at(start, "invalid utf-8 boundary".to_owned()))
    }

    /// Skips whitespace and `//` or `#` line comments.
    fn skip_ws(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0c => self.pos += 1,
                b'#' => self.skip_line(),
                b'/' if self.bytes.get(self.pos + 1) == Some(&b'/') => self.skip_line(),
                _ => break,
            }
        }
    }

    fn skip_line(&mut self) {
        match self.bytes[self.pos..].iter().position(|&b| b == b'\n') {
            Some(i) => self.pos += i + 1,
            None => self.pos = self.bytes.len(),
        }
    }

    /// Parses `[ body ]` with the cursor on `[`.
    fn parse_bracketed_ad(&mut self, depth: usize) -> Result<ClassAd, ParseError> {
        let open = self.pos;
        self.pos += 1;
        let ad = self.parse_body(depth, Some(open))?;
        // parse_body returns only at ']' when `open` is set.
        self.pos += 1;
        Ok(ad)
    }

    /// Parses attributes until EOF (top level, `open` is None) or until `]` (nested).
    fn parse_body(&mut self, depth: usize, open: Option<usize>) -> Result<ClassAd, ParseError> {
        let mut attrs: Vec<(String, Value)> = Vec::new();
        let mut names: Vec<&'a str> = Vec::new();
        let mut seen: Option<HashSet<&'a str>> = None;
        loop {
            self.skip_ws();
            let name_pos = self.pos;
            match self.peek() {
                None => match open {
                    Some(open) => return Err(self.error_at(open, "unbalanced '['".to_owned())),
                    None => return Ok(ClassAd::from_attrs(attrs)),
                },
                Some(b']') => match open {
                    Some(_) => return Ok(ClassAd::from_attrs(attrs)),
                    None => return Err(self.error("unexpected ']'".to_owned())),
                },
                Some(b';') => {
                    // Tolerate empty statements such as `;;`.
                    self.pos += 1;
                    continue;
                }
                Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
                Some(_) => {
                    return Err(
                        self.error(format!("expected attribute name, found {}", self.found()))
                    );
                }
            }
            while self
                .peek()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            {
                self.pos += 1;
            }
            let name = self.slice(name_pos, self.pos)?;

            let duplicate = match &mut seen {
                Some(set) => !set.insert(name),
                None => {
                    let dup = names.contains(&name);
                    names.push(name);
                    if names.len() > LINEAR_DUPLICATE_SCAN {
                        seen = Some(names.iter().copied().collect());
                    }
                    dup
                }
            };
            if duplicate {
                return Err(self.error_at(name_pos, format!("duplicate attribute '{name}'")));
            }

            self.skip_ws();
            if self.peek() != Some(b'=') {
                return Err(self.error(format!("expected '=' after attribute '{name}'")));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.parse_value(depth + 1, name)?;
            attrs.push((name.to_owned(), value));

            self.skip_ws();
            match self.peek() {
                Some(b';') => self.pos += 1,
                Some(b']') | None => {}
                Some(_) => {
                    return Err(self.error(format!(
                        "expected ';' after the value of attribute '{name}', found {}",
                        self.found()
                    )));
                }
            }
        }
    }

    /// Parses one value; `attr` names the attribute for error messages.
    fn parse_value(&mut self, depth: usize, attr: &str) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.error(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        match self.peek() {
            Some(b'"') => self.parse_quoted().map(Value::Str),
            Some(b'{') => self.parse_list(depth, attr),
            Some(b'[') => self.parse_bracketed_ad(depth).map(Value::Ad),
            Some(b';' | b']' | b',' | b'}') | None => {
                Err(self.error(format!("empty value for attribute '{attr}'")))
            }
            Some(_) => self.parse_bare(),
        }
    }

    /// Parses `"..."` with the cursor on the opening quote; `\"` and `\\` are unescaped, any
    /// other backslash is kept as written.
    fn parse_quoted(&mut self) -> Result<String, ParseError> {
        let open = self.pos;
        self.pos += 1;
        let start = self.pos;
        let mut out: Option<String> = None;
        let mut chunk = start;
        loop {
            let Some(i) = self.bytes[self.pos..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\')
            else {
                return Err(self.error_at(open, "unterminated string".to_owned()));
            };
            self.pos += i;
            if self.bytes[self.pos] == b'"' {
                let tail = self.slice(chunk, self.pos)?;
                self.pos += 1;
                return Ok(match out {
                    Some(mut s) => {
                        s.push_str(tail);
                        s
                    }
                    None => tail.to_owned(),
                });
            }
            // Backslash.
            match self.bytes.get(self.pos + 1) {
                Some(&b @ (b'"' | b'\\')) => {
                    let s = out.get_or_insert_with(String::new);
                    s.push_str(self.slice(chunk, self.pos)?);
                    s.push(char::from(b));
                    self.pos += 2;
                    chunk = self.pos;
                }
                Some(_) => self.pos += 1,
                None => return Err(self.error_at(open, "unterminated string".to_owned())),
            }
        }
    }

    /// Parses `{ a, b, }` with the cursor on `{`.
    fn parse_list(&mut self, depth: usize, attr: &str) -> Result<Value, ParseError> {
        let open = self.pos;
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::List(items));
                }
                Some(b';' | b']') | None => {
                    return Err(self.error_at(open, "unbalanced '{'".to_owned()));
                }
                Some(b',') => {
                    return Err(self.error(format!("empty list item in attribute '{attr}'")));
                }
                Some(_) => {}
            }
            items.push(self.parse_value(depth + 1, attr)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                Some(b';' | b']') | None => {
                    return Err(self.error_at(open, "unbalanced '{'".to_owned()));
                }
                Some(_) => {
                    return Err(self.error(format!(
                        "expected ',' or '}}' in the list of attribute '{attr}', found {}",
                        self.found()
                    )));
                }
            }
        }
    }

    /// Parses a bare token up to `;`, `,`, `}` or `]` outside brackets and quotes.
    fn parse_bare(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        let mut nesting = 0usize;
        while let Some(b) = self.peek() {
            match b {
                b';' | b',' | b'}' | b']' if nesting == 0 => break,
                b'(' | b'[' | b'{' => nesting += 1,
                b')' | b']' | b'}' => nesting = nesting.saturating_sub(1),
                b'"' => {
                    self.parse_quoted()?;
                    continue;
                }
                _ => {}
            }
            self.pos += 1;
        }
        let token = self.slice(start, self.pos)?.trim_ascii();
        Ok(bare_value(token))
    }
}

fn bare_value(token: &str) -> Value {
    match token.parse::<i64>() {
        Ok(i) => Value::Int(i),
        Err(_) => Value::Str(token.to_owned()),
    }
}
