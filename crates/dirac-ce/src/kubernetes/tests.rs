//! Scenario tests against a mocked API server (tower-test): the exact
//! sequence of API calls for submission, status, kill and logs, and the
//! error paths.

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;
use crate::wrapper::PilotSource;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn launch() -> PilotLaunch {
    PilotLaunch {
        source: PilotSource::Url("http://dirac.example/pilot/dirac-pilot".into()),
        sha256: "ab".repeat(32),
        url: "http://dirac.example:8080".into(),
        auth_url: "http://dirac.example:8081".into(),
        vo: "vo".into(),
        site: "CLOUD.K8s.org".into(),
        ce: "k8s.example".into(),
        queue: "default".into(),
        cores: 2,
        cpu_time: 3600,
        max_ram_mb: 4096,
        tags: Vec::new(),
        platform: None,
        options: Vec::new(),
    }
}

fn ce(client: Client) -> KubernetesCe {
    let mut node_selector = BTreeMap::new();
    node_selector.insert("pool".into(), "pilots".into());
    KubernetesCe::with_client(
        "k8s.example".into(),
        KubeSettings {
            namespace: "pilots".into(),
            image: "registry.example/dirac-pilot:1".into(),
            service_account: Some("dirac-pilot".into()),
            node_selector,
            ttl_seconds_after_finished: 600,
            kube_config: None,
        },
        launch(),
        client,
    )
}

fn mocked() -> (KubernetesCe, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (ce(Client::new(service, "pilots")), handle)
}

/// Expect one request; answer `status` with `body`; return the request's
/// method, path and query, and JSON body.
async fn expect(handle: &mut Handle, status: u16, body: Value) -> (String, String, Value) {
    let (request, send) = handle.next_request().await.expect("a request");
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let bytes = request.into_body().collect_bytes().await.expect("body");
    let sent = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("json body")
    };
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).expect("json")))
        .expect("response");
    send.send_response(response);
    (method, uri, sent)
}

fn not_found(name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("jobs.batch \"{name}\" not found"), "reason": "NotFound", "code": 404})
}

fn job_with(stamp: &str, status: Value) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": format!("dirac-pilot-{stamp}"), "namespace": "pilots",
                        "labels": {CE_LABEL: "k8s.example", STAMP_LABEL: stamp}},
           "status": status})
}

#[tokio::test]
async fn submission_creates_secret_then_job_then_owns_the_secret() {
    let (ce, mut handle) = mocked();
    let stamp = "0123456789abcdef0123456789abcdef";
    let job = PilotJob {
        stamp: stamp.into(),
        secret: "the-one-time-secret".into(),
    };
    let server = tokio::spawn(async move {
        let (m, uri, secret) = expect(
            &mut handle,
            201,
            json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("dirac-pilot-{stamp}")}}),
        )
        .await;
        assert_eq!(
            (m.as_str(), uri.as_str()),
            ("POST", "/api/v1/namespaces/pilots/secrets?")
        );
        let wrapper = secret["stringData"]["wrapper.sh"]
            .as_str()
            .expect("wrapper");
        assert!(wrapper.contains("the-one-time-secret"));
        assert!(wrapper.contains("http://dirac.example/pilot/dirac-pilot"));
        assert_eq!(secret["metadata"]["labels"][CE_LABEL], "k8s.example");

        let (m, uri, job) = expect(
            &mut handle,
            201,
            json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": format!("dirac-pilot-{stamp}"), "uid": "uid-1"}}),
        )
        .await;
        assert_eq!(
            (m.as_str(), uri.as_str()),
            ("POST", "/apis/batch/v1/namespaces/pilots/jobs?")
        );
        let spec = &job["spec"];
        assert_eq!(spec["backoffLimit"], 0);
        assert_eq!(spec["ttlSecondsAfterFinished"], 600);
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["serviceAccountName"], "dirac-pilot");
        assert_eq!(pod["nodeSelector"]["pool"], "pilots");
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "registry.example/dirac-pilot:1");
        assert_eq!(c["resources"]["limits"]["cpu"], "2");
        assert_eq!(c["resources"]["requests"]["memory"], "4096Mi");
        assert!(
            !job.to_string().contains("the-one-time-secret"),
            "the secret stays out of the Job spec"
        );

        let (m, uri, patch) = expect(
            &mut handle,
            200,
            json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("dirac-pilot-{stamp}")}}),
        )
        .await;
        assert_eq!(m, "PATCH");
        assert!(
            uri.starts_with(&format!(
                "/api/v1/namespaces/pilots/secrets/dirac-pilot-{stamp}"
            )),
            "{uri}"
        );
        assert_eq!(patch["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(patch["metadata"]["ownerReferences"][0]["kind"], "Job");
    });
    let refs = ce.submit(&[job]).await.expect("submit");
    server.await.expect("server");
    assert_eq!(
        refs[0].as_ref().expect("submitted"),
        &format!("kubernetes://k8s.example/pilots/{stamp}")
    );
}

#[tokio::test]
async fn a_refused_job_leaves_no_secret_behind() {
    let (ce, mut handle) = mocked();
    let stamp = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            201,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}),
        )
        .await;
        let (m, _, _) = expect(&mut handle, 403, json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "jobs.batch is forbidden: exceeded quota", "reason": "Forbidden",
            "code": 403})).await;
        assert_eq!(m, "POST");
        let (m, uri, _) = expect(
            &mut handle,
            200,
            json!({"kind": "Status", "apiVersion": "v1",
            "metadata": {}, "status": "Success", "code": 200}),
        )
        .await;
        assert_eq!(m, "DELETE");
        assert!(
            uri.starts_with(&format!(
                "/api/v1/namespaces/pilots/secrets/dirac-pilot-{stamp}"
            )),
            "{uri}"
        );
    });
    let refs = ce
        .submit(&[PilotJob {
            stamp: stamp.into(),
            secret: "s".into(),
        }])
        .await
        .expect("an answer per pilot");
    server.await.expect("server");
    let err = refs[0].as_ref().expect_err("refused");
    assert!(err.to_string().contains("exceeded quota"), "{err}");
}

#[tokio::test]
async fn states_of_many_pilots_in_one_list_call() {
    let (ce, mut handle) = mocked();
    let stamps = ["a1", "b2", "c3", "d4", "e5"].map(|s| s.repeat(16));
    let refs: Vec<String> = stamps
        .iter()
        .map(|s| format!("kubernetes://k8s.example/pilots/{s}"))
        .collect();
    let list = json!({"apiVersion": "batch/v1", "kind": "JobList", "metadata": {"resourceVersion": "7"},
    "items": [
        job_with(&stamps[0], json!({"active": 1, "ready": 0})),
        job_with(&stamps[1], json!({"active": 1, "ready": 1})),
        job_with(&stamps[2], json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})),
        job_with(&stamps[3], json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True",
            "reason": "BackoffLimitExceeded"}]})),
    ]});
    let server = tokio::spawn(async move {
        let (m, uri, _) = expect(&mut handle, 200, list).await;
        assert_eq!(m, "GET");
        assert!(
            uri.starts_with("/apis/batch/v1/namespaces/pilots/jobs?"),
            "{uri}"
        );
        assert!(
            uri.contains("labelSelector=dirac.diracgrid.org%2Fce%3Dk8s.example"),
            "{uri}"
        );
    });
    let states = ce.status(&refs).await.expect("status");
    server.await.expect("server");
    assert_eq!(states[&refs[0]], PilotState::Waiting);
    assert_eq!(states[&refs[1]], PilotState::Running);
    assert_eq!(states[&refs[2]], PilotState::Done);
    assert_eq!(states[&refs[3]], PilotState::Failed);
    assert_eq!(states[&refs[4]], PilotState::Unknown, "a Job that is gone");
}

#[tokio::test]
async fn kill_deletes_job_and_secret_and_tolerates_missing_ones() {
    let (ce, mut handle) = mocked();
    let stamp = "f".repeat(32);
    let reference = format!("kubernetes://k8s.example/pilots/{stamp}");
    let s2 = stamp.clone();
    let server = tokio::spawn(async move {
        let (m, uri, body) = expect(&mut handle, 200, job_with(&s2, json!({}))).await;
        assert_eq!(m, "DELETE");
        assert!(
            uri.starts_with(&format!(
                "/apis/batch/v1/namespaces/pilots/jobs/dirac-pilot-{s2}"
            )),
            "{uri}"
        );
        assert_eq!(body["propagationPolicy"], "Background");
        let (m, uri, _) = expect(&mut handle, 404, not_found("x")).await;
        assert_eq!(m, "DELETE");
        assert!(
            uri.starts_with("/api/v1/namespaces/pilots/secrets/"),
            "{uri}"
        );
    });
    ce.kill(&[reference, "ssh://elsewhere/1".into()])
        .await
        .expect("kill");
    server.await.expect("server");
}

#[tokio::test]
async fn logs_come_from_the_jobs_pod() {
    let (ce, mut handle) = mocked();
    let stamp = "e".repeat(32);
    let s2 = stamp.clone();
    let server = tokio::spawn(async move {
        let (_, uri, _) = expect(
            &mut handle,
            200,
            json!({"apiVersion": "v1", "kind": "PodList",
            "metadata": {}, "items": [{"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("dirac-pilot-{s2}-x7k2p")}}]}),
        )
        .await;
        assert!(
            uri.contains(&format!("labelSelector=job-name%3Ddirac-pilot-{s2}")),
            "{uri}"
        );
        let (request, send) = handle.next_request().await.expect("log request");
        assert!(
            request
                .uri()
                .path()
                .ends_with(&format!("pods/dirac-pilot-{s2}-x7k2p/log"))
        );
        send.send_response(
            Response::builder()
                .body(Body::from(b"pilot says hi\n".to_vec()))
                .expect("response"),
        );
    });
    let text = ce
        .logs(&format!("kubernetes://k8s.example/pilots/{stamp}"))
        .await
        .expect("logs");
    server.await.expect("server");
    assert_eq!(text, "pilot says hi\n");
}

#[test]
fn label_values_are_valid() {
    assert_eq!(label_value("ce.example.org"), "ce.example.org");
    assert_eq!(label_value("a b/c"), "a_b_c");
    assert_eq!(label_value(&"x".repeat(100)).len(), 63);
}
