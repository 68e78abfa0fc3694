//! Human-readable tables (no colours).

use comfy_table::{Table, presets};
use dirac_proto::wms::{Job, JobHistory, Pilot, SummaryResponse};

use crate::sandboxes::JobOutput;

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_BORDERS_ONLY);
    t.set_header(header.to_vec());
    t
}

/// JobID | Status | MinorStatus | ApplicationStatus | Site | Owner | LastUpdate.
pub fn jobs(list: &[Job]) -> Table {
    let mut t = table(&[
        "JobID",
        "Status",
        "MinorStatus",
        "ApplicationStatus",
        "Site",
        "Owner",
        "LastUpdate",
    ]);
    for j in list {
        t.add_row(vec![
            j.job_id.to_string(),
            j.status.clone(),
            j.minor_status.clone(),
            j.application_status.clone(),
            j.site.clone(),
            j.owner.clone(),
            j.last_update_time.clone(),
        ]);
    }
    t
}

/// Status | MinorStatus | ApplicationStatus | Time | Source.
pub fn history(h: &JobHistory) -> Table {
    let mut t = table(&[
        "Status",
        "MinorStatus",
        "ApplicationStatus",
        "Time",
        "Source",
    ]);
    for e in &h.entries {
        t.add_row(vec![
            e.status.clone(),
            e.minor_status.clone(),
            e.application_status.clone(),
            e.status_time.clone(),
            e.source.clone(),
        ]);
    }
    t
}

/// One column per grouping attribute, then Count.
pub fn summary(response: &SummaryResponse) -> Table {
    let mut header: Vec<&str> = response.grouping.iter().map(String::as_str).collect();
    header.push("Count");
    let mut t = table(&header);
    for row in &response.rows {
        let mut cells = row.values.clone();
        cells.push(row.count.to_string());
        t.add_row(cells);
    }
    t
}

/// JobID | Status | MinorStatus | JDL, where JDL names the file a job came from.
pub fn submitted(rows: &[(u64, String, String, String)]) -> Table {
    let mut t = table(&["JobID", "Status", "MinorStatus", "JDL"]);
    for (id, status, minor, file) in rows {
        t.add_row(vec![
            id.to_string(),
            status.clone(),
            minor.clone(),
            file.clone(),
        ]);
    }
    t
}

/// JobID | Files, one file per line.
pub fn outputs(list: &[JobOutput]) -> Table {
    let mut t = table(&["JobID", "Files"]);
    for o in list {
        t.add_row(vec![o.job_id.to_string(), o.files.join("\n")]);
    }
    t
}

/// Stamp | Status | Site | CE | Queue | Jobs | LastUpdate.
pub fn pilots(list: &[Pilot]) -> Table {
    let mut t = table(&[
        "Stamp",
        "Status",
        "Site",
        "CE",
        "Queue",
        "Jobs",
        "LastUpdate",
    ]);
    for p in list {
        let jobs: Vec<String> = p.job_ids.iter().map(u64::to_string).collect();
        t.add_row(vec![
            p.stamp.clone(),
            p.status.clone(),
            p.site.clone(),
            p.ce.clone(),
            p.queue.clone(),
            jobs.join(" "),
            p.last_update_time.clone(),
        ]);
    }
    t
}

/// Site | CE | Queue | Type | Waiting/Max | Running | Max | Jobs | Banned.
pub fn queues(list: &[dirac_proto::wms::QueueStatus]) -> Table {
    let mut t = table(&[
        "Site",
        "CE",
        "Queue",
        "Type",
        "Pilots waiting",
        "Pilots running",
        "MaxWaiting",
        "MaxTotal",
        "Waiting jobs",
        "Mask",
    ]);
    for q in list {
        t.add_row(vec![
            q.site.clone(),
            q.ce.clone(),
            q.queue.clone(),
            q.ce_type.clone(),
            q.waiting_pilots.to_string(),
            q.running_pilots.to_string(),
            q.max_waiting.to_string(),
            q.max_total.to_string(),
            q.waiting_jobs.to_string(),
            if q.site_banned { "Banned" } else { "Active" }.to_string(),
        ]);
    }
    t
}

/// Site | Status | Reason | Author | LastUpdate.
pub fn sites(list: &[dirac_proto::wms::SiteStatus]) -> Table {
    let mut t = table(&["Site", "Status", "Reason", "Author", "LastUpdate"]);
    for s in list {
        t.add_row(vec![
            s.site.clone(),
            s.status.clone(),
            s.reason.clone(),
            s.author.clone(),
            s.last_update.clone(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use dirac_proto::wms::SummaryRow;

    use super::*;

    #[test]
    fn summary_has_a_count_column() {
        let response = SummaryResponse {
            grouping: vec!["Site".to_owned(), "Status".to_owned()],
            rows: vec![SummaryRow {
                values: vec!["LCG.CERN.cern".to_owned(), "Running".to_owned()],
                count: 12,
            }],
        };
        let text = summary(&response).to_string();
        for word in ["Site", "Status", "Count", "LCG.CERN.cern", "Running", "12"] {
            assert!(text.contains(word), "{word} missing from\n{text}");
        }
    }

    #[test]
    fn pilots_table_lists_jobs() {
        let list = [Pilot {
            stamp: "abc123".to_owned(),
            status: "Running".to_owned(),
            ce: "ce1.cern.ch".to_owned(),
            job_ids: vec![7, 8],
            ..Pilot::default()
        }];
        let text = pilots(&list).to_string();
        for word in [
            "Stamp",
            "CE",
            "Jobs",
            "abc123",
            "Running",
            "ce1.cern.ch",
            "7 8",
        ] {
            assert!(text.contains(word), "{word} missing from\n{text}");
        }
    }

    #[test]
    fn outputs_table_has_one_file_per_line() {
        let list = [JobOutput {
            job_id: 4,
            dir: "4".into(),
            files: vec!["std.out".to_owned(), "std.err".to_owned()],
        }];
        let text = outputs(&list).to_string();
        assert!(text.contains("JobID") && text.contains("Files"));
        assert_eq!(text.lines().filter(|l| l.contains("std.")).count(), 2);
    }

    #[test]
    fn jobs_table_lists_ids() {
        let list = [Job {
            job_id: 99,
            status: "Done".to_owned(),
            ..Job::default()
        }];
        let text = jobs(&list).to_string();
        assert!(text.contains("99") && text.contains("Done") && text.contains("LastUpdate"));
    }
}
