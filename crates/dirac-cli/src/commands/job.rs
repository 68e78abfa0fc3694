//! `dirac job ...`: each command fetches, then a pure `*_report` function
//! turns the reply into a [`Report`].

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use dirac_client::Client;
use dirac_proto::common::{BulkResult, ItemError};
use dirac_proto::wms::{
    GetHistoryResponse, GetJobsResponse, Job, SubmitJobsResponse, SummaryResponse,
};

use super::{code_words, rpc_error};
use crate::cli::JobCommand;
use crate::report::Report;
use crate::{json, table};

pub async fn run(client: &Client, command: JobCommand, as_json: bool) -> anyhow::Result<Report> {
    match command {
        JobCommand::Submit { files, request_id } => {
            let (names, jdls) = read_jdls(&files)?;
            let response = client
                .submit_jdls(jdls, request_id)
                .await
                .map_err(rpc_error)?;
            Ok(submit_report(&response, &names, as_json))
        }
        JobCommand::Status(list) => {
            let response = client.get_jobs(list.ids).await.map_err(rpc_error)?;
            Ok(status_report(&response, as_json))
        }
        JobCommand::Search {
            filters,
            sort,
            limit,
            offset,
            all,
        } => {
            let (jobs, total) = if all {
                let jobs = client
                    .stream_all_jobs(filters.filters, sort)
                    .await
                    .map_err(rpc_error)?;
                let total = jobs.len() as u64;
                (jobs, total)
            } else {
                let page = client
                    .search_jobs(filters.filters, sort, limit, offset)
                    .await
                    .map_err(rpc_error)?;
                (page.jobs, page.total)
            };
            Ok(search_report(&jobs, total, as_json))
        }
        JobCommand::Summary { group_by, filters } => {
            let response = client
                .summary(group_by, filters.filters)
                .await
                .map_err(rpc_error)?;
            Ok(summary_report(&response, as_json))
        }
        JobCommand::History { id } => {
            let response = client.get_history(vec![id]).await.map_err(rpc_error)?;
            history_report(id, &response, as_json)
        }
        JobCommand::Jdl { id, original } => {
            let text = client.get_jdl(id, original).await.map_err(rpc_error)?;
            Ok(jdl_report(id, &text, as_json))
        }
        JobCommand::Kill(list) => {
            let result = client.kill_jobs(list.ids).await.map_err(rpc_error)?;
            Ok(bulk_report("killed", &result, as_json))
        }
        JobCommand::Delete(list) => {
            let result = client.delete_jobs(list.ids).await.map_err(rpc_error)?;
            Ok(bulk_report("deleted", &result, as_json))
        }
        JobCommand::Reschedule { ids, reset } => {
            let result = client
                .reschedule_jobs(ids.ids, reset)
                .await
                .map_err(rpc_error)?;
            Ok(bulk_report("rescheduled", &result, as_json))
        }
    }
}

/// Reads every JDL file (`-` is standard input); returns display names and texts.
fn read_jdls(files: &[PathBuf]) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut names = Vec::with_capacity(files.len());
    let mut texts = Vec::with_capacity(files.len());
    for path in files {
        let (name, text) = if path == Path::new("-") {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("read jdl from standard input")?;
            ("-".to_owned(), text)
        } else {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read jdl file {}", path.display()))?;
            (path.display().to_string(), text)
        };
        if text.trim().is_empty() {
            bail!("jdl file {name} is empty");
        }
        names.push(name);
        texts.push(text);
    }
    Ok((names, texts))
}

/// `job 3: not found: job 3 does not exist`.
fn item_line(id: u64, e: &ItemError) -> String {
    let code = code_words(&e.code);
    match (code.is_empty(), e.message.is_empty()) {
        (true, _) => format!("job {id}: {}", e.message),
        (false, true) => format!("job {id}: {code}"),
        (false, false) => format!("job {id}: {code}: {}", e.message),
    }
}

/// Failed items on stderr, in id order; marks the report failed.
fn report_failed(report: &mut Report, failed: &std::collections::HashMap<u64, ItemError>) {
    let mut ids: Vec<_> = failed.iter().collect();
    ids.sort_by_key(|(id, _)| **id);
    for (id, e) in ids {
        report.eprintln(item_line(*id, e));
    }
    report.failed |= !failed.is_empty();
}

fn submit_report(response: &SubmitJobsResponse, names: &[String], as_json: bool) -> Report {
    if as_json {
        return Report::out(json::render(&json::submit(response)));
    }
    let rows: Vec<_> = response
        .jobs
        .iter()
        .map(|j| {
            let file = usize::try_from(j.jdl_index)
                .ok()
                .and_then(|i| names.get(i))
                .cloned()
                .unwrap_or_else(|| format!("#{}", j.jdl_index));
            (j.job_id, j.status.clone(), j.minor_status.clone(), file)
        })
        .collect();
    let mut report = Report::out(table::submitted(&rows).to_string());
    if response.replayed {
        report.eprintln("note: request id seen before, these are the jobs of the first submission");
    }
    report
}

fn status_report(response: &GetJobsResponse, as_json: bool) -> Report {
    if as_json {
        let mut report = Report::out(json::render(&json::get_jobs(response)));
        report.failed = !response.failed.is_empty();
        return report;
    }
    let mut report = Report::default();
    if !response.jobs.is_empty() {
        report.println(table::jobs(&response.jobs).to_string());
    }
    report_failed(&mut report, &response.failed);
    report
}

fn search_report(jobs: &[Job], total: u64, as_json: bool) -> Report {
    if as_json {
        return Report::out(json::render(&json::search(jobs, total)));
    }
    let mut report = Report::out(table::jobs(jobs).to_string());
    report.println(format!("{} of {total} jobs", jobs.len()));
    report
}

fn summary_report(response: &SummaryResponse, as_json: bool) -> Report {
    if as_json {
        return Report::out(json::render(&json::summary(response)));
    }
    Report::out(table::summary(response).to_string())
}

fn history_report(id: u64, response: &GetHistoryResponse, as_json: bool) -> anyhow::Result<Report> {
    if let Some(e) = response.failed.get(&id) {
        bail!(item_line(id, e));
    }
    let Some(history) = response.histories.iter().find(|h| h.job_id == id) else {
        bail!("job {id}: no history returned");
    };
    Ok(if as_json {
        Report::out(json::render(&json::history(history)))
    } else {
        Report::out(table::history(history).to_string())
    })
}

fn jdl_report(id: u64, text: &str, as_json: bool) -> Report {
    if as_json {
        Report::out(json::render(&json::jdl(id, text)))
    } else {
        Report::out(text)
    }
}

fn bulk_report(verb: &str, result: &BulkResult, as_json: bool) -> Report {
    if as_json {
        let mut report = Report::out(json::render(&json::bulk(result)));
        report.failed = !result.failed.is_empty();
        return report;
    }
    let ids: Vec<String> = result.succeeded.iter().map(u64::to_string).collect();
    let mut report = Report::default();
    if !ids.is_empty() {
        report.println(format!("{verb} {} job(s): {}", ids.len(), ids.join(" ")));
    }
    report_failed(&mut report, &result.failed);
    report
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use dirac_proto::wms::{HistoryEntry, JobHistory, SubmittedJob};

    use super::*;

    fn not_found(id: u64) -> ItemError {
        ItemError {
            code: "NotFound".to_owned(),
            message: format!("job {id} does not exist"),
        }
    }

    #[test]
    fn bulk_prints_successes_and_failures() {
        let result = BulkResult {
            succeeded: vec![1, 2],
            failed: HashMap::from([(9, not_found(9)), (3, not_found(3))]),
        };
        let report = bulk_report("killed", &result, false);
        assert_eq!(report.stdout, "killed 2 job(s): 1 2\n");
        assert_eq!(
            report.stderr,
            "job 3: not found: job 3 does not exist\njob 9: not found: job 9 does not exist\n"
        );
        assert!(report.failed);

        let ok = bulk_report(
            "deleted",
            &BulkResult {
                succeeded: vec![4],
                failed: HashMap::new(),
            },
            true,
        );
        assert!(!ok.failed);
        assert!(ok.stderr.is_empty());
        let value: serde_json::Value = serde_json::from_str(&ok.stdout).expect("json");
        assert_eq!(value["succeeded"][0], 4);
    }

    #[test]
    fn status_failures_set_exit_code() {
        let response = GetJobsResponse {
            jobs: vec![Job {
                job_id: 1,
                status: "Running".to_owned(),
                ..Job::default()
            }],
            failed: HashMap::from([(2, not_found(2))]),
        };
        let report = status_report(&response, false);
        assert!(report.stdout.contains("Running"));
        assert_eq!(report.stderr, "job 2: not found: job 2 does not exist\n");
        assert!(report.failed);
        let report = status_report(&response, true);
        assert!(report.failed && report.stderr.is_empty());
    }

    #[test]
    fn submit_names_the_files() {
        let response = SubmitJobsResponse {
            jobs: vec![
                SubmittedJob {
                    job_id: 5,
                    status: "Received".to_owned(),
                    jdl_index: 1,
                    ..SubmittedJob::default()
                },
                SubmittedJob {
                    job_id: 6,
                    status: "Received".to_owned(),
                    jdl_index: 7,
                    ..SubmittedJob::default()
                },
            ],
            replayed: true,
        };
        let names = ["a.jdl".to_owned(), "b.jdl".to_owned()];
        let report = submit_report(&response, &names, false);
        assert!(report.stdout.contains("b.jdl"), "{}", report.stdout);
        assert!(report.stdout.contains("#7"), "{}", report.stdout);
        assert!(report.stderr.contains("request id seen before"));
    }

    #[test]
    fn search_footer() {
        let jobs = [Job {
            job_id: 1,
            ..Job::default()
        }];
        let report = search_report(&jobs, 12, false);
        assert!(
            report.stdout.ends_with("1 of 12 jobs\n"),
            "{}",
            report.stdout
        );
    }

    #[test]
    fn history_of_a_missing_job_is_an_error() {
        let response = GetHistoryResponse {
            histories: Vec::new(),
            failed: HashMap::from([(4, not_found(4))]),
        };
        let err = history_report(4, &response, false).expect_err("missing");
        assert_eq!(err.to_string(), "job 4: not found: job 4 does not exist");

        let response = GetHistoryResponse {
            histories: vec![JobHistory {
                job_id: 4,
                entries: vec![HistoryEntry {
                    status: "Received".to_owned(),
                    ..HistoryEntry::default()
                }],
            }],
            failed: HashMap::new(),
        };
        let report = history_report(4, &response, true).expect("history");
        let value: serde_json::Value = serde_json::from_str(&report.stdout).expect("json");
        assert_eq!(value["entries"][0]["status"], "Received");
    }

    #[test]
    fn jdl_text_gets_a_newline() {
        assert_eq!(jdl_report(1, "[ A = 1; ]", false).stdout, "[ A = 1; ]\n");
    }

    #[test]
    fn jdl_files_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.jdl");
        std::fs::write(&good, "[ Executable = \"/bin/true\"; ]").expect("write");
        let empty = dir.path().join("empty.jdl");
        std::fs::write(&empty, " \n").expect("write");
        let (names, texts) = read_jdls(std::slice::from_ref(&good)).expect("read");
        assert_eq!(names, [good.display().to_string()]);
        assert_eq!(texts.len(), 1);
        let err = read_jdls(&[empty]).expect_err("empty");
        assert!(err.to_string().contains("is empty"));
        let err = read_jdls(&[dir.path().join("missing.jdl")]).expect_err("missing");
        assert!(format!("{err:#}").contains("missing.jdl"));
    }
}
