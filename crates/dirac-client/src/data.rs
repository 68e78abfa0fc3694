//! The DataManager: file operations that span the catalog and the storage
//! elements, with DIRAC's failure semantics.
//!
//! - `put_and_register`: upload (checksum verified by the server), then
//!   register; a registration that fails after a good upload is reported
//!   as such (stage `register`), the stored copy stays for a retry.
//! - `get_file`: tries the replicas in turn, checks size and Adler32, and
//!   only then puts the file in place.
//! - `remove_file`: every replica physically, then its catalog entry; the
//!   file's entry goes only when no replica is left.
//! - `remove_tree`: all of that for a whole directory tree, in bulk, then
//!   the directories deepest first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use dirac_proto::dms::{
    self as pb, AddFilesRequest, FileInfo, GetFilesRequest, ListRequest, ObjectChunk, ObjectHeader,
    ObjectRef, ObjectRefs, Paths, ReplicaRef, ReplicasRequest, ReplicateRequest,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Status;

use crate::Client;

/// Bytes per uploaded chunk.
const CHUNK: usize = 1 << 20;
/// Items per bulk call.
const BULK: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A local file cannot be read or written.
    #[error("{0}")]
    Local(String),
    /// One step failed for one file.
    #[error("{lfn}: {stage} failed: {message}")]
    Failed {
        lfn: String,
        /// check, upload, register, download, remove, replicate.
        stage: &'static str,
        /// The gRPC category (NotFound, PermissionDenied …).
        code: String,
        message: String,
    },
}

impl DataError {
    fn from_status(lfn: &str, stage: &'static str, s: &Status) -> Self {
        DataError::Failed {
            lfn: lfn.to_string(),
            stage,
            code: format!("{:?}", s.code()),
            message: s.message().to_string(),
        }
    }

    fn item(lfn: &str, stage: &'static str, e: &dirac_proto::common::ItemError) -> Self {
        DataError::Failed {
            lfn: lfn.to_string(),
            stage,
            code: e.code.clone(),
            message: e.message.clone(),
        }
    }

    fn failed(lfn: &str, stage: &'static str, code: &str, message: impl Into<String>) -> Self {
        DataError::Failed {
            lfn: lfn.to_string(),
            stage,
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// Size and Adler32 (8 hex digits) of a local file.
pub async fn local_checksum(path: &Path) -> Result<(u64, String), DataError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| DataError::Local(format!("{}: {e}", path.display())))?;
    let mut sum = adler2::Adler32::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| DataError::Local(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        sum.write_slice(&buf[..n]);
        size += n as u64;
    }
    Ok((size, format!("{:08x}", sum.checksum())))
}

fn same_checksum(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim().trim_start_matches('0').to_ascii_lowercase();
    norm(a) == norm(b)
}

/// Who a token says its bearer is (`vo`, `preferred_username` …), read
/// without verification: for defaults such as the home directory only.
pub fn token_claims(token: &str) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What a recursive removal did.
#[derive(Debug, Default)]
pub struct RemoveReport {
    pub files: u64,
    pub directories: u64,
    pub failed: BTreeMap<String, DataError>,
}

pub struct DataManager {
    client: Client,
}

impl DataManager {
    /// The client it works through (its token).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn new(client: Client) -> Self {
        DataManager { client }
    }

    /// The catalog entry of `lfn`, with every replica; `None` if absent.
    pub async fn file(&self, lfn: &str, all_status: bool) -> Result<Option<FileInfo>, DataError> {
        let r = self
            .client
            .file_catalog()
            .get_files(GetFilesRequest {
                lfns: vec![lfn.to_string()],
                all_status,
            })
            .await
            .map_err(|s| DataError::from_status(lfn, "check", &s))?
            .into_inner();
        if let Some(f) = r.files.get(lfn) {
            return Ok(Some(f.clone()));
        }
        match r.failed.get(lfn) {
            Some(e) if e.code == "NotFound" => Ok(None),
            Some(e) => Err(DataError::item(lfn, "check", e)),
            None => Ok(None),
        }
    }

    /// Upload `local` to `se` as `lfn` and register it. An existing LFN is
    /// an error unless `overwrite` (then it is removed first).
    pub async fn put_and_register(
        &self,
        local: &Path,
        lfn: &str,
        se: &str,
        overwrite: bool,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<(u64, String), DataError> {
        let (size, adler32) = local_checksum(local).await?;
        if self.file(lfn, true).await?.is_some() {
            if !overwrite {
                return Err(DataError::failed(
                    lfn,
                    "check",
                    "AlreadyExists",
                    "the file exists (remove it, or overwrite)",
                ));
            }
            self.remove_file(lfn).await?;
        }
        self.upload(local, lfn, se, size, &adler32, progress)
            .await?;
        let r = self
            .client
            .file_catalog()
            .add_files(AddFilesRequest {
                files: vec![FileInfo {
                    lfn: lfn.to_string(),
                    size,
                    checksum: adler32.clone(),
                    checksum_type: "Adler32".into(),
                    replicas: vec![pb::Replica {
                        se: se.to_string(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            })
            .await
            .map_err(|s| DataError::from_status(lfn, "register", &s))?
            .into_inner();
        if let Some(e) = r.failed.get(lfn) {
            return Err(DataError::item(lfn, "register", e));
        }
        Ok((size, adler32))
    }

    /// Stream `local` to `se` through the StorageElement service.
    async fn upload(
        &self,
        local: &Path,
        lfn: &str,
        se: &str,
        size: u64,
        adler32: &str,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<(), DataError> {
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| DataError::Local(format!("{}: {e}", local.display())))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<ObjectChunk>(4);
        let header = ObjectChunk {
            kind: Some(pb::object_chunk::Kind::Header(ObjectHeader {
                se: se.to_string(),
                lfn: lfn.to_string(),
                size,
                adler32: adler32.to_string(),
            })),
        };
        let call = {
            let mut stub = self.client.storage_element();
            tokio::spawn(async move {
                stub.put(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
            })
        };
        let mut sent = 0u64;
        let feed = async {
            tx.send(header).await.ok();
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(|e| DataError::Local(format!("{}: {e}", local.display())))?;
                if n == 0 {
                    break;
                }
                sent += n as u64;
                let chunk = ObjectChunk {
                    kind: Some(pb::object_chunk::Kind::Data(buf[..n].to_vec())),
                };
                if tx.send(chunk).await.is_err() {
                    // The server stopped listening: its answer says why.
                    break;
                }
                progress(sent, size);
            }
            Ok::<(), DataError>(())
        };
        let fed = feed.await;
        drop(tx);
        let answer = call
            .await
            .map_err(|e| DataError::failed(lfn, "upload", "Internal", e.to_string()))?;
        fed?;
        let stored = answer
            .map_err(|s| DataError::from_status(lfn, "upload", &s))?
            .into_inner();
        if !same_checksum(&stored.adler32, adler32) {
            return Err(DataError::failed(
                lfn,
                "upload",
                "DataLoss",
                format!("stored with Adler32 {}, sent {adler32}", stored.adler32),
            ));
        }
        Ok(())
    }

    /// Download `lfn` into `local`: replicas in turn until one arrives
    /// whole with the catalog's size and checksum.
    pub async fn get_file(
        &self,
        lfn: &str,
        local: &Path,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<u64, DataError> {
        let f = self
            .file(lfn, false)
            .await?
            .ok_or_else(|| DataError::failed(lfn, "download", "NotFound", "no such file"))?;
        if f.replicas.is_empty() {
            return Err(DataError::failed(
                lfn,
                "download",
                "NotFound",
                "the file has no replica",
            ));
        }
        let mut last = None;
        for r in &f.replicas {
            match self.download(&f, &r.se, local, progress).await {
                Ok(n) => return Ok(n),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| DataError::failed(lfn, "download", "NotFound", "no replica")))
    }

    async fn download(
        &self,
        f: &FileInfo,
        se: &str,
        local: &Path,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<u64, DataError> {
        let lfn = f.lfn.as_str();
        let fail =
            |code: &str, m: String| DataError::failed(lfn, "download", code, format!("{se}: {m}"));
        let mut stream = self
            .client
            .storage_element()
            .get(ObjectRef {
                se: se.to_string(),
                lfn: lfn.to_string(),
            })
            .await
            .map_err(|s| fail(&format!("{:?}", s.code()), s.message().to_string()))?
            .into_inner();
        let part = part_path(local);
        let mut out = tokio::fs::File::create(&part)
            .await
            .map_err(|e| DataError::Local(format!("{}: {e}", part.display())))?;
        let result = async {
            let mut sum = adler2::Adler32::new();
            let mut got = 0u64;
            let mut announced = None;
            while let Some(chunk) = stream
                .message()
                .await
                .map_err(|s| fail(&format!("{:?}", s.code()), s.message().to_string()))?
            {
                match chunk.kind {
                    Some(pb::object_chunk::Kind::Header(h)) => announced = Some(h),
                    Some(pb::object_chunk::Kind::Data(bytes)) => {
                        sum.write_slice(&bytes);
                        got += bytes.len() as u64;
                        out.write_all(&bytes)
                            .await
                            .map_err(|e| DataError::Local(format!("{}: {e}", part.display())))?;
                        progress(got, f.size);
                    }
                    None => {}
                }
            }
            out.flush()
                .await
                .map_err(|e| DataError::Local(format!("{}: {e}", part.display())))?;
            let hex = format!("{:08x}", sum.checksum());
            if announced.is_none() {
                return Err(fail("DataLoss", "no header arrived".into()));
            }
            if got != f.size {
                return Err(fail(
                    "DataLoss",
                    format!("{got} bytes arrived, the catalog says {}", f.size),
                ));
            }
            if f.checksum_type.eq_ignore_ascii_case("adler32") && !same_checksum(&hex, &f.checksum)
            {
                return Err(fail(
                    "DataLoss",
                    format!(
                        "checksum mismatch: the catalog says {}, the data is {hex}",
                        f.checksum
                    ),
                ));
            }
            Ok(got)
        }
        .await;
        drop(out);
        match result {
            Ok(n) => {
                tokio::fs::rename(&part, local)
                    .await
                    .map_err(|e| DataError::Local(format!("{}: {e}", local.display())))?;
                Ok(n)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                Err(e)
            }
        }
    }

    /// Remove every replica, then the catalog entry. A missing file
    /// succeeds (DIRAC's force).
    pub async fn remove_file(&self, lfn: &str) -> Result<(), DataError> {
        let report = self.remove_files(&[lfn.to_string()]).await?;
        match report.into_values().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Remove files in bulk: physical replicas per SE, their entries, and
    /// the entries of files left with no replica. Answers the failures.
    pub async fn remove_files(
        &self,
        lfns: &[String],
    ) -> Result<BTreeMap<String, DataError>, DataError> {
        let mut failed = BTreeMap::new();
        let mut replicas: BTreeMap<String, Vec<String>> = BTreeMap::new(); // se -> lfns
        let mut wanted: BTreeMap<String, usize> = BTreeMap::new();
        for chunk in lfns.chunks(BULK) {
            let r = self
                .client
                .file_catalog()
                .get_files(GetFilesRequest {
                    lfns: chunk.to_vec(),
                    all_status: true,
                })
                .await
                .map_err(|s| DataError::from_status(&chunk[0], "remove", &s))?
                .into_inner();
            for (lfn, e) in &r.failed {
                if e.code != "NotFound" {
                    failed.insert(lfn.clone(), DataError::item(lfn, "remove", e));
                }
            }
            for (lfn, f) in r.files {
                wanted.insert(lfn.clone(), f.replicas.len());
                for rep in f.replicas {
                    replicas.entry(rep.se).or_default().push(lfn.clone());
                }
            }
        }
        let mut gone: BTreeMap<String, usize> = BTreeMap::new();
        for (se, list) in &replicas {
            for chunk in list.chunks(BULK) {
                let physical = self
                    .client
                    .storage_element()
                    .remove(ObjectRefs {
                        se: se.clone(),
                        lfns: chunk.to_vec(),
                    })
                    .await
                    .map_err(|s| DataError::from_status(&chunk[0], "remove", &s))?
                    .into_inner();
                for (lfn, e) in &physical.failed {
                    failed.insert(lfn.clone(), DataError::item(lfn, "remove", e));
                }
                let removed: Vec<ReplicaRef> = physical
                    .succeeded
                    .iter()
                    .map(|lfn| ReplicaRef {
                        lfn: lfn.clone(),
                        se: se.clone(),
                        pfn: String::new(),
                    })
                    .collect();
                if removed.is_empty() {
                    continue;
                }
                let entries = self
                    .client
                    .file_catalog()
                    .remove_replicas(ReplicasRequest { replicas: removed })
                    .await
                    .map_err(|s| DataError::from_status(&chunk[0], "remove", &s))?
                    .into_inner();
                for (lfn, e) in &entries.failed {
                    failed.insert(lfn.clone(), DataError::item(lfn, "remove", e));
                }
                for lfn in entries.succeeded {
                    *gone.entry(lfn).or_default() += 1;
                }
            }
        }
        // A file entry goes only when every replica is gone.
        let done: Vec<String> = wanted
            .iter()
            .filter(|(lfn, n)| {
                gone.get(*lfn).copied().unwrap_or(0) >= **n && !failed.contains_key(*lfn)
            })
            .map(|(lfn, _)| lfn.clone())
            .collect();
        for chunk in done.chunks(BULK) {
            let r = self
                .client
                .file_catalog()
                .remove_files(Paths {
                    paths: chunk.to_vec(),
                })
                .await
                .map_err(|s| DataError::from_status(&chunk[0], "remove", &s))?
                .into_inner();
            for (lfn, e) in &r.failed {
                failed.insert(lfn.clone(), DataError::item(lfn, "remove", e));
            }
        }
        Ok(failed)
    }

    /// Remove one replica (never the last one: remove the file instead).
    pub async fn remove_replica(&self, lfn: &str, se: &str) -> Result<(), DataError> {
        let f = self
            .file(lfn, true)
            .await?
            .ok_or_else(|| DataError::failed(lfn, "remove", "NotFound", "no such file"))?;
        if !f.replicas.iter().any(|r| r.se == se) {
            return Ok(());
        }
        if f.replicas.len() == 1 {
            return Err(DataError::failed(
                lfn,
                "remove",
                "FailedPrecondition",
                format!("{se} holds the last replica; remove the file instead"),
            ));
        }
        let physical = self
            .client
            .storage_element()
            .remove(ObjectRefs {
                se: se.to_string(),
                lfns: vec![lfn.to_string()],
            })
            .await
            .map_err(|s| DataError::from_status(lfn, "remove", &s))?
            .into_inner();
        if let Some(e) = physical.failed.get(lfn) {
            return Err(DataError::item(lfn, "remove", e));
        }
        let r = self
            .client
            .file_catalog()
            .remove_replicas(ReplicasRequest {
                replicas: vec![ReplicaRef {
                    lfn: lfn.to_string(),
                    se: se.to_string(),
                    pfn: String::new(),
                }],
            })
            .await
            .map_err(|s| DataError::from_status(lfn, "remove", &s))?
            .into_inner();
        if let Some(e) = r.failed.get(lfn) {
            return Err(DataError::item(lfn, "remove", e));
        }
        Ok(())
    }

    /// Copy `lfn` to `dest` (from `source`, or its first replica) and
    /// register the new replica. Says whether the copy was third-party.
    pub async fn replicate_and_register(
        &self,
        lfn: &str,
        dest: &str,
        source: Option<&str>,
    ) -> Result<bool, DataError> {
        let f = self
            .file(lfn, false)
            .await?
            .ok_or_else(|| DataError::failed(lfn, "replicate", "NotFound", "no such file"))?;
        if f.replicas.iter().any(|r| r.se == dest) {
            return Ok(false);
        }
        let source = match source {
            Some(s) if f.replicas.iter().any(|r| r.se == s) => s.to_string(),
            Some(s) => {
                return Err(DataError::failed(
                    lfn,
                    "replicate",
                    "NotFound",
                    format!("no replica at {s}"),
                ));
            }
            None => f.replicas.first().map(|r| r.se.clone()).ok_or_else(|| {
                DataError::failed(lfn, "replicate", "NotFound", "the file has no replica")
            })?,
        };
        let adler32 = if f.checksum_type.eq_ignore_ascii_case("adler32") {
            f.checksum.clone()
        } else {
            String::new()
        };
        let copied = self
            .client
            .storage_element()
            .replicate(ReplicateRequest {
                lfn: lfn.to_string(),
                source_se: source,
                dest_se: dest.to_string(),
                adler32,
            })
            .await
            .map_err(|s| DataError::from_status(lfn, "replicate", &s))?
            .into_inner();
        let r = self
            .client
            .file_catalog()
            .add_replicas(ReplicasRequest {
                replicas: vec![ReplicaRef {
                    lfn: lfn.to_string(),
                    se: dest.to_string(),
                    pfn: String::new(),
                }],
            })
            .await
            .map_err(|s| DataError::from_status(lfn, "register", &s))?
            .into_inner();
        if let Some(e) = r.failed.get(lfn) {
            return Err(DataError::item(lfn, "register", e));
        }
        Ok(copied.third_party)
    }

    /// Every file and directory below `dir` (directories first, parents
    /// before children).
    pub async fn walk(
        &self,
        dir: &str,
        with_replicas: bool,
    ) -> Result<(Vec<String>, Vec<FileInfo>), DataError> {
        let mut stream = self
            .client
            .file_catalog()
            .list_directory(ListRequest {
                path: dir.to_string(),
                recursive: true,
                with_replicas,
            })
            .await
            .map_err(|s| DataError::from_status(dir, "list", &s))?
            .into_inner();
        let (mut dirs, mut files) = (Vec::new(), Vec::new());
        while let Some(batch) = stream
            .message()
            .await
            .map_err(|s| DataError::from_status(dir, "list", &s))?
        {
            for e in batch.entries {
                match e.kind {
                    Some(pb::entry::Kind::Directory(d)) => dirs.push(d.path),
                    Some(pb::entry::Kind::File(f)) => files.push(f),
                    None => {}
                }
            }
        }
        Ok((dirs, files))
    }

    /// Remove a directory tree: every file (replicas first), then the
    /// directories deepest first, then `dir` itself.
    pub async fn remove_tree(&self, dir: &str) -> Result<RemoveReport, DataError> {
        let (mut dirs, files) = self.walk(dir, false).await?;
        let lfns: Vec<String> = files.iter().map(|f| f.lfn.clone()).collect();
        let mut report = RemoveReport::default();
        report.failed = self.remove_files(&lfns).await?;
        report.files = (lfns.len() - report.failed.len()) as u64;
        dirs.push(dir.to_string());
        let blocked: BTreeSet<String> = report
            .failed
            .keys()
            .flat_map(|l| {
                let mut up = Vec::new();
                let mut p = l.as_str();
                while let Some(cut) = p.rfind('/') {
                    p = &p[..cut];
                    if p.is_empty() {
                        break;
                    }
                    up.push(p.to_string());
                }
                up
            })
            .collect();
        dirs.retain(|d| !blocked.contains(d));
        dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
        for chunk in dirs.chunks(BULK) {
            let r = self
                .client
                .file_catalog()
                .remove_directories(Paths {
                    paths: chunk.to_vec(),
                })
                .await
                .map_err(|s| DataError::from_status(dir, "remove", &s))?
                .into_inner();
            report.directories += r.succeeded.len() as u64;
            for (d, e) in &r.failed {
                report
                    .failed
                    .insert(d.clone(), DataError::item(d, "remove", e));
            }
        }
        Ok(report)
    }
}

/// A hidden part file next to `local`.
fn part_path(local: &Path) -> PathBuf {
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "download".into());
    local.with_file_name(format!(".{name}.part-{:08x}", rand::random::<u32>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_claims_read_the_payload() {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"vo":"dteam","preferred_username":"alice"}"#);
        let claims = token_claims(&format!("h.{payload}.s")).expect("claims");
        assert_eq!(claims["vo"], "dteam");
        assert!(token_claims("garbage").is_none());
        assert!(same_checksum("0011e60398", "11E60398"));
    }

    #[tokio::test]
    async fn local_checksums() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("f");
        std::fs::write(&p, b"Wikipedia").expect("write");
        assert_eq!(
            local_checksum(&p).await.expect("sum"),
            (9, "11e60398".to_string())
        );
        assert!(local_checksum(&dir.path().join("missing")).await.is_err());
    }
}
