//! The site mask (DIRAC's WMSAdministrator ban/allow): a banned site's
//! pilots are offered test jobs only, and the SiteDirector sends it pilots
//! for those only. The mask lives in `SiteMask`; each replica keeps a copy
//! in memory, refreshed on change and by the task-queues agent.
//!
//! Also the hook through which the PilotManager reaches computing elements
//! ([`PilotControl`], implemented by `diracd` over the SiteDirector's CEs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use dirac_core::db::Db;
use dirac_core::time;
use dirac_matcher::{Resource, ResourceDescription};
use dirac_proto::wms::{Pilot, SiteStatus};
use sqlx::Row;

use crate::error::{Result, WmsError};
use crate::jobdb::clip;

pub const ACTIVE: &str = "Active";
pub const BANNED: &str = "Banned";
/// The job type a banned site still runs (DIRAC's SAM/test jobs).
pub const TEST_JOB_TYPE: &str = "Test";

/// A queue the installation sends pilots to.
#[derive(Debug, Clone)]
pub struct QueueInfo {
    pub site: String,
    pub ce: String,
    pub queue: String,
    pub ce_type: String,
    pub max_total: u64,
    pub max_waiting: u64,
    /// What the queue's pilots offer.
    pub resource: ResourceDescription,
}

/// What the PilotManager needs from the computing elements.
#[async_trait::async_trait]
pub trait PilotControl: Send + Sync {
    fn queues(&self) -> Vec<QueueInfo>;
    /// Kill the pilot at its CE.
    async fn kill(&self, pilot: &Pilot) -> std::result::Result<(), String>;
    /// The pilot's output as its CE keeps it.
    async fn output(&self, pilot: &Pilot) -> std::result::Result<String, String>;
}

#[derive(Debug, Default)]
pub struct SiteMask {
    banned: RwLock<BTreeSet<String>>,
}

impl SiteMask {
    pub fn is_banned(&self, site: &str) -> bool {
        self.banned
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(site)
    }

    fn replace(&self, banned: BTreeSet<String>) {
        *self
            .banned
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = banned;
    }

    /// What a pilot at `site` may be offered: at a banned site, test jobs only.
    pub fn restrict(&self, resource: &Resource, site: &str) -> Option<Resource> {
        self.is_banned(site).then(|| {
            let mut r = resource.clone();
            r.job_types = vec![TEST_JOB_TYPE.to_string()];
            r
        })
    }

    /// Re-read the mask from the database.
    pub async fn reload(&self, db: &Db) -> Result<()> {
        let banned = list(db)
            .await?
            .into_iter()
            .filter(|s| s.status == BANNED)
            .map(|s| s.site)
            .collect();
        self.replace(banned);
        Ok(())
    }
}

/// Every site with a mask entry.
pub async fn list(db: &Db) -> Result<Vec<SiteStatus>> {
    let rows = sqlx::query(
        db.sql("SELECT Site, Status, Reason, Author, LastUpdate FROM SiteMask ORDER BY Site"),
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SiteStatus {
                site: r.try_get(0)?,
                status: r.try_get(1)?,
                reason: r.try_get(2)?,
                author: r.try_get(3)?,
                last_update: r.try_get(4)?,
            })
        })
        .collect::<std::result::Result<_, sqlx::Error>>()
        .map_err(WmsError::from)
}

/// Ban or allow sites (one transaction); the entries as they are now.
pub async fn set(
    db: &Db,
    sites: &[String],
    status: &str,
    reason: &str,
    author: &str,
) -> Result<Vec<SiteStatus>> {
    if status != ACTIVE && status != BANNED {
        return Err(WmsError::InvalidArgument(format!(
            "site status must be {ACTIVE} or {BANNED}, not '{}'",
            clip(status, 40)
        )));
    }
    if sites.is_empty() {
        return Err(WmsError::InvalidArgument("no site named".into()));
    }
    for s in sites {
        if s.is_empty() || s.len() > 128 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(WmsError::InvalidArgument(format!(
                "'{}' is not a site name",
                clip(s, 40)
            )));
        }
    }
    if status == BANNED && reason.trim().is_empty() {
        return Err(WmsError::InvalidArgument(
            "banning a site needs a reason".into(),
        ));
    }
    let now = time::now();
    let mut tx = db.pool().begin().await?;
    for s in sites {
        sqlx::query(db.sql("DELETE FROM SiteMask WHERE Site = ?"))
            .bind(s.clone())
            .execute(&mut *tx)
            .await?;
        sqlx::query(db.sql(
            "INSERT INTO SiteMask (Site, Status, Reason, Author, LastUpdate) VALUES (?, ?, ?, ?, ?)",
        ))
        .bind(s.clone())
        .bind(status.to_string())
        .bind(clip(reason, 255))
        .bind(clip(author, 64))
        .bind(now.clone())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let wanted: BTreeSet<&String> = sites.iter().collect();
    Ok(list(db)
        .await?
        .into_iter()
        .filter(|s| wanted.contains(&s.site))
        .collect())
}

/// Pilot counts of one queue: (waiting, running).
pub fn count_pilots(pilots: &[Pilot]) -> (u64, u64) {
    let mut by: BTreeMap<&str, u64> = BTreeMap::new();
    for p in pilots {
        *by.entry(p.status.as_str()).or_default() += 1;
    }
    let waiting = ["Submitted", "Waiting", "Scheduled"]
        .iter()
        .map(|s| by.get(s).copied().unwrap_or(0))
        .sum();
    (waiting, by.get("Running").copied().unwrap_or(0))
}
