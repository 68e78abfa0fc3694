//! Who may call what in the WMS (DiracX's WMSAccessPolicy, DIRAC's JobPolicy).
//!
//! The route table says which properties a call needs at all; the ownership
//! rules below decide, job by job, whether the caller may read or manage it:
//! the owner (same user and VO), a member of the owner's group holding
//! `JobSharing`, a `JobAdministrator`, and — for status reports — a
//! `GenericPilot`. `JobMonitor` reads everything.

use dirac_core::auth::{Access, Identity, PolicyTable};

use crate::jobdb::JobOwner;
use crate::search::Scope;

pub const JOB_MANAGER: &str = "dirac.wms.v1.JobManager";
pub const JOB_MONITORING: &str = "dirac.wms.v1.JobMonitoring";
pub const JOB_STATE_UPDATE: &str = "dirac.wms.v1.JobStateUpdate";
pub const MATCHER: &str = "dirac.wms.v1.Matcher";
pub const SANDBOX_STORE: &str = "dirac.wms.v1.SandboxStore";
pub const PILOT_MANAGER: &str = "dirac.wms.v1.PilotManager";
pub const SITE_MASK: &str = "dirac.wms.v1.SiteMask";

const USERS: &[&str] = &["NormalUser", "JobAdministrator"];
const READERS: &[&str] = &[
    "NormalUser",
    "JobAdministrator",
    "JobMonitor",
    "GenericPilot",
];
const REPORTERS: &[&str] = &["GenericPilot", "JobAdministrator", "NormalUser"];
const PILOTS: &[&str] = &["GenericPilot", "Pilot"];
const PILOT_OPERATORS: &[&str] = &[
    "GenericPilot",
    "ServiceAdministrator",
    "JobAdministrator",
    "Operator",
];
/// Users see their VO's pilots (DIRAC's pilot monitor); logs stay with operators.
const PILOT_READERS: &[&str] = &[
    "GenericPilot",
    "ServiceAdministrator",
    "JobAdministrator",
    "Operator",
    "NormalUser",
    "JobMonitor",
];

/// Every WMS method with its access policy.
pub fn register(table: &mut PolicyTable) {
    table.add_service(
        JOB_MANAGER,
        &[
            ("SubmitJobs", Access::AnyOf(&["NormalUser"])),
            ("KillJobs", Access::AnyOf(USERS)),
            ("DeleteJobs", Access::AnyOf(USERS)),
            (
                "RescheduleJobs",
                Access::AnyOf(&["NormalUser", "JobAdministrator", "GenericPilot"]),
            ),
        ],
    );
    table.add_service(
        JOB_MONITORING,
        &[
            ("GetJobs", Access::AnyOf(READERS)),
            ("GetJdl", Access::AnyOf(READERS)),
            ("GetHistory", Access::AnyOf(READERS)),
            ("SearchJobs", Access::AnyOf(READERS)),
            ("StreamJobs", Access::AnyOf(READERS)),
            ("Summary", Access::AnyOf(READERS)),
            ("GetJobParameters", Access::AnyOf(READERS)),
        ],
    );
    table.add_service(
        MATCHER,
        &[
            ("RequestJob", Access::AnyOf(PILOTS)),
            ("ExplainMatch", Access::AnyOf(READERS)),
        ],
    );
    table.add_service(
        SANDBOX_STORE,
        &[
            ("UploadSandbox", Access::AnyOf(REPORTERS)),
            ("DownloadSandbox", Access::AnyOf(READERS)),
            ("AssignSandboxes", Access::AnyOf(REPORTERS)),
            ("GetJobSandboxes", Access::AnyOf(READERS)),
        ],
    );
    table.add_service(
        PILOT_MANAGER,
        &[
            (
                "RegisterPilots",
                Access::AnyOf(&["GenericPilot", "ServiceAdministrator"]),
            ),
            (
                "SetPilotStatus",
                Access::AnyOf(&["GenericPilot", "ServiceAdministrator"]),
            ),
            ("GetPilots", Access::AnyOf(PILOT_READERS)),
            ("SearchPilots", Access::AnyOf(PILOT_READERS)),
            ("AppendPilotLog", Access::AnyOf(&["GenericPilot"])),
            ("GetPilotLog", Access::AnyOf(PILOT_OPERATORS)),
            (
                "KillPilots",
                Access::AnyOf(&["ServiceAdministrator", "JobAdministrator", "Operator"]),
            ),
            ("GetPilotOutput", Access::AnyOf(PILOT_OPERATORS)),
            ("GetQueueStatus", Access::AnyOf(PILOT_READERS)),
        ],
    );
    table.add_service(
        SITE_MASK,
        &[
            ("GetSiteMask", Access::AnyOf(PILOT_READERS)),
            (
                "SetSiteStatus",
                Access::AnyOf(&["ServiceAdministrator", "SiteManager", "Operator"]),
            ),
        ],
    );
    table.add_service(
        JOB_STATE_UPDATE,
        &[
            ("SetJobStatus", Access::AnyOf(REPORTERS)),
            ("SendHeartbeat", Access::AnyOf(REPORTERS)),
            ("SetJobParameters", Access::AnyOf(REPORTERS)),
        ],
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Manage,
    /// Status, heartbeat and parameter reports from the worker node.
    Report,
}

impl Action {
    pub fn verb(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Manage => "manage",
            Action::Report => "report on",
        }
    }
}

fn owns(who: &Identity, job: &JobOwner) -> bool {
    (job.owner == who.username && job.vo == who.vo)
        || (who.has("JobSharing") && job.owner_group == who.group && job.vo == who.vo)
}

/// May `who` do `action` on `job`? Every role acts within its own VO only.
pub fn allowed(who: &Identity, action: Action, job: &JobOwner) -> bool {
    if job.vo != who.vo {
        return false;
    }
    if who.has("JobAdministrator") || owns(who, job) {
        return true;
    }
    match action {
        Action::Read => who.has("JobMonitor") || who.has("GenericPilot"),
        Action::Report => who.has("GenericPilot"),
        Action::Manage => false,
    }
}

/// A job token acts only for its job, and only until the job ends.
pub fn job_token_allows(who: &Identity, job_id: u64, status: &str) -> Result<(), String> {
    let Some(own) = who.job else { return Ok(()) };
    if own != job_id {
        return Err(format!("this job token is for job {own}, not job {job_id}"));
    }
    if matches!(
        status,
        "Done" | "Completed" | "Failed" | "Killed" | "Deleted"
    ) {
        return Err(format!(
            "job {job_id} has ended; its job token is no longer valid"
        ));
    }
    Ok(())
}

/// The jobs a caller's searches and summaries cover.
pub fn search_scope(who: &Identity) -> Scope<'_> {
    if let Some(job_id) = who.job {
        return Scope::Job {
            job_id,
            vo: &who.vo,
        };
    }
    if who.has_any(&["JobAdministrator", "JobMonitor", "GenericPilot"]) {
        Scope::Vo { vo: &who.vo }
    } else if who.has("JobSharing") {
        Scope::Group {
            group: &who.group,
            vo: &who.vo,
        }
    } else {
        Scope::Owner {
            owner: &who.username,
            vo: &who.vo,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(user: &str, group: &str, props: &[&str]) -> Identity {
        Identity {
            sub: format!("dteam:{user}"),
            username: user.into(),
            vo: "dteam".into(),
            group: group.into(),
            properties: props.iter().map(|p| p.to_string()).collect(),
            job: None,
        }
    }

    #[test]
    fn ownership_rules() {
        let job = JobOwner {
            owner: "alice".into(),
            owner_group: "dteam_user".into(),
            vo: "dteam".into(),
            status: "Waiting".into(),
        };
        let alice = id("alice", "dteam_user", &["NormalUser"]);
        let bob = id("bob", "dteam_user", &["NormalUser"]);
        let sharer = id("carol", "dteam_user", &["NormalUser", "JobSharing"]);
        let other_group_sharer = id("dave", "dteam_prod", &["NormalUser", "JobSharing"]);
        let admin = id("root", "dteam_admin", &["JobAdministrator"]);
        let monitor = id("mon", "dteam_mon", &["JobMonitor"]);
        let pilot = id("pilot", "dteam_pilot", &["GenericPilot"]);
        for action in [Action::Read, Action::Manage, Action::Report] {
            assert!(allowed(&alice, action, &job));
            assert!(!allowed(&bob, action, &job));
            assert!(allowed(&sharer, action, &job));
            assert!(!allowed(&other_group_sharer, action, &job));
            assert!(allowed(&admin, action, &job));
            assert_eq!(allowed(&monitor, action, &job), action == Action::Read);
            assert_eq!(allowed(&pilot, action, &job), action != Action::Manage);
        }
        let mut other_vo = alice.clone();
        other_vo.vo = "lhcb".into();
        assert!(!allowed(&other_vo, Action::Read, &job));
        for mut foreign in [admin.clone(), monitor.clone(), pilot.clone()] {
            foreign.vo = "lhcb".into();
            for action in [Action::Read, Action::Manage, Action::Report] {
                assert!(
                    !allowed(&foreign, action, &job),
                    "{} of lhcb may not {action:?}",
                    foreign.username
                );
            }
        }
        assert_eq!(
            search_scope(&alice),
            Scope::Owner {
                owner: "alice",
                vo: "dteam"
            }
        );
        assert_eq!(
            search_scope(&sharer),
            Scope::Group {
                group: "dteam_user",
                vo: "dteam"
            }
        );
        assert_eq!(search_scope(&admin), Scope::Vo { vo: "dteam" });
    }
}
