//! `dirac pilot ...`: each command fetches, then a pure `*_report` function
//! turns the reply into a [`Report`].

use dirac_client::Client;
use dirac_proto::wms::{Pilot, PilotLogRequest, PilotLogResponse, SearchPilotsRequest};

use super::rpc_error;
use crate::cli::PilotCommand;
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
        PilotCommand::Logs { stamp } => {
            let response = client
                .pilot_manager()
                .get_pilot_log(PilotLogRequest { stamp })
                .await
                .map_err(rpc_error)?
                .into_inner();
            Ok(logs_report(&response, as_json))
        }
    }
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
