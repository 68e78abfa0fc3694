//! Requests, operations and files, and DIRAC's rules for their states —
//! pure: no IO, no clock.
//!
//! - An operation's state follows its files ([`operation_status`]).
//! - A request's state follows its operations, which run strictly in
//!   order: the first that is not done is the single Waiting one, every
//!   later one is Queued ([`settle`]).
//! - A request put back after a failed attempt waits `2·ln(attempt)`
//!   minutes before the next ([`retry_delay_s`]).

use std::fmt;

/// Operation types and what each needs. Only types with a handler are
/// accepted: a request nobody can execute is refused when it is put.
pub const OPERATION_TYPES: &[OperationType] = &[
    OperationType {
        name: "RegisterFile",
        files: true,
        target_se: true,
    },
    OperationType {
        name: "RegisterReplica",
        files: true,
        target_se: true,
    },
    OperationType {
        name: "RemoveFile",
        files: true,
        target_se: false,
    },
    OperationType {
        name: "RemoveReplica",
        files: true,
        target_se: true,
    },
    OperationType {
        name: "ReplicateAndRegister",
        files: true,
        target_se: true,
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationType {
    pub name: &'static str,
    /// Needs files.
    pub files: bool,
    /// Needs at least one target SE.
    pub target_se: bool,
}

pub fn operation_type(name: &str) -> Option<&'static OperationType> {
    OPERATION_TYPES.iter().find(|t| t.name == name)
}

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident),+ $(,)? } final: [$($final:ident),*]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $(stringify!($variant) => Some($name::$variant),)+ _ => None }
            }

            /// Nothing happens to it any more.
            pub fn is_final(self) -> bool {
                matches!(self, $($name::$final)|*)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_enum!(
    /// A file of an operation.
    FileStatus { Waiting, Done, Failed, Scheduled } final: [Done, Failed]
);
status_enum!(
    /// An operation.
    OpStatus { Queued, Waiting, Assigned, Scheduled, Done, Failed, Canceled } final: [Done, Failed, Canceled]
);
status_enum!(
    /// A request.
    ReqStatus { Waiting, Assigned, Scheduled, Done, Failed, Canceled } final: [Done, Failed, Canceled]
);

#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub id: u64,
    pub lfn: String,
    pub pfn: String,
    pub guid: String,
    pub size: u64,
    pub checksum: String,
    pub checksum_type: String,
    pub status: FileStatus,
    pub attempt: u32,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub id: u64,
    pub kind: String,
    pub status: OpStatus,
    pub arguments: String,
    pub source_se: Vec<String>,
    pub target_se: Vec<String>,
    pub catalog: String,
    pub error: String,
    pub files: Vec<File>,
    /// Unix seconds; 0 when unset.
    pub creation_time: i64,
    pub submit_time: i64,
    pub last_update: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: u64,
    pub name: String,
    pub owner: String,
    pub owner_group: String,
    pub vo: String,
    pub job_id: u64,
    pub status: ReqStatus,
    pub error: String,
    pub source_component: String,
    pub operations: Vec<Operation>,
    /// Unix seconds; 0 when unset.
    pub creation_time: i64,
    pub submit_time: i64,
    pub last_update: i64,
    pub not_before: i64,
}

/// An operation's state from its files (DIRAC's `Operation._notify`); `None`
/// for an operation without files, whose handler sets its state.
pub fn operation_status(files: &[FileStatus]) -> Option<OpStatus> {
    if files.is_empty() {
        return None;
    }
    let any = |s: FileStatus| files.contains(&s);
    Some(if files.iter().all(|f| *f == FileStatus::Failed) {
        OpStatus::Failed
    } else if any(FileStatus::Scheduled) {
        OpStatus::Scheduled
    } else if any(FileStatus::Waiting) {
        OpStatus::Queued
    } else if any(FileStatus::Failed) {
        OpStatus::Failed
    } else {
        OpStatus::Done
    })
}

/// The request's state from its operations, in order (DIRAC's
/// `Request._notify`): the first failed operation before any pending one
/// fails the request, the first scheduled one makes it Scheduled, the first
/// pending one becomes the single Waiting operation and every later
/// pending one Queued; all done, the request is Done. Operation states are
/// rewritten in place. A canceled request stays canceled.
pub fn settle(current: ReqStatus, ops: &mut [OpStatus]) -> ReqStatus {
    if current == ReqStatus::Canceled {
        return ReqStatus::Canceled;
    }
    let mut status = ReqStatus::Done;
    let mut current_found = false;
    for op in ops.iter_mut() {
        if current_found {
            if !op.is_final() {
                *op = OpStatus::Queued;
            }
            continue;
        }
        match *op {
            OpStatus::Done => {}
            OpStatus::Failed | OpStatus::Canceled => return ReqStatus::Failed,
            OpStatus::Scheduled => {
                status = ReqStatus::Scheduled;
                current_found = true;
            }
            OpStatus::Queued | OpStatus::Waiting | OpStatus::Assigned => {
                *op = OpStatus::Waiting;
                status = ReqStatus::Waiting;
                current_found = true;
            }
        }
    }
    status
}

/// Apply both rules to a request: operations from their files, then the
/// request from its operations.
pub fn settle_request(request: &mut Request) {
    for op in &mut request.operations {
        let files: Vec<FileStatus> = op.files.iter().map(|f| f.status).collect();
        if let Some(s) = operation_status(&files) {
            // A file-driven state never overrides a cancellation.
            if op.status != OpStatus::Canceled {
                op.status = s;
            }
        }
    }
    let mut statuses: Vec<OpStatus> = request.operations.iter().map(|o| o.status).collect();
    request.status = settle(request.status, &mut statuses);
    for (op, s) in request.operations.iter_mut().zip(statuses) {
        op.status = s;
    }
}

/// Seconds before a request whose current operation's files have been
/// tried up to `max_attempt` times is tried again: `ConstantRequestDelay`
/// minutes when configured, else `2·ln(max_attempt)` minutes (0 after the
/// first attempt, ~9 minutes at 100, ~11 at 256).
pub fn retry_delay_s(max_attempt: u32, constant_minutes: Option<u64>) -> u64 {
    if let Some(m) = constant_minutes {
        return m.saturating_mul(60);
    }
    if max_attempt <= 1 {
        return 0;
    }
    let minutes = 2.0 * f64::from(max_attempt).ln();
    // At most 2·ln(u32::MAX) ≈ 44 minutes: the cast cannot overflow.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let seconds = (minutes * 60.0).round() as u64;
    seconds
}

/// Longest error text kept (the columns hold 1024 bytes).
pub const MAX_ERROR: usize = 1000;

/// `text` cut to [`MAX_ERROR`] bytes on a character boundary.
pub fn clip(text: &str) -> String {
    if text.len() <= MAX_ERROR {
        return text.to_string();
    }
    // Room for the ellipsis (3 bytes).
    let mut end = MAX_ERROR - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Limits of one request.
pub const MAX_OPERATIONS: usize = 100;
pub const MAX_FILES_PER_OPERATION: usize = 10_000;
/// Files of all operations of one request.
pub const MAX_FILES_PER_REQUEST: usize = 10_000;
const MAX_NAME: usize = 255;
const MAX_LFN: usize = 1024;
/// Column widths of ReqDB.
const LIMITS: &[(&str, usize)] = &[
    ("source component", 64),
    ("GUID", 64),
    ("checksum", 128),
    ("catalog", 255),
    ("SE list", 1024),
    ("arguments", 65_535),
];

fn too_long(what: &str, value: &str) -> Option<String> {
    let max = LIMITS
        .iter()
        .find(|(w, _)| *w == what)
        .map_or(usize::MAX, |(_, m)| *m);
    (value.len() > max).then(|| format!("the {what} is longer than {max} bytes"))
}

/// DIRAC's RequestValidator: a name, operations of known types, the files
/// and target SEs each type needs, checksums with their type, valid LFNs.
/// The message names the operation and file at fault.
pub fn validate(r: &Request) -> Result<(), String> {
    if r.name.trim().is_empty() {
        return Err("the request has no name".into());
    }
    if r.name.len() > MAX_NAME {
        return Err(format!("the request name is longer than {MAX_NAME} bytes"));
    }
    if r.operations.is_empty() {
        return Err(format!("request '{}' has no operation", r.name));
    }
    if let Some(e) = too_long("source component", &r.source_component) {
        return Err(format!("request '{}': {e}", r.name));
    }
    let files: usize = r.operations.iter().map(|o| o.files.len()).sum();
    if files > MAX_FILES_PER_REQUEST {
        return Err(format!(
            "request '{}' has {files} files; at most {MAX_FILES_PER_REQUEST}",
            r.name
        ));
    }
    if r.operations.len() > MAX_OPERATIONS {
        return Err(format!(
            "request '{}' has {} operations; at most {MAX_OPERATIONS}",
            r.name,
            r.operations.len()
        ));
    }
    for (i, op) in r.operations.iter().enumerate() {
        let at = format!("request '{}', operation {i} ({})", r.name, op.kind);
        let Some(t) = operation_type(&op.kind) else {
            return Err(format!(
                "{at}: unknown operation type (one of {})",
                OPERATION_TYPES
                    .iter()
                    .map(|t| t.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        for (what, value) in [
            ("catalog", op.catalog.clone()),
            ("SE list", op.source_se.join(",")),
            ("SE list", op.target_se.join(",")),
            ("arguments", op.arguments.clone()),
        ] {
            if let Some(e) = too_long(what, &value) {
                return Err(format!("{at}: {e}"));
            }
        }
        if t.files && op.files.is_empty() {
            return Err(format!("{at}: needs files"));
        }
        if op.files.len() > MAX_FILES_PER_OPERATION {
            return Err(format!(
                "{at}: {} files; at most {MAX_FILES_PER_OPERATION}",
                op.files.len()
            ));
        }
        if t.target_se && op.target_se.iter().all(|s| s.trim().is_empty()) {
            return Err(format!("{at}: needs a target SE"));
        }
        for (j, f) in op.files.iter().enumerate() {
            let at = format!("{at}, file {j}");
            if !f.lfn.starts_with('/') || f.lfn.len() > MAX_LFN || f.lfn.contains("//") {
                return Err(format!("{at}: '{}' is not a valid LFN", f.lfn));
            }
            for (what, value) in [("GUID", &f.guid), ("checksum", &f.checksum)] {
                if let Some(e) = too_long(what, value) {
                    return Err(format!("{at}: {e}"));
                }
            }
            match (f.checksum.is_empty(), f.checksum_type.as_str()) {
                (true, "") | (false, "ADLER32" | "MD5") => {}
                (true, _) => return Err(format!("{at}: a checksum type without a checksum")),
                (false, "") => return Err(format!("{at}: a checksum without its type")),
                (false, other) => {
                    return Err(format!(
                        "{at}: unknown checksum type '{other}' (ADLER32 or MD5)"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn file(lfn: &str) -> File {
        File {
            id: 0,
            lfn: lfn.into(),
            pfn: String::new(),
            guid: String::new(),
            size: 0,
            checksum: String::new(),
            checksum_type: String::new(),
            status: FileStatus::Waiting,
            attempt: 0,
            error: String::new(),
        }
    }

    fn op(kind: &str, files: Vec<File>, target: &[&str]) -> Operation {
        Operation {
            id: 0,
            kind: kind.into(),
            status: OpStatus::Queued,
            arguments: String::new(),
            source_se: vec![],
            target_se: target.iter().map(|s| (*s).to_string()).collect(),
            catalog: String::new(),
            error: String::new(),
            files,
            creation_time: 0,
            submit_time: 0,
            last_update: 0,
        }
    }

    pub(crate) fn request(ops: Vec<Operation>) -> Request {
        Request {
            id: 0,
            name: "failover".into(),
            owner: "alice".into(),
            owner_group: "dteam_user".into(),
            vo: "dteam".into(),
            job_id: 0,
            status: ReqStatus::Waiting,
            error: String::new(),
            source_component: String::new(),
            operations: ops,
            creation_time: 0,
            submit_time: 0,
            last_update: 0,
            not_before: 0,
        }
    }

    #[test]
    fn operations_follow_their_files() {
        use FileStatus::*;
        assert_eq!(operation_status(&[]), None);
        assert_eq!(operation_status(&[Failed, Failed]), Some(OpStatus::Failed));
        assert_eq!(
            operation_status(&[Done, Scheduled, Waiting]),
            Some(OpStatus::Scheduled)
        );
        assert_eq!(operation_status(&[Done, Waiting]), Some(OpStatus::Queued));
        assert_eq!(operation_status(&[Done, Failed]), Some(OpStatus::Failed));
        assert_eq!(
            operation_status(&[Failed, Waiting]),
            Some(OpStatus::Queued),
            "a waiting file keeps the operation going"
        );
        assert_eq!(operation_status(&[Done, Done]), Some(OpStatus::Done));
    }

    #[test]
    fn requests_follow_their_operations_in_order() {
        use OpStatus::*;
        let mut ops = [Done, Queued, Queued];
        assert_eq!(settle(ReqStatus::Waiting, &mut ops), ReqStatus::Waiting);
        assert_eq!(ops, [Done, Waiting, Queued]);
        let mut ops = [Done, Waiting, Waiting];
        settle(ReqStatus::Assigned, &mut ops);
        assert_eq!(ops, [Done, Waiting, Queued], "one Waiting operation");
        let mut ops = [Done, Failed, Queued];
        assert_eq!(settle(ReqStatus::Waiting, &mut ops), ReqStatus::Failed);
        let mut ops = [Scheduled, Waiting];
        assert_eq!(settle(ReqStatus::Waiting, &mut ops), ReqStatus::Scheduled);
        assert_eq!(ops, [Scheduled, Queued]);
        let mut ops = [Done, Done];
        assert_eq!(settle(ReqStatus::Assigned, &mut ops), ReqStatus::Done);
        let mut ops = [Queued];
        assert_eq!(settle(ReqStatus::Canceled, &mut ops), ReqStatus::Canceled);
    }

    fn op_status() -> impl Strategy<Value = OpStatus> {
        prop::sample::select(OpStatus::ALL.to_vec())
    }

    proptest! {
        /// A live request has exactly one current operation, every later
        /// pending one is Queued, every earlier one is Done; a Done request
        /// has only Done operations; final operations never change.
        #[test]
        fn settled_requests_have_one_current_operation(mut ops in prop::collection::vec(op_status(), 1..8)) {
            let before = ops.clone();
            let status = settle(ReqStatus::Waiting, &mut ops);
            for (b, a) in before.iter().zip(&ops) {
                if b.is_final() {
                    prop_assert_eq!(b, a);
                }
            }
            let current = ops.iter().filter(|o| matches!(o, OpStatus::Waiting | OpStatus::Scheduled)).count();
            match status {
                ReqStatus::Waiting | ReqStatus::Scheduled => {
                    prop_assert_eq!(current, 1);
                    let at = ops.iter().position(|o| matches!(o, OpStatus::Waiting | OpStatus::Scheduled)).expect("current");
                    prop_assert!(ops[..at].iter().all(|o| *o == OpStatus::Done));
                    prop_assert!(ops[at + 1..].iter().all(|o| o.is_final() || *o == OpStatus::Queued));
                }
                ReqStatus::Done => prop_assert!(ops.iter().all(|o| *o == OpStatus::Done)),
                ReqStatus::Failed => prop_assert!(ops.iter().any(|o| matches!(o, OpStatus::Failed | OpStatus::Canceled))),
                other => prop_assert!(false, "unexpected {other}"),
            }
            // Settling again changes nothing.
            let again_before = ops.clone();
            prop_assert_eq!(settle(status_for_resettle(status), &mut ops), status);
            prop_assert_eq!(again_before, ops);
        }
    }

    fn status_for_resettle(s: ReqStatus) -> ReqStatus {
        if s.is_final() { ReqStatus::Waiting } else { s }
    }

    #[test]
    fn backoff_grows_with_the_log_of_attempts() {
        assert_eq!(retry_delay_s(0, None), 0);
        assert_eq!(retry_delay_s(1, None), 0);
        assert_eq!(retry_delay_s(100, None), 553); // 2·ln(100) = 9.2 min
        assert_eq!(retry_delay_s(256, None), 665);
        assert_eq!(retry_delay_s(100, Some(5)), 300);
        assert!(retry_delay_s(u32::MAX, None) < 45 * 60);
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let ok = request(vec![op(
            "RegisterFile",
            vec![file("/dteam/user/a/alice/out.root")],
            &["LOCAL-SE"],
        )]);
        assert_eq!(validate(&ok), Ok(()));
        let cases: Vec<(Request, &str)> = vec![
            (request(vec![]), "no operation"),
            (
                request(vec![op("Frobnicate", vec![file("/a")], &["SE"])]),
                "unknown operation type",
            ),
            (request(vec![op("RemoveFile", vec![], &[])]), "needs files"),
            (
                request(vec![op("RegisterFile", vec![file("/a")], &[])]),
                "needs a target SE",
            ),
            (
                request(vec![op("RemoveFile", vec![file("relative")], &[])]),
                "not a valid LFN",
            ),
            (
                request(vec![op(
                    "RemoveFile",
                    vec![File {
                        checksum: "abc".into(),
                        ..file("/a")
                    }],
                    &[],
                )]),
                "without its type",
            ),
            (
                request(vec![op(
                    "RemoveFile",
                    vec![File {
                        checksum: "abc".into(),
                        checksum_type: "CRC".into(),
                        ..file("/a")
                    }],
                    &[],
                )]),
                "unknown checksum type",
            ),
            (
                Request {
                    name: " ".into(),
                    ..ok.clone()
                },
                "no name",
            ),
        ];
        for (r, want) in cases {
            let err = validate(&r).expect_err(want);
            assert!(err.contains(want), "{err} does not say {want}");
        }
    }

    #[test]
    fn settle_request_applies_both_rules() {
        let mut r = request(vec![
            op("RegisterFile", vec![file("/a")], &["SE"]),
            op("RemoveFile", vec![file("/b")], &[]),
        ]);
        r.operations[0].files[0].status = FileStatus::Done;
        settle_request(&mut r);
        assert_eq!(r.operations[0].status, OpStatus::Done);
        assert_eq!(r.operations[1].status, OpStatus::Waiting);
        assert_eq!(r.status, ReqStatus::Waiting);
        r.operations[1].files[0].status = FileStatus::Failed;
        settle_request(&mut r);
        assert_eq!(r.status, ReqStatus::Failed);
    }
}
