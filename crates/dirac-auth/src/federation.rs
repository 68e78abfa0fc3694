//! Federation: the verification page sends the user to the VO's identity
//! provider (authorization code + PKCE S256, a nonce, a one-time state);
//! the callback exchanges the code, verifies the ID token with the IdP's
//! JWKS (issuer, audience, expiry, nonce; asymmetric algorithms only) and
//! maps the group claim to a DIRAC group (`IdPRole`), which approves the
//! device flow.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dirac_core::auth::Identity;
use dirac_core::config::IdpConfig;
use dirac_tokens::idp::{self, Metadata};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest as _, Sha256};

use crate::{AuthError, AuthServer, scope, store};

/// Where the IdP sends the user back.
pub const CALLBACK: &str = "/api/auth/federation/callback";

fn idp_error(e: dirac_tokens::TokenError) -> AuthError {
    AuthError::InvalidRequest(e.to_string())
}

async fn discover(issuer: &str) -> Result<Metadata, AuthError> {
    idp::discover(issuer).await.map_err(idp_error)
}

fn redirect_uri(s: &AuthServer) -> String {
    format!("{}{CALLBACK}", s.settings.public_url)
}

/// Percent-encode a query value (RFC 3986 unreserved characters stay).
pub(crate) fn enc(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The IdP URL to send the user of `user_code` to.
pub async fn start(s: &AuthServer, user_code: &str, idp: &IdpConfig) -> Result<String, AuthError> {
    let meta = discover(&idp.url).await?;
    let (state, verifier, nonce) = (
        store::random_secret(),
        store::random_secret(),
        store::random_secret(),
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    s.store
        .insert_federation_state(&store::digest(&state), user_code, &verifier, &nonce)
        .await?;
    Ok(format!(
        "{}?response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}&nonce={nonce}\
         &code_challenge={challenge}&code_challenge_method=S256",
        meta.authorization_endpoint,
        enc(&idp.client_id),
        enc(&redirect_uri(s)),
        enc(&format!(
            "openid profile {}{}",
            idp.group_claim,
            // The TokenManager keeps a refresh token for later work.
            if s.settings.vault_key_file.is_some() {
                " offline_access"
            } else {
                ""
            }
        )),
    ))
}

/// What the registry made of the IdP's answer.
pub enum Outcome {
    /// The flow (user code) is approved for this identity.
    Approved(Identity, String),
    /// The flow (user code) is denied, for this reason.
    Refused(String, String),
}

/// The IdP's answer: approve or deny the flow of this state; an error when
/// the answer itself is unusable.
pub async fn finish(s: &AuthServer, state: &str, code: &str) -> Result<Outcome, AuthError> {
    let (user_code, verifier, nonce) = s
        .store
        .take_federation_state(&store::digest(state))
        .await?
        .ok_or_else(|| AuthError::InvalidGrant("unknown or used login state".into()))?;
    let flow = s.store.pending_flow(&user_code).await?.ok_or_else(|| {
        AuthError::InvalidGrant("the device login expired or was answered".into())
    })?;
    let scope = scope::parse(&flow.scope, &s.config).map_err(AuthError::InvalidScope)?;
    let idp = s
        .config
        .registry
        .vos
        .get(&scope.vo)
        .and_then(|v| v.idp.clone())
        .ok_or_else(|| {
            AuthError::InvalidRequest(format!("VO {} has no identity provider", scope.vo))
        })?;
    let meta = discover(&idp.url).await?;
    let secret = idp::client_secret(&idp).map_err(idp_error)?;
    let form: Vec<(String, String)> = [
        ("grant_type", "authorization_code".to_string()),
        ("code", code.to_string()),
        ("redirect_uri", redirect_uri(s)),
        ("client_id", idp.client_id.clone()),
        ("code_verifier", verifier),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(secret.map(|v| ("client_secret".to_string(), v)))
    .collect();
    let bad = |url: &str, e: &dyn std::fmt::Display| {
        AuthError::InvalidRequest(format!("identity provider at {url}: {e}"))
    };
    let (status, body) = idp::post_form(&meta.token_endpoint, form)
        .await
        .map_err(idp_error)?;
    if status != 200 {
        return Err(AuthError::InvalidGrant(format!(
            "the identity provider refused the code (HTTP {status})"
        )));
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| bad(&meta.token_endpoint, &e))?;
    let id_token = v["id_token"]
        .as_str()
        .ok_or_else(|| bad(&meta.token_endpoint, &"no id_token"))?;
    let (_, body) = idp::get(&meta.jwks_uri).await.map_err(idp_error)?;
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&body).map_err(|e| bad(&meta.jwks_uri, &e))?;
    let claims = verify_id_token(id_token, &jwks, &meta.issuer, &idp.client_id, &nonce)?;
    let idp_sub = claims["sub"]
        .as_str()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| AuthError::InvalidGrant("the ID token has no subject".into()))?;
    let raw: Vec<String> = match &claims[idp.group_claim.as_str()] {
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|g| g.as_str().map(str::to_string))
            .collect(),
        serde_json::Value::String(g) => vec![g.clone()],
        _ => Vec::new(),
    };
    let groups = claim_groups(&raw);
    let granted = scope::federated_user(
        &s.config,
        &scope.vo,
        idp_sub,
        claims["preferred_username"].as_str(),
    )
    .and_then(|username| scope::grant_federated(&s.config, &scope, &username, &groups));
    let identity = match granted {
        Ok(identity) => identity,
        Err(reason) => {
            // The waiting device learns at once (access_denied), not at expiry.
            s.store.deny(&user_code).await?;
            tracing::info!(vo = %scope.vo, group = %scope.group, "federated login refused");
            return Ok(Outcome::Refused(reason, user_code));
        }
    };
    if !s.store.approve(&user_code, &identity).await? {
        return Err(AuthError::InvalidGrant(
            "the device login was answered already".into(),
        ));
    }
    tracing::info!(sub = %identity.sub, group = %identity.group, "federated login approved");
    if let (Some(key), Some(refresh)) = (&s.settings.vault_key_file, v["refresh_token"].as_str()) {
        // The login stands even if the token cannot be kept: work on the
        // user's behalf will say that no token is kept.
        let kept = match dirac_tokens::Sealer::from_file(key) {
            Ok(sealer) => {
                dirac_tokens::TokenManager::new(idp.clone())
                    .with_sealer(sealer)
                    .keep_refresh_token(
                        &crate::TokenVault(s.store.clone()),
                        &identity.username,
                        refresh,
                    )
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = kept {
            tracing::warn!(user = %identity.username, error = %e, "identity-provider token not kept");
        }
    }
    Ok(Outcome::Approved(identity, user_code))
}

/// The group names a claim's values stand for: each value as it is, and
/// for an entitlement (AARC-G002, EGI Check-In:
/// `urn:mace:egi.eu:group:dteam:sub:role=admin#aai.egi.eu`) also without its
/// authority and as a path: `/dteam/sub/admin`, and `/dteam/sub` for the
/// plain `member` role. So `IdPRole` may name either form.
pub fn claim_groups(values: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |g: String| {
        if !out.contains(&g) {
            out.push(g);
        }
    };
    for value in values {
        push(value.clone());
        let Some((_, rest)) = value.split_once(":group:") else {
            continue;
        };
        if !value.starts_with("urn:") {
            continue;
        }
        let bare = value.split('#').next().unwrap_or(value);
        push(bare.to_string());
        let rest = rest.split('#').next().unwrap_or(rest);
        let mut parts: Vec<&str> = rest.split(':').collect();
        let role = match parts.last().and_then(|p| p.strip_prefix("role=")) {
            Some(role) => {
                parts.pop();
                Some(role)
            }
            None => None,
        };
        if parts.is_empty() || parts.iter().any(|p| p.is_empty() || p.contains('/')) {
            continue;
        }
        let path = format!("/{}", parts.join("/"));
        match role {
            Some(r) if r != "member" => push(format!("{path}/{r}")),
            _ => push(path),
        }
    }
    out
}

/// Verify an ID token: asymmetric algorithms only, a key of the IdP's JWKS,
/// issuer, audience, expiry and the nonce of this login.
fn verify_id_token(
    token: &str,
    jwks: &jsonwebtoken::jwk::JwkSet,
    issuer: &str,
    client_id: &str,
    nonce: &str,
) -> Result<serde_json::Value, AuthError> {
    let invalid = |m: String| AuthError::InvalidGrant(format!("ID token: {m}"));
    let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.to_string()))?;
    if !matches!(
        header.alg,
        Algorithm::RS256 | Algorithm::ES256 | Algorithm::PS256 | Algorithm::EdDSA
    ) {
        return Err(invalid(format!(
            "algorithm {:?} is not accepted",
            header.alg
        )));
    }
    let jwk = match &header.kid {
        Some(kid) => jwks.find(kid),
        None => jwks.keys.first(),
    }
    .ok_or_else(|| invalid("no key of the identity provider matches".into()))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(e.to_string()))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[client_id]);
    validation.leeway = 60;
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .map_err(|e| invalid(e.to_string()))?;
    if data.claims["nonce"].as_str() != Some(nonce) {
        return Err(invalid("nonce mismatch".into()));
    }
    Ok(data.claims)
}

#[cfg(test)]
mod tests {
    use dirac_core::auth::TokenIssuer;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const IDP: &str = "https://idp.example.org";

    /// An IdP key (Ed25519, made by our own issuer) and its JWKS.
    fn idp_key() -> (EncodingKey, String, jsonwebtoken::jwk::JwkSet) {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("idp.pem");
        let issuer = TokenIssuer::load_or_create(&path, IDP, "x").expect("key");
        let pem = std::fs::read(&path).expect("pem");
        let jwks = serde_json::from_value(issuer.jwks()).expect("jwks");
        (
            EncodingKey::from_ed_pem(&pem).expect("encoding key"),
            issuer.kid().to_string(),
            jwks,
        )
    }

    fn id_token(key: &EncodingKey, kid: &str, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, &claims, key).expect("sign")
    }

    #[test]
    fn entitlements_name_groups_as_paths_too() {
        let got = claim_groups(&[
            "urn:mace:egi.eu:group:dteam:role=member#aai.egi.eu".into(),
            "urn:mace:egi.eu:group:dteam:prod:role=manager#aai.egi.eu".into(),
            "/dteam/admin".into(),
            "urn:mace:egi.eu:group:dteam:role=member#aai.egi.eu".into(),
            "urn:mace:egi.eu:group::role=x".into(),
        ]);
        assert_eq!(
            got,
            [
                "urn:mace:egi.eu:group:dteam:role=member#aai.egi.eu",
                "urn:mace:egi.eu:group:dteam:role=member",
                "/dteam",
                "urn:mace:egi.eu:group:dteam:prod:role=manager#aai.egi.eu",
                "urn:mace:egi.eu:group:dteam:prod:role=manager",
                "/dteam/prod/manager",
                "/dteam/admin",
                "urn:mace:egi.eu:group::role=x",
            ]
        );
    }

    #[test]
    fn id_tokens_are_checked() {
        let (key, kid, jwks) = idp_key();
        let now = chrono::Utc::now().timestamp();
        let good =
            json!({"iss": IDP, "aud": "dirac", "sub": "u1", "exp": now + 300, "nonce": "n1"});
        let verify = |token: &str| verify_id_token(token, &jwks, IDP, "dirac", "n1");
        assert_eq!(
            verify(&id_token(&key, &kid, good.clone())).expect("valid")["sub"],
            "u1"
        );

        let mut refused = Vec::new();
        for (field, value) in [
            ("nonce", json!("other")),
            ("aud", json!("someone-else")),
            ("iss", json!("https://evil.example.org")),
            ("exp", json!(now - 3600)),
        ] {
            let mut claims = good.clone();
            claims[field] = value;
            refused.push((field, verify(&id_token(&key, &kid, claims))));
        }
        refused.push(("kid", verify(&id_token(&key, "unknown-kid", good.clone()))));
        // HMAC with a guessable secret is never accepted.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &good,
            &EncodingKey::from_secret(b"secret"),
        )
        .expect("sign");
        refused.push(("alg", verify(&hs)));
        let mut tampered = id_token(&key, &kid, good);
        tampered.insert(tampered.len() - 2, 'A');
        refused.push(("signature", verify(&tampered)));
        for (what, result) in refused {
            assert!(
                matches!(&result, Err(AuthError::InvalidGrant(m)) if m.starts_with("ID token")),
                "{what}: {result:?}"
            );
        }
    }
}
