//! What a command prints and how it exits, built before anything is printed
//! so that commands are testable without a terminal.

use std::io::Write;
use std::process::ExitCode;

/// The outcome of one command.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub stdout: String,
    pub stderr: String,
    /// Some items failed: exit code 1 even though the call succeeded.
    pub failed: bool,
}

impl Report {
    /// A report that prints `text` followed by a newline when it has none.
    pub fn out(text: impl Into<String>) -> Self {
        let mut report = Self::default();
        report.println(text);
        report
    }

    pub fn println(&mut self, text: impl Into<String>) {
        push_line(&mut self.stdout, text.into());
    }

    pub fn eprintln(&mut self, text: impl Into<String>) {
        push_line(&mut self.stderr, text.into());
    }

    /// Writes both streams; a closed pipe (`dirac ... | head`) is not an error.
    pub fn emit(self) -> ExitCode {
        let _ = std::io::stdout().lock().write_all(self.stdout.as_bytes());
        let _ = std::io::stderr().lock().write_all(self.stderr.as_bytes());
        if self.failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

fn push_line(buf: &mut String, text: String) {
    buf.push_str(&text);
    if !text.ends_with('\n') {
        buf.push('\n');
    }
}
