//! `dirac login`, `dirac logout`, `dirac whoami`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use dirac_client::login::{self, AuthHttp, Credentials, Poll};
use dirac_client::{ClientConfig, Env};

use crate::report::Report;

fn credentials_path(env: &dyn Env) -> anyhow::Result<std::path::PathBuf> {
    login::credentials_path(env)
        .ok_or_else(|| anyhow!("no HOME or XDG_CONFIG_HOME to keep credentials in"))
}

pub async fn login(
    config: &ClientConfig,
    env: &dyn Env,
    vo: &str,
    group: Option<&str>,
    auth_url: Option<String>,
    as_json: bool,
) -> anyhow::Result<Report> {
    let auth_url = auth_url
        .or_else(|| config.auth_url.clone())
        .ok_or_else(|| {
            anyhow!("no AuthServer url: pass --auth-url or write auth_url: in the config")
        })?;
    let scope = login::scope(vo, group);
    let auth = std::sync::Arc::new(AuthHttp::new(&auth_url, config.ca_cert.as_deref())?);
    let start = {
        let (a, s) = (auth.clone(), scope.clone());
        tokio::task::spawn_blocking(move || a.start_device(&s)).await??
    };
    let url = start
        .verification_uri_complete
        .clone()
        .unwrap_or_else(|| start.verification_uri.clone());
    eprintln!(
        "To log in, open {url}\nand confirm the code {}",
        start.user_code
    );
    let deadline = Instant::now() + Duration::from_secs(start.expires_in);
    let mut interval = Duration::from_secs(start.interval.max(1));
    let tokens = loop {
        tokio::time::sleep(interval).await;
        if Instant::now() > deadline {
            return Err(anyhow!("the login code expired; run dirac login again"));
        }
        let (a, d) = (auth.clone(), start.device_code.clone());
        match tokio::task::spawn_blocking(move || a.poll_device(&d)).await?? {
            Poll::Pending => {}
            Poll::SlowDown => interval += Duration::from_secs(5),
            Poll::Done(tokens) => break tokens,
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let creds = Credentials {
        url: config.url.clone(),
        auth_url,
        access_token: tokens.access_token.clone(),
        refresh_token: tokens.refresh_token,
        expires_at: i64::try_from(now).unwrap_or(i64::MAX) + tokens.expires_in,
        scope: if tokens.scope.is_empty() {
            scope
        } else {
            tokens.scope
        },
    };
    let path = credentials_path(env)?;
    creds.save(&path).context("save the credentials")?;
    let who = tokio::task::spawn_blocking(move || auth.userinfo(&tokens.access_token)).await??;
    Ok(identity_report(&who, as_json, Some(&path)))
}

pub async fn logout(
    ca_cert: Option<&std::path::Path>,
    env: &dyn Env,
    as_json: bool,
) -> anyhow::Result<Report> {
    let path = credentials_path(env)?;
    let Some(creds) = Credentials::load(&path)? else {
        return Ok(Report::out(if as_json {
            "{\"logged_out\":false}"
        } else {
            "not logged in"
        }));
    };
    // A broken CA file must not keep the credentials: a failed revocation.
    let revoked = match AuthHttp::new(&creds.auth_url, ca_cert) {
        Ok(auth) => tokio::task::spawn_blocking(move || auth.revoke(&creds.refresh_token)).await?,
        Err(e) => Err(e),
    };
    std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
    let mut report = Report::out(if as_json {
        "{\"logged_out\":true}"
    } else {
        "logged out"
    });
    if let Err(e) = revoked {
        report.eprintln(format!(
            "warning: the server did not confirm the revocation: {e}"
        ));
    }
    Ok(report)
}

pub async fn whoami(config: &ClientConfig, env: &dyn Env, as_json: bool) -> anyhow::Result<Report> {
    let token = config
        .token
        .clone()
        .ok_or_else(|| anyhow!("no token: run dirac login"))?;
    let path = credentials_path(env).ok();
    let auth_url = config
        .auth_url
        .clone()
        .or_else(|| {
            path.as_deref()
                .and_then(|p| Credentials::load(p).ok().flatten())
                .map(|c| c.auth_url)
        })
        .ok_or_else(|| anyhow!("no AuthServer url: write auth_url: in the config"))?;
    let auth = AuthHttp::new(&auth_url, config.ca_cert.as_deref())?;
    let who = tokio::task::spawn_blocking(move || auth.userinfo(&token)).await??;
    Ok(identity_report(&who, as_json, None))
}

fn identity_report(
    who: &serde_json::Value,
    as_json: bool,
    saved: Option<&std::path::Path>,
) -> Report {
    if as_json {
        return Report::out(who.to_string());
    }
    let props: Vec<&str> = who["dirac_properties"]
        .as_array()
        .map_or_else(Vec::new, |a| a.iter().filter_map(|p| p.as_str()).collect());
    let mut report = Report::out(format!(
        "{} ({}) in group {} of {}",
        who["preferred_username"].as_str().unwrap_or("?"),
        who["sub"].as_str().unwrap_or("?"),
        who["dirac_group"].as_str().unwrap_or("?"),
        who["vo"].as_str().unwrap_or("?"),
    ));
    report.println(format!("properties: {}", props.join(", ")));
    if let Some(path) = saved {
        report.eprintln(format!("credentials saved in {}", path.display()));
    }
    report
}
