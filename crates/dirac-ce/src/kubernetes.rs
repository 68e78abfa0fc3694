//! Pilots as Kubernetes `batch/v1` Jobs.
//!
//! Per pilot: a Secret `dirac-pilot-<stamp>` holding its wrapper (the
//! one-time secret is inside, so it never shows in the Job spec), and a Job
//! of the same name that mounts it and runs it, with the queue's cores and
//! memory as requests and limits, `backoffLimit: 0` (a pilot is never
//! retried by Kubernetes: the SiteDirector decides) and a TTL after which
//! Kubernetes removes it. The Secret is then owned by the Job, so it goes
//! with it. Every object carries the CE's label, so one list call gives the
//! states of all its pilots.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{
    DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::OnceCell;

use crate::wrapper::PilotLaunch;
use crate::{CeError, ComputingElement, PilotJob, PilotState, Slots};

const CE_LABEL: &str = "dirac.diracgrid.org/ce";
const STAMP_LABEL: &str = "dirac.diracgrid.org/stamp";
/// Where the wrapper is mounted and where the pilot works in the container.
const WRAPPER_DIR: &str = "/dirac";
const WORK_DIR: &str = "/pilot";

#[derive(Debug, Clone)]
pub struct KubeSettings {
    pub namespace: String,
    pub image: String,
    pub service_account: Option<String>,
    pub node_selector: BTreeMap<String, String>,
    pub ttl_seconds_after_finished: u32,
    /// A kubeconfig file; `None`: in-cluster configuration or `$KUBECONFIG`.
    pub kube_config: Option<PathBuf>,
}

pub struct KubernetesCe {
    pub name: String,
    pub settings: KubeSettings,
    pub launch: PilotLaunch,
    client: OnceCell<Client>,
}

impl std::fmt::Debug for KubernetesCe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesCe")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn unreachable(e: impl std::fmt::Display) -> CeError {
    CeError::Unreachable(format!("Kubernetes API: {e}"))
}

fn api_error(e: kube::Error) -> CeError {
    match &e {
        kube::Error::Api(status) => CeError::Failed(format!(
            "Kubernetes API: {} ({})",
            status.message, status.code
        )),
        _ => unreachable(e),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn job_name(stamp: &str) -> String {
    format!("dirac-pilot-{stamp}")
}

impl KubernetesCe {
    pub fn new(name: String, settings: KubeSettings, launch: PilotLaunch) -> Self {
        KubernetesCe {
            name,
            settings,
            launch,
            client: OnceCell::new(),
        }
    }

    /// With a ready client (tests: a mocked API server).
    pub fn with_client(
        name: String,
        settings: KubeSettings,
        launch: PilotLaunch,
        client: Client,
    ) -> Self {
        KubernetesCe {
            name,
            settings,
            launch,
            client: OnceCell::new_with(Some(client)),
        }
    }

    async fn client(&self) -> Result<&Client, CeError> {
        self.client
            .get_or_try_init(|| async {
                let config = match &self.settings.kube_config {
                    Some(path) => {
                        let kc = kube::config::Kubeconfig::read_from(path)
                            .map_err(|e| CeError::Config(format!("{}: {e}", path.display())))?;
                        kube::Config::from_custom_kubeconfig(
                            kc,
                            &kube::config::KubeConfigOptions::default(),
                        )
                        .await
                        .map_err(|e| CeError::Config(format!("{}: {e}", path.display())))?
                    }
                    None => kube::Config::infer().await.map_err(|e| {
                        CeError::Config(format!("no Kubernetes configuration: {e}"))
                    })?,
                };
                Client::try_from(config).map_err(unreachable)
            })
            .await
    }

    async fn jobs(&self) -> Result<Api<Job>, CeError> {
        Ok(Api::namespaced(
            self.client().await?.clone(),
            &self.settings.namespace,
        ))
    }

    async fn secrets(&self) -> Result<Api<Secret>, CeError> {
        Ok(Api::namespaced(
            self.client().await?.clone(),
            &self.settings.namespace,
        ))
    }

    fn labels(&self, stamp: &str) -> serde_json::Value {
        json!({
            "app.kubernetes.io/managed-by": "dirac",
            "app.kubernetes.io/name": "dirac-pilot",
            CE_LABEL: label_value(&self.name),
            STAMP_LABEL: stamp,
        })
    }

    /// The Secret holding a pilot's wrapper.
    pub fn secret(&self, job: &PilotJob) -> Result<Secret, CeError> {
        let wrapper = self.launch.wrapper(&job.stamp, &job.secret, "");
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": job_name(&job.stamp), "labels": self.labels(&job.stamp) },
            "type": "Opaque",
            "stringData": { "wrapper.sh": wrapper },
        }))
        .map_err(|e| CeError::Failed(format!("secret manifest: {e}")))
    }

    /// The Job running a pilot.
    pub fn job(&self, stamp: &str) -> Result<Job, CeError> {
        let name = job_name(stamp);
        let mut resources = serde_json::Map::new();
        resources.insert("cpu".into(), json!(self.launch.cores.max(1).to_string()));
        if self.launch.max_ram_mb > 0 {
            resources.insert(
                "memory".into(),
                json!(format!("{}Mi", self.launch.max_ram_mb)),
            );
        }
        let mut pod = json!({
            "restartPolicy": "Never",
            "containers": [{
                "name": "pilot",
                "image": self.settings.image,
                "command": ["/bin/bash", format!("{WRAPPER_DIR}/wrapper.sh")],
                "env": [{ "name": "DIRAC_PILOT_BASE", "value": WORK_DIR }],
                "resources": { "requests": resources.clone(), "limits": resources },
                "volumeMounts": [
                    { "name": "wrapper", "mountPath": WRAPPER_DIR, "readOnly": true },
                    { "name": "work", "mountPath": WORK_DIR },
                ],
                "securityContext": { "allowPrivilegeEscalation": false },
            }],
            "volumes": [
                { "name": "wrapper", "secret": { "secretName": name, "defaultMode": 0o500 } },
                { "name": "work", "emptyDir": {} },
            ],
        });
        if let Some(sa) = &self.settings.service_account {
            pod["serviceAccountName"] = json!(sa);
        }
        if !self.settings.node_selector.is_empty() {
            pod["nodeSelector"] = json!(self.settings.node_selector);
        }
        serde_json::from_value(json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": { "name": name, "labels": self.labels(stamp) },
            "spec": {
                "backoffLimit": 0,
                "ttlSecondsAfterFinished": self.settings.ttl_seconds_after_finished,
                "activeDeadlineSeconds": self.launch.cpu_time.max(60) + 86_400,
                "template": { "metadata": { "labels": self.labels(stamp) }, "spec": pod },
            },
        }))
        .map_err(|e| CeError::Failed(format!("job manifest: {e}")))
    }

    fn reference(&self, stamp: &str) -> String {
        format!(
            "kubernetes://{}/{}/{stamp}",
            self.name, self.settings.namespace
        )
    }

    fn stamp_of<'r>(&self, reference: &'r str) -> Option<&'r str> {
        let rest = reference.strip_prefix("kubernetes://")?;
        let rest = rest.strip_prefix(self.name.as_str())?.strip_prefix('/')?;
        let stamp = rest
            .strip_prefix(self.settings.namespace.as_str())?
            .strip_prefix('/')?;
        (!stamp.is_empty() && stamp.len() <= 40 && stamp.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(stamp)
    }

    async fn submit_one(&self, job: &PilotJob) -> Result<String, CeError> {
        let secrets = self.secrets().await?;
        let jobs = self.jobs().await?;
        let pp = PostParams::default();
        secrets
            .create(&pp, &self.secret(job)?)
            .await
            .map_err(api_error)?;
        let created = match jobs.create(&pp, &self.job(&job.stamp)?).await {
            Ok(j) => j,
            Err(e) => {
                // No Job: the Secret must not stay behind with a secret in it.
                let _ = secrets
                    .delete(&job_name(&job.stamp), &DeleteParams::default())
                    .await;
                return Err(api_error(e));
            }
        };
        if let Some(uid) = created.metadata.uid {
            let owner = json!({ "metadata": { "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "Job", "name": job_name(&job.stamp), "uid": uid,
            }]}});
            if let Err(e) = secrets
                .patch(
                    &job_name(&job.stamp),
                    &PatchParams::default(),
                    &Patch::Merge(&owner),
                )
                .await
            {
                tracing::warn!(stamp = %job.stamp, error = %e, "pilot Secret not owned by its Job; removed with the kill");
            }
        }
        Ok(self.reference(&job.stamp))
    }

    async fn list(&self) -> Result<HashMap<String, PilotState>, CeError> {
        let jobs = self.jobs().await?;
        let lp = ListParams::default().labels(&format!("{CE_LABEL}={}", label_value(&self.name)));
        let list = jobs.list(&lp).await.map_err(api_error)?;
        Ok(list
            .items
            .iter()
            .filter_map(|j| {
                let stamp = j.metadata.labels.as_ref()?.get(STAMP_LABEL)?.clone();
                Some((stamp, job_state(j)))
            })
            .collect())
    }
}

/// A label value: at most 63 characters of `[A-Za-z0-9._-]`.
fn label_value(s: &str) -> String {
    let v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// A Job's state in DIRAC's pilot vocabulary.
pub fn job_state(job: &Job) -> PilotState {
    let Some(status) = &job.status else {
        return PilotState::Waiting;
    };
    for c in status.conditions.iter().flatten() {
        if c.status == "True" {
            match c.type_.as_str() {
                "Complete" => return PilotState::Done,
                "Failed" => return PilotState::Failed,
                _ => {}
            }
        }
    }
    if status.succeeded.unwrap_or(0) > 0 {
        PilotState::Done
    } else if status.failed.unwrap_or(0) > 0 {
        PilotState::Failed
    } else if status.ready.unwrap_or(0) > 0 {
        PilotState::Running
    } else {
        PilotState::Waiting
    }
}

#[async_trait::async_trait]
impl ComputingElement for KubernetesCe {
    fn grid_type(&self) -> &'static str {
        "Kubernetes"
    }

    async fn submit(&self, pilots: &[PilotJob]) -> Result<Vec<Result<String, CeError>>, CeError> {
        let mut out = Vec::with_capacity(pilots.len());
        for (i, p) in pilots.iter().enumerate() {
            match self.submit_one(p).await {
                // The API cannot be reached at all: nothing was submitted.
                Err(e @ (CeError::Unreachable(_) | CeError::Config(_))) if i == 0 => return Err(e),
                r => out.push(r),
            }
        }
        Ok(out)
    }

    async fn status(&self, references: &[String]) -> Result<HashMap<String, PilotState>, CeError> {
        let states = self.list().await?;
        Ok(references
            .iter()
            .map(|r| {
                let s = self
                    .stamp_of(r)
                    .and_then(|stamp| states.get(stamp).copied())
                    .unwrap_or(PilotState::Unknown);
                (r.clone(), s)
            })
            .collect())
    }

    async fn kill(&self, references: &[String]) -> Result<(), CeError> {
        let jobs = self.jobs().await?;
        let secrets = self.secrets().await?;
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        for stamp in references.iter().filter_map(|r| self.stamp_of(r)) {
            let name = job_name(stamp);
            for r in [
                jobs.delete(&name, &dp).await.map(|_| ()),
                secrets
                    .delete(&name, &DeleteParams::default())
                    .await
                    .map(|_| ()),
            ] {
                match r {
                    Ok(()) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(api_error(e)),
                }
            }
        }
        Ok(())
    }

    async fn logs(&self, reference: &str) -> Result<String, CeError> {
        let stamp = self
            .stamp_of(reference)
            .ok_or_else(|| CeError::Failed(format!("not a pilot of {}: {reference}", self.name)))?;
        let pods: Api<Pod> =
            Api::namespaced(self.client().await?.clone(), &self.settings.namespace);
        let lp = ListParams::default().labels(&format!("job-name={}", job_name(stamp)));
        let list = pods.list(&lp).await.map_err(api_error)?;
        let Some(name) = list.items.first().and_then(|p| p.metadata.name.clone()) else {
            return Err(CeError::Failed(format!("pilot {stamp} has no pod")));
        };
        let params = LogParams {
            limit_bytes: Some(1 << 20),
            ..LogParams::default()
        };
        pods.logs(&name, &params).await.map_err(api_error)
    }

    async fn available(&self) -> Result<Option<Slots>, CeError> {
        let mut slots = Slots::default();
        for state in self.list().await?.values() {
            match state {
                PilotState::Waiting => slots.waiting += 1,
                PilotState::Running => slots.running += 1,
                _ => {}
            }
        }
        Ok(Some(slots))
    }
}

#[cfg(test)]
mod tests;
