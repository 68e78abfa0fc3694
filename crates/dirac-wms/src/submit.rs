//! Turning submitted JDL texts into job rows, as a pure function: parse,
//! check the server-set attributes, expand parametric JDLs, validate each job
//! against `Operations/JobDescription`. A request is accepted or refused as a
//! whole; the refusal lists every bad JDL with the attribute and the reason.

use dirac_core::config::JobDescriptionOps;
use dirac_jdl::{ClassAd, JobDescription, Policy, Value};

use crate::error::WmsError;

/// Who submits: set by the server from the token, never from the JDL.
#[derive(Debug, Clone)]
pub struct Submitter<'a> {
    pub owner: &'a str,
    pub owner_group: &'a str,
    pub vo: &'a str,
}

/// One job ready to insert (its id is assigned at insert).
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub jdl_index: u32,
    pub job_name: String,
    pub job_group: String,
    pub job_type: String,
    pub site: String,
    pub user_priority: i64,
    pub cpu_time: i64,
    /// The job's JDL as submitted (for a parametric job: its expanded JDL);
    /// `%j` is replaced by the job id at insert.
    pub jdl: String,
}

/// Attributes the server sets; a JDL may repeat them only with the same value.
const SERVER_SET: &[(&str, &str)] = &[
    ("Owner", "Owner"),
    ("OwnerGroup", "OwnerGroup"),
    ("VirtualOrganization", "VirtualOrganization"),
];

/// Attributes a user may not set at all.
const FORBIDDEN: &[&str] = &["JobID", "Status", "MinorStatus", "JobRequirements"];

/// Longest value of a column that holds a JDL attribute.
const NAME_WIDTH: usize = 128;
/// Width of Jobs.JobType.
const TYPE_WIDTH: usize = 32;
/// Widths of Jobs.Owner and Jobs.VO (OwnerGroup is NAME_WIDTH).
const OWNER_WIDTH: usize = 64;

/// Check a parsed JDL's server-set attributes against the submitter.
fn check_server_set(ad: &ClassAd, who: &Submitter<'_>) -> Result<(), String> {
    for (attr, _) in SERVER_SET {
        if let Some(v) = ad.get(attr) {
            let expected = match *attr {
                "Owner" => who.owner,
                "OwnerGroup" => who.owner_group,
                _ => who.vo,
            };
            let given = v.to_strings().join(",");
            if given != expected {
                return Err(format!(
                    "{attr}: wrong {attr} in JDL: '{given}' but the submitter's is '{expected}'"
                ));
            }
        }
    }
    for attr in FORBIDDEN {
        if ad.get(attr).is_some() {
            return Err(format!("{attr}: set by the server, not by the JDL"));
        }
    }
    Ok(())
}

/// The Jobs.Site value of a job: one site, `ANY`, or `Multiple`.
pub fn site_column(desc: &JobDescription) -> String {
    match desc.sites.as_slice() {
        [] => "ANY".into(),
        [one] => one.clone(),
        _ => "Multiple".into(),
    }
}

fn check_width(attr: &str, value: &str, width: usize) -> Result<(), String> {
    if value.chars().count() > width {
        return Err(format!("{attr}: longer than {width} characters"));
    }
    Ok(())
}

fn new_job(index: u32, desc: &JobDescription, jdl: String) -> Result<NewJob, String> {
    let site = site_column(desc);
    check_width("JobName", &desc.job_name, NAME_WIDTH)?;
    let job_group = desc.job_group.clone().unwrap_or_default();
    check_width("JobGroup", &job_group, NAME_WIDTH)?;
    check_width("Site", &site, NAME_WIDTH)?;
    check_width("JobType", &desc.job_type, TYPE_WIDTH)?;
    Ok(NewJob {
        jdl_index: index,
        job_name: desc.job_name.clone(),
        job_group,
        job_type: desc.job_type.clone(),
        site,
        user_priority: desc.priority,
        cpu_time: desc.cpu_time,
        jdl,
    })
}

/// Most distinct JDL errors listed in one refusal.
const MAX_REPORTED: usize = 20;

/// Prepare every job of a submission, or refuse it as a whole.
pub fn prepare(
    jdls: &[String],
    who: &Submitter<'_>,
    ops: &JobDescriptionOps,
) -> Result<Vec<NewJob>, WmsError> {
    if jdls.is_empty() {
        return Err(WmsError::InvalidArgument("no JDL in the request".into()));
    }
    for (what, value, width) in [
        ("user name", who.owner, OWNER_WIDTH),
        ("VO", who.vo, OWNER_WIDTH),
        ("group", who.owner_group, NAME_WIDTH),
    ] {
        if value.is_empty() || value.chars().count() > width {
            return Err(WmsError::InvalidArgument(format!(
                "the token's {what} must have 1 to {width} characters"
            )));
        }
    }
    if jdls.len() > ops.max_jobs_per_request {
        return Err(WmsError::ResourceExhausted(format!(
            "{} JDLs in one request; the limit is {} (Operations.JobDescription.MaxJobsPerRequest)",
            jdls.len(),
            ops.max_jobs_per_request
        )));
    }
    let policy = ops.jdl_policy();
    let mut jobs = Vec::with_capacity(jdls.len());
    let mut errors = Vec::new();
    let mut error_count = 0usize;
    for (i, text) in jdls.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        match prepare_one(index, text, who, ops, &policy) {
            Ok(mut js) => jobs.append(&mut js),
            Err(e) => {
                error_count += 1;
                if errors.len() < MAX_REPORTED {
                    errors.push(format!("jdl[{i}]: {e}"));
                }
            }
        }
        if jobs.len() > ops.max_jobs_per_request {
            return Err(WmsError::ResourceExhausted(format!(
                "the request expands to more than {} jobs (Operations.JobDescription.MaxJobsPerRequest)",
                ops.max_jobs_per_request
            )));
        }
    }
    if error_count > 0 {
        let more = if error_count > errors.len() {
            format!("; and {} more", error_count - errors.len())
        } else {
            String::new()
        };
        return Err(WmsError::InvalidArgument(format!(
            "{error_count} of {} JDLs refused, nothing submitted: {}{more}",
            jdls.len(),
            errors.join("; ")
        )));
    }
    Ok(jobs)
}

fn prepare_one(
    index: u32,
    text: &str,
    who: &Submitter<'_>,
    ops: &JobDescriptionOps,
    policy: &Policy,
) -> Result<Vec<NewJob>, String> {
    if text.len() > ops.max_jdl_size {
        return Err(format!(
            "{} bytes; the limit is {} (Operations.JobDescription.MaxJDLSize)",
            text.len(),
            ops.max_jdl_size
        ));
    }
    let ad = ClassAd::parse(text).map_err(|e| e.to_string())?;
    check_server_set(&ad, who)?;
    if dirac_jdl::is_parametric(&ad) {
        let expanded =
            dirac_jdl::expand(&ad, ops.max_parametric_jobs).map_err(|e| e.to_string())?;
        expanded
            .into_iter()
            .map(|job| {
                let desc = dirac_jdl::validate(&job, policy, who.vo).map_err(|e| e.to_string())?;
                new_job(index, &desc, job.to_jdl())
            })
            .collect()
    } else {
        let desc = dirac_jdl::validate(&ad, policy, who.vo).map_err(|e| e.to_string())?;
        Ok(vec![new_job(index, &desc, text.trim().to_string())?])
    }
}

/// The JDL the server shows: the job's JDL plus the attributes it set and
/// the `JobRequirements` the matcher uses, derived from the job's JDL.
pub fn full_jdl(
    jdl: &str,
    job_id: u64,
    owner: &str,
    group: &str,
    vo: &str,
    ops: &JobDescriptionOps,
) -> String {
    let Ok(mut ad) = ClassAd::parse(jdl) else {
        return jdl.to_string();
    };
    let desc = dirac_jdl::validate(&ad, &ops.jdl_policy(), vo).ok();
    ad.set(
        "JobID",
        Value::Int(i64::try_from(job_id).unwrap_or(i64::MAX)),
    );
    ad.set("Owner", Value::Str(owner.into()));
    ad.set("OwnerGroup", Value::Str(group.into()));
    ad.set("VirtualOrganization", Value::Str(vo.into()));
    if let Some(desc) = desc {
        let list = |v: &[String]| Value::List(v.iter().cloned().map(Value::Str).collect());
        let mut req = ClassAd::new();
        req.set("CPUTime", Value::Int(desc.cpu_time));
        req.set("OwnerGroup", Value::Str(group.into()));
        req.set("VirtualOrganization", Value::Str(vo.into()));
        req.set("UserPriority", Value::Int(desc.priority));
        if !desc.sites.is_empty() {
            req.set("Sites", list(&desc.sites));
        }
        if !desc.banned_sites.is_empty() {
            req.set("BannedSites", list(&desc.banned_sites));
        }
        if let Some(p) = &desc.platform {
            req.set("Platforms", list(std::slice::from_ref(p)));
        }
        if !desc.tags.is_empty() {
            req.set("Tags", list(&desc.tags));
        }
        req.set("JobTypes", list(std::slice::from_ref(&desc.job_type)));
        ad.set("JobRequirements", Value::Ad(req));
    }
    ad.to_jdl()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Submitter<'static> {
        Submitter {
            owner: "alice",
            owner_group: "dteam_user",
            vo: "dteam",
        }
    }

    fn ops() -> JobDescriptionOps {
        JobDescriptionOps::default()
    }

    #[test]
    fn plain_and_parametric_jdls_expand_to_jobs() {
        let jdls = vec![
            r#"[ Executable = "/bin/echo"; JobName = "one"; Site = "LCG.CERN.cern"; ]"#.to_string(),
            r#"Executable = "/bin/echo"; Arguments = "%s"; JobName = "p_%n"; Parameters = 3;
               ParameterStart = 1; ParameterStep = 1; ParameterFactor = 2;"#
                .to_string(),
        ];
        let jobs = prepare(&jdls, &who(), &ops()).expect("accepted");
        assert_eq!(jobs.len(), 4);
        assert_eq!(jobs[0].site, "LCG.CERN.cern");
        assert_eq!(jobs[0].jdl_index, 0);
        let names: Vec<_> = jobs[1..].iter().map(|j| j.job_name.as_str()).collect();
        assert_eq!(names, ["p_0", "p_1", "p_2"]);
        assert!(
            jobs[3].jdl.contains("\"7\"") || jobs[3].jdl.contains("= 7"),
            "{}",
            jobs[3].jdl
        );
        assert!(
            jobs[1..]
                .iter()
                .all(|j| j.jdl_index == 1 && j.site == "ANY")
        );
    }

    fn refused(jdls: &[&str], expected: &str) {
        let jdls: Vec<String> = jdls.iter().map(|s| s.to_string()).collect();
        let err = prepare(&jdls, &who(), &ops()).expect_err("refused");
        assert!(
            err.to_string().contains(expected),
            "'{err}' lacks '{expected}'"
        );
    }

    #[test]
    fn bad_jdls_refuse_the_whole_request() {
        refused(&[], "no JDL");
        refused(&["[ Executable = \"a\"; ]", "[ Executable = "], "jdl[1]");
        refused(&["[ Executable = \"a\"; CPUTime = 5; ]"], "CPUTime");
        refused(
            &["[ Executable = \"a\"; Owner = \"bob\"; ]"],
            "wrong Owner in JDL",
        );
        refused(
            &["[ Executable = \"a\"; Status = \"Done\"; ]"],
            "Status: set by the server",
        );
        refused(&["[ JobName = \"x\"; ]"], "Executable");
        let long = format!("[ Executable = \"a\"; JobName = \"{}\"; ]", "n".repeat(200));
        refused(&[&long], "JobName: longer than 128");
        let mut small = ops();
        small.max_jdl_size = 10;
        let err =
            prepare(&["[ Executable = \"a\"; ]".into()], &who(), &small).expect_err("too big");
        assert!(err.to_string().contains("MaxJDLSize"));
        small = ops();
        small.max_jobs_per_request = 2;
        let err = prepare(
            &["[ Executable = \"a\"; Parameters = 3; ]".into()],
            &who(),
            &small,
        )
        .expect_err("too many");
        assert!(matches!(err, WmsError::ResourceExhausted(_)), "{err}");
    }

    #[test]
    fn identities_wider_than_the_columns_are_refused() {
        let long = "u".repeat(65);
        let who = Submitter {
            owner: &long,
            owner_group: "g",
            vo: "dteam",
        };
        let err = prepare(&["[ Executable = \"a\"; ]".into()], &who, &ops()).expect_err("too long");
        assert!(err.to_string().contains("user name"), "{err}");
    }

    #[test]
    fn owner_attributes_may_repeat_the_submitter() {
        let jdl = "[ Executable = \"a\"; Owner = \"alice\"; OwnerGroup = \"dteam_user\"; VirtualOrganization = \"dteam\"; ]";
        assert_eq!(prepare(&[jdl.into()], &who(), &ops()).expect("ok").len(), 1);
    }

    #[test]
    fn full_jdl_has_requirements() {
        let text = full_jdl(
            "[ Executable = \"a\"; Site = {\"A\", \"B\"}; NumberOfProcessors = 4; ]",
            7,
            "alice",
            "dteam_user",
            "dteam",
            &ops(),
        );
        let ad = ClassAd::parse(&text).expect("reparse");
        assert_eq!(ad.get("JobID"), Some(&Value::Int(7)));
        let Some(Value::Ad(req)) = ad.get("JobRequirements") else {
            panic!("no requirements in {text}")
        };
        assert_eq!(
            req.get("Sites").map(Value::to_strings),
            Some(vec!["A".to_string(), "B".to_string()])
        );
        assert!(
            req.get("Tags")
                .map(Value::to_strings)
                .unwrap_or_default()
                .contains(&"MultiProcessor".to_string())
        );
    }
}
