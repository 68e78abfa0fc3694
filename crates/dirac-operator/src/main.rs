//! `dirac-operator`: reconciles `Agent`, `SiteDirector` and
//! `ComputingElement` resources while it holds the leader Lease.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use dirac_operator::controller::{self, Context};
use dirac_operator::crd::{Agent, ComputingElement, SiteDirector};
use dirac_operator::manifests::Installation;
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};

#[derive(Debug, Parser)]
#[command(
    name = "dirac-operator",
    version,
    about = "Reconciles DIRAC agents, site directors and computing elements"
)]
struct Args {
    /// The diracd image of the workloads.
    #[arg(long, env = "DIRAC_IMAGE")]
    image: String,
    /// ConfigMap with the installation's dirac.yaml.
    #[arg(long, env = "DIRAC_CONFIG_MAP", default_value = "dirac-config")]
    config_map: String,
    /// Secret passed to the workloads as environment (database URLs…).
    #[arg(long, env = "DIRAC_SECRET")]
    secret: Option<String>,
    /// Secret with the installation's keys, mounted as Services.Auth.KeysDir.
    #[arg(long, env = "DIRAC_KEYS_SECRET")]
    keys_secret: Option<String>,
    #[arg(long, env = "DIRAC_SERVICE_ACCOUNT")]
    service_account: Option<String>,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's name in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "dirac-operator")]
    identity: String,
    #[arg(long, default_value = "json")]
    log_format: String,
    /// Address of `/metrics` (Prometheus) and `/healthz`.
    #[arg(long, env = "DIRAC_METRICS_LISTEN", default_value = "127.0.0.1:9090")]
    metrics_listen: String,
}

const LEASE: &str = "dirac-operator";
const LEASE_SECONDS: i32 = 15;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = dirac_core::telemetry::init(
        "dirac-operator",
        &args.log_format,
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    let client = Client::try_default().await?;
    let metrics = Arc::new(dirac_operator::metrics::Metrics::default());
    let listener = tokio::net::TcpListener::bind(&args.metrics_listen).await?;
    let served = metrics.clone();
    tokio::spawn(async move {
        let router = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let m = served.clone();
                    async move { m.render() }
                }),
            )
            .route("/healthz", axum::routing::get(|| async { "ok" }));
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    let leases: Api<Lease> = Api::namespaced(client.clone(), &args.lease_namespace);
    while !dirac_operator::leader::try_acquire(&leases, LEASE, &args.identity, LEASE_SECONDS)
        .await?
    {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    tracing::info!(identity = %args.identity, "leader: reconciling");
    metrics
        .leader
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let ctx = Arc::new(Context {
        client: client.clone(),
        installation: Installation {
            image: args.image.clone(),
            config_map: args.config_map.clone(),
            secret: args.secret.clone(),
            keys_secret: args.keys_secret.clone(),
            otlp_endpoint: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
                .ok()
                .filter(|e| !e.trim().is_empty()),
            service_account: args.service_account.clone(),
        },
        recorder: Some(kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "dirac-operator".into(),
                instance: Some(args.identity.clone()),
            },
        )),
        metrics: metrics.clone(),
    });
    // Keep the lease; a replica that loses it stops (and restarts as a candidate).
    let renew = {
        let (leases, identity) = (leases.clone(), args.identity.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                match dirac_operator::leader::try_acquire(&leases, LEASE, &identity, LEASE_SECONDS)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return "another replica holds the lease",
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the lease");
                    }
                }
            }
        })
    };
    let cfg = watcher::Config::default();
    let agents = Controller::new(Api::<Agent>::all(client.clone()), cfg.clone())
        .owns(Api::<Deployment>::all(client.clone()), cfg.clone())
        .owns(Api::<CronJob>::all(client.clone()), cfg.clone())
        .run(
            controller::reconcile_agent,
            controller::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let ce_changes = watcher(Api::<ComputingElement>::all(client.clone()), cfg.clone()).map(|_| ());
    let directors = Controller::new(Api::<SiteDirector>::all(client.clone()), cfg.clone())
        .owns(Api::<Deployment>::all(client.clone()), cfg.clone())
        .reconcile_all_on(ce_changes)
        .run(
            controller::reconcile_site_director,
            controller::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let ces = Controller::new(Api::<ComputingElement>::all(client.clone()), cfg)
        .run(
            controller::reconcile_computing_element,
            controller::error_policy,
            ctx,
        )
        .for_each(|_| async {});
    tokio::select! {
        () = async { tokio::join!(agents, directors, ces); } => {}
        lost = renew => {
            anyhow::bail!("stopping: {}", lost.unwrap_or("the lease task ended"));
        }
        () = dirac_core::server::shutdown_signal() => {}
    }
    Ok(())
}
