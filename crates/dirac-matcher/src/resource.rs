//! What a pilot offers: the raw [`ResourceDescription`] it sends and the validated [`Resource`]
//! the matcher works with.

use std::collections::BTreeSet;

use crate::MatchError;

/// Ten years, the largest `CPUTime` a pilot may claim.
pub const MAX_CPU_TIME: i64 = 10 * 365 * 86_400;
/// The largest `NumberOfProcessors` a pilot may claim.
pub const MAX_PROCESSORS: i64 = 4_096;
/// 64 TiB in MB, the largest `MaxRAM` a pilot may claim.
pub const MAX_RAM_MB: i64 = 64 * 1024 * 1024;

/// A validated pilot resource, the input of matching.
///
/// Resource-side conventions (see [`matches`](crate::matches) for the rules):
/// - `owner`/`owner_group`: both `None` is a generic pilot (any group of `vo`), only
///   `owner_group` a job-sharing pilot, both set a private pilot;
/// - `site`/`grid_ce`: `None` means "unknown", which satisfies only queues without a site/CE
///   restriction;
/// - `platforms`: the platforms the pilot can run; `ANY` among them is a wildcard, empty satisfies
///   only queues without a platform restriction;
/// - `job_types`: the job types the pilot accepts, empty = any.
///
/// Lists are kept sorted and deduplicated by [`ResourceDescription::into_resource`] so equal
/// offers compare equal (the matcher caches per distinct resource).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resource {
    pub vo: String,
    pub owner: Option<String>,
    pub owner_group: Option<String>,
    pub site: Option<String>,
    pub grid_ce: Option<String>,
    pub platforms: Vec<String>,
    /// Seconds of CPU time left.
    pub cpu_time: u64,
    pub tags: BTreeSet<String>,
    pub required_tags: BTreeSet<String>,
    pub job_types: Vec<String>,
}

/// A resource description as a pilot sends it (DIRAC's `ceDict`), not yet validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceDescription {
    pub vo: String,
    pub owner: Option<String>,
    pub owner_group: Option<String>,
    pub site: Option<String>,
    pub grid_ce: Option<String>,
    pub platforms: Vec<String>,
    pub cpu_time: i64,
    pub number_of_processors: i64,
    /// MB; 0 when unknown.
    pub max_ram_mb: i64,
    pub whole_node: bool,
    pub tags: Vec<String>,
    pub required_tags: Vec<String>,
    pub job_types: Vec<String>,
}

impl Default for ResourceDescription {
    fn default() -> Self {
        Self {
            vo: String::new(),
            owner: None,
            owner_group: None,
            site: None,
            grid_ce: None,
            platforms: Vec::new(),
            cpu_time: 0,
            number_of_processors: 1,
            max_ram_mb: 0,
            whole_node: false,
            tags: Vec::new(),
            required_tags: Vec::new(),
            job_types: Vec::new(),
        }
    }
}

fn in_range(field: &'static str, value: i64, min: i64, max: i64) -> Result<i64, MatchError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(MatchError::OutOfRange {
            field,
            value,
            min,
            max,
        })
    }
}

/// Trims; empty and `ANY` (any case) mean "not given".
fn concrete(value: Option<String>) -> Option<String> {
    let value = value?;
    let trimmed = value.trim();
    (!trimmed.is_empty() && !trimmed.eq_ignore_ascii_case("any")).then(|| trimmed.to_owned())
}

fn clean_list(values: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = values
        .into_iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

impl ResourceDescription {
    /// Validates the description and derives the capability tags DIRAC's matcher derives:
    /// `NumberOfProcessors = N > 1` gives `2Processors`…`NProcessors` and `MultiProcessor`,
    /// `MaxRAM` gives `1GB`…`⌊MaxRAM/1024⌋GB`, `WholeNode` gives `WholeNode`.
    ///
    /// Errors name the offending field: a missing `VirtualOrganization`, an `Owner` without
    /// `OwnerGroup`, or `CPUTime`, `NumberOfProcessors`, `MaxRAM` outside
    /// `0..=`[`MAX_CPU_TIME`], `1..=`[`MAX_PROCESSORS`], `0..=`[`MAX_RAM_MB`].
    pub fn into_resource(self) -> Result<Resource, MatchError> {
        let vo = self.vo.trim().to_owned();
        if vo.is_empty() {
            return Err(MatchError::Missing {
                field: "VirtualOrganization",
            });
        }
        let cpu_time = in_range("CPUTime", self.cpu_time, 0, MAX_CPU_TIME)?;
        let processors = in_range(
            "NumberOfProcessors",
            self.number_of_processors,
            1,
            MAX_PROCESSORS,
        )?;
        let max_ram_mb = in_range("MaxRAM", self.max_ram_mb, 0, MAX_RAM_MB)?;
        let owner_group = concrete(self.owner_group);
        let owner = concrete(self.owner);
        if owner.is_some() && owner_group.is_none() {
            return Err(MatchError::Invalid {
                field: "Owner",
                reason: "a private pilot needs an OwnerGroup too",
            });
        }

        let mut tags: BTreeSet<String> = clean_list(self.tags).into_iter().collect();
        if processors > 1 {
            tags.extend((2..=processors).map(|n| format!("{n}Processors")));
            tags.insert("MultiProcessor".to_owned());
        }
        tags.extend((1..=max_ram_mb / 1024).map(|gb| format!("{gb}GB")));
        if self.whole_node {
            tags.insert("WholeNode".to_owned());
        }
        let mut job_types = clean_list(self.job_types);
        if job_types.iter().any(|t| t.eq_ignore_ascii_case("any")) {
            job_types.clear();
        }

        Ok(Resource {
            vo,
            owner,
            owner_group,
            site: concrete(self.site),
            grid_ce: concrete(self.grid_ce),
            platforms: clean_list(self.platforms),
            // in range 0..=MAX_CPU_TIME, so the conversion cannot fail
            cpu_time: u64::try_from(cpu_time).unwrap_or_default(),
            tags,
            required_tags: clean_list(self.required_tags).into_iter().collect(),
            job_types,
        })
    }
}
