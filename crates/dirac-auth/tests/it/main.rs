//! The authorization server driven in process through its router, on every
//! database backend that is reachable.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use dirac_auth::{AuthServer, AuthSettings};
use dirac_core::auth::TokenIssuer;
use dirac_core::config::DiracConfig;
use dirac_core::db::Backend;
use dirac_core::testing::{ALL_BACKENDS, TestDb};
use serde_json::Value;
use tower::ServiceExt as _;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const CLIENT: &str = "dirac-cli";

const REGISTRY: &str = r"
Registry:
  VOs:
    lhcb:
      DefaultGroup: lhcb_user
      Users:
        alice: {}
        bob: {}
      Groups:
        lhcb_user: {Properties: [NormalUser], Users: [alice, bob]}
        lhcb_prod: {Properties: [NormalUser, ProductionManagement], Users: [alice]}
    dteam:
      DefaultGroup: dteam_user
      Groups:
        dteam_user: {Properties: [NormalUser]}
Services:
  Auth:
    Clients:
      notebook: {RedirectURIs: ['http://127.0.0.1/callback', 'https://hub.example.org/oauth']}
";

struct Harness {
    router: Router,
    server: Arc<AuthServer>,
    db: TestDb,
    _keys: tempfile::TempDir,
}

impl Harness {
    async fn new(backend: Backend, tweak: impl FnOnce(&mut AuthSettings)) -> Option<Harness> {
        let db = TestDb::new(backend).await?;
        let config = DiracConfig::from_yaml(REGISTRY, "test", &BTreeMap::new()).expect("config");
        let keys = tempfile::tempdir().expect("tempdir");
        let issuer = TokenIssuer::load_or_create(
            &keys.path().join("key.pem"),
            "https://auth.test",
            "dirac-rs",
        )
        .expect("key");
        let mut settings = AuthSettings {
            dev_login: true,
            poll_interval_s: 0,
            public_url: "https://auth.test/".into(),
            ..AuthSettings::default()
        };
        tweak(&mut settings);
        let server = AuthServer::open(db.db.clone(), Arc::new(config), Arc::new(issuer), settings)
            .await
            .expect("open");
        // Opening twice is harmless: migrations are applied once.
        let _ = AuthServer::open(
            db.db.clone(),
            Arc::new(DiracConfig::default()),
            Arc::new(
                TokenIssuer::load_or_create(&keys.path().join("key.pem"), "x", "y").expect("key"),
            ),
            AuthSettings::default(),
        )
        .await
        .expect("reopen");
        Some(Harness {
            router: server.router(),
            server: server.clone(),
            db,
            _keys: keys,
        })
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, String) {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let (status, body) = self.post_raw(path, form).await;
        (status, serde_json::from_str(&body).expect("json"))
    }

    async fn post_raw(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect();
        self.send(
            Request::post(path)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body.join("&")))
                .expect("request"),
        )
        .await
    }

    async fn get(&self, path: &str, bearer: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::get(path);
        if let Some(token) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.send(request.body(Body::empty()).expect("request"))
            .await
    }

    /// Start a flow; returns the device response.
    async fn start(&self, scope: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/auth/device",
                &[("client_id", CLIENT), ("scope", scope)],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn approve(&self, user_code: &str, username: &str) -> (StatusCode, String) {
        self.post_raw(
            "/api/auth/device/verify",
            &[
                ("user_code", user_code),
                ("username", username),
                ("action", "approve"),
            ],
        )
        .await
    }

    async fn poll(&self, device_code: &str) -> (StatusCode, Value) {
        self.post(
            "/api/auth/token",
            &[
                ("grant_type", DEVICE_GRANT),
                ("device_code", device_code),
                ("client_id", CLIENT),
            ],
        )
        .await
    }

    /// A full login: the token response.
    async fn login(&self, scope: &str, username: &str) -> Value {
        let flow = self.start(scope).await;
        let (status, page) = self.approve(str_of(&flow, "user_code"), username).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let (status, tokens) = self.poll(str_of(&flow, "device_code")).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        tokens
    }

    async fn refresh(&self, refresh_token: &str) -> (StatusCode, Value) {
        self.post(
            "/api/auth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    async fn cleanup(self) {
        self.db.cleanup().await;
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no '{key}' in {v}"))
}

fn assert_error(got: &(StatusCode, Value), status: StatusCode, error: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"], error, "{}", got.1);
    assert!(got.1["error_description"].is_string(), "{}", got.1);
}

/// Run `test` on every reachable backend.
macro_rules! on_all_backends {
    ($tweak:expr, |$h:ident| $body:block) => {
        for backend in ALL_BACKENDS {
            let Some($h) = Harness::new(backend, $tweak).await else {
                continue;
            };
            $body
            $h.cleanup().await;
        }
    };
}

#[tokio::test]
async fn device_flow_end_to_end() {
    on_all_backends!(|_| {}, |h| {
        let flow = h.start("vo:lhcb property:ProductionManagement").await;
        let user_code = str_of(&flow, "user_code");
        assert_eq!(user_code.len(), 9);
        assert_eq!(&user_code[4..5], "-");
        assert_eq!(
            str_of(&flow, "verification_uri"),
            "https://auth.test/api/auth/device/verify"
        );
        assert!(str_of(&flow, "verification_uri_complete").ends_with(user_code));
        assert_eq!(flow["expires_in"], 600);
        assert_eq!(flow["interval"], 0);

        let pending = h.poll(str_of(&flow, "device_code")).await;
        assert_error(&pending, StatusCode::BAD_REQUEST, "authorization_pending");

        // The page shows the development-login form, lower-case codes work.
        let path = format!(
            "/api/auth/device/verify?user_code={}",
            user_code.to_lowercase()
        );
        let (status, page) = h.get(&path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("DEVELOPMENT LOGIN"));
        assert!(page.contains("name=\"username\""));
        assert!(page.contains(user_code));

        let (status, page) = h.approve(user_code, "alice").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("alice"));

        let (status, tokens) = h.poll(str_of(&flow, "device_code")).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        assert_eq!(tokens["token_type"], "Bearer");
        assert_eq!(tokens["expires_in"], 1200);
        assert_eq!(
            tokens["scope"],
            "vo:lhcb group:lhcb_user property:ProductionManagement"
        );
        assert!(str_of(&tokens, "refresh_token").len() >= 43);

        let (status, info) = h
            .get("/api/auth/userinfo", Some(str_of(&tokens, "access_token")))
            .await;
        assert_eq!(status, StatusCode::OK, "{info}");
        let info: Value = serde_json::from_str(&info).expect("json");
        assert_eq!(info["sub"], "lhcb:alice");
        assert_eq!(info["vo"], "lhcb");
        assert_eq!(info["dirac_group"], "lhcb_user");
        assert_eq!(
            info["dirac_properties"],
            serde_json::json!(["NormalUser", "ProductionManagement"])
        );
        assert_eq!(info["preferred_username"], "alice");

        // Exactly once.
        let again = h.poll(str_of(&flow, "device_code")).await;
        assert_error(&again, StatusCode::BAD_REQUEST, "invalid_grant");
        // The code can no longer be approved.
        let (status, _) = h.approve(user_code, "alice").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    });
}

#[tokio::test]
async fn slow_down_grows_the_interval() {
    on_all_backends!(|s| s.poll_interval_s = 5, |h| {
        let flow = h.start("vo:lhcb").await;
        assert_eq!(flow["interval"], 5);
        let device_code = str_of(&flow, "device_code");
        let first = h.poll(device_code).await;
        assert_error(&first, StatusCode::BAD_REQUEST, "authorization_pending");
        let second = h.poll(device_code).await;
        assert_error(&second, StatusCode::BAD_REQUEST, "slow_down");
        assert!(
            second.1["error_description"]
                .as_str()
                .is_some_and(|d| d.contains("10 s")),
            "{}",
            second.1
        );
        let third = h.poll(device_code).await;
        assert_error(&third, StatusCode::BAD_REQUEST, "slow_down");
        assert!(
            third.1["error_description"]
                .as_str()
                .is_some_and(|d| d.contains("15 s"))
        );
    });
}

#[tokio::test]
async fn expired_codes() {
    on_all_backends!(|s| s.device_lifetime_s = 0, |h| {
        let flow = h.start("vo:lhcb").await;
        let expired = h.poll(str_of(&flow, "device_code")).await;
        assert_error(&expired, StatusCode::BAD_REQUEST, "expired_token");
        let path = format!(
            "/api/auth/device/verify?user_code={}",
            str_of(&flow, "user_code")
        );
        let (status, page) = h.get(&path, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
        let (status, _) = h.approve(str_of(&flow, "user_code"), "alice").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    });
}

#[tokio::test]
async fn unknown_codes_and_clients() {
    on_all_backends!(|_| {}, |h| {
        let unknown = h.poll("not-a-device-code").await;
        assert_error(&unknown, StatusCode::BAD_REQUEST, "invalid_grant");
        let (status, _) = h
            .get("/api/auth/device/verify?user_code=BCDF-GHJK", None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = h
            .get("/api/auth/device/verify?user_code=%3Cb%3E", None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let flow = h.start("vo:lhcb").await;
        let other_client = h
            .post(
                "/api/auth/token",
                &[
                    ("grant_type", DEVICE_GRANT),
                    ("device_code", str_of(&flow, "device_code")),
                    ("client_id", "someone-else"),
                ],
            )
            .await;
        assert_error(&other_client, StatusCode::BAD_REQUEST, "invalid_grant");
    });
}

#[tokio::test]
async fn bad_scopes_are_invalid_scope() {
    on_all_backends!(|_| {}, |h| {
        for (scope, fragment) in [
            ("", "vo:<vo> scope is required"),
            ("group:lhcb_user", "vo:<vo> scope is required"),
            ("vo:lhcb vo:dteam", "exactly one"),
            ("vo:atlas", "unknown VO"),
            ("vo:lhcb group:dteam_user", "unknown group"),
            ("vo:lhcb openid", "unknown scope token"),
        ] {
            let got = h
                .post(
                    "/api/auth/device",
                    &[("client_id", CLIENT), ("scope", scope)],
                )
                .await;
            assert_error(&got, StatusCode::BAD_REQUEST, "invalid_scope");
            let description = got.1["error_description"].as_str().unwrap_or_default();
            assert!(description.contains(fragment), "{scope}: {description}");
        }
        let no_client = h.post("/api/auth/device", &[("scope", "vo:lhcb")]).await;
        assert_error(&no_client, StatusCode::BAD_REQUEST, "invalid_request");
        let repeated = h
            .post(
                "/api/auth/device",
                &[
                    ("client_id", CLIENT),
                    ("scope", "vo:lhcb"),
                    ("scope", "vo:lhcb"),
                ],
            )
            .await;
        assert_error(&repeated, StatusCode::BAD_REQUEST, "invalid_request");
    });
}

#[tokio::test]
async fn approval_is_refused_outside_the_registry() {
    on_all_backends!(|_| {}, |h| {
        let flow = h.start("vo:lhcb group:lhcb_prod").await;
        let user_code = str_of(&flow, "user_code");
        let (status, page) = h.approve(user_code, "bob").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(page.contains("not a member of group"), "{page}");
        let (status, page) = h.approve(user_code, "<script>").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(!page.contains("<script>"), "user input is escaped");
        let pending = h.poll(str_of(&flow, "device_code")).await;
        assert_error(&pending, StatusCode::BAD_REQUEST, "authorization_pending");

        // A property none of the user's groups holds.
        let flow = h.start("vo:lhcb property:ProductionManagement").await;
        let (status, page) = h.approve(str_of(&flow, "user_code"), "bob").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(page.contains("ProductionManagement"), "{page}");

        // The user may deny instead.
        let (status, _) = h
            .post_raw(
                "/api/auth/device/verify",
                &[
                    ("user_code", str_of(&flow, "user_code")),
                    ("action", "deny"),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let denied = h.poll(str_of(&flow, "device_code")).await;
        assert_error(&denied, StatusCode::BAD_REQUEST, "access_denied");
    });
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    on_all_backends!(|_| {}, |h| {
        let first = h.login("vo:lhcb group:lhcb_prod", "alice").await;
        let r1 = str_of(&first, "refresh_token");

        let (status, second) = h.refresh(r1).await;
        assert_eq!(status, StatusCode::OK, "{second}");
        let r2 = str_of(&second, "refresh_token");
        assert_ne!(r1, r2);
        assert_eq!(second["scope"], "vo:lhcb group:lhcb_prod");
        let (status, info) = h
            .get("/api/auth/userinfo", Some(str_of(&second, "access_token")))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(info.contains("ProductionManagement"));

        let (status, third) = h.refresh(r2).await;
        assert_eq!(status, StatusCode::OK, "{third}");
        let r3 = str_of(&third, "refresh_token");

        // r1 again: reuse. The family is revoked, the newest token too.
        let reuse = h.refresh(r1).await;
        assert_error(&reuse, StatusCode::BAD_REQUEST, "invalid_grant");
        let newest = h.refresh(r3).await;
        assert_error(&newest, StatusCode::BAD_REQUEST, "invalid_grant");

        // Another session of the same user is untouched.
        let other = h.login("vo:lhcb", "alice").await;
        let (status, _) = h.refresh(str_of(&other, "refresh_token")).await;
        assert_eq!(status, StatusCode::OK);

        let other_client = h
            .post(
                "/api/auth/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", str_of(&other, "refresh_token")),
                    ("client_id", "someone-else"),
                ],
            )
            .await;
        assert_error(&other_client, StatusCode::BAD_REQUEST, "invalid_grant");

        let unknown = h.refresh("nonsense").await;
        assert_error(&unknown, StatusCode::BAD_REQUEST, "invalid_grant");
    });
}

#[tokio::test]
async fn revocation() {
    on_all_backends!(|_| {}, |h| {
        let tokens = h.login("vo:lhcb", "bob").await;
        let r1 = str_of(&tokens, "refresh_token");
        let (status, rotated) = h.refresh(r1).await;
        assert_eq!(status, StatusCode::OK);
        let r2 = str_of(&rotated, "refresh_token");

        // Revoking the old one revokes the family.
        let (status, _) = h.post_raw("/api/auth/revoke", &[("token", r1)]).await;
        assert_eq!(status, StatusCode::OK);
        let revoked = h.refresh(r2).await;
        assert_error(&revoked, StatusCode::BAD_REQUEST, "invalid_grant");

        // Unknown tokens and access tokens: still 200 (RFC 7009 §2.2).
        let (status, _) = h
            .post_raw("/api/auth/revoke", &[("token", "nonsense")])
            .await;
        assert_eq!(status, StatusCode::OK);
        let access = str_of(&tokens, "access_token");
        let (status, _) = h
            .post_raw(
                "/api/auth/revoke",
                &[("token", access), ("token_type_hint", "access_token")],
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let missing = h.post("/api/auth/revoke", &[]).await;
        assert_error(&missing, StatusCode::BAD_REQUEST, "invalid_request");
    });
}

#[tokio::test]
async fn token_endpoint_errors() {
    on_all_backends!(|_| {}, |h| {
        let unsupported = h
            .post("/api/auth/token", &[("grant_type", "password")])
            .await;
        assert_error(
            &unsupported,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        );
        let missing = h.post("/api/auth/token", &[]).await;
        assert_error(&missing, StatusCode::BAD_REQUEST, "invalid_request");
        let (status, body) = h
            .send(
                Request::post("/api/auth/token")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from("{}"))
                    .expect("request"),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("invalid_request"), "{body}");
    });
}

#[tokio::test]
async fn userinfo_needs_a_valid_token() {
    on_all_backends!(|_| {}, |h| {
        let (status, body) = h.get("/api/auth/userinfo", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("invalid_token"));
        let (status, _) = h.get("/api/auth/userinfo", Some("not.a.jwt")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        // A token signed by another key.
        let keys = tempfile::tempdir().expect("tempdir");
        let stranger = TokenIssuer::load_or_create(
            &keys.path().join("other.pem"),
            "https://auth.test",
            "dirac-rs",
        )
        .expect("key");
        let identity = dirac_core::auth::Identity {
            sub: "lhcb:alice".into(),
            username: "alice".into(),
            vo: "lhcb".into(),
            group: "lhcb_user".into(),
            properties: vec!["NormalUser".into()],
            job: None,
        };
        let forged = stranger.issue(&identity, 60).expect("sign");
        let (status, _) = h.get("/api/auth/userinfo", Some(&forged)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    });
}

#[tokio::test]
async fn discovery_and_jwks() {
    on_all_backends!(|_| {}, |h| {
        let (status, body) = h.get("/.well-known/openid-configuration", None).await;
        assert_eq!(status, StatusCode::OK);
        let doc: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(doc["issuer"], "https://auth.test");
        assert_eq!(doc["jwks_uri"], "https://auth.test/.well-known/jwks.json");
        assert_eq!(doc["token_endpoint"], "https://auth.test/api/auth/token");
        assert_eq!(
            doc["device_authorization_endpoint"],
            "https://auth.test/api/auth/device"
        );
        assert_eq!(
            doc["revocation_endpoint"],
            "https://auth.test/api/auth/revoke"
        );
        assert_eq!(
            doc["userinfo_endpoint"],
            "https://auth.test/api/auth/userinfo"
        );
        assert_eq!(
            doc["grant_types_supported"],
            serde_json::json!([
                DEVICE_GRANT,
                "authorization_code",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:token-exchange"
            ])
        );
        let scopes = doc["scopes_supported"].to_string();
        for s in [
            "vo:lhcb",
            "vo:dteam",
            "group:lhcb_prod",
            "property:ProductionManagement",
        ] {
            assert!(scopes.contains(s), "{s} in {scopes}");
        }
        let (status, body) = h.get("/.well-known/jwks.json", None).await;
        assert_eq!(status, StatusCode::OK);
        let jwks: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(jwks["keys"][0]["kty"], "OKP");
        assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    });
}

#[tokio::test]
async fn verification_without_dev_login_is_not_implemented() {
    on_all_backends!(|s| s.dev_login = false, |h| {
        let flow = h.start("vo:lhcb").await;
        let path = format!(
            "/api/auth/device/verify?user_code={}",
            str_of(&flow, "user_code")
        );
        let (status, page) = h.get(&path, None).await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
        assert!(page.contains("identity provider"));
        let (status, _) = h.approve(str_of(&flow, "user_code"), "alice").await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    });
}

#[tokio::test]
async fn federation_callback_refuses_unknown_states_and_idp_errors() {
    on_all_backends!(|_| {}, |h| {
        let (status, page) = h
            .get("/api/auth/federation/callback?state=forged&code=abc", None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(page.contains("unknown or used login state"), "{page}");
        let (status, page) = h
            .get(
                "/api/auth/federation/callback?error=access_denied&state=x",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(page.contains("access_denied"), "{page}");
        let (status, page) = h.get("/api/auth/federation/callback", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(page.contains("lacks its code or state"), "{page}");
    });
}

/// A PKCE pair: CHALLENGE is base64url(SHA-256(VERIFIER)).
const VERIFIER: &str = "dBjftJeZ4CVP-mJ92ZLSTJ8QsZZgyqxjHkUJtKYkKCU";
const CHALLENGE: &str = "j3yHXpD1iMP57S7Wg9wf_PxATnq2nwvh71oHnbWdl40";

/// A GET's status and Location header.
async fn redirect_of(h: &Harness, path: &str) -> (StatusCode, String) {
    let response = h
        .router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|l| l.to_str().expect("ascii").to_string())
        .unwrap_or_default();
    (response.status(), location)
}

fn authorize_path(client: &str, redirect: &str, method: &str, challenge: &str) -> String {
    format!(
        "/api/auth/authorize?response_type=code&client_id={client}&redirect_uri={}\
         &scope=vo%3Alhcb&state=xyz&code_challenge={challenge}&code_challenge_method={method}",
        urlencode(redirect)
    )
}

#[tokio::test]
async fn authorization_code_with_pkce() {
    on_all_backends!(|_| {}, |h| {
        let refused = [
            (
                "mallory",
                "http://127.0.0.1/callback",
                "S256",
                CHALLENGE,
                "unknown client_id",
            ),
            (
                "notebook",
                "https://evil.example.org/oauth",
                "S256",
                CHALLENGE,
                "not registered",
            ),
            (
                "notebook",
                "https://hub.example.org/oauth/x",
                "S256",
                CHALLENGE,
                "not registered",
            ),
            (
                "notebook",
                "http://127.0.0.1/callback",
                "plain",
                CHALLENGE,
                "S256",
            ),
            (
                "notebook",
                "http://127.0.0.1/callback",
                "S256",
                "short",
                "code_challenge",
            ),
        ];
        let (status, page) = h
            .get(
                &format!(
                    "{}&client_id=notebook",
                    authorize_path("notebook", "http://127.0.0.1/callback", "S256", CHALLENGE)
                ),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(page.contains("&#39;client_id&#39; is repeated"), "{page}");
        for (client, redirect, method, challenge, why) in refused {
            let (status, page) = h
                .get(&authorize_path(client, redirect, method, challenge), None)
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{why}");
            assert!(page.contains(why), "{why}: {page}");
        }

        // A loopback redirect may use any port.
        let redirect = "http://127.0.0.1:5555/callback";
        let (status, verify) =
            redirect_of(&h, &authorize_path("notebook", redirect, "S256", CHALLENGE)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let user_code = verify
            .strip_prefix("https://auth.test/api/auth/device/verify?user_code=")
            .expect("to the verification page");
        let response = h
            .router
            .clone()
            .oneshot(
                Request::post("/api/auth/device/verify")
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(format!(
                        "user_code={user_code}&username=alice&action=approve"
                    )))
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let back = response.headers()[header::LOCATION]
            .to_str()
            .expect("ascii");
        let query = back
            .strip_prefix("http://127.0.0.1:5555/callback?code=")
            .expect("back to the client");
        let (code, state) = query.split_once("&state=").expect("state");
        assert_eq!(state, "xyz");

        // The device grant does not know authorization codes.
        let (status, body) = h.poll(code).await;
        assert_error(&(status, body), StatusCode::BAD_REQUEST, "invalid_grant");
        let exchange = |verifier: &'static str, redirect: &'static str| {
            let h = &h;
            async move {
                h.post(
                    "/api/auth/token",
                    &[
                        ("grant_type", "authorization_code"),
                        ("code", code),
                        ("client_id", "notebook"),
                        ("redirect_uri", redirect),
                        ("code_verifier", verifier),
                    ],
                )
                .await
            }
        };
        let wrong = exchange("not-the-verifier-at-all-not-the-verifier-at-all", redirect).await;
        assert_error(&wrong, StatusCode::BAD_REQUEST, "invalid_grant");
        assert!(wrong.1.to_string().contains("code_verifier"), "{}", wrong.1);
        let wrong = exchange(VERIFIER, "http://127.0.0.1:6666/callback").await;
        assert!(wrong.1.to_string().contains("redirect_uri"), "{}", wrong.1);
        let (status, tokens) = exchange(VERIFIER, redirect).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        assert!(tokens["refresh_token"].is_string());
        let (status, info) = h
            .get("/api/auth/userinfo", Some(str_of(&tokens, "access_token")))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(info.contains("lhcb:alice"), "{info}");
        let again = exchange(VERIFIER, redirect).await;
        assert!(again.1.to_string().contains("already used"), "{}", again.1);

        // A denial goes back to the client as access_denied.
        let (_, verify) =
            redirect_of(&h, &authorize_path("notebook", redirect, "S256", CHALLENGE)).await;
        let user_code = verify.rsplit('=').next().expect("user code");
        let response = h
            .router
            .clone()
            .oneshot(
                Request::post("/api/auth/device/verify")
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(format!("user_code={user_code}&action=deny")))
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            response.headers()[header::LOCATION],
            "http://127.0.0.1:5555/callback?error=access_denied&state=xyz"
        );
    });
}

#[tokio::test]
async fn token_exchange_changes_group_within_the_registry() {
    on_all_backends!(|_| {}, |h| {
        let exchange = |token: String, scope: &'static str| {
            let h = &h;
            async move {
                h.post(
                    "/api/auth/token",
                    &[
                        (
                            "grant_type",
                            "urn:ietf:params:oauth:grant-type:token-exchange",
                        ),
                        ("subject_token", &token),
                        (
                            "subject_token_type",
                            "urn:ietf:params:oauth:token-type:access_token",
                        ),
                        ("scope", scope),
                    ],
                )
                .await
            }
        };
        let alice = h.login("vo:lhcb", "alice").await;
        let token = str_of(&alice, "access_token").to_string();
        let (status, prod) = exchange(token.clone(), "group:lhcb_prod").await;
        assert_eq!(status, StatusCode::OK, "{prod}");
        assert_eq!(prod["scope"], "vo:lhcb group:lhcb_prod");
        assert!(prod.get("refresh_token").is_none(), "{prod}");
        assert!(prod["expires_in"].as_u64().is_some_and(|e| e <= 1200));
        let (_, info) = h
            .get("/api/auth/userinfo", Some(str_of(&prod, "access_token")))
            .await;
        assert!(info.contains("ProductionManagement"), "{info}");

        let bob = h.login("vo:lhcb", "bob").await;
        let bob = str_of(&bob, "access_token").to_string();
        let refused = exchange(bob.clone(), "group:lhcb_prod").await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "invalid_scope");
        let refused = exchange(bob, "vo:dteam").await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "invalid_scope");
        let mut tampered = token.clone();
        tampered.push('x');
        let refused = exchange(tampered, "group:lhcb_prod").await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "invalid_grant");
        // Only access tokens are exchanged, and only for access tokens.
        let refresh = str_of(&alice, "refresh_token");
        for (field, value) in [
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:refresh_token",
            ),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:refresh_token",
            ),
        ] {
            let mut form = vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", token.as_str()),
                ("scope", "group:lhcb_prod"),
            ];
            if field == "requested_token_type" {
                form.push((
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ));
            }
            form.push((field, value));
            let refused = h.post("/api/auth/token", &form).await;
            assert_error(&refused, StatusCode::BAD_REQUEST, "invalid_request");
        }
        let refused = exchange(refresh.to_string(), "group:lhcb_prod").await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "invalid_grant");
        // A job token stays a job token.
        let job = TokenIssuer::load_or_create(
            &h._keys.path().join("key.pem"),
            "https://auth.test",
            "dirac-rs",
        )
        .expect("the server's key")
        .issue(
            &dirac_core::auth::Identity {
                sub: "lhcb:alice".into(),
                username: "alice".into(),
                vo: "lhcb".into(),
                group: "lhcb_user".into(),
                properties: vec!["NormalUser".into()],
                job: Some(7),
            },
            600,
        )
        .expect("job token");
        let refused = exchange(job, "group:lhcb_prod").await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "invalid_grant");
        assert!(
            refused.1.to_string().contains("job tokens"),
            "{}",
            refused.1
        );
    });
}

fn as_user<T>(message: T, username: &str, properties: &[&str]) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.extensions_mut().insert(dirac_core::auth::Identity {
        sub: format!("lhcb:{username}"),
        username: username.into(),
        vo: "lhcb".into(),
        group: "lhcb_user".into(),
        properties: properties.iter().map(|p| p.to_string()).collect(),
        job: None,
    });
    req
}

#[tokio::test]
async fn sessions_are_listed_and_revoked_by_their_owner_or_an_administrator() {
    use dirac_auth::admin::AdminService;
    use dirac_proto::auth as pb;
    use dirac_proto::auth::auth_admin_server::AuthAdmin as _;
    on_all_backends!(|_| {}, |h| {
        let admin = AdminService(h.server.clone());
        let first = h.login("vo:lhcb", "alice").await;
        h.login("vo:lhcb group:lhcb_prod", "alice").await;
        h.login("vo:lhcb", "bob").await;
        let list = |user: &str, asked: &str, props: &[&str]| {
            admin.list_sessions(as_user(
                pb::ListSessionsRequest {
                    username: asked.into(),
                },
                user,
                props,
            ))
        };
        let mine = list("alice", "", &["NormalUser"])
            .await
            .expect("own")
            .into_inner();
        assert_eq!(mine.sessions.len(), 2);
        assert!(mine.sessions.iter().all(|s| s.username == "alice"));
        let denied = list("alice", "bob", &["NormalUser"])
            .await
            .expect_err("not hers");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let bobs = list("root", "bob", &["ServiceAdministrator"])
            .await
            .expect("admin")
            .into_inner();
        assert_eq!(bobs.sessions.len(), 1);

        // alice cannot end bob's session; she ends one of hers.
        let revoke = |user: &str, ids: Vec<String>| {
            admin.revoke_sessions(as_user(
                pb::RevokeSessionsRequest { session_ids: ids },
                user,
                &["NormalUser"],
            ))
        };
        let bob_session = bobs.sessions[0].session_id.clone();
        let out = revoke("alice", vec![bob_session.clone(), "no-such".into()])
            .await
            .expect("revoke")
            .into_inner();
        assert_eq!((out.revoked, out.not_found.len()), (0, 2));
        // Find the session of the first login: its refresh stops working.
        let target = mine
            .sessions
            .iter()
            .find(|s| s.scope == "vo:lhcb group:lhcb_user")
            .expect("first session")
            .session_id
            .clone();
        let out = revoke("alice", vec![target])
            .await
            .expect("revoke")
            .into_inner();
        assert_eq!(out.revoked, 1);
        let (status, _) = h.refresh(str_of(&first, "refresh_token")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let mine = list("alice", "", &["NormalUser"])
            .await
            .expect("own")
            .into_inner();
        assert_eq!(mine.sessions.len(), 1);

        let mut job = as_user(pb::ListSessionsRequest::default(), "alice", &["NormalUser"]);
        if let Some(id) = job.extensions_mut().get_mut::<dirac_core::auth::Identity>() {
            id.job = Some(7);
        }
        let denied = admin.list_sessions(job).await.expect_err("job token");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let too_many = revoke("alice", vec![String::new(); 1001])
            .await
            .expect_err("bound");
        assert_eq!(too_many.code(), tonic::Code::InvalidArgument);
        let who = admin
            .who_am_i(as_user(pb::WhoAmIRequest {}, "alice", &["NormalUser"]))
            .await
            .expect("whoami")
            .into_inner();
        assert_eq!((who.sub.as_str(), who.job_id), ("lhcb:alice", None));
    });
}

#[tokio::test]
async fn pilot_secrets_are_one_time_and_constrained() {
    on_all_backends!(|s| s.pilot_pepper = "pepper".into(), |h| {
        let grant = "urn:dirac:params:oauth:grant-type:pilot-secret";
        let site_bound = h
            .server
            .create_pilot_secrets("lhcb", &["LCG.CERN.cern".to_string()], 1, 600, 1)
            .await
            .expect("create");
        let secret = site_bound[0].as_str();
        // At another site: refused, and the use is not spent.
        let elsewhere = h
            .post(
                "/api/auth/token",
                &[
                    ("grant_type", grant),
                    ("pilot_secret", secret),
                    ("pilot_stamp", "p1"),
                    ("site", "LCG.Other.org"),
                ],
            )
            .await;
        assert_error(&elsewhere, StatusCode::BAD_REQUEST, "invalid_grant");
        let (status, tokens) = h
            .post(
                "/api/auth/token",
                &[
                    ("grant_type", grant),
                    ("pilot_secret", secret),
                    ("pilot_stamp", "p1"),
                    ("site", "LCG.CERN.cern"),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        let access = str_of(&tokens, "access_token");
        assert!(tokens.get("refresh_token").is_none());
        let (status, body) = h.get("/api/auth/userinfo", Some(access)).await;
        assert_eq!(status, StatusCode::OK);
        let who: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(who["dirac_properties"], serde_json::json!(["GenericPilot"]));
        assert_eq!(who["sub"], "lhcb:pilot:p1");
        // Used up after its one use.
        let again = h
            .post(
                "/api/auth/token",
                &[
                    ("grant_type", grant),
                    ("pilot_secret", secret),
                    ("pilot_stamp", "p2"),
                    ("site", "LCG.CERN.cern"),
                ],
            )
            .await;
        assert_error(&again, StatusCode::BAD_REQUEST, "invalid_grant");
        // Expired secrets, unknown secrets, bad stamps and unknown VOs are refused.
        let expired = h
            .server
            .create_pilot_secrets("lhcb", &[], 5, 0, 1)
            .await
            .expect("create");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let late = h
            .post(
                "/api/auth/token",
                &[
                    ("grant_type", grant),
                    ("pilot_secret", expired[0].as_str()),
                    ("pilot_stamp", "p3"),
                ],
            )
            .await;
        assert_error(&late, StatusCode::BAD_REQUEST, "invalid_grant");
        let unknown = h
            .post(
                "/api/auth/token",
                &[
                    ("grant_type", grant),
                    ("pilot_secret", "guess"),
                    ("pilot_stamp", "p4"),
                ],
            )
            .await;
        assert_error(&unknown, StatusCode::BAD_REQUEST, "invalid_grant");
        let many = h
            .server
            .create_pilot_secrets("lhcb", &[], 2, 600, 1)
            .await
            .expect("create");
        let bad_stamp = h
            .post(
                "/api/auth/token",
                &[
                    ("grant_type", grant),
                    ("pilot_secret", many[0].as_str()),
                    ("pilot_stamp", "x y"),
                ],
            )
            .await;
        assert_error(&bad_stamp, StatusCode::BAD_REQUEST, "invalid_request");
        for stamp in ["p5", "p6"] {
            let (status, _) = h
                .post(
                    "/api/auth/token",
                    &[
                        ("grant_type", grant),
                        ("pilot_secret", many[0].as_str()),
                        ("pilot_stamp", stamp),
                    ],
                )
                .await;
            assert_eq!(status, StatusCode::OK, "two uses allowed");
        }
        let third = h
            .post(
                "/api/auth/token",
                &[
                    ("grant_type", grant),
                    ("pilot_secret", many[0].as_str()),
                    ("pilot_stamp", "p7"),
                ],
            )
            .await;
        assert_error(&third, StatusCode::BAD_REQUEST, "invalid_grant");
        assert!(
            h.server
                .create_pilot_secrets("nope", &[], 1, 600, 1)
                .await
                .is_err()
        );
    });
}

#[tokio::test]
async fn the_token_vault_keeps_one_sealed_token_per_user_and_idp() {
    use dirac_tokens::Vault as _;
    on_all_backends!(|_| {}, |h| {
        let vault = dirac_auth::TokenVault::open(h.db.db.clone())
            .await
            .expect("vault");
        let idp = "https://iam.example.org";
        assert_eq!(vault.load(idp, "alice").await.expect("load"), None);
        vault.save(idp, "alice", "xc1.first").await.expect("save");
        vault
            .save(idp, "alice", "xc1.second")
            .await
            .expect("replace");
        vault
            .save("https://other.example.org", "alice", "xc1.other")
            .await
            .expect("save");
        vault.save(idp, "bob", "xc1.bob").await.expect("save");
        assert_eq!(
            vault.load(idp, "alice").await.expect("load").as_deref(),
            Some("xc1.second")
        );
        assert_eq!(
            vault
                .load("https://other.example.org", "alice")
                .await
                .expect("load")
                .as_deref(),
            Some("xc1.other")
        );
        assert_eq!(
            vault.load(idp, "bob").await.expect("load").as_deref(),
            Some("xc1.bob")
        );
    });
}
