use std::path::PathBuf;

/// Everything that can go wrong before a call reaches the server.
///
/// Messages do not repeat their cause: it is the `source()`, which `anyhow`'s
/// `{:#}` prints after a colon.
///
/// Errors from the server itself are `tonic::Status` values returned by the
/// calls, not variants here.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Logging in, or refreshing the tokens of a login, failed.
    #[error("login: {0} (run `dirac login` again)")]
    Login(#[from] crate::login::LoginError),
    /// A config file given explicitly (`--config` or `$DIRAC_CONFIG`) does not exist.
    #[error("config file {} does not exist", path.display())]
    ConfigMissing { path: PathBuf },
    #[error("cannot read config file {}", path.display())]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {}", path.display())]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// No URL in the file, the environment or the flags. `path` is the file
    /// that was (or would have been) read.
    #[error("no server url: pass --url, set DIRAC_URL or write url: in {path}")]
    NoUrl { path: String },
    #[error("invalid server url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot read ca_cert {}", path.display())]
    CaCertRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot configure tls for {url}")]
    Tls {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The token cannot be sent as an HTTP header (the token itself is never shown).
    #[error("invalid token: it must be printable ascii without spaces")]
    InvalidToken,
    #[error("invalid filter {expr:?}: {reason}")]
    InvalidFilter { expr: String, reason: String },
    #[error("invalid sort {expr:?}: {reason}")]
    InvalidSort { expr: String, reason: String },
}
