//! The TokenManager: tokens from a VO's identity provider for work that
//! runs without the user, first of all pilot submission. Client-credentials
//! tokens carry the WLCG compute scopes and the CE as audience
//! (HTCondorCE `host:port`, ARC `https://host:port`); they are cached per
//! (audience, scope) until a minute before they expire.

pub mod idp;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dirac_core::config::IdpConfig;

/// Scopes of a pilot-submission token (WLCG JWT profile).
pub const PILOT_SUBMISSION_SCOPES: &str =
    "compute.create compute.read compute.modify compute.cancel";

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

/// Tokens of one VO's identity provider.
pub struct TokenManager {
    idp: IdpConfig,
    cache: Mutex<HashMap<(String, String), AccessToken>>,
}

impl TokenManager {
    pub fn new(idp: IdpConfig) -> Self {
        TokenManager {
            idp,
            cache: Mutex::new(HashMap::new()),
        }
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
        let key = (audience.to_string(), scope.to_string());
        // No lock is held across the IdP call: a slow IdP answer for one
        // CE does not hold up the others (two racing misses fetch twice).
        if let Some(t) = self.cached().get(&key)
            && t.expires_at > Instant::now() + RENEW_BEFORE
        {
            return Ok(t.clone());
        }
        let meta = idp::discover(&self.idp.url).await?;
        let mut form = vec![
            ("grant_type".to_string(), "client_credentials".to_string()),
            ("client_id".to_string(), self.idp.client_id.clone()),
            ("scope".to_string(), scope.to_string()),
            ("resource".to_string(), audience.to_string()),
            ("audience".to_string(), audience.to_string()),
        ];
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
        let token = v["access_token"]
            .as_str()
            .ok_or_else(|| TokenError::Idp(format!("{}: no access_token", meta.token_endpoint)))?
            .to_string();
        let lifetime = v["expires_in"].as_u64().unwrap_or(300);
        let t = AccessToken {
            token,
            scope: v["scope"].as_str().unwrap_or(scope).to_string(),
            expires_at: Instant::now() + Duration::from_secs(lifetime),
        };
        tracing::info!(audience, scope = %t.scope, lifetime, "client-credentials token minted");
        self.cached().insert(key, t.clone());
        Ok(t)
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), AccessToken>> {
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
