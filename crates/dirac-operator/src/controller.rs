//! Reconciliation of `Agent` resources (controller-rs shape): the
//! manifests of [`crate::manifests`] applied server-side, the other kind of
//! workload removed when the resource switches between `interval` and
//! `schedule`, and a status with `observedGeneration` and the conditions
//! Ready, Progressing and Degraded. A spec the manifests refuse is reported
//! as Degraded (reason `InvalidSpec`) and waits for a change.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;

use crate::crd::Agent;
use crate::manifests::{self, Installation, Workload};

pub const FIELD_MANAGER: &str = "dirac-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

/// What every reconciliation shares.
pub struct Context {
    pub client: Client,
    pub installation: Installation,
}

fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> serde_json::Value {
    json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": dirac_core::time::now(),
    })
}

async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// One reconciliation of an Agent.
pub async fn reconcile_agent(agent: Arc<Agent>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = agent.namespace().unwrap_or_else(|| "default".into());
    let name = agent.name_any();
    let generation = agent.metadata.generation;
    let agents: Api<Agent> = Api::namespaced(ctx.client.clone(), &ns);
    let status = |conditions: Vec<serde_json::Value>| json!({ "status": { "observedGeneration": generation, "conditions": conditions } });
    let m = match manifests::agent(&agent, &ctx.installation) {
        Ok(m) => m,
        Err(msg) => {
            let body = status(vec![
                condition("Ready", false, "InvalidSpec", &msg, generation),
                condition("Progressing", false, "InvalidSpec", &msg, generation),
                condition("Degraded", true, "InvalidSpec", &msg, generation),
            ]);
            agents
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await?;
            return Ok(Action::await_change());
        }
    };
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let cronjobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let cm_name = m.config_map.name_any();
    cms.patch(&cm_name, &apply, &Patch::Apply(&m.config_map))
        .await?;
    match &m.workload {
        Workload::Deployment(d) => {
            let n = d.name_any();
            deployments
                .patch(&n, &apply, &Patch::Apply(d.as_ref()))
                .await?;
            delete_if_present(&cronjobs, &n).await?;
        }
        Workload::CronJob(c) => {
            let n = c.name_any();
            cronjobs
                .patch(&n, &apply, &Patch::Apply(c.as_ref()))
                .await?;
            delete_if_present(&deployments, &n).await?;
        }
    }
    let msg = format!("applied (config hash {})", m.hash);
    let body = status(vec![
        condition("Ready", true, "Applied", &msg, generation),
        condition("Progressing", false, "Applied", &msg, generation),
        condition("Degraded", false, "Applied", &msg, generation),
    ]);
    agents
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Retry soon after an API error.
pub fn error_policy(_agent: Arc<Agent>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconciliation failed");
    Action::requeue(Duration::from_secs(15))
}

#[cfg(test)]
mod tests;
