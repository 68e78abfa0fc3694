//! A small JSON-over-HTTPS client for the REST connectors (ARC, OpenStack):
//! ureq with rustls on tokio's blocking pool, an optional private CA and
//! client certificate, and timeouts so that a CE that hangs cannot hold the
//! director.

use std::path::Path;
use std::time::Duration;

use crate::CeError;

#[derive(Clone)]
pub struct HttpClient {
    agent: ureq::Agent,
}

/// An answer: status, headers we care about, body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Result<serde_json::Value, CeError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CeError::Failed(format!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            ))
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, CeError> {
    std::fs::read(path).map_err(|e| CeError::Config(format!("{what} {}: {e}", path.display())))
}

impl HttpClient {
    /// `ca`: PEM bundle to trust instead of the system roots; `cert`/`key`:
    /// a client certificate (PEM; they may be the same file).
    pub fn new(
        ca: Option<&Path>,
        cert: Option<(&Path, &Path)>,
        timeout: Duration,
    ) -> Result<Self, CeError> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = ca {
            let pem = read_pem(ca, "CA file")?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(CeError::Config(format!(
                    "CA file {} holds no certificate",
                    ca.display()
                )));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        if let Some((cert, key)) = cert {
            let pem = read_pem(cert, "client certificate")?;
            let chain: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            let key_pem = read_pem(key, "client key")?;
            let key = ureq::tls::parse_pem(&key_pem)
                .find_map(|item| match item {
                    Ok(ureq::tls::PemItem::PrivateKey(k)) => Some(k),
                    _ => None,
                })
                .ok_or_else(|| {
                    CeError::Config(format!("{} holds no private key", key.display()))
                })?;
            if chain.is_empty() {
                return Err(CeError::Config(format!(
                    "{} holds no certificate",
                    cert.display()
                )));
            }
            tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Ok(HttpClient { agent })
    }

    /// One request; transport failures are `Unreachable`.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Reply, CeError> {
        let mut request = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(())
            .map_err(|e| CeError::Config(format!("request to {url}: {e}")))?;
        let agent = self.agent.clone();
        let url = url.to_string();
        tokio::task::spawn_blocking(move || {
            let response = match body {
                Some(b) => agent.run(request.map(|()| b)),
                None => agent.run(request),
            }
            .map_err(|e| CeError::Unreachable(format!("{url}: {e}")))?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                .collect();
            let body = response
                .into_body()
                .with_config()
                .limit(16 << 20)
                .read_to_vec()
                .map_err(|e| CeError::Unreachable(format!("{url}: {e}")))?;
            Ok(Reply {
                status,
                headers,
                body,
            })
        })
        .await
        .map_err(|e| CeError::Unreachable(format!("request task: {e}")))?
    }

    pub async fn json(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> Result<Reply, CeError> {
        let mut h = headers.to_vec();
        h.push(("content-type", "application/json"));
        h.push(("accept", "application/json"));
        self.send(method, url, &h, Some(body.to_string().into_bytes()))
            .await
    }
}
