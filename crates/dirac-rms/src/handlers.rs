//! The operation handlers over the installation's file catalog and
//! storage elements, with the request owner's rights:
//!
//! - `RegisterFile`: the file with its replica at the target SE (an
//!   existing entry gets the replica added);
//! - `RegisterReplica`: a replica entry at each target SE;
//! - `RemoveFile`: every replica physically, then the entry (an LFN not in
//!   the catalog is already removed);
//! - `RemoveReplica`: the replica at each target SE, physically and in the
//!   catalog — never the last one (that is `RemoveFile`);
//! - `ReplicateAndRegister`: a copy from a source replica (one of the
//!   source SEs if given) to each target SE that lacks one, checked against
//!   the catalog's Adler32, then registered.
//!
//! Errors that can never succeed (no such file, no permission, invalid
//! input) fail the file; the others (a database or SE that is down) leave
//! it Waiting for the next attempt.

use std::path::PathBuf;
use std::sync::Arc;

use dirac_core::error::{Category, ServiceError};
use dirac_dms::DmsError;
use dirac_dms::catalog::{Catalog, NewFile};
use dirac_dms::perms::Caller;
use dirac_storage::{StorageElements, StorageError};

use crate::agent::{Handlers, Owner};
use crate::model::{File, FileStatus, Operation};

pub struct DmsHandlers {
    pub catalog: Arc<Catalog>,
    pub storage: Arc<StorageElements>,
    /// Where copies pass through.
    pub scratch: PathBuf,
}

/// Why a file failed or waits.
enum Outcome {
    Done,
    /// Never succeeds.
    Fail(String),
    /// Try again later.
    Retry(String),
}

fn dms(e: &DmsError) -> Outcome {
    match e.category() {
        Category::InvalidArgument | Category::NotFound | Category::PermissionDenied => {
            Outcome::Fail(e.to_string())
        }
        _ => Outcome::Retry(e.to_string()),
    }
}

fn storage(se: &str, e: &StorageError) -> Outcome {
    match e {
        StorageError::Invalid(_) | StorageError::PermissionDenied(_) => {
            Outcome::Fail(format!("{se}: {e}"))
        }
        _ => Outcome::Retry(format!("{se}: {e}")),
    }
}

fn apply(f: &mut File, outcome: Outcome) {
    f.attempt = f.attempt.saturating_add(1);
    match outcome {
        Outcome::Done => {
            f.status = FileStatus::Done;
            f.error.clear();
        }
        Outcome::Fail(e) => {
            f.status = FileStatus::Failed;
            f.error = e;
        }
        Outcome::Retry(e) => f.error = e,
    }
}

impl DmsHandlers {
    async fn register_file(&self, caller: &Caller, op: &Operation, f: &File) -> Outcome {
        let se = &op.target_se[0];
        let new = NewFile {
            lfn: f.lfn.clone(),
            size: f.size,
            checksum: f.checksum.clone(),
            checksum_type: f.checksum_type.clone(),
            guid: f.guid.clone(),
            mode: 0o644,
            replicas: vec![(se.clone(), f.pfn.clone())],
            ..NewFile::default()
        };
        match self.catalog.add_files(caller, vec![new]).await {
            Err(e) => dms(&e),
            Ok(mut out) => match out.remove(&f.lfn) {
                Some(Ok(())) | None => Outcome::Done,
                // Already registered: its replica is what is missing.
                Some(Err(DmsError::AlreadyExists(_))) => self.register_replica(caller, f, se).await,
                Some(Err(e)) => dms(&e),
            },
        }
    }

    async fn register_replica(&self, caller: &Caller, f: &File, se: &str) -> Outcome {
        let replica = (f.lfn.clone(), se.to_string(), f.pfn.clone());
        match self.catalog.add_replicas(caller, &[replica]).await {
            Err(e) => dms(&e),
            Ok(mut out) => match out.remove(&f.lfn) {
                Some(Err(e)) => dms(&e),
                _ => Outcome::Done,
            },
        }
    }

    async fn remove_file(&self, caller: &Caller, f: &File) -> Outcome {
        let (mut found, _) = match self
            .catalog
            .get_files(caller, std::slice::from_ref(&f.lfn), true)
            .await
        {
            Ok(x) => x,
            Err(e) => return dms(&e),
        };
        let Some((_, replicas)) = found.remove(&f.lfn) else {
            // Not in the catalog (or not visible): nothing left to remove.
            return Outcome::Done;
        };
        for r in &replicas {
            if let Err(outcome) = self.remove_physical(&r.se, &f.lfn).await {
                return outcome;
            }
        }
        match self
            .catalog
            .remove_files(caller, std::slice::from_ref(&f.lfn))
            .await
        {
            Err(e) => dms(&e),
            Ok(mut out) => match out.remove(&f.lfn) {
                Some(Err(DmsError::NotFound(_))) | Some(Ok(())) | None => Outcome::Done,
                Some(Err(e)) => dms(&e),
            },
        }
    }

    /// The copy at `se` gone (already gone is fine).
    async fn remove_physical(&self, se: &str, lfn: &str) -> Result<(), Outcome> {
        let element = self.storage.get(se).map_err(|e| storage(se, &e))?;
        match element.remove(lfn).await {
            Ok(()) | Err(StorageError::NotFound(_)) => Ok(()),
            Err(e) => Err(storage(se, &e)),
        }
    }

    async fn remove_replica(&self, caller: &Caller, op: &Operation, f: &File) -> Outcome {
        let (mut found, _) = match self
            .catalog
            .get_files(caller, std::slice::from_ref(&f.lfn), true)
            .await
        {
            Ok(x) => x,
            Err(e) => return dms(&e),
        };
        let Some((_, replicas)) = found.remove(&f.lfn) else {
            return Outcome::Fail(format!("{} is not in the catalog", f.lfn));
        };
        let left = replicas
            .iter()
            .filter(|r| !op.target_se.contains(&r.se))
            .count();
        if left == 0 && !replicas.is_empty() {
            return Outcome::Fail(format!(
                "{} would lose its last replica: use RemoveFile",
                f.lfn
            ));
        }
        for se in &op.target_se {
            if !replicas.iter().any(|r| &r.se == se) {
                continue;
            }
            if let Err(outcome) = self.remove_physical(se, &f.lfn).await {
                return outcome;
            }
            let replica = (f.lfn.clone(), se.clone(), String::new());
            if let Err(e) = self.catalog.remove_replicas(caller, &[replica]).await {
                return dms(&e);
            }
        }
        Outcome::Done
    }

    async fn replicate(&self, caller: &Caller, op: &Operation, f: &File) -> Outcome {
        let (mut found, _) = match self
            .catalog
            .get_files(caller, std::slice::from_ref(&f.lfn), false)
            .await
        {
            Ok(x) => x,
            Err(e) => return dms(&e),
        };
        let Some((row, replicas)) = found.remove(&f.lfn) else {
            return Outcome::Fail(format!("{} is not in the catalog", f.lfn));
        };
        let missing: Vec<&String> = op
            .target_se
            .iter()
            .filter(|se| !replicas.iter().any(|r| &&r.se == se))
            .collect();
        if missing.is_empty() {
            return Outcome::Done;
        }
        let source = replicas
            .iter()
            .find(|r| op.source_se.is_empty() || op.source_se.contains(&r.se));
        let Some(source) = source else {
            return Outcome::Fail(format!(
                "{} has no replica at {}",
                f.lfn,
                op.source_se.join(", ")
            ));
        };
        let src = match self.storage.get(&source.se) {
            Ok(s) => s,
            Err(e) => return storage(&source.se, &e),
        };
        if let Err(e) = tokio::fs::create_dir_all(&self.scratch).await {
            return Outcome::Retry(format!("scratch {}: {e}", self.scratch.display()));
        }
        let local = self
            .scratch
            .join(format!("replicate-{:032x}", rand::random::<u128>()));
        let copied = src.get(&f.lfn, &local).await;
        let result = match copied {
            Err(e) => storage(&source.se, &e),
            Ok(_) => {
                let expected = (row.checksum_type.eq_ignore_ascii_case("ADLER32")
                    && !row.checksum.is_empty())
                .then_some(row.checksum.as_str());
                let mut outcome = Outcome::Done;
                for se in missing {
                    let target = match self.storage.get(se) {
                        Ok(t) => t,
                        Err(e) => {
                            outcome = storage(se, &e);
                            break;
                        }
                    };
                    if let Err(e) = target.put(&f.lfn, &local, expected).await {
                        outcome = storage(se, &e);
                        break;
                    }
                    let replica = (f.lfn.clone(), se.clone(), String::new());
                    if let Err(e) = self.catalog.add_replicas(caller, &[replica]).await {
                        outcome = dms(&e);
                        break;
                    }
                }
                outcome
            }
        };
        let _ = tokio::fs::remove_file(&local).await;
        result
    }
}

#[async_trait::async_trait]
impl Handlers for DmsHandlers {
    async fn execute(&self, owner: &Owner, op: &mut Operation) {
        let caller = Caller {
            username: owner.user.clone(),
            group: owner.group.clone(),
            vo: owner.vo.clone(),
            admin: false,
        };
        let snapshot = op.clone();
        for f in op
            .files
            .iter_mut()
            .filter(|f| f.status == FileStatus::Waiting)
        {
            let outcome = match snapshot.kind.as_str() {
                "RegisterFile" => self.register_file(&caller, &snapshot, f).await,
                "RegisterReplica" => {
                    let mut outcome = Outcome::Done;
                    for se in &snapshot.target_se {
                        outcome = self.register_replica(&caller, f, se).await;
                        if !matches!(outcome, Outcome::Done) {
                            break;
                        }
                    }
                    outcome
                }
                "RemoveFile" => self.remove_file(&caller, f).await,
                "RemoveReplica" => self.remove_replica(&caller, &snapshot, f).await,
                "ReplicateAndRegister" => self.replicate(&caller, &snapshot, f).await,
                other => Outcome::Fail(format!("no handler for operation type '{other}'")),
            };
            apply(f, outcome);
        }
    }
}
