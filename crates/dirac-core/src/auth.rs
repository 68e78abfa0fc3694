//! Authentication and authorization shared by every service.
//!
//! Every request passes through [`AuthLayer`]: it finds the access policy of
//! the called gRPC method in a [`PolicyTable`] (a method without one is
//! refused: deny by default), verifies the bearer JWT with the installation's
//! keys, checks the DIRAC properties the policy asks for, and puts the caller's
//! [`Identity`] into the request extensions. Ownership checks (a user sees
//! only their own jobs) are made by the services with [`Identity`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

/// Claims of an access token (DiracX's AccessTokenPayload, plus `iat`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// `<vo>:<user>`: unique per person and VO.
    pub sub: String,
    pub vo: String,
    pub dirac_group: String,
    #[serde(default)]
    pub dirac_properties: Vec<String>,
    pub preferred_username: String,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// Who is calling, as established by the auth layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub sub: String,
    pub username: String,
    pub vo: String,
    pub group: String,
    pub properties: Vec<String>,
}

impl Identity {
    pub fn has(&self, property: &str) -> bool {
        self.properties.iter().any(|p| p == property)
    }

    pub fn has_any(&self, properties: &[&str]) -> bool {
        properties.iter().any(|p| self.has(p))
    }
}

impl From<Claims> for Identity {
    fn from(c: Claims) -> Self {
        Identity {
            sub: c.sub,
            username: c.preferred_username,
            vo: c.vo,
            group: c.dirac_group,
            properties: c.dirac_properties,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Ed25519 signing key of the installation (embedded mode), kept as PKCS#8.
pub struct TokenIssuer {
    issuer: String,
    kid: String,
    key: EncodingKey,
    public: [u8; 32],
}

const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl TokenIssuer {
    /// Load the key at `path`, creating it (mode 0600) when missing.
    pub fn load_or_create(path: &Path, issuer: &str) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        if !path.exists() {
            let seed: [u8; 32] = rand::random();
            let mut der = PKCS8_ED25519_PREFIX.to_vec();
            der.extend_from_slice(&seed);
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                STANDARD.encode(&der)
            );
            write_private(path, pem.as_bytes()).map_err(io)?;
        }
        let pem = std::fs::read_to_string(path).map_err(io)?;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD
            .decode(body.trim())
            .map_err(|e| KeyError::Invalid(format!("{}: not PEM: {e}", path.display())))?;
        if der.len() != 48 || der[..16] != PKCS8_ED25519_PREFIX {
            return Err(KeyError::Invalid(format!(
                "{}: not an Ed25519 PKCS#8 key",
                path.display()
            )));
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&der[16..]);
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        let kid = URL_SAFE_NO_PAD.encode(&public[..8]);
        Ok(TokenIssuer {
            issuer: issuer.to_string(),
            kid,
            key: EncodingKey::from_ed_der(&der),
            public,
        })
    }

    /// A signed access token for `identity`, valid for `lifetime_s` seconds.
    pub fn issue(&self, identity: &Identity, lifetime_s: u64) -> Result<String, KeyError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: identity.sub.clone(),
            vo: identity.vo.clone(),
            dirac_group: identity.group.clone(),
            dirac_properties: identity.properties.clone(),
            preferred_username: identity.username.clone(),
            iss: self.issuer.clone(),
            iat: now,
            exp: now.saturating_add(i64::try_from(lifetime_s).unwrap_or(i64::MAX / 2)),
            jti: format!("{:032x}", rand::random::<u128>()),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| KeyError::Invalid(e.to_string()))
    }

    /// The public half as a JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(self.public),
        }]})
    }

    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier::from_keys(&self.issuer, vec![(Some(self.kid.clone()), self.public)])
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// Verifies access tokens against the installation's public keys.
#[derive(Clone)]
pub struct TokenVerifier {
    issuer: String,
    keys: Arc<Vec<(Option<String>, DecodingKey)>>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl TokenVerifier {
    fn from_keys(issuer: &str, keys: Vec<(Option<String>, [u8; 32])>) -> Self {
        let keys = keys
            .into_iter()
            .map(|(kid, pk)| (kid, DecodingKey::from_ed_der(&pk)))
            .collect();
        TokenVerifier {
            issuer: issuer.to_string(),
            keys: Arc::new(keys),
        }
    }

    /// Keys from a JWKS document (`{"keys": [...]}`) or an Ed25519 public key
    /// in PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_file(path: &Path, issuer: &str) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_text(&text, issuer)
            .map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))
    }

    pub fn from_text(text: &str, issuer: &str) -> Result<Self, KeyError> {
        let invalid = |m: &str| KeyError::Invalid(m.to_string());
        if text.trim_start().starts_with('{') {
            let doc: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| KeyError::Invalid(format!("bad JWKS: {e}")))?;
            let mut keys = Vec::new();
            for key in doc["keys"]
                .as_array()
                .ok_or_else(|| invalid("JWKS has no 'keys' list"))?
            {
                if key["kty"] != "OKP" || key["crv"] != "Ed25519" {
                    continue;
                }
                let x = key["x"]
                    .as_str()
                    .ok_or_else(|| invalid("JWK without 'x'"))?;
                let pk: [u8; 32] = URL_SAFE_NO_PAD
                    .decode(x)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| invalid("JWK 'x' is not a 32-byte key"))?;
                keys.push((key["kid"].as_str().map(str::to_string), pk));
            }
            if keys.is_empty() {
                return Err(invalid("JWKS has no Ed25519 key"));
            }
            Ok(Self::from_keys(issuer, keys))
        } else {
            let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
            let der = STANDARD
                .decode(body.trim())
                .map_err(|_| invalid("not a PEM public key"))?;
            // SubjectPublicKeyInfo for Ed25519: 12-byte header + 32-byte key.
            if der.len() != 44 {
                return Err(invalid("not an Ed25519 public key"));
            }
            let mut pk = [0u8; 32];
            pk.copy_from_slice(&der[12..]);
            Ok(Self::from_keys(issuer, vec![(None, pk)]))
        }
    }

    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 30;
        let mut last = TokenError::Invalid("no key matches".into());
        for (kid, key) in self.keys.iter() {
            if let (Some(want), Some(have)) = (&header.kid, kid)
                && want != have
            {
                continue;
            }
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return Ok(data.claims.into()),
                Err(e) => last = TokenError::Invalid(e.to_string()),
            }
        }
        Err(last)
    }
}

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Access {
    /// No token needed (health checks, reflection).
    Public,
    /// A valid token holding at least one of these properties.
    AnyOf(&'static [&'static str]),
}

/// Access policy of every gRPC method, keyed by path
/// (`/dirac.wms.v1.JobManager/SubmitJobs`).
#[derive(Debug, Clone, Default)]
pub struct PolicyTable(HashMap<String, Access>);

impl PolicyTable {
    pub fn new() -> Self {
        let mut table = PolicyTable(HashMap::new());
        table.add_service(
            "grpc.health.v1.Health",
            &[("Check", Access::Public), ("Watch", Access::Public)],
        );
        for svc in [
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            table.add_service(svc, &[("ServerReflectionInfo", Access::Public)]);
        }
        table
    }

    pub fn add_service(&mut self, service: &str, methods: &[(&str, Access)]) {
        for (method, access) in methods {
            self.0.insert(format!("/{service}/{method}"), *access);
        }
    }

    pub fn get(&self, path: &str) -> Option<Access> {
        self.0.get(path).copied()
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// Tower layer applying the policy table and token verification.
#[derive(Clone)]
pub struct AuthLayer {
    policies: Arc<PolicyTable>,
    verifier: TokenVerifier,
}

impl AuthLayer {
    pub fn new(policies: PolicyTable, verifier: TokenVerifier) -> Self {
        AuthLayer {
            policies: Arc::new(policies),
            verifier,
        }
    }

    /// Decide one call: the identity to attach, or the status to answer.
    pub fn check(
        &self,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<Option<Identity>, tonic::Status> {
        let Some(access) = self.policies.get(path) else {
            tracing::warn!(path, "refused call to a method without an access policy");
            return Err(tonic::Status::permission_denied(format!(
                "no access policy for {path}"
            )));
        };
        let token = authorization.and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        });
        match access {
            Access::Public => Ok(token.and_then(|t| self.verifier.verify(t).ok())),
            Access::AnyOf(props) => {
                let token = token.ok_or_else(|| {
                    tonic::Status::unauthenticated(TokenError::Missing.to_string())
                })?;
                let identity = self
                    .verifier
                    .verify(token)
                    .map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
                if !identity.has_any(props) {
                    return Err(tonic::Status::permission_denied(format!(
                        "{path} needs one of the properties {}; group {} has {}",
                        props.join(", "),
                        identity.group,
                        if identity.properties.is_empty() {
                            "none".into()
                        } else {
                            identity.properties.join(", ")
                        },
                    )));
                }
                Ok(Some(identity))
            }
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

type BoxFuture<T, E> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, B, ResBody> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let component = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let method = path.rsplit('/').next().unwrap_or_default().to_string();
        let auth = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let span = tracing::info_span!("rpc", component = %component, method = %method, user = tracing::field::Empty);
        match self.layer.check(&path, auth) {
            Ok(identity) => {
                if let Some(id) = &identity {
                    span.record("user", id.sub.as_str());
                    req.extensions_mut().insert(id.clone());
                }
                // Keep the readied service for this call, leave a fresh clone.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move { inner.call(req).await }.instrument(span))
            }
            Err(status) => {
                let _entered = span.enter();
                tracing::info!(code = ?status.code(), reason = status.message(), "call refused");
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// The caller's identity inside a handler.
pub fn identity<T>(req: &tonic::Request<T>) -> Result<&Identity, tonic::Status> {
    req.extensions()
        .get::<Identity>()
        .ok_or_else(|| tonic::Status::unauthenticated("no authenticated identity"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity {
            sub: "dteam:alice".into(),
            username: "alice".into(),
            vo: "dteam".into(),
            group: "dteam_user".into(),
            properties: vec!["NormalUser".into()],
        }
    }

    #[test]
    fn issued_tokens_verify_and_tampering_fails() {
        let dir = tempfile::tempdir().expect("tmp");
        let issuer = TokenIssuer::load_or_create(&dir.path().join("key.pem"), "test").expect("key");
        let token = issuer.issue(&alice(), 60).expect("sign");
        let verifier = issuer.verifier();
        assert_eq!(verifier.verify(&token).expect("valid"), alice());

        // Same key file loads again and verifies old tokens.
        let again = TokenIssuer::load_or_create(&dir.path().join("key.pem"), "test").expect("key");
        assert!(again.verifier().verify(&token).is_ok());

        // Through JWKS.
        let jwks = TokenVerifier::from_text(&issuer.jwks().to_string(), "test").expect("jwks");
        assert!(jwks.verify(&token).is_ok());

        // Another key, another issuer, forged claims.
        let other =
            TokenIssuer::load_or_create(&dir.path().join("other.pem"), "test").expect("key");
        assert!(other.verifier().verify(&token).is_err());
        let wrong_iss =
            TokenVerifier::from_text(&issuer.jwks().to_string(), "elsewhere").expect("jwks");
        assert!(wrong_iss.verify(&token).is_err());
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"sub":"dteam:mallory","vo":"dteam","dirac_group":"g","dirac_properties":["JobAdministrator"],"preferred_username":"mallory","iss":"test","iat":0,"exp":99999999999,"jti":"x"}"#);
        assert!(verifier.verify(&parts.join(".")).is_err());
        assert!(verifier.verify("garbage").is_err());
    }

    #[test]
    fn policy_table_denies_by_default_and_checks_properties() {
        let dir = tempfile::tempdir().expect("tmp");
        let issuer = TokenIssuer::load_or_create(&dir.path().join("key.pem"), "test").expect("key");
        let mut table = PolicyTable::new();
        table.add_service(
            "x.v1.S",
            &[
                ("Read", Access::AnyOf(&["NormalUser"])),
                ("Admin", Access::AnyOf(&["JobAdministrator"])),
            ],
        );
        let layer = AuthLayer::new(table, issuer.verifier());
        let bearer = format!("Bearer {}", issuer.issue(&alice(), 60).expect("sign"));

        let code = |path: &str, auth: Option<&str>| {
            layer.check(path, auth).map(|_| ()).map_err(|s| s.code())
        };
        assert_eq!(code("/x.v1.S/Read", Some(&bearer)), Ok(()));
        assert_eq!(
            code("/x.v1.S/Read", None),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code("/x.v1.S/Read", Some("Bearer nope")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code("/x.v1.S/Admin", Some(&bearer)),
            Err(tonic::Code::PermissionDenied)
        );
        assert_eq!(
            code("/x.v1.S/Unlisted", Some(&bearer)),
            Err(tonic::Code::PermissionDenied)
        );
        assert_eq!(code("/grpc.health.v1.Health/Check", None), Ok(()));
        let who = layer
            .check("/x.v1.S/Read", Some(&bearer))
            .expect("ok")
            .expect("identity");
        assert_eq!(who.username, "alice");
    }
}
