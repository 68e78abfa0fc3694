//! ARC CEs through A-REX's REST interface (`/arex/rest/1.0/`), as DIRAC's
//! AREXComputingElement: per pilot an EMI-ES ADL description whose
//! executable is the pilot's wrapper, uploaded into the job's session
//! directory right after submission (so the one-time secret never sits in
//! the description); states of many jobs in one `action=status` call; kill
//! then clean; the pilot's stdout and stderr declared as outputs and read
//! from the session; free slots from the GLUE2 `info` document.
//! Authentication: a WLCG token (`Authorization: Bearer`) with the CE as
//! audience, or an X.509 client certificate.
//!
//! A-REX answers every `POST jobs?action=…` with 201 and puts the real
//! per-job result in the body; its JSON is rendered from XML, so one item is
//! an object and several are an array.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::http::HttpClient;
use crate::wrapper::PilotLaunch;
use crate::{CeError, ComputingElement, PilotJob, PilotState, Slots, TokenSource};

pub struct ArcCe {
    pub host: String,
    pub port: u16,
    pub queue: String,
    pub launch: PilotLaunch,
    /// Bearer tokens (else the client certificate of `http` is used).
    pub token: Option<Arc<dyn TokenSource>>,
    /// Default `https://<host>:<port>`.
    pub audience: String,
    http: HttpClient,
}

impl std::fmt::Debug for ArcCe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArcCe")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// One or several items, as A-REX renders them.
fn items(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A-REX's REST states in DIRAC's pilot vocabulary.
pub fn arc_state(state: &str) -> PilotState {
    match state {
        "ACCEPTING" | "ACCEPTED" | "PREPARING" | "PREPARED" | "SUBMITTING" | "QUEUING" => {
            PilotState::Waiting
        }
        "RUNNING" | "HELD" | "EXITINGLRMS" | "OTHER" | "EXECUTED" | "FINISHING" | "KILLING" => {
            PilotState::Running
        }
        "FINISHED" => PilotState::Done,
        "FAILED" => PilotState::Failed,
        "KILLED" | "WIPED" => PilotState::Aborted,
        _ => PilotState::Unknown,
    }
}

const OUT: &str = "pilot.out";
const ERR: &str = "pilot.err";
const WRAPPER: &str = "dirac-pilot-wrapper.sh";

impl ArcCe {
    pub fn new(
        host: String,
        port: u16,
        queue: String,
        launch: PilotLaunch,
        token: Option<Arc<dyn TokenSource>>,
        audience: Option<String>,
        http: HttpClient,
    ) -> Self {
        ArcCe {
            audience: audience.unwrap_or_else(|| format!("https://{host}:{port}")),
            host,
            port,
            queue,
            launch,
            token,
            http,
        }
    }

    fn base(&self) -> String {
        format!("https://{}:{}/arex/rest/1.0", self.host, self.port)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<crate::http::Reply, CeError> {
        let url = format!("{}{path}", self.base());
        let bearer = match &self.token {
            Some(t) => Some(format!("Bearer {}", t.token(&self.audience).await?)),
            None => None,
        };
        let mut headers: Vec<(&str, &str)> = vec![("accept", "application/json")];
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        let reply = match body {
            Some((content_type, bytes)) => {
                headers.push(("content-type", content_type));
                self.http.send(method, &url, &headers, Some(bytes)).await?
            }
            None => self.http.send(method, &url, &headers, None).await?,
        };
        match reply.status {
            401 | 403 => Err(CeError::Unreachable(format!(
                "{} refused our credentials ({})",
                self.host, reply.status
            ))),
            _ => Ok(reply),
        }
    }

    /// `POST jobs?action=<action>` for `ids`: per id, (status-code, the item).
    async fn bulk(&self, action: &str, ids: &[&str]) -> Result<HashMap<String, Value>, CeError> {
        let body = json!({ "job": ids.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>() });
        let reply = self
            .call(
                "POST",
                &format!("/jobs?action={action}"),
                Some(("application/json", body.to_string().into_bytes())),
            )
            .await?;
        if !reply.ok() {
            return Err(CeError::Failed(format!(
                "{action}: A-REX answered {}",
                reply.status
            )));
        }
        if reply.body.is_empty() {
            return Ok(HashMap::new());
        }
        let v = reply.json()?;
        Ok(items(&v["job"])
            .into_iter()
            .filter_map(|j| Some((j["id"].as_str()?.to_string(), j.clone())))
            .collect())
    }

    /// The ADL of one pilot.
    pub fn description(&self, stamp: &str) -> String {
        let mut resources = format!(
            "<QueueName>{}</QueueName><SlotRequirement><NumberOfSlots>{}</NumberOfSlots></SlotRequirement>",
            xml_escape(&self.queue),
            self.launch.cores.max(1)
        );
        if self.launch.max_ram_mb > 0 {
            resources.push_str(&format!(
                "<IndividualPhysicalMemory>{}</IndividualPhysicalMemory>",
                self.launch.max_ram_mb * 1024 * 1024
            ));
        }
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ActivityDescription xmlns="http://www.eu-emi.eu/es/2010/12/adl">
  <ActivityIdentification><Name>dirac-pilot-{stamp}</Name></ActivityIdentification>
  <Application>
    <Executable><Path>{WRAPPER}</Path></Executable>
    <Output>{OUT}</Output>
    <Error>{ERR}</Error>
    <Environment><Name>DIRAC_PILOT_STAMP</Name><Value>{stamp}</Value></Environment>
  </Application>
  <Resources>{resources}</Resources>
  <DataStaging>
    <InputFile><Name>{WRAPPER}</Name><IsExecutable>true</IsExecutable></InputFile>
    <OutputFile><Name>{OUT}</Name></OutputFile>
    <OutputFile><Name>{ERR}</Name></OutputFile>
  </DataStaging>
</ActivityDescription>
"#,
            stamp = xml_escape(stamp),
        )
    }

    async fn submit_one(&self, job: &PilotJob) -> Result<String, CeError> {
        let reply = self
            .call(
                "POST",
                "/jobs?action=new",
                Some(("application/xml", self.description(&job.stamp).into_bytes())),
            )
            .await?;
        if !reply.ok() {
            return Err(CeError::Failed(format!(
                "A-REX refused the job ({})",
                reply.status
            )));
        }
        let v = reply.json()?;
        let item = items(&v["job"])
            .into_iter()
            .next()
            .cloned()
            .unwrap_or(Value::Null);
        let (Some(id), Some("201")) = (item["id"].as_str(), item["status-code"].as_str()) else {
            return Err(CeError::Failed(format!(
                "A-REX refused the job: {}",
                item["reason"].as_str().unwrap_or("no reason given")
            )));
        };
        // The job waits in PREPARING until its wrapper arrives.
        let wrapper = self.launch.wrapper(&job.stamp, &job.secret, "");
        let put = self
            .call(
                "PUT",
                &format!("/jobs/{id}/session/{WRAPPER}"),
                Some(("application/octet-stream", wrapper.into_bytes())),
            )
            .await;
        match put {
            Ok(r) if r.ok() => Ok(format!("arc://{}/{id}", self.host)),
            other => {
                // A job without its wrapper would wait for ever: remove it.
                let _ = self.bulk("kill", &[id]).await;
                let _ = self.bulk("clean", &[id]).await;
                Err(match other {
                    Err(e) => e,
                    Ok(r) => {
                        CeError::Failed(format!("upload of the wrapper answered {}", r.status))
                    }
                })
            }
        }
    }

    fn id_of<'r>(&self, reference: &'r str) -> Option<&'r str> {
        let id = reference
            .strip_prefix("arc://")?
            .strip_prefix(self.host.as_str())?
            .strip_prefix('/')?;
        (!id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then_some(id)
    }
}

#[async_trait::async_trait]
impl ComputingElement for ArcCe {
    fn grid_type(&self) -> &'static str {
        "ARC"
    }

    async fn submit(&self, pilots: &[PilotJob]) -> Result<Vec<Result<String, CeError>>, CeError> {
        let mut out = Vec::with_capacity(pilots.len());
        for (i, p) in pilots.iter().enumerate() {
            match self.submit_one(p).await {
                Err(e @ CeError::Unreachable(_)) if i == 0 => return Err(e),
                r => out.push(r),
            }
        }
        Ok(out)
    }

    async fn status(&self, references: &[String]) -> Result<HashMap<String, PilotState>, CeError> {
        let ids: Vec<&str> = references.iter().filter_map(|r| self.id_of(r)).collect();
        let mut found = HashMap::new();
        for chunk in ids.chunks(500) {
            found.extend(self.bulk("status", chunk).await?);
        }
        Ok(references
            .iter()
            .map(|r| {
                let state = self
                    .id_of(r)
                    .and_then(|id| found.get(id))
                    .filter(|j| j["status-code"] == "200")
                    .and_then(|j| j["state"].as_str())
                    .map(arc_state)
                    .unwrap_or(PilotState::Unknown);
                (r.clone(), state)
            })
            .collect())
    }

    async fn kill(&self, references: &[String]) -> Result<(), CeError> {
        let ids: Vec<&str> = references.iter().filter_map(|r| self.id_of(r)).collect();
        if ids.is_empty() {
            return Ok(());
        }
        self.bulk("kill", &ids).await?;
        // Cleaning waits for the job to end, then frees the session.
        self.bulk("clean", &ids).await?;
        Ok(())
    }

    async fn logs(&self, reference: &str) -> Result<String, CeError> {
        let id = self
            .id_of(reference)
            .ok_or_else(|| CeError::Failed(format!("not a pilot of {}: {reference}", self.host)))?;
        let mut text = String::new();
        for file in [OUT, ERR] {
            let r = self
                .call("GET", &format!("/jobs/{id}/session/{file}"), None)
                .await?;
            if r.ok() {
                text.push_str(&r.text());
            } else if file == OUT {
                return Err(CeError::Failed(format!(
                    "no output for {id} ({})",
                    r.status
                )));
            }
        }
        Ok(text)
    }

    /// Waiting and running jobs of this queue from the GLUE2 document (the
    /// CE's whole load, not only our pilots: DIRAC's AREX CE does the same).
    async fn available(&self) -> Result<Option<Slots>, CeError> {
        let reply = self.call("GET", "/info", None).await?;
        if !reply.ok() || reply.body.is_empty() {
            return Ok(None);
        }
        let v = reply.json()?;
        let service = &v["Domains"]["AdminDomain"]["Services"]["ComputingService"];
        let n = |x: &Value| {
            x.as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .or_else(|| x.as_u64())
                .unwrap_or(0)
        };
        let share = items(&service["ComputingShare"])
            .into_iter()
            .find(|s| s["MappingQueue"] == self.queue.as_str() || s["Name"] == self.queue.as_str());
        Ok(share.map(|s| Slots {
            waiting: n(&s["WaitingJobs"]),
            running: n(&s["RunningJobs"]),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arex_renders_one_item_as_an_object() {
        let one = json!({"job": {"id": "a"}});
        let many = json!({"job": [{"id": "a"}, {"id": "b"}]});
        assert_eq!(items(&one["job"]).len(), 1);
        assert_eq!(items(&many["job"]).len(), 2);
        assert!(items(&json!({})["job"]).is_empty());
    }

    #[test]
    fn states() {
        assert_eq!(arc_state("PREPARING"), PilotState::Waiting);
        assert_eq!(arc_state("RUNNING"), PilotState::Running);
        assert_eq!(arc_state("FINISHED"), PilotState::Done);
        assert_eq!(arc_state("FAILED"), PilotState::Failed);
        assert_eq!(arc_state("KILLED"), PilotState::Aborted);
        assert_eq!(arc_state("None"), PilotState::Unknown);
    }
}
