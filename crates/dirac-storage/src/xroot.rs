//! The `root` plugin: an XRootD endpoint (EOS, dCache, DPM, XRootD
//! servers), driven through the XRootD project's own `xrdcp` and `xrdfs`
//! tools (ADR 0008: no maintained Rust client of the protocol exists, and
//! the tools are what every grid site supports). Uploads carry the Adler32
//! computed locally and the server verifies it (`--cksum adler32:<value>`);
//! replication between two XRootD endpoints is third-party
//! (`--tpc first`: storage to storage when the servers can, streamed
//! through otherwise). `xrdcp` makes missing parent directories itself.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use crate::{Occupancy, Stat, StorageError, StoragePlugin, check_lfn, checksum};

/// Longest a single `xrdfs` query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a transfer may take (a few GiB at a slow site).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

pub struct XrootPlugin {
    /// `host:port`.
    authority: String,
    /// Export prefix without a trailing slash (`/eos/dteam/grid`).
    base: String,
    /// A WLCG bearer token for the server (XRootD's ztn), as a file the
    /// client reads (`BEARER_TOKEN_FILE`).
    token_file: Option<std::path::PathBuf>,
}

/// What an xrd tool said.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl XrootPlugin {
    /// Authenticate with the bearer token in `file` (read by the client
    /// tools at each transfer, so it may be rotated).
    pub fn with_token_file(mut self, file: Option<std::path::PathBuf>) -> Self {
        self.token_file = file;
        self
    }

    pub fn new(host: &str, port: Option<u16>, path: &str) -> Self {
        XrootPlugin {
            authority: format!("{host}:{}", port.unwrap_or(1094)),
            base: format!("/{}", path.trim_matches('/'))
                .trim_end_matches('/')
                .to_string(),
            token_file: None,
        }
    }

    fn remote_path(&self, lfn: &str) -> Result<String, StorageError> {
        check_lfn(lfn)?;
        Ok(format!("{}{lfn}", self.base))
    }

    async fn run(
        &self,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Ran, StorageError> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .kill_on_drop(true)
            // Fail fast on a dead server instead of retrying for minutes.
            .env("XRD_CONNECTIONRETRY", "1")
            .env("XRD_CONNECTIONWINDOW", "5")
            .env("XRD_REQUESTTIMEOUT", "120")
            .env("XRD_STREAMTIMEOUT", "120");
        if let Some(f) = &self.token_file {
            cmd.env("BEARER_TOKEN_FILE", f);
        }
        let out = tokio::time::timeout(timeout, cmd.output())
            .await
            .map_err(|_| {
                StorageError::Unavailable(format!("{program} on {} timed out", self.authority))
            })?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => StorageError::Unsupported(format!(
                    "{program} is not installed (Debian package xrootd-client)"
                )),
                _ => StorageError::Unavailable(format!("{program}: {e}")),
            })?;
        Ok(Ran {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        })
    }

    /// An xrd tool's failure as a storage error.
    fn failure(&self, url: &str, ran: &Ran) -> StorageError {
        // The server's messages end in a NUL byte.
        let text = format!("{}{}", ran.stderr, ran.stdout).replace('\0', "");
        let line = text
            .lines()
            .find(|l| l.contains("ERROR") || l.contains("rror"))
            .unwrap_or_else(|| text.lines().next().unwrap_or("failed"))
            .trim()
            .to_string();
        if missing(&text) {
            StorageError::NotFound(url.to_string())
        } else if text.contains("[3010]")
            || text.contains("ermission denied")
            || text.contains("[3006]") && text.contains("denied")
        {
            StorageError::PermissionDenied(url.to_string())
        } else if text.contains("[3021]") || text.contains("o space left") {
            StorageError::NoSpace(url.to_string())
        } else if text.to_ascii_lowercase().contains("checksum") && text.contains("mismatch") {
            StorageError::Checksum {
                url: url.to_string(),
                expected: String::new(),
                got: line,
            }
        } else {
            StorageError::Unavailable(format!("{url}: {line}"))
        }
    }
}

/// "No such file or directory" in any of the forms the tools print.
fn missing(text: &str) -> bool {
    text.contains("[3011]") || text.contains("No such file") || text.contains("no such file")
}

/// The `Size:` of an `xrdfs stat` answer.
fn parse_stat_size(out: &str) -> Option<u64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Size:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The value of `adler32 <hex>` in an `xrdfs query checksum` answer.
fn parse_checksum(out: &str) -> Option<String> {
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w.eq_ignore_ascii_case("adler32") {
            return words
                .next()
                .map(|v| format!("{:0>8}", v.to_ascii_lowercase()));
        }
    }
    None
}

/// `Total:` and `Free:` of an `xrdfs spaceinfo` answer.
fn parse_space(out: &str) -> Option<Occupancy> {
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    Some(Occupancy {
        total: field("Total:")?,
        free: field("Free:")?,
    })
}

#[async_trait::async_trait]
impl StoragePlugin for XrootPlugin {
    fn protocol(&self) -> &'static str {
        "root"
    }

    fn url(&self, lfn: &str) -> String {
        format!("root://{}/{}{lfn}", self.authority, self.base)
    }

    async fn put(&self, lfn: &str, local: &Path) -> Result<Stat, StorageError> {
        self.remote_path(lfn)?;
        let url = self.url(lfn);
        let (size, adler32) = checksum::of_file(local)
            .await
            .map_err(|e| StorageError::Invalid(format!("{}: {e}", local.display())))?;
        let local_s = local.to_string_lossy().to_string();
        let cksum = format!("adler32:{adler32}");
        let ran = self
            .run(
                "xrdcp",
                &[
                    "--force", "--path", "--nopbar", "--cksum", &cksum, &local_s, &url,
                ],
                TRANSFER_TIMEOUT,
            )
            .await?;
        if !ran.ok {
            // xrdcp removes a destination that failed verification; make
            // sure nothing half-written stays.
            let _ = self.remove(lfn).await;
            return Err(self.failure(&url, &ran));
        }
        Ok(Stat {
            size,
            adler32: Some(adler32),
        })
    }

    async fn get(&self, lfn: &str, local: &Path) -> Result<Stat, StorageError> {
        self.remote_path(lfn)?;
        let url = self.url(lfn);
        let local_s = local.to_string_lossy().to_string();
        let ran = self
            .run(
                "xrdcp",
                &["--force", "--nopbar", &url, &local_s],
                TRANSFER_TIMEOUT,
            )
            .await?;
        if !ran.ok {
            let _ = tokio::fs::remove_file(local).await;
            return Err(self.failure(&url, &ran));
        }
        let (size, adler32) = checksum::of_file(local)
            .await
            .map_err(|e| StorageError::Invalid(format!("{}: {e}", local.display())))?;
        Ok(Stat {
            size,
            adler32: Some(adler32),
        })
    }

    async fn remove(&self, lfn: &str) -> Result<(), StorageError> {
        let path = self.remote_path(lfn)?;
        let ran = self
            .run("xrdfs", &[&self.authority, "rm", &path], QUERY_TIMEOUT)
            .await?;
        if ran.ok || missing(&format!("{}{}", ran.stderr, ran.stdout)) {
            Ok(())
        } else {
            Err(self.failure(&self.url(lfn), &ran))
        }
    }

    async fn stat(&self, lfn: &str) -> Result<Option<Stat>, StorageError> {
        let path = self.remote_path(lfn)?;
        let ran = self
            .run("xrdfs", &[&self.authority, "stat", &path], QUERY_TIMEOUT)
            .await?;
        if !ran.ok {
            if missing(&format!("{}{}", ran.stderr, ran.stdout)) {
                return Ok(None);
            }
            return Err(self.failure(&self.url(lfn), &ran));
        }
        let size = parse_stat_size(&ran.stdout).ok_or_else(|| {
            StorageError::Unavailable(format!("{}: no size in the stat answer", self.url(lfn)))
        })?;
        // The server computes Adler32 when configured to; it is cheap there.
        let sum = self
            .run(
                "xrdfs",
                &[&self.authority, "query", "checksum", &path],
                QUERY_TIMEOUT,
            )
            .await
            .ok()
            .filter(|r| r.ok)
            .and_then(|r| parse_checksum(&r.stdout));
        Ok(Some(Stat { size, adler32: sum }))
    }

    async fn occupancy(&self) -> Result<Option<Occupancy>, StorageError> {
        let base = if self.base.is_empty() {
            "/".to_string()
        } else {
            self.base.clone()
        };
        let ran = self
            .run(
                "xrdfs",
                &[&self.authority, "spaceinfo", &base],
                QUERY_TIMEOUT,
            )
            .await?;
        Ok(if ran.ok {
            parse_space(&ran.stdout)
        } else {
            None
        })
    }

    fn third_party_sources(&self) -> &'static [&'static str] {
        &["root"]
    }

    async fn copy_from(&self, lfn: &str, source_url: &str) -> Result<Stat, StorageError> {
        self.remote_path(lfn)?;
        let url = self.url(lfn);
        let ran = self
            .run(
                "xrdcp",
                &[
                    "--force", "--path", "--nopbar", "--tpc", "first", "--cksum", "adler32",
                    source_url, &url,
                ],
                TRANSFER_TIMEOUT,
            )
            .await?;
        if !ran.ok {
            let _ = self.remove(lfn).await;
            return Err(self.failure(&url, &ran));
        }
        self.stat(lfn)
            .await?
            .ok_or_else(|| StorageError::Unavailable(format!("{url}: the copy is not there")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed() {
        let stat = "Path:   /data/a\nId:     0\nSize:   1048576\nMTime:  2024-01-01 00:00:00\nFlags:  16 (IsReadable)\n";
        assert_eq!(parse_stat_size(stat), Some(1_048_576));
        assert_eq!(
            parse_checksum("adler32 0a1b2c3d\n").as_deref(),
            Some("0a1b2c3d")
        );
        assert_eq!(
            parse_checksum("adler32 1b2c3d /data/a").as_deref(),
            Some("001b2c3d")
        );
        let space = "Path:               /\nTotal:              100\nFree:               40\nUsed:               60\nLargest free chunk: 40\n";
        assert_eq!(
            parse_space(space),
            Some(Occupancy {
                total: 100,
                free: 40
            })
        );
        let p = XrootPlugin::new("eos.example.org", None, "/eos/dteam/");
        assert_eq!(
            p.url("/dteam/f"),
            "root://eos.example.org:1094//eos/dteam/dteam/f"
        );
        assert!(missing(
            "[ERROR] Server responded with an error: [3011] No such file or directory"
        ));
    }
}
