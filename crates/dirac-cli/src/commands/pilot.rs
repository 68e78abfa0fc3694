//! `dirac pilot ...`: each command fetches, then a pure `*_report` function
//! turns the reply into a [`Report`].

use std::collections::HashMap;

use dirac_client::Client;
use dirac_proto::common::ItemError;
use dirac_proto::wms::{
    Pilot, PilotLogRequest, PilotLogResponse, PilotStamps, QueueStatus, QueueStatusRequest,
    SearchPilotsRequest, SetSiteStatusRequest, SiteMaskRequest, SiteStatus,
};
use serde_json::json;

use super::{code_words, rpc_error};
use crate::cli::{CeCommand, PilotCommand, SiteCommand};
use crate::report::Report;
use crate::{json, table};

pub async fn run(client: &Client, command: PilotCommand, as_json: bool) -> anyhow::Result<Report> {
    match command {
        PilotCommand::List { filters, limit } => {
            let request = SearchPilotsRequest {
                filters: filters.filters,
                limit,
                offset: 0,
            };
            let response = client
                .pilot_manager()
                .search_pilots(request)
                .await
                .map_err(rpc_error)?
                .into_inner();
            Ok(list_report(&response.pilots, response.total, as_json))
        }
        PilotCommand::Logs { stamp, ce } => {
            let mut stub = client.pilot_manager();
            let request = PilotLogRequest { stamp };
            let response = if ce {
                stub.get_pilot_output(request).await
            } else {
                stub.get_pilot_log(request).await
            }
            .map_err(rpc_error)?
            .into_inner();
            Ok(logs_report(&response, as_json))
        }
        PilotCommand::Show { stamps } => {
            let response = client
                .pilot_manager()
                .get_pilots(PilotStamps { stamps })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let mut report = if as_json {
                Report::out(json::render(&json!({
                    "pilots": response.pilots.iter().map(json::pilot).collect::<Vec<_>>(),
                    "failed": failed_json(&response.failed),
                })))
            } else {
                show_report(&response.pilots)
            };
            report_failed(&mut report, &response.failed);
            Ok(report)
        }
        PilotCommand::Kill { stamps } => {
            let response = client
                .pilot_manager()
                .kill_pilots(PilotStamps { stamps })
                .await
                .map_err(rpc_error)?
                .into_inner();
            let mut report = if as_json {
                Report::out(json::render(&json!({
                    "killed": response.killed,
                    "failed": failed_json(&response.failed),
                })))
            } else {
                let mut r = Report::default();
                for stamp in &response.killed {
                    r.println(format!("pilot {stamp}: killed"));
                }
                r
            };
            report_failed(&mut report, &response.failed);
            Ok(report)
        }
    }
}

pub async fn run_ce(client: &Client, command: CeCommand, as_json: bool) -> anyhow::Result<Report> {
    match command {
        CeCommand::Status { site } => {
            let response = client
                .pilot_manager()
                .get_queue_status(QueueStatusRequest {
                    site: site.unwrap_or_default(),
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            Ok(queues_report(&response.queues, as_json))
        }
    }
}

pub async fn run_site(
    client: &Client,
    command: SiteCommand,
    as_json: bool,
) -> anyhow::Result<Report> {
    let mut stub = client.site_mask();
    let sites = match command {
        SiteCommand::List => {
            stub.get_site_mask(SiteMaskRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner()
                .sites
        }
        SiteCommand::Ban { sites, reason } => {
            stub.set_site_status(SetSiteStatusRequest {
                sites,
                status: "Banned".into(),
                reason,
            })
            .await
            .map_err(rpc_error)?
            .into_inner()
            .sites
        }
        SiteCommand::Allow { sites, reason } => {
            stub.set_site_status(SetSiteStatusRequest {
                sites,
                status: "Active".into(),
                reason,
            })
            .await
            .map_err(rpc_error)?
            .into_inner()
            .sites
        }
    };
    Ok(sites_report(&sites, as_json))
}

fn failed_json(failed: &HashMap<String, ItemError>) -> serde_json::Value {
    failed
        .iter()
        .map(|(k, e)| (k.clone(), json!({"code": e.code, "message": e.message})))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// `pilot X: not found: …` on stderr, in stamp order; marks the report failed.
fn report_failed(report: &mut Report, failed: &HashMap<String, ItemError>) {
    let mut items: Vec<_> = failed.iter().collect();
    items.sort_by_key(|(k, _)| k.as_str());
    for (stamp, e) in items {
        report.eprintln(format!(
            "pilot {stamp}: {}: {}",
            code_words(&e.code),
            e.message
        ));
    }
    report.failed |= !failed.is_empty();
}

fn show_report(pilots: &[Pilot]) -> Report {
    let mut report = Report::default();
    for p in pilots {
        let jobs: Vec<String> = p.job_ids.iter().map(u64::to_string).collect();
        for (k, v) in [
            ("Stamp", p.stamp.as_str()),
            ("Reference", &p.reference),
            ("Status", &p.status),
            ("Reason", &p.status_reason),
            ("Site", &p.site),
            ("CE", &p.ce),
            ("Queue", &p.queue),
            ("GridType", &p.grid_type),
            ("Submitted", &p.submission_time),
            ("LastUpdate", &p.last_update_time),
            ("Jobs", &jobs.join(" ")),
        ] {
            report.println(format!("{k:<11}{v}"));
        }
        report.println("");
    }
    report
}

fn queues_report(queues: &[QueueStatus], as_json: bool) -> Report {
    if as_json {
        return Report::out(json::render(
            &json!({ "queues": queues.iter().map(|q| json!({
            "site": q.site, "ce": q.ce, "queue": q.queue, "ce_type": q.ce_type,
            "max_total": q.max_total, "max_waiting": q.max_waiting,
            "waiting_pilots": q.waiting_pilots, "running_pilots": q.running_pilots,
            "waiting_jobs": q.waiting_jobs, "site_banned": q.site_banned,
        })).collect::<Vec<_>>() }),
        ));
    }
    if queues.is_empty() {
        let mut r = Report::default();
        r.eprintln("no computing element is configured");
        return r;
    }
    Report::out(table::queues(queues).to_string())
}

fn sites_report(sites: &[SiteStatus], as_json: bool) -> Report {
    if as_json {
        return Report::out(json::render(&json!({ "sites": sites.iter().map(|s| json!({
            "site": s.site, "status": s.status, "reason": s.reason,
            "author": s.author, "last_update": s.last_update,
        })).collect::<Vec<_>>() })));
    }
    if sites.is_empty() {
        return Report::out("no site is in the mask: every site is active");
    }
    Report::out(table::sites(sites).to_string())
}

fn list_report(pilots: &[Pilot], total: u64, as_json: bool) -> Report {
    if as_json {
        return Report::out(json::render(&json::pilots(pilots, total)));
    }
    let mut report = Report::out(table::pilots(pilots).to_string());
    report.println(format!("{} of {total} pilots", pilots.len()));
    report
}

fn logs_report(response: &PilotLogResponse, as_json: bool) -> Report {
    if as_json {
        return Report::out(json::render(&json::pilot_log(response)));
    }
    if response.text.is_empty() {
        let mut report = Report::default();
        report.eprintln(format!("pilot {}: the log is empty", response.stamp));
        return report;
    }
    Report::out(response.text.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_footer() {
        let pilots = [Pilot {
            stamp: "abc".to_owned(),
            ..Pilot::default()
        }];
        let report = list_report(&pilots, 40, false);
        assert!(report.stdout.contains("abc"));
        assert!(
            report.stdout.ends_with("1 of 40 pilots\n"),
            "{}",
            report.stdout
        );
        let report = list_report(&pilots, 40, true);
        let value: serde_json::Value = serde_json::from_str(&report.stdout).expect("json");
        assert_eq!(value["total"], 40);
        assert_eq!(value["pilots"][0]["stamp"], "abc");
    }

    #[test]
    fn logs_are_printed_as_they_are() {
        let response = PilotLogResponse {
            stamp: "abc".to_owned(),
            text: "started\nmatched job 4\n".to_owned(),
        };
        let report = logs_report(&response, false);
        assert_eq!(report.stdout, "started\nmatched job 4\n");
        assert!(!report.failed);

        let empty = PilotLogResponse {
            stamp: "abc".to_owned(),
            text: String::new(),
        };
        let report = logs_report(&empty, false);
        assert!(report.stdout.is_empty());
        assert_eq!(report.stderr, "pilot abc: the log is empty\n");

        let report = logs_report(&response, true);
        let value: serde_json::Value = serde_json::from_str(&report.stdout).expect("json");
        assert_eq!(value["text"], "started\nmatched job 4\n");
    }
}
