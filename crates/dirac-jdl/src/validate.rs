//! Checks a parsed job ClassAd against `Operations/JobDescription` policy and derives the
//! normalized [`JobDescription`].

use crate::ad::{ClassAd, Value};

/// `Operations/JobDescription` defaults and bounds. [`Policy::default`] gives DIRAC's defaults.
#[derive(Clone, Debug)]
pub struct Policy {
    pub default_cpu_time: i64,
    pub min_cpu_time: i64,
    pub max_cpu_time: i64,
    pub default_priority: i64,
    pub min_priority: i64,
    pub max_priority: i64,
    pub max_input_data: usize,
    pub allowed_job_types: Vec<String>,
    pub default_job_type: String,
    pub default_job_name: String,
    pub max_processors: i64,
    pub default_std_output: String,
    pub default_std_error: String,
    /// Empty means site names are not checked.
    pub known_sites: Vec<String>,
    /// Empty means platforms are not checked.
    pub platforms: Vec<String>,
    pub max_parametric_jobs: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            default_cpu_time: 86_400,
            min_cpu_time: 100,
            max_cpu_time: 500_000,
            default_priority: 1,
            min_priority: 0,
            max_priority: 10,
            max_input_data: 500,
            allowed_job_types: vec!["User".to_owned(), "Test".to_owned(), "Hospital".to_owned()],
            default_job_type: "User".to_owned(),
            default_job_name: "Name".to_owned(),
            max_processors: 1024,
            default_std_output: "std.out".to_owned(),
            default_std_error: "std.err".to_owned(),
            known_sites: Vec::new(),
            platforms: Vec::new(),
            max_parametric_jobs: 10_000,
        }
    }
}

/// A validated job with defaults applied and tags derived.
#[derive(Clone, Debug, PartialEq)]
pub struct JobDescription {
    pub executable: String,
    pub arguments: Option<String>,
    pub job_name: String,
    pub job_group: Option<String>,
    pub job_type: String,
    pub cpu_time: i64,
    pub priority: i64,
    /// Empty means any site.
    pub sites: Vec<String>,
    pub banned_sites: Vec<String>,
    pub grid_ce: Option<String>,
    pub platform: Option<String>,
    /// Normalized to `LFN:/<vo>/...`.
    pub input_data: Vec<String>,
    pub input_sandbox: Vec<String>,
    pub output_sandbox: Vec<String>,
    pub output_data: Vec<String>,
    pub output_se: Vec<String>,
    pub min_processors: i64,
    pub max_processors: i64,
    pub whole_node: bool,
    pub max_ram_mb: Option<i64>,
    /// Sorted and deduplicated: explicit `Tags`/`Tag` plus derived tags.
    pub tags: Vec<String>,
    pub log_level: Option<String>,
    pub std_output: String,
    pub std_error: String,
}

/// A rejected attribute. Displays as `Attribute: message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{attribute}: {message}")]
pub struct ValidationError {
    pub attribute: String,
    pub message: String,
}

fn err(attribute: &str, message: impl Into<String>) -> ValidationError {
    ValidationError {
        attribute: attribute.to_owned(),
        message: message.into(),
    }
}

/// Attributes this crate or the server knows; a name matching one of these only up to letter
/// case is rejected as a likely typo.
const KNOWN_ATTRIBUTES: &[&str] = &[
    "Executable",
    "Arguments",
    "JobName",
    "JobGroup",
    "JobType",
    "InputSandbox",
    "OutputSandbox",
    "StdOutput",
    "StdError",
    "InputData",
    "InputDataPolicy",
    "InputDataModule",
    "OutputData",
    "OutputSE",
    "OutputPath",
    "Site",
    "BannedSites",
    "BannedSite",
    "GridCE",
    "Platform",
    "CPUTime",
    "Priority",
    "NumberOfProcessors",
    "MinNumberOfProcessors",
    "MaxNumberOfProcessors",
    "WholeNode",
    "MaxRAM",
    "Tags",
    "Tag",
    "LogLevel",
    "ExecutionEnvironment",
    "JobConfigArgs",
    "Owner",
    "OwnerGroup",
    "VirtualOrganization",
    "JobID",
    "Status",
    "MinorStatus",
    "JobRequirements",
    "Parameters",
    "ParameterStart",
    "ParameterStep",
    "ParameterFactor",
    "Parameter",
    "ParameterNumber",
];

fn check_attribute_case(name: &str) -> Result<(), ValidationError> {
    if KNOWN_ATTRIBUTES.contains(&name) {
        return Ok(());
    }
    match KNOWN_ATTRIBUTES
        .iter()
        .find(|known| known.eq_ignore_ascii_case(name))
    {
        Some(known) => Err(err(
            name,
            format!("unknown attribute '{name}' (did you mean '{known}'?)"),
        )),
        None => Ok(()),
    }
}

/// A single scalar attribute as text; lists and ads are rejected.
fn scalar(ad: &ClassAd, name: &str) -> Result<Option<String>, ValidationError> {
    match ad.get(name) {
        None => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s.trim().to_owned())),
        Some(Value::Int(i)) => Ok(Some(i.to_string())),
        Some(Value::List(_)) => Err(err(name, "expected a single value, got a list")),
        Some(Value::Ad(_)) => Err(err(name, "expected a single value, got a classad")),
    }
}

/// A scalar attribute, `None` when absent or empty.
fn non_empty(ad: &ClassAd, name: &str) -> Result<Option<String>, ValidationError> {
    Ok(scalar(ad, name)?.filter(|s| !s.is_empty()))
}

fn int(ad: &ClassAd, name: &str) -> Result<Option<i64>, ValidationError> {
    match ad.get(name) {
        None => Ok(None),
        Some(v @ (Value::Str(_) | Value::Int(_))) => match v.as_int() {
            Some(i) => Ok(Some(i)),
            None => Err(err(
                name,
                format!("'{}' is not an integer", v.to_strings().concat()),
            )),
        },
        Some(_) => Err(err(name, "expected an integer")),
    }
}

fn bounded(name: &str, value: i64, min: i64, max: i64) -> Result<i64, ValidationError> {
    if value < min {
        Err(err(name, format!("{value} is below the minimum of {min}")))
    } else if value > max {
        Err(err(name, format!("{value} is above the maximum of {max}")))
    } else {
        Ok(value)
    }
}

/// All non-empty strings of a string-or-list attribute.
fn strings(ad: &ClassAd, name: &str) -> Result<Vec<String>, ValidationError> {
    match ad.get(name) {
        None => Ok(Vec::new()),
        Some(Value::Ad(_)) => Err(err(name, "expected a string or a list, got a classad")),
        Some(v) => {
            let mut out = v.to_strings();
            out.retain_mut(|s| {
                let trimmed = s.trim();
                if trimmed.len() != s.len() {
                    *s = trimmed.to_owned();
                }
                !s.is_empty()
            });
            Ok(out)
        }
    }
}

/// Site names from a string (comma separated allowed) or list; `ANY` means no constraint.
fn sites(ad: &ClassAd, name: &str) -> Result<Vec<String>, ValidationError> {
    let mut out = Vec::new();
    for item in strings(ad, name)? {
        for site in item.split(',').map(str::trim) {
            if !site.is_empty()
                && !site.eq_ignore_ascii_case("ANY")
                && !out.iter().any(|s| s == site)
            {
                out.push(site.to_owned());
            }
        }
    }
    Ok(out)
}

fn flag(ad: &ClassAd, name: &str) -> Result<bool, ValidationError> {
    let Some(text) = scalar(ad, name)? else {
        return Ok(false);
    };
    match text.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" | "" => Ok(false),
        _ => Err(err(
            name,
            format!("expected yes/no, true/false or 1/0, got '{text}'"),
        )),
    }
}

/// Normalizes one LFN to `LFN:/<vo>/...`.
fn normalize_lfn(raw: &str, vo: &str) -> Result<String, ValidationError> {
    let path = match raw.get(..4) {
        Some(prefix) if prefix.eq_ignore_ascii_case("LFN:") => &raw[4..],
        _ => raw,
    };
    let vo_prefix_ok = path
        .strip_prefix('/')
        .and_then(|rest| rest.strip_prefix(vo))
        .is_some_and(|rest| rest.starts_with('/'));
    if !vo_prefix_ok {
        return Err(err(
            "InputData",
            format!("'{raw}' does not start with '/{vo}/'"),
        ));
    }
    if path.contains("//") {
        return Err(err("InputData", format!("'{raw}' contains '//'")));
    }
    Ok(format!("LFN:{path}"))
}

/// Returns (min, max, whether `NumberOfProcessors` fixed the count).
fn processors(ad: &ClassAd, policy: &Policy) -> Result<(i64, i64, bool), ValidationError> {
    let max_allowed = policy.max_processors;
    let exact = int(ad, "NumberOfProcessors")?;
    let min = int(ad, "MinNumberOfProcessors")?;
    let max = int(ad, "MaxNumberOfProcessors")?;
    if let Some(n) = exact {
        if min.is_some() || max.is_some() {
            return Err(err(
                "NumberOfProcessors",
                "cannot be combined with MinNumberOfProcessors or MaxNumberOfProcessors",
            ));
        }
        let n = bounded("NumberOfProcessors", n, 1, max_allowed)?;
        return Ok((n, n, true));
    }
    let min = bounded("MinNumberOfProcessors", min.unwrap_or(1), 1, max_allowed)?;
    let max = bounded("MaxNumberOfProcessors", max.unwrap_or(min), 1, max_allowed)?;
    if min > max {
        return Err(err(
            "MinNumberOfProcessors",
            format!("{min} is greater than MaxNumberOfProcessors {max}"),
        ));
    }
    Ok((min, max, false))
}

/// Validates a (non-parametric or already expanded) job ClassAd for virtual organization `vo`.
pub fn validate(
    ad: &ClassAd,
    policy: &Policy,
    vo: &str,
) -> Result<JobDescription, ValidationError> {
    for (name, _) in ad.iter() {
        check_attribute_case(name)?;
    }

    let executable = match scalar(ad, "Executable")? {
        None => return Err(err("Executable", "mandatory attribute is missing")),
        Some(s) if s.is_empty() => return Err(err("Executable", "must not be empty")),
        Some(s) => s,
    };

    let job_type = non_empty(ad, "JobType")?.unwrap_or_else(|| policy.default_job_type.clone());
    if !policy.allowed_job_types.contains(&job_type) {
        return Err(err(
            "JobType",
            format!(
                "'{job_type}' is not an allowed job type (allowed: {})",
                policy.allowed_job_types.join(", ")
            ),
        ));
    }

    let cpu_time = match int(ad, "CPUTime")? {
        Some(t) => bounded("CPUTime", t, policy.min_cpu_time, policy.max_cpu_time)?,
        None => policy.default_cpu_time,
    };
    let priority = match int(ad, "Priority")? {
        Some(p) => bounded("Priority", p, policy.min_priority, policy.max_priority)?,
        None => policy.default_priority,
    };

    let (min_processors, max_processors, exact_processors) = processors(ad, policy)?;
    let whole_node = flag(ad, "WholeNode")?;
    let max_ram_mb = match int(ad, "MaxRAM")? {
        Some(mb) if mb < 1 => return Err(err("MaxRAM", format!("{mb} is below the minimum of 1"))),
        other => other,
    };

    let mut input_data = Vec::new();
    for raw in strings(ad, "InputData")? {
        input_data.push(normalize_lfn(&raw, vo)?);
    }
    if job_type == "User" && input_data.len() > policy.max_input_data {
        return Err(err(
            "InputData",
            format!(
                "{} files exceed the maximum of {} for User jobs",
                input_data.len(),
                policy.max_input_data
            ),
        ));
    }

    let site_list = sites(ad, "Site")?;
    let mut banned = sites(ad, "BannedSites")?;
    for site in sites(ad, "BannedSite")? {
        if !banned.contains(&site) {
            banned.push(site);
        }
    }
    if !policy.known_sites.is_empty() {
        for (attr, list) in [("Site", &site_list), ("BannedSites", &banned)] {
            if let Some(unknown) = list.iter().find(|s| !policy.known_sites.contains(s)) {
                return Err(err(attr, format!("unknown site '{unknown}'")));
            }
        }
    }
    if !site_list.is_empty() && site_list.iter().all(|s| banned.contains(s)) {
        return Err(err(
            "Site",
            "no candidate sites left after removing BannedSites",
        ));
    }

    let platform = non_empty(ad, "Platform")?.filter(|p| !p.eq_ignore_ascii_case("ANY"));
    if let Some(p) = &platform
        && !policy.platforms.is_empty()
        && !policy.platforms.contains(p)
    {
        return Err(err("Platform", format!("unknown platform '{p}'")));
    }

    let mut tags = strings(ad, "Tags")?;
    tags.extend(strings(ad, "Tag")?);
    if exact_processors && min_processors > 1 {
        tags.push(format!("{min_processors}Processors"));
    }
    if max_processors > 1 || whole_node {
        tags.push("MultiProcessor".to_owned());
    }
    if whole_node {
        tags.push("WholeNode".to_owned());
    }
    if let Some(mb) = max_ram_mb {
        tags.push(format!("{}GB", mb / 1024 + i64::from(mb % 1024 != 0)));
    }
    tags.sort_unstable();
    tags.dedup();

    Ok(JobDescription {
        executable,
        arguments: scalar(ad, "Arguments")?,
        job_name: non_empty(ad, "JobName")?.unwrap_or_else(|| policy.default_job_name.clone()),
        job_group: non_empty(ad, "JobGroup")?,
        job_type,
        cpu_time,
        priority,
        sites: site_list,
        banned_sites: banned,
        grid_ce: non_empty(ad, "GridCE")?,
        platform,
        input_data,
        input_sandbox: strings(ad, "InputSandbox")?,
        output_sandbox: strings(ad, "OutputSandbox")?,
        output_data: strings(ad, "OutputData")?,
        output_se: strings(ad, "OutputSE")?,
        min_processors,
        max_processors,
        whole_node,
        max_ram_mb,
        tags,
        log_level: non_empty(ad, "LogLevel")?,
        std_output: non_empty(ad, "StdOutput")?
            .unwrap_or_else(|| policy.default_std_output.clone()),
        std_error: non_empty(ad, "StdError")?.unwrap_or_else(|| policy.default_std_error.clone()),
    })
}
