//! Leader election with a `coordination.k8s.io` Lease: one operator replica
//! reconciles, the others wait. A holder renews well within the lease
//! duration; a lease not renewed for its duration may be taken over. Writes
//! carry the Lease's resourceVersion, so two candidates never both win.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

/// Take or keep the lease `name` for `identity`; `Ok(false)` while another
/// holder's lease is fresh (or another candidate won the race).
pub async fn try_acquire(
    api: &Api<Lease>,
    name: &str,
    identity: &str,
    duration_s: i32,
) -> Result<bool, kube::Error> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let spec = |transitions: i32, acquired: Option<MicroTime>| {
        json!({
            "holderIdentity": identity,
            "leaseDurationSeconds": duration_s,
            "acquireTime": acquired.unwrap_or(MicroTime(now)),
            "renewTime": MicroTime(now),
            "leaseTransitions": transitions,
        })
    };
    let current = match api.get_opt(name).await? {
        None => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": { "name": name },
                "spec": spec(0, None),
            }))
            .map_err(kube::Error::SerdeError)?;
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        }
        Some(l) => l,
    };
    let s = current.spec.clone().unwrap_or_default();
    let ours = s.holder_identity.as_deref() == Some(identity);
    let expired = match (&s.renew_time, s.lease_duration_seconds) {
        (Some(MicroTime(t)), Some(d)) => now.as_second() - t.as_second() > i64::from(d),
        _ => true,
    };
    if !ours && !expired {
        return Ok(false);
    }
    let transitions = s.lease_transitions.unwrap_or(0) + i32::from(!ours);
    let mut next = current.clone();
    next.spec = Some(
        serde_json::from_value(spec(
            transitions,
            if ours { s.acquire_time.clone() } else { None },
        ))
        .map_err(kube::Error::SerdeError)?,
    );
    // replace() sends the resourceVersion we read: a concurrent write wins.
    match api.replace(name, &PostParams::default(), &next).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    use crate::mock::Handle;

    async fn answer(handle: &mut Handle, status: u16, body: Value) -> (String, Value) {
        let s = crate::mock::expect(handle, status, body).await;
        (s.method, s.body)
    }

    fn api() -> (Api<Lease>, Handle) {
        let (client, handle) = crate::mock::client("dirac");
        (Api::namespaced(client, "dirac"), handle)
    }

    fn lease(holder: &str, renewed: &str) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "dirac-operator", "resourceVersion": "41"},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed,
                        "acquireTime": renewed, "leaseTransitions": 2}})
    }

    fn not_found() -> Value {
        crate::mock::status(404, "NotFound")
    }

    #[tokio::test]
    async fn a_missing_lease_is_created_and_won() {
        let (api, mut handle) = api();
        let server = tokio::spawn(async move {
            assert_eq!(answer(&mut handle, 404, not_found()).await.0, "GET");
            let (m, body) = answer(
                &mut handle,
                201,
                lease("pod-a", "2026-11-22T00:00:00.000000Z"),
            )
            .await;
            assert_eq!(m, "POST");
            assert_eq!(body["spec"]["holderIdentity"], "pod-a");
        });
        assert!(
            try_acquire(&api, "dirac-operator", "pod-a", 15)
                .await
                .expect("ok")
        );
        server.await.expect("server");
    }

    #[tokio::test]
    async fn a_fresh_lease_of_another_holder_is_left_alone() {
        let (api, mut handle) = api();
        let fresh = k8s_openapi::jiff::Timestamp::now().to_string();
        let server = tokio::spawn(async move {
            assert_eq!(
                answer(&mut handle, 200, lease("pod-b", &fresh)).await.0,
                "GET"
            );
        });
        assert!(
            !try_acquire(&api, "dirac-operator", "pod-a", 15)
                .await
                .expect("ok")
        );
        server.await.expect("server");
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_with_its_resource_version() {
        let (api, mut handle) = api();
        let server = tokio::spawn(async move {
            answer(
                &mut handle,
                200,
                lease("pod-b", "2026-01-01T00:00:00.000000Z"),
            )
            .await;
            let (m, body) = answer(
                &mut handle,
                200,
                lease("pod-a", "2026-11-22T00:00:00.000000Z"),
            )
            .await;
            assert_eq!(m, "PUT");
            assert_eq!(
                body["metadata"]["resourceVersion"], "41",
                "a concurrent write makes this fail"
            );
            assert_eq!(body["spec"]["holderIdentity"], "pod-a");
            assert_eq!(body["spec"]["leaseTransitions"], 3);
        });
        assert!(
            try_acquire(&api, "dirac-operator", "pod-a", 15)
                .await
                .expect("ok")
        );
        server.await.expect("server");
    }

    #[tokio::test]
    async fn losing_the_race_is_not_an_error() {
        let (api, mut handle) = api();
        let server = tokio::spawn(async move {
            answer(
                &mut handle,
                200,
                lease("pod-b", "2026-01-01T00:00:00.000000Z"),
            )
            .await;
            answer(&mut handle, 409, crate::mock::status(409, "Conflict")).await;
        });
        assert!(
            !try_acquire(&api, "dirac-operator", "pod-a", 15)
                .await
                .expect("ok")
        );
        server.await.expect("server");
    }
}
