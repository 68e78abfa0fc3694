//! Pilots as OpenStack virtual machines (DIRAC's CloudComputingElement):
//! Keystone v3 authentication (password or application credential), the
//! compute endpoint from the token's catalog, one Nova server per pilot
//! whose user-data runs the pilot wrapper and halts the machine at the end.
//! Servers are named `dirac-<ce>-<stamp>`, so the CE finds its own: those
//! that halted or outlived `MaxLifetime` are deleted (reaped) when their
//! states are polled.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::http::HttpClient;
use crate::wrapper::PilotLaunch;
use crate::{CeError, ComputingElement, PilotJob, PilotState, Slots};

#[derive(Clone)]
pub enum Credentials {
    Password {
        user: String,
        user_domain: String,
        password: String,
        project: String,
        project_domain: String,
    },
    ApplicationCredential {
        id: String,
        secret: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Password { user, project, .. } => {
                write!(f, "Password {{ user: {user}, project: {project} }}")
            }
            Credentials::ApplicationCredential { id, .. } => {
                write!(f, "ApplicationCredential {{ id: {id} }}")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct CloudSettings {
    /// Keystone v3, e.g. `https://keystone.example:5000/v3`.
    pub keystone_url: String,
    pub credentials: Credentials,
    pub region: Option<String>,
    pub image: String,
    pub flavor: String,
    pub network: Option<String>,
    pub key_name: Option<String>,
    /// Seconds after which a server is deleted whatever it does.
    pub max_lifetime: u64,
}

struct Session {
    token: String,
    compute: String,
    until: Instant,
}

pub struct OpenStackCe {
    pub name: String,
    pub settings: CloudSettings,
    pub launch: PilotLaunch,
    http: HttpClient,
    session: Mutex<Option<Session>>,
}

impl std::fmt::Debug for OpenStackCe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenStackCe")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Nova's error message, from `{"badRequest": {"message": …}}` and the like.
fn nova_message(v: &Value) -> String {
    v.as_object()
        .and_then(|o| {
            o.values()
                .find_map(|e| e.get("message")?.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| v.to_string())
}

fn server_state(status: &str) -> PilotState {
    match status {
        "BUILD" | "REBUILD" | "BUILDING" => PilotState::Waiting,
        "ACTIVE" | "REBOOT" | "HARD_REBOOT" | "MIGRATING" | "RESIZE" | "VERIFY_RESIZE"
        | "PAUSED" | "SUSPENDED" => PilotState::Running,
        // The pilot halts the machine when it is done.
        "SHUTOFF" | "STOPPED" => PilotState::Done,
        "ERROR" => PilotState::Failed,
        "DELETED" | "SOFT_DELETED" | "SHELVED" | "SHELVED_OFFLOADED" => PilotState::Aborted,
        _ => PilotState::Unknown,
    }
}

/// Seconds since an RFC 3339 timestamp as Nova writes it
/// (`2026-11-22T06:00:00Z`), or `None` when it cannot be read.
fn age_s(created: &str) -> Option<u64> {
    let then = chrono::DateTime::parse_from_rfc3339(created).ok()?;
    u64::try_from((chrono::Utc::now() - then.to_utc()).num_seconds()).ok()
}

impl OpenStackCe {
    pub fn new(
        name: String,
        settings: CloudSettings,
        launch: PilotLaunch,
        timeout: Duration,
    ) -> Result<Self, CeError> {
        Ok(OpenStackCe {
            name,
            settings,
            launch,
            http: HttpClient::new(None, None, timeout)?,
            session: Mutex::new(None),
        })
    }

    fn prefix(&self) -> String {
        let safe: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("dirac-{safe}-")
    }

    /// A valid token and the compute endpoint (a fresh one when the old one
    /// is within five minutes of expiring or was refused).
    async fn session(&self, fresh: bool) -> Result<(String, String), CeError> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref()
            && !fresh
            && s.until > Instant::now()
        {
            return Ok((s.token.clone(), s.compute.clone()));
        }
        let identity = match &self.settings.credentials {
            Credentials::Password {
                user,
                user_domain,
                password,
                project,
                project_domain,
            } => json!({
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": user, "domain": {"name": user_domain}, "password": password}}},
                "scope": {"project": {"name": project, "domain": {"name": project_domain}}},
            }),
            Credentials::ApplicationCredential { id, secret } => json!({
                "identity": {"methods": ["application_credential"],
                             "application_credential": {"id": id, "secret": secret}},
            }),
        };
        let url = format!(
            "{}/auth/tokens",
            self.settings.keystone_url.trim_end_matches('/')
        );
        let reply = self
            .http
            .json("POST", &url, &[], &json!({ "auth": identity }))
            .await?;
        if reply.status == 401 || reply.status == 403 {
            return Err(CeError::Unreachable(format!(
                "Keystone refused the credentials ({}): {}",
                reply.status,
                nova_message(&reply.json().unwrap_or(Value::Null))
            )));
        }
        if !reply.ok() {
            return Err(CeError::Failed(format!(
                "Keystone answered {}: {}",
                reply.status,
                reply.text()
            )));
        }
        let token = reply
            .header("x-subject-token")
            .ok_or_else(|| CeError::Failed("Keystone gave no X-Subject-Token".into()))?
            .to_string();
        let body = reply.json()?;
        let compute =
            body["token"]["catalog"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["type"] == "compute")
                .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
                .find(|e| {
                    e["interface"] == "public"
                        && self.settings.region.as_ref().is_none_or(|r| {
                            e["region"] == r.as_str() || e["region_id"] == r.as_str()
                        })
                })
                .and_then(|e| e["url"].as_str())
                .ok_or_else(|| {
                    CeError::Config("the Keystone catalog has no public compute endpoint".into())
                })?
                .trim_end_matches('/')
                .to_string();
        // Tokens last hours; renew well before.
        let until = Instant::now() + Duration::from_secs(1800);
        *guard = Some(Session {
            token: token.clone(),
            compute: compute.clone(),
            until,
        });
        Ok((token, compute))
    }

    /// A compute request, retried once with a fresh token after a 401.
    async fn compute(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<crate::http::Reply, CeError> {
        for attempt in 0..2 {
            let (token, base) = self.session(attempt > 0).await?;
            let url = format!("{base}{path}");
            let headers = [("x-auth-token", token.as_str())];
            let reply = match body {
                Some(b) => self.http.json(method, &url, &headers, b).await?,
                None => {
                    self.http
                        .send(
                            method,
                            &url,
                            &[
                                ("x-auth-token", token.as_str()),
                                ("accept", "application/json"),
                            ],
                            None,
                        )
                        .await?
                }
            };
            if reply.status != 401 {
                return Ok(reply);
            }
        }
        Err(CeError::Unreachable("Nova refused a fresh token".into()))
    }

    /// The user-data of a pilot's machine: its wrapper, then a halt when it
    /// runs under cloud-init (so a halted machine means a finished pilot).
    pub fn user_data(&self, job: &PilotJob) -> String {
        let wrapper = self.launch.wrapper(&job.stamp, &job.secret, "");
        let body = wrapper.strip_prefix("#!/bin/bash\n").unwrap_or(&wrapper);
        format!(
            "#!/bin/bash\n# dirac-rs pilot VM\nexport DIRAC_PILOT_BASE=\"${{DIRAC_PILOT_BASE:-/var/lib/dirac-pilot}}\"\n\
             ( {body}\n)\nrc=$?\nif [ -d /var/lib/cloud/instance ]; then shutdown -h now; fi\nexit $rc\n"
        )
    }

    async fn create(&self, job: &PilotJob) -> Result<String, CeError> {
        let mut server = json!({
            "name": format!("{}{}", self.prefix(), job.stamp),
            "imageRef": self.settings.image,
            "flavorRef": self.settings.flavor,
            "user_data": base64::engine::general_purpose::STANDARD.encode(self.user_data(job)),
            "metadata": { "dirac-ce": self.name, "dirac-stamp": job.stamp, "dirac-site": self.launch.site },
        });
        server["networks"] = match &self.settings.network {
            Some(n) => json!([{ "uuid": n }]),
            None => json!("auto"),
        };
        if let Some(k) = &self.settings.key_name {
            server["key_name"] = json!(k);
        }
        let reply = self
            .compute("POST", "/servers", Some(&json!({ "server": server })))
            .await?;
        if !reply.ok() {
            return Err(CeError::Failed(format!(
                "Nova refused the server ({}): {}",
                reply.status,
                nova_message(&reply.json().unwrap_or(Value::Null))
            )));
        }
        let id = reply.json()?["server"]["id"]
            .as_str()
            .ok_or_else(|| CeError::Failed("Nova gave no server id".into()))?
            .to_string();
        Ok(format!("openstack://{}/{id}", self.name))
    }

    /// Our servers: id → (status, created, stamp).
    async fn servers(&self) -> Result<HashMap<String, (String, String)>, CeError> {
        let path = format!("/servers/detail?name=%5E{}", self.prefix());
        let reply = self.compute("GET", &path, None).await?;
        if !reply.ok() {
            return Err(CeError::Failed(format!(
                "Nova answered {}: {}",
                reply.status,
                reply.text()
            )));
        }
        let body = reply.json()?;
        Ok(body["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| {
                s["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&self.prefix()))
            })
            .filter_map(|s| {
                Some((
                    s["id"].as_str()?.to_string(),
                    (
                        s["status"].as_str().unwrap_or("UNKNOWN").to_string(),
                        s["created"].as_str().unwrap_or_default().to_string(),
                    ),
                ))
            })
            .collect())
    }

    async fn delete(&self, id: &str) -> Result<(), CeError> {
        let reply = self
            .compute("DELETE", &format!("/servers/{id}"), None)
            .await?;
        match reply.status {
            200..=299 | 404 => Ok(()),
            s => Err(CeError::Failed(format!(
                "Nova refused to delete {id} ({s}): {}",
                reply.text()
            ))),
        }
    }

    fn id_of<'r>(&self, reference: &'r str) -> Option<&'r str> {
        let id = reference
            .strip_prefix("openstack://")?
            .strip_prefix(self.name.as_str())?
            .strip_prefix('/')?;
        (!id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .then_some(id)
    }
}

#[async_trait::async_trait]
impl ComputingElement for OpenStackCe {
    fn grid_type(&self) -> &'static str {
        "Cloud"
    }

    async fn submit(&self, pilots: &[PilotJob]) -> Result<Vec<Result<String, CeError>>, CeError> {
        // Authentication problems fail the whole submission at once.
        self.session(false).await?;
        let mut out = Vec::with_capacity(pilots.len());
        for p in pilots {
            out.push(self.create(p).await);
        }
        Ok(out)
    }

    /// States of the pilots' machines (one outliving MaxLifetime counts
    /// as Aborted: housekeeping deletes it).
    async fn status(&self, references: &[String]) -> Result<HashMap<String, PilotState>, CeError> {
        let servers = self.servers().await?;
        Ok(references
            .iter()
            .map(|r| {
                let state = self
                    .id_of(r)
                    .and_then(|id| servers.get(id))
                    .map(|(status, created)| {
                        let s = server_state(status);
                        if !s.is_final()
                            && age_s(created).is_some_and(|a| a > self.settings.max_lifetime)
                        {
                            PilotState::Aborted
                        } else {
                            s
                        }
                    })
                    .unwrap_or(PilotState::Unknown);
                (r.clone(), state)
            })
            .collect())
    }

    /// Reaping, as DIRAC's cloud CE: machines that halted (their pilot is
    /// done), failed, or outlived MaxLifetime are deleted.
    async fn housekeeping(&self) -> Result<(), CeError> {
        for (id, (status, created)) in self.servers().await? {
            let halted = server_state(&status) == PilotState::Done || status == "ERROR";
            let too_old = age_s(&created).is_some_and(|a| a > self.settings.max_lifetime);
            if halted || too_old {
                match self.delete(&id).await {
                    Ok(()) => {
                        tracing::info!(ce = %self.name, server = %id, %status, too_old, "pilot VM reaped")
                    }
                    Err(e) => {
                        tracing::warn!(ce = %self.name, server = %id, error = %e, "cannot reap a pilot VM")
                    }
                }
            }
        }
        Ok(())
    }

    async fn kill(&self, references: &[String]) -> Result<(), CeError> {
        for id in references.iter().filter_map(|r| self.id_of(r)) {
            self.delete(id).await?;
        }
        Ok(())
    }

    async fn logs(&self, reference: &str) -> Result<String, CeError> {
        let id = self
            .id_of(reference)
            .ok_or_else(|| CeError::Failed(format!("not a pilot of {}: {reference}", self.name)))?;
        let reply = self
            .compute(
                "POST",
                &format!("/servers/{id}/action"),
                Some(&json!({ "os-getConsoleOutput": { "length": 10_000 } })),
            )
            .await?;
        if !reply.ok() {
            return Err(CeError::Failed(format!(
                "Nova answered {}: {}",
                reply.status,
                reply.text()
            )));
        }
        Ok(reply.json()?["output"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    async fn available(&self) -> Result<Option<Slots>, CeError> {
        let mut slots = Slots::default();
        for (status, _) in self.servers().await?.values() {
            match server_state(status) {
                PilotState::Waiting => slots.waiting += 1,
                PilotState::Running => slots.running += 1,
                _ => {}
            }
        }
        Ok(Some(slots))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_of_nova_timestamps() {
        assert!(age_s("2020-01-01T00:00:00Z").is_some_and(|a| a > 86_400 * 365));
        assert!(age_s("not a time").is_none());
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        assert!(age_s(&now).is_some_and(|a| a < 5), "{now}");
    }

    #[test]
    fn server_states() {
        assert_eq!(server_state("BUILD"), PilotState::Waiting);
        assert_eq!(server_state("ACTIVE"), PilotState::Running);
        assert_eq!(server_state("SHUTOFF"), PilotState::Done);
        assert_eq!(server_state("ERROR"), PilotState::Failed);
        assert_eq!(server_state("???"), PilotState::Unknown);
    }
}
