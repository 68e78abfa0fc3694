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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use dirac_core::error::{Category, ServiceError};
use dirac_dms::DmsError;
use dirac_dms::catalog::{Catalog, FileRow, NewFile, ReplicaRow};
use dirac_dms::perms::Caller;
use dirac_storage::{StorageElements, StorageError};

use crate::agent::{Handlers, Owner};
use crate::model::{File, FileStatus, Operation, clip};

pub struct DmsHandlers {
    pub catalog: Arc<Catalog>,
    pub storage: Arc<StorageElements>,
    /// Where copies pass through.
    pub scratch: PathBuf,
}

/// Why a file failed or waits.
#[derive(Clone)]
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
            f.error = clip(&e);
        }
        Outcome::Retry(e) => f.error = clip(&e),
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
                // Already registered: the same file's replica is what is
                // missing; another file under that name is an error.
                Some(Err(DmsError::AlreadyExists(_))) => match self.same_file(caller, f).await {
                    Ok(()) => self.register_replica(caller, f, se).await,
                    Err(outcome) => outcome,
                },
                Some(Err(e)) => dms(&e),
            },
        }
    }

    /// The catalog's entry for `f.lfn` is the file described by `f` (size,
    /// checksum when both have one).
    async fn same_file(&self, caller: &Caller, f: &File) -> Result<(), Outcome> {
        let (mut found, _) = self
            .catalog
            .get_files(caller, std::slice::from_ref(&f.lfn), true)
            .await
            .map_err(|e| dms(&e))?;
        let Some((row, _)) = found.remove(&f.lfn) else {
            return Err(Outcome::Retry(format!(
                "{} vanished while registering",
                f.lfn
            )));
        };
        let size_differs = u64::try_from(row.size).ok() != Some(f.size);
        let checksum_differs = !f.checksum.is_empty()
            && !row.checksum.is_empty()
            && !row.checksum.eq_ignore_ascii_case(&f.checksum);
        if size_differs || checksum_differs {
            return Err(Outcome::Fail(format!(
                "another file is registered as {} (size {}, checksum {})",
                f.lfn, row.size, row.checksum
            )));
        }
        Ok(())
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

    /// RemoveFile for the operation's waiting files, in bulk: the owner's
    /// write right once per directory (before storage is touched with the
    /// server's credentials), one catalog lookup, every copy removed, one
    /// catalog removal.
    async fn remove_files(&self, caller: &Caller, files: Vec<&mut File>) {
        let mut rights: BTreeMap<String, Option<Outcome>> = BTreeMap::new();
        let mut allowed = Vec::new();
        for f in files {
            let dir = f.lfn.rsplit_once('/').map_or("", |(d, _)| d).to_string();
            if !rights.contains_key(&dir) {
                let denied = self.catalog.may_write_file(caller, &f.lfn).await.err();
                rights.insert(dir.clone(), denied.map(|e| dms(&e)));
            }
            match rights.get(&dir).cloned().flatten() {
                Some(denied) => apply(f, denied),
                None => allowed.push(f),
            }
        }
        if allowed.is_empty() {
            return;
        }
        let lfns: Vec<String> = allowed.iter().map(|f| f.lfn.clone()).collect();
        let (mut found, mut failed) = match self.catalog.get_files(caller, &lfns, true).await {
            Ok(x) => x,
            Err(e) => {
                let outcome = dms(&e);
                for f in allowed {
                    apply(f, outcome.clone());
                }
                return;
            }
        };
        let mut in_catalog = Vec::new();
        'files: for f in allowed {
            let Some((_, replicas)) = found.remove(&f.lfn) else {
                let outcome = match failed.remove(&f.lfn) {
                    // Not in the catalog: nothing left to remove.
                    None | Some(DmsError::NotFound(_)) => Outcome::Done,
                    Some(e) => dms(&e),
                };
                apply(f, outcome);
                continue;
            };
            for r in &replicas {
                if let Err(outcome) = self.remove_physical(&r.se, &f.lfn).await {
                    apply(f, outcome);
                    continue 'files;
                }
            }
            in_catalog.push(f);
        }
        if in_catalog.is_empty() {
            return;
        }
        let lfns: Vec<String> = in_catalog.iter().map(|f| f.lfn.clone()).collect();
        match self.catalog.remove_files(caller, &lfns).await {
            Err(e) => {
                let outcome = dms(&e);
                for f in in_catalog {
                    apply(f, outcome.clone());
                }
            }
            Ok(mut out) => {
                for f in in_catalog {
                    let outcome = match out.remove(&f.lfn) {
                        Some(Err(DmsError::NotFound(_)) | Ok(())) | None => Outcome::Done,
                        Some(Err(e)) => dms(&e),
                    };
                    apply(f, outcome);
                }
            }
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

    /// The catalog entry of a file the owner may write (its replicas
    /// change): checked before storage is touched with the server's
    /// credentials. A file not in the catalog fails.
    async fn writable(
        &self,
        caller: &Caller,
        lfn: &str,
        all_status: bool,
    ) -> Result<(FileRow, Vec<ReplicaRow>), Outcome> {
        self.catalog
            .may_write_file(caller, lfn)
            .await
            .map_err(|e| dms(&e))?;
        let (mut found, _) = self
            .catalog
            .get_files(caller, &[lfn.to_string()], all_status)
            .await
            .map_err(|e| dms(&e))?;
        found
            .remove(lfn)
            .ok_or_else(|| Outcome::Fail(format!("{lfn} is not in the catalog")))
    }

    async fn remove_replica(&self, caller: &Caller, op: &Operation, f: &File) -> Outcome {
        let replicas = match self.writable(caller, &f.lfn, true).await {
            Ok((_, replicas)) => replicas,
            Err(outcome) => return outcome,
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
            match self.catalog.remove_replicas(caller, &[replica]).await {
                Err(e) => return dms(&e),
                Ok(mut out) => {
                    if let Some(Err(e)) = out.remove(&f.lfn) {
                        return dms(&e);
                    }
                }
            }
        }
        Outcome::Done
    }

    async fn replicate(&self, caller: &Caller, op: &Operation, f: &File) -> Outcome {
        // New replicas are writes in the owner's directory.
        let (row, replicas) = match self.writable(caller, &f.lfn, false).await {
            Ok(x) => x,
            Err(outcome) => return outcome,
        };
        let sources: Vec<&str> = replicas
            .iter()
            .map(|r| r.se.as_str())
            .filter(|se| op.source_se.is_empty() || op.source_se.iter().any(|s| s == se))
            .collect();
        if sources.is_empty() {
            return Outcome::Fail(format!(
                "{} has no replica at {}",
                f.lfn,
                op.source_se.join(", ")
            ));
        }
        let expected = (row.checksum_type.eq_ignore_ascii_case("ADLER32")
            && !row.checksum.is_empty())
        .then_some(row.checksum.as_str());
        if let Err(e) = tokio::fs::create_dir_all(&self.scratch).await {
            return Outcome::Retry(format!("scratch {}: {e}", self.scratch.display()));
        }
        for target in op
            .target_se
            .iter()
            .filter(|se| !replicas.iter().any(|r| &r.se == *se))
        {
            let dest = match self.storage.get(target) {
                Ok(d) => d,
                Err(e) => return storage(target, &e),
            };
            // Each source replica in turn; a copy that does not match the
            // catalog's checksum never succeeds.
            let mut last = Outcome::Retry(format!("no source replica of {} answered", f.lfn));
            let mut copied = false;
            for source in &sources {
                let src = match self.storage.get(source) {
                    Ok(s) => s,
                    Err(e) => {
                        last = storage(source, &e);
                        continue;
                    }
                };
                match dirac_storage::se::replicate(&src, &dest, &f.lfn, expected, &self.scratch)
                    .await
                {
                    Ok(_) => {
                        copied = true;
                        break;
                    }
                    Err(e @ StorageError::Checksum { .. }) => {
                        last = Outcome::Fail(format!("{source} → {target}: {e}"));
                    }
                    Err(e) => last = storage(&format!("{source} → {target}"), &e),
                }
            }
            if !copied {
                return last;
            }
            let replica = (f.lfn.clone(), target.clone(), String::new());
            match self.catalog.add_replicas(caller, &[replica]).await {
                Err(e) => return dms(&e),
                Ok(mut out) => {
                    if let Some(Err(e)) = out.remove(&f.lfn) {
                        return dms(&e);
                    }
                }
            }
        }
        Outcome::Done
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
        let waiting = op
            .files
            .iter_mut()
            .filter(|f| f.status == FileStatus::Waiting);
        if snapshot.kind == "RemoveFile" {
            self.remove_files(&caller, waiting.collect()).await;
            return;
        }
        for f in waiting {
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
                "RemoveReplica" => self.remove_replica(&caller, &snapshot, f).await,
                "ReplicateAndRegister" => self.replicate(&caller, &snapshot, f).await,
                other => Outcome::Fail(format!("no handler for operation type '{other}'")),
            };
            apply(f, outcome);
        }
    }
}
