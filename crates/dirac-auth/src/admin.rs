//! The AuthAdmin gRPC service: who-am-i and session management for
//! internal tooling. Users see and end their own sessions; a
//! ServiceAdministrator those of every user of its VO.

use std::sync::Arc;

use dirac_core::auth::{Access, Identity, PolicyTable};
use dirac_proto::auth as pb;
use dirac_proto::auth::auth_admin_server::AuthAdmin;
use tonic::{Request, Response, Status};

use crate::{AuthError, AuthServer};

pub const AUTH_ADMIN: &str = "dirac.auth.v1.AuthAdmin";
const ANY_USER: &[&str] = &[
    "NormalUser",
    "JobAdministrator",
    "JobMonitor",
    "ServiceAdministrator",
    "Operator",
    "ProductionManagement",
    "GenericPilot",
];
const ADMIN: &str = "ServiceAdministrator";

/// Every AuthAdmin method with its access policy.
pub fn register(table: &mut PolicyTable) {
    table.add_service(
        AUTH_ADMIN,
        &[
            ("WhoAmI", Access::AnyOf(ANY_USER)),
            ("ListSessions", Access::AnyOf(ANY_USER)),
            ("RevokeSessions", Access::AnyOf(ANY_USER)),
        ],
    );
}

pub struct AdminService(pub Arc<AuthServer>);

fn caller<T>(req: &Request<T>) -> Result<Identity, Status> {
    req.extensions()
        .get::<Identity>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated identity"))
}

fn internal(e: AuthError) -> Status {
    tracing::error!(error = %e, "AuthAdmin");
    Status::internal("AuthDB error")
}

#[tonic::async_trait]
impl AuthAdmin for AdminService {
    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let who = caller(&req)?;
        Ok(Response::new(pb::WhoAmIResponse {
            sub: who.sub,
            username: who.username,
            vo: who.vo,
            group: who.group,
            properties: who.properties,
            job_id: who.job,
        }))
    }

    async fn list_sessions(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let who = caller(&req)?;
        if who.job.is_some() {
            return Err(Status::permission_denied("job tokens manage no sessions"));
        }
        let asked = req.into_inner().username;
        let user = match asked.as_str() {
            "" => Some(who.username.as_str()),
            u if u == who.username => Some(u),
            u if who.has(ADMIN) => Some(u),
            _ => {
                return Err(Status::permission_denied(
                    "only a ServiceAdministrator lists other users' sessions",
                ));
            }
        };
        let rows = self
            .0
            .store
            .list_sessions(&who.vo, user)
            .await
            .map_err(internal)?;
        let sessions = rows
            .into_iter()
            .map(
                |(session_id, username, group, scope, client_id, created, expires)| pb::Session {
                    session_id,
                    username,
                    group,
                    scope,
                    client_id,
                    created,
                    expires,
                },
            )
            .collect();
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn revoke_sessions(
        &self,
        req: Request<pb::RevokeSessionsRequest>,
    ) -> Result<Response<pb::RevokeSessionsResponse>, Status> {
        let who = caller(&req)?;
        if who.job.is_some() {
            return Err(Status::permission_denied("job tokens manage no sessions"));
        }
        let ids = req.into_inner().session_ids;
        if ids.len() > 1000 {
            return Err(Status::invalid_argument("at most 1000 sessions per call"));
        }
        let mut out = pb::RevokeSessionsResponse::default();
        for id in ids {
            let owner = self.0.store.session_owner(&id).await.map_err(internal)?;
            let allowed = owner
                .is_some_and(|(vo, user)| vo == who.vo && (user == who.username || who.has(ADMIN)));
            if allowed {
                self.0.store.revoke_family(&id).await.map_err(internal)?;
                out.revoked += 1;
            } else {
                out.not_found.push(id);
            }
        }
        tracing::info!(by = %who.sub, revoked = out.revoked, "sessions revoked");
        Ok(Response::new(out))
    }
}
