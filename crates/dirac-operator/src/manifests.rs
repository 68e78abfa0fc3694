//! Spec → manifests, pure: what the operator applies for an `Agent` or a
//! `SiteDirector` — a ConfigMap of `dirac.yaml` overrides (environment
//! variables `DIRAC__…`) and a Deployment (`interval`) or a CronJob
//! (`schedule`, one cycle per run) of `diracd agent`, owned by the resource,
//! with a hash of everything that shapes the pods on the pod template, so a
//! change rolls them.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::crd::{Agent, ComputingElement, Resources, SiteDirector};

pub const CONFIG_HASH: &str = "dirac.diracgrid.org/config-hash";
pub const MANAGED_BY: &str = "dirac-operator";
/// Where the keys Secret is mounted in the workloads.
pub const KEYS_DIR: &str = "/etc/dirac-keys";

/// The installation the workloads belong to (from the operator's flags).
#[derive(Debug, Clone, PartialEq)]
pub struct Installation {
    /// The `diracd` image.
    pub image: String,
    /// ConfigMap holding the installation's `dirac.yaml` (key `dirac.yaml`).
    pub config_map: String,
    /// Secret with database URLs and keys, passed as environment (optional).
    pub secret: Option<String>,
    /// Secret with the installation's keys (signing key, pilot pepper,
    /// vault key), mounted read-only as `Services.Auth.KeysDir` into the
    /// site directors' pods (no other agent needs them).
    pub keys_secret: Option<String>,
    /// OTLP endpoint the workloads export traces to (the operator's own
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp_endpoint: Option<String>,
    pub service_account: Option<String>,
}

/// A Deployment or a CronJob.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    Deployment(Box<Deployment>),
    CronJob(Box<CronJob>),
}

/// What one resource becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    pub config_map: ConfigMap,
    pub workload: Workload,
    pub hash: String,
}

fn key_ok(k: &str) -> bool {
    !k.is_empty() && k.len() <= 64 && k.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `DIRAC__SERVICES__AGENTS__STALLEDTIMES` from section path and key.
fn env_name(path: &[&str], key: &str) -> String {
    let mut parts: Vec<String> = path.iter().map(|p| p.to_uppercase()).collect();
    parts.push(key.to_uppercase());
    format!("DIRAC__{}", parts.join("__"))
}

/// The owner reference to a resource of ours (the controller).
fn owner(meta: &kube::api::ObjectMeta, kind: &str) -> Result<Value, String> {
    Ok(json!({
        "apiVersion": format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
        "kind": kind,
        "name": meta.name.clone().ok_or("the resource has no name")?,
        "uid": meta.uid.clone().ok_or("the resource has no uid yet")?,
        "controller": true,
        "blockOwnerDeletion": true,
    }))
}

fn resources(r: &Resources) -> Value {
    let mut m = serde_json::Map::new();
    if let Some(c) = &r.cpu {
        m.insert("cpu".into(), json!(c));
    }
    if let Some(mem) = &r.memory {
        m.insert("memory".into(), json!(mem));
    }
    if m.is_empty() {
        json!({})
    } else {
        json!({ "requests": m.clone(), "limits": m })
    }
}

fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Pod spec running `diracd agent <agent>` with the overrides of `cm`.
fn pod(inst: &Installation, agent: &str, cm: &str, once: bool, res: &Resources) -> Value {
    // Only site directors sign (pilot secrets through the AuthServer's
    // store): the other agents never see the keys.
    let needs_keys = agent == "site-director";
    let mut args = vec![
        json!("agent"),
        json!(agent),
        json!("--config"),
        json!("/etc/dirac/dirac.yaml"),
        json!("--data-dir"),
        json!("/var/lib/dirac"),
    ];
    if once {
        args.push(json!("--once"));
    }
    let mut env_from = vec![json!({ "configMapRef": { "name": cm } })];
    if let Some(s) = &inst.secret {
        env_from.push(json!({ "secretRef": { "name": s } }));
    }
    let mut spec = json!({
        "restartPolicy": if once { "Never" } else { "Always" },
        "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "fsGroup": 65532,
                             "seccompProfile": { "type": "RuntimeDefault" } },
        "containers": [{
            "name": "agent",
            "image": inst.image,
            "args": args,
            "envFrom": env_from,
            "resources": resources(res),
            "securityContext": { "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                 "capabilities": { "drop": ["ALL"] } },
            "volumeMounts": [
                { "name": "config", "mountPath": "/etc/dirac", "readOnly": true },
                { "name": "data", "mountPath": "/var/lib/dirac" },
            ],
        }],
        "volumes": [
            { "name": "config", "configMap": { "name": inst.config_map } },
            { "name": "data", "emptyDir": {} },
        ],
    });
    let mut env = Vec::new();
    if let Some(endpoint) = &inst.otlp_endpoint {
        env.push(json!({ "name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": endpoint }));
    }
    if let Some(keys) = inst.keys_secret.as_ref().filter(|_| needs_keys) {
        env.push(json!({ "name": "DIRAC__SERVICES__AUTH__KEYSDIR", "value": KEYS_DIR }));
        if let Some(mounts) = spec["containers"][0]["volumeMounts"].as_array_mut() {
            mounts.push(json!({ "name": "keys", "mountPath": KEYS_DIR, "readOnly": true }));
        }
        if let Some(volumes) = spec["volumes"].as_array_mut() {
            volumes.push(
                json!({ "name": "keys", "secret": { "secretName": keys, "defaultMode": 0o440 } }),
            );
        }
    }
    if !env.is_empty() {
        spec["containers"][0]["env"] = json!(env);
    }
    if let Some(sa) = &inst.service_account {
        spec["serviceAccountName"] = json!(sa);
    }
    spec
}

#[allow(clippy::too_many_arguments)]
fn build(
    inst: &Installation,
    name: &str,
    namespace: &str,
    owner: Value,
    component: &str,
    agent: &str,
    env: BTreeMap<String, String>,
    schedule: Option<&str>,
    replicas: i32,
    res: &Resources,
) -> Result<Manifests, String> {
    let base = format!("dirac-{component}-{name}");
    if base.len() > 52 {
        return Err(format!(
            "the name {name:?} is too long: workload names must fit in 52 characters"
        ));
    }
    let labels = json!({
        "app.kubernetes.io/name": format!("dirac-{component}"),
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    });
    let env_text = serde_json::to_string(&env).map_err(|e| e.to_string())?;
    let hash = hash(&[
        &inst.image,
        &inst.config_map,
        agent,
        &env_text,
        schedule.unwrap_or(""),
        &format!("{res:?}"),
    ]);
    let cm_name = format!("{base}-settings");
    let config_map: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": cm_name, "namespace": namespace, "labels": labels, "ownerReferences": [owner] },
        "data": env,
    }))
    .map_err(|e| e.to_string())?;
    let template = json!({
        "metadata": { "labels": labels, "annotations": { CONFIG_HASH: hash } },
        "spec": pod(inst, agent, &cm_name, schedule.is_some(), res),
    });
    let meta = json!({ "name": base, "namespace": namespace, "labels": labels, "ownerReferences": [owner] });
    let workload = match schedule {
        Some(s) => Workload::CronJob(Box::new(
            serde_json::from_value(json!({
                "apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
                "spec": {
                    "schedule": s,
                    "concurrencyPolicy": "Forbid",
                    "successfulJobsHistoryLimit": 1,
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": { "spec": { "backoffLimit": 0, "template": template } },
                },
            }))
            .map_err(|e| e.to_string())?,
        )),
        None => Workload::Deployment(Box::new(
            serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
                "spec": {
                    "replicas": replicas,
                    "selector": { "matchLabels": labels },
                    "template": template,
                },
            }))
            .map_err(|e| e.to_string())?,
        )),
    };
    Ok(Manifests {
        config_map,
        workload,
        hash,
    })
}

fn name_ns(meta: &kube::api::ObjectMeta) -> Result<(String, String), String> {
    Ok((
        meta.name.clone().ok_or("the resource has no name")?,
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
    ))
}

/// What an `Agent` becomes.
pub fn agent(agent: &Agent, inst: &Installation) -> Result<Manifests, String> {
    let (name, ns) = name_ns(&agent.metadata)?;
    let s = &agent.spec;
    let mut env = BTreeMap::new();
    for (k, v) in &s.settings {
        if !key_ok(k) {
            return Err(format!("settings key {k:?} is not a Services.Agents key"));
        }
        env.insert(env_name(&["SERVICES", "AGENTS"], k), v.clone());
    }
    if let Some(i) = s.interval {
        env.insert(
            env_name(&["SERVICES", "AGENTS"], "PollingTimeS"),
            i.to_string(),
        );
    }
    build(
        inst,
        &name,
        &ns,
        owner(&agent.metadata, "Agent")?,
        "agent",
        s.kind.command(),
        env,
        s.schedule.as_deref(),
        s.replicas.unwrap_or(1),
        &s.resources,
    )
}

/// What a `SiteDirector` becomes, given the ComputingElements it selects:
/// their sections go to `Resources.Sites` through the environment.
pub fn site_director(
    sd: &SiteDirector,
    ces: &[ComputingElement],
    inst: &Installation,
) -> Result<Manifests, String> {
    let (name, ns) = name_ns(&sd.metadata)?;
    let s = &sd.spec;
    let mut sites: BTreeMap<String, BTreeMap<String, dirac_core::config::CeConfig>> =
        BTreeMap::new();
    for ce in ces {
        let labels = ce.metadata.labels.clone().unwrap_or_default();
        if !s
            .ce_selector
            .match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            continue;
        }
        let (site, ce_name, cc) = ce.to_ce_config()?;
        sites.entry(site).or_default().insert(ce_name, cc);
    }
    let sites_yaml = serde_json::to_string(
        &sites
            .into_iter()
            .map(|(site, ces)| (site, json!({ "CEs": ces })))
            .collect::<BTreeMap<_, _>>(),
    )
    .map_err(|e| e.to_string())?;
    let mut env = BTreeMap::new();
    env.insert(env_name(&["RESOURCES"], "Sites"), sites_yaml);
    env.insert(env_name(&["SERVICES", "SITEDIRECTOR"], "VO"), s.vo.clone());
    if let Some(u) = &s.pilot_url {
        env.insert(
            env_name(&["SERVICES", "SITEDIRECTOR"], "PilotURL"),
            u.clone(),
        );
    }
    if let Some(m) = s.max_pilots_per_cycle {
        env.insert(
            env_name(&["SERVICES", "SITEDIRECTOR"], "MaxPilotsPerCycle"),
            m.to_string(),
        );
    }
    if let Some(i) = s.interval {
        env.insert(
            env_name(&["SERVICES", "SITEDIRECTOR"], "PollingTime"),
            i.to_string(),
        );
    }
    // One director per resource: never more than one replica.
    build(
        inst,
        &name,
        &ns,
        owner(&sd.metadata, "SiteDirector")?,
        "sitedirector",
        "site-director",
        env,
        s.schedule.as_deref(),
        1,
        &s.resources,
    )
}

#[cfg(test)]
mod tests;
