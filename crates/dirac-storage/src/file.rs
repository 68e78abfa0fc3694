//! The `file` plugin: a directory of the machine it runs on (a local disk,
//! an NFS or CephFS mount). `<root><lfn>` holds the file; writes go to a
//! hidden part file next to it and are renamed into place once complete,
//! so a reader never sees half a file.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{Adler32, Occupancy, Stat, StorageError, StoragePlugin, check_lfn};

pub struct FilePlugin {
    root: PathBuf,
}

impl FilePlugin {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FilePlugin { root: root.into() }
    }

    /// Where `lfn` lives on disk.
    pub fn path_of(&self, lfn: &str) -> Result<PathBuf, StorageError> {
        check_lfn(lfn)?;
        Ok(self.root.join(lfn.trim_start_matches('/')))
    }
}

/// Copy `from` to `to`, computing size and Adler32 on the way.
async fn copy_summing(
    from: &mut tokio::fs::File,
    to: &mut tokio::fs::File,
) -> std::io::Result<(u64, String)> {
    let mut sum = Adler32::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        sum.update(&buf[..n]);
        to.write_all(&buf[..n]).await?;
        size += n as u64;
    }
    to.flush().await?;
    Ok((size, sum.hex()))
}

/// A part file beside `target`, removed unless [`Part::commit`] ran.
pub struct Part {
    path: PathBuf,
    target: PathBuf,
    done: bool,
}

impl Part {
    pub async fn create(target: &Path) -> std::io::Result<(Part, tokio::fs::File)> {
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let path = target.with_file_name(format!(".{name}.part-{:016x}", rand::random::<u64>()));
        let file = tokio::fs::File::create(&path).await?;
        Ok((
            Part {
                path,
                target: target.to_path_buf(),
                done: false,
            },
            file,
        ))
    }

    /// Make the part file the target, durably.
    pub async fn commit(mut self, file: tokio::fs::File) -> std::io::Result<()> {
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&self.path, &self.target).await?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[async_trait::async_trait]
impl StoragePlugin for FilePlugin {
    fn protocol(&self) -> &'static str {
        "file"
    }

    fn url(&self, lfn: &str) -> String {
        format!(
            "file://{}{lfn}",
            self.root.display().to_string().trim_end_matches('/')
        )
    }

    async fn put(&self, lfn: &str, local: &Path) -> Result<Stat, StorageError> {
        let target = self.path_of(lfn)?;
        let url = self.url(lfn);
        let mut from = tokio::fs::File::open(local)
            .await
            .map_err(|e| StorageError::Invalid(format!("{}: {e}", local.display())))?;
        let (part, mut to) = Part::create(&target)
            .await
            .map_err(|e| StorageError::io(&url, &e))?;
        let (size, adler32) = copy_summing(&mut from, &mut to)
            .await
            .map_err(|e| StorageError::io(&url, &e))?;
        part.commit(to)
            .await
            .map_err(|e| StorageError::io(&url, &e))?;
        Ok(Stat {
            size,
            adler32: Some(adler32),
        })
    }

    async fn put_owned(&self, lfn: &str, local: &Path, known: &Stat) -> Result<Stat, StorageError> {
        let target = self.path_of(lfn)?;
        let url = self.url(lfn);
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| StorageError::io(&url, &e))?;
        }
        // Same filesystem: a rename, no second copy. Another one (EXDEV):
        // the copy through a part file.
        if tokio::fs::rename(local, &target).await.is_ok() {
            return Ok(known.clone());
        }
        let stored = self.put(lfn, local).await;
        let _ = tokio::fs::remove_file(local).await;
        stored
    }

    async fn get(&self, lfn: &str, local: &Path) -> Result<Stat, StorageError> {
        let source = self.path_of(lfn)?;
        let url = self.url(lfn);
        let mut from = tokio::fs::File::open(&source)
            .await
            .map_err(|e| StorageError::io(&url, &e))?;
        let mut to = tokio::fs::File::create(local)
            .await
            .map_err(|e| StorageError::Invalid(format!("{}: {e}", local.display())))?;
        let (size, adler32) = copy_summing(&mut from, &mut to)
            .await
            .map_err(|e| StorageError::io(&url, &e))?;
        Ok(Stat {
            size,
            adler32: Some(adler32),
        })
    }

    async fn remove(&self, lfn: &str) -> Result<(), StorageError> {
        let path = self.path_of(lfn)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(&self.url(lfn), &e)),
        }
    }

    async fn stat(&self, lfn: &str) -> Result<Option<Stat>, StorageError> {
        let path = self.path_of(lfn)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(Stat {
                size: m.len(),
                adler32: None,
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io(&self.url(lfn), &e)),
        }
    }

    async fn occupancy(&self) -> Result<Option<Occupancy>, StorageError> {
        let root = self.root.clone();
        let url = format!("file://{}", root.display());
        let st = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&root)?;
            rustix::fs::statvfs(&root).map_err(std::io::Error::from)
        })
        .await
        .map_err(|e| StorageError::Unavailable(format!("{url}: {e}")))?
        .map_err(|e| StorageError::io(&url, &e))?;
        Ok(Some(Occupancy {
            total: st.f_blocks.saturating_mul(st.f_frsize),
            free: st.f_bavail.saturating_mul(st.f_frsize),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_with_checksums_and_no_part_files_left() {
        let dir = tempfile::tempdir().expect("tmp");
        let se = FilePlugin::new(dir.path().join("se"));
        let local = dir.path().join("in");
        for (name, content) in [
            ("empty", Vec::new()),
            ("one", vec![b'x']),
            ("more", vec![7u8; 3 << 20]),
        ] {
            std::fs::write(&local, &content).expect("write");
            let lfn = format!("/dteam/data/{name}");
            let put = se.put(&lfn, &local).await.expect("put");
            let (size, sum) = crate::checksum::of_file(&local).await.expect("sum");
            assert_eq!(
                put,
                Stat {
                    size,
                    adler32: Some(sum.clone())
                }
            );
            assert_eq!(
                se.stat(&lfn).await.expect("stat").map(|s| s.size),
                Some(size)
            );
            let out = dir.path().join("out");
            let got = se.get(&lfn, &out).await.expect("get");
            assert_eq!(got.adler32.as_deref(), Some(sum.as_str()));
            assert_eq!(std::fs::read(&out).expect("read"), content);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("se/dteam/data"))
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        se.remove("/dteam/data/one").await.expect("remove");
        se.remove("/dteam/data/one")
            .await
            .expect("removing twice succeeds");
        assert_eq!(se.stat("/dteam/data/one").await.expect("stat"), None);
        assert!(matches!(
            se.get("/dteam/data/one", &dir.path().join("x")).await,
            Err(StorageError::NotFound(_))
        ));
        assert!(matches!(
            se.put("/dteam/../etc/passwd", &local).await,
            Err(StorageError::Invalid(_))
        ));
        // A staged upload given up is moved into place.
        let staged = dir.path().join("staged");
        std::fs::write(&staged, b"moved").expect("write");
        let known = crate::checksum::of_file(&staged).await.expect("sum");
        let known = Stat {
            size: known.0,
            adler32: Some(known.1),
        };
        let moved = se
            .put_owned("/dteam/data/moved", &staged, &known)
            .await
            .expect("put_owned");
        assert_eq!(moved, known);
        assert!(!staged.exists(), "the staged file is gone");
        assert_eq!(
            std::fs::read(se.path_of("/dteam/data/moved").expect("path")).expect("read"),
            b"moved"
        );
        let occ = se.occupancy().await.expect("occupancy").expect("known");
        assert!(occ.total >= occ.free && occ.total > 0);
    }
}
