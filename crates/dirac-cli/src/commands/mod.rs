//! Runs a parsed command line against the server.

mod data;
mod job;
mod login;
mod pilot;
mod request;

use std::io::IsTerminal;

use anyhow::anyhow;
use dirac_client::{Client, ClientConfig, Env};
use tonic::{Code, Status};

use dirac_proto::common::ItemError;

use crate::cli::{Cli, Command};
use crate::report::Report;

/// Resolves the config, connects and runs the command. An `Err` is printed as
/// `error: <message>` with exit code 1.
pub async fn run(cli: Cli, env: &dyn Env) -> anyhow::Result<Report> {
    let Cli {
        config,
        url,
        token,
        json,
        command,
    } = cli;
    let connect = || -> anyhow::Result<Client> {
        let resolved = ClientConfig::resolve(config.as_deref(), env, url.clone(), token.clone())?;
        Ok(Client::connect(&resolved)?)
    };
    match command {
        Command::Job(command) => job::run(&connect()?, command, json).await,
        Command::Pilot(command) => pilot::run(&connect()?, command, json).await,
        Command::Ce(command) => pilot::run_ce(&connect()?, command, json).await,
        Command::Site(command) => pilot::run_site(&connect()?, command, json).await,
        Command::Request(command) => request::run(&connect()?, command, json).await,
        Command::Login {
            vo,
            group,
            auth_url,
        } => {
            let loaded = ClientConfig::load(config.as_deref(), env)?.with_overrides(url, None);
            login::login(&loaded, env, &vo, group.as_deref(), auth_url, json).await
        }
        Command::Logout => {
            // The CA of the configuration, if any: logging out needs no
            // complete configuration.
            let loaded = ClientConfig::load(config.as_deref(), env).ok();
            login::logout(loaded.and_then(|c| c.ca_cert).as_deref(), env, json).await
        }
        Command::Whoami => {
            let resolved = ClientConfig::resolve(config.as_deref(), env, url, token)?;
            login::whoami(&resolved, env, json).await
        }
        data_command => {
            let resolved = ClientConfig::resolve(config.as_deref(), env, url, token)?;
            let client = Client::connect(&resolved)?;
            data::run(&client, &resolved, env, data_command, json).await
        }
    }
}

/// Transient progress lines on stderr, only for a person watching a
/// terminal: never in `--json` mode, never into a pipe or a file.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    pub fn new(as_json: bool) -> Self {
        Self {
            enabled: !as_json && std::io::stderr().is_terminal(),
        }
    }

    pub fn enabled(self) -> bool {
        self.enabled
    }

    pub fn line(self, text: impl std::fmt::Display) {
        if self.enabled {
            eprintln!("{text}");
        }
    }
}

/// `1.5 MiB`.
pub fn human_bytes(n: usize) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A failed call for one item of a multi-item command: `None` when the
/// failure is not about the item (the server is unreachable, the token is
/// refused...) and the whole command should stop.
pub fn item_error(status: &Status) -> Option<ItemError> {
    match status.code() {
        Code::NotFound
        | Code::PermissionDenied
        | Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::DataLoss
        | Code::OutOfRange => Some(ItemError {
            code: format!("{:?}", status.code()),
            message: status.message().to_owned(),
        }),
        _ => None,
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
    fn sizes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn only_item_failures_are_per_item() {
        let e = item_error(&Status::not_found("job 3 does not exist")).expect("per item");
        assert_eq!(e.code, "NotFound");
        assert_eq!(e.message, "job 3 does not exist");
        assert!(item_error(&Status::unavailable("down")).is_none());
        assert!(item_error(&Status::unauthenticated("expired")).is_none());
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
