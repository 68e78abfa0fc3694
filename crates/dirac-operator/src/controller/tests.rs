//! Scenario tests against a mocked API server (tower-test): the exact
//! sequence of API calls of a reconciliation, and the error path.

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;
use crate::crd::{AgentKind, AgentSpec};

use crate::mock::Handle;

fn context() -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Context {
        client: Client::new(service, "dirac"),
        installation: Installation {
            image: "diracd:test".into(),
            config_map: "dirac-config".into(),
            secret: None,
            keys_secret: None,
            otlp_endpoint: None,
            service_account: None,
        },
        recorder: None,
        metrics: Default::default(),
    };
    (Arc::new(ctx), handle)
}

fn agent(settings: &[(&str, &str)]) -> Arc<Agent> {
    let mut a = Agent::new(
        "stalled",
        AgentSpec {
            kind: AgentKind::StalledJobs,
            schedule: None,
            interval: Some(60),
            replicas: Some(2),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            resources: Default::default(),
        },
    );
    a.metadata.namespace = Some("dirac".into());
    a.metadata.uid = Some("uid-agent".into());
    a.metadata.generation = Some(3);
    Arc::new(a)
}

/// The next request: method, URI, content type and JSON body.
async fn expect(handle: &mut Handle, status: u16, body: Value) -> (String, String, String, Value) {
    let s = crate::mock::expect(handle, status, body).await;
    (s.method, s.uri, s.content_type, s.body)
}

fn not_found() -> Value {
    crate::mock::status(404, "NotFound")
}

/// The three calls applying an interval Agent: ConfigMap, Deployment, and
/// the delete of a CronJob that is not there.
async fn answer_applied(handle: &mut Handle) {
    expect(
        handle,
        200,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
    )
    .await;
    expect(
        handle,
        200,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}),
    )
    .await;
    expect(handle, 404, not_found()).await;
}

#[tokio::test]
async fn an_agent_is_applied_then_reported_ready() {
    let (ctx, mut handle) = context();
    let server = tokio::spawn(async move {
        let (m, uri, ct, cm) = expect(
            &mut handle,
            200,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "dirac-agent-stalled-settings"}}),
        )
        .await;
        assert_eq!(m, "PATCH");
        assert!(
            uri.starts_with("/api/v1/namespaces/dirac/configmaps/dirac-agent-stalled-settings?"),
            "{uri}"
        );
        assert!(
            uri.contains("fieldManager=dirac-operator") && uri.contains("force=true"),
            "server-side apply: {uri}"
        );
        assert_eq!(ct, "application/apply-patch+yaml");
        assert_eq!(cm["data"]["DIRAC__SERVICES__AGENTS__POLLINGTIMES"], "60");

        let (m, uri, _, dep) = expect(
            &mut handle,
            200,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "dirac-agent-stalled"}}),
        )
        .await;
        assert_eq!(m, "PATCH");
        assert!(
            uri.starts_with("/apis/apps/v1/namespaces/dirac/deployments/dirac-agent-stalled?"),
            "{uri}"
        );
        assert_eq!(dep["spec"]["replicas"], 2);
        assert_eq!(dep["metadata"]["ownerReferences"][0]["uid"], "uid-agent");

        let (m, uri, _, _) = expect(&mut handle, 404, not_found()).await;
        assert_eq!(m, "DELETE", "a CronJob of the same name is removed");
        assert!(
            uri.starts_with("/apis/batch/v1/namespaces/dirac/cronjobs/dirac-agent-stalled"),
            "{uri}"
        );

        let (m, uri, ct, status) = expect(&mut handle, 200, json!({"apiVersion": "dirac.diracgrid.org/v1alpha1",
            "kind": "Agent", "metadata": {"name": "stalled"}, "spec": {"kind": "StalledJobs", "interval": 60}})).await;
        assert_eq!(m, "PATCH");
        assert!(
            uri.starts_with(
                "/apis/dirac.diracgrid.org/v1alpha1/namespaces/dirac/agents/stalled/status"
            ),
            "{uri}"
        );
        assert_eq!(ct, "application/merge-patch+json");
        assert_eq!(status["status"]["observedGeneration"], 3);
        let ready = status["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == "Ready")
            .expect("Ready")
            .clone();
        assert_eq!(ready["status"], "True");
    });
    let action = reconcile_agent(agent(&[]), ctx).await.expect("reconciled");
    server.await.expect("server");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn an_invalid_spec_is_reported_degraded_and_nothing_is_applied() {
    let (ctx, mut handle) = context();
    let server = tokio::spawn(async move {
        let (m, uri, _, status) = expect(&mut handle, 200, json!({"apiVersion": "dirac.diracgrid.org/v1alpha1",
            "kind": "Agent", "metadata": {"name": "stalled"}, "spec": {"kind": "StalledJobs", "interval": 60}})).await;
        assert_eq!(m, "PATCH");
        assert!(
            uri.contains("/agents/stalled/status"),
            "only the status is touched: {uri}"
        );
        let degraded = status["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == "Degraded")
            .expect("Degraded")
            .clone();
        assert_eq!(
            (degraded["status"].as_str(), degraded["reason"].as_str()),
            (Some("True"), Some("InvalidSpec"))
        );
        assert!(
            degraded["message"]
                .as_str()
                .is_some_and(|m| m.contains("bad key")),
            "{degraded}"
        );
    });
    let action = reconcile_agent(agent(&[("bad key", "1")]), ctx)
        .await
        .expect("handled");
    server.await.expect("server");
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn an_api_error_is_an_error_to_retry() {
    let (ctx, mut handle) = context();
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            403,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "configmaps is forbidden", "reason": "Forbidden", "code": 403}),
        )
        .await;
    });
    let err = reconcile_agent(agent(&[]), ctx.clone())
        .await
        .expect_err("forbidden");
    server.await.expect("server");
    assert!(err.to_string().contains("forbidden"), "{err}");
    assert_eq!(
        error_policy(agent(&[]), &err, ctx),
        Action::requeue(Duration::from_secs(15))
    );
}

fn site_director(finalized: bool, deleting: bool) -> Arc<SiteDirector> {
    let mut sd = SiteDirector::new(
        "wlcg",
        crate::crd::SiteDirectorSpec {
            ce_selector: Default::default(),
            vo: "dteam".into(),
            pilot_url: None,
            pilot_version: None,
            max_pilots_per_cycle: None,
            schedule: None,
            interval: Some(120),
            resources: Default::default(),
        },
    );
    sd.metadata.namespace = Some("dirac".into());
    sd.metadata.uid = Some("uid-sd".into());
    sd.metadata.generation = Some(1);
    if finalized {
        sd.metadata.finalizers = Some(vec![DRAIN_FINALIZER.into()]);
    }
    if deleting {
        sd.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-22T00:00:00Z".parse().expect("time"),
            ));
    }
    Arc::new(sd)
}

fn sd_json() -> Value {
    json!({"apiVersion": "dirac.diracgrid.org/v1alpha1", "kind": "SiteDirector",
           "metadata": {"name": "wlcg", "namespace": "dirac"}, "spec": {"vo": "dteam", "interval": 120}})
}

#[tokio::test]
async fn a_new_site_director_first_gets_its_drain_finalizer() {
    let (ctx, mut handle) = context();
    let server = tokio::spawn(async move {
        let (m, uri, ct, patch) = expect(&mut handle, 200, sd_json()).await;
        assert_eq!(m, "PATCH");
        assert!(
            uri.starts_with(
                "/apis/dirac.diracgrid.org/v1alpha1/namespaces/dirac/sitedirectors/wlcg"
            ),
            "{uri}"
        );
        assert_eq!(ct, "application/json-patch+json");
        assert!(patch.to_string().contains(DRAIN_FINALIZER), "{patch}");
    });
    reconcile_site_director(site_director(false, false), ctx)
        .await
        .expect("reconciled");
    server.await.expect("server");
}

#[tokio::test]
async fn a_site_director_gets_its_computing_elements_and_a_deployment() {
    let (ctx, mut handle) = context();
    let server = tokio::spawn(async move {
        let (m, uri, _, _) = expect(&mut handle, 200, json!({"apiVersion": "dirac.diracgrid.org/v1alpha1",
            "kind": "ComputingElementList", "metadata": {"resourceVersion": "1"}, "items": [
                {"apiVersion": "dirac.diracgrid.org/v1alpha1", "kind": "ComputingElement",
                 "metadata": {"name": "ce1", "namespace": "dirac"},
                 "spec": {"type": "htcondorce", "site": "LCG.A.org", "queues": {"long": {"maxTotalJobs": 10}}}}]})).await;
        assert_eq!(m, "GET");
        assert!(
            uri.starts_with(
                "/apis/dirac.diracgrid.org/v1alpha1/namespaces/dirac/computingelements"
            ),
            "{uri}"
        );
        let (_, uri, _, cm) = expect(
            &mut handle,
            200,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "dirac-sitedirector-wlcg-settings"}}),
        )
        .await;
        assert!(
            uri.contains("/configmaps/dirac-sitedirector-wlcg-settings"),
            "{uri}"
        );
        assert!(
            cm["data"]["DIRAC__RESOURCES__SITES"]
                .as_str()
                .is_some_and(|s| s.contains("ce1")),
            "{cm}"
        );
        let (_, uri, _, dep) = expect(
            &mut handle,
            200,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "dirac-sitedirector-wlcg"}}),
        )
        .await;
        assert!(
            uri.contains("/deployments/dirac-sitedirector-wlcg"),
            "{uri}"
        );
        assert_eq!(
            dep["spec"]["template"]["spec"]["containers"][0]["args"][1],
            "site-director"
        );
        let (m, _, _, _) = expect(&mut handle, 404, not_found()).await;
        assert_eq!(m, "DELETE");
        let (_, uri, _, status) = expect(&mut handle, 200, sd_json()).await;
        assert!(uri.contains("/sitedirectors/wlcg/status"), "{uri}");
        assert_eq!(status["status"]["conditions"][0]["status"], "True");
    });
    reconcile_site_director(site_director(true, false), ctx)
        .await
        .expect("reconciled");
    server.await.expect("server");
}

#[tokio::test]
async fn a_deleted_site_director_stops_submitting_then_lets_go() {
    let (ctx, mut handle) = context();
    let server = tokio::spawn(async move {
        let (m, uri, _, _) = expect(
            &mut handle,
            200,
            json!({"kind": "Status", "apiVersion": "v1",
            "metadata": {}, "status": "Success", "code": 200}),
        )
        .await;
        assert_eq!(m, "DELETE");
        assert!(
            uri.contains("/deployments/dirac-sitedirector-wlcg"),
            "the workload goes first: {uri}"
        );
        let (m, uri, _, _) = expect(&mut handle, 404, not_found()).await;
        assert_eq!(m, "DELETE");
        assert!(uri.contains("/cronjobs/dirac-sitedirector-wlcg"), "{uri}");
        let (m, uri, ct, patch) = expect(&mut handle, 200, sd_json()).await;
        assert_eq!(
            (m.as_str(), ct.as_str()),
            ("PATCH", "application/json-patch+json")
        );
        assert!(uri.contains("/sitedirectors/wlcg"), "{uri}");
        assert!(
            patch.to_string().contains("remove"),
            "the finalizer is removed last: {patch}"
        );
    });
    reconcile_site_director(site_director(true, true), ctx)
        .await
        .expect("reconciled");
    server.await.expect("server");
}

/// With a recorder, an applied change is an event, once: the next
/// reconciliation of the same hash records nothing.
#[tokio::test]
async fn a_change_is_recorded_as_an_event_once() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "dirac");
    let ctx = Arc::new(Context {
        client: client.clone(),
        installation: Installation {
            image: "diracd:test".into(),
            config_map: "dirac-config".into(),
            secret: None,
            keys_secret: None,
            otlp_endpoint: None,
            service_account: None,
        },
        recorder: Some(Recorder::new(
            client,
            kube::runtime::events::Reporter {
                controller: "dirac-operator".into(),
                instance: Some("pod-a".into()),
            },
        )),
        metrics: Default::default(),
    });
    let first = agent(&[]);
    let server = tokio::spawn(async move {
        answer_applied(&mut handle).await;
        let (m, uri, _, event) = expect(
            &mut handle,
            201,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e"}, "eventTime": "2026-11-22T00:00:00.000000Z"}),
        )
        .await;
        assert_eq!(m, "POST");
        assert!(
            uri.starts_with("/apis/events.k8s.io/v1/namespaces/dirac/events"),
            "{uri}"
        );
        assert_eq!(event["reason"], "Applied");
        assert_eq!(event["regarding"]["name"], "stalled");
        let (_, uri, _, status) = expect(&mut handle, 200, json!({"apiVersion": "dirac.diracgrid.org/v1alpha1",
            "kind": "Agent", "metadata": {"name": "stalled"}, "spec": {"kind": "StalledJobs", "interval": 60}})).await;
        assert!(uri.contains("/status"), "{uri}");
        status["status"]["configHash"]
            .as_str()
            .expect("hash")
            .to_string()
    });
    reconcile_agent(first.clone(), ctx.clone())
        .await
        .expect("reconciled");
    let hash = server.await.expect("server");

    // The same spec again, its hash in the status: no event.
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "dirac");
    let ctx = Arc::new(Context {
        client: client.clone(),
        installation: ctx.installation.clone(),
        recorder: Some(Recorder::new(
            client,
            kube::runtime::events::Reporter {
                controller: "dirac-operator".into(),
                instance: None,
            },
        )),
        metrics: Default::default(),
    });
    let mut again = (*first).clone();
    again.status = Some(crate::crd::ResourceStatus {
        config_hash: Some(hash),
        ..Default::default()
    });
    let server = tokio::spawn(async move {
        answer_applied(&mut handle).await;
        let (_, uri, _, _) = expect(&mut handle, 200, json!({"apiVersion": "dirac.diracgrid.org/v1alpha1",
            "kind": "Agent", "metadata": {"name": "stalled"}, "spec": {"kind": "StalledJobs", "interval": 60}})).await;
        assert!(uri.contains("/status"), "no event before the status: {uri}");
    });
    reconcile_agent(Arc::new(again), ctx)
        .await
        .expect("reconciled");
    server.await.expect("server");
}

/// A status that already says what the reconciliation found is not written
/// again: a status write is a change event, and a new timestamp each time
/// would reconcile for ever.
#[tokio::test]
async fn an_unchanged_status_is_not_written_again() {
    let (ctx, mut handle) = context();
    let first = agent(&[]);
    let hash = crate::manifests::agent(&first, &ctx.installation)
        .expect("ok")
        .hash;
    let msg = format!("applied (config hash {hash})");
    let cond = |t: &str, s: &str| {
        serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>(json!({
            "type": t, "status": s, "reason": "Applied", "message": msg,
            "lastTransitionTime": "2026-11-22T00:00:00Z", "observedGeneration": 3}))
        .expect("condition")
    };
    let mut settled = (*first).clone();
    settled.status = Some(crate::crd::ResourceStatus {
        observed_generation: Some(3),
        conditions: vec![
            cond("Ready", "True"),
            cond("Progressing", "False"),
            cond("Degraded", "False"),
        ],
        config_hash: Some(hash),
    });
    let server = tokio::spawn(async move {
        answer_applied(&mut handle).await;
        // Nothing more: no status patch.
        let next = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
        if let Ok(Some((request, _))) = next {
            let uri = request.uri().to_string();
            panic!("no further call, got {uri}");
        }
    });
    reconcile_agent(Arc::new(settled), ctx)
        .await
        .expect("reconciled");
    server.await.expect("server");
}
