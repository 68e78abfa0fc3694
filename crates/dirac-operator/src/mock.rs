//! A mocked API server for the scenario tests (tower-test): one request at
//! a time, answered with a status and a JSON body.

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A client whose every call the returned handle must answer.
pub fn client(namespace: &str) -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, namespace), handle)
}

/// What the client sent.
pub struct Sent {
    pub method: String,
    pub uri: String,
    pub content_type: String,
    pub body: Value,
}

/// The next request, answered with `status` and `body`.
pub async fn expect(handle: &mut Handle, status: u16, body: Value) -> Sent {
    let (request, send) = handle.next_request().await.expect("a request");
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = request.into_body().collect_bytes().await.expect("body");
    let sent = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("json body")
    };
    send.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).expect("json")))
            .expect("response"),
    );
    Sent {
        method,
        uri,
        content_type,
        body: sent,
    }
}

/// A `Status` answer with `code` and `reason`.
pub fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason.to_lowercase(), "reason": reason, "code": code})
}
