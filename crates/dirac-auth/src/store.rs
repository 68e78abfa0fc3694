//! AuthDB repository: device flows and refresh-token families.
//!
//! Every state change that must happen once (approving a flow, exchanging
//! its device code, rotating a refresh token) is a conditional UPDATE whose
//! affected-row count decides who won, so concurrent requests cannot both
//! succeed on any backend.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dirac_core::auth::Identity;
use dirac_core::db::Db;
use dirac_core::time;
use rand::Rng as _;
use sha2::{Digest as _, Sha256};

use crate::AuthError;

/// Seconds a federated login may spend at the identity provider.
pub const FEDERATION_STATE_LIFETIME_S: u64 = 900;

/// RFC 8628 §6.1: consonants only, no look-alikes, no vowels (no words).
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
pub const USER_CODE_LEN: usize = 8;

/// 32 random bytes, base64url: a device code or a refresh token.
pub fn random_secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// How a secret is stored and looked up.
pub fn digest(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

fn new_user_code() -> String {
    let mut rng = rand::rng();
    (0..USER_CODE_LEN)
        .map(|_| char::from(USER_CODE_ALPHABET[rng.random_range(0..USER_CODE_ALPHABET.len())]))
        .collect()
}

/// A typed user code without dashes, spaces or lower case, if it can be one.
pub fn normalise_user_code(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)))
        .then_some(code)
}

/// `XXXX-XXXX`.
pub fn display_user_code(code: &str) -> String {
    match (code.get(..4), code.get(4..)) {
        (Some(a), Some(b)) => format!("{a}-{b}"),
        _ => code.to_string(),
    }
}

fn after(seconds: u64) -> String {
    let delta = chrono::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 1_000_000))
        .min(chrono::Duration::days(365 * 100));
    time::format(chrono::Utc::now() + delta)
}

fn join(properties: &[String]) -> String {
    properties.join(" ")
}

fn split(properties: &str) -> Vec<String> {
    properties.split_whitespace().map(str::to_string).collect()
}

/// A device flow waiting for its user.
pub struct PendingFlow {
    pub user_code: String,
    pub scope: String,
}

/// What a poll of the token endpoint finds.
pub struct Approved {
    pub identity: Identity,
    pub scope: String,
    pub client_id: String,
}

/// A refresh token's row.
pub struct RefreshRow {
    pub family: String,
    pub client_id: String,
    pub username: String,
    pub scope: String,
    pub status: String,
    pub expires_at: String,
}

pub const ACTIVE: &str = "active";
pub const USED: &str = "used";

type FlowRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

type AuthzRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// What an authorization-code request asked for.
#[derive(Debug, Clone)]
pub struct AuthzRequest {
    pub redirect_uri: String,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// The client's opaque `state`, returned with the code.
    pub state: Option<String>,
}

/// The identity an approved flow recorded.
fn approved(
    scope: String,
    client_id: String,
    sub: Option<String>,
    username: Option<String>,
    group: Option<String>,
    properties: Option<String>,
) -> Approved {
    let vo = scope
        .split_whitespace()
        .find_map(|t| t.strip_prefix("vo:"))
        .unwrap_or_default()
        .to_string();
    Approved {
        identity: Identity {
            sub: sub.unwrap_or_default(),
            username: username.unwrap_or_default(),
            vo,
            group: group.unwrap_or_default(),
            properties: split(&properties.unwrap_or_default()),
            job: None,
        },
        scope,
        client_id,
    }
}

/// (session id, user, group, scope, client, created, expires).
pub type SessionRow = (String, String, String, String, String, String, String);

#[derive(Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    pub fn new(db: Db) -> Self {
        Store { db }
    }

    /// Record a new flow; returns its user code. An authorization-code flow
    /// (`authz`) is a flow whose code is handed out by redirect on approval.
    pub async fn create_device_flow(
        &self,
        device_hash: &str,
        client_id: &str,
        scope: &str,
        lifetime_s: u64,
        interval_s: u64,
        authz: Option<&AuthzRequest>,
    ) -> Result<String, AuthError> {
        let mut attempts = 0;
        loop {
            let user_code = new_user_code();
            let inserted = sqlx::query(self.db.sql(
                "INSERT INTO DeviceFlows (UserCode, DeviceCode, ClientID, Scope, Status, \
                 CreationTime, ExpiresAt, LastPoll, PollInterval, RedirectURI, CodeChallenge, \
                 ClientState) VALUES (?, ?, ?, ?, 'PENDING', ?, ?, NULL, ?, ?, ?, ?)",
            ))
            .bind(user_code.clone())
            .bind(device_hash.to_string())
            .bind(client_id.to_string())
            .bind(scope.to_string())
            .bind(time::now())
            .bind(after(lifetime_s))
            .bind(i64::try_from(interval_s).unwrap_or(i64::MAX))
            .bind(authz.map(|a| a.redirect_uri.clone()))
            .bind(authz.map(|a| a.code_challenge.clone()))
            .bind(authz.and_then(|a| a.state.clone()))
            .execute(self.db.pool())
            .await;
            match inserted {
                Ok(_) => return Ok(user_code),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() && attempts < 5 => {
                    attempts += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The flow behind `user_code` if it still waits for approval.
    pub async fn pending_flow(&self, user_code: &str) -> Result<Option<PendingFlow>, AuthError> {
        let row: Option<(String, String)> = sqlx::query_as(self.db.sql(
            "SELECT UserCode, Scope FROM DeviceFlows \
             WHERE UserCode = ? AND Status = 'PENDING' AND ExpiresAt > ?",
        ))
        .bind(user_code.to_string())
        .bind(time::now())
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.map(|(user_code, scope)| PendingFlow { user_code, scope }))
    }

    /// Mark a pending flow approved for `identity`; false when it is no
    /// longer pending.
    pub async fn approve(&self, user_code: &str, identity: &Identity) -> Result<bool, AuthError> {
        let done = sqlx::query(self.db.sql(
            "UPDATE DeviceFlows SET Status = 'READY', Sub = ?, Username = ?, VO = ?, \
             GroupName = ?, Properties = ? \
             WHERE UserCode = ? AND Status = 'PENDING' AND ExpiresAt > ?",
        ))
        .bind(identity.sub.clone())
        .bind(identity.username.clone())
        .bind(identity.vo.clone())
        .bind(identity.group.clone())
        .bind(join(&identity.properties))
        .bind(user_code.to_string())
        .bind(time::now())
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Mark a pending flow denied; false when it is no longer pending.
    pub async fn deny(&self, user_code: &str) -> Result<bool, AuthError> {
        let done = sqlx::query(self.db.sql(
            "UPDATE DeviceFlows SET Status = 'DENIED' WHERE UserCode = ? AND Status = 'PENDING'",
        ))
        .bind(user_code.to_string())
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One poll of the token endpoint with a device code: the approved
    /// identity exactly once, otherwise the RFC 8628 error.
    pub async fn poll(&self, device_hash: &str, client_id: &str) -> Result<Approved, AuthError> {
        let row: Option<FlowRow> = sqlx::query_as(self.db.sql(
            "SELECT UserCode, ClientID, Scope, Status, LastPoll, PollInterval, ExpiresAt, \
             Sub, Username, GroupName, Properties FROM DeviceFlows \
             WHERE DeviceCode = ? AND RedirectURI IS NULL",
        ))
        .bind(device_hash.to_string())
        .fetch_optional(self.db.pool())
        .await?;
        let Some((
            user_code,
            flow_client,
            scope,
            status,
            last_poll,
            interval,
            expires_at,
            sub,
            username,
            group,
            properties,
        )) = row
        else {
            return Err(AuthError::InvalidGrant("unknown device_code".into()));
        };
        if flow_client != client_id {
            return Err(AuthError::InvalidGrant(
                "device_code was issued to another client".into(),
            ));
        }
        let now = time::now();
        match status.as_str() {
            "DONE" => Err(AuthError::InvalidGrant(
                "device_code was already exchanged".into(),
            )),
            _ if expires_at <= now => Err(AuthError::ExpiredToken),
            "DENIED" => Err(AuthError::AccessDenied),
            "READY" => {
                let done = sqlx::query(self.db.sql(
                    "UPDATE DeviceFlows SET Status = 'DONE', LastPoll = ? \
                     WHERE UserCode = ? AND Status = 'READY'",
                ))
                .bind(now)
                .bind(user_code)
                .execute(self.db.pool())
                .await?;
                if done.rows_affected() != 1 {
                    return Err(AuthError::InvalidGrant(
                        "device_code was already exchanged".into(),
                    ));
                }
                Ok(approved(
                    scope,
                    flow_client,
                    sub,
                    username,
                    group,
                    properties,
                ))
            }
            _ => {
                let interval_s = u64::try_from(interval).unwrap_or(0);
                let too_fast = last_poll.is_some_and(|last| last > time::ago(interval_s));
                let sql = if too_fast {
                    "UPDATE DeviceFlows SET LastPoll = ?, PollInterval = PollInterval + 5 \
                     WHERE UserCode = ?"
                } else {
                    "UPDATE DeviceFlows SET LastPoll = ? WHERE UserCode = ?"
                };
                sqlx::query(self.db.sql(sql))
                    .bind(now)
                    .bind(user_code)
                    .execute(self.db.pool())
                    .await?;
                if too_fast {
                    Err(AuthError::SlowDown(interval_s + 5))
                } else {
                    Err(AuthError::AuthorizationPending)
                }
            }
        }
    }

    /// The redirect (URI, client state) of an approved authorization-code
    /// flow, with a fresh code (stored by digest) to hand out; None for a
    /// device flow.
    pub async fn issue_authorization_code(
        &self,
        user_code: &str,
    ) -> Result<Option<(String, Option<String>, String)>, AuthError> {
        let Some((redirect_uri, state)) = self.authorization_redirect(user_code).await? else {
            return Ok(None);
        };
        let code = random_secret();
        let issued =
            sqlx::query(self.db.sql(
                "UPDATE DeviceFlows SET DeviceCode = ? WHERE UserCode = ? AND Status = 'READY'",
            ))
            .bind(digest(&code))
            .bind(user_code.to_string())
            .execute(self.db.pool())
            .await?;
        if issued.rows_affected() != 1 {
            return Err(AuthError::InvalidGrant(
                "the authorization was answered already".into(),
            ));
        }
        Ok(Some((redirect_uri, state, code)))
    }

    /// The redirect (URI, client state) of an authorization-code flow in
    /// any state; None for a device flow.
    pub async fn authorization_redirect(
        &self,
        user_code: &str,
    ) -> Result<Option<(String, Option<String>)>, AuthError> {
        let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
            self.db
                .sql("SELECT RedirectURI, ClientState FROM DeviceFlows WHERE UserCode = ?"),
        )
        .bind(user_code.to_string())
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.and_then(|(r, st)| r.map(|r| (r, st))))
    }

    /// Exchange an authorization code once: the client, the redirect URI
    /// and the PKCE verifier must match what the authorization asked for.
    pub async fn exchange_authorization_code(
        &self,
        code: &str,
        client_id: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<Approved, AuthError> {
        let row: Option<AuthzRow> = sqlx::query_as(self.db.sql(
            "SELECT UserCode, ClientID, Scope, Status, ExpiresAt, RedirectURI, CodeChallenge, \
             Sub, Username, GroupName, Properties FROM DeviceFlows \
             WHERE DeviceCode = ? AND RedirectURI IS NOT NULL",
        ))
        .bind(digest(code))
        .fetch_optional(self.db.pool())
        .await?;
        let invalid = |m: &str| AuthError::InvalidGrant(m.to_string());
        let Some((
            user_code,
            flow_client,
            scope,
            status,
            expires_at,
            flow_redirect,
            challenge,
            sub,
            username,
            group,
            properties,
        )) = row
        else {
            return Err(invalid("unknown authorization code"));
        };
        if status != "READY" {
            return Err(invalid("the authorization code was already used"));
        }
        if expires_at <= time::now() {
            return Err(invalid("the authorization code has expired"));
        }
        if flow_client != client_id {
            return Err(invalid(
                "the authorization code was issued to another client",
            ));
        }
        if flow_redirect.as_deref() != Some(redirect_uri) {
            return Err(invalid(
                "redirect_uri differs from the authorization request",
            ));
        }
        let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        if challenge.as_deref() != Some(computed.as_str()) {
            return Err(invalid("code_verifier does not match the code challenge"));
        }
        let done =
            sqlx::query(self.db.sql(
                "UPDATE DeviceFlows SET Status = 'DONE' WHERE UserCode = ? AND Status = 'READY'",
            ))
            .bind(user_code)
            .execute(self.db.pool())
            .await?;
        if done.rows_affected() != 1 {
            return Err(invalid("the authorization code was already used"));
        }
        Ok(approved(
            scope,
            flow_client,
            sub,
            username,
            group,
            properties,
        ))
    }

    /// Store a refresh token (by digest) of `family`.
    pub async fn insert_refresh(
        &self,
        token_hash: &str,
        family: &str,
        client_id: &str,
        identity: &Identity,
        scope: &str,
        expires_at: &str,
    ) -> Result<(), AuthError> {
        self.insert_refresh_on(
            self.db.pool(),
            token_hash,
            family,
            client_id,
            identity,
            scope,
            expires_at,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_refresh_on<'e, E>(
        &self,
        executor: E,
        token_hash: &str,
        family: &str,
        client_id: &str,
        identity: &Identity,
        scope: &str,
        expires_at: &str,
    ) -> Result<(), AuthError>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        sqlx::query(self.db.sql(
            "INSERT INTO RefreshTokens (TokenHash, FamilyID, ClientID, Sub, Username, VO, \
             GroupName, Properties, Scope, Status, CreationTime, ExpiresAt) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?)",
        ))
        .bind(token_hash.to_string())
        .bind(family.to_string())
        .bind(client_id.to_string())
        .bind(identity.sub.clone())
        .bind(identity.username.clone())
        .bind(identity.vo.clone())
        .bind(identity.group.clone())
        .bind(join(&identity.properties))
        .bind(scope.to_string())
        .bind(time::now())
        .bind(expires_at.to_string())
        .execute(executor)
        .await?;
        Ok(())
    }

    /// A new family's expiry.
    pub fn family_expiry(lifetime_s: u64) -> String {
        after(lifetime_s)
    }

    pub async fn refresh_row(&self, token_hash: &str) -> Result<Option<RefreshRow>, AuthError> {
        let row: Option<(String, String, String, String, String, String)> =
            sqlx::query_as(self.db.sql(
                "SELECT FamilyID, ClientID, Username, Scope, Status, ExpiresAt \
                 FROM RefreshTokens WHERE TokenHash = ?",
            ))
            .bind(token_hash.to_string())
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(
            |(family, client_id, username, scope, status, expires_at)| RefreshRow {
                family,
                client_id,
                username,
                scope,
                status,
                expires_at,
            },
        ))
    }

    /// Mark `old_hash` used and store its successor in one transaction;
    /// false when `old_hash` was no longer active (a concurrent rotation).
    pub async fn rotate(
        &self,
        old_hash: &str,
        new_hash: &str,
        row: &RefreshRow,
        identity: &Identity,
    ) -> Result<bool, AuthError> {
        let mut tx = self.db.pool().begin().await?;
        let used = sqlx::query(self.db.sql(
            "UPDATE RefreshTokens SET Status = 'used' WHERE TokenHash = ? AND Status = 'active'",
        ))
        .bind(old_hash.to_string())
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        self.insert_refresh_on(
            &mut *tx,
            new_hash,
            &row.family,
            &row.client_id,
            identity,
            &row.scope,
            &row.expires_at,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Revoke every token of `family`.
    pub async fn revoke_family(&self, family: &str) -> Result<(), AuthError> {
        sqlx::query(self.db.sql(
            "UPDATE RefreshTokens SET Status = 'revoked' WHERE FamilyID = ? AND Status <> 'revoked'",
        ))
        .bind(family.to_string())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Active sessions (refresh-token families) of `vo`, of one user or all.
    pub async fn list_sessions(
        &self,
        vo: &str,
        username: Option<&str>,
    ) -> Result<Vec<SessionRow>, AuthError> {
        const ALL: &str = "SELECT FamilyID, Username, GroupName, Scope, ClientID, \
             MIN(CreationTime), MAX(ExpiresAt) FROM RefreshTokens \
             WHERE VO = ? AND Status = 'active' AND ExpiresAt > ? \
             GROUP BY FamilyID, Username, GroupName, Scope, ClientID ORDER BY 6 LIMIT 10000";
        const ONE: &str = "SELECT FamilyID, Username, GroupName, Scope, ClientID, \
             MIN(CreationTime), MAX(ExpiresAt) FROM RefreshTokens \
             WHERE VO = ? AND Status = 'active' AND ExpiresAt > ? AND Username = ? \
             GROUP BY FamilyID, Username, GroupName, Scope, ClientID ORDER BY 6 LIMIT 10000";
        let q = sqlx::query_as(self.db.sql(if username.is_some() { ONE } else { ALL }))
            .bind(vo.to_string())
            .bind(time::now());
        let q = match username {
            Some(u) => q.bind(u.to_string()),
            None => q,
        };
        Ok(q.fetch_all(self.db.pool()).await?)
    }

    /// (VO, user) of a session, if it exists.
    pub async fn session_owner(&self, family: &str) -> Result<Option<(String, String)>, AuthError> {
        Ok(sqlx::query_as(
            self.db
                .sql("SELECT VO, Username FROM RefreshTokens WHERE FamilyID = ? LIMIT 1"),
        )
        .bind(family.to_string())
        .fetch_optional(self.db.pool())
        .await?)
    }

    /// Record a pilot secret (by its peppered hash).
    pub async fn insert_pilot_secret(
        &self,
        hash: &str,
        vo: &str,
        sites: &[String],
        uses: u32,
        lifetime_s: u64,
    ) -> Result<(), AuthError> {
        sqlx::query(self.db.sql(
            "INSERT INTO PilotSecrets (SecretHash, VO, Sites, UsesLeft, CreationTime, ExpiresAt) \
             VALUES (?, ?, ?, ?, ?, ?)",
        ))
        .bind(hash.to_string())
        .bind(vo.to_string())
        .bind(serde_json::to_string(sites).unwrap_or_else(|_| "[]".into()))
        .bind(i64::from(uses))
        .bind(time::now())
        .bind(in_future(lifetime_s))
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Spend one use of a pilot secret at `site`: its VO, or why not. The
    /// decrement is conditional, so a secret is never used more often than
    /// allowed, whatever the concurrency.
    pub async fn use_pilot_secret(&self, hash: &str, site: &str) -> Result<String, AuthError> {
        let row = sqlx::query(
            self.db
                .sql("SELECT VO, Sites, ExpiresAt FROM PilotSecrets WHERE SecretHash = ?"),
        )
        .bind(hash.to_string())
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else {
            return Err(AuthError::InvalidGrant("unknown pilot secret".into()));
        };
        use sqlx::Row as _;
        let vo: String = row.try_get(0)?;
        let sites: Vec<String> =
            serde_json::from_str(&row.try_get::<String, _>(1)?).unwrap_or_default();
        let expires: String = row.try_get(2)?;
        if expires <= time::now() {
            return Err(AuthError::InvalidGrant(
                "the pilot secret has expired".into(),
            ));
        }
        if !sites.is_empty() && !sites.iter().any(|s| s == site) {
            return Err(AuthError::InvalidGrant(format!(
                "the pilot secret is not valid at site '{}'",
                site.chars().take(64).collect::<String>()
            )));
        }
        let spent = sqlx::query(self.db.sql(
            "UPDATE PilotSecrets SET UsesLeft = UsesLeft - 1 WHERE SecretHash = ? AND UsesLeft > 0 AND ExpiresAt > ?",
        ))
        .bind(hash.to_string())
        .bind(time::now())
        .execute(self.db.pool())
        .await?;
        if spent.rows_affected() != 1 {
            return Err(AuthError::InvalidGrant(
                "the pilot secret is used up".into(),
            ));
        }
        Ok(vo)
    }

    /// Remember a federated login in progress (by the state's digest).
    pub async fn insert_federation_state(
        &self,
        state_hash: &str,
        user_code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<(), AuthError> {
        // Logins abandoned at the IdP leave states behind: a state outlives
        // no device flow, so older ones go.
        sqlx::query(
            self.db
                .sql("DELETE FROM FederationStates WHERE CreationTime < ?"),
        )
        .bind(time::ago(FEDERATION_STATE_LIFETIME_S))
        .execute(self.db.pool())
        .await?;
        sqlx::query(self.db.sql(
            "INSERT INTO FederationStates (StateHash, UserCode, Verifier, Nonce, CreationTime) VALUES (?, ?, ?, ?, ?)",
        ))
        .bind(state_hash.to_string())
        .bind(user_code.to_string())
        .bind(verifier.to_string())
        .bind(nonce.to_string())
        .bind(time::now())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Take a federated login's state once, if not older than
    /// [`FEDERATION_STATE_LIFETIME_S`]: (user code, PKCE verifier, nonce).
    pub async fn take_federation_state(
        &self,
        state_hash: &str,
    ) -> Result<Option<(String, String, String)>, AuthError> {
        let row: Option<(String, String, String)> = sqlx::query_as(
            self.db
                .sql("SELECT UserCode, Verifier, Nonce FROM FederationStates WHERE StateHash = ? AND CreationTime >= ?"),
        )
        .bind(state_hash.to_string())
        .bind(time::ago(FEDERATION_STATE_LIFETIME_S))
        .fetch_optional(self.db.pool())
        .await?;
        let gone = sqlx::query(
            self.db
                .sql("DELETE FROM FederationStates WHERE StateHash = ?"),
        )
        .bind(state_hash.to_string())
        .execute(self.db.pool())
        .await?;
        Ok(row.filter(|_| gone.rows_affected() == 1))
    }

    /// The sealed IdP refresh token of (`idp`, `user`), if one is kept.
    pub async fn idp_token(&self, idp: &str, user: &str) -> Result<Option<String>, AuthError> {
        Ok(sqlx::query_scalar(
            self.db
                .sql("SELECT Sealed FROM IdPTokens WHERE IdP = ? AND Username = ?"),
        )
        .bind(idp.to_string())
        .bind(user.to_string())
        .fetch_optional(self.db.pool())
        .await?)
    }

    /// Keep `sealed` as (`idp`, `user`)'s IdP refresh token, replacing any.
    pub async fn put_idp_token(
        &self,
        idp: &str,
        user: &str,
        sealed: &str,
    ) -> Result<(), AuthError> {
        let update = || {
            sqlx::query(self.db.sql(
                "UPDATE IdPTokens SET Sealed = ?, UpdateTime = ? WHERE IdP = ? AND Username = ?",
            ))
            .bind(sealed.to_string())
            .bind(time::now())
            .bind(idp.to_string())
            .bind(user.to_string())
            .execute(self.db.pool())
        };
        if update().await?.rows_affected() == 1 {
            return Ok(());
        }
        let inserted =
            sqlx::query(self.db.sql(
                "INSERT INTO IdPTokens (IdP, Username, Sealed, UpdateTime) VALUES (?, ?, ?, ?)",
            ))
            .bind(idp.to_string())
            .bind(user.to_string())
            .bind(sealed.to_string())
            .bind(time::now())
            .execute(self.db.pool())
            .await;
        match inserted {
            Ok(_) => Ok(()),
            // A concurrent first login inserted the row: the latest wins.
            Err(_) => update().await.map(drop).map_err(AuthError::from),
        }
    }
}

fn in_future(seconds: u64) -> String {
    let delta = chrono::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 1_000_000))
        .min(chrono::Duration::days(3650));
    time::format(chrono::Utc::now() + delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes() {
        let code = new_user_code();
        assert_eq!(normalise_user_code(&code).as_deref(), Some(code.as_str()));
        let shown = display_user_code(&code);
        assert_eq!(shown.len(), 9);
        assert_eq!(normalise_user_code(&shown.to_lowercase()), Some(code));
        assert_eq!(
            normalise_user_code("ABCD-EFGH"),
            None,
            "vowels are not used"
        );
        assert_eq!(normalise_user_code("BCDF"), None);
    }

    #[test]
    fn secrets_are_stored_as_digests() {
        let s = random_secret();
        assert_eq!(s.len(), 43);
        assert_eq!(digest(&s).len(), 64);
        assert_ne!(digest(&s), s);
    }
}
