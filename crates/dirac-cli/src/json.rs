//! The `--json` output: one document per command, keys equal to the proto
//! field names. Written by hand because the prost types do not derive serde.

use std::collections::HashMap;

use dirac_proto::common::{BulkResult, ItemError};
use dirac_proto::wms::{
    ExplainMatchResponse, GetJobsResponse, HistoryEntry, Job, JobHistory, Pilot, PilotLogResponse,
    SubmitJobsResponse, SubmittedJob, SummaryResponse,
};
use serde_json::{Map, Value, json};

use crate::sandboxes::JobOutput;

pub fn job(j: &Job) -> Value {
    json!({
        "job_id": j.job_id,
        "status": j.status,
        "minor_status": j.minor_status,
        "application_status": j.application_status,
        "owner": j.owner,
        "owner_group": j.owner_group,
        "vo": j.vo,
        "job_name": j.job_name,
        "job_group": j.job_group,
        "job_type": j.job_type,
        "site": j.site,
        "user_priority": j.user_priority,
        "submission_time": j.submission_time,
        "last_update_time": j.last_update_time,
        "start_exec_time": j.start_exec_time,
        "end_exec_time": j.end_exec_time,
        "heart_beat_time": j.heart_beat_time,
        "reschedule_time": j.reschedule_time,
        "reschedule_counter": j.reschedule_counter,
        "cpu_time": j.cpu_time,
    })
}

fn jobs(list: &[Job]) -> Value {
    Value::Array(list.iter().map(job).collect())
}

pub fn item_error(e: &ItemError) -> Value {
    json!({ "code": e.code, "message": e.message })
}

/// `{"<id>": {"code": ..., "message": ...}}`.
pub fn failed(map: &HashMap<u64, ItemError>) -> Value {
    let mut ids: Vec<_> = map.iter().collect();
    ids.sort_by_key(|(id, _)| **id);
    Value::Object(
        ids.into_iter()
            .map(|(id, e)| (id.to_string(), item_error(e)))
            .collect::<Map<_, _>>(),
    )
}

pub fn bulk(result: &BulkResult) -> Value {
    json!({ "succeeded": result.succeeded, "failed": failed(&result.failed) })
}

pub fn get_jobs(response: &GetJobsResponse) -> Value {
    json!({ "jobs": jobs(&response.jobs), "failed": failed(&response.failed) })
}

pub fn search(list: &[Job], total: u64) -> Value {
    json!({ "jobs": jobs(list), "total": total })
}

fn submitted_job(j: &SubmittedJob) -> Value {
    json!({
        "job_id": j.job_id,
        "status": j.status,
        "minor_status": j.minor_status,
        "submission_time": j.submission_time,
        "jdl_index": j.jdl_index,
    })
}

pub fn submit(response: &SubmitJobsResponse) -> Value {
    json!({
        "jobs": response.jobs.iter().map(submitted_job).collect::<Vec<_>>(),
        "replayed": response.replayed,
    })
}

fn history_entry(e: &HistoryEntry) -> Value {
    json!({
        "status": e.status,
        "minor_status": e.minor_status,
        "application_status": e.application_status,
        "status_time": e.status_time,
        "source": e.source,
    })
}

pub fn history(h: &JobHistory) -> Value {
    json!({
        "job_id": h.job_id,
        "entries": h.entries.iter().map(history_entry).collect::<Vec<_>>(),
    })
}

pub fn summary(response: &SummaryResponse) -> Value {
    let rows: Vec<Value> = response
        .rows
        .iter()
        .map(|r| json!({ "values": r.values, "count": r.count }))
        .collect();
    json!({ "grouping": response.grouping, "rows": rows })
}

pub fn jdl(job_id: u64, text: &str) -> Value {
    json!({ "job_id": job_id, "jdl": text })
}

fn job_output(o: &JobOutput) -> Value {
    json!({
        "job_id": o.job_id,
        "dir": o.dir.display().to_string(),
        "files": o.files,
    })
}

/// `{"jobs": [{"job_id", "dir", "files"}], "failed": {...}}`.
pub fn outputs(list: &[JobOutput], failures: &HashMap<u64, ItemError>) -> Value {
    json!({
        "jobs": list.iter().map(job_output).collect::<Vec<_>>(),
        "failed": failed(failures),
    })
}

pub fn explain(r: &ExplainMatchResponse) -> Value {
    json!({
        "job_id": r.job_id,
        "status": r.status,
        "in_queue": r.in_queue,
        "reasons": r.reasons,
        "recent_pilots": r.recent_pilots,
    })
}

pub fn pilot(p: &Pilot) -> Value {
    json!({
        "stamp": p.stamp,
        "reference": p.reference,
        "vo": p.vo,
        "site": p.site,
        "ce": p.ce,
        "queue": p.queue,
        "grid_type": p.grid_type,
        "status": p.status,
        "status_reason": p.status_reason,
        "submission_time": p.submission_time,
        "last_update_time": p.last_update_time,
        "benchmark": p.benchmark,
        "job_ids": p.job_ids,
    })
}

pub fn pilots(list: &[Pilot], total: u64) -> Value {
    json!({ "pilots": list.iter().map(pilot).collect::<Vec<_>>(), "total": total })
}

pub fn pilot_log(r: &PilotLogResponse) -> Value {
    json!({ "stamp": r.stamp, "text": r.text })
}

/// Pretty-printed, newline-terminated.
pub fn render(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use dirac_proto::wms::SummaryRow;

    use super::*;

    fn check(value: Value, expected: &str) {
        let expected: Value = serde_json::from_str(expected).expect("expected is json");
        assert_eq!(value, expected);
    }

    fn sample_job() -> Job {
        Job {
            job_id: 7,
            status: "Waiting".to_owned(),
            minor_status: "Pilot Agent Submission".to_owned(),
            owner: "alice".to_owned(),
            user_priority: 1,
            cpu_time: 3600,
            reschedule_counter: 2,
            ..Job::default()
        }
    }

    fn not_found() -> ItemError {
        ItemError {
            code: "NotFound".to_owned(),
            message: "job 3 does not exist".to_owned(),
        }
    }

    #[test]
    fn job_has_every_proto_field() {
        check(
            job(&sample_job()),
            r#"{"job_id":7,"status":"Waiting","minor_status":"Pilot Agent Submission",
                "application_status":"","owner":"alice","owner_group":"","vo":"",
                "job_name":"","job_group":"","job_type":"","site":"","user_priority":1,
                "submission_time":"","last_update_time":"","start_exec_time":"",
                "end_exec_time":"","heart_beat_time":"","reschedule_time":"",
                "reschedule_counter":2,"cpu_time":3600}"#,
        );
    }

    #[test]
    fn bulk_result() {
        let result = BulkResult {
            succeeded: vec![1, 2],
            failed: HashMap::from([(3, not_found())]),
        };
        check(
            bulk(&result),
            r#"{"succeeded":[1,2],"failed":{"3":{"code":"NotFound","message":"job 3 does not exist"}}}"#,
        );
        check(
            bulk(&BulkResult::default()),
            r#"{"succeeded":[],"failed":{}}"#,
        );
    }

    #[test]
    fn get_jobs_response() {
        let response = GetJobsResponse {
            jobs: vec![sample_job()],
            failed: HashMap::from([(3, not_found())]),
        };
        let value = get_jobs(&response);
        assert_eq!(value["jobs"][0]["job_id"], 7);
        assert_eq!(value["jobs"][0]["status"], "Waiting");
        assert_eq!(value["failed"]["3"]["code"], "NotFound");
    }

    #[test]
    fn search_result() {
        let value = search(&[sample_job()], 42);
        assert_eq!(value["total"], 42);
        assert_eq!(value["jobs"].as_array().map(Vec::len), Some(1));
        check(search(&[], 0), r#"{"jobs":[],"total":0}"#);
    }

    #[test]
    fn submit_response() {
        let response = SubmitJobsResponse {
            jobs: vec![SubmittedJob {
                job_id: 10,
                status: "Received".to_owned(),
                minor_status: "Job accepted".to_owned(),
                submission_time: "2025-01-02T03:04:05Z".to_owned(),
                jdl_index: 1,
            }],
            replayed: true,
        };
        check(
            submit(&response),
            r#"{"jobs":[{"job_id":10,"status":"Received","minor_status":"Job accepted",
                "submission_time":"2025-01-02T03:04:05Z","jdl_index":1}],"replayed":true}"#,
        );
    }

    #[test]
    fn history_of_one_job() {
        let h = JobHistory {
            job_id: 1,
            entries: vec![HistoryEntry {
                status: "Received".to_owned(),
                minor_status: "Job accepted".to_owned(),
                application_status: "Unknown".to_owned(),
                status_time: "2025-01-02T03:04:05Z".to_owned(),
                source: "JobManager".to_owned(),
            }],
        };
        check(
            history(&h),
            r#"{"job_id":1,"entries":[{"status":"Received","minor_status":"Job accepted",
                "application_status":"Unknown","status_time":"2025-01-02T03:04:05Z",
                "source":"JobManager"}]}"#,
        );
    }

    #[test]
    fn summary_rows() {
        let response = SummaryResponse {
            grouping: vec!["Status".to_owned()],
            rows: vec![SummaryRow {
                values: vec!["Waiting".to_owned()],
                count: 3,
            }],
        };
        check(
            summary(&response),
            r#"{"grouping":["Status"],"rows":[{"values":["Waiting"],"count":3}]}"#,
        );
    }

    #[test]
    fn jdl_text() {
        check(
            jdl(4, "[ Executable = \"/bin/true\"; ]"),
            r#"{"job_id":4,"jdl":"[ Executable = \"/bin/true\"; ]"}"#,
        );
    }

    #[test]
    fn job_outputs_and_failures() {
        let list = [JobOutput {
            job_id: 1,
            dir: "out/1".into(),
            files: vec!["std.out".to_owned(), "sub/result.txt".to_owned()],
        }];
        let failures = HashMap::from([(
            2,
            ItemError {
                code: "NotFound".to_owned(),
                message: "no output sandbox (yet)".to_owned(),
            },
        )]);
        check(
            outputs(&list, &failures),
            r#"{"jobs":[{"job_id":1,"dir":"out/1","files":["std.out","sub/result.txt"]}],
                "failed":{"2":{"code":"NotFound","message":"no output sandbox (yet)"}}}"#,
        );
        check(outputs(&[], &HashMap::new()), r#"{"jobs":[],"failed":{}}"#);
    }

    #[test]
    fn explain_response() {
        let response = ExplainMatchResponse {
            job_id: 5,
            status: "Waiting".to_owned(),
            in_queue: true,
            reasons: vec!["no recent pilot offers platform EL9".to_owned()],
            recent_pilots: 3,
        };
        check(
            explain(&response),
            r#"{"job_id":5,"status":"Waiting","in_queue":true,
                "reasons":["no recent pilot offers platform EL9"],"recent_pilots":3}"#,
        );
    }

    #[test]
    fn pilot_has_every_proto_field() {
        let p = Pilot {
            stamp: "abc123".to_owned(),
            reference: "htcondorce://ce1/42".to_owned(),
            vo: "lhcb".to_owned(),
            site: "LCG.CERN.cern".to_owned(),
            ce: "ce1.cern.ch".to_owned(),
            queue: "long".to_owned(),
            grid_type: "HTCondorCE".to_owned(),
            status: "Running".to_owned(),
            status_reason: "".to_owned(),
            submission_time: "2025-01-02T03:04:05Z".to_owned(),
            last_update_time: "2025-01-02T04:04:05Z".to_owned(),
            benchmark: 12.5,
            job_ids: vec![7, 8],
        };
        check(
            pilots(&[p], 9),
            r#"{"pilots":[{"stamp":"abc123","reference":"htcondorce://ce1/42","vo":"lhcb",
                "site":"LCG.CERN.cern","ce":"ce1.cern.ch","queue":"long",
                "grid_type":"HTCondorCE","status":"Running","status_reason":"",
                "submission_time":"2025-01-02T03:04:05Z",
                "last_update_time":"2025-01-02T04:04:05Z","benchmark":12.5,
                "job_ids":[7,8]}],"total":9}"#,
        );
        check(pilots(&[], 0), r#"{"pilots":[],"total":0}"#);
    }

    #[test]
    fn pilot_log_text() {
        let response = PilotLogResponse {
            stamp: "abc".to_owned(),
            text: "line 1\nline 2\n".to_owned(),
        };
        check(
            pilot_log(&response),
            r#"{"stamp":"abc","text":"line 1\nline 2\n"}"#,
        );
    }

    #[test]
    fn render_is_one_document_per_line_block() {
        let text = render(&json!({"a": 1}));
        assert!(text.ends_with("}\n"));
        let back: Value = serde_json::from_str(&text).expect("valid json");
        assert_eq!(back["a"], 1);
    }
}
