//! The matching rules between one task queue and one resource, stated twice on purpose:
//! [`matches`] is the plain boolean statement (the reference the property tests check the index
//! against), [`mismatches`] lists every rule that fails, for the index and for explanations.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use crate::{Resource, TqKey};

/// One rule a task queue fails for a resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mismatch {
    /// The resource belongs to another VO.
    Vo,
    /// A private pilot of another owner.
    Owner,
    /// A private or job-sharing pilot of another group.
    OwnerGroup,
    /// The queue needs more CPU time than the resource has left.
    CpuTime,
    /// The queue is restricted to sites and the resource's site (or no site) is not among them.
    Site,
    /// The resource's site is banned by the queue.
    BannedSite,
    /// The queue is restricted to CEs and the resource's CE (or no CE) is not among them.
    GridCe,
    /// The queue is restricted to platforms and the resource offers none of them.
    Platform,
    /// The resource accepts job types and the queue's are not among them.
    JobType,
    /// The queue needs this tag and the resource does not offer it.
    MissingTag(String),
    /// The resource requires this tag and the queue does not carry it.
    RequiredTag(String),
    /// The queue's job type is excluded at the resource's site by a limit.
    ExcludedJobType(String),
}

/// Whether a pilot with `resource` may take jobs of the queue `key` while the job types in
/// `excluded` are suppressed by site limits (see [`limits`](crate::limits)).
///
/// Rules: same VO; the pilot's owner/group, when fixed, equal the queue's; queue CPU time ≤
/// resource CPU time; for sites, CEs and platforms the queue's set is empty or holds the
/// resource's value (a resource without a site never satisfies a site restriction; `ANY` among
/// its platforms is a wildcard); the resource's site is not banned; the resource accepts any job
/// type or one of the queue's; every queue tag is offered by the resource; every tag the
/// resource requires is carried by the queue; none of the queue's job types is excluded. A queue
/// without job types counts as [`DEFAULT_JOB_TYPE`](crate::DEFAULT_JOB_TYPE).
pub fn matches(key: &TqKey, resource: &Resource, excluded: &BTreeSet<String>) -> bool {
    let site_ok = key.sites.is_empty()
        || resource
            .site
            .as_ref()
            .is_some_and(|site| key.sites.contains(site));
    let not_banned = resource
        .site
        .as_ref()
        .is_none_or(|site| !key.banned_sites.contains(site));
    let ce_ok = key.grid_ces.is_empty()
        || resource
            .grid_ce
            .as_ref()
            .is_some_and(|ce| key.grid_ces.contains(ce));
    let platform_ok = key.platforms.is_empty()
        || resource
            .platforms
            .iter()
            .any(|p| p.eq_ignore_ascii_case("any") || key.platforms.contains(p));
    let job_types: Vec<&str> = key.effective_job_types().collect();
    let job_type_ok = resource.job_types.is_empty()
        || job_types
            .iter()
            .any(|t| resource.job_types.iter().any(|r| r == t));
    let not_excluded = !job_types.iter().any(|t| excluded.contains(*t));

    key.vo == resource.vo
        && resource.owner.as_ref().is_none_or(|o| *o == key.owner)
        && resource
            .owner_group
            .as_ref()
            .is_none_or(|g| *g == key.owner_group)
        && key.cpu_time <= resource.cpu_time
        && site_ok
        && not_banned
        && ce_ok
        && platform_ok
        && job_type_ok
        && key.tags.is_subset(&resource.tags)
        && resource.required_tags.is_subset(&key.tags)
        && not_excluded
}

/// Every rule `key` fails for `resource`, in the order of [`Mismatch`]; empty when it matches.
pub fn mismatches(key: &TqKey, resource: &Resource, excluded: &BTreeSet<String>) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let _: ControlFlow<()> = visit(key, resource, excluded, |m| {
        out.push(m);
        ControlFlow::Continue(())
    });
    out
}

/// The first rule `key` fails for `resource`, if any (cheaper than [`mismatches`]).
pub fn first_mismatch(
    key: &TqKey,
    resource: &Resource,
    excluded: &BTreeSet<String>,
) -> Option<Mismatch> {
    match visit(key, resource, excluded, ControlFlow::Break) {
        ControlFlow::Break(m) => Some(m),
        ControlFlow::Continue(()) => None,
    }
}

fn visit<B>(
    key: &TqKey,
    res: &Resource,
    excluded: &BTreeSet<String>,
    mut fail: impl FnMut(Mismatch) -> ControlFlow<B>,
) -> ControlFlow<B> {
    if key.vo != res.vo {
        fail(Mismatch::Vo)?;
    }
    if res.owner.as_ref().is_some_and(|o| *o != key.owner) {
        fail(Mismatch::Owner)?;
    }
    if res
        .owner_group
        .as_ref()
        .is_some_and(|g| *g != key.owner_group)
    {
        fail(Mismatch::OwnerGroup)?;
    }
    if key.cpu_time > res.cpu_time {
        fail(Mismatch::CpuTime)?;
    }
    if !key.sites.is_empty() {
        match &res.site {
            Some(site) if key.sites.contains(site) => {}
            _ => fail(Mismatch::Site)?,
        }
    }
    if let Some(site) = &res.site
        && key.banned_sites.contains(site)
    {
        fail(Mismatch::BannedSite)?;
    }
    if !key.grid_ces.is_empty() {
        match &res.grid_ce {
            Some(ce) if key.grid_ces.contains(ce) => {}
            _ => fail(Mismatch::GridCe)?,
        }
    }
    if !key.platforms.is_empty() {
        let offered = res
            .platforms
            .iter()
            .any(|p| p.eq_ignore_ascii_case("any") || key.platforms.contains(p.as_str()));
        if !offered {
            fail(Mismatch::Platform)?;
        }
    }
    if !res.job_types.is_empty()
        && !key
            .effective_job_types()
            .any(|t| res.job_types.iter().any(|r| r == t))
    {
        fail(Mismatch::JobType)?;
    }
    for tag in &key.tags {
        if !res.tags.contains(tag) {
            fail(Mismatch::MissingTag(tag.clone()))?;
        }
    }
    for tag in &res.required_tags {
        if !key.tags.contains(tag) {
            fail(Mismatch::RequiredTag(tag.clone()))?;
        }
    }
    for job_type in key.effective_job_types() {
        if excluded.contains(job_type) {
            fail(Mismatch::ExcludedJobType(job_type.to_owned()))?;
        }
    }
    ControlFlow::Continue(())
}
