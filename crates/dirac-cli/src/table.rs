//! Human-readable tables (no colours).

use comfy_table::{Table, presets};
use dirac_proto::wms::{Job, JobHistory, SummaryResponse};

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
