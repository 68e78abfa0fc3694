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
    /// Who the token is for: the installation's audience.
    pub aud: String,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Set on job tokens: the job the token may act for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirac_job: Option<u64>,
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
    /// A job token acts for this one job only, and only while it runs.
    pub job: Option<u64>,
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
            job: c.dirac_job,
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

/// The algorithm of the installation's signing keys. Keys of either kind
/// verify side by side, so an installation can rotate from one to the other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    /// Ed25519 (small, fast): the default.
    #[default]
    EdDSA,
    /// RSA 2048 with SHA-256, for relying parties that know only RS256.
    RS256,
}

/// The public half of a signing key.
#[derive(Debug, Clone, PartialEq)]
enum PublicKey {
    Ed25519([u8; 32]),
    /// Big-endian modulus and exponent.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

impl PublicKey {
    fn alg(&self) -> Algorithm {
        match self {
            PublicKey::Ed25519(_) => Algorithm::EdDSA,
            PublicKey::Rsa { .. } => Algorithm::RS256,
        }
    }

    /// A key id derived from the key itself, so every replica agrees.
    fn kid(&self) -> String {
        use sha2::Digest as _;
        match self {
            PublicKey::Ed25519(pk) => URL_SAFE_NO_PAD.encode(&pk[..8]),
            PublicKey::Rsa { n, e } => {
                let digest = sha2::Sha256::new()
                    .chain_update(n)
                    .chain_update(e)
                    .finalize();
                format!("rsa-{}", URL_SAFE_NO_PAD.encode(&digest[..8]))
            }
        }
    }

    fn jwk(&self, kid: &str) -> serde_json::Value {
        match self {
            PublicKey::Ed25519(pk) => serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                "kid": kid, "x": URL_SAFE_NO_PAD.encode(pk),
            }),
            PublicKey::Rsa { n, e } => serde_json::json!({
                "kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
                "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e),
            }),
        }
    }

    fn decoding_key(&self) -> DecodingKey {
        match self {
            PublicKey::Ed25519(pk) => DecodingKey::from_ed_der(pk),
            PublicKey::Rsa { n, e } => DecodingKey::from_rsa_raw_components(n, e),
        }
    }
}

/// RSA keys shorter than this are refused.
const RSA_MIN_BITS: usize = 2048;

/// The installation's signing key (embedded mode): an Ed25519 or RSA key
/// in PEM (PKCS#8, or PKCS#1 for RSA), with the retired keys that still
/// verify.
pub struct TokenIssuer {
    issuer: String,
    audience: String,
    kid: String,
    key: EncodingKey,
    public: PublicKey,
    /// Earlier signing keys: published and accepted, never used to sign.
    retired: Vec<(String, PublicKey)>,
}

const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A new private key of `alg`, as PEM.
fn new_private_key(alg: SigningAlgorithm) -> Result<String, KeyError> {
    match alg {
        SigningAlgorithm::EdDSA => {
            let seed: [u8; 32] = rand::random();
            let mut der = PKCS8_ED25519_PREFIX.to_vec();
            der.extend_from_slice(&seed);
            Ok(format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                STANDARD.encode(&der)
            ))
        }
        SigningAlgorithm::RS256 => {
            use rsa::pkcs1::EncodeRsaPrivateKey as _;
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_MIN_BITS)
                .map_err(|e| KeyError::Invalid(format!("cannot make an RSA key: {e}")))?;
            key.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
                .map(|pem| pem.to_string())
                .map_err(|e| KeyError::Invalid(format!("cannot encode the RSA key: {e}")))
        }
    }
}

/// The signing and public halves of a private key in PEM.
fn parse_private_key(pem: &str) -> Result<(EncodingKey, PublicKey), String> {
    use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _};
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::traits::PublicKeyParts as _;
    if pem.contains("-----BEGIN RSA PRIVATE KEY-----")
        || pem.contains("-----BEGIN PRIVATE KEY-----")
    {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD
            .decode(body.trim())
            .map_err(|e| format!("not PEM: {e}"))?;
        if der.len() == 48 && der[..16] == PKCS8_ED25519_PREFIX {
            let mut seed = [0u8; 32];
            seed.copy_from_slice(&der[16..]);
            let public = ed25519_dalek::SigningKey::from_bytes(&seed)
                .verifying_key()
                .to_bytes();
            return Ok((EncodingKey::from_ed_der(&der), PublicKey::Ed25519(public)));
        }
        let rsa = rsa::RsaPrivateKey::from_pkcs1_der(&der)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_der(&der))
            .map_err(|_| "neither an Ed25519 nor an RSA private key".to_string())?;
        if rsa.size() * 8 < RSA_MIN_BITS {
            return Err(format!(
                "an RSA key of {} bits; at least {RSA_MIN_BITS} are needed",
                rsa.size() * 8
            ));
        }
        let pkcs1 = rsa
            .to_pkcs1_der()
            .map_err(|e| format!("cannot encode the RSA key: {e}"))?;
        let public = PublicKey::Rsa {
            n: rsa.n().to_bytes_be(),
            e: rsa.e().to_bytes_be(),
        };
        return Ok((EncodingKey::from_rsa_der(pkcs1.as_bytes()), public));
    }
    Err("not a PEM private key".into())
}

impl TokenIssuer {
    /// Load the key at `path`, creating an Ed25519 one (mode 0600) when
    /// missing.
    pub fn load_or_create(path: &Path, issuer: &str, audience: &str) -> Result<Self, KeyError> {
        Self::load_or_create_with(path, SigningAlgorithm::EdDSA, issuer, audience)
    }

    /// Load the key at `path` (of any supported kind), creating one of
    /// `alg` (mode 0600) when missing.
    pub fn load_or_create_with(
        path: &Path,
        alg: SigningAlgorithm,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, KeyError> {
        if !path.exists() {
            write_private(path, new_private_key(alg)?.as_bytes()).map_err(|source| {
                KeyError::Io {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        }
        Self::load(path, issuer, audience)
    }

    /// Load the key at `path` (of any supported kind); never creates one
    /// (a key mounted from a Kubernetes Secret).
    pub fn load(path: &Path, issuer: &str, audience: &str) -> Result<Self, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let (key, public) = parse_private_key(&pem)
            .map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))?;
        Ok(TokenIssuer {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            kid: public.kid(),
            key,
            public,
            retired: Vec::new(),
        })
    }

    /// The current key at `current` (created of `alg` when missing, or an
    /// error naming the file when `alg` is `None`) plus every retired key in
    /// `retired_dir` (`*.pem`), which stay valid for verification until
    /// deleted.
    pub fn load_ring(
        current: &Path,
        retired_dir: &Path,
        alg: Option<SigningAlgorithm>,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, KeyError> {
        let mut ring = match alg {
            Some(alg) => Self::load_or_create_with(current, alg, issuer, audience)?,
            None => Self::load(current, issuer, audience)?,
        };
        if let Ok(entries) = std::fs::read_dir(retired_dir) {
            let mut paths: Vec<_> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "pem"))
                .collect();
            paths.sort();
            for path in paths {
                let old = Self::load(&path, issuer, audience)?;
                if old.kid != ring.kid {
                    ring.retired.push((old.kid, old.public));
                }
            }
        }
        Ok(ring)
    }

    /// Retire the current key (into `retired_dir`) and create a new one of
    /// `alg`. Tokens signed before keep verifying while the retired key is
    /// kept.
    pub fn rotate(
        current: &Path,
        retired_dir: &Path,
        alg: SigningAlgorithm,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, KeyError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| KeyError::Io { path, source }
        };
        let old = Self::load_or_create_with(current, alg, issuer, audience)?;
        std::fs::create_dir_all(retired_dir).map_err(io(retired_dir))?;
        let target = retired_dir.join(format!("{}.pem", old.kid));
        std::fs::rename(current, &target).map_err(io(&target))?;
        Self::load_ring(current, retired_dir, Some(alg), issuer, audience)
    }

    /// Key id of the current signing key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm the current key signs with.
    pub fn algorithm(&self) -> SigningAlgorithm {
        match self.public {
            PublicKey::Ed25519(_) => SigningAlgorithm::EdDSA,
            PublicKey::Rsa { .. } => SigningAlgorithm::RS256,
        }
    }

    /// A signed access token for `identity`, valid for `lifetime_s` seconds.
    pub fn issue(&self, identity: &Identity, lifetime_s: u64) -> Result<String, KeyError> {
        let now = chrono::Utc::now().timestamp();
        self.sign(&Claims {
            sub: identity.sub.clone(),
            vo: identity.vo.clone(),
            dirac_group: identity.group.clone(),
            dirac_properties: identity.properties.clone(),
            preferred_username: identity.username.clone(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: Some(now),
            dirac_job: identity.job,
            exp: now.saturating_add(i64::try_from(lifetime_s).unwrap_or(i64::MAX / 2)),
            jti: format!("{:032x}", rand::random::<u128>()),
        })
    }

    /// Sign arbitrary claims with the current key.
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let mut header = Header::new(self.public.alg());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|e| KeyError::Invalid(e.to_string()))
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The public half as a JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .public_keys()
            .into_iter()
            .map(|(kid, public)| public.jwk(&kid))
            .collect();
        serde_json::json!({ "keys": keys })
    }

    fn public_keys(&self) -> Vec<(String, PublicKey)> {
        std::iter::once((self.kid.clone(), self.public.clone()))
            .chain(self.retired.iter().cloned())
            .collect()
    }

    pub fn verifier(&self) -> TokenVerifier {
        let keys = self
            .public_keys()
            .into_iter()
            .map(|(kid, public)| (Some(kid), public))
            .collect();
        TokenVerifier::from_keys(&self.issuer, &self.audience, keys)
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
    audience: String,
    keys: Arc<std::sync::RwLock<Arc<KeySet>>>,
    /// The JWKS file keys came from: re-read when a token names an unknown
    /// key id (rotation), at most every `RELOAD_EVERY`.
    source: Option<Arc<Source>>,
}

/// Verification keys with their key ids and the one algorithm each accepts.
type KeySet = Vec<(Option<String>, Algorithm, DecodingKey)>;
/// Public keys with their key ids.
type PublicKeys = Vec<(Option<String>, PublicKey)>;

struct Source {
    /// A file path or an http(s) URL.
    location: String,
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error("missing bearer token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl TokenVerifier {
    fn from_keys(issuer: &str, audience: &str, keys: PublicKeys) -> Self {
        TokenVerifier {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            keys: Arc::new(std::sync::RwLock::new(Arc::new(decoding_keys(keys)))),
            source: None,
        }
    }

    /// Keys from a JWKS document (`{"keys": [...]}`, Ed25519 and RSA keys)
    /// or an Ed25519 or RSA public key in PEM (`-----BEGIN PUBLIC KEY-----`). A JWKS file is re-read when a
    /// token names a key id it does not hold (key rotation).
    pub fn from_file(path: &Path, issuer: &str, audience: &str) -> Result<Self, KeyError> {
        Self::from_location(&path.to_string_lossy(), issuer, audience)
    }

    /// Keys from a JWKS file or an http(s) URL serving one, fetched again
    /// (at most every 10 s) when a token names a key id not yet known.
    ///
    /// The AuthServer may start after the services that trust it: when an
    /// http(s) location cannot be read yet, the verifier starts with no key
    /// (and says so) and fetches them when the first token arrives. A file
    /// that cannot be read is an error.
    pub fn from_location(location: &str, issuer: &str, audience: &str) -> Result<Self, KeyError> {
        let remote = location.starts_with("http://") || location.starts_with("https://");
        let keys = match read_keys(location) {
            Ok(keys) => keys,
            Err(e) if remote => {
                tracing::warn!(error = %e, "verification keys not fetched yet: fetched when a token arrives");
                PublicKeys::new()
            }
            Err(e) => return Err(e),
        };
        let mut verifier = Self::from_keys(issuer, audience, keys);
        verifier.source = Some(Arc::new(Source {
            location: location.to_string(),
            last: std::sync::Mutex::new(None),
        }));
        Ok(verifier)
    }

    pub fn from_text(text: &str, issuer: &str, audience: &str) -> Result<Self, KeyError> {
        Ok(Self::from_keys(issuer, audience, parse_keys(text)?))
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Re-read the key file if a token names an unknown key and the last
    /// reload is old enough; returns whether the key set changed.
    fn reload(&self) -> bool {
        let Some(source) = &self.source else {
            return false;
        };
        {
            let mut last = source
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < RELOAD_EVERY) {
                return false;
            }
            *last = Some(std::time::Instant::now());
        }
        match read_keys(&source.location) {
            Ok(keys) => {
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Arc::new(decoding_keys(keys));
                tracing::info!(from = %source.location, "verification keys reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload verification keys");
                false
            }
        }
    }

    /// Verify a token: EdDSA or RS256, each only with a key of its own
    /// kind (`none`, HMAC and algorithm confusion are refused), a known key
    /// id, the issuer, the audience, `exp` and `nbf` (30 s leeway).
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        self.verify_claims(token).map(Identity::from)
    }

    /// [`verify`](Self::verify), returning the whole claim set (`exp`, `jti`, …).
    pub fn verify_claims(&self, token: &str) -> Result<Claims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        if !matches!(header.alg, Algorithm::EdDSA | Algorithm::RS256) {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        let mut keys = self.current();
        if let Some(kid) = &header.kid
            // A key without an id (a PEM public key) may verify any token.
            && !keys
                .iter()
                .any(|(k, _, _)| k.is_none() || k.as_deref() == Some(kid.as_str()))
        {
            if !self.reload() {
                return Err(TokenError::Invalid(format!(
                    "unknown key id '{}'",
                    crate_clip(kid)
                )));
            }
            keys = self.current();
        }
        let mut last = TokenError::Invalid("no key matches".into());
        for (kid, alg, key) in keys.iter() {
            if let (Some(want), Some(have)) = (&header.kid, kid)
                && want != have
            {
                continue;
            }
            // A key verifies only its own algorithm.
            if *alg != header.alg {
                last = TokenError::Invalid(format!(
                    "algorithm {:?} does not match the key",
                    header.alg
                ));
                continue;
            }
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = TokenError::Invalid(e.to_string()),
            }
        }
        Err(last)
    }
}

fn crate_clip(s: &str) -> String {
    s.chars().take(40).collect()
}

fn decoding_keys(keys: PublicKeys) -> KeySet {
    keys.into_iter()
        .map(|(kid, pk)| (kid, pk.alg(), pk.decoding_key()))
        .collect()
}

/// Keys from a file, or from an http(s) URL (the AuthServer's JWKS).
fn read_keys(location: &str) -> Result<PublicKeys, KeyError> {
    let text = if location.starts_with("http://") || location.starts_with("https://") {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(5)))
            .build()
            .into();
        agent
            .get(location)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .map_err(|e| KeyError::Invalid(format!("{location}: {e}")))?
    } else {
        std::fs::read_to_string(location).map_err(|source| KeyError::Io {
            path: location.to_string(),
            source,
        })?
    };
    parse_keys(&text).map_err(|e| KeyError::Invalid(format!("{location}: {e}")))
}

/// Ed25519 and RSA keys of a JWKS document or of one PEM public key.
fn parse_keys(text: &str) -> Result<PublicKeys, KeyError> {
    let invalid = |m: &str| KeyError::Invalid(m.to_string());
    let b64 = |key: &serde_json::Value, field: &str| -> Result<Vec<u8>, KeyError> {
        key[field]
            .as_str()
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .ok_or_else(|| KeyError::Invalid(format!("JWK without a base64url '{field}'")))
    };
    if text.trim_start().starts_with('{') {
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| KeyError::Invalid(format!("bad JWKS: {e}")))?;
        let mut keys = Vec::new();
        for key in doc["keys"]
            .as_array()
            .ok_or_else(|| invalid("JWKS has no 'keys' list"))?
        {
            // Encryption keys and other algorithms are not ours to use.
            if key["use"].as_str().is_some_and(|u| u != "sig") {
                continue;
            }
            let public = match (key["kty"].as_str(), key["alg"].as_str()) {
                (Some("OKP"), None | Some("EdDSA")) if key["crv"] == "Ed25519" => {
                    PublicKey::Ed25519(
                        b64(key, "x")?
                            .try_into()
                            .map_err(|_| invalid("JWK 'x' is not a 32-byte key"))?,
                    )
                }
                (Some("RSA"), None | Some("RS256")) => {
                    let (n, e) = (b64(key, "n")?, b64(key, "e")?);
                    if n.len() * 8 < RSA_MIN_BITS {
                        return Err(invalid("JWK: an RSA key shorter than 2048 bits"));
                    }
                    PublicKey::Rsa { n, e }
                }
                _ => continue,
            };
            keys.push((key["kid"].as_str().map(str::to_string), public));
        }
        if keys.is_empty() {
            return Err(invalid("JWKS has no Ed25519 or RSA signing key"));
        }
        Ok(keys)
    } else {
        use rsa::pkcs1::DecodeRsaPublicKey as _;
        use rsa::pkcs8::DecodePublicKey as _;
        use rsa::traits::PublicKeyParts as _;
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD
            .decode(body.trim())
            .map_err(|_| invalid("not a PEM public key"))?;
        // SubjectPublicKeyInfo for Ed25519: 12-byte header + 32-byte key.
        if der.len() == 44 {
            let mut pk = [0u8; 32];
            pk.copy_from_slice(&der[12..]);
            return Ok(vec![(None, PublicKey::Ed25519(pk))]);
        }
        let rsa = rsa::RsaPublicKey::from_public_key_der(&der)
            .or_else(|_| rsa::RsaPublicKey::from_pkcs1_der(&der))
            .map_err(|_| invalid("neither an Ed25519 nor an RSA public key"))?;
        if rsa.size() * 8 < RSA_MIN_BITS {
            return Err(invalid("an RSA key shorter than 2048 bits"));
        }
        Ok(vec![(
            None,
            PublicKey::Rsa {
                n: rsa.n().to_bytes_be(),
                e: rsa.e().to_bytes_be(),
            },
        )])
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
            job: None,
        }
    }

    fn issuer(dir: &Path, name: &str) -> TokenIssuer {
        TokenIssuer::load_or_create(&dir.join(name), "test", "dirac-test").expect("key")
    }

    fn claims(issuer: &TokenIssuer) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: "dteam:alice".into(),
            vo: "dteam".into(),
            dirac_group: "dteam_user".into(),
            dirac_properties: vec!["NormalUser".into()],
            preferred_username: "alice".into(),
            iss: issuer.issuer().into(),
            aud: issuer.audience().into(),
            iat: now,
            nbf: Some(now),
            dirac_job: None,
            exp: now + 600,
            jti: "j".into(),
        }
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn issued_tokens_verify_and_the_same_key_loads_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let issuer = issuer(dir.path(), "key.pem");
        let token = issuer.issue(&alice(), 60).expect("sign");
        assert_eq!(issuer.verifier().verify(&token).expect("valid"), alice());
        assert!(
            self::issuer(dir.path(), "key.pem")
                .verifier()
                .verify(&token)
                .is_ok()
        );
        let jwks = TokenVerifier::from_text(&issuer.jwks().to_string(), "test", "dirac-test")
            .expect("jwks");
        assert!(jwks.verify(&token).is_ok());
    }

    #[test]
    fn rotated_signing_keys_stay_valid_for_verification() {
        let dir = tempfile::tempdir().expect("tmp");
        let (current, retired) = (
            dir.path().join("signing-key.pem"),
            dir.path().join("retired"),
        );
        let first = TokenIssuer::load_ring(
            &current,
            &retired,
            Some(SigningAlgorithm::EdDSA),
            "test",
            "dirac-test",
        )
        .expect("ring");
        let old_token = first.issue(&alice(), 600).expect("sign");
        let second = TokenIssuer::rotate(
            &current,
            &retired,
            SigningAlgorithm::RS256,
            "test",
            "dirac-test",
        )
        .expect("rotate");
        assert_ne!(first.kid(), second.kid());
        // The ring moves from Ed25519 to RSA; both kinds verify.
        assert_eq!(second.algorithm(), SigningAlgorithm::RS256);
        let new_token = second.issue(&alice(), 600).expect("sign");
        let verifier = second.verifier();
        assert!(
            verifier.verify(&old_token).is_ok(),
            "a token of the retired Ed25519 key"
        );
        assert!(verifier.verify(&new_token).is_ok());
        assert_eq!(second.jwks()["keys"].as_array().map(Vec::len), Some(2));
        let kinds: Vec<_> = second.jwks()["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kty"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(kinds, ["RSA", "OKP"]);
        // New tokens are signed with the new key only.
        let header = jsonwebtoken::decode_header(&new_token).expect("header");
        assert_eq!(header.kid.as_deref(), Some(second.kid()));
        // Reloading finds the same ring; deleting the retired key ends the old tokens.
        let reloaded = TokenIssuer::load_ring(
            &current,
            &retired,
            Some(SigningAlgorithm::EdDSA),
            "test",
            "dirac-test",
        )
        .expect("ring");
        assert!(reloaded.verifier().verify(&old_token).is_ok());
        std::fs::remove_dir_all(&retired).expect("rm");
        let trimmed = TokenIssuer::load_ring(
            &current,
            &retired,
            Some(SigningAlgorithm::EdDSA),
            "test",
            "dirac-test",
        )
        .expect("ring");
        assert!(trimmed.verifier().verify(&old_token).is_err());
    }

    /// A key that must come from a mounted Secret is never made: a missing
    /// one is an error naming the file, and nothing is written.
    #[test]
    fn a_ring_without_an_algorithm_never_creates_a_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let current = dir.path().join("signing-key.pem");
        let err = TokenIssuer::load_ring(&current, dir.path(), None, "test", "dirac-test")
            .err()
            .expect("missing key refused");
        assert!(err.to_string().contains("signing-key.pem"), "{err}");
        assert!(!current.exists());
        std::fs::write(
            &current,
            new_private_key(SigningAlgorithm::EdDSA).expect("key"),
        )
        .expect("write");
        let ring = TokenIssuer::load_ring(&current, dir.path(), None, "test", "dirac-test")
            .expect("existing key loads");
        assert_eq!(ring.algorithm(), SigningAlgorithm::EdDSA);
    }

    /// Every forged or stale token is refused (issue 4's attack list).
    #[test]
    fn attacks_are_rejected() {
        let dir = tempfile::tempdir().expect("tmp");
        let issuer = issuer(dir.path(), "key.pem");
        let verifier = issuer.verifier();
        let now = chrono::Utc::now().timestamp();
        let sign = |f: &dyn Fn(&mut Claims)| {
            let mut c = claims(&issuer);
            f(&mut c);
            issuer.sign(&c).expect("sign")
        };
        let good = sign(&|_| {});
        assert!(verifier.verify(&good).is_ok());
        let parts: Vec<&str> = good.split('.').collect();
        let payload = serde_json::to_vec(&claims(&issuer)).expect("json");
        let forged_admin = {
            let mut c = claims(&issuer);
            c.dirac_properties = vec!["JobAdministrator".into()];
            serde_json::to_vec(&c).expect("json")
        };
        let hs256 = {
            let public = URL_SAFE_NO_PAD
                .decode(issuer.jwks()["keys"][0]["x"].as_str().expect("x"))
                .expect("x");
            let key = jsonwebtoken::EncodingKey::from_secret(&public);
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(&issuer), &key)
                .expect("hs256")
        };
        let unknown_kid = {
            let mut header: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("header"))
                    .expect("json");
            header["kid"] = "somebody-else".into();
            format!(
                "{}.{}.{}",
                b64(header.to_string().as_bytes()),
                parts[1],
                parts[2]
            )
        };
        let other = self::issuer(dir.path(), "other.pem");
        let cases: Vec<(&str, String)> = vec![
            ("expired", sign(&|c| c.exp = now - 3600)),
            ("not yet valid", sign(&|c| c.nbf = Some(now + 3600))),
            ("wrong issuer", sign(&|c| c.iss = "elsewhere".into())),
            (
                "wrong audience",
                sign(&|c| c.aud = "another-service".into()),
            ),
            (
                "alg none",
                format!(
                    "{}.{}.",
                    b64(br#"{"alg":"none","typ":"JWT"}"#),
                    b64(&payload)
                ),
            ),
            ("HS256 with the public key", hs256),
            ("unknown kid", unknown_kid),
            (
                "tampered payload",
                format!("{}.{}.{}", parts[0], b64(&forged_admin), parts[2]),
            ),
            ("another key", other.issue(&alice(), 60).expect("sign")),
            ("garbage", "not.a.token".into()),
        ];
        for (what, token) in cases {
            assert!(verifier.verify(&token).is_err(), "{what} was accepted");
        }
    }

    /// A JWKS served over HTTP, answering every request with `jwks`.
    fn serve_jwks(jwks: Arc<std::sync::Mutex<String>>) -> String {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("addr")
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let body = jwks.lock().map(|j| j.clone()).unwrap_or_default();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    #[test]
    fn jwks_is_fetched_over_http_and_refetched_on_rotation() {
        let dir = tempfile::tempdir().expect("tmp");
        let old = issuer(dir.path(), "old.pem");
        let new = issuer(dir.path(), "new.pem");
        let served = Arc::new(std::sync::Mutex::new(old.jwks().to_string()));
        let url = serve_jwks(served.clone());
        let verifier = TokenVerifier::from_location(&url, "test", "dirac-test").expect("fetch");
        assert!(
            verifier
                .verify(&old.issue(&alice(), 60).expect("sign"))
                .is_ok()
        );
        let fresh = new.issue(&alice(), 60).expect("sign");
        let mut both = old.jwks();
        both["keys"]
            .as_array_mut()
            .expect("keys")
            .push(new.jwks()["keys"][0].clone());
        *served.lock().expect("lock") = both.to_string();
        assert!(verifier.verify(&fresh).is_ok(), "rotation not fetched");
        // An AuthServer not up yet: no key until it answers, every token
        // refused meanwhile.
        let early = TokenVerifier::from_location("http://127.0.0.1:1/jwks", "test", "dirac-test")
            .expect("a remote location is fetched later");
        assert!(early.verify(&fresh).is_err());
        assert!(
            TokenVerifier::from_location(
                &dir.path().join("missing.json").display().to_string(),
                "test",
                "dirac-test"
            )
            .is_err()
        );
    }

    #[test]
    fn rotated_keys_are_picked_up_from_the_jwks_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let old = issuer(dir.path(), "old.pem");
        let new = issuer(dir.path(), "new.pem");
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, old.jwks().to_string()).expect("write");
        let verifier = TokenVerifier::from_file(&path, "test", "dirac-test").expect("file");
        assert!(
            verifier
                .verify(&old.issue(&alice(), 60).expect("sign"))
                .is_ok()
        );
        let fresh = new.issue(&alice(), 60).expect("sign");
        // The new key is published next to the old one (verify-only).
        let mut both = old.jwks();
        both["keys"]
            .as_array_mut()
            .expect("keys")
            .push(new.jwks()["keys"][0].clone());
        std::fs::write(&path, both.to_string()).expect("write");
        assert!(verifier.verify(&fresh).is_ok(), "rotation not honoured");
        assert!(
            verifier
                .verify(&old.issue(&alice(), 60).expect("sign"))
                .is_ok()
        );
    }

    fn rsa_issuer(dir: &Path, name: &str) -> TokenIssuer {
        TokenIssuer::load_or_create_with(
            &dir.join(name),
            SigningAlgorithm::RS256,
            "test",
            "dirac-test",
        )
        .expect("rsa key")
    }

    #[test]
    fn rs256_keys_sign_verify_and_publish_their_modulus() {
        let dir = tempfile::tempdir().expect("tmp");
        let issuer = rsa_issuer(dir.path(), "rsa.pem");
        assert_eq!(issuer.algorithm(), SigningAlgorithm::RS256);
        let token = issuer.issue(&alice(), 60).expect("sign");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(issuer.verifier().verify(&token).expect("valid"), alice());
        // The same key loads again, whatever algorithm is configured.
        let again = TokenIssuer::load_or_create(&dir.path().join("rsa.pem"), "test", "dirac-test")
            .expect("reload");
        assert_eq!(again.kid(), issuer.kid());
        let jwk = &issuer.jwks()["keys"][0];
        assert_eq!(
            (jwk["kty"].as_str(), jwk["alg"].as_str()),
            (Some("RSA"), Some("RS256"))
        );
        let from_jwks = TokenVerifier::from_text(&issuer.jwks().to_string(), "test", "dirac-test")
            .expect("jwks");
        assert!(from_jwks.verify(&token).is_ok());
        // A PEM public key (SubjectPublicKeyInfo) works as well.
        let public_pem = {
            use rsa::pkcs1::DecodeRsaPrivateKey as _;
            use rsa::pkcs8::EncodePublicKey as _;
            let pem = std::fs::read_to_string(dir.path().join("rsa.pem")).expect("pem");
            rsa::RsaPrivateKey::from_pkcs1_pem(&pem)
                .expect("pkcs1")
                .to_public_key()
                .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
                .expect("spki")
        };
        let from_pem = TokenVerifier::from_text(&public_pem, "test", "dirac-test").expect("pem");
        assert!(from_pem.verify(&token).is_ok());
    }

    /// A token may not pick an algorithm its key was not made for, and a
    /// short RSA key is refused outright.
    #[test]
    fn algorithm_confusion_and_weak_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let ed = issuer(dir.path(), "ed.pem");
        let rsa = rsa_issuer(dir.path(), "rsa.pem");
        // An RS256 signature presented under the Ed25519 key's id.
        let mut c = claims(&rsa);
        c.aud = "dirac-test".into();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(ed.kid().to_string());
        let rsa_pem = std::fs::read(dir.path().join("rsa.pem")).expect("pem");
        let confused = jsonwebtoken::encode(
            &header,
            &c,
            &EncodingKey::from_rsa_pem(&rsa_pem).expect("rsa"),
        )
        .expect("sign");
        let both = {
            let mut jwks = ed.jwks();
            jwks["keys"]
                .as_array_mut()
                .expect("keys")
                .push(rsa.jwks()["keys"][0].clone());
            TokenVerifier::from_text(&jwks.to_string(), "test", "dirac-test").expect("jwks")
        };
        assert!(both.verify(&rsa.issue(&alice(), 60).expect("sign")).is_ok());
        assert!(
            both.verify(&confused).is_err(),
            "RS256 under an Ed25519 kid"
        );
        // HS256 keyed with the RSA modulus.
        let n = URL_SAFE_NO_PAD
            .decode(rsa.jwks()["keys"][0]["n"].as_str().expect("n"))
            .expect("n");
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &c,
            &EncodingKey::from_secret(&n),
        )
        .expect("hs256");
        assert!(both.verify(&hs).is_err());
        // RS512, PS256: other algorithms with the same key are not accepted.
        let mut header = Header::new(Algorithm::PS256);
        header.kid = Some(rsa.kid().to_string());
        let ps = jsonwebtoken::encode(
            &header,
            &c,
            &EncodingKey::from_rsa_pem(&rsa_pem).expect("rsa"),
        )
        .expect("ps256");
        assert!(both.verify(&ps).is_err());
        // A 1024-bit RSA key is not a signing key.
        let weak = {
            use rsa::pkcs1::EncodeRsaPrivateKey as _;
            rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024)
                .expect("key")
                .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
                .expect("pem")
        };
        std::fs::write(dir.path().join("weak.pem"), weak.as_bytes()).expect("write");
        let err = TokenIssuer::load_or_create(&dir.path().join("weak.pem"), "test", "dirac-test")
            .err()
            .expect("refused");
        assert!(err.to_string().contains("2048"), "{err}");
    }

    #[test]
    fn policy_table_denies_by_default_and_checks_properties() {
        let dir = tempfile::tempdir().expect("tmp");
        let issuer = issuer(dir.path(), "key.pem");
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
