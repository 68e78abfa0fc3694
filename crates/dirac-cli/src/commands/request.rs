//! `dirac request put|list|show|cancel|delete`: requests of data
//! operations for the RequestExecutingAgent.

use dirac_client::Client;
use dirac_proto::common::{BulkResult, Ids};
use dirac_proto::rms::{self as pb, ListRequestsRequest, PutRequestsRequest};
use serde_json::json;

use super::{code_words, rpc_error};
use crate::cli::RequestCommand;
use crate::report::Report;

fn request_json(r: &pb::Request) -> serde_json::Value {
    json!({
        "request_id": r.request_id, "name": r.name, "owner": r.owner, "owner_group": r.owner_group,
        "job_id": r.job_id, "status": r.status, "error": r.error, "last_update": r.last_update,
        "not_before": r.not_before,
        "operations": r.operations.iter().map(|o| json!({
            "operation_id": o.operation_id, "type": o.r#type, "status": o.status, "error": o.error,
            "source_se": o.source_se, "target_se": o.target_se,
            "files": o.files.iter().map(|f| json!({
                "lfn": f.lfn, "status": f.status, "attempt": f.attempt, "error": f.error,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn bulk_report(verb: &str, result: &BulkResult, as_json: bool) -> Report {
    let mut failed: Vec<_> = result.failed.iter().collect();
    failed.sort_by_key(|(id, _)| **id);
    let mut report = if as_json {
        Report::out(
            json!({
                "succeeded": result.succeeded,
                "failed": failed.iter().map(|(id, e)| (id.to_string(), json!({"code": e.code, "message": e.message})))
                    .collect::<serde_json::Map<_, _>>(),
            })
            .to_string(),
        )
    } else {
        Report::out(format!("{} requests {verb}", result.succeeded.len()))
    };
    for (id, e) in failed {
        report.eprintln(format!(
            "request {id}: {}: {}",
            code_words(&e.code),
            e.message
        ));
    }
    report.failed |= !result.failed.is_empty();
    report
}

pub async fn run(
    client: &Client,
    command: RequestCommand,
    as_json: bool,
) -> anyhow::Result<Report> {
    let mut stub = client.req_manager();
    match command {
        RequestCommand::Put {
            kind,
            lfns,
            target_se,
            source_se,
            name,
        } => {
            // The default name fits ReqDB's 255 bytes whatever the LFN.
            let name = name.unwrap_or_else(|| {
                let mut n = format!("{kind}:{}", lfns[0]);
                if n.len() > 255 {
                    let mut end = 255;
                    while !n.is_char_boundary(end) {
                        end -= 1;
                    }
                    n.truncate(end);
                }
                n
            });
            let request = pb::Request {
                name,
                source_component: "dirac request put".into(),
                operations: vec![pb::Operation {
                    r#type: kind,
                    target_se,
                    source_se,
                    files: lfns
                        .into_iter()
                        .map(|lfn| pb::File {
                            lfn,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let ids = stub
                .put_requests(PutRequestsRequest {
                    requests: vec![request],
                })
                .await
                .map_err(rpc_error)?
                .into_inner()
                .request_ids;
            Ok(if as_json {
                Report::out(json!({ "request_ids": ids }).to_string())
            } else {
                Report::out(match ids.first() {
                    Some(id) => format!("request {id} put"),
                    None => "no request put".to_string(),
                })
            })
        }
        RequestCommand::List {
            statuses,
            jobs,
            all,
            limit,
        } => {
            let found = stub
                .list_requests(ListRequestsRequest {
                    statuses,
                    job_ids: jobs,
                    all_owners: all,
                    limit,
                })
                .await
                .map_err(rpc_error)?
                .into_inner()
                .requests;
            if as_json {
                return Ok(Report::out(
                    json!({ "requests": found.iter().map(|s| json!({
                        "request_id": s.request_id, "name": s.name, "owner": s.owner, "job_id": s.job_id,
                        "status": s.status, "current_operation": s.current_operation, "error": s.error,
                        "last_update": s.last_update,
                    })).collect::<Vec<_>>() })
                    .to_string(),
                ));
            }
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
            t.set_header(vec![
                "RequestID",
                "Name",
                "Owner",
                "JobID",
                "Status",
                "Current",
                "LastUpdate",
            ]);
            for s in &found {
                t.add_row(vec![
                    s.request_id.to_string(),
                    s.name.clone(),
                    s.owner.clone(),
                    s.job_id.to_string(),
                    s.status.clone(),
                    s.current_operation.clone(),
                    s.last_update.clone(),
                ]);
            }
            Ok(Report::out(t.to_string()))
        }
        RequestCommand::Show { ids } => {
            let got = stub
                .get_requests(Ids { ids })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let mut report = if as_json {
                Report::out(
                    json!({ "requests": got.requests.iter().map(request_json).collect::<Vec<_>>() })
                        .to_string(),
                )
            } else {
                let mut text = String::new();
                for r in &got.requests {
                    text.push_str(&format!(
                        "request {} '{}' of {}: {}{}\n",
                        r.request_id,
                        r.name,
                        r.owner,
                        r.status,
                        if r.error.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", r.error)
                        }
                    ));
                    for o in &r.operations {
                        text.push_str(&format!("  {} {}\n", o.r#type, o.status));
                        for f in &o.files {
                            text.push_str(&format!(
                                "    {} {} (attempt {}){}\n",
                                f.lfn,
                                f.status,
                                f.attempt,
                                if f.error.is_empty() {
                                    String::new()
                                } else {
                                    format!(": {}", f.error)
                                }
                            ));
                        }
                    }
                }
                Report::out(text.trim_end().to_string())
            };
            let mut failed: Vec<_> = got.failed.iter().collect();
            failed.sort_by_key(|(id, _)| **id);
            for (id, e) in failed {
                report.eprintln(format!(
                    "request {id}: {}: {}",
                    code_words(&e.code),
                    e.message
                ));
                report.failed = true;
            }
            Ok(report)
        }
        RequestCommand::Cancel { ids } => {
            let result = stub
                .cancel_requests(Ids { ids })
                .await
                .map_err(rpc_error)?
                .into_inner();
            Ok(bulk_report("canceled", &result, as_json))
        }
        RequestCommand::Delete { ids } => {
            let result = stub
                .delete_requests(Ids { ids })
                .await
                .map_err(rpc_error)?
                .into_inner();
            Ok(bulk_report("deleted", &result, as_json))
        }
    }
}
