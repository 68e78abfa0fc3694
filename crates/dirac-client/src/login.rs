//! `dirac login`: the OAuth2 device flow (RFC 8628) against the
//! installation's AuthServer, and the credentials it leaves in
//! `~/.config/dirac/credentials.json` (mode 0600). Access tokens are
//! refreshed transparently (rotating refresh tokens) when they are about to
//! expire. Works in a terminal without a browser: the user opens the printed
//! URL anywhere.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Env;

/// Client id of the command-line client.
pub const CLIENT_ID: &str = "dirac-cli";
/// Refresh when the access token expires within this many seconds.
const REFRESH_MARGIN_S: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("cannot reach the authorization server at {url}: {message}")]
    Http { url: String, message: String },
    /// An OAuth error answer (`invalid_scope`, `expired_token`, …).
    #[error("{error}: {description}")]
    OAuth { error: String, description: String },
    #[error("unexpected answer from {url}: {message}")]
    Protocol { url: String, message: String },
    #[error("credentials file {}: {message}", path.display())]
    Credentials { path: PathBuf, message: String },
}

/// Tokens of a login, as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The gRPC server these tokens are for.
    pub url: String,
    pub auth_url: String,
    pub access_token: String,
    pub refresh_token: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub scope: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("url", &self.url)
            .field("auth_url", &self.auth_url)
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// `$XDG_CONFIG_HOME/dirac/credentials.json`, else under `$HOME/.config`.
pub fn credentials_path(env: &dyn Env) -> Option<PathBuf> {
    crate::config::default_config_path(env).map(|p| p.with_file_name("credentials.json"))
}

impl Credentials {
    pub fn load(path: &Path) -> Result<Option<Self>, LoginError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|e| LoginError::Credentials {
                        path: path.into(),
                        message: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LoginError::Credentials {
                path: path.into(),
                message: e.to_string(),
            }),
        }
    }

    /// Write with mode 0600 (created fresh, so the mode always holds).
    pub fn save(&self, path: &Path) -> Result<(), LoginError> {
        use std::io::Write as _;
        let fail = |e: std::io::Error| LoginError::Credentials {
            path: path.into(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let tmp = path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let text =
            serde_json::to_string_pretty(self).map_err(|e| fail(std::io::Error::other(e)))?;
        options
            .open(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }

    /// The access token, refreshed first when it is about to expire.
    pub fn fresh_access_token(
        &mut self,
        path: &Path,
        ca_cert: Option<&Path>,
    ) -> Result<String, LoginError> {
        if self.expires_at - now() > REFRESH_MARGIN_S {
            return Ok(self.access_token.clone());
        }
        let tokens = AuthHttp::new(&self.auth_url, ca_cert)?.refresh(&self.refresh_token)?;
        self.access_token = tokens.access_token;
        self.refresh_token = tokens.refresh_token;
        self.expires_at = now() + tokens.expires_in;
        self.save(path)?;
        Ok(self.access_token.clone())
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The start of a device flow.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceStart {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    #[serde(default = "default_interval")]
    pub interval: u64,
}

fn default_interval() -> u64 {
    5
}

/// A token endpoint answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
    #[serde(default)]
    pub scope: String,
}

/// One poll of the token endpoint.
#[derive(Debug)]
pub enum Poll {
    Pending,
    SlowDown,
    Done(TokenResponse),
}

/// The AuthServer's HTTP endpoints at one base URL, trusting `ca_cert`
/// (the client configuration's) instead of the system roots when given.
pub struct AuthHttp {
    base: String,
    agent: ureq::Agent,
}

impl AuthHttp {
    pub fn new(auth_url: &str, ca_cert: Option<&Path>) -> Result<Self, LoginError> {
        let base = auth_url.trim_end_matches('/').to_string();
        let mut config = ureq::Agent::config_builder().http_status_as_error(false);
        if let Some(ca) = ca_cert {
            let roots = crate::tls::ca_roots(ca).map_err(|message| LoginError::Http {
                url: base.clone(),
                message,
            })?;
            config = config.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build());
        }
        Ok(AuthHttp {
            base,
            agent: config.build().into(),
        })
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The body of a 2xx answer, or the OAuth error of a 4xx one.
    fn answer(
        url: &str,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        ok: impl Fn(u16) -> bool,
    ) -> Result<String, LoginError> {
        let http = |e: ureq::Error| LoginError::Http {
            url: url.into(),
            message: e.to_string(),
        };
        let mut response = sent.map_err(http)?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().map_err(http)?;
        if ok(status) {
            return Ok(body);
        }
        Err(oauth_error(url, status, &body))
    }

    fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Result<String, LoginError> {
        let url = self.endpoint(path);
        let sent = self.agent.post(&url).send_form(form.iter().copied());
        Self::answer(&url, sent, |s| (200..300).contains(&s))
    }

    pub fn start_device(&self, scope: &str) -> Result<DeviceStart, LoginError> {
        let body = self.post_form(
            "/api/auth/device",
            &[("client_id", CLIENT_ID), ("scope", scope)],
        )?;
        parse(&self.endpoint("/api/auth/device"), &body)
    }

    pub fn poll_device(&self, device_code: &str) -> Result<Poll, LoginError> {
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
            ("client_id", CLIENT_ID),
        ];
        match self.post_form("/api/auth/token", &form) {
            Ok(body) => Ok(Poll::Done(parse(&self.endpoint("/api/auth/token"), &body)?)),
            Err(LoginError::OAuth { error, .. }) if error == "authorization_pending" => {
                Ok(Poll::Pending)
            }
            Err(LoginError::OAuth { error, .. }) if error == "slow_down" => Ok(Poll::SlowDown),
            Err(e) => Err(e),
        }
    }

    pub fn refresh(&self, refresh_token: &str) -> Result<TokenResponse, LoginError> {
        let body = self.post_form(
            "/api/auth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", CLIENT_ID),
            ],
        )?;
        parse(&self.endpoint("/api/auth/token"), &body)
    }

    pub fn revoke(&self, token: &str) -> Result<(), LoginError> {
        self.post_form(
            "/api/auth/revoke",
            &[("token", token), ("client_id", CLIENT_ID)],
        )
        .map(|_| ())
    }

    /// A pilot's one-time secret, exchanged for a short GenericPilot token.
    pub fn pilot_token(&self, secret: &str, stamp: &str, site: &str) -> Result<String, LoginError> {
        let body = self.post_form(
            "/api/auth/token",
            &[
                (
                    "grant_type",
                    "urn:dirac:params:oauth:grant-type:pilot-secret",
                ),
                ("pilot_secret", secret),
                ("pilot_stamp", stamp),
                ("site", site),
            ],
        )?;
        let url = self.endpoint("/api/auth/token");
        let v: serde_json::Value = parse(&url, &body)?;
        v["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| LoginError::Protocol {
                url,
                message: "no access_token in the answer".into(),
            })
    }

    /// Who the access token says the caller is.
    pub fn userinfo(&self, access_token: &str) -> Result<serde_json::Value, LoginError> {
        let url = self.endpoint("/api/auth/userinfo");
        let sent = self
            .agent
            .get(&url)
            .header("authorization", &format!("Bearer {access_token}"))
            .call();
        let body = Self::answer(&url, sent, |s| s == 200)?;
        parse(&url, &body)
    }
}

fn oauth_error(url: &str, status: u16, body: &str) -> LoginError {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) if v["error"].is_string() => LoginError::OAuth {
            error: v["error"].as_str().unwrap_or_default().to_string(),
            description: v["error_description"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        },
        _ => LoginError::Protocol {
            url: url.into(),
            message: format!("HTTP {status}"),
        },
    }
}

fn parse<T: serde::de::DeserializeOwned>(url: &str, body: &str) -> Result<T, LoginError> {
    serde_json::from_str(body).map_err(|e| LoginError::Protocol {
        url: url.into(),
        message: e.to_string(),
    })
}

/// The OAuth scope of a login: `vo:<vo>` and optionally `group:<g>`.
pub fn scope(vo: &str, group: Option<&str>) -> String {
    match group {
        Some(g) => format!("vo:{vo} group:{g}"),
        None => format!("vo:{vo}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_with_private_mode() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("dirac").join("credentials.json");
        let creds = Credentials {
            url: "http://127.0.0.1:8080".into(),
            auth_url: "http://127.0.0.1:8081".into(),
            access_token: "a".into(),
            refresh_token: "r".into(),
            expires_at: now() + 3600,
            scope: "vo:dteam".into(),
        };
        creds.save(&path).expect("save");
        assert_eq!(Credentials::load(&path).expect("load"), Some(creds.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(
            !format!("{creds:?}").contains("refresh_token: \"r\""),
            "debug hides tokens"
        );
        assert_eq!(
            Credentials::load(&dir.path().join("none.json")).expect("load"),
            None
        );
        assert_eq!(
            scope("dteam", Some("dteam_admin")),
            "vo:dteam group:dteam_admin"
        );
    }
}
