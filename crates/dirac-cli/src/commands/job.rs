//! `dirac job ...`: each command fetches, then a pure `*_report` function
//! turns the reply into a [`Report`].

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use dirac_client::Client;
use dirac_client::sandbox::{self, SandboxError};
use dirac_jdl::ClassAd;
use dirac_proto::common::{BulkResult, ItemError};
use dirac_proto::wms::{
    ExplainMatchRequest, ExplainMatchResponse, GetHistoryResponse, GetJobsResponse, Job,
    JobSandboxesRequest, SubmitJobsResponse, SummaryResponse,
};

use super::{Progress, code_words, describe_status, human_bytes, item_error, rpc_error};
use crate::cli::JobCommand;
use crate::report::Report;
use crate::sandboxes::{JobOutput, LocalInputs, local_inputs};
use crate::{json, table};

pub async fn run(client: &Client, command: JobCommand, as_json: bool) -> anyhow::Result<Report> {
    match command {
        JobCommand::Submit { files, request_id } => {
            let (names, texts) = read_jdls(&files)?;
            let prepared = prepare_jdls(&files, &names, texts)?;
            let jdls = upload_inputs(client, prepared, Progress::new(as_json)).await?;
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
        JobCommand::Output { ids, dir } => {
            let (outputs, failed) =
                fetch_outputs(client, ids.ids, &dir, Progress::new(as_json)).await?;
            Ok(output_report(&outputs, &failed, as_json))
        }
        JobCommand::Explain { id } => {
            let response = client
                .matcher()
                .explain_match(ExplainMatchRequest { job_id: id })
                .await
                .map_err(rpc_error)?
                .into_inner();
            Ok(explain_report(&response, as_json))
        }
    }
}

/// One JDL ready to submit, or to submit once its local inputs are uploaded.
#[derive(Debug)]
enum Prepared {
    /// No local input: sent byte for byte as read.
    AsWritten(String),
    WithInputs {
        name: String,
        ad: ClassAd,
        inputs: LocalInputs,
        /// The local inputs packed as a `tar.gz`.
        archive: Vec<u8>,
    },
}

/// Parses every JDL and packs its local inputs: a missing file fails the
/// whole submission before anything is uploaded or submitted.
fn prepare_jdls(
    files: &[PathBuf],
    names: &[String],
    texts: Vec<String>,
) -> anyhow::Result<Vec<Prepared>> {
    files
        .iter()
        .zip(names)
        .zip(texts)
        .map(|((path, name), text)| prepare_jdl(path, name, text))
        .collect()
}

fn prepare_jdl(path: &Path, name: &str, text: String) -> anyhow::Result<Prepared> {
    let ad = ClassAd::parse(&text).with_context(|| format!("parse jdl file {name}"))?;
    let dir = jdl_dir(path)?;
    let Some(inputs) = local_inputs(&ad, &dir) else {
        return Ok(Prepared::AsWritten(text));
    };
    for file in &inputs.files {
        match std::fs::metadata(file) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "input sandbox file {} of jdl file {name} does not exist",
                file.display()
            ),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "read input sandbox file {} of jdl file {name}",
                    file.display()
                )));
            }
        }
    }
    let archive = sandbox::pack(&inputs.files, &dir)
        .with_context(|| format!("pack the input sandbox of jdl file {name}"))?;
    Ok(Prepared::WithInputs {
        name: name.to_owned(),
        ad,
        inputs,
        archive,
    })
}

/// The absolute directory relative input files are taken from: the JDL's,
/// or the current one for standard input.
fn jdl_dir(path: &Path) -> anyhow::Result<PathBuf> {
    let dir = if path == Path::new("-") {
        Path::new(".")
    } else {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    };
    std::fs::canonicalize(dir).with_context(|| format!("resolve directory {}", dir.display()))
}

/// Uploads the packed inputs, one archive per JDL, and returns the texts to
/// submit: rewritten to refer to their archive, or as written.
async fn upload_inputs(
    client: &Client,
    prepared: Vec<Prepared>,
    progress: Progress,
) -> anyhow::Result<Vec<String>> {
    let mut jdls = Vec::with_capacity(prepared.len());
    for jdl in prepared {
        match jdl {
            Prepared::AsWritten(text) => jdls.push(text),
            Prepared::WithInputs {
                name,
                ad,
                inputs,
                archive,
            } => {
                progress.line(format_args!(
                    "uploading the input sandbox of {name} ({})…",
                    human_bytes(archive.len())
                ));
                let pfn = sandbox::upload(client, archive)
                    .await
                    .map_err(sandbox_error)
                    .with_context(|| format!("upload the input sandbox of jdl file {name}"))?;
                jdls.push(inputs.rewrite(ad, &pfn).to_jdl());
            }
        }
    }
    Ok(jdls)
}

/// A failed transfer as a command error, worded like a failed call.
fn sandbox_error(e: SandboxError) -> anyhow::Error {
    match e.status() {
        Some(status) => anyhow!(describe_status(status)),
        None => anyhow::Error::new(e),
    }
}

/// A failed transfer for one job, or `Err` when the command should stop.
fn sandbox_item_error(e: SandboxError) -> anyhow::Result<ItemError> {
    match e.status() {
        Some(status) => item_error(status).ok_or_else(|| anyhow!(describe_status(status))),
        None => Ok(ItemError {
            code: String::new(),
            message: format!("{:#}", anyhow::Error::new(e)),
        }),
    }
}

/// Downloads and unpacks the output sandboxes of each job (once per id)
/// into `dir/<job_id>`.
async fn fetch_outputs(
    client: &Client,
    ids: Vec<u64>,
    dir: &Path,
    progress: Progress,
) -> anyhow::Result<(Vec<JobOutput>, HashMap<u64, ItemError>)> {
    let mut outputs = Vec::new();
    let mut failed = HashMap::new();
    let mut seen = HashSet::new();
    for job_id in ids {
        if !seen.insert(job_id) {
            continue;
        }
        match fetch_output(client, job_id, dir, progress).await? {
            Ok(output) => outputs.push(output),
            Err(e) => {
                failed.insert(job_id, e);
            }
        }
    }
    Ok((outputs, failed))
}

/// The outer error stops the command (server unreachable, token refused);
/// the inner one is this job's failure.
async fn fetch_output(
    client: &Client,
    job_id: u64,
    dir: &Path,
    progress: Progress,
) -> anyhow::Result<Result<JobOutput, ItemError>> {
    let response = match client
        .sandbox_store()
        .get_job_sandboxes(JobSandboxesRequest { job_id })
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return item_error(&status)
                .map(Err)
                .ok_or_else(|| rpc_error(status));
        }
    };
    if response.output.is_empty() {
        return Ok(Err(ItemError {
            code: "NotFound".to_owned(),
            message: "no output sandbox (yet)".to_owned(),
        }));
    }
    let dest = dir.join(job_id.to_string());
    let mut files: Vec<String> = Vec::new();
    for pfn in &response.output {
        progress.line(format_args!(
            "downloading the output sandbox of job {job_id}…"
        ));
        let written = match sandbox::download(client, pfn).await {
            Ok(bytes) => sandbox::unpack(&bytes, &dest),
            Err(e) => Err(e),
        };
        let names = match written {
            Ok(names) => names,
            Err(e) => return sandbox_item_error(e).map(Err),
        };
        for name in names {
            if dest.join(&name).is_dir() {
                continue;
            }
            let name = name.to_string_lossy().into_owned();
            if !files.contains(&name) {
                files.push(name);
            }
        }
    }
    Ok(Ok(JobOutput {
        job_id,
        dir: dest,
        files,
    }))
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

fn output_report(outputs: &[JobOutput], failed: &HashMap<u64, ItemError>, as_json: bool) -> Report {
    if as_json {
        let mut report = Report::out(json::render(&json::outputs(outputs, failed)));
        report.failed = !failed.is_empty();
        return report;
    }
    let mut report = Report::default();
    if !outputs.is_empty() {
        report.println(table::outputs(outputs).to_string());
    }
    report_failed(&mut report, failed);
    report
}

fn explain_report(response: &ExplainMatchResponse, as_json: bool) -> Report {
    if as_json {
        return Report::out(json::render(&json::explain(response)));
    }
    let mut report = Report::out(format!("job {}: {}", response.job_id, response.status));
    report.println(format!(
        "in a task queue: {}",
        if response.in_queue { "yes" } else { "no" }
    ));
    report.println(format!(
        "recent pilots considered: {}",
        response.recent_pilots
    ));
    if response.reasons.is_empty() {
        report.println(if response.recent_pilots == 0 {
            "no obstacle found: but no pilot asked for work recently, the job waits for one"
        } else {
            "no obstacle found: a recent pilot could run the job, it should start at a next match"
        });
    } else {
        report.println("reasons:");
        for reason in &response.reasons {
            report.println(format!("  {reason}"));
        }
    }
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

    fn prepare(path: &Path, text: &str) -> anyhow::Result<Prepared> {
        prepare_jdl(path, &path.display().to_string(), text.to_owned())
    }

    #[test]
    fn jdls_without_local_inputs_are_sent_byte_for_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.jdl");
        for text in [
            "[Executable=\"/bin/true\";  ]\n",
            "[ InputSandbox = { \"LFN:/vo/x\", \"SB:se|/y\" }; ]",
        ] {
            match prepare(&path, text).expect("prepare") {
                Prepared::AsWritten(sent) => assert_eq!(sent, text),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn local_inputs_are_packed_relative_to_the_jdl() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jobs = dir.path().join("jobs");
        std::fs::create_dir_all(jobs.join("data")).expect("mkdir");
        std::fs::write(jobs.join("run.sh"), "#!/bin/sh\n").expect("write");
        std::fs::write(jobs.join("data/cfg.json"), "{}").expect("write");
        let path = jobs.join("a.jdl");
        let text = r#"[ Executable = "run.sh";
            InputSandbox = { "run.sh", "LFN:/vo/in.root", "data/cfg.json" }; ]"#;
        let Prepared::WithInputs {
            ad,
            inputs,
            archive,
            name,
        } = prepare(&path, text).expect("prepare")
        else {
            panic!("nothing to upload");
        };
        assert_eq!(name, path.display().to_string());
        let out = tempfile::tempdir().expect("tempdir");
        let mut names = sandbox::unpack(&archive, out.path()).expect("unpack");
        names.sort();
        assert_eq!(
            names,
            [PathBuf::from("data/cfg.json"), PathBuf::from("run.sh")]
        );
        let jdl = inputs.rewrite(ad, "SB:se|/sb.tar.gz").to_jdl();
        let back = ClassAd::parse(&jdl).expect("rewritten jdl parses");
        assert_eq!(
            back.get("InputSandbox").map(dirac_jdl::Value::to_strings),
            Some(vec![
                "LFN:/vo/in.root".to_owned(),
                "SB:se|/sb.tar.gz".to_owned()
            ])
        );
        assert_eq!(
            back.get("Executable").and_then(dirac_jdl::Value::as_str),
            Some("run.sh")
        );
    }

    #[test]
    fn a_missing_input_names_the_file_and_the_jdl() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("here.txt"), "x").expect("write");
        let path = dir.path().join("b.jdl");
        let err = prepare(&path, r#"[ InputSandbox = { "here.txt", "gone.txt" }; ]"#)
            .expect_err("missing input");
        let text = format!("{err:#}");
        assert!(
            text.contains("gone.txt") && text.contains("b.jdl"),
            "{text}"
        );
        assert!(text.contains("does not exist"), "{text}");

        let err = prepare(&path, "[ Executable = ").expect_err("bad jdl");
        assert!(format!("{err:#}").starts_with("parse jdl file"), "{err:#}");
    }

    #[test]
    fn inputs_outside_the_jdl_directory_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jobs = dir.path().join("jobs");
        std::fs::create_dir_all(&jobs).expect("mkdir");
        std::fs::write(dir.path().join("outside.txt"), "x").expect("write");
        let err = prepare(
            &jobs.join("c.jdl"),
            r#"[ InputSandbox = "../outside.txt"; ]"#,
        )
        .expect_err("outside");
        let text = format!("{err:#}");
        assert!(text.contains("c.jdl") && text.contains("outside"), "{text}");
    }

    #[test]
    fn outputs_list_files_and_failures() {
        let outputs = [JobOutput {
            job_id: 1,
            dir: PathBuf::from("out/1"),
            files: vec!["std.out".to_owned()],
        }];
        let failed = HashMap::from([(
            2,
            ItemError {
                code: "NotFound".to_owned(),
                message: "no output sandbox (yet)".to_owned(),
            },
        )]);
        let report = output_report(&outputs, &failed, false);
        assert!(report.stdout.contains("std.out"), "{}", report.stdout);
        assert_eq!(report.stderr, "job 2: not found: no output sandbox (yet)\n");
        assert!(report.failed);

        let report = output_report(&outputs, &failed, true);
        assert!(report.failed && report.stderr.is_empty());
        let value: serde_json::Value = serde_json::from_str(&report.stdout).expect("json");
        assert_eq!(value["jobs"][0]["dir"], "out/1");
        assert_eq!(value["failed"]["2"]["message"], "no output sandbox (yet)");

        let ok = output_report(&outputs, &HashMap::new(), false);
        assert!(!ok.failed);
    }

    #[test]
    fn explain_prints_one_reason_per_line() {
        let mut response = ExplainMatchResponse {
            job_id: 5,
            status: "Waiting".to_owned(),
            in_queue: true,
            reasons: vec![
                "no recent pilot offers platform EL9".to_owned(),
                "site banned: LCG.X.x".to_owned(),
            ],
            recent_pilots: 3,
        };
        let report = explain_report(&response, false);
        assert_eq!(
            report.stdout,
            "job 5: Waiting\nin a task queue: yes\nrecent pilots considered: 3\nreasons:\n  \
             no recent pilot offers platform EL9\n  site banned: LCG.X.x\n"
        );
        response.reasons.clear();
        let report = explain_report(&response, false);
        assert!(
            report.stdout.contains("no obstacle found: "),
            "{}",
            report.stdout
        );
        let report = explain_report(&response, true);
        let value: serde_json::Value = serde_json::from_str(&report.stdout).expect("json");
        assert_eq!(value["in_queue"], true);
        assert_eq!(value["recent_pilots"], 3);
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
