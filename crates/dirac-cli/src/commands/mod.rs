//! Runs a parsed command line against the server.

mod job;

use anyhow::anyhow;
use dirac_client::{Client, ClientConfig, Env};
use tonic::{Code, Status};

use crate::cli::{Cli, Command};
use crate::report::Report;

/// Resolves the config, connects and runs the command. An `Err` is printed as
/// `error: <message>` with exit code 1.
pub async fn run(cli: Cli, env: &dyn Env) -> anyhow::Result<Report> {
    let config = ClientConfig::resolve(cli.config.as_deref(), env, cli.url, cli.token)?;
    let client = Client::connect(&config)?;
    match cli.command {
        Command::Job(command) => job::run(&client, command, cli.json).await,
    }
}

/// `PermissionDenied` → `permission denied`.
pub fn code_words(code: &str) -> String {
    let mut words = String::with_capacity(code.len() + 4);
    for (i, c) in code.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    words
}

/// `permission denied: job 5 belongs to another user`, plus the transport
/// causes of connection errors.
pub fn describe_status(status: &Status) -> String {
    let mut text = code_words(&format!("{:?}", status.code()));
    if !status.message().is_empty() {
        text.push_str(": ");
        text.push_str(status.message());
    }
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if status.code() == Code::Unauthenticated {
        text.push_str(" (check --token, DIRAC_TOKEN or token: in the config file)");
    }
    text
}

/// A failed call as a command error.
pub fn rpc_error(status: Status) -> anyhow::Error {
    anyhow!(describe_status(&status))
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use dirac_client::MapEnv;

    use super::*;

    #[test]
    fn status_messages() {
        let check = |status: Status, expected: &str| assert_eq!(describe_status(&status), expected);
        check(
            Status::permission_denied("job 5 belongs to another user"),
            "permission denied: job 5 belongs to another user",
        );
        check(Status::not_found(""), "not found");
        check(
            Status::invalid_argument("bad jdl"),
            "invalid argument: bad jdl",
        );
        check(
            Status::unauthenticated("token expired"),
            "unauthenticated: token expired (check --token, DIRAC_TOKEN or token: in the config file)",
        );
    }

    #[test]
    fn item_codes_become_words() {
        assert_eq!(code_words("NotFound"), "not found");
        assert_eq!(code_words("FailedPrecondition"), "failed precondition");
        assert_eq!(code_words(""), "");
    }

    #[tokio::test]
    async fn missing_url_is_reported() {
        let cli = Cli::parse_from(["dirac", "job", "status", "1"]);
        let err = run(cli, &MapEnv::default()).await.expect_err("no url");
        assert!(format!("{err:#}").starts_with("no server url"), "{err:#}");
    }

    #[tokio::test]
    async fn unreachable_server_is_an_error_not_a_panic() {
        let cli = Cli::parse_from(["dirac", "--url", "http://127.0.0.1:1", "job", "kill", "1"]);
        let err = run(cli, &MapEnv::default()).await.expect_err("no server");
        assert!(format!("{err:#}").starts_with("unavailable"), "{err:#}");
    }
}
