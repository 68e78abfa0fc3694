//! A small OpenID Connect client: discovery and form posts to an IdP.
//! Blocking HTTP (ureq) on tokio's blocking pool, 10 s per call: a few
//! calls per login or per token, not worth an async HTTP stack.

use serde::Deserialize;

use crate::TokenError;

/// What `/.well-known/openid-configuration` says (the parts used here).
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub grant_types_supported: Vec<String>,
}

fn http_error(url: &str, e: impl std::fmt::Display) -> TokenError {
    TokenError::Idp(format!("identity provider at {url}: {e}"))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TokenError> + Send + 'static,
) -> Result<T, TokenError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TokenError::Idp(format!("identity provider call: {e}")))?
}

/// GET `url`: (HTTP status, body).
pub async fn get(url: &str) -> Result<(u16, String), TokenError> {
    let url = url.to_string();
    blocking(move || {
        let mut r = agent().get(&url).call().map_err(|e| http_error(&url, e))?;
        let body = r
            .body_mut()
            .read_to_string()
            .map_err(|e| http_error(&url, e))?;
        Ok((r.status().as_u16(), body))
    })
    .await
}

/// POST a form to `url`: (HTTP status, body).
pub async fn post_form(
    url: &str,
    form: Vec<(String, String)>,
) -> Result<(u16, String), TokenError> {
    let url = url.to_string();
    blocking(move || {
        let mut r = agent()
            .post(&url)
            .send_form(form.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| http_error(&url, e))?;
        let body = r
            .body_mut()
            .read_to_string()
            .map_err(|e| http_error(&url, e))?;
        Ok((r.status().as_u16(), body))
    })
    .await
}

/// The IdP's metadata from its discovery document.
pub async fn discover(issuer: &str) -> Result<Metadata, TokenError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let (status, body) = get(&url).await?;
    if status != 200 {
        return Err(http_error(&url, format!("HTTP {status}")));
    }
    serde_json::from_str(&body).map_err(|e| http_error(&url, e))
}

/// A confidential client's secret, read from its file.
pub fn client_secret(idp: &dirac_core::config::IdpConfig) -> Result<Option<String>, TokenError> {
    match &idp.client_secret_file {
        None => Ok(None),
        Some(path) => std::fs::read_to_string(path)
            .map(|s| Some(s.trim().to_string()))
            .map_err(|e| TokenError::Idp(format!("client secret {}: {e}", path.display()))),
    }
}
