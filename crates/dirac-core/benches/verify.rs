//! Token verification in the shared auth layer: the cost every RPC pays.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dirac_core::auth::{AuthLayer, Identity, PolicyTable, SigningAlgorithm, TokenIssuer};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tmp");
    let issuer = TokenIssuer::load_or_create(&dir.path().join("key.pem"), "bench", "dirac-bench")
        .expect("key");
    let who = Identity {
        sub: "dteam:alice".into(),
        username: "alice".into(),
        vo: "dteam".into(),
        group: "dteam_user".into(),
        properties: vec!["NormalUser".into()],
        job: None,
    };
    let token = issuer.issue(&who, 3600).expect("token");
    let verifier = issuer.verifier();
    let mut group = c.benchmark_group("auth");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_token", |b| {
        b.iter(|| {
            verifier
                .verify(std::hint::black_box(&token))
                .expect("valid")
        })
    });
    let rsa = TokenIssuer::load_or_create_with(
        &dir.path().join("rsa.pem"),
        SigningAlgorithm::RS256,
        "bench",
        "dirac-bench",
    )
    .expect("rsa key");
    let rsa_token = rsa.issue(&who, 3600).expect("token");
    let rsa_verifier = rsa.verifier();
    group.bench_function("verify_token_rs256", |b| {
        b.iter(|| {
            rsa_verifier
                .verify(std::hint::black_box(&rsa_token))
                .expect("valid")
        })
    });
    let mut table = PolicyTable::new();
    table.add_service(
        "dirac.wms.v1.JobMonitoring",
        &[("GetJobs", dirac_core::auth::Access::AnyOf(&["NormalUser"]))],
    );
    let layer = AuthLayer::new(table, verifier.clone());
    let header = format!("Bearer {token}");
    group.bench_function("layer_check", |b| {
        b.iter(|| {
            layer
                .check(
                    "/dirac.wms.v1.JobMonitoring/GetJobs",
                    Some(std::hint::black_box(&header)),
                )
                .expect("ok")
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
