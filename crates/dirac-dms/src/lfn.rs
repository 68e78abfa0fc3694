//! Catalog paths: `/<vo>/a/b`, checked before anything touches the
//! database. Bad input is refused with the reason, never cleaned up
//! silently (`//` and `..` are errors, not normalised away).

/// Longest name of one path component, in bytes.
pub const MAX_NAME: usize = 255;
/// Longest path, in bytes.
pub const MAX_PATH: usize = 4096;

/// A checked absolute catalog path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lfn(String);

impl Lfn {
    /// Check `text`; one trailing `/` is allowed (and dropped).
    pub fn parse(text: &str) -> Result<Lfn, String> {
        let bad = |why: String| Err(format!("'{}' is not a valid path: {why}", clip(text)));
        if text.len() > MAX_PATH {
            return bad(format!("longer than {MAX_PATH} bytes"));
        }
        if !text.starts_with('/') {
            return bad("not absolute".into());
        }
        let trimmed = match text.strip_suffix('/') {
            Some(t) if !t.is_empty() => t,
            _ => text,
        };
        if trimmed == "/" {
            return bad("the root holds only VO directories".into());
        }
        for part in trimmed[1..].split('/') {
            if part.is_empty() {
                return bad("empty component ('//')".into());
            }
            if part == "." || part == ".." {
                return bad(format!("'{part}' component"));
            }
            if part.len() > MAX_NAME {
                return bad(format!("a component longer than {MAX_NAME} bytes"));
            }
            if let Some(c) = part.chars().find(|c| c.is_control()) {
                return bad(format!("control character U+{:04X}", c as u32));
            }
        }
        Ok(Lfn(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first component.
    pub fn vo(&self) -> &str {
        self.0[1..].split('/').next().unwrap_or_default()
    }

    /// The parent directory; `None` for a VO root.
    pub fn parent(&self) -> Option<Lfn> {
        let cut = self.0.rfind('/')?;
        (cut > 0).then(|| Lfn(self.0[..cut].to_string()))
    }

    /// The last component.
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }

    pub fn depth(&self) -> usize {
        self.0.matches('/').count()
    }

    /// Every ancestor directory, from the VO root down to the parent.
    pub fn ancestors(&self) -> Vec<Lfn> {
        let mut out = Vec::new();
        let mut cur = self.parent();
        while let Some(p) = cur {
            cur = p.parent();
            out.push(p);
        }
        out.reverse();
        out
    }

    /// `self` and everything below it.
    pub fn contains(&self, other: &Lfn) -> bool {
        other.0 == self.0
            || (other.0.starts_with(&self.0) && other.0.as_bytes().get(self.0.len()) == Some(&b'/'))
    }

    pub fn join(&self, name: &str) -> Lfn {
        Lfn(format!("{}/{name}", self.0))
    }
}

impl std::fmt::Display for Lfn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// At most 200 characters of a user's input, for messages.
pub fn clip(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_paths() {
        let l = Lfn::parse("/dteam/user/a/alice/f.txt").expect("ok");
        assert_eq!(l.vo(), "dteam");
        assert_eq!(l.name(), "f.txt");
        assert_eq!(
            l.parent().map(|p| p.to_string()).as_deref(),
            Some("/dteam/user/a/alice")
        );
        assert_eq!(
            l.ancestors().iter().map(Lfn::as_str).collect::<Vec<_>>(),
            [
                "/dteam",
                "/dteam/user",
                "/dteam/user/a",
                "/dteam/user/a/alice"
            ]
        );
        assert_eq!(Lfn::parse("/dteam/").expect("ok").as_str(), "/dteam");
        assert_eq!(Lfn::parse("/dteam").expect("ok").parent(), None);
        let d = Lfn::parse("/dteam/a").expect("ok");
        assert!(d.contains(&Lfn::parse("/dteam/a/b").expect("ok")));
        assert!(!d.contains(&Lfn::parse("/dteam/ab").expect("ok")));
        // Deep paths have no limit but the byte length.
        let deep = format!("/dteam{}", "/d".repeat(500));
        assert_eq!(Lfn::parse(&deep).expect("deep").depth(), 501);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics_and_keeps_what_it_accepts(text in "(/[a-z.]{0,4}){0,8}/?|\\PC{0,40}") {
            if let Ok(l) = Lfn::parse(&text) {
                // What is accepted parses again to itself, with its parts.
                proptest::prop_assert_eq!(Lfn::parse(l.as_str()), Ok(l.clone()));
                let _ = (l.vo(), l.parent(), l.ancestors(), l.name());
            }
        }
    }

    #[test]
    fn bad_paths_say_why() {
        for (path, says) in [
            ("dteam/a", "not absolute"),
            ("/", "only VO directories"),
            ("//", "only VO directories"),
            ("/dteam//a", "empty component"),
            ("/dteam/../atlas", "'..'"),
            ("/dteam/./a", "'.'"),
            ("/dteam/a\0b", "control character"),
            ("/dteam/a\nb", "control character"),
        ] {
            let err = Lfn::parse(path).expect_err(path);
            assert!(err.contains(says), "{path:?}: {err}");
        }
        let long = format!("/dteam/{}", "x".repeat(256));
        assert!(
            Lfn::parse(&long)
                .expect_err("long")
                .contains("longer than 255")
        );
        let huge = format!("/dteam{}", "/x".repeat(3000));
        assert!(
            Lfn::parse(&huge)
                .expect_err("huge")
                .contains("longer than 4096")
        );
    }
}
