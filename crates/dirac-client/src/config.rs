//! Where the client finds its server URL, token and CA certificate.
//!
//! Order, later wins: a YAML file (`--config`, else `$DIRAC_CONFIG`, else the
//! default path if it exists), then `DIRAC_URL` / `DIRAC_TOKEN`, then the
//! command-line flags.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ClientError;

/// Environment variable naming the config file.
const ENV_CONFIG: &str = "DIRAC_CONFIG";
/// Environment variable overriding `url`.
const ENV_URL: &str = "DIRAC_URL";
/// Environment variable overriding `token`.
const ENV_TOKEN: &str = "DIRAC_TOKEN";

/// Read access to environment variables, injectable so that tests never touch
/// the process environment.
pub trait Env {
    /// The value of `key`, `None` when unset or not valid unicode.
    fn var(&self, key: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// A fixed set of variables, for tests and embedding.
#[derive(Debug, Clone, Default)]
pub struct MapEnv(pub HashMap<String, String>);

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for MapEnv {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl Env for MapEnv {
    fn var(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}

/// A variable that is set and not blank.
fn non_empty(env: &dyn Env, key: &str) -> Option<String> {
    env.var(key)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// `$XDG_CONFIG_HOME/dirac/config.yaml`, else `$HOME/.config/dirac/config.yaml`.
pub fn default_config_path(env: &dyn Env) -> Option<PathBuf> {
    if let Some(dir) = non_empty(env, "XDG_CONFIG_HOME") {
        return Some(PathBuf::from(dir).join("dirac").join("config.yaml"));
    }
    non_empty(env, "HOME").map(|home| {
        PathBuf::from(home)
            .join(".config")
            .join("dirac")
            .join("config.yaml")
    })
}

/// How to reach a server. The file the server writes (`client.yaml`) has the
/// keys `url` and `token`; `ca_cert` is optional and, when relative, taken
/// relative to the file that names it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// `http://host:port` or `https://host:port`.
    #[serde(default)]
    pub url: String,
    /// Bearer token (a JWT) sent with every call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// PEM file of the CA that signed the server certificate (https only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Base URL of the AuthServer's HTTP endpoints (`dirac login`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_url: Option<String>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert)
            .field("auth_url", &self.auth_url)
            .finish()
    }
}

/// The file to read and whether it must exist.
fn config_file(explicit_path: Option<&Path>, env: &dyn Env) -> Option<(PathBuf, bool)> {
    if let Some(path) = explicit_path {
        return Some((path.to_owned(), true));
    }
    if let Some(path) = non_empty(env, ENV_CONFIG) {
        return Some((PathBuf::from(path), true));
    }
    default_config_path(env).map(|p| (p, false))
}

impl ClientConfig {
    /// Reads one YAML file. An empty file is an empty config.
    pub fn from_file(path: &Path) -> Result<Self, ClientError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ClientError::ConfigMissing {
                    path: path.to_owned(),
                }
            } else {
                ClientError::ConfigRead {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let mut config = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_yaml_ng::from_str::<Self>(&text).map_err(|source| ClientError::ConfigParse {
                path: path.to_owned(),
                source,
            })?
        };
        if let Some(ca) = &config.ca_cert
            && ca.is_relative()
            && let Some(dir) = path.parent()
        {
            config.ca_cert = Some(dir.join(ca));
        }
        Ok(config)
    }

    /// Reads the config file (`explicit_path`, else `$DIRAC_CONFIG`, else the
    /// default path when it exists) and applies `DIRAC_URL` / `DIRAC_TOKEN`.
    ///
    /// The URL may still be empty afterwards; [`ClientConfig::resolve`] also
    /// checks that one is configured.
    pub fn load(explicit_path: Option<&Path>, env: &dyn Env) -> Result<Self, ClientError> {
        let mut config = match config_file(explicit_path, env) {
            Some((path, true)) => Self::from_file(&path)?,
            Some((path, false)) if path.is_file() => Self::from_file(&path)?,
            _ => Self::default(),
        };
        if let Some(url) = non_empty(env, ENV_URL) {
            config.url = url;
        }
        if let Some(token) = non_empty(env, ENV_TOKEN) {
            config.token = Some(token);
        }
        Ok(config)
    }

    /// Replaces the values given explicitly (command-line flags).
    #[must_use]
    pub fn with_overrides(mut self, url: Option<String>, token: Option<String>) -> Self {
        if let Some(url) = url {
            self.url = url;
        }
        if let Some(token) = token {
            self.token = Some(token);
        }
        self
    }

    /// [`ClientConfig::load`], then the flags, then a check that a URL is set;
    /// what the CLI and the benchmark call.
    pub fn resolve(
        explicit_path: Option<&Path>,
        env: &dyn Env,
        url: Option<String>,
        token: Option<String>,
    ) -> Result<Self, ClientError> {
        let explicit_token = token.is_some() || non_empty(env, ENV_TOKEN).is_some();
        let mut config = Self::load(explicit_path, env)?.with_overrides(url, token);
        let where_ = config_file(explicit_path, env).map_or_else(
            || "~/.config/dirac/config.yaml".to_owned(),
            |(p, _)| p.display().to_string(),
        );
        config.check(&where_)?;
        // A `dirac login` for this server wins over a token in the file;
        // a token given as a flag or in DIRAC_TOKEN wins over both.
        if !explicit_token
            && let Some(path) = crate::login::credentials_path(env)
            && let Some(mut creds) =
                crate::login::Credentials::load(&path).map_err(ClientError::Login)?
            && creds.url == config.url
        {
            config.token = Some(
                creds
                    .fresh_access_token(&path, config.ca_cert.as_deref())
                    .map_err(ClientError::Login)?,
            );
        }
        Ok(config)
    }

    /// Checks that the URL is set and looks like `http(s)://host[:port]`.
    pub fn validate(&self) -> Result<(), ClientError> {
        self.check("~/.config/dirac/config.yaml")
    }

    fn check(&self, config_path: &str) -> Result<(), ClientError> {
        let url = self.url.trim();
        if url.is_empty() {
            return Err(ClientError::NoUrl {
                path: config_path.to_owned(),
            });
        }
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| ClientError::InvalidUrl {
                url: url.to_owned(),
                reason: "it must start with http:// or https://".to_owned(),
            })?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(ClientError::InvalidUrl {
                url: url.to_owned(),
                reason: "no host".to_owned(),
            });
        }
        Ok(())
    }

    /// Whether the URL asks for TLS.
    pub fn is_tls(&self) -> bool {
        self.url.trim().starts_with("https://")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write test file");
        path
    }

    /// The message and its causes, as `anyhow`'s `{:#}` prints them.
    fn chain(err: &ClientError) -> String {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    fn home_env(home: &Path, extra: &[(&str, &str)]) -> MapEnv {
        let mut env: MapEnv = extra.iter().copied().collect();
        env.0.insert("HOME".to_owned(), home.display().to_string());
        env
    }

    #[test]
    fn server_written_file_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(
            dir.path(),
            "client.yaml",
            "url: http://127.0.0.1:8443\ntoken: abc.def.ghi\n",
        );
        let cfg = ClientConfig::load(Some(&path), &MapEnv::default()).expect("load");
        assert_eq!(cfg.url, "http://127.0.0.1:8443");
        assert_eq!(cfg.token.as_deref(), Some("abc.def.ghi"));
        assert_eq!(cfg.ca_cert, None);
    }

    #[test]
    fn precedence_file_then_env_then_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "c.yaml", "url: http://file:1\ntoken: file\n");
        let env: MapEnv = [("DIRAC_URL", "http://env:2")].into_iter().collect();
        let cfg = ClientConfig::load(Some(&path), &env).expect("load");
        assert_eq!(cfg.url, "http://env:2");
        assert_eq!(cfg.token.as_deref(), Some("file"));
        let cfg = cfg.with_overrides(None, Some("flag".to_owned()));
        assert_eq!(cfg.url, "http://env:2");
        assert_eq!(cfg.token.as_deref(), Some("flag"));
    }

    #[test]
    fn dirac_config_env_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "c.yaml", "url: https://x:3\nca_cert: ca.pem\n");
        let env: MapEnv = [("DIRAC_CONFIG", path.display().to_string())]
            .into_iter()
            .collect();
        let cfg = ClientConfig::load(None, &env).expect("load");
        assert_eq!(cfg.url, "https://x:3");
        assert_eq!(cfg.ca_cert, Some(dir.path().join("ca.pem")));
    }

    #[test]
    fn default_path_is_optional() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = home_env(dir.path(), &[]);
        let cfg = ClientConfig::load(None, &env).expect("load");
        assert_eq!(cfg, ClientConfig::default());

        let cfg_dir = dir.path().join(".config").join("dirac");
        std::fs::create_dir_all(&cfg_dir).expect("mkdir");
        write(&cfg_dir, "config.yaml", "url: http://home:4\n");
        let cfg = ClientConfig::load(None, &env).expect("load");
        assert_eq!(cfg.url, "http://home:4");
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nope.yaml");
        let err = ClientConfig::load(Some(&path), &MapEnv::default()).expect_err("missing");
        let msg = err.to_string();
        assert!(
            msg.contains("nope.yaml") && msg.contains("does not exist"),
            "{msg}"
        );
    }

    #[test]
    fn bad_yaml_names_file_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "bad.yaml", "url: http://x:1\ntokne: t\n");
        let msg =
            chain(&ClientConfig::load(Some(&path), &MapEnv::default()).expect_err("unknown key"));
        assert!(msg.contains("bad.yaml") && msg.contains("tokne"), "{msg}");

        let path = write(dir.path(), "worse.yaml", "url: [\n");
        let msg = ClientConfig::load(Some(&path), &MapEnv::default())
            .expect_err("bad yaml")
            .to_string();
        assert!(msg.contains("worse.yaml"), "{msg}");
    }

    #[test]
    fn no_url_error_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "empty.yaml", "");
        let msg = ClientConfig::resolve(Some(&path), &MapEnv::default(), None, None)
            .expect_err("no url")
            .to_string();
        assert_eq!(
            msg,
            format!(
                "no server url: pass --url, set DIRAC_URL or write url: in {}",
                path.display()
            )
        );
        let cfg = ClientConfig::resolve(
            Some(&path),
            &MapEnv::default(),
            Some("http://flag:5".to_owned()),
            None,
        )
        .expect("flag url");
        assert_eq!(cfg.url, "http://flag:5");
    }

    #[test]
    fn bad_url_scheme_is_rejected() {
        let cfg = ClientConfig {
            url: "ftp://x".to_owned(),
            ..ClientConfig::default()
        };
        let msg = cfg.validate().expect_err("scheme").to_string();
        assert!(msg.contains("http://"), "{msg}");
    }

    #[test]
    fn debug_hides_the_token() {
        let cfg = ClientConfig {
            url: "http://x:1".to_owned(),
            token: Some("secret-token".to_owned()),
            ca_cert: None,
            auth_url: None,
        };
        assert!(!format!("{cfg:?}").contains("secret-token"));
    }
}
