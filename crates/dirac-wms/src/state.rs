//! The job state machine, exactly as DIRAC's `JobsStateMachine`, and the pure
//! logic that applies a batch of timestamped status updates to one job
//! (DIRAC's `getNewStatus`): updates are applied in time order, those older
//! than the last recorded status are ignored, a transition the machine does
//! not allow keeps the old status and is recorded with `(SM)` appended to its
//! source unless forced, and StartExecTime/EndExecTime are set at the first
//! Running and the first final state.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobStatus {
    Submitting,
    Received,
    Checking,
    Scouting,
    Staging,
    Waiting,
    Matched,
    Rescheduled,
    Running,
    Stalled,
    Completing,
    Completed,
    Done,
    Failed,
    Killed,
    Deleted,
}

use JobStatus::*;

impl JobStatus {
    pub const ALL: [JobStatus; 16] = [
        Submitting,
        Received,
        Checking,
        Scouting,
        Staging,
        Waiting,
        Matched,
        Rescheduled,
        Running,
        Stalled,
        Completing,
        Completed,
        Done,
        Failed,
        Killed,
        Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Submitting => "Submitting",
            Received => "Received",
            Checking => "Checking",
            Scouting => "Scouting",
            Staging => "Staging",
            Waiting => "Waiting",
            Matched => "Matched",
            Rescheduled => "Rescheduled",
            Running => "Running",
            Stalled => "Stalled",
            Completing => "Completing",
            Completed => "Completed",
            Done => "Done",
            Failed => "Failed",
            Killed => "Killed",
            Deleted => "Deleted",
        }
    }

    /// The states DIRAC's machine lets a job move to from `self`.
    pub fn next_states(self) -> &'static [JobStatus] {
        match self {
            Submitting => &[Received, Checking, Deleted, Killed],
            Received => &[Scouting, Checking, Waiting, Failed, Deleted, Killed],
            Checking => &[
                Scouting,
                Staging,
                Waiting,
                Rescheduled,
                Failed,
                Deleted,
                Killed,
            ],
            Scouting => &[Checking, Failed, Stalled, Killed],
            Staging => &[Checking, Waiting, Failed, Killed],
            Waiting => &[Matched, Rescheduled, Deleted, Killed],
            Matched => &[Running, Failed, Rescheduled, Killed],
            Rescheduled => &[Waiting, Received, Deleted, Failed, Killed],
            Running => &[
                Stalled,
                Done,
                Failed,
                Rescheduled,
                Completing,
                Killed,
                Received,
            ],
            Stalled => &[Running, Failed, Killed],
            Completing => &[Done, Failed, Completed, Stalled, Killed],
            Completed => &[Done, Failed],
            Done => &[Deleted],
            Failed => &[Rescheduled, Deleted],
            Killed => &[Deleted],
            Deleted => &[],
        }
    }

    /// Staying in the same state is always allowed.
    pub fn can_move_to(self, to: JobStatus) -> bool {
        self == to || self.next_states().contains(&to)
    }

    /// Done, Completed, Failed, Killed (DIRAC's JOB_FINAL_STATES).
    pub fn is_final(self) -> bool {
        matches!(self, Done | Completed | Failed | Killed)
    }

    /// A payload may be running on a worker node.
    pub fn is_active(self) -> bool {
        matches!(self, Matched | Running | Stalled | Completing)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown job status '{0}'")]
pub struct UnknownStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// What the database holds about a job's status.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentState {
    pub status: JobStatus,
    pub minor_status: String,
    pub application_status: String,
    /// Time of the last applied major status (fixed-width RFC 3339).
    pub status_time: String,
    pub start_exec_time: Option<String>,
    pub end_exec_time: Option<String>,
}

/// One reported change. Empty strings mean "not reported".
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub time: String,
    pub status: Option<JobStatus>,
    pub minor_status: Option<String>,
    pub application_status: Option<String>,
    pub source: String,
}

/// One record for the job's history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRecord {
    pub status: String,
    pub minor_status: String,
    pub application_status: String,
    pub time: String,
    pub source: String,
}

/// The result of applying updates: the new state and the history records.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub state: CurrentState,
    pub history: Vec<HistoryRecord>,
    /// The major status changed.
    pub status_changed: bool,
}

/// Apply `updates` to `current`, DIRAC's way: updates older than the last
/// recorded status are recorded but not applied; a status the machine does
/// not allow is replaced by the current one and its source marked `(SM)`,
/// while its minor and application statuses still apply.
pub fn apply(current: &CurrentState, updates: &[Update], force: bool) -> Outcome {
    let mut state = current.clone();
    let mut order: Vec<&Update> = updates.iter().collect();
    order.sort_by(|a, b| a.time.cmp(&b.time));
    // DiracX: a Stalled job that reports anything (new) is alive again.
    if state.status == Stalled
        && !force
        && order
            .iter()
            .any(|u| u.time >= state.status_time && u.status != Some(Stalled))
    {
        state.status = Running;
    }
    let mut history = Vec::with_capacity(order.len());
    for u in order {
        let mut source = u.source.clone();
        let mut recorded_status = u.status;
        let applies = u.time >= state.status_time;
        if applies {
            if let Some(mut to) = u.status {
                if !force && !state.status.can_move_to(to) {
                    to = state.status;
                    recorded_status = Some(to);
                    source.push_str("(SM)");
                }
                if to != state.status {
                    state.status = to;
                    state.status_time = u.time.clone();
                }
                if to == Running && state.start_exec_time.is_none() {
                    state.start_exec_time = Some(u.time.clone());
                }
                if to.is_final() && state.end_exec_time.is_none() {
                    state.end_exec_time = Some(u.time.clone());
                }
            }
            if let Some(m) = &u.minor_status {
                state.minor_status = m.clone();
            }
            if let Some(a) = &u.application_status {
                state.application_status = a.clone();
            }
        }
        history.push(HistoryRecord {
            status: recorded_status.map_or_else(|| "idem".to_string(), |s| s.as_str().to_string()),
            minor_status: u.minor_status.clone().unwrap_or_else(|| "idem".into()),
            application_status: u
                .application_status
                .clone()
                .unwrap_or_else(|| "idem".into()),
            time: u.time.clone(),
            source,
        });
    }
    let status_changed = state.status != current.status;
    Outcome {
        state,
        history,
        status_changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(status: JobStatus, time: &str) -> CurrentState {
        CurrentState {
            status,
            minor_status: "m".into(),
            application_status: "a".into(),
            status_time: time.into(),
            start_exec_time: None,
            end_exec_time: None,
        }
    }

    fn upd(time: &str, status: Option<JobStatus>, minor: Option<&str>) -> Update {
        Update {
            time: time.into(),
            status,
            minor_status: minor.map(str::to_string),
            application_status: None,
            source: "Test".into(),
        }
    }

    /// The table of DIRAC's state machine, spelled out once more: every pair
    /// (from, to) is checked against it.
    const TABLE: &[(&str, &[&str])] = &[
        ("Submitting", &["Received", "Checking", "Deleted", "Killed"]),
        (
            "Received",
            &[
                "Scouting", "Checking", "Waiting", "Failed", "Deleted", "Killed",
            ],
        ),
        (
            "Checking",
            &[
                "Scouting",
                "Staging",
                "Waiting",
                "Rescheduled",
                "Failed",
                "Deleted",
                "Killed",
            ],
        ),
        ("Scouting", &["Checking", "Failed", "Stalled", "Killed"]),
        ("Staging", &["Checking", "Waiting", "Failed", "Killed"]),
        ("Waiting", &["Matched", "Rescheduled", "Deleted", "Killed"]),
        ("Matched", &["Running", "Failed", "Rescheduled", "Killed"]),
        (
            "Rescheduled",
            &["Waiting", "Received", "Deleted", "Failed", "Killed"],
        ),
        (
            "Running",
            &[
                "Stalled",
                "Done",
                "Failed",
                "Rescheduled",
                "Completing",
                "Killed",
                "Received",
            ],
        ),
        ("Stalled", &["Running", "Failed", "Killed"]),
        (
            "Completing",
            &["Done", "Failed", "Completed", "Stalled", "Killed"],
        ),
        ("Completed", &["Done", "Failed"]),
        ("Done", &["Deleted"]),
        ("Failed", &["Rescheduled", "Deleted"]),
        ("Killed", &["Deleted"]),
        ("Deleted", &[]),
    ];

    #[test]
    fn every_transition_matches_dirac() {
        assert_eq!(TABLE.len(), JobStatus::ALL.len());
        for (from, allowed) in TABLE {
            let from: JobStatus = from.parse().expect("status");
            for to in JobStatus::ALL {
                let expected = from == to || allowed.contains(&to.as_str());
                assert_eq!(from.can_move_to(to), expected, "{from} -> {to}");
                // And through `apply`, forced and not.
                let cur = at(from, "2026-01-01T00:00:00.000000Z");
                let out = apply(
                    &cur,
                    &[upd("2026-01-01T00:00:01.000000Z", Some(to), Some("x"))],
                    false,
                );
                if from == Stalled && to != Stalled {
                    // Stalled jobs reporting anything count as Running first.
                    assert_eq!(
                        out.state.status,
                        if Running.can_move_to(to) { to } else { Running },
                        "{from} -> {to}"
                    );
                    continue;
                }
                assert_eq!(
                    out.state.status,
                    if expected { to } else { from },
                    "{from} -> {to}"
                );
                assert_eq!(
                    out.history[0].source.ends_with("(SM)"),
                    !expected,
                    "{from} -> {to}"
                );
                let forced = apply(
                    &cur,
                    &[upd("2026-01-01T00:00:01.000000Z", Some(to), None)],
                    true,
                );
                assert_eq!(forced.state.status, to);
            }
        }
    }

    #[test]
    fn updates_apply_in_time_order_and_old_ones_are_ignored() {
        let cur = at(Waiting, "2026-01-01T00:00:05.000000Z");
        let out = apply(
            &cur,
            &[
                upd(
                    "2026-01-01T00:00:09.000000Z",
                    Some(Running),
                    Some("Application"),
                ),
                upd(
                    "2026-01-01T00:00:07.000000Z",
                    Some(Matched),
                    Some("Assigned"),
                ),
                upd("2026-01-01T00:00:01.000000Z", Some(Killed), Some("too old")),
            ],
            false,
        );
        assert_eq!(out.state.status, Running);
        assert_eq!(out.state.minor_status, "Application");
        assert_eq!(
            out.state.start_exec_time.as_deref(),
            Some("2026-01-01T00:00:09.000000Z")
        );
        assert_eq!(out.state.status_time, "2026-01-01T00:00:09.000000Z");
        // All three are recorded, oldest first.
        let times: Vec<_> = out.history.iter().map(|h| &h.time[17..19]).collect();
        assert_eq!(times, ["01", "07", "09"]);
        assert!(out.status_changed);
    }

    #[test]
    fn minor_status_only_updates_keep_the_major_status() {
        let cur = at(Running, "2026-01-01T00:00:05.000000Z");
        let out = apply(
            &cur,
            &[upd(
                "2026-01-01T00:00:06.000000Z",
                None,
                Some("Uploading Outputs"),
            )],
            false,
        );
        assert_eq!(out.state.status, Running);
        assert_eq!(out.state.minor_status, "Uploading Outputs");
        assert_eq!(out.history[0].status, "idem");
        assert!(!out.status_changed);
        assert_eq!(out.state.status_time, cur.status_time);
    }

    #[test]
    fn exec_times_are_set_once() {
        let mut cur = at(Running, "2026-01-01T00:00:05.000000Z");
        cur.start_exec_time = Some("2026-01-01T00:00:05.000000Z".into());
        let out = apply(
            &cur,
            &[upd("2026-01-01T00:00:08.000000Z", Some(Done), None)],
            false,
        );
        assert_eq!(
            out.state.start_exec_time.as_deref(),
            Some("2026-01-01T00:00:05.000000Z")
        );
        assert_eq!(
            out.state.end_exec_time.as_deref(),
            Some("2026-01-01T00:00:08.000000Z")
        );
        let again = apply(
            &out.state,
            &[upd("2026-01-01T00:00:09.000000Z", Some(Failed), None)],
            true,
        );
        assert_eq!(
            again.state.end_exec_time.as_deref(),
            Some("2026-01-01T00:00:08.000000Z")
        );
    }

    #[test]
    fn statuses_parse_and_print() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>(), Ok(s));
        }
        assert!("running".parse::<JobStatus>().is_err());
    }
}
