//! Spec → manifest properties.

use proptest::prelude::*;

use super::*;
use crate::crd::{AgentKind, AgentSpec, CeType, ComputingElementSpec, QueueSpec, SiteDirectorSpec};

fn inst() -> Installation {
    Installation {
        image: "registry.example/diracd:0.1.0".into(),
        config_map: "dirac-config".into(),
        secret: Some("dirac-secrets".into()),
        keys_secret: Some("dirac-keys".into()),
        otlp_endpoint: Some("http://otel-collector.monitoring:4317".into()),
        service_account: Some("dirac-agents".into()),
    }
}

fn agent(name: &str, spec: AgentSpec) -> Agent {
    let mut a = Agent::new(name, spec);
    a.metadata.namespace = Some("dirac".into());
    a.metadata.uid = Some("uid-1".into());
    a
}

fn spec(
    kind: AgentKind,
    schedule: Option<&str>,
    interval: Option<u64>,
    replicas: Option<i32>,
) -> AgentSpec {
    AgentSpec {
        kind,
        schedule: schedule.map(String::from),
        interval,
        replicas,
        settings: Default::default(),
        resources: Default::default(),
    }
}

fn pod_of(w: &Workload) -> serde_json::Value {
    match w {
        Workload::Deployment(d) => {
            serde_json::to_value(&d.spec.as_ref().expect("spec").template).expect("json")
        }
        Workload::CronJob(c) => serde_json::to_value(
            &c.spec
                .as_ref()
                .expect("spec")
                .job_template
                .spec
                .as_ref()
                .expect("job")
                .template,
        )
        .expect("json"),
    }
}

#[test]
fn an_interval_agent_is_a_deployment_a_scheduled_one_a_cronjob() {
    let m = super::agent(
        &agent(
            "stalled",
            spec(AgentKind::StalledJobs, None, Some(120), Some(2)),
        ),
        &inst(),
    )
    .expect("ok");
    let Workload::Deployment(d) = &m.workload else {
        panic!("a Deployment")
    };
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let pod = pod_of(&m.workload);
    assert_eq!(pod["spec"]["containers"][0]["args"][1], "stalled-jobs");
    assert_eq!(
        pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    assert_eq!(pod["metadata"]["annotations"][CONFIG_HASH], m.hash.as_str());
    // The traces go where the operator's go; the keys stay out.
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["env"][0]["name"], "OTEL_EXPORTER_OTLP_ENDPOINT");
    assert_eq!(
        container["env"][0]["value"],
        "http://otel-collector.monitoring:4317"
    );
    assert!(!pod.to_string().contains("dirac-keys"), "{pod}");
    let data = m.config_map.data.as_ref().expect("data");
    assert_eq!(data["DIRAC__SERVICES__AGENTS__POLLINGTIMES"], "120");
    let owner = &d.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Agent", "uid-1", Some(true))
    );

    let m = super::agent(
        &agent(
            "cleaning",
            spec(AgentKind::JobCleaning, Some("*/10 * * * *"), None, None),
        ),
        &inst(),
    )
    .expect("ok");
    let Workload::CronJob(c) = &m.workload else {
        panic!("a CronJob")
    };
    let cs = c.spec.as_ref().expect("spec");
    assert_eq!(cs.schedule, "*/10 * * * *");
    assert_eq!(cs.concurrency_policy.as_deref(), Some("Forbid"));
    let pod = pod_of(&m.workload);
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert!(
        pod["spec"]["containers"][0]["args"]
            .as_array()
            .expect("args")
            .iter()
            .any(|a| a == "--once")
    );
}

#[test]
fn bad_settings_and_names_are_refused() {
    let mut s = spec(AgentKind::StalledJobs, None, Some(60), None);
    s.settings.insert("Stalled Time".into(), "1".into());
    let err = super::agent(&agent("a", s), &inst()).expect_err("bad key");
    assert!(err.contains("Stalled Time"), "{err}");
    let err = super::agent(
        &agent(
            &"x".repeat(60),
            spec(AgentKind::Optimizer, None, Some(1), None),
        ),
        &inst(),
    )
    .expect_err("long");
    assert!(err.contains("too long"), "{err}");
    let mut unowned = agent("a", spec(AgentKind::Optimizer, None, Some(1), None));
    unowned.metadata.uid = None;
    assert!(
        super::agent(&unowned, &inst()).is_err(),
        "no owner reference without a uid"
    );
}

fn ce(name: &str, site: &str, labels: &[(&str, &str)]) -> ComputingElement {
    let mut c = ComputingElement::new(
        name,
        ComputingElementSpec {
            ce_type: CeType::Htcondorce,
            endpoint: Some(format!("{name}.example.org")),
            port: None,
            site: site.into(),
            queues: [(
                "long".to_string(),
                QueueSpec {
                    max_total_jobs: 50,
                    ..Default::default()
                },
            )]
            .into(),
            credentials_secret_ref: None,
            token_audience: None,
            tags: vec![],
            settings: Default::default(),
        },
    );
    c.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    c
}

#[test]
fn a_site_director_gets_the_computing_elements_it_selects() {
    let mut sd = SiteDirector::new(
        "lhcb-grid",
        SiteDirectorSpec {
            ce_selector: crate::crd::CeSelector {
                match_labels: [("grid".to_string(), "wlcg".to_string())].into(),
            },
            vo: "lhcb".into(),
            pilot_url: None,
            pilot_version: None,
            max_pilots_per_cycle: Some(20),
            schedule: None,
            interval: Some(120),
            resources: Default::default(),
        },
    );
    sd.metadata.uid = Some("uid-sd".into());
    let ces = [
        ce("ce1", "LCG.A.org", &[("grid", "wlcg")]),
        ce("ce2", "LCG.B.org", &[("grid", "other")]),
    ];
    let m = site_director(&sd, &ces, &inst()).expect("ok");
    let data = m.config_map.data.as_ref().expect("data");
    let sites: serde_json::Value =
        serde_json::from_str(&data["DIRAC__RESOURCES__SITES"]).expect("json");
    assert!(sites["LCG.A.org"]["CEs"]["ce1"].is_object(), "{sites}");
    assert!(sites.get("LCG.B.org").is_none(), "not selected: {sites}");
    assert_eq!(sites["LCG.A.org"]["CEs"]["ce1"]["Host"], "ce1.example.org");
    assert_eq!(data["DIRAC__SERVICES__SITEDIRECTOR__VO"], "lhcb");
    let Workload::Deployment(d) = &m.workload else {
        panic!("a Deployment")
    };
    assert_eq!(
        d.spec.as_ref().and_then(|s| s.replicas),
        Some(1),
        "one director per resource"
    );
    // It signs pilot secrets: the keys Secret is mounted read-only where
    // Services.Auth.KeysDir says.
    let pod = pod_of(&m.workload);
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        container["env"][1]["name"],
        "DIRAC__SERVICES__AUTH__KEYSDIR"
    );
    assert_eq!(container["env"][1]["value"], KEYS_DIR);
    assert!(
        container["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| m["mountPath"] == KEYS_DIR && m["readOnly"] == true)
    );
    assert!(
        pod["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["secret"]["secretName"] == "dirac-keys")
    );
    // A new CE rolls the director's pods.
    let ces2 = [
        ce("ce1", "LCG.A.org", &[("grid", "wlcg")]),
        ce("ce3", "LCG.C.org", &[("grid", "wlcg")]),
    ];
    assert_ne!(site_director(&sd, &ces2, &inst()).expect("ok").hash, m.hash);
}

proptest! {
    /// Same spec, same manifests and hash; any setting change, a new hash.
    #[test]
    fn the_hash_follows_the_settings(
        key in "[A-Za-z][A-Za-z0-9]{0,20}",
        v1 in "[a-z0-9]{1,10}",
        v2 in "[a-z0-9]{1,10}",
        interval in 1u64..100_000,
    ) {
        let mut s = spec(AgentKind::TaskQueues, None, Some(interval), None);
        s.settings.insert(key.clone(), v1.clone());
        let a = super::agent(&agent("tq", s.clone()), &inst()).expect("ok");
        let b = super::agent(&agent("tq", s.clone()), &inst()).expect("ok");
        prop_assert_eq!(&a, &b);
        s.settings.insert(key, v2.clone());
        let c = super::agent(&agent("tq", s), &inst()).expect("ok");
        prop_assert_eq!(v1 == v2, a.hash == c.hash);
        let name = match &c.workload { Workload::Deployment(d) => d.metadata.name.clone(), Workload::CronJob(j) => j.metadata.name.clone() };
        prop_assert!(name.is_some_and(|n| n.len() <= 63));
    }
}
