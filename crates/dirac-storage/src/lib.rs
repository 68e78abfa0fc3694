//! Storage elements: what an SE is (a name, a site, protocol sections in
//! preference order, access flags) and how files get in and out of it.
//!
//! Start with [`StoragePlugin`], the one trait every protocol implements
//! (put and get of whole files with Adler32 checksums, remove, stat,
//! occupancy, third-party copy where the protocol has one), then
//! [`se::StorageElement`], which picks a plugin per operation. Physical
//! names follow DIRAC's convention: `<protocol>://<host>:<port><path>/<lfn>`
//! ([`pfn`]). Plugins: [`file`] (a directory), [`https`] (WebDAV),
//! [`s3`] (any S3 store), [`xroot`] (XRootD, through `xrdcp`/`xrdfs`).
//!
//! This crate never talks to the catalog: registering what was stored is
//! the DataManager's job.

pub mod checksum;
pub mod file;
pub mod https;
pub mod s3;
pub mod se;
pub mod xroot;

use std::path::Path;

pub use checksum::Adler32;
pub use se::{StorageElement, StorageElements};

/// Size and Adler32 (8 lowercase hex digits) of a stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    /// `None` when the storage cannot tell without reading the file.
    pub adler32: Option<String>,
}

/// Space on a storage element, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occupancy {
    pub total: u64,
    pub free: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Bad input: an LFN outside the SE's namespace, a bad configuration.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}: no such file")]
    NotFound(String),
    /// The data arrived but is not what was announced.
    #[error("{url}: checksum mismatch: expected {expected}, got {got}")]
    Checksum {
        url: String,
        expected: String,
        got: String,
    },
    #[error("{0}: no space left on the storage")]
    NoSpace(String),
    #[error("{0}: permission denied by the storage")]
    PermissionDenied(String),
    /// The storage cannot be reached or failed mid-transfer.
    #[error("{0}")]
    Unavailable(String),
    /// The protocol cannot do this (third-party copy, occupancy …).
    #[error("{0}")]
    Unsupported(String),
}

impl StorageError {
    /// The gRPC status category of this error, for per-item answers.
    pub fn code(&self) -> &'static str {
        match self {
            StorageError::Invalid(_) => "InvalidArgument",
            StorageError::NotFound(_) => "NotFound",
            StorageError::Checksum { .. } => "DataLoss",
            StorageError::NoSpace(_) => "ResourceExhausted",
            StorageError::PermissionDenied(_) => "PermissionDenied",
            StorageError::Unavailable(_) => "Unavailable",
            StorageError::Unsupported(_) => "Unimplemented",
        }
    }

    /// An IO error on `url`, by kind.
    pub fn io(url: &str, e: &std::io::Error) -> StorageError {
        match e.kind() {
            std::io::ErrorKind::NotFound => StorageError::NotFound(url.to_string()),
            std::io::ErrorKind::PermissionDenied => StorageError::PermissionDenied(url.to_string()),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                StorageError::NoSpace(url.to_string())
            }
            _ => StorageError::Unavailable(format!("{url}: {e}")),
        }
    }
}

/// One protocol of one storage element.
#[async_trait::async_trait]
pub trait StoragePlugin: Send + Sync {
    /// `file`, `root`, `https`, `s3` …
    fn protocol(&self) -> &'static str;

    /// The physical URL of `lfn`.
    fn url(&self, lfn: &str) -> String;

    /// Store the local file `local` as `lfn`, replacing what was there;
    /// nothing is left behind on failure.
    async fn put(&self, lfn: &str, local: &Path) -> Result<Stat, StorageError>;

    /// Store `local` as `lfn` when the caller gives the file up and knows
    /// its size and checksum (an upload staged by the server): a plugin on
    /// the same filesystem moves it instead of copying. `local` is gone
    /// afterwards, whatever happened.
    async fn put_owned(&self, lfn: &str, local: &Path, known: &Stat) -> Result<Stat, StorageError> {
        let _ = known;
        let stored = self.put(lfn, local).await;
        let _ = tokio::fs::remove_file(local).await;
        stored
    }

    /// Fetch `lfn` into the local file `local`.
    async fn get(&self, lfn: &str, local: &Path) -> Result<Stat, StorageError>;

    /// Remove `lfn`; removing what is not there succeeds.
    async fn remove(&self, lfn: &str) -> Result<(), StorageError>;

    /// Size (and checksum, where cheap) of `lfn`, `None` if it is absent.
    async fn stat(&self, lfn: &str) -> Result<Option<Stat>, StorageError>;

    /// Total and free space, if the protocol can tell.
    async fn occupancy(&self) -> Result<Option<Occupancy>, StorageError> {
        Ok(None)
    }

    /// Protocols of source URLs this plugin can copy from without the data
    /// passing through us (third-party copy).
    fn third_party_sources(&self) -> &'static [&'static str] {
        &[]
    }

    /// Copy `source_url` into `lfn` directly, storage to storage.
    async fn copy_from(&self, lfn: &str, source_url: &str) -> Result<Stat, StorageError> {
        let _ = (lfn, source_url);
        Err(StorageError::Unsupported(format!(
            "{} has no third-party copy",
            self.protocol()
        )))
    }
}

/// DIRAC's physical name: `<protocol>://<host>[:<port>]<path>/<lfn>`.
pub fn pfn(protocol: &str, host: Option<&str>, port: Option<u16>, path: &str, lfn: &str) -> String {
    let base = path.trim_end_matches('/');
    let authority = match (host, port) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => String::new(),
    };
    format!("{protocol}://{authority}{base}{lfn}")
}

/// Check that `lfn` can name a file on a storage element: absolute, no
/// empty, `.` or `..` component, no NUL.
pub fn check_lfn(lfn: &str) -> Result<(), StorageError> {
    let bad = |why: &str| {
        Err(StorageError::Invalid(format!(
            "'{lfn}' is not a valid LFN: {why}"
        )))
    };
    if !lfn.starts_with('/') {
        return bad("not absolute");
    }
    if lfn.contains('\0') {
        return bad("contains NUL");
    }
    if lfn[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("empty, '.' or '..' component");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_names_follow_dirac() {
        assert_eq!(
            pfn(
                "root",
                Some("eos.cern.ch"),
                Some(1094),
                "/eos/lhcb/grid/",
                "/lhcb/user/a/f"
            ),
            "root://eos.cern.ch:1094/eos/lhcb/grid/lhcb/user/a/f"
        );
        assert_eq!(
            pfn("file", None, None, "/srv/se", "/dteam/x"),
            "file:///srv/se/dteam/x"
        );
        assert!(check_lfn("/dteam/a/b").is_ok());
        for bad in [
            "dteam/a",
            "/dteam//a",
            "/dteam/../etc",
            "/dteam/./a",
            "/dteam/a\0",
        ] {
            assert!(check_lfn(bad).is_err(), "{bad}");
        }
    }
}
