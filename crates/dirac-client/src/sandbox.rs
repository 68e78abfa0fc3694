//! Sandbox archives: packing files into a `tar.gz`, unpacking one safely, and
//! moving one through the SandboxStore service with its size and sha256
//! checked at both ends.
//!
//! An upload is a [`SandboxHeader`] followed by [`CHUNK_SIZE`] data chunks; a
//! download has the same shape and is refused when its bytes disagree with
//! its header.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use dirac_proto::wms::sandbox_chunk::Kind;
use dirac_proto::wms::{DownloadSandboxRequest, SandboxChunk, SandboxHeader};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::Client;

/// Size of the data chunks of an upload.
pub const CHUNK_SIZE: usize = 1024 * 1024;

/// The only archive format this crate writes.
pub const FORMAT: &str = "tar.gz";

/// Why a sandbox could not be packed, unpacked or transferred.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot read {} for the sandbox", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is outside the sandbox base {}", path.display(), base.display())]
    OutsideBase { path: PathBuf, base: PathBuf },
    #[error("cannot write the sandbox archive")]
    Pack(#[source] std::io::Error),
    #[error("invalid sandbox archive")]
    Archive(#[source] std::io::Error),
    /// An entry would land outside the destination (absolute path or `..`).
    #[error("sandbox entry {path:?} escapes the destination")]
    UnsafePath { path: String },
    #[error("sandbox entry {path:?} has an unsupported type")]
    UnsupportedEntry { path: String },
    #[error("cannot write sandbox entry {path:?}")]
    Unpack {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox transfer failed: {}", .0.message())]
    Rpc(#[source] Box<tonic::Status>),
    #[error("the server sent sandbox data before its header")]
    MissingHeader,
    #[error("the server sent a second sandbox header")]
    DuplicateHeader,
    #[error("sandbox size mismatch: header says {expected} bytes, got {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("sandbox checksum mismatch: header says {expected}, got {actual}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("the server returned an empty sandbox reference")]
    EmptyPfn,
}

impl From<tonic::Status> for SandboxError {
    fn from(status: tonic::Status) -> Self {
        SandboxError::Rpc(Box::new(status))
    }
}

impl SandboxError {
    /// The gRPC status, when the server (or the transport) refused the call.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            SandboxError::Rpc(status) => Some(status),
            _ => None,
        }
    }
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(digest.len() * 2);
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether a relative path stays below its root: no root, prefix or `..`.
fn is_contained(path: &Path) -> bool {
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && path.components().any(|c| matches!(c, Component::Normal(_)))
}

/// Packs files and directories (recursively) into a `tar.gz`.
///
/// Relative paths are taken relative to `base`; every path must lie below
/// `base` and is stored relative to it. Archives are deterministic: the same
/// files give the same bytes (no times, owners or modes beyond the executable
/// bit), so the server can deduplicate them.
pub fn pack(files: &[PathBuf], base: &Path) -> Result<Vec<u8>, SandboxError> {
    let encoder = GzEncoder::new(Vec::new(), Compression::default());
    let mut builder = tar::Builder::new(encoder);
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(true);
    for file in files {
        let full = if file.is_absolute() {
            file.clone()
        } else {
            base.join(file)
        };
        let name = full
            .strip_prefix(base)
            .ok()
            .filter(|n| is_contained(n))
            .map(Path::to_path_buf)
            .ok_or_else(|| SandboxError::OutsideBase {
                path: file.clone(),
                base: base.to_path_buf(),
            })?;
        let meta = std::fs::metadata(&full).map_err(|source| SandboxError::Read {
            path: full.clone(),
            source,
        })?;
        let result = if meta.is_dir() {
            builder.append_dir_all(&name, &full)
        } else {
            builder.append_path_with_name(&full, &name)
        };
        result.map_err(|source| SandboxError::Read {
            path: full.clone(),
            source,
        })?;
    }
    let encoder = builder.into_inner().map_err(SandboxError::Pack)?;
    encoder.finish().map_err(SandboxError::Pack)
}

/// Unpacks a `tar.gz` (or plain tar) archive into `dest`, which is created
/// when missing.
///
/// Refuses, before writing anything, archives with an absolute path or a `..`
/// component, links pointing outside `dest`, and device or fifo entries.
/// Returns the relative paths of the entries written.
pub fn unpack(bytes: &[u8], dest: &Path) -> Result<Vec<PathBuf>, SandboxError> {
    // First pass: check every entry, so that a bad archive writes nothing.
    let mut names = Vec::new();
    {
        let mut archive = tar::Archive::new(decoder(bytes));
        for entry in archive.entries().map_err(SandboxError::Archive)? {
            let entry = entry.map_err(SandboxError::Archive)?;
            let path = entry.path().map_err(SandboxError::Archive)?.into_owned();
            let shown = path.to_string_lossy().into_owned();
            if !is_contained(&path) {
                return Err(SandboxError::UnsafePath { path: shown });
            }
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .map_err(SandboxError::Archive)?
                    .ok_or_else(|| SandboxError::UnsafePath {
                        path: shown.clone(),
                    })?;
                // A symlink target is relative to the link's directory.
                let resolved = if kind.is_symlink() {
                    path.parent().unwrap_or(Path::new("")).join(&target)
                } else {
                    target.into_owned()
                };
                if !stays_inside(&resolved) {
                    return Err(SandboxError::UnsafePath { path: shown });
                }
            } else if !(kind.is_file() || kind.is_dir() || kind.is_contiguous()) {
                return Err(SandboxError::UnsupportedEntry { path: shown });
            }
            names.push(path);
        }
    }
    std::fs::create_dir_all(dest).map_err(|source| SandboxError::Unpack {
        path: dest.to_string_lossy().into_owned(),
        source,
    })?;
    let mut archive = tar::Archive::new(decoder(bytes));
    archive.set_preserve_permissions(false);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(SandboxError::Archive)? {
        let mut entry = entry.map_err(SandboxError::Archive)?;
        let shown = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let written = entry
            .unpack_in(dest)
            .map_err(|source| SandboxError::Unpack {
                path: shown.clone(),
                source,
            })?;
        if !written {
            return Err(SandboxError::UnsafePath { path: shown });
        }
    }
    Ok(names)
}

/// Whether a path, once its `.` and `..` are resolved lexically, stays below
/// its root.
fn stays_inside(path: &Path) -> bool {
    let mut depth: usize = 0;
    for component in path.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// A reader over the archive: gunzip when it starts with the gzip magic.
fn decoder(bytes: &[u8]) -> Box<dyn Read + '_> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    }
}

/// The header then the data chunks of an upload.
fn upload_chunks(bytes: Vec<u8>) -> Vec<SandboxChunk> {
    let header = SandboxHeader {
        size: bytes.len() as u64,
        checksum: sha256_hex(&bytes),
        format: FORMAT.to_owned(),
    };
    let mut chunks = Vec::with_capacity(1 + bytes.len().div_ceil(CHUNK_SIZE));
    chunks.push(SandboxChunk {
        kind: Some(Kind::Header(header)),
    });
    chunks.extend(bytes.chunks(CHUNK_SIZE).map(|data| SandboxChunk {
        kind: Some(Kind::Data(data.to_vec())),
    }));
    chunks
}

/// Uploads a `tar.gz` archive and returns its `SB:` reference.
pub async fn upload(client: &Client, bytes: Vec<u8>) -> Result<String, SandboxError> {
    let stream = tokio_stream::iter(upload_chunks(bytes));
    let response = client
        .sandbox_store()
        .upload_sandbox(stream)
        .await?
        .into_inner();
    if response.pfn.trim().is_empty() {
        return Err(SandboxError::EmptyPfn);
    }
    Ok(response.pfn)
}

/// Collects a downloaded stream, checking it against its header.
#[derive(Default)]
struct Receiver {
    header: Option<SandboxHeader>,
    data: Vec<u8>,
}

impl Receiver {
    fn push(&mut self, chunk: SandboxChunk) -> Result<(), SandboxError> {
        match chunk.kind {
            Some(Kind::Header(header)) => {
                if self.header.is_some() {
                    return Err(SandboxError::DuplicateHeader);
                }
                // Never trust the announced size for more than a hint.
                let hint = usize::try_from(header.size)
                    .unwrap_or(0)
                    .min(CHUNK_SIZE * 64);
                self.data.reserve(hint);
                self.header = Some(header);
            }
            Some(Kind::Data(data)) => {
                let header = self.header.as_ref().ok_or(SandboxError::MissingHeader)?;
                let actual = (self.data.len() + data.len()) as u64;
                if actual > header.size {
                    return Err(SandboxError::SizeMismatch {
                        expected: header.size,
                        actual,
                    });
                }
                self.data.extend_from_slice(&data);
            }
            None => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<u8>, SandboxError> {
        let header = self.header.ok_or(SandboxError::MissingHeader)?;
        let actual = self.data.len() as u64;
        if actual != header.size {
            return Err(SandboxError::SizeMismatch {
                expected: header.size,
                actual,
            });
        }
        let checksum = sha256_hex(&self.data);
        if !checksum.eq_ignore_ascii_case(header.checksum.trim()) {
            return Err(SandboxError::ChecksumMismatch {
                expected: header.checksum,
                actual: checksum,
            });
        }
        Ok(self.data)
    }
}

/// Downloads the archive behind an `SB:` reference, refusing it when its
/// size or sha256 differ from the header the server sent first.
pub async fn download(client: &Client, pfn: &str) -> Result<Vec<u8>, SandboxError> {
    let request = DownloadSandboxRequest {
        pfn: pfn.to_owned(),
    };
    let mut stream = client
        .sandbox_store()
        .download_sandbox(request)
        .await?
        .into_inner();
    let mut receiver = Receiver::default();
    while let Some(chunk) = stream.message().await? {
        receiver.push(chunk)?;
    }
    receiver.finish()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        // Raw headers so that unsafe names reach the archive unchanged.
        let mut raw = Vec::new();
        for (name, data) in entries {
            let mut header = tar::Header::new_old();
            let bytes = name.as_bytes();
            header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            raw.extend_from_slice(header.as_bytes());
            raw.extend_from_slice(data);
            raw.resize(raw.len().div_ceil(512) * 512, 0);
        }
        raw.resize(raw.len() + 1024, 0);
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&raw).expect("gzip");
        gz.finish().expect("gzip")
    }

    #[test]
    fn pack_unpack_round_trip() {
        let src = tempfile::tempdir().expect("tempdir");
        std::fs::write(src.path().join("a.txt"), b"hello").expect("write");
        std::fs::create_dir_all(src.path().join("sub/deeper")).expect("mkdir");
        std::fs::write(src.path().join("sub/deeper/b.bin"), [0u8, 1, 2, 255]).expect("write");
        let files = vec![PathBuf::from("a.txt"), src.path().join("sub")];
        let bytes = pack(&files, src.path()).expect("pack");
        assert!(bytes.starts_with(&[0x1f, 0x8b]));
        assert_eq!(
            bytes,
            pack(&files, src.path()).expect("pack again"),
            "deterministic"
        );

        let dst = tempfile::tempdir().expect("tempdir");
        let names = unpack(&bytes, &dst.path().join("job")).expect("unpack");
        assert!(names.contains(&PathBuf::from("a.txt")));
        assert_eq!(
            std::fs::read(dst.path().join("job/a.txt")).expect("read"),
            b"hello"
        );
        assert_eq!(
            std::fs::read(dst.path().join("job/sub/deeper/b.bin")).expect("read"),
            [0u8, 1, 2, 255]
        );
    }

    #[test]
    fn pack_refuses_paths_outside_base() {
        let base = tempfile::tempdir().expect("tempdir");
        for bad in ["../x", "/etc/hostname"] {
            let err = pack(&[PathBuf::from(bad)], base.path()).expect_err(bad);
            assert!(
                matches!(err, SandboxError::OutsideBase { .. }),
                "{bad}: {err}"
            );
        }
        let err = pack(&[PathBuf::from("missing")], base.path()).expect_err("missing");
        assert!(matches!(err, SandboxError::Read { .. }), "{err}");
    }

    #[test]
    fn unpack_refuses_traversal_and_writes_nothing() {
        for bad in ["../evil.txt", "/tmp/evil.txt", "ok/../../evil.txt"] {
            let archive = tar_gz(&[("fine.txt", b"ok"), (bad, b"evil")]);
            let root = tempfile::tempdir().expect("tempdir");
            let dest = root.path().join("job");
            let err = unpack(&archive, &dest).expect_err(bad);
            assert!(
                matches!(err, SandboxError::UnsafePath { .. }),
                "{bad}: {err}"
            );
            assert!(
                !dest.join("fine.txt").exists(),
                "{bad}: wrote before refusing"
            );
            assert!(!root.path().join("evil.txt").exists());
        }
    }

    #[test]
    fn unpack_refuses_escaping_symlinks() {
        let mut raw = Vec::new();
        {
            let mut builder = tar::Builder::new(&mut raw);
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            builder
                .append_link(&mut header, "link", "../../etc")
                .expect("link");
            builder.finish().expect("finish");
        }
        let dest = tempfile::tempdir().expect("tempdir");
        let err = unpack(&raw, dest.path()).expect_err("escaping link");
        assert!(matches!(err, SandboxError::UnsafePath { .. }), "{err}");
    }

    #[test]
    fn unpack_refuses_garbage() {
        let dest = tempfile::tempdir().expect("tempdir");
        assert!(unpack(&[0x1f, 0x8b, 1, 2, 3], dest.path()).is_err());
    }

    #[test]
    fn checksum_is_lowercase_hex_sha256() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn upload_chunks_are_header_then_mib_pieces() {
        let bytes = vec![7u8; CHUNK_SIZE * 2 + 3];
        let chunks = upload_chunks(bytes.clone());
        assert_eq!(chunks.len(), 4);
        match &chunks[0].kind {
            Some(Kind::Header(h)) => {
                assert_eq!(h.size, bytes.len() as u64);
                assert_eq!(h.checksum, sha256_hex(&bytes));
                assert_eq!(h.format, "tar.gz");
            }
            other => panic!("first chunk is not a header: {other:?}"),
        }
        let sizes: Vec<usize> = chunks[1..]
            .iter()
            .map(|c| match &c.kind {
                Some(Kind::Data(d)) => d.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, [CHUNK_SIZE, CHUNK_SIZE, 3]);
    }

    fn receive(chunks: Vec<SandboxChunk>) -> Result<Vec<u8>, SandboxError> {
        let mut receiver = Receiver::default();
        for chunk in chunks {
            receiver.push(chunk)?;
        }
        receiver.finish()
    }

    #[test]
    fn download_checks_size_and_checksum() {
        let bytes = b"some archive".to_vec();
        assert_eq!(receive(upload_chunks(bytes.clone())).expect("ok"), bytes);

        let mut bad = upload_chunks(bytes.clone());
        bad.push(SandboxChunk {
            kind: Some(Kind::Data(b"x".to_vec())),
        });
        assert!(matches!(
            receive(bad),
            Err(SandboxError::SizeMismatch { .. })
        ));

        let mut short = upload_chunks(bytes.clone());
        short.pop();
        assert!(matches!(
            receive(short),
            Err(SandboxError::SizeMismatch { .. })
        ));

        let mut corrupt = upload_chunks(bytes.clone());
        corrupt[1] = SandboxChunk {
            kind: Some(Kind::Data(b"SOME ARCHIVE".to_vec())),
        };
        assert!(matches!(
            receive(corrupt),
            Err(SandboxError::ChecksumMismatch { .. })
        ));

        let headless = upload_chunks(bytes)[1..].to_vec();
        assert!(matches!(
            receive(headless),
            Err(SandboxError::MissingHeader)
        ));
    }
}
