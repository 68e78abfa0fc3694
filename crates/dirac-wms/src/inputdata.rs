//! The InputData optimizer step (DIRAC's InputData + JobScheduling
//! executors for data): a job's `InputData` LFNs are looked up in the
//! catalog as the job's owner; a file that is missing or unreadable fails
//! the job with the reason; otherwise the job may run only at sites that
//! hold a replica of every input file (an SE's `Site`), intersected with
//! the job's own `Site` requirement.
//!
//! The catalog is reached through [`ReplicaCatalog`], which `diracd`
//! implements over the FileCatalog: the WMS never depends on the DMS.

use std::collections::{BTreeMap, BTreeSet};

use crate::Wms;
use crate::jobdb::{Claimed, INPUT_DATA_NOT_AVAILABLE, NO_CANDIDATE_SITES, Verdict};

/// The job's owner, as the catalog checks permissions.
#[derive(Debug, Clone)]
pub struct Owner {
    pub user: String,
    pub group: String,
    pub vo: String,
}

/// LFN → the storage elements holding a visible replica, or why not.
pub type Replicas = BTreeMap<String, Result<Vec<String>, String>>;

#[async_trait::async_trait]
pub trait ReplicaCatalog: Send + Sync {
    /// Replicas of `lfns` as `owner` may see them; `Err` when the catalog
    /// cannot answer at all (the jobs then stay for the next round).
    async fn replicas(&self, owner: &Owner, lfns: &[String]) -> Result<Replicas, String>;
}

/// The LFNs of a JDL's `InputData` (an `LFN:` prefix dropped).
pub fn input_lfns(jdl: &str) -> Vec<String> {
    let Ok(ad) = dirac_jdl::ClassAd::parse(jdl) else {
        return Vec::new();
    };
    ad.get_ci("InputData")
        .map(|(_, v)| v.to_strings())
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            s.trim()
                .trim_start_matches("LFN:")
                .trim_start_matches("lfn:")
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The verdict for a job with input data, from where its replicas are:
/// sites holding every file (and allowed by the job), or a failure.
pub fn decide(
    key_sites: &BTreeSet<String>,
    banned: &BTreeSet<String>,
    lfns: &[String],
    replicas: &Replicas,
    se_site: &BTreeMap<String, String>,
) -> Result<BTreeSet<String>, (&'static str, String)> {
    let mut missing = Vec::new();
    let mut common: Option<BTreeSet<String>> = None;
    for lfn in lfns {
        match replicas.get(lfn) {
            Some(Ok(ses)) if !ses.is_empty() => {
                let sites: BTreeSet<String> = ses
                    .iter()
                    .filter_map(|se| se_site.get(se).cloned())
                    .collect();
                common = Some(match common {
                    None => sites,
                    Some(c) => c.intersection(&sites).cloned().collect(),
                });
            }
            Some(Ok(_)) => missing.push(format!("{lfn} (no replica)")),
            Some(Err(why)) => missing.push(format!("{lfn} ({why})")),
            None => missing.push(format!("{lfn} (not found)")),
        }
    }
    if !missing.is_empty() {
        let shown: Vec<String> = missing.iter().take(5).cloned().collect();
        let more = if missing.len() > 5 {
            format!(" and {} more", missing.len() - 5)
        } else {
            String::new()
        };
        return Err((
            INPUT_DATA_NOT_AVAILABLE,
            format!("Input data not available: {}{more}", shown.join(", ")),
        ));
    }
    let mut sites = common.unwrap_or_default();
    if !key_sites.is_empty() {
        sites = sites.intersection(key_sites).cloned().collect();
    }
    sites.retain(|s| !banned.contains(s));
    if sites.is_empty() {
        return Err((
            NO_CANDIDATE_SITES,
            "No candidate sites available: no allowed site holds all the input data".into(),
        ));
    }
    Ok(sites)
}

/// Apply the step to the jobs a round has found acceptable so far.
pub async fn resolve(wms: &Wms, verdicts: &mut [(Claimed, Verdict)]) -> Result<(), String> {
    let Some(catalog) = wms.replica_catalog() else {
        return Ok(());
    };
    let se_site: BTreeMap<String, String> = wms
        .config
        .resources
        .storage_elements
        .iter()
        .filter_map(|(name, se)| Some((name.clone(), se.site.clone()?)))
        .collect();
    for (job, verdict) in verdicts.iter_mut() {
        let Verdict::Waiting(key) = verdict else {
            continue;
        };
        let lfns = input_lfns(&job.jdl);
        if lfns.is_empty() {
            continue;
        }
        let owner = Owner {
            user: job.owner.clone(),
            group: job.owner_group.clone(),
            vo: job.vo.clone(),
        };
        let replicas = catalog.replicas(&owner, &lfns).await?;
        match decide(&key.sites, &key.banned_sites, &lfns, &replicas, &se_site) {
            Ok(sites) => key.sites = sites,
            Err((minor, reason)) => *verdict = Verdict::Failed { minor, reason },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sites_with_every_file_win() {
        let se_site: BTreeMap<String, String> =
            [("SE-A", "Site.A"), ("SE-B", "Site.B"), ("SE-B2", "Site.B")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
        let lfns = vec!["/vo/f1".to_string(), "/vo/f2".to_string()];
        let replicas: Replicas = [
            (
                "/vo/f1".to_string(),
                Ok(vec!["SE-A".to_string(), "SE-B".to_string()]),
            ),
            ("/vo/f2".to_string(), Ok(vec!["SE-B2".to_string()])),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            decide(&set(&[]), &set(&[]), &lfns, &replicas, &se_site),
            Ok(set(&["Site.B"]))
        );
        assert!(decide(&set(&["Site.A"]), &set(&[]), &lfns, &replicas, &se_site).is_err());
        let none = decide(&set(&["Site.A"]), &set(&[]), &lfns, &replicas, &se_site);
        assert_eq!(none.expect_err("no site").0, NO_CANDIDATE_SITES);
        assert!(decide(&set(&[]), &set(&["Site.B"]), &lfns, &replicas, &se_site).is_err());
        let mut gone = replicas.clone();
        gone.insert("/vo/f2".into(), Err("no such file".into()));
        let err = decide(&set(&[]), &set(&[]), &lfns, &gone, &se_site).expect_err("missing");
        assert_eq!(err.0, INPUT_DATA_NOT_AVAILABLE);
        assert!(
            err.1
                .starts_with("Input data not available: /vo/f2 (no such file)"),
            "{err:?}"
        );
        assert_eq!(
            input_lfns("InputData = {\"LFN:/vo/a\", \"/vo/b\"}; Executable = \"x\";"),
            ["/vo/a", "/vo/b"]
        );
    }
}
