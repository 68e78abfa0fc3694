//! AuthDB schema for every backend.
//!
//! Secrets are never stored: device codes and refresh tokens are kept as
//! SHA-256 hex digests. User codes are short-lived and shown to humans, so
//! they are stored as they are (without the display dash).

use dirac_core::db::Migration;

/// Version 1 with one table suffix per backend.
macro_rules! v1 {
    ($suffix:literal) => {
        [
            concat!(
                "CREATE TABLE DeviceFlows (UserCode VARCHAR(8) NOT NULL PRIMARY KEY, ",
                "DeviceCode VARCHAR(64) NOT NULL UNIQUE, ClientID VARCHAR(255) NOT NULL, ",
                "Scope VARCHAR(1024) NOT NULL, Status VARCHAR(16) NOT NULL, ",
                "CreationTime VARCHAR(32) NOT NULL, ExpiresAt VARCHAR(32) NOT NULL, ",
                "LastPoll VARCHAR(32) NULL, PollInterval BIGINT NOT NULL, ",
                "Sub VARCHAR(255) NULL, Username VARCHAR(64) NULL, VO VARCHAR(64) NULL, ",
                "GroupName VARCHAR(128) NULL, Properties VARCHAR(1024) NULL)",
                $suffix
            ),
            "CREATE INDEX DeviceFlowsExpiry ON DeviceFlows (ExpiresAt)",
            concat!(
                "CREATE TABLE RefreshTokens (TokenHash VARCHAR(64) NOT NULL PRIMARY KEY, ",
                "FamilyID VARCHAR(64) NOT NULL, ClientID VARCHAR(255) NOT NULL, ",
                "Sub VARCHAR(255) NOT NULL, Username VARCHAR(64) NOT NULL, VO VARCHAR(64) NOT NULL, ",
                "GroupName VARCHAR(128) NOT NULL, Properties VARCHAR(1024) NOT NULL, ",
                "Scope VARCHAR(1024) NOT NULL, Status VARCHAR(16) NOT NULL, ",
                "CreationTime VARCHAR(32) NOT NULL, ExpiresAt VARCHAR(32) NOT NULL)",
                $suffix
            ),
            "CREATE INDEX RefreshTokensFamily ON RefreshTokens (FamilyID)",
            "CREATE INDEX RefreshTokensSub ON RefreshTokens (Sub, Status)",
        ]
    };
}

/// Version 2: one-time pilot secrets (stored as peppered SHA-256).
macro_rules! v2 {
    ($suffix:literal) => {
        [concat!(
            "CREATE TABLE PilotSecrets (SecretHash VARCHAR(64) NOT NULL PRIMARY KEY, VO VARCHAR(64) NOT NULL, ",
            "Sites VARCHAR(1024) NOT NULL, UsesLeft BIGINT NOT NULL, CreationTime VARCHAR(32) NOT NULL, ",
            "ExpiresAt VARCHAR(32) NOT NULL)",
            $suffix
        )]
    };
}

/// Version 4: authorization-code flows live in DeviceFlows (same approval,
/// same federation), marked by their redirect URI.
const V4: [&str; 3] = [
    "ALTER TABLE DeviceFlows ADD COLUMN RedirectURI VARCHAR(1024) NULL",
    "ALTER TABLE DeviceFlows ADD COLUMN CodeChallenge VARCHAR(128) NULL",
    "ALTER TABLE DeviceFlows ADD COLUMN ClientState VARCHAR(1024) NULL",
];

/// Version 3: the one-time states of federated logins.
macro_rules! v3 {
    ($suffix:literal) => {
        [concat!(
            "CREATE TABLE FederationStates (StateHash VARCHAR(64) NOT NULL PRIMARY KEY, UserCode VARCHAR(8) NOT NULL, ",
            "Verifier VARCHAR(128) NOT NULL, Nonce VARCHAR(128) NOT NULL, CreationTime VARCHAR(32) NOT NULL)",
            $suffix
        )]
    };
}

/// Version 5: the TokenManager's IdP refresh tokens, sealed (never plain).
macro_rules! v5 {
    ($suffix:literal) => {
        [concat!(
            "CREATE TABLE IdPTokens (IdP VARCHAR(255) NOT NULL, Username VARCHAR(64) NOT NULL, ",
            "Sealed TEXT NOT NULL, UpdateTime VARCHAR(32) NOT NULL, PRIMARY KEY (IdP, Username))",
            $suffix
        )]
    };
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "device flows and refresh tokens",
        sqlite: &v1!(""),
        mysql: &v1!(" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"),
        postgres: &v1!(""),
    },
    Migration {
        version: 2,
        description: "pilot secrets",
        sqlite: &v2!(""),
        mysql: &v2!(" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"),
        postgres: &v2!(""),
    },
    Migration {
        version: 3,
        description: "federation states",
        sqlite: &v3!(""),
        mysql: &v3!(" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"),
        postgres: &v3!(""),
    },
    Migration {
        version: 4,
        description: "authorization-code flows",
        sqlite: &V4,
        mysql: &V4,
        postgres: &V4,
    },
    Migration {
        version: 5,
        description: "sealed identity-provider refresh tokens",
        sqlite: &v5!(""),
        mysql: &v5!(" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"),
        postgres: &v5!(""),
    },
];
