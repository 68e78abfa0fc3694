//! Server bootstrap shared by every binary: one tonic server with the auth
//! layer, gRPC health checking, server reflection, optional TLS (rustls) and
//! graceful shutdown on Ctrl-C or SIGTERM.

use std::future::Future;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::{Identity as TlsIdentity, Server, ServerTlsConfig};

use crate::auth::AuthLayer;
use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("tls: cannot read {path}: {source}")]
    TlsFile {
        path: String,
        source: std::io::Error,
    },
    #[error("tls: {0}")]
    Tls(tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("server: {0}")]
    Transport(tonic::transport::Error),
}

/// Services to serve, and the names to report healthy.
pub struct ServiceSet {
    routes: tonic::service::RoutesBuilder,
    names: Vec<&'static str>,
}

impl Default for ServiceSet {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceSet {
    pub fn new() -> Self {
        ServiceSet {
            routes: Routes::builder(),
            names: Vec::new(),
        }
    }

    pub fn add<S>(&mut self, service: S) -> &mut Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }
}

/// Serve `services` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    services: ServiceSet,
    auth: AuthLayer,
    tls: Option<&TlsConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in &services.names {
        reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dirac_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dirac_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let mut routes = services.routes;
    routes
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let mut builder = Server::builder();
    if let Some(tls) = tls {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|source| ServeError::TlsFile {
                path: p.display().to_string(),
                source,
            })
        };
        let identity = TlsIdentity::from_pem(read(&tls.cert)?, read(&tls.key)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(ServeError::Tls)?;
    }
    // Without TCP_NODELAY a small answer waits for the client's delayed
    // ACK: 40 ms on every unary call.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    // Graceful shutdown waits for open connections; a client that keeps
    // one (an idle channel, a stream) must not keep the server up: after
    // the grace period it stops anyway.
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let signalled = async move {
        shutdown.await;
        let _ = signalled_tx.send(());
    };
    let serve = builder
        .layer(tower::util::MapResponseLayer::new(
            undecodable_is_invalid_argument,
        ))
        .layer(auth)
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(incoming, signalled);
    let grace = async move {
        if signalled_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = serve => served.map_err(ServeError::Transport),
        () = grace => {
            tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "connections still open after the grace period; stopping");
            Ok(())
        }
    }
}

/// tonic answers a request it cannot decode (a string field that is not
/// UTF-8, a truncated message) with `Internal`; it is the caller's bad
/// input: `InvalidArgument`, with the same message.
fn undecodable_is_invalid_argument<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers();
    let undecodable = headers.get("grpc-status").is_some_and(|v| v == "13")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| {
                m.starts_with("failed%20to%20decode") || m.starts_with("failed to decode")
            });
    if undecodable {
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    response
}

/// How long a stopping server waits for open connections to finish.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolves on Ctrl-C or SIGTERM.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    // Registered now, not when first polled: a SIGTERM that arrives while
    // the process is still starting is kept and honoured once it serves.
    #[cfg(unix)]
    let (term, int) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(term) => {},
                () = wait(int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down");
    }
}
