//! The custom resources of group `dirac.diracgrid.org`, version
//! `v1alpha1`: `ComputingElement`, `SiteDirector` and `Agent`. Their CRDs
//! are generated from these types (`crdgen` writes `k8s/crds/`); rules the
//! API server can check are CEL rules in the schema.

// kube's `printcolumn(...)` repeats `type_ = …` by design.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "dirac.diracgrid.org";
pub const VERSION: &str = "v1alpha1";

/// A queue of a computing element (DIRAC's `Queues/<queue>` section).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// Seconds of CPU a pilot may use (DIRAC's maxCPUTime).
    #[serde(default, rename = "maxCPUTime")]
    pub max_cpu_time: u64,
    /// Pilots waiting or running at once.
    pub max_total_jobs: u64,
    /// Pilots waiting at once (0: as maxTotalJobs).
    #[serde(default)]
    pub max_waiting_jobs: u64,
    #[serde(default)]
    pub number_of_processors: u64,
    /// MB per slot.
    #[serde(default, rename = "maxRAM")]
    pub max_ram: u64,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub platform: Option<String>,
}

/// A reference to a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretRef {
    pub name: String,
}

/// The connector types of a computing element.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CeType {
    Htcondorce,
    Arc,
    Openstack,
    Kubernetes,
    Slurm,
    Ssh,
    Local,
}

impl CeType {
    pub fn as_str(self) -> &'static str {
        match self {
            CeType::Htcondorce => "htcondorce",
            CeType::Arc => "arc",
            CeType::Openstack => "openstack",
            CeType::Kubernetes => "kubernetes",
            CeType::Slurm => "slurm",
            CeType::Ssh => "ssh",
            CeType::Local => "local",
        }
    }
}

/// A computing element the site directors may send pilots to. It feeds
/// the same structure as `Resources.Sites.<site>.CEs.<name>` of
/// `dirac.yaml`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dirac.diracgrid.org",
    version = "v1alpha1",
    kind = "ComputingElement",
    namespaced,
    shortname = "dce",
    status = "ResourceStatus",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Site", type_ = "string", json_path = ".spec.site"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Ready')].status"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ComputingElementSpec {
    #[serde(rename = "type")]
    pub ce_type: CeType,
    /// The CE's host (its name when empty).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// DIRAC site name, e.g. `LCG.CERN.cern`.
    #[x_kube(validation = Rule::new("self.split('.').size() >= 2").message("a DIRAC site name has at least two parts, e.g. LCG.CERN.cern"))]
    pub site: String,
    #[x_kube(validation = Rule::new("self.size() > 0").message("a computing element needs at least one queue"))]
    pub queues: BTreeMap<String, QueueSpec>,
    /// A Secret whose keys are mounted as files for the connector (SSH key,
    /// token, Keystone secret, client certificate…).
    #[serde(default)]
    pub credentials_secret_ref: Option<SecretRef>,
    /// Audience of the WLCG token minted for pilot submission.
    #[serde(default)]
    pub token_audience: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Further connector keys as `dirac.yaml` spells them (`Namespace`,
    /// `Image`, `Flavor`, `SSHUser`, …; docs/configuration.md).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// How a workload runs: on a schedule (a CronJob) or in a loop (a
/// Deployment).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default)]
    pub cpu: Option<String>,
    #[serde(default)]
    pub memory: Option<String>,
}

/// Label selector of computing elements.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CeSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// A site director: which computing elements it feeds, for which VO, how
/// often and how hard.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dirac.diracgrid.org",
    version = "v1alpha1",
    kind = "SiteDirector",
    namespaced,
    shortname = "dsd",
    status = "ResourceStatus",
    validation = Rule::new("has(self.spec.schedule) != has(self.spec.interval)").message("set exactly one of schedule and interval"),
    printcolumn(name = "VO", type_ = "string", json_path = ".spec.vo"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type=='Ready')].status")
)]
#[serde(rename_all = "camelCase")]
pub struct SiteDirectorSpec {
    /// Which ComputingElements (by label; all of the namespace when empty).
    #[serde(default)]
    pub ce_selector: CeSelector,
    pub vo: String,
    /// Where wrappers fetch `dirac-pilot` (default: the AuthServer's).
    #[serde(default, rename = "pilotURL")]
    pub pilot_url: Option<String>,
    #[serde(default)]
    pub pilot_version: Option<String>,
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 1").message("at least one pilot per cycle"))]
    pub max_pilots_per_cycle: Option<u64>,
    /// Cron schedule (a CronJob runs one cycle each time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Seconds between cycles (a Deployment cycles on its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("interval is in seconds, at least 1"))]
    pub interval: Option<u64>,
    #[serde(default)]
    pub resources: Resources,
}

/// The agents `diracd agent` runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AgentKind {
    Optimizer,
    StalledJobs,
    JobCleaning,
    TaskQueues,
    PilotStatus,
    RequestExecuting,
    CleanReqDb,
}

impl AgentKind {
    /// The `diracd agent` name.
    pub fn command(self) -> &'static str {
        match self {
            AgentKind::Optimizer => "optimizer",
            AgentKind::StalledJobs => "stalled-jobs",
            AgentKind::JobCleaning => "job-cleaning",
            AgentKind::TaskQueues => "task-queues",
            AgentKind::PilotStatus => "pilot-status",
            AgentKind::RequestExecuting => "request-executing",
            AgentKind::CleanReqDb => "clean-reqdb",
        }
    }
}

/// An agent: any `diracd agent` kind, on a schedule or in a loop with
/// replicas (agents are safe with several: they claim their work).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dirac.diracgrid.org",
    version = "v1alpha1",
    kind = "Agent",
    namespaced,
    shortname = "dag",
    status = "ResourceStatus",
    validation = Rule::new("has(self.spec.schedule) != has(self.spec.interval)").message("set exactly one of schedule and interval"),
    validation = Rule::new("!has(self.spec.schedule) || !has(self.spec.replicas) || self.spec.replicas == 1").message("a scheduled agent has no replicas"),
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.kind"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type=='Ready')].status")
)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    pub kind: AgentKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("interval is in seconds, at least 1"))]
    pub interval: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("replicas must be 0 to 100"))]
    pub replicas: Option<i32>,
    /// `Services.Agents` keys of `dirac.yaml` (`StalledTimeS`, …).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    #[serde(default)]
    pub resources: Resources,
}

/// What the operator reports on every resource.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Hash of what was last applied (an event is recorded when it changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

impl ComputingElement {
    /// The CE as `dirac.yaml` describes one: (site, name, section). The
    /// resource's name is the CE's name; unknown or ill-typed `settings`
    /// keys are errors naming the key.
    pub fn to_ce_config(&self) -> Result<(String, String, dirac_core::config::CeConfig), String> {
        let name = self
            .metadata
            .name
            .clone()
            .ok_or_else(|| "the ComputingElement has no name".to_string())?;
        let s = &self.spec;
        let mut section = serde_json::Map::new();
        section.insert("CEType".into(), s.ce_type.as_str().into());
        section.insert(
            "Host".into(),
            s.endpoint.clone().unwrap_or_else(|| name.clone()).into(),
        );
        if let Some(p) = s.port {
            section.insert("Port".into(), p.into());
        }
        if let Some(a) = &s.token_audience {
            section.insert("TokenAudience".into(), a.clone().into());
        }
        if !s.tags.is_empty() {
            section.insert("Tags".into(), serde_json::json!(s.tags));
        }
        let queues: serde_json::Map<String, serde_json::Value> = s
            .queues
            .iter()
            .map(|(q, qs)| {
                let mut v = serde_json::json!({
                    "maxCPUTime": qs.max_cpu_time,
                    "MaxTotalJobs": qs.max_total_jobs,
                    "MaxWaitingJobs": qs.max_waiting_jobs,
                    "NumberOfProcessors": qs.number_of_processors,
                    "MaxRAM": qs.max_ram,
                    "Tags": qs.tags,
                });
                if let Some(p) = &qs.platform {
                    v["Platform"] = p.clone().into();
                }
                (q.clone(), v)
            })
            .collect();
        section.insert("Queues".into(), queues.into());
        for (k, v) in &s.settings {
            if section.contains_key(k) {
                return Err(format!("settings.{k} is set by the spec's own field"));
            }
            // Numbers and booleans as YAML would read them.
            let value = serde_yaml_ng::from_str::<serde_json::Value>(v)
                .unwrap_or_else(|_| v.clone().into());
            let value = match value {
                serde_json::Value::Null => serde_json::Value::String(v.clone()),
                other => other,
            };
            section.insert(k.clone(), value);
        }
        let ce: dirac_core::config::CeConfig =
            serde_path_to_error::deserialize(serde_json::Value::Object(section))
                .map_err(|e| format!("ComputingElement {name}: {} ({})", e.inner(), e.path()))?;
        Ok((s.site.clone(), name, ce))
    }
}
