//! The installation's OAuth2 authorization server (the DiracX model): it
//! does not authenticate people itself but turns a login into DIRAC access
//! tokens (signed by [`TokenIssuer`]) and rotating refresh tokens.
//!
//! Start at [`AuthServer::router`] for the HTTP surface (`http.rs`), then
//! `scope.rs` for the scope grammar and the approval decision (pure), and
//! `store.rs` for the AuthDB tables (`schema.rs`).
//!
//! This first slice has the device authorization grant (RFC 8628) with a
//! built-in development login, the refresh grant with rotation and reuse
//! detection, revocation (RFC 7009), discovery, JWKS and userinfo.
//! Federation with an external identity provider comes later.

pub mod admin;
mod federation;
mod http;
mod schema;
pub mod scope;
mod store;

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dirac_core::auth::{KeyError, TokenIssuer, TokenVerifier};
use dirac_core::config::DiracConfig;
use dirac_core::db::Db;

pub use schema::MIGRATIONS;

/// Lifetimes and modes of the authorization server.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthSettings {
    /// Seconds an access token is valid.
    pub access_lifetime_s: u64,
    /// Seconds a refresh-token family lives; rotation keeps the family's
    /// expiry, so a session never outlives its login by more than this.
    pub refresh_lifetime_s: u64,
    /// Seconds a device flow waits for its approval.
    pub device_lifetime_s: u64,
    /// Seconds a device client waits between polls (grows on `slow_down`).
    pub poll_interval_s: u64,
    /// Embedded development mode: the verification page is a form where any
    /// registered user name logs in without an identity provider.
    pub dev_login: bool,
    /// Base URL of these endpoints, without a trailing slash.
    pub public_url: String,
    /// Per-installation secret mixed into pilot-secret hashes, so a copy of
    /// AuthDB alone does not allow checking guessed secrets.
    pub pilot_pepper: String,
    /// Seconds a pilot token is valid.
    pub pilot_token_lifetime_s: u64,
    /// The TokenManager's vault key: when set, federated logins ask the IdP
    /// for a refresh token (`offline_access`) and keep it sealed in AuthDB.
    pub vault_key_file: Option<std::path::PathBuf>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            access_lifetime_s: 1200,
            refresh_lifetime_s: 7 * 86_400,
            device_lifetime_s: 600,
            poll_interval_s: 5,
            dev_login: false,
            public_url: "http://127.0.0.1:8080".into(),
            pilot_pepper: String::new(),
            pilot_token_lifetime_s: 2 * 86_400,
            vault_key_file: None,
        }
    }
}

/// Everything that can go wrong, mapped once to an RFC 6749 error response.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    InvalidGrant(String),
    #[error("grant type '{0}' is not supported")]
    UnsupportedGrantType(String),
    #[error("the user has not approved the request yet")]
    AuthorizationPending,
    #[error("polling too fast: wait at least {0} s between requests")]
    SlowDown(u64),
    #[error("the device code has expired")]
    ExpiredToken,
    #[error("the user denied the request")]
    AccessDenied,
    #[error("{0}")]
    InvalidToken(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("signing: {0}")]
    Signing(#[from] KeyError),
}

impl AuthError {
    /// The RFC 6749 error code; doubles as a metric label.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::InvalidRequest(_) => "invalid_request",
            AuthError::InvalidScope(_) => "invalid_scope",
            AuthError::InvalidGrant(_) => "invalid_grant",
            AuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
            AuthError::AuthorizationPending => "authorization_pending",
            AuthError::SlowDown(_) => "slow_down",
            AuthError::ExpiredToken => "expired_token",
            AuthError::AccessDenied => "access_denied",
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::Database(_) | AuthError::Signing(_) => "server_error",
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (status, description) = match &self {
            AuthError::Database(_) | AuthError::Signing(_) => {
                tracing::error!(error = %self, "authorization server failure");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_string(),
                )
            }
            AuthError::InvalidToken(_) => (StatusCode::UNAUTHORIZED, self.to_string()),
            _ => (StatusCode::BAD_REQUEST, self.to_string()),
        };
        let body = serde_json::json!({"error": self.code(), "error_description": description});
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}

/// AuthDB as the TokenManager's vault of sealed IdP refresh tokens.
#[derive(Clone)]
pub struct TokenVault(store::Store);

impl TokenVault {
    /// Migrate AuthDB and open its vault table.
    pub async fn open(db: Db) -> Result<Self, AuthError> {
        db.migrate("AuthDB", MIGRATIONS).await?;
        Ok(TokenVault(store::Store::new(db)))
    }
}

impl dirac_tokens::Vault for TokenVault {
    async fn load(
        &self,
        idp: &str,
        user: &str,
    ) -> Result<Option<String>, dirac_tokens::TokenError> {
        self.0
            .idp_token(idp, user)
            .await
            .map_err(|e| dirac_tokens::TokenError::Vault(e.to_string()))
    }

    async fn save(
        &self,
        idp: &str,
        user: &str,
        sealed: &str,
    ) -> Result<(), dirac_tokens::TokenError> {
        self.0
            .put_idp_token(idp, user, sealed)
            .await
            .map_err(|e| dirac_tokens::TokenError::Vault(e.to_string()))
    }
}

/// The authorization server: registry, signing key, AuthDB.
pub struct AuthServer {
    config: Arc<DiracConfig>,
    issuer: Arc<TokenIssuer>,
    verifier: TokenVerifier,
    settings: AuthSettings,
    store: store::Store,
}

impl AuthServer {
    /// Migrate AuthDB and build the server.
    pub async fn open(
        db: Db,
        config: Arc<DiracConfig>,
        issuer: Arc<TokenIssuer>,
        mut settings: AuthSettings,
    ) -> Result<Arc<Self>, AuthError> {
        db.migrate("AuthDB", MIGRATIONS).await?;
        settings.public_url = settings.public_url.trim_end_matches('/').to_string();
        Ok(Arc::new(AuthServer {
            verifier: issuer.verifier(),
            config,
            issuer,
            settings,
            store: store::Store::new(db),
        }))
    }

    /// Create `count` one-time pilot secrets of `vo`, each good for `uses`
    /// exchanges within `lifetime_s`, optionally only at `sites`. Only
    /// peppered hashes are stored; the secrets are returned once.
    pub async fn create_pilot_secrets(
        &self,
        vo: &str,
        sites: &[String],
        uses: u32,
        lifetime_s: u64,
        count: usize,
    ) -> Result<Vec<String>, AuthError> {
        if !self.config.registry.vos.contains_key(vo) {
            return Err(AuthError::InvalidRequest(format!("unknown VO '{vo}'")));
        }
        let mut secrets = Vec::with_capacity(count);
        for _ in 0..count {
            let secret = store::random_secret();
            self.store
                .insert_pilot_secret(&self.pilot_hash(&secret), vo, sites, uses, lifetime_s)
                .await?;
            secrets.push(secret);
        }
        Ok(secrets)
    }

    fn pilot_hash(&self, secret: &str) -> String {
        store::digest(&format!("{}:{secret}", self.settings.pilot_pepper))
    }

    /// The HTTP endpoints, `.well-known` at the root and the rest under
    /// `/api/auth`.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        http::router(self.clone())
    }
}
