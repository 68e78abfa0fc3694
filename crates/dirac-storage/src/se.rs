//! A storage element as the configuration describes it, with a plugin per
//! protocol section, and the registry of all of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dirac_core::config::{SeAccess, SeProtocolConfig, StorageElementConfig};

use crate::{Occupancy, Stat, StorageError, StoragePlugin, checksum};

pub struct StorageElement {
    pub name: String,
    pub config: StorageElementConfig,
    /// (protocol, plugin) in the configuration's order.
    plugins: Vec<Arc<dyn StoragePlugin>>,
}

impl std::fmt::Debug for StorageElement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageElement")
            .field("name", &self.name)
            .field(
                "protocols",
                &self
                    .plugins
                    .iter()
                    .map(|p| p.protocol())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The plugin of one protocol section; `None` for `dips` (the service
/// itself, nothing to drive from the server).
fn plugin(
    se: &str,
    section: &SeProtocolConfig,
    base_dir: &Path,
) -> Result<Option<Arc<dyn StoragePlugin>>, StorageError> {
    match section.protocol.as_str() {
        "file" => {
            let root = if section.path.is_empty() {
                base_dir.join(se)
            } else if Path::new(&section.path).is_absolute() {
                PathBuf::from(&section.path)
            } else {
                base_dir.join(&section.path)
            };
            Ok(Some(Arc::new(crate::file::FilePlugin::new(root))))
        }
        "dips" => Ok(None),
        "root" => {
            let host = section.host.as_deref().ok_or_else(|| {
                StorageError::Invalid(format!("storage element {se}: root needs Host"))
            })?;
            Ok(Some(Arc::new(
                crate::xroot::XrootPlugin::new(host, section.port, &section.path)
                    .with_token_file(section.token_file.clone()),
            )))
        }
        "https" => {
            let host = section.host.as_deref().ok_or_else(|| {
                StorageError::Invalid(format!("storage element {se}: https needs Host"))
            })?;
            Ok(Some(Arc::new(crate::https::HttpsPlugin::with_token(
                host,
                section.port,
                &section.path,
                section.ca_file.as_deref(),
                section.token_file.as_deref(),
            )?)))
        }
        "s3" => {
            let read = |f: &Option<std::path::PathBuf>,
                        what: &str|
             -> Result<String, StorageError> {
                let f = f.as_ref().ok_or_else(|| {
                    StorageError::Invalid(format!("storage element {se}: s3 needs {what}"))
                })?;
                std::fs::read_to_string(f)
                    .map(|s| s.trim().to_string())
                    .map_err(|e| {
                        StorageError::Invalid(format!("storage element {se}: {}: {e}", f.display()))
                    })
            };
            let key = read(&section.access_key_file, "AccessKeyFile")?;
            let secret = read(&section.secret_key_file, "SecretKeyFile")?;
            Ok(Some(Arc::new(crate::s3::S3Plugin::new(
                section.endpoint_url.as_deref(),
                section.region.as_deref(),
                &section.path,
                &key,
                &secret,
            )?)))
        }
        other => Err(StorageError::Unsupported(format!(
            "storage element {se}: protocol '{other}' is not available in this build"
        ))),
    }
}

impl StorageElement {
    /// Build the plugins of `config`; relative `file` paths are under
    /// `base_dir`.
    pub fn new(
        name: &str,
        config: &StorageElementConfig,
        base_dir: &Path,
    ) -> Result<Self, StorageError> {
        let mut plugins = Vec::new();
        for section in &config.protocols {
            if let Some(p) = plugin(name, section, base_dir)? {
                plugins.push(p);
            }
        }
        Ok(StorageElement {
            name: name.to_string(),
            config: config.clone(),
            plugins,
        })
    }

    /// A storage element with one ready-made plugin (tests, tools).
    pub fn with_plugin(name: &str, plugin: Arc<dyn StoragePlugin>) -> Self {
        StorageElement {
            name: name.to_string(),
            config: StorageElementConfig::default(),
            plugins: vec![plugin],
        }
    }

    fn ordered(&self, preference: &[String]) -> Vec<Arc<dyn StoragePlugin>> {
        if preference.is_empty() {
            return self.plugins.clone();
        }
        preference
            .iter()
            .filter_map(|p| self.plugins.iter().find(|x| x.protocol() == p).cloned())
            .collect()
    }

    /// The plugin to read with, if reading is allowed.
    pub fn reader(&self) -> Result<Arc<dyn StoragePlugin>, StorageError> {
        if self.config.read_access == SeAccess::Banned {
            return Err(StorageError::Unavailable(format!(
                "storage element {} is banned for reading",
                self.name
            )));
        }
        self.ordered(&self.config.access_protocols)
            .into_iter()
            .next()
            .ok_or_else(|| self.no_plugin("read"))
    }

    /// The plugin to write (and remove) with, if writing is allowed.
    pub fn writer(&self) -> Result<Arc<dyn StoragePlugin>, StorageError> {
        if self.config.write_access == SeAccess::Banned {
            return Err(StorageError::Unavailable(format!(
                "storage element {} is banned for writing",
                self.name
            )));
        }
        self.ordered(&self.config.write_protocols)
            .into_iter()
            .next()
            .ok_or_else(|| self.no_plugin("write"))
    }

    fn no_plugin(&self, what: &str) -> StorageError {
        StorageError::Unsupported(format!(
            "storage element {} has no protocol this server can {what} with",
            self.name
        ))
    }

    /// Store `local` as `lfn`; when `expected` (Adler32) is given the stored
    /// copy must match it, or it is removed again.
    pub async fn put(
        &self,
        lfn: &str,
        local: &Path,
        expected: Option<&str>,
    ) -> Result<Stat, StorageError> {
        let plugin = self.writer()?;
        let stat = plugin.put(lfn, local).await?;
        if let (Some(want), Some(got)) = (expected, stat.adler32.as_deref())
            && !checksum::same(want, got)
        {
            let _ = plugin.remove(lfn).await;
            return Err(StorageError::Checksum {
                url: plugin.url(lfn),
                expected: want.to_string(),
                got: got.to_string(),
            });
        }
        Ok(stat)
    }

    /// [`put`](Self::put) of a file the caller gives up, whose size and
    /// Adler32 it has computed (see [`StoragePlugin::put_owned`]).
    pub async fn put_owned(
        &self,
        lfn: &str,
        local: &Path,
        known: &Stat,
    ) -> Result<Stat, StorageError> {
        let plugin = match self.writer() {
            Ok(p) => p,
            Err(e) => {
                let _ = tokio::fs::remove_file(local).await;
                return Err(e);
            }
        };
        plugin.put_owned(lfn, local, known).await
    }

    pub async fn get(&self, lfn: &str, local: &Path) -> Result<Stat, StorageError> {
        self.reader()?.get(lfn, local).await
    }

    pub async fn remove(&self, lfn: &str) -> Result<(), StorageError> {
        self.writer()?.remove(lfn).await
    }

    pub async fn stat(&self, lfn: &str) -> Result<Option<Stat>, StorageError> {
        self.reader()?.stat(lfn).await
    }

    /// Space left: from the first plugin that can tell.
    pub async fn occupancy(&self) -> Result<Option<Occupancy>, StorageError> {
        for p in &self.plugins {
            if let Some(o) = p.occupancy().await? {
                return Ok(Some(o));
            }
        }
        Ok(None)
    }

    /// Space left, from the protocol, else from the `{"Total": bytes,
    /// "Free": bytes}` document at `OccupancyLFN` (default
    /// `/<vo>/occupancy.json`) on the storage itself (DIRAC's fallback for
    /// storages that cannot tell).
    pub async fn occupancy_for(&self, vo: &str, scratch: &Path) -> Result<Occupancy, StorageError> {
        if let Some(o) = self.occupancy().await? {
            return Ok(o);
        }
        let lfn = self
            .config
            .occupancy_lfn
            .clone()
            .unwrap_or_else(|| format!("/{vo}/occupancy.json"));
        let tmp = scratch.join(format!(".occupancy-{:016x}", rand::random::<u64>()));
        let got = self.get(&lfn, &tmp).await;
        let text = match got {
            Ok(_) => tokio::fs::read_to_string(&tmp)
                .await
                .map_err(|e| StorageError::io(&lfn, &e)),
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&tmp).await;
        let v: serde_json::Value = serde_json::from_str(&text?)
            .map_err(|e| StorageError::Invalid(format!("{lfn} is not occupancy JSON: {e}")))?;
        let field = |k: &str| {
            v[k].as_u64()
                .ok_or_else(|| StorageError::Invalid(format!("{lfn} has no numeric '{k}'")))
        };
        Ok(Occupancy {
            total: field("Total")?,
            free: field("Free")?,
        })
    }

    /// Every URL `lfn` can be read at, in access preference order,
    /// optionally only of `protocol`.
    pub fn urls(&self, lfn: &str, protocol: Option<&str>) -> Vec<String> {
        if self.config.read_access == SeAccess::Banned {
            return Vec::new();
        }
        self.ordered(&self.config.access_protocols)
            .iter()
            .filter(|p| protocol.is_none_or(|want| p.protocol() == want))
            .map(|p| p.url(lfn))
            .collect()
    }

    /// URL of `lfn` for reading.
    pub fn url(&self, lfn: &str) -> Result<String, StorageError> {
        Ok(self.reader()?.url(lfn))
    }
}

/// Copy `lfn` from `source` to `dest`: storage to storage when the
/// destination's protocol can pull from the source's, otherwise streamed
/// through a local temporary file. The copy must match `expected` (Adler32)
/// when given. Says whether the copy was third-party.
pub async fn replicate(
    source: &StorageElement,
    dest: &StorageElement,
    lfn: &str,
    expected: Option<&str>,
    scratch: &Path,
) -> Result<(Stat, bool), StorageError> {
    let reader = source.reader()?;
    let writer = dest.writer()?;
    if writer.third_party_sources().contains(&reader.protocol()) {
        let stat = writer.copy_from(lfn, &reader.url(lfn)).await?;
        if let (Some(want), Some(got)) = (expected, stat.adler32.as_deref())
            && !checksum::same(want, got)
        {
            let _ = writer.remove(lfn).await;
            return Err(StorageError::Checksum {
                url: writer.url(lfn),
                expected: want.to_string(),
                got: got.to_string(),
            });
        }
        return Ok((stat, true));
    }
    let tmp = scratch.join(format!(".replicate-{:016x}", rand::random::<u64>()));
    let result = async {
        let got = reader.get(lfn, &tmp).await?;
        if let (Some(want), Some(have)) = (expected, got.adler32.as_deref())
            && !checksum::same(want, have)
        {
            return Err(StorageError::Checksum {
                url: reader.url(lfn),
                expected: want.to_string(),
                got: have.to_string(),
            });
        }
        dest.put(lfn, &tmp, expected).await.map(|s| (s, false))
    }
    .await;
    let _ = tokio::fs::remove_file(&tmp).await;
    result
}

/// Every storage element of the configuration.
#[derive(Default)]
pub struct StorageElements {
    by_name: BTreeMap<String, Arc<StorageElement>>,
}

impl StorageElements {
    pub fn from_config(
        config: &BTreeMap<String, StorageElementConfig>,
        base_dir: &Path,
    ) -> Result<Self, StorageError> {
        let mut by_name = BTreeMap::new();
        for (name, sec) in config {
            by_name.insert(
                name.clone(),
                Arc::new(StorageElement::new(name, sec, base_dir)?),
            );
        }
        Ok(StorageElements { by_name })
    }

    pub fn insert(&mut self, se: StorageElement) {
        self.by_name.insert(se.name.clone(), Arc::new(se));
    }

    pub fn get(&self, name: &str) -> Result<Arc<StorageElement>, StorageError> {
        self.by_name
            .get(name)
            .cloned()
            .ok_or_else(|| StorageError::Invalid(format!("unknown storage element '{name}'")))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<StorageElement>> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::FilePlugin;

    #[tokio::test]
    async fn replication_streams_through_and_checks_the_checksum() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = StorageElement::with_plugin("A", Arc::new(FilePlugin::new(dir.path().join("a"))));
        let b = StorageElement::with_plugin("B", Arc::new(FilePlugin::new(dir.path().join("b"))));
        let local = dir.path().join("f");
        std::fs::write(&local, b"payload").expect("write");
        let stat = a.put("/vo/f", &local, None).await.expect("put");
        let sum = stat.adler32.clone().expect("sum");
        let copied = replicate(&a, &b, "/vo/f", Some(&sum), dir.path())
            .await
            .expect("copy");
        assert_eq!(copied, (stat, false));
        assert_eq!(
            std::fs::read(dir.path().join("b/vo/f")).expect("read"),
            b"payload"
        );
        // A wrong expectation leaves nothing at the destination.
        let err = replicate(&a, &b, "/vo/f", Some("00000002"), dir.path()).await;
        assert!(matches!(err, Err(StorageError::Checksum { .. })), "{err:?}");
        let err = a.put("/vo/g", &local, Some("00000002")).await;
        assert!(matches!(err, Err(StorageError::Checksum { .. })), "{err:?}");
        assert_eq!(
            a.stat("/vo/g").await.expect("stat"),
            None,
            "a bad upload is removed"
        );
    }

    #[test]
    fn banned_and_unknown_protocols_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut config = StorageElementConfig {
            protocols: vec![SeProtocolConfig {
                protocol: "file".into(),
                ..Default::default()
            }],
            write_access: SeAccess::Banned,
            ..Default::default()
        };
        let se = StorageElement::new("SE-1", &config, dir.path()).expect("se");
        assert!(se.reader().is_ok());
        let err = se.writer().err().expect("banned");
        assert!(err.to_string().contains("banned for writing"), "{err}");
        config.protocols[0].protocol = "gsiftp".into();
        // (validation refuses it earlier; the plugin table does too)
        let err = StorageElement::new("SE-1", &config, dir.path()).expect_err("unknown");
        assert!(err.to_string().contains("gsiftp"), "{err}");
    }
}
