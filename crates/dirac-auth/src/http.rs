//! HTTP endpoints: RFC 8628 / 6749 / 7009 shapes, form-encoded bodies,
//! JSON answers (HTML for the verification page). Codes and tokens are
//! never logged.

use std::sync::Arc;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::scope;
use crate::store::{self, Store};
use crate::{AuthError, AuthServer};

pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

type Srv = State<Arc<AuthServer>>;

pub fn router(server: Arc<AuthServer>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/api/auth/device", post(device))
        .route(
            "/api/auth/device/verify",
            get(verify_page).post(verify_submit),
        )
        .route(crate::federation::CALLBACK, get(federation_callback))
        .route("/api/auth/authorize", get(authorize))
        .route("/api/auth/token", post(token))
        .route("/api/auth/revoke", post(revoke))
        .route("/api/auth/userinfo", get(userinfo))
        .with_state(server)
}

/// Request parameters; a repeated parameter is an error (RFC 6749 §3.1).
struct Params(Vec<(String, String)>);

impl Params {
    fn from_form(
        form: Result<Form<Vec<(String, String)>>, FormRejection>,
    ) -> Result<Self, AuthError> {
        form.map(|Form(p)| Params(p)).map_err(|e| {
            AuthError::InvalidRequest(format!("expected a form-encoded body: {}", e.body_text()))
        })
    }

    /// A query string's parameters (an unparsable one has none).
    fn from_query(query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Self {
        Params(query.map(|Query(q)| q).unwrap_or_default())
    }

    /// The first parameter given more than once (RFC 6749 §3.1 forbids it).
    fn repeated(&self) -> Option<&str> {
        self.0
            .iter()
            .enumerate()
            .find(|(i, (k, _))| self.0[..*i].iter().any(|(seen, _)| seen == k))
            .map(|(_, (k, _))| k.as_str())
    }

    /// The value of `name`, None when absent or repeated.
    fn one(&self, name: &str) -> Option<&str> {
        self.get(name).ok().flatten()
    }

    fn get(&self, name: &str) -> Result<Option<&str>, AuthError> {
        let mut values = self.0.iter().filter(|(k, _)| k == name);
        let first = values.next().map(|(_, v)| v.as_str());
        if values.next().is_some() {
            return Err(AuthError::InvalidRequest(format!(
                "parameter '{name}' is repeated"
            )));
        }
        Ok(first)
    }

    fn require(&self, name: &str) -> Result<&str, AuthError> {
        self.get(name)?
            .filter(|v| !v.is_empty())
            .ok_or_else(|| AuthError::InvalidRequest(format!("parameter '{name}' is required")))
    }
}

/// A JSON answer that no cache may keep (RFC 6749 §5.1).
fn no_store(body: serde_json::Value) -> Response {
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

async fn discovery(State(s): Srv) -> Json<serde_json::Value> {
    let base = &s.settings.public_url;
    let mut scopes = Vec::new();
    for (vo, voc) in &s.config.registry.vos {
        scopes.push(format!("vo:{vo}"));
        for group in voc.groups.keys() {
            scopes.push(format!("group:{group}"));
        }
    }
    let mut properties: Vec<&String> = s
        .config
        .registry
        .vos
        .values()
        .flat_map(|v| v.groups.values())
        .flat_map(|g| g.properties.iter())
        .collect();
    properties.sort();
    properties.dedup();
    scopes.extend(properties.into_iter().map(|p| format!("property:{p}")));
    Json(json!({
        "issuer": s.issuer.issuer(),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "device_authorization_endpoint": format!("{base}/api/auth/device"),
        "authorization_endpoint": format!("{base}/api/auth/authorize"),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint": format!("{base}/api/auth/token"),
        "revocation_endpoint": format!("{base}/api/auth/revoke"),
        "userinfo_endpoint": format!("{base}/api/auth/userinfo"),
        "grant_types_supported": [DEVICE_GRANT, "authorization_code", "refresh_token", EXCHANGE_GRANT],
        "scopes_supported": scopes,
        "response_types_supported": ["code"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "subject_types_supported": ["public"],
        "claims_supported": ["sub", "vo", "dirac_group", "dirac_properties", "preferred_username"],
    }))
}

async fn jwks(State(s): Srv) -> Json<serde_json::Value> {
    Json(s.issuer.jwks())
}

/// RFC 8628 §3.1–3.2.
async fn device(
    State(s): Srv,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, AuthError> {
    let p = Params::from_form(form)?;
    let client_id = p.require("client_id")?;
    let scope = scope::parse(p.get("scope")?.unwrap_or_default(), &s.config)
        .map_err(AuthError::InvalidScope)?;
    let device_code = store::random_secret();
    let user_code = s
        .store
        .create_device_flow(
            &store::digest(&device_code),
            client_id,
            &scope.to_string(),
            s.settings.device_lifetime_s,
            s.settings.poll_interval_s,
            None,
        )
        .await?;
    let shown = store::display_user_code(&user_code);
    let verify = format!("{}/api/auth/device/verify", s.settings.public_url);
    tracing::info!(vo = %scope.vo, group = %scope.group, "device flow started");
    Ok(no_store(json!({
        "device_code": device_code,
        "user_code": shown,
        "verification_uri": verify,
        "verification_uri_complete": format!("{verify}?user_code={shown}"),
        "expires_in": s.settings.device_lifetime_s,
        "interval": s.settings.poll_interval_s,
    })))
}

/// RFC 6749 §5.1 / RFC 8628 §3.4–3.5.
async fn token(
    State(s): Srv,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, AuthError> {
    let p = Params::from_form(form)?;
    match p.require("grant_type")? {
        DEVICE_GRANT => {
            let device_code = p.require("device_code")?;
            let client_id = p.require("client_id")?;
            let approved = s.store.poll(&store::digest(device_code), client_id).await?;
            tracing::info!(sub = %approved.identity.sub, group = %approved.identity.group, "device flow exchanged");
            new_session(&s, &approved).await
        }
        "authorization_code" => {
            let approved = s
                .store
                .exchange_authorization_code(
                    p.require("code")?,
                    p.require("client_id")?,
                    p.require("redirect_uri")?,
                    p.require("code_verifier")?,
                )
                .await?;
            tracing::info!(sub = %approved.identity.sub, group = %approved.identity.group, "authorization code exchanged");
            new_session(&s, &approved).await
        }
        "refresh_token" => {
            let presented = store::digest(p.require("refresh_token")?);
            refresh(&s, &presented, p.get("client_id")?).await
        }
        PILOT_GRANT => pilot_token(&s, &p).await,
        EXCHANGE_GRANT => exchange(&s, &p).await,
        other => Err(AuthError::UnsupportedGrantType(
            other.chars().take(64).collect(),
        )),
    }
}

/// Tokens of a new login: a refresh-token family and an access token.
async fn new_session(s: &AuthServer, approved: &store::Approved) -> Result<Response, AuthError> {
    let refresh = store::random_secret();
    // The family id is an identifier, not a credential.
    let family = store::random_secret();
    s.store
        .insert_refresh(
            &store::digest(&refresh),
            &family,
            &approved.client_id,
            &approved.identity,
            &approved.scope,
            &Store::family_expiry(s.settings.refresh_lifetime_s),
        )
        .await?;
    token_response(s, &approved.identity, refresh, &approved.scope)
}

/// RFC 6749 §4.1 with PKCE S256 (RFC 7636): the user approves on the
/// verification page (the VO's IdP, or the development login), then is sent
/// back to the client's registered redirect URI with a one-time code.
async fn authorize(
    State(s): Srv,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let params = Params::from_query(query);
    let get = |k: &str| params.one(k);
    // Nothing is redirected before the client and its redirect URI are known.
    let refuse = |why: &str| {
        page(
            StatusCode::BAD_REQUEST,
            "Authorization refused",
            &format!("<p>{}</p>", escape(why)),
        )
    };
    if let Some(name) = params.repeated() {
        return refuse(&format!("parameter '{name}' is repeated"));
    }
    let Some(client_id) = get("client_id") else {
        return refuse("client_id is required");
    };
    let Some(client) = s.config.services.auth.clients.get(client_id) else {
        return refuse("unknown client_id");
    };
    let Some(redirect_uri) = get("redirect_uri") else {
        return refuse("redirect_uri is required");
    };
    if !redirect_allowed(&client.redirect_uris, redirect_uri) {
        return refuse("redirect_uri is not registered for this client");
    }
    if get("response_type") != Some("code") {
        return refuse("response_type must be code");
    }
    if get("code_challenge_method") != Some("S256") {
        return refuse("PKCE with code_challenge_method=S256 is required");
    }
    let challenge = get("code_challenge").unwrap_or_default();
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return refuse("code_challenge must be a base64url SHA-256 (43 characters)");
    }
    let scope = match scope::parse(get("scope").unwrap_or_default(), &s.config) {
        Ok(scope) => scope,
        Err(e) => return refuse(&e),
    };
    let state = get("state").map(|v| v.chars().take(512).collect());
    let request = store::AuthzRequest {
        redirect_uri: redirect_uri.to_string(),
        code_challenge: challenge.to_string(),
        state,
    };
    // The device code column holds an unknown secret until approval.
    let placeholder = store::digest(&store::random_secret());
    let user_code = match s
        .store
        .create_device_flow(
            &placeholder,
            client_id,
            &scope.to_string(),
            s.settings.device_lifetime_s,
            s.settings.poll_interval_s,
            Some(&request),
        )
        .await
    {
        Ok(code) => code,
        Err(e) => return server_error(&e),
    };
    tracing::info!(vo = %scope.vo, group = %scope.group, "authorization flow started");
    see_other(&format!(
        "{}/api/auth/device/verify?user_code={user_code}",
        s.settings.public_url
    ))
}

/// Exact match, except that a loopback redirect may use any port (RFC 8252 §7.3).
fn redirect_allowed(registered: &[String], asked: &str) -> bool {
    let without_port = |u: &str| -> Option<String> {
        let rest = u.strip_prefix("http://")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        matches!(host, "127.0.0.1" | "localhost" | "[::1]").then(|| format!("http://{host}{path}"))
    };
    registered.iter().any(|r| {
        r == asked || matches!((without_port(r), without_port(asked)), (Some(a), Some(b)) if a == b)
    })
}

fn see_other(url: &str) -> Response {
    match HeaderValue::from_str(url) {
        Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        Err(_) => page(
            StatusCode::BAD_REQUEST,
            "Bad redirect",
            "<p>The redirect URL is not valid.</p>",
        ),
    }
}

/// After an approval: an authorization-code flow sends the browser back to
/// its client with a code; a device flow shows `done`.
async fn approved_page(s: &AuthServer, user_code: &str, done: Response) -> Response {
    match s.store.issue_authorization_code(user_code).await {
        Ok(None) => done,
        Ok(Some((redirect_uri, state, code))) => {
            back_to_client(&redirect_uri, &format!("code={code}"), state)
        }
        Err(e) => server_error(&e),
    }
}

/// The client's redirect URI with `answer` and its `state` added.
fn back_to_client(redirect_uri: &str, answer: &str, state: Option<String>) -> Response {
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    let state = state
        .map(|st| format!("&state={}", crate::federation::enc(&st)))
        .unwrap_or_default();
    see_other(&format!("{redirect_uri}{sep}{answer}{state}"))
}

/// RFC 8693 token exchange.
pub const EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Trade one of our access tokens for another of the same user with another
/// scope (group, properties) the registry grants. The new token never
/// outlives the presented one, so exchanging cannot prolong a session; job
/// tokens are not exchanged.
async fn exchange(s: &AuthServer, p: &Params) -> Result<Response, AuthError> {
    if p.require("subject_token_type")? != ACCESS_TOKEN_TYPE {
        return Err(AuthError::InvalidRequest(
            "subject_token_type must be an access token".into(),
        ));
    }
    if p.get("requested_token_type")?
        .is_some_and(|t| t != ACCESS_TOKEN_TYPE)
    {
        return Err(AuthError::InvalidRequest(
            "only access tokens are issued by exchange".into(),
        ));
    }
    let claims = s
        .verifier
        .verify_claims(p.require("subject_token")?)
        .map_err(|e| AuthError::InvalidGrant(format!("subject_token: {e}")))?;
    let left = u64::try_from(claims.exp - chrono::Utc::now().timestamp()).unwrap_or(0);
    let identity = dirac_core::auth::Identity::from(claims);
    if identity.job.is_some() {
        return Err(AuthError::InvalidGrant(
            "job tokens cannot be exchanged".into(),
        ));
    }
    let requested = p.get("scope")?.unwrap_or_default();
    let requested = if requested.split_whitespace().any(|t| t.starts_with("vo:")) {
        requested.to_string()
    } else {
        format!("vo:{} {requested}", identity.vo)
    };
    let scope = scope::parse(&requested, &s.config).map_err(AuthError::InvalidScope)?;
    if scope.vo != identity.vo {
        return Err(AuthError::InvalidScope(
            "a token cannot be exchanged into another VO".into(),
        ));
    }
    let new =
        scope::regrant(&s.config, &scope, &identity.username).map_err(AuthError::InvalidScope)?;
    let lifetime = left.min(s.settings.access_lifetime_s);
    if lifetime == 0 {
        return Err(AuthError::InvalidGrant("subject_token expires now".into()));
    }
    let access = s.issuer.issue(&new, lifetime)?;
    tracing::info!(sub = %new.sub, from = %identity.group, to = %new.group, "token exchanged");
    Ok(no_store(json!({
        "access_token": access,
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "scope": scope.to_string(),
    })))
}

/// After a denial: an authorization-code flow sends the browser back to
/// its client with `error=access_denied`; a device flow shows `done`.
async fn denied_page(s: &AuthServer, user_code: &str, done: Response) -> Response {
    match s.store.authorization_redirect(user_code).await {
        Ok(None) => done,
        Ok(Some((redirect_uri, state))) => {
            back_to_client(&redirect_uri, "error=access_denied", state)
        }
        Err(e) => server_error(&e),
    }
}

/// A pilot exchanges its one-time secret for a short GenericPilot token.
pub const PILOT_GRANT: &str = "urn:dirac:params:oauth:grant-type:pilot-secret";

async fn pilot_token(s: &AuthServer, p: &Params) -> Result<Response, AuthError> {
    let secret = p.require("pilot_secret")?;
    let stamp = p.require("pilot_stamp")?;
    if stamp.is_empty()
        || stamp.len() > 32
        || !stamp
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(AuthError::InvalidRequest(
            "pilot_stamp must have 1 to 32 characters of [A-Za-z0-9_-]".into(),
        ));
    }
    let site = p.get("site")?.unwrap_or_default();
    let vo = s
        .store
        .use_pilot_secret(&s.pilot_hash(secret), site)
        .await?;
    let identity = dirac_core::auth::Identity {
        sub: format!("{vo}:pilot:{stamp}"),
        username: format!("pilot-{stamp}"),
        vo: vo.clone(),
        group: "pilot".into(),
        properties: vec!["GenericPilot".into()],
        job: None,
    };
    let access = s
        .issuer
        .issue(&identity, s.settings.pilot_token_lifetime_s)?;
    tracing::info!(vo = %vo, pilot = %stamp, "pilot secret exchanged");
    Ok(no_store(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": s.settings.pilot_token_lifetime_s,
    })))
}

/// Rotate a refresh token; a used one means it was stolen or replayed, so
/// its whole family is revoked (RFC 6749 §10.4, OAuth 2.0 Security BCP).
async fn refresh(
    s: &AuthServer,
    presented: &str,
    client_id: Option<&str>,
) -> Result<Response, AuthError> {
    let invalid = |m: &str| AuthError::InvalidGrant(m.to_string());
    let row = s
        .store
        .refresh_row(presented)
        .await?
        .ok_or_else(|| invalid("unknown refresh token"))?;
    match row.status.as_str() {
        store::ACTIVE => {}
        store::USED => {
            s.store.revoke_family(&row.family).await?;
            tracing::warn!(user = %row.username, "refresh token reuse detected, session revoked");
            return Err(invalid(
                "refresh token was already used; the session is revoked",
            ));
        }
        _ => return Err(invalid("refresh token is revoked")),
    }
    if client_id.is_some_and(|c| c != row.client_id) {
        return Err(invalid("refresh token was issued to another client"));
    }
    if row.expires_at <= dirac_core::time::now() {
        return Err(invalid("refresh token has expired"));
    }
    // The registry may have changed since the login: grant again.
    let identity = scope::parse(&row.scope, &s.config)
        .and_then(|scope| scope::regrant(&s.config, &scope, &row.username));
    let identity = match identity {
        Ok(identity) => identity,
        Err(reason) => {
            s.store.revoke_family(&row.family).await?;
            return Err(AuthError::InvalidGrant(format!(
                "the registry no longer grants this session: {reason}"
            )));
        }
    };
    let next = store::random_secret();
    if !s
        .store
        .rotate(presented, &store::digest(&next), &row, &identity)
        .await?
    {
        // Lost a race with another use of the same token: that is reuse too.
        s.store.revoke_family(&row.family).await?;
        return Err(invalid(
            "refresh token was already used; the session is revoked",
        ));
    }
    token_response(s, &identity, next, &row.scope)
}

fn token_response(
    s: &AuthServer,
    identity: &dirac_core::auth::Identity,
    refresh_token: String,
    scope: &str,
) -> Result<Response, AuthError> {
    let access = s.issuer.issue(identity, s.settings.access_lifetime_s)?;
    Ok(no_store(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": s.settings.access_lifetime_s,
        "refresh_token": refresh_token,
        "scope": scope,
    })))
}

/// RFC 7009: 200 whatever the token was; a refresh token's family is
/// revoked. Access tokens are short-lived and not revocable.
async fn revoke(
    State(s): Srv,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Result<Response, AuthError> {
    let p = Params::from_form(form)?;
    let token = p.require("token")?;
    if let Some(row) = s.store.refresh_row(&store::digest(token)).await? {
        s.store.revoke_family(&row.family).await?;
        tracing::info!(user = %row.username, "refresh token family revoked");
    }
    Ok(no_store(json!({})))
}

async fn userinfo(State(s): Srv, headers: HeaderMap) -> Result<Response, AuthError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        })
        .map(|(_, t)| t.trim())
        .ok_or_else(|| AuthError::InvalidToken("missing bearer token".into()))?;
    let identity = s
        .verifier
        .verify(token)
        .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
    Ok(no_store(json!({
        "sub": identity.sub,
        "vo": identity.vo,
        "dirac_group": identity.group,
        "dirac_properties": identity.properties,
        "preferred_username": identity.username,
    })))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    );
    let mut response = (status, Html(html)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn no_idp() -> Response {
    page(
        StatusCode::NOT_IMPLEMENTED,
        "Login not available",
        "<p>This installation has no identity provider configured, and the built-in \
         development login is disabled. Federation with an external identity provider \
         is not implemented yet.</p>",
    )
}

fn bad_code() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Unknown or expired code",
        "<p>This code is unknown, already used or expired. Start the login again on your device.</p>",
    )
}

fn server_error(e: &AuthError) -> Response {
    tracing::error!(error = %e, "verification page failure");
    page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal error",
        "<p>Try again later.</p>",
    )
}

/// The page the user opens (RFC 8628 §3.3).
async fn verify_page(
    State(s): Srv,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let code = query.ok().and_then(|Query(q)| {
        q.into_iter()
            .find(|(k, _)| k == "user_code")
            .and_then(|(_, v)| store::normalise_user_code(&v))
    });
    let Some(code) = code else {
        return bad_code();
    };
    let flow = match s.store.pending_flow(&code).await {
        Ok(Some(flow)) => flow,
        Ok(None) => return bad_code(),
        Err(e) => return server_error(&e),
    };
    // A VO with an identity provider: the user logs in there.
    if let Some(idp) = vo_idp(&s, &flow.scope) {
        return match crate::federation::start(&s, &flow.user_code, &idp).await {
            Ok(url) => match HeaderValue::from_str(&url) {
                Ok(location) => {
                    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
                }
                Err(_) => page(
                    StatusCode::BAD_GATEWAY,
                    "Login failed",
                    "<p>Bad identity provider URL.</p>",
                ),
            },
            Err(e) => page(
                StatusCode::BAD_GATEWAY,
                "Login failed",
                &format!(
                    "<p>The identity provider cannot be reached: {}</p>",
                    escape(&e.to_string())
                ),
            ),
        };
    }
    if !s.settings.dev_login {
        return no_idp();
    }
    let body = format!(
        "<p style=\"background:#c00;color:#fff;padding:1em;font-weight:bold\">\
         DEVELOPMENT LOGIN: no identity provider checks who you are. Any registered user \
         name is accepted. Never enable this on a production installation.</p>\
         <p>A device asks for access with the scope <code>{scope}</code>.</p>\
         <form method=\"post\" action=\"{base}/api/auth/device/verify\">\
         <input type=\"hidden\" name=\"user_code\" value=\"{code}\">\
         <label>User name <input name=\"username\" autofocus required></label> \
         <button name=\"action\" value=\"approve\">Approve</button> \
         <button name=\"action\" value=\"deny\" formnovalidate>Deny</button></form>",
        scope = escape(&flow.scope),
        base = escape(&s.settings.public_url),
        code = escape(&store::display_user_code(&flow.user_code)),
    );
    page(StatusCode::OK, "Device login", &body)
}

/// The development login form's submission.
async fn verify_submit(
    State(s): Srv,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    if !s.settings.dev_login {
        return no_idp();
    }
    let p = match Params::from_form(form) {
        Ok(p) => p,
        Err(_) => return bad_code(),
    };
    let value = |name: &str| p.get(name).ok().flatten().unwrap_or_default();
    let Some(code) = store::normalise_user_code(value("user_code")) else {
        return bad_code();
    };
    let flow = match s.store.pending_flow(&code).await {
        Ok(Some(flow)) => flow,
        Ok(None) => return bad_code(),
        Err(e) => return server_error(&e),
    };
    if value("action") == "deny" {
        return match s.store.deny(&code).await {
            Ok(true) => {
                let done = page(
                    StatusCode::OK,
                    "Request denied",
                    "<p>The device will not get access. You can close this window.</p>",
                );
                denied_page(&s, &code, done).await
            }
            Ok(false) => bad_code(),
            Err(e) => server_error(&e),
        };
    }
    // The development login never stands in for a VO's identity provider.
    if vo_idp(&s, &flow.scope).is_some() {
        return page(
            StatusCode::FORBIDDEN,
            "Approval refused",
            "<p>This VO logs in through its identity provider: open the verification link again.</p>",
        );
    }
    let username = value("username").trim();
    let identity = scope::parse(&flow.scope, &s.config)
        .and_then(|scope| scope::grant(&s.config, &scope, username));
    let identity = match identity {
        Ok(identity) => identity,
        Err(reason) => {
            return page(
                StatusCode::FORBIDDEN,
                "Approval refused",
                &format!("<p>{}</p>", escape(&reason)),
            );
        }
    };
    match s.store.approve(&code, &identity).await {
        Ok(true) => {
            tracing::info!(user = %identity.username, vo = %identity.vo, group = %identity.group, "device flow approved (development login)");
            let done = page(
                StatusCode::OK,
                "Device approved",
                &format!(
                    "<p>Logged in as <b>{}</b> in group <b>{}</b>. Return to your device; \
                     you can close this window.</p>",
                    escape(&identity.username),
                    escape(&identity.group)
                ),
            );
            approved_page(&s, &code, done).await
        }
        Ok(false) => bad_code(),
        Err(e) => server_error(&e),
    }
}

/// The identity provider of the VO a device flow's scope names.
fn vo_idp(s: &crate::AuthServer, scope: &str) -> Option<dirac_core::config::IdpConfig> {
    let scope = scope::parse(scope, &s.config).ok()?;
    s.config.registry.vos.get(&scope.vo)?.idp.clone()
}

/// The identity provider sends the user back here with a code.
async fn federation_callback(
    State(s): Srv,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let params = Params::from_query(query);
    let get = |k: &str| params.one(k);
    if let Some(error) = get("error") {
        return page(
            StatusCode::BAD_REQUEST,
            "Login failed",
            &format!("<p>The identity provider answered: {}</p>", escape(error)),
        );
    }
    let (Some(state), Some(code)) = (get("state"), get("code")) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Login failed",
            "<p>The answer lacks its code or state.</p>",
        );
    };
    match crate::federation::finish(&s, state, code).await {
        Ok(crate::federation::Outcome::Refused(reason, user_code)) => {
            let refused = page(
                StatusCode::FORBIDDEN,
                "Login refused",
                &format!("<p>{}</p>", escape(&reason)),
            );
            denied_page(&s, &user_code, refused).await
        }
        Ok(crate::federation::Outcome::Approved(identity, user_code)) => {
            let done = page(
                StatusCode::OK,
                "Logged in",
                &format!(
                    "<p>Logged in as {} in group {} of {}. You can return to your terminal.</p>",
                    escape(&identity.username),
                    escape(&identity.group),
                    escape(&identity.vo)
                ),
            );
            approved_page(&s, &user_code, done).await
        }
        Err(e) => page(
            StatusCode::FORBIDDEN,
            "Login refused",
            &format!("<p>{}</p>", escape(&e.to_string())),
        ),
    }
}
