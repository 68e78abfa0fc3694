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
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;

use crate::crd::{Agent, ComputingElement, SiteDirector};
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
    /// Kubernetes events about the resources (none when unset).
    pub recorder: Option<Recorder>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Record an event on `obj` (best effort: a failed event is only logged).
async fn record<K>(ctx: &Context, obj: &K, warning: bool, reason: &str, note: String)
where
    K: kube::Resource<DynamicType = ()>,
{
    let Some(recorder) = &ctx.recorder else {
        return;
    };
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot record an event");
    }
}

/// The status's last applied hash and Degraded message.
fn last(status: Option<&crate::crd::ResourceStatus>) -> (Option<String>, Option<String>) {
    let Some(s) = status else { return (None, None) };
    let degraded = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded" && c.status == "True")
        .map(|c| c.message.clone());
    (s.config_hash.clone(), degraded)
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

/// Apply a resource's manifests server-side; remove the other kind of
/// workload of the same name (the resource switched between `interval` and
/// `schedule`).
async fn apply_manifests(client: &Client, ns: &str, m: &manifests::Manifests) -> Result<(), Error> {
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let cronjobs: Api<CronJob> = Api::namespaced(client.clone(), ns);
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
    Ok(())
}

/// The status to write, or `None` when the resource says so already: a
/// status write is itself a change the controller sees, so writing the same
/// again (a new timestamp) would reconcile for ever. A condition whose
/// status stays keeps its transition time.
fn desired_status(
    current: Option<&crate::crd::ResourceStatus>,
    generation: Option<i64>,
    ok: bool,
    reason: &str,
    message: &str,
    hash: Option<&str>,
) -> Option<serde_json::Value> {
    let word = |b: bool| if b { "True" } else { "False" };
    let wanted = [("Ready", ok), ("Progressing", false), ("Degraded", !ok)];
    if let Some(cur) = current {
        let same = cur.observed_generation == generation
            && cur.config_hash.as_deref() == hash
            && wanted.iter().all(|(t, b)| {
                cur.conditions.iter().any(|c| {
                    c.type_ == *t
                        && c.status == word(*b)
                        && c.reason == reason
                        && c.message == message
                })
            });
        if same {
            return None;
        }
    }
    let conditions: Vec<serde_json::Value> = wanted
        .iter()
        .map(|(t, b)| {
            let since = current
                .and_then(|cur| {
                    cur.conditions
                        .iter()
                        .find(|c| c.type_ == *t && c.status == word(*b))
                })
                .map(|c| c.last_transition_time.0.to_string())
                .unwrap_or_else(dirac_core::time::now);
            json!({
                "type": t, "status": word(*b), "reason": reason, "message": message,
                "observedGeneration": generation, "lastTransitionTime": since,
            })
        })
        .collect();
    Some(json!({ "status": {
        "observedGeneration": generation, "configHash": hash, "conditions": conditions,
    }}))
}

/// Write the status when it changes.
async fn write_status<K>(
    api: &Api<K>,
    name: &str,
    body: Option<serde_json::Value>,
) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if let Some(body) = body {
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
    }
    Ok(())
}

/// The finalizer that makes a deleted SiteDirector stop submitting first.
pub const DRAIN_FINALIZER: &str = "dirac.diracgrid.org/drain";

/// One reconciliation of a SiteDirector: its workload follows its spec and
/// the ComputingElements it selects; when it is deleted, its workload goes
/// first (no more submissions; running pilots finish on their own), then
/// the finalizer.
#[tracing::instrument(name = "reconcile", skip_all, fields(
    kind = "SiteDirector",
    name = %sd.name_any(),
    namespace = sd.namespace().as_deref().unwrap_or("default"),
    generation = sd.metadata.generation,
))]
pub async fn reconcile_site_director(
    sd: Arc<SiteDirector>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.metrics.reconciled("SiteDirector");
    let ns = sd.namespace().unwrap_or_else(|| "default".into());
    let api: Api<SiteDirector> = Api::namespaced(ctx.client.clone(), &ns);
    kube::runtime::finalizer::finalizer(&api, DRAIN_FINALIZER, sd, |event| async {
        match event {
            kube::runtime::finalizer::Event::Apply(sd) => apply_site_director(&sd, &ctx, &ns).await,
            kube::runtime::finalizer::Event::Cleanup(sd) => {
                drain_site_director(&sd, &ctx, &ns).await
            }
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Invalid(other.to_string()),
    })
}

async fn apply_site_director(sd: &SiteDirector, ctx: &Context, ns: &str) -> Result<Action, Error> {
    let name = sd.name_any();
    let generation = sd.metadata.generation;
    let api: Api<SiteDirector> = Api::namespaced(ctx.client.clone(), ns);
    let ces: Api<ComputingElement> = Api::namespaced(ctx.client.clone(), ns);
    let listed = ces.list(&Default::default()).await?.items;
    let (last_hash, last_degraded) = last(sd.status.as_ref());
    let body = match manifests::site_director(sd, &listed, &ctx.installation) {
        Ok(m) => {
            apply_manifests(&ctx.client, ns, &m).await?;
            if last_hash.as_deref() != Some(m.hash.as_str()) {
                let note = format!("site director applied with config hash {}", m.hash);
                record(ctx, sd, false, "Applied", note).await;
            }
            let msg = format!("applied (config hash {})", m.hash);
            desired_status(
                sd.status.as_ref(),
                generation,
                true,
                "Applied",
                &msg,
                Some(&m.hash),
            )
        }
        Err(msg) => {
            if last_degraded.as_deref() != Some(msg.as_str()) {
                record(ctx, sd, true, "InvalidSpec", msg.clone()).await;
            }
            desired_status(
                sd.status.as_ref(),
                generation,
                false,
                "InvalidSpec",
                &msg,
                None,
            )
        }
    };
    write_status(&api, &name, body).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn drain_site_director(sd: &SiteDirector, ctx: &Context, ns: &str) -> Result<Action, Error> {
    let workload = format!("dirac-sitedirector-{}", sd.name_any());
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let cronjobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), ns);
    delete_if_present(&deployments, &workload).await?;
    delete_if_present(&cronjobs, &workload).await?;
    tracing::info!(site_director = %sd.name_any(), "drained: no more pilot submission");
    record(
        ctx,
        sd,
        false,
        "Drained",
        "workload deleted: no more pilot submission".into(),
    )
    .await;
    Ok(Action::await_change())
}

/// A ComputingElement is Ready when it makes a valid CE section.
#[tracing::instrument(name = "reconcile", skip_all, fields(
    kind = "ComputingElement",
    name = %ce.name_any(),
    namespace = ce.namespace().as_deref().unwrap_or("default"),
    generation = ce.metadata.generation,
))]
pub async fn reconcile_computing_element(
    ce: Arc<ComputingElement>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.metrics.reconciled("ComputingElement");
    let ns = ce.namespace().unwrap_or_else(|| "default".into());
    let api: Api<ComputingElement> = Api::namespaced(ctx.client.clone(), &ns);
    let (ok, reason, message) = match ce.to_ce_config() {
        Ok(_) => (true, "Valid", "a valid computing element".to_string()),
        Err(msg) => (false, "InvalidSpec", msg),
    };
    let body = desired_status(
        ce.status.as_ref(),
        ce.metadata.generation,
        ok,
        reason,
        &message,
        None,
    );
    write_status(&api, &ce.name_any(), body).await?;
    Ok(Action::await_change())
}

/// One reconciliation of an Agent.
#[tracing::instrument(name = "reconcile", skip_all, fields(
    kind = "Agent",
    name = %agent.name_any(),
    namespace = agent.namespace().as_deref().unwrap_or("default"),
    generation = agent.metadata.generation,
))]
pub async fn reconcile_agent(agent: Arc<Agent>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled("Agent");
    let ns = agent.namespace().unwrap_or_else(|| "default".into());
    let name = agent.name_any();
    let generation = agent.metadata.generation;
    let agents: Api<Agent> = Api::namespaced(ctx.client.clone(), &ns);
    let (last_hash, last_degraded) = last(agent.status.as_ref());
    let m = match manifests::agent(&agent, &ctx.installation) {
        Ok(m) => m,
        Err(msg) => {
            if last_degraded.as_deref() != Some(msg.as_str()) {
                record(&ctx, agent.as_ref(), true, "InvalidSpec", msg.clone()).await;
            }
            let body = desired_status(
                agent.status.as_ref(),
                generation,
                false,
                "InvalidSpec",
                &msg,
                None,
            );
            write_status(&agents, &name, body).await?;
            return Ok(Action::await_change());
        }
    };
    apply_manifests(&ctx.client, &ns, &m).await?;
    if last_hash.as_deref() != Some(m.hash.as_str()) {
        let note = format!("workload applied with config hash {}", m.hash);
        record(&ctx, agent.as_ref(), false, "Applied", note).await;
    }
    let msg = format!("applied (config hash {})", m.hash);
    let body = desired_status(
        agent.status.as_ref(),
        generation,
        true,
        "Applied",
        &msg,
        Some(&m.hash),
    );
    write_status(&agents, &name, body).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Retry soon after an API error.
pub fn error_policy<K: kube::Resource<DynamicType = ()>>(
    _obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.failed(&K::kind(&()));
    tracing::warn!(%error, kind = %K::kind(&()), "reconciliation failed");
    Action::requeue(Duration::from_secs(15))
}

#[cfg(test)]
mod tests;
