//! The real `dirac-operator` binary against kmock, an out-of-process
//! Kubernetes API emulator, behind tests/ce/kube_standin.py (which loads
//! the generated CRDs; server-side apply there is a merge — an
//! approximation named in tests/ce/KUBERNETES.md). No real API server can
//! run here. Its traces go to an OTLP collector in the test.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{bin, free_port, repo};

struct Api {
    base: String,
}

impl Api {
    fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .args(["-H", "Authorization: Bearer dirac-standin-token"])
            .args(["-H", &format!("Content-Type: {content_type}")]);
        if let Some(b) = body {
            cmd.args(["--data-binary", &b.to_string()]);
        }
        let out = cmd
            .arg(format!("{}{path}", self.base))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, "application/json", None)
    }

    /// Poll `path` until `ok` holds of the object.
    fn wait(&self, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (code, v) = self.get(path);
            if code == 200 && ok(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: {code} {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn the_operator_reconciles_agents_against_an_api_emulator() {
    let Some(python) = super::tools_python() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let kubeconfig = tmp.path().join("kubeconfig");
    let crds = repo().join("k8s/crds");
    let mut emulator = Command::new(&python)
        .arg(repo().join("tests/ce/kube_standin.py"))
        .args(["--port", "0", "--namespace", "dirac", "--state-dir"])
        .arg(tmp.path().join("k8s"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(
            [
                "agents.yaml",
                "sitedirectors.yaml",
                "computingelements.yaml",
            ]
            .iter()
            .flat_map(|f| ["--crd".to_string(), crds.join(f).display().to_string()]),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("k8s.log")).expect("log"))
        .spawn()
        .expect("kube stand-in");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() {
        assert!(Instant::now() < deadline, "the emulator did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let port = std::fs::read_to_string(tmp.path().join("k8s/port")).expect("port");
    let api = Api {
        base: format!("http://127.0.0.1:{}", port.trim()),
    };
    let metrics_port = free_port();
    // Its traces go to an OTLP collector.
    let collector = super::otlp::Collector::start();
    let log = std::fs::File::create(tmp.path().join("operator.log")).expect("log");
    let mut operator = Command::new(bin("dirac-operator"))
        .args(["--image", "diracd:e2e", "--log-format", "text"])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env_remove("OTEL_SERVICE_NAME")
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", "dirac")
        .env("POD_NAME", "operator-0")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("dirac-operator");
    let operator_log =
        || std::fs::read_to_string(tmp.path().join("operator.log")).unwrap_or_default();

    let agents = "/apis/dirac.diracgrid.org/v1alpha1/namespaces/dirac/agents";
    let agent = json!({"apiVersion": "dirac.diracgrid.org/v1alpha1", "kind": "Agent",
        "metadata": {"name": "stalled", "namespace": "dirac"},
        "spec": {"kind": "StalledJobs", "interval": 600, "replicas": 2, "settings": {"StalledTimeS": "4500"}}});
    let (code, created) = api.call("POST", agents, "application/json", Some(&agent));
    assert_eq!(code, 201, "{created}");
    let uid = created["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();

    let deployment = api.wait(
        "/apis/apps/v1/namespaces/dirac/deployments/dirac-agent-stalled",
        &format!("the Agent's Deployment\n{}", operator_log()),
        |_| true,
    );
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["uid"],
        uid.as_str()
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["args"][1],
        "stalled-jobs"
    );
    let (code, cm) = api.get("/api/v1/namespaces/dirac/configmaps/dirac-agent-stalled-settings");
    assert_eq!(code, 200);
    assert_eq!(cm["data"]["DIRAC__SERVICES__AGENTS__STALLEDTIMES"], "4500");
    let status = api.wait(&format!("{agents}/stalled"), "a Ready status", |a| {
        a["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    });
    assert_eq!(status["status"]["observedGeneration"], 1);

    // The Agent moves to a schedule: a CronJob replaces the Deployment.
    let patch = json!({"spec": {"interval": null, "replicas": null, "schedule": "*/5 * * * *"}});
    let (code, v) = api.call(
        "PATCH",
        &format!("{agents}/stalled"),
        "application/merge-patch+json",
        Some(&patch),
    );
    assert_eq!(code, 200, "{v}");
    let cron = api.wait(
        "/apis/batch/v1/namespaces/dirac/cronjobs/dirac-agent-stalled",
        &format!("the Agent's CronJob\n{}", operator_log()),
        |_| true,
    );
    assert_eq!(cron["spec"]["schedule"], "*/5 * * * *");
    let deadline = Instant::now() + Duration::from_secs(30);
    while api
        .get("/apis/apps/v1/namespaces/dirac/deployments/dirac-agent-stalled")
        .0
        != 404
    {
        assert!(Instant::now() < deadline, "the Deployment stayed");
        std::thread::sleep(Duration::from_millis(200));
    }
    api.wait(
        &format!("{agents}/stalled"),
        "the new generation observed",
        |a| a["status"]["observedGeneration"] == 2,
    );

    // An invalid spec is reported, not applied.
    let bad = json!({"apiVersion": "dirac.diracgrid.org/v1alpha1", "kind": "Agent",
        "metadata": {"name": "bad", "namespace": "dirac"},
        "spec": {"kind": "TaskQueues", "interval": 60, "settings": {"no such key!": "1"}}});
    assert_eq!(
        api.call("POST", agents, "application/json", Some(&bad)).0,
        201
    );
    let degraded = api.wait(&format!("{agents}/bad"), "a Degraded status", |a| {
        a["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Degraded" && c["status"] == "True")
        })
    });
    assert!(degraded.to_string().contains("no such key!"), "{degraded}");
    assert_eq!(
        api.get("/apis/apps/v1/namespaces/dirac/deployments/dirac-agent-bad")
            .0,
        404
    );

    // The operator leads through its Lease and says so in its metrics.
    let (code, lease) =
        api.get("/apis/coordination.k8s.io/v1/namespaces/dirac/leases/dirac-operator");
    assert_eq!(code, 200);
    assert_eq!(lease["spec"]["holderIdentity"], "operator-0");
    let metrics = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{metrics_port}/metrics")])
        .output()
        .expect("curl");
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(metrics.contains("dirac_operator_leader 1"), "{metrics}");
    assert!(
        !metrics.contains("dirac_operator_reconciliations_total{kind=\"Agent\"} 0"),
        "{metrics}"
    );

    // Each reconciliation is a span naming its object.
    let span = collector.wait_for(Duration::from_secs(20), |s| {
        s.name == "reconcile"
            && s.attribute("kind") == Some("Agent")
            && s.attribute("name") == Some("stalled")
    });
    let span = span.unwrap_or_else(|| {
        panic!(
            "no reconcile span of Agent stalled: {:?}",
            collector.names()
        )
    });
    assert_eq!(span.service, "dirac-operator");
    assert_eq!(span.attribute("namespace"), Some("dirac"));

    let _ = operator.kill();
    let _ = operator.wait();
    let _ = emulator.kill();
    let _ = emulator.wait();
}
