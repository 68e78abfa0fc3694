//! Reconciliation of 1,000 `Agent` resources against a mocked API server
//! that answers every call at once (target: converge in < 10 s). Measures
//! the operator's own cost: manifests, serialisation, the client stack.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use dirac_operator::controller::{Context, reconcile_agent};
use dirac_operator::crd::{Agent, AgentKind, AgentSpec};
use dirac_operator::manifests::Installation;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;

fn agents(n: usize) -> Vec<Arc<Agent>> {
    (0..n)
        .map(|i| {
            let mut a = Agent::new(
                &format!("agent-{i}"),
                AgentSpec {
                    kind: AgentKind::StalledJobs,
                    schedule: (i % 2 == 0).then(|| "*/5 * * * *".to_string()),
                    interval: (i % 2 == 1).then_some(300),
                    replicas: None,
                    settings: [("StalledTimeS".to_string(), "4500".to_string())].into(),
                    resources: Default::default(),
                },
            );
            a.metadata.namespace = Some("dirac".into());
            a.metadata.uid = Some(format!("uid-{i}"));
            a.metadata.generation = Some(1);
            Arc::new(a)
        })
        .collect()
}

/// An API server that answers each request with a minimal object of the
/// kind asked for (404 for deletions of the other workload kind).
fn serve(mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>) {
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let path = request.uri().path().to_string();
            let (status, body) = if request.method() == http::Method::DELETE {
                (404, r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"NotFound","code":404}"#.to_string())
            } else if path.contains("/configmaps/") {
                (
                    200,
                    r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#.to_string(),
                )
            } else if path.contains("/deployments/") {
                (
                    200,
                    r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"}}"#
                        .to_string(),
                )
            } else if path.contains("/cronjobs/") {
                (
                    200,
                    r#"{"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"x"}}"#
                        .to_string(),
                )
            } else {
                (200, r#"{"apiVersion":"dirac.diracgrid.org/v1alpha1","kind":"Agent","metadata":{"name":"x"},"spec":{"kind":"StalledJobs","interval":1}}"#.to_string())
            };
            send.send_response(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(body.into_bytes()))
                    .expect("response"),
            );
        }
    });
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let list = agents(1000);
    let mut group = c.benchmark_group("operator");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("reconcile_1000_agents", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
                serve(handle);
                let ctx = Arc::new(Context {
                    client: Client::new(service, "dirac"),
                    installation: Installation {
                        image: "diracd:bench".into(),
                        config_map: "dirac-config".into(),
                        secret: None,
                        keys_secret: None,
                        otlp_endpoint: None,
                        service_account: None,
                    },
                    recorder: None,
                    metrics: Default::default(),
                });
                let runs = list.iter().map(|a| reconcile_agent(a.clone(), ctx.clone()));
                let results = futures::future::join_all(runs).await;
                assert!(results.iter().all(Result::is_ok));
            });
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
