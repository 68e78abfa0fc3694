//! The TokenManager: tokens from a VO's identity provider for work that
//! runs without the user.
//!
//! - Pilot submission: client-credentials tokens with the WLCG compute
//!   scopes and the CE as audience (HTCondorCE `host:port`, ARC
//!   `https://host:port`).
//! - Work on a user's behalf: the IdP refresh token a federated login left
//!   (sealed in a [`vault::Vault`]) is refreshed into user tokens
//!   (`wlcg.groups` or entitlement scopes), and those are exchanged
//!   (RFC 8693) into storage tokens (`storage.read:/path` …) for an SE.
//!
//! Tokens are cached per (user, audience, scope) until a minute before they
//! expire.

pub mod idp;
pub mod vault;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dirac_core::config::IdpConfig;

pub use vault::{Sealer, Vault};

/// Scopes of a pilot-submission token (WLCG JWT profile).
pub const PILOT_SUBMISSION_SCOPES: &str =
    "compute.create compute.read compute.modify compute.cancel";

/// RFC 8693 names.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// WLCG storage capabilities a storage token may carry.
const STORAGE_CAPABILITIES: [&str; 4] = ["read", "create", "modify", "stage"];

/// A token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The IdP cannot be reached or answered nonsense.
    #[error("{0}")]
    Idp(String),
    /// The IdP refused (its OAuth error and description).
    #[error("the identity provider refused: {0}")]
    Refused(String),
    /// No refresh token is kept for this user: they must log in once
    /// through the identity provider.
    #[error("no identity-provider token is kept for {0}: log in with `dirac login` first")]
    NotStored(String),
    /// The vault key or a sealed token is unusable.
    #[error("token vault: {0}")]
    Vault(String),
    /// A request the TokenManager will not send.
    #[error("{0}")]
    Invalid(String),
}

/// An access token from the IdP. Its value never reaches `Debug` output.
#[derive(Clone)]
pub struct AccessToken {
    pub token: String,
    pub scope: String,
    pub expires_at: Instant,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<redacted>")
            .field("scope", &self.scope)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The audience a CE expects in its tokens, by CE type.
pub fn ce_audience(ce_type: &str, host: &str, port: u16) -> String {
    match ce_type.to_ascii_lowercase().as_str() {
        "arc" => format!("https://{host}:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// A storage scope for `path`: `storage.<capability>:<path>` with an
/// absolute path and no `..` (WLCG profile: prefixes have directory
/// semantics, so `..` would widen it).
pub fn storage_scope(capability: &str, path: &str) -> Result<String, TokenError> {
    if !STORAGE_CAPABILITIES.contains(&capability) {
        return Err(TokenError::Invalid(format!(
            "'{capability}' is not a storage capability (one of {})",
            STORAGE_CAPABILITIES.join(", ")
        )));
    }
    if !path.starts_with('/')
        || path.split('/').any(|p| p == "..")
        || path.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(TokenError::Invalid(format!(
            "'{path}' is not an absolute storage path without '..' or spaces"
        )));
    }
    Ok(format!("storage.{capability}:{path}"))
}

/// Cache key: (user or "" for the client itself, audience, scope).
type Key = (String, String, String);

/// Tokens of one VO's identity provider.
pub struct TokenManager {
    idp: IdpConfig,
    cache: Mutex<HashMap<Key, AccessToken>>,
    sealer: Option<Sealer>,
    /// One refresh at a time per user: the IdP may rotate the refresh
    /// token, and two refreshes with the same one would race.
    refreshing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl TokenManager {
    pub fn new(idp: IdpConfig) -> Self {
        TokenManager {
            idp,
            cache: Mutex::new(HashMap::new()),
            sealer: None,
            refreshing: Mutex::new(HashMap::new()),
        }
    }

    /// Keep users' refresh tokens sealed with `sealer`.
    pub fn with_sealer(mut self, sealer: Sealer) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// The identity provider this manager talks to.
    pub fn idp(&self) -> &IdpConfig {
        &self.idp
    }

    fn sealer(&self) -> Result<&Sealer, TokenError> {
        self.sealer
            .as_ref()
            .ok_or_else(|| TokenError::Vault("no vault key is configured".into()))
    }

    /// Keep `refresh_token`, the IdP's answer to `user`'s login, sealed.
    pub async fn keep_refresh_token(
        &self,
        vault: &impl Vault,
        user: &str,
        refresh_token: &str,
    ) -> Result<(), TokenError> {
        let sealed = self.sealer()?.seal(&self.idp.url, user, refresh_token)?;
        vault.save(&self.idp.url, user, &sealed).await?;
        tracing::info!(user, idp = %self.idp.url, "identity-provider refresh token kept");
        Ok(())
    }

    /// An access token of `user` from the IdP with `scope` (the VO's group
    /// claim scope when empty), for `audience` if given: the kept refresh
    /// token is refreshed, and a rotated one kept in its place.
    pub async fn user_token(
        &self,
        vault: &impl Vault,
        user: &str,
        scope: &str,
        audience: Option<&str>,
    ) -> Result<AccessToken, TokenError> {
        let scope = if scope.trim().is_empty() {
            format!("openid {}", self.idp.group_claim)
        } else {
            scope.trim().to_string()
        };
        let key = (
            user.to_string(),
            audience.unwrap_or_default().to_string(),
            scope.clone(),
        );
        if let Some(t) = self.fresh(&key) {
            return Ok(t);
        }
        let lock = self
            .refreshing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(user.to_string())
            .or_default()
            .clone();
        let _one_at_a_time = lock.lock().await;
        // Someone else may have refreshed while we waited.
        if let Some(t) = self.fresh(&key) {
            return Ok(t);
        }
        let sealed = vault
            .load(&self.idp.url, user)
            .await?
            .ok_or_else(|| TokenError::NotStored(user.to_string()))?;
        let refresh = self.sealer()?.open(&self.idp.url, user, &sealed)?;
        let mut form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh),
            ("scope", scope.clone()),
        ];
        if let Some(aud) = audience {
            form.push(("audience", aud.to_string()));
        }
        let v = self.token_request(form).await?;
        if let Some(next) = v["refresh_token"].as_str() {
            self.keep_refresh_token(vault, user, next).await?;
        }
        let t = self.access_token(&v, &scope)?;
        tracing::info!(user, scope = %t.scope, "user token minted");
        self.cached().insert(key, t.clone());
        Ok(t)
    }

    /// A storage token of `user` for the SE `audience` with `scopes`
    /// (see [`storage_scope`]): the user's token exchanged (RFC 8693) at
    /// the IdP, or refreshed with those scopes when the IdP has no token
    /// exchange.
    pub async fn storage_token(
        &self,
        vault: &impl Vault,
        user: &str,
        audience: &str,
        scopes: &[String],
    ) -> Result<AccessToken, TokenError> {
        if scopes.is_empty() || !scopes.iter().all(|s| s.starts_with("storage.")) {
            return Err(TokenError::Invalid(
                "a storage token needs storage.* scopes only".into(),
            ));
        }
        let scope = scopes.join(" ");
        let meta = idp::discover(&self.idp.url).await?;
        if !meta
            .grant_types_supported
            .iter()
            .any(|g| g == TOKEN_EXCHANGE_GRANT)
        {
            return self.user_token(vault, user, &scope, Some(audience)).await;
        }
        let key = (user.to_string(), audience.to_string(), scope.clone());
        if let Some(t) = self.fresh(&key) {
            return Ok(t);
        }
        let subject = self.user_token(vault, user, "", None).await?;
        let t = self.exchange(&subject.token, &scope, audience).await?;
        self.cached().insert(key, t.clone());
        Ok(t)
    }

    /// RFC 8693 token exchange at the IdP: `subject_token` (an access token
    /// of this IdP) for one with `scope` and `audience`.
    pub async fn exchange(
        &self,
        subject_token: &str,
        scope: &str,
        audience: &str,
    ) -> Result<AccessToken, TokenError> {
        let v = self
            .token_request(vec![
                ("grant_type", TOKEN_EXCHANGE_GRANT.to_string()),
                ("subject_token", subject_token.to_string()),
                ("subject_token_type", ACCESS_TOKEN_TYPE.to_string()),
                ("requested_token_type", ACCESS_TOKEN_TYPE.to_string()),
                ("scope", scope.to_string()),
                ("audience", audience.to_string()),
            ])
            .await?;
        let t = self.access_token(&v, scope)?;
        tracing::info!(audience, scope = %t.scope, "token exchanged");
        Ok(t)
    }

    fn fresh(&self, key: &Key) -> Option<AccessToken> {
        self.cached()
            .get(key)
            .filter(|t| t.expires_at > Instant::now() + RENEW_BEFORE)
            .cloned()
    }

    /// POST to the IdP's token endpoint as this client: the answer, or
    /// the IdP's refusal.
    async fn token_request(
        &self,
        form: Vec<(&str, String)>,
    ) -> Result<serde_json::Value, TokenError> {
        let meta = idp::discover(&self.idp.url).await?;
        let mut form: Vec<(String, String)> =
            form.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        form.push(("client_id".to_string(), self.idp.client_id.clone()));
        if let Some(secret) = idp::client_secret(&self.idp)? {
            form.push(("client_secret".to_string(), secret));
        }
        let (status, body) = idp::post_form(&meta.token_endpoint, form).await?;
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| TokenError::Idp(format!("{}: {e}", meta.token_endpoint)))?;
        if status != 200 {
            return Err(TokenError::Refused(format!(
                "{} {}",
                v["error"].as_str().unwrap_or("HTTP error"),
                v["error_description"].as_str().unwrap_or_default()
            )));
        }
        Ok(v)
    }

    fn access_token(&self, v: &serde_json::Value, scope: &str) -> Result<AccessToken, TokenError> {
        let token = v["access_token"]
            .as_str()
            .ok_or_else(|| TokenError::Idp(format!("{}: no access_token", self.idp.url)))?
            .to_string();
        Ok(AccessToken {
            token,
            scope: v["scope"].as_str().unwrap_or(scope).to_string(),
            expires_at: Instant::now()
                + Duration::from_secs(v["expires_in"].as_u64().unwrap_or(300)),
        })
    }

    /// A token to submit pilots to the CE of `audience`.
    pub async fn pilot_submission_token(&self, audience: &str) -> Result<AccessToken, TokenError> {
        self.client_credentials(audience, PILOT_SUBMISSION_SCOPES)
            .await
    }

    /// A client-credentials token for `audience` (RFC 8707 resource) with
    /// `scope`, from the cache while it has more than a minute left.
    pub async fn client_credentials(
        &self,
        audience: &str,
        scope: &str,
    ) -> Result<AccessToken, TokenError> {
        let key = (String::new(), audience.to_string(), scope.to_string());
        // No lock is held across the IdP call: a slow IdP answer for one
        // CE does not hold up the others (two racing misses fetch twice).
        if let Some(t) = self.fresh(&key) {
            return Ok(t);
        }
        let v = self
            .token_request(vec![
                ("grant_type", "client_credentials".to_string()),
                ("scope", scope.to_string()),
                ("resource", audience.to_string()),
                ("audience", audience.to_string()),
            ])
            .await?;
        let t = self.access_token(&v, scope)?;
        tracing::info!(audience, scope = %t.scope, "client-credentials token minted");
        self.cached().insert(key, t.clone());
        Ok(t)
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, HashMap<Key, AccessToken>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_follow_the_ce_type() {
        assert_eq!(
            ce_audience("HTCondorCE", "ce.cern.ch", 9619),
            "ce.cern.ch:9619"
        );
        assert_eq!(
            ce_audience("arc", "arc.nbi.dk", 443),
            "https://arc.nbi.dk:443"
        );
    }

    #[test]
    fn storage_scopes_are_checked() {
        assert_eq!(
            storage_scope("read", "/dteam/data").expect("ok"),
            "storage.read:/dteam/data"
        );
        for (cap, path) in [
            ("write", "/dteam"),
            ("read", "dteam"),
            ("read", "/dteam/../atlas"),
            ("read", "/dteam data"),
        ] {
            assert!(
                matches!(storage_scope(cap, path), Err(TokenError::Invalid(_))),
                "{cap} {path}"
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_idp_is_an_error_naming_it() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let manager = TokenManager::new(IdpConfig {
            url: format!("http://127.0.0.1:{port}"),
            client_id: "dirac".into(),
            client_secret_file: None,
            group_claim: "wlcg.groups".into(),
        });
        let err = manager
            .pilot_submission_token("ce:9619")
            .await
            .expect_err("nobody listens");
        assert!(
            matches!(&err, TokenError::Idp(m) if m.contains(&format!("127.0.0.1:{port}"))),
            "{err}"
        );
    }
}
