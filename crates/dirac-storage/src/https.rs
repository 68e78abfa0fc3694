//! The `https` plugin: an HTTPS/WebDAV endpoint (dCache, EOS, StoRM,
//! XRootD's HTTP, nginx or Apache with DAV). PUT streams the file from disk
//! (the Adler32 is computed on the way), GET streams it back, HEAD gives
//! the size, DELETE removes; parent collections are made with MKCOL when
//! the server does not make them itself (409 Conflict). Blocking HTTP
//! (ureq, rustls) on tokio's blocking pool: one transfer per call.

use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::{Adler32, Stat, StorageError, StoragePlugin, check_lfn};

pub struct HttpsPlugin {
    /// `https://host:port/base` without a trailing slash.
    base: String,
    agent: ureq::Agent,
}

/// Reads through, keeping a running Adler32 and byte count.
struct Summing<R> {
    inner: R,
    sum: Arc<std::sync::Mutex<(Adler32, u64)>>,
}

impl<R: Read> Read for Summing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut s) = self.sum.lock() {
            s.0.update(&buf[..n]);
            s.1 += n as u64;
        }
        Ok(n)
    }
}

impl HttpsPlugin {
    /// `ca_file`: a PEM bundle of CAs to trust instead of the public roots.
    pub fn new(
        host: &str,
        port: Option<u16>,
        path: &str,
        ca_file: Option<&Path>,
    ) -> Result<Self, StorageError> {
        Self::with_token(host, port, path, ca_file, None)
    }

    /// With a bearer token read from `token_file` for every request (the
    /// file may be rotated underneath).
    pub fn with_token(
        host: &str,
        port: Option<u16>,
        path: &str,
        ca_file: Option<&Path>,
        token_file: Option<&Path>,
    ) -> Result<Self, StorageError> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| StorageError::Invalid(format!("CA file {}: {e}", ca.display())))?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(StorageError::Invalid(format!(
                    "CA file {} holds no certificate",
                    ca.display()
                )));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let mut config = ureq::Agent::config_builder();
        if let Some(file) = token_file {
            let file = file.to_path_buf();
            config = config.middleware(
                move |mut request: ureq::http::Request<ureq::SendBody>,
                      next: ureq::middleware::MiddlewareNext| {
                    let token = read_token(&file).map_err(ureq::Error::Io)?;
                    let value = ureq::http::HeaderValue::from_str(&format!("Bearer {token}"))
                        .map_err(|e| ureq::Error::Io(std::io::Error::other(e)))?;
                    request
                        .headers_mut()
                        .insert(ureq::http::header::AUTHORIZATION, value);
                    next.handle(request)
                },
            );
        }
        let agent: ureq::Agent = config
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            // A transfer may take long; a stalled one does not.
            .timeout_recv_body(Some(Duration::from_secs(300)))
            .timeout_send_body(Some(Duration::from_secs(300)))
            .build()
            .into();
        let authority = match port {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let path = path.trim_matches('/');
        let base = if path.is_empty() {
            format!("https://{authority}")
        } else {
            format!("https://{authority}/{path}")
        };
        Ok(HttpsPlugin { base, agent })
    }

    fn target(&self, lfn: &str) -> Result<String, StorageError> {
        check_lfn(lfn)?;
        Ok(format!("{}{}", self.base, encode_path(lfn)))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(ureq::Agent) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let agent = self.agent.clone();
        tokio::task::spawn_blocking(move || f(agent))
            .await
            .map_err(|e| StorageError::Unavailable(format!("https transfer: {e}")))?
    }
}

/// The first line of a token file that is not empty or a comment.
pub fn read_token(file: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        std::io::Error::new(e.kind(), format!("token file {}: {e}", file.display()))
    })?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .ok_or_else(|| {
            std::io::Error::other(format!("token file {} holds no token", file.display()))
        })
}

/// Percent-encode what a URL path may not hold (components stay apart).
fn encode_path(lfn: &str) -> String {
    lfn.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn status_error(url: &str, status: u16, what: &str) -> StorageError {
    match status {
        404 => StorageError::NotFound(url.to_string()),
        401 | 403 => StorageError::PermissionDenied(url.to_string()),
        413 | 507 => StorageError::NoSpace(url.to_string()),
        _ => StorageError::Unavailable(format!("{url}: {what} answered HTTP {status}")),
    }
}

fn transport(url: &str, e: ureq::Error) -> StorageError {
    StorageError::Unavailable(format!("{url}: {e}"))
}

/// A bodiless request of any method (WebDAV's MKCOL).
fn http_request(method: &str, url: &str) -> Result<ureq::http::Request<()>, StorageError> {
    ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .body(())
        .map_err(|e| StorageError::Invalid(format!("{url}: {e}")))
}

/// MKCOL every collection above `url` below `base` (405: already there).
fn make_collections(agent: &ureq::Agent, base: &str, url: &str) -> Result<(), StorageError> {
    let rest = url.strip_prefix(base).unwrap_or_default();
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let mut cur = base.to_string();
    for part in &parts[..parts.len().saturating_sub(1)] {
        cur = format!("{cur}/{part}");
        let request = http_request("MKCOL", &format!("{cur}/"))?;
        let r = agent.run(request).map_err(|e| transport(&cur, e))?;
        let s = r.status().as_u16();
        if !(s == 201 || s == 405 || (200..300).contains(&s)) {
            return Err(status_error(&cur, s, "MKCOL"));
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl StoragePlugin for HttpsPlugin {
    fn protocol(&self) -> &'static str {
        "https"
    }

    fn url(&self, lfn: &str) -> String {
        format!("{}{}", self.base, encode_path(lfn))
    }

    async fn put(&self, lfn: &str, local: &Path) -> Result<Stat, StorageError> {
        let url = self.target(lfn)?;
        let base = self.base.clone();
        let local: PathBuf = local.to_path_buf();
        self.blocking(move |agent| {
            let send = |agent: &ureq::Agent| -> Result<(u16, (Adler32, u64)), StorageError> {
                let file = std::fs::File::open(&local)
                    .map_err(|e| StorageError::Invalid(format!("{}: {e}", local.display())))?;
                let len = file
                    .metadata()
                    .map_err(|e| StorageError::Invalid(format!("{}: {e}", local.display())))?
                    .len();
                let sum = Arc::new(std::sync::Mutex::new((Adler32::new(), 0u64)));
                let mut reader = Summing {
                    inner: std::io::BufReader::with_capacity(1 << 20, file),
                    sum: sum.clone(),
                };
                let r = agent
                    .put(&url)
                    .header("Content-Length", &len.to_string())
                    .send(ureq::SendBody::from_reader(&mut reader))
                    .map_err(|e| transport(&url, e))?;
                let got = sum.lock().map(|s| s.clone()).unwrap_or_default();
                Ok((r.status().as_u16(), got))
            };
            let (mut status, mut got) = send(&agent)?;
            if status == 409 {
                make_collections(&agent, &base, &url)?;
                (status, got) = send(&agent)?;
            }
            if !(200..300).contains(&status) {
                return Err(status_error(&url, status, "PUT"));
            }
            Ok(Stat {
                size: got.1,
                adler32: Some(got.0.hex()),
            })
        })
        .await
    }

    async fn get(&self, lfn: &str, local: &Path) -> Result<Stat, StorageError> {
        let url = self.target(lfn)?;
        let local = local.to_path_buf();
        self.blocking(move |agent| {
            let mut r = agent.get(&url).call().map_err(|e| transport(&url, e))?;
            let status = r.status().as_u16();
            if status != 200 {
                return Err(status_error(&url, status, "GET"));
            }
            let mut out = std::fs::File::create(&local)
                .map_err(|e| StorageError::Invalid(format!("{}: {e}", local.display())))?;
            let mut body = r.body_mut().with_config().limit(u64::MAX).reader();
            let mut sum = Adler32::new();
            let mut size = 0u64;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = body
                    .read(&mut buf)
                    .map_err(|e| StorageError::Unavailable(format!("{url}: {e}")))?;
                if n == 0 {
                    break;
                }
                sum.update(&buf[..n]);
                size += n as u64;
                out.write_all(&buf[..n])
                    .map_err(|e| StorageError::Invalid(format!("{}: {e}", local.display())))?;
            }
            Ok(Stat {
                size,
                adler32: Some(sum.hex()),
            })
        })
        .await
    }

    async fn remove(&self, lfn: &str) -> Result<(), StorageError> {
        let url = self.target(lfn)?;
        self.blocking(move |agent| {
            let r = agent.delete(&url).call().map_err(|e| transport(&url, e))?;
            match r.status().as_u16() {
                200..=299 | 404 => Ok(()),
                s => Err(status_error(&url, s, "DELETE")),
            }
        })
        .await
    }

    async fn stat(&self, lfn: &str) -> Result<Option<Stat>, StorageError> {
        let url = self.target(lfn)?;
        self.blocking(move |agent| {
            let r = agent.head(&url).call().map_err(|e| transport(&url, e))?;
            match r.status().as_u16() {
                404 => Ok(None),
                200..=299 => {
                    let size = r
                        .headers()
                        .get("content-length")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| {
                            StorageError::Unavailable(format!("{url}: HEAD without Content-Length"))
                        })?;
                    Ok(Some(Stat {
                        size,
                        adler32: None,
                    }))
                }
                s => Err(status_error(&url, s, "HEAD")),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_and_joined() {
        let p = HttpsPlugin::new("se.example.org", Some(8443), "/dpm/data/", None).expect("plugin");
        assert_eq!(
            p.url("/dteam/a b/c%"),
            "https://se.example.org:8443/dpm/data/dteam/a%20b/c%25"
        );
        assert!(p.target("/dteam/../x").is_err());
    }
}
