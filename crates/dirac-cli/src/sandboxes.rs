//! Sandboxes as the CLI sees them, free of IO: which entries of a JDL's
//! `InputSandbox` are local files to upload, the JDL once they are uploaded,
//! and what `dirac job output` wrote per job.

use std::path::{Component, Path, PathBuf};

use dirac_jdl::{ClassAd, Value};

/// The JDL attribute listing a job's input files.
pub const INPUT_SANDBOX: &str = "InputSandbox";

/// `SB:<SE>|<path>` (an uploaded sandbox) or `LFN:<path>` (a catalogue file):
/// entries that are already off this machine.
fn is_remote(entry: &str) -> bool {
    ["SB:", "LFN:"].iter().any(|prefix| {
        entry
            .as_bytes()
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
    })
}

/// Resolves `.` and `..` without touching the disk (`a/../b` is `b`, `/..`
/// is `/`), so that a file below the JDL's directory is seen to be below it.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    out
}

/// The local part of one JDL's `InputSandbox`.
#[derive(Debug, PartialEq)]
pub struct LocalInputs {
    /// The attribute's name as written (JDL names are case-insensitive).
    attribute: String,
    /// `SB:` and `LFN:` entries, kept in their order.
    remote: Vec<String>,
    /// Local entries resolved against the JDL's directory, in order, without
    /// repeats: what goes into the one archive uploaded for this JDL.
    pub files: Vec<PathBuf>,
}

/// The local files a JDL's `InputSandbox` (a string or a list) names, relative
/// entries resolved against `jdl_dir`; `None` when it names none, and the JDL
/// is then submitted as written.
pub fn local_inputs(ad: &ClassAd, jdl_dir: &Path) -> Option<LocalInputs> {
    let (attribute, value) = ad.get_ci(INPUT_SANDBOX)?;
    let mut remote = Vec::new();
    let mut files = Vec::new();
    for entry in value.to_strings() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        if is_remote(entry) {
            remote.push(entry.to_owned());
        } else {
            let file = normalize(&jdl_dir.join(entry));
            if !files.contains(&file) {
                files.push(file);
            }
        }
    }
    if files.is_empty() {
        return None;
    }
    Some(LocalInputs {
        attribute: attribute.to_owned(),
        remote,
        files,
    })
}

impl LocalInputs {
    /// The JDL with its local entries replaced by `pfn`, the reference of the
    /// uploaded archive; `SB:` and `LFN:` entries stay, in front of it.
    pub fn rewrite(&self, mut ad: ClassAd, pfn: &str) -> ClassAd {
        let entries = self
            .remote
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(pfn))
            .map(Value::from)
            .collect();
        ad.set(self.attribute.clone(), Value::List(entries));
        ad
    }
}

/// The output sandboxes of one job, unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutput {
    pub job_id: u64,
    /// Where they were unpacked: `<DIR>/<job_id>`.
    pub dir: PathBuf,
    /// The files written, relative to `dir`.
    pub files: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad(text: &str) -> ClassAd {
        ClassAd::parse(text).expect("valid jdl")
    }

    fn sandbox(ad: &ClassAd) -> Vec<String> {
        ad.get(INPUT_SANDBOX)
            .or_else(|| ad.get_ci(INPUT_SANDBOX).map(|(_, v)| v))
            .map(Value::to_strings)
            .unwrap_or_default()
    }

    /// `jdl` in /jobs: the local files found, then the sandbox once uploaded
    /// as `SB:se|/x.tar.gz` (`None` when nothing is local).
    fn check(jdl: &str, files: &[&str], rewritten: Option<&[&str]>) {
        let dir = Path::new("/jobs");
        let parsed = ad(jdl);
        let inputs = local_inputs(&parsed, dir);
        let found: Vec<PathBuf> = inputs.as_ref().map(|i| i.files.clone()).unwrap_or_default();
        let expected: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
        assert_eq!(found, expected, "{jdl}");
        match (inputs, rewritten) {
            (None, None) => {}
            (Some(inputs), Some(rewritten)) => {
                let after = inputs.rewrite(parsed.clone(), "SB:se|/x.tar.gz");
                assert_eq!(sandbox(&after), rewritten, "{jdl}");
                // Everything else is untouched.
                for (name, value) in parsed.iter() {
                    if !name.eq_ignore_ascii_case(INPUT_SANDBOX) {
                        assert_eq!(after.get(name), Some(value), "{name} in {jdl}");
                    }
                }
                assert_eq!(after.len(), parsed.len());
            }
            (inputs, _) => panic!("{jdl}: unexpected {inputs:?}"),
        }
    }

    #[test]
    fn local_entries_are_replaced_by_the_uploaded_sandbox() {
        check(
            r#"[ Executable = "run.sh"; InputSandbox = "run.sh"; ]"#,
            &["/jobs/run.sh"],
            Some(&["SB:se|/x.tar.gz"]),
        );
        check(
            r#"[ InputSandbox = { "run.sh", "LFN:/vo/data/in.root", "data/cfg.json",
                 "SB:se|/old.tar.gz", "/abs/file", "run.sh" }; Arguments = "-v"; ]"#,
            &["/jobs/run.sh", "/jobs/data/cfg.json", "/abs/file"],
            Some(&[
                "LFN:/vo/data/in.root",
                "SB:se|/old.tar.gz",
                "SB:se|/x.tar.gz",
            ]),
        );
    }

    #[test]
    fn attribute_name_and_prefixes_are_case_insensitive() {
        check(
            r#"[ inputsandbox = { "lfn:/vo/a", "sb:se|/b", "c.txt" }; ]"#,
            &["/jobs/c.txt"],
            Some(&["lfn:/vo/a", "sb:se|/b", "SB:se|/x.tar.gz"]),
        );
    }

    #[test]
    fn jdls_without_local_inputs_are_left_alone() {
        check(r#"[ Executable = "/bin/true"; ]"#, &[], None);
        check(
            r#"[ InputSandbox = { "LFN:/vo/a", "SB:se|/b" }; ]"#,
            &[],
            None,
        );
        check(r#"[ InputSandbox = {}; ]"#, &[], None);
        check(r#"[ InputSandbox = "  "; ]"#, &[], None);
    }

    #[test]
    fn relative_entries_follow_the_jdl_directory() {
        let parsed = ad(r#"[ InputSandbox = { "a", "./b/c", "b/../e", "../d", "../../f" }; ]"#);
        let inputs = local_inputs(&parsed, Path::new("sub")).expect("local");
        let files: Vec<&str> = inputs.files.iter().filter_map(|f| f.to_str()).collect();
        assert_eq!(files, ["sub/a", "sub/b/c", "sub/e", "d", "../f"]);
        let inputs = local_inputs(&parsed, Path::new("/")).expect("local");
        let files: Vec<&str> = inputs.files.iter().filter_map(|f| f.to_str()).collect();
        assert_eq!(files, ["/a", "/b/c", "/e", "/d", "/f"]);
    }

    #[test]
    fn multibyte_entries_do_not_confuse_the_prefix_check() {
        assert!(!is_remote("Sé:x"));
        assert!(!is_remote("é"));
        assert!(is_remote("LFN:é"));
    }
}
