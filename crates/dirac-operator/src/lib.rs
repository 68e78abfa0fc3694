//! `dirac-operator`: custom resources for computing elements, site
//! directors and agents, and their reconciliation into Deployments and
//! CronJobs (the Kubernetes issue). This first part holds the CRD types and
//! their generator.

pub mod controller;
pub mod crd;
pub mod leader;
pub mod manifests;
pub mod metrics;
#[cfg(test)]
mod mock;

use kube::CustomResourceExt as _;

/// Where the generated CRDs live, relative to the repository.
pub const CRD_DIRS: [&str; 2] = ["k8s/crds", "charts/dirac/crds"];

/// Every CRD as YAML, by file name under `k8s/crds/`.
pub fn crds() -> Vec<(&'static str, String)> {
    let yaml = |crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
        serde_yaml_ng::to_string(&crd).unwrap_or_default()
    };
    vec![
        ("computingelements.yaml", yaml(crd::ComputingElement::crd())),
        ("sitedirectors.yaml", yaml(crd::SiteDirector::crd())),
        ("agents.yaml", yaml(crd::Agent::crd())),
    ]
}

#[cfg(test)]
mod tests {
    use serde::Deserialize as _;

    use super::*;

    /// The committed CRDs are what the types generate (`cargo run -p
    /// dirac-operator --bin crdgen` rewrites them).
    #[test]
    fn committed_crds_are_up_to_date() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for d in CRD_DIRS {
            for (name, yaml) in crds() {
                let committed =
                    std::fs::read_to_string(root.join(d).join(name)).unwrap_or_default();
                assert!(
                    committed == yaml,
                    "{d}/{name} is stale: run `cargo run -p dirac-operator --bin crdgen`"
                );
            }
        }
    }

    fn ce(settings: &[(&str, &str)]) -> crd::ComputingElement {
        let mut c = crd::ComputingElement::new(
            "ce.example.org",
            crd::ComputingElementSpec {
                ce_type: crd::CeType::Kubernetes,
                endpoint: None,
                port: None,
                site: "CLOUD.K8s.org".into(),
                queues: [(
                    "default".to_string(),
                    crd::QueueSpec {
                        max_total_jobs: 10,
                        number_of_processors: 2,
                        ..Default::default()
                    },
                )]
                .into(),
                credentials_secret_ref: None,
                token_audience: None,
                tags: vec![],
                settings: settings
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        );
        c.metadata.namespace = Some("dirac".into());
        c
    }

    /// A ComputingElement resource feeds the same structure as dirac.yaml.
    #[test]
    fn computing_elements_become_dirac_yaml_sections() {
        let (site, name, cc) = ce(&[
            ("Image", "registry.example/pilot:1"),
            ("TTLSecondsAfterFinished", "60"),
        ])
        .to_ce_config()
        .expect("valid");
        assert_eq!(
            (site.as_str(), name.as_str()),
            ("CLOUD.K8s.org", "ce.example.org")
        );
        assert_eq!(cc.ce_type, "kubernetes");
        assert_eq!(cc.host.as_deref(), Some("ce.example.org"));
        assert_eq!(cc.image.as_deref(), Some("registry.example/pilot:1"));
        assert_eq!(cc.ttl_seconds_after_finished, Some(60));
        assert_eq!(cc.queues["default"].max_total_jobs, 10);
        let err = ce(&[("Imgae", "x")]).to_ce_config().expect_err("typo");
        assert!(err.contains("Imgae"), "{err}");
        let err = ce(&[("CEType", "arc")]).to_ce_config().expect_err("clash");
        assert!(err.contains("settings.CEType"), "{err}");
        let err = ce(&[("Port", "not a port")])
            .to_ce_config()
            .expect_err("type");
        assert!(err.contains("Port"), "{err}");
    }

    /// Every example resource reads as its type and becomes manifests.
    #[test]
    fn the_examples_are_valid_resources() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../k8s/examples");
        let inst = manifests::Installation {
            image: "diracd:test".into(),
            config_map: "dirac-config".into(),
            secret: None,
            keys_secret: None,
            otlp_endpoint: None,
            service_account: None,
        };
        let mut ces = Vec::new();
        let mut seen = 0;
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("k8s/examples")
            .filter_map(Result::ok)
            .collect();
        files.sort_by_key(|e| e.file_name());
        let mut directors = Vec::new();
        for entry in files {
            let text = std::fs::read_to_string(entry.path()).expect("read");
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let mut v = serde_json::Value::deserialize(doc).expect("yaml");
                // As the API server would have given it.
                v["metadata"]["uid"] = "uid-example".into();
                seen += 1;
                match v["kind"].as_str() {
                    Some("ComputingElement") => {
                        let ce: crd::ComputingElement =
                            serde_json::from_value(v).expect("a ComputingElement");
                        ce.to_ce_config().expect("a valid CE");
                        ces.push(ce);
                    }
                    Some("Agent") => {
                        let a: crd::Agent = serde_json::from_value(v).expect("an Agent");
                        manifests::agent(&a, &inst).expect("manifests");
                    }
                    Some("SiteDirector") => {
                        directors.push(
                            serde_json::from_value::<crd::SiteDirector>(v).expect("a SiteDirector"),
                        );
                    }
                    other => panic!("unexpected kind {other:?} in {}", entry.path().display()),
                }
            }
        }
        for sd in &directors {
            manifests::site_director(sd, &ces, &inst).expect("manifests");
        }
        assert!(seen >= 5, "{seen} examples");
    }

    /// k8s/ passes yamllint and kubernetes-validate --strict, and the
    /// examples validate against the generated CRD schemas
    /// (tests/k8s/validate.sh; tools from scripts/kube-tools.sh).
    #[test]
    fn k8s_manifests_validate_offline() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let venv = std::env::var_os("DIRAC_TEST_TOOLS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                    .join(".cache/dirac-test-tools")
            })
            .join("venv/bin/kubernetes-validate");
        if !venv.exists() {
            assert!(
                std::env::var("CI").is_err(),
                "CI=true but kubernetes-validate is missing: scripts/kube-tools.sh"
            );
            eprintln!("skipping: kubernetes-validate not installed (scripts/kube-tools.sh)");
            return;
        }
        let out = std::process::Command::new("bash")
            .arg(repo.join("tests/k8s/validate.sh"))
            .output()
            .expect("validate.sh");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn schemas_carry_the_cel_rules() {
        let agents = crds()
            .into_iter()
            .find(|(n, _)| *n == "agents.yaml")
            .expect("agents")
            .1;
        assert!(
            agents.contains("set exactly one of schedule and interval"),
            "{agents}"
        );
        assert!(agents.contains("x-kubernetes-validations"));
        let ces = crds()
            .into_iter()
            .find(|(n, _)| *n == "computingelements.yaml")
            .expect("ces")
            .1;
        assert!(ces.contains("at least one queue"));
        assert!(ces.contains("group: dirac.diracgrid.org"));
    }
}
