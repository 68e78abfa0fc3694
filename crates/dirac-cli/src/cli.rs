//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use dirac_proto::common::{Filter, Sort};

/// Command-line client of the dirac-rs workload management system.
///
/// The server URL and token come from --config (else $DIRAC_CONFIG, else
/// ~/.config/dirac/config.yaml), then DIRAC_URL and DIRAC_TOKEN, then --url
/// and --token.
#[derive(Debug, Parser)]
#[command(name = "dirac", version)]
pub struct Cli {
    /// Client config file (YAML with url, token, ca_cert).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Server URL, e.g. https://dirac.example.org:8443.
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Bearer token (prefer DIRAC_TOKEN: flags are visible to other users).
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Print one JSON document on stdout instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit, inspect and manage jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// Inspect and kill pilots.
    #[command(subcommand)]
    Pilot(PilotCommand),
    /// Computing elements: queues, slots, pilots, waiting jobs.
    #[command(subcommand)]
    Ce(CeCommand),
    /// The site mask: banned sites get test jobs only.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Requests of data operations the RequestExecutingAgent carries out,
    /// retrying what fails (register, replicate, remove files).
    #[command(subcommand)]
    Request(RequestCommand),
    /// Log in through the AuthServer (device flow: open the printed URL
    /// anywhere, e.g. from a Jupyter terminal).
    Login {
        /// Virtual organisation.
        vo: String,
        /// Group (default: the VO's default group).
        #[arg(long)]
        group: Option<String>,
        /// AuthServer base URL (default: auth_url of the config).
        #[arg(long, value_name = "URL")]
        auth_url: Option<String>,
    },
    /// Revoke the tokens of `dirac login` and forget them.
    Logout,
    /// Who the current token says you are.
    Whoami,
    /// List catalog directories (COMDIRAC's dls).
    Dls {
        /// Long listing: mode, owner, group, size, date, replicas.
        #[arg(short, long)]
        long: bool,
        /// The whole tree below (streamed).
        #[arg(short, long)]
        recursive: bool,
        /// Directories or files (default: the session's directory).
        paths: Vec<String>,
    },
    /// Change the session's catalog directory (default: your home).
    Dcd { path: Option<String> },
    /// Print the session's catalog directory.
    Dpwd,
    /// Make catalog directories (and their parents).
    Dmkdir {
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Upload local files and register them.
    Dput {
        /// Local files, then optionally the destination (an LFN, or a
        /// directory ending in `/`; default: the session's directory).
        #[arg(required = true, num_args = 1..)]
        args: Vec<String>,
        /// Storage element (default: the only one, or $DIRAC_SE).
        #[arg(long)]
        se: Option<String>,
        /// Replace an existing file.
        #[arg(long)]
        overwrite: bool,
    },
    /// Download files (checksum verified).
    Dget {
        #[arg(required = true)]
        lfns: Vec<String>,
        /// Local directory to write into.
        #[arg(short = 'D', long, default_value = ".")]
        dir: std::path::PathBuf,
    },
    /// Replicate files to another storage element and register the copies.
    Drepl {
        #[arg(required = true)]
        lfns: Vec<String>,
        /// Destination storage element.
        #[arg(long = "se", value_name = "SE")]
        dest: String,
        /// Source storage element (default: the first replica).
        #[arg(long)]
        source: Option<String>,
    },
    /// Remove files (every replica, then the entry); -r removes trees.
    Drm {
        #[arg(short, long)]
        recursive: bool,
        /// Remove only the replica at this SE.
        #[arg(long)]
        se: Option<String>,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Find files by metadata: `dfind /vo/path 'energy>10 and (p=e or p=g)'`.
    Dfind {
        /// Directory to search below (default: the session's directory).
        path: Option<String>,
        /// The query (empty: every file).
        #[arg(default_value = "")]
        query: String,
    },
    /// Size and file count of directories, logical and per SE.
    Dsize { paths: Vec<String> },
    /// Replicas of files.
    Dreplicas {
        #[arg(required = true)]
        lfns: Vec<String>,
    },
    /// Change permission bits (octal).
    Dchmod {
        mode: String,
        #[arg(required = true)]
        paths: Vec<String>,
        #[arg(short, long)]
        recursive: bool,
    },
    /// Metadata of directories and files.
    #[command(subcommand)]
    Dmeta(MetaCommand),
    /// Datasets: named queries, dynamic or frozen.
    #[command(subcommand)]
    Ddataset(DatasetCommand),
    /// Storage elements and their free space.
    Dse,
}

#[derive(Debug, Subcommand)]
pub enum MetaCommand {
    /// Set values: `dmeta set PATH energy=10 particle=electron`.
    Set {
        path: String,
        #[arg(required = true, value_name = "NAME=VALUE")]
        values: Vec<String>,
    },
    /// Show the values of paths (inherited ones with their source).
    Get {
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Remove values.
    Rm {
        path: String,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List the VO's metadata fields.
    Ls,
    /// Declare a field: `dmeta add-field energy float` (--file for a file field).
    AddField {
        name: String,
        /// int, float, string or date.
        kind: String,
        #[arg(long)]
        file: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Define a dataset from a query.
    Add {
        name: String,
        /// Directory searched (default: the session's directory).
        #[arg(long)]
        path: Option<String>,
        #[arg(long, default_value = "")]
        query: String,
    },
    /// Fix the dataset's file list.
    Freeze {
        name: String,
    },
    /// Let the dataset's query run again.
    Release {
        name: String,
    },
    Rm {
        name: String,
    },
    /// List datasets (below a directory).
    Ls {
        path: Option<String>,
    },
    /// The dataset's files.
    Files {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit JDL files (parametric ones expand on the server) in one call.
    ///
    /// Local files named in a JDL's InputSandbox (relative to the JDL's
    /// directory) are packed into one archive per JDL and uploaded first; the
    /// JDL then refers to the archive instead. SB: and LFN: entries stay.
    Submit {
        /// JDL files; - reads standard input.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Idempotency key: resubmitting with the same id returns the first jobs.
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
    },
    /// Show the attributes of jobs.
    Status(IdList),
    /// Search jobs.
    Search {
        #[command(flatten)]
        filters: Filters,
        /// Sort key, e.g. JobID:desc (repeatable).
        #[arg(long, value_name = "KEY[:asc|desc]", value_parser = parse_sort)]
        sort: Vec<Sort>,
        /// Page size.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
        /// Number of matching jobs to skip.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Stream every matching job instead of one page.
        #[arg(long, conflicts_with_all = ["limit", "offset"])]
        all: bool,
    },
    /// Count jobs grouped by attributes.
    Summary {
        /// Attribute to group by (repeatable).
        #[arg(long = "group-by", value_name = "ATTR", default_values_t = ["Status".to_owned()])]
        group_by: Vec<String>,
        #[command(flatten)]
        filters: Filters,
    },
    /// Show the status history of one job.
    History {
        #[arg(value_name = "ID")]
        id: u64,
    },
    /// Print the JDL of one job.
    Jdl {
        #[arg(value_name = "ID")]
        id: u64,
        /// The JDL as submitted rather than as stored by the server.
        #[arg(long)]
        original: bool,
    },
    /// Kill jobs.
    Kill(IdList),
    /// Delete jobs.
    Delete(IdList),
    /// Reschedule jobs.
    Reschedule {
        #[command(flatten)]
        ids: IdList,
        /// Reset the reschedule counter.
        #[arg(long)]
        reset: bool,
    },
    /// Download and unpack the output sandboxes of jobs into DIR/<job id>/.
    Output {
        #[command(flatten)]
        ids: IdList,
        /// Directory under which each job gets its own directory.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
    /// Explain why a job is not running yet.
    Explain {
        #[arg(value_name = "ID")]
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum PilotCommand {
    /// Search pilots.
    List {
        #[command(flatten)]
        filters: PilotFilters,
        /// Page size.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Show pilots with the jobs they ran.
    Show {
        #[arg(required = true, value_name = "STAMP")]
        stamps: Vec<String>,
    },
    /// Print the log a pilot sent (or, with --ce, its output as the CE
    /// keeps it).
    Logs {
        #[arg(value_name = "STAMP")]
        stamp: String,
        /// Ask the computing element for the pilot's stdout and stderr.
        #[arg(long)]
        ce: bool,
    },
    /// Kill pilots at their computing element.
    Kill {
        #[arg(required = true, value_name = "STAMP")]
        stamps: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CeCommand {
    /// Every queue: limits, waiting and running pilots, waiting jobs it
    /// could run.
    Status {
        /// Only this site's queues.
        #[arg(long)]
        site: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Sites in the mask and their status.
    List,
    /// Ban sites: their pilots get test jobs only.
    Ban {
        #[arg(required = true)]
        sites: Vec<String>,
        /// Why (required).
        #[arg(long, required = true)]
        reason: String,
    },
    /// Allow banned sites again.
    Allow {
        #[arg(required = true)]
        sites: Vec<String>,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Put a request of one operation on files, e.g.
    /// `dirac request put ReplicateAndRegister --target SE-B /vo/user/f1 /vo/user/f2`.
    Put {
        /// Operation: RegisterFile, RegisterReplica, RemoveFile,
        /// RemoveReplica or ReplicateAndRegister.
        #[arg(value_name = "TYPE")]
        kind: String,
        /// LFNs the operation acts on.
        #[arg(required = true, value_name = "LFN")]
        lfns: Vec<String>,
        /// Target storage elements (repeatable or comma-separated).
        #[arg(long = "target", value_delimiter = ',')]
        target_se: Vec<String>,
        /// Source storage elements (ReplicateAndRegister).
        #[arg(long = "source", value_delimiter = ',')]
        source_se: Vec<String>,
        /// Request name (default: TYPE and the first LFN).
        #[arg(long)]
        name: Option<String>,
    },
    /// Your requests (or everyone's with --all), newest first.
    List {
        /// Only these statuses (Waiting, Assigned, Scheduled, Done, Failed, Canceled).
        #[arg(long = "status", value_delimiter = ',')]
        statuses: Vec<String>,
        /// Only the requests of these jobs.
        #[arg(long = "job", value_delimiter = ',')]
        jobs: Vec<u64>,
        /// Everyone's (request administrators).
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Requests with their operations and files.
    Show {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<u64>,
    },
    /// Cancel requests that are not finished.
    Cancel {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<u64>,
    },
    /// Delete finished requests.
    Delete {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<u64>,
    },
}

#[derive(Debug, Args)]
pub struct IdList {
    /// Job ids.
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<u64>,
}

#[derive(Debug, Args)]
pub struct Filters {
    /// Filter, e.g. Status=Waiting, JobID>10, JobName~bench_%,
    /// "Site in A,B", "Status not in Done,Failed" (repeatable, ANDed).
    #[arg(long = "where", value_name = "EXPR", value_parser = parse_where, allow_hyphen_values = true)]
    pub filters: Vec<Filter>,
}

#[derive(Debug, Args)]
pub struct PilotFilters {
    /// Filter on pilot attributes (PilotStamp, PilotJobReference, VO,
    /// GridSite, DestinationSite, Queue, GridType, Status, SubmissionTime,
    /// LastUpdateTime), e.g. Status=Running, "GridSite in A,B"
    /// (repeatable, ANDed).
    #[arg(long = "where", value_name = "EXPR", value_parser = parse_where, allow_hyphen_values = true)]
    pub filters: Vec<Filter>,
}

fn parse_where(expr: &str) -> Result<Filter, String> {
    dirac_client::parse_where(expr).map_err(|e| e.to_string())
}

fn parse_sort(expr: &str) -> Result<Sort, String> {
    dirac_client::parse_sort(expr).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("dirac").chain(args.iter().copied()))
    }

    #[test]
    fn search_flags() {
        let cli = parse(&[
            "job",
            "search",
            "--where",
            "Status in Waiting,Running",
            "--sort",
            "JobID:desc",
            "--limit",
            "5",
            "--json",
        ])
        .expect("parse");
        assert!(cli.json);
        let Command::Job(JobCommand::Search {
            filters,
            sort,
            limit,
            ..
        }) = cli.command
        else {
            panic!("not a search: {:?}", cli.command);
        };
        assert_eq!(filters.filters[0].operator, "in");
        assert_eq!(sort[0].direction, "desc");
        assert_eq!(limit, 5);
    }

    #[test]
    fn usage_errors() {
        for args in [
            &["job", "search", "--where", "Status"][..],
            &["job", "search", "--sort", "JobID:sideways"],
            &["job", "search", "--all", "--limit", "3"],
            &["job", "search", "--limit", "0"],
            &["job", "status"],
            &["job", "kill", "abc"],
            &["job", "submit"],
            &["job", "output"],
            &["job", "explain"],
            &["job", "explain", "1", "2"],
            &["pilot", "list", "--limit", "0"],
            &["pilot", "list", "--where", "Status"],
            &["pilot", "logs"],
        ] {
            let err = parse(args).expect_err(&format!("{args:?}"));
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn output_defaults_to_the_current_directory() {
        let cli = parse(&["job", "output", "3", "4"]).expect("parse");
        let Command::Job(JobCommand::Output { ids, dir }) = cli.command else {
            panic!("not an output");
        };
        assert_eq!(ids.ids, [3, 4]);
        assert_eq!(dir, PathBuf::from("."));
        let cli = parse(&["job", "output", "3", "--dir", "out"]).expect("parse");
        let Command::Job(JobCommand::Output { dir, .. }) = cli.command else {
            panic!("not an output");
        };
        assert_eq!(dir, PathBuf::from("out"));
    }

    #[test]
    fn pilot_list_flags() {
        let cli = parse(&[
            "pilot",
            "list",
            "--where",
            "Status=Running",
            "--where",
            "GridSite in A,B",
            "--limit",
            "7",
        ])
        .expect("parse");
        let Command::Pilot(PilotCommand::List { filters, limit }) = cli.command else {
            panic!("not a pilot list");
        };
        assert_eq!(filters.filters.len(), 2);
        assert_eq!(filters.filters[0].parameter, "Status");
        assert_eq!(limit, 7);
    }

    #[test]
    fn summary_groups_by_status_by_default() {
        let cli = parse(&["job", "summary"]).expect("parse");
        let Command::Job(JobCommand::Summary { group_by, .. }) = cli.command else {
            panic!("not a summary");
        };
        assert_eq!(group_by, ["Status"]);
    }
}
