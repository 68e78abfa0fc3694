//! ReqDB schema for every backend: requests, their operations (in order)
//! and the operations' files. Ids come from a sequence table in blocks, so
//! a whole request is inserted with known ids on all three backends.
//! Times are Unix seconds.

use dirac_core::db::Migration;

macro_rules! v1 {
    ($suffix:literal) => {
        [
            concat!("CREATE TABLE RMS_Sequences (Name VARCHAR(32) NOT NULL PRIMARY KEY, NextID BIGINT NOT NULL)", $suffix),
            "INSERT INTO RMS_Sequences (Name, NextID) VALUES ('Requests', 1)",
            "INSERT INTO RMS_Sequences (Name, NextID) VALUES ('Operations', 1)",
            "INSERT INTO RMS_Sequences (Name, NextID) VALUES ('Files', 1)",
            concat!(
                "CREATE TABLE RMS_Requests (RequestID BIGINT NOT NULL PRIMARY KEY, Name VARCHAR(255) NOT NULL, ",
                "Owner VARCHAR(64) NOT NULL, OwnerGroup VARCHAR(128) NOT NULL, VO VARCHAR(64) NOT NULL, ",
                "JobID BIGINT NOT NULL, Status VARCHAR(16) NOT NULL, Error VARCHAR(1024) NOT NULL, ",
                "SourceComponent VARCHAR(64) NOT NULL, CreationTime BIGINT NOT NULL, SubmitTime BIGINT NOT NULL, ",
                "LastUpdate BIGINT NOT NULL, NotBefore BIGINT NOT NULL, ",
                "ClaimedBy VARCHAR(64) NOT NULL, ClaimedAt BIGINT NOT NULL)",
                $suffix
            ),
            // The agents' selection (DIRACGrid/DIRAC#8714), the jobs' lookups.
            "CREATE INDEX RMS_RequestsEligible ON RMS_Requests (Status, NotBefore, LastUpdate)",
            "CREATE INDEX RMS_RequestsJob ON RMS_Requests (JobID)",
            "CREATE INDEX RMS_RequestsOwner ON RMS_Requests (Owner, RequestID)",
            concat!(
                "CREATE TABLE RMS_Operations (OperationID BIGINT NOT NULL PRIMARY KEY, RequestID BIGINT NOT NULL, ",
                "OpOrder INT NOT NULL, Type VARCHAR(64) NOT NULL, Status VARCHAR(16) NOT NULL, ",
                "Arguments TEXT NOT NULL, SourceSE VARCHAR(1024) NOT NULL, TargetSE VARCHAR(1024) NOT NULL, ",
                "Catalog VARCHAR(255) NOT NULL, Error VARCHAR(1024) NOT NULL, CreationTime BIGINT NOT NULL, ",
                "SubmitTime BIGINT NOT NULL, LastUpdate BIGINT NOT NULL)",
                $suffix
            ),
            "CREATE UNIQUE INDEX RMS_OperationsOrder ON RMS_Operations (RequestID, OpOrder)",
            concat!(
                "CREATE TABLE RMS_Files (FileID BIGINT NOT NULL PRIMARY KEY, OperationID BIGINT NOT NULL, ",
                "LFN TEXT NOT NULL, PFN TEXT NOT NULL, GUID VARCHAR(64) NOT NULL, Size BIGINT NOT NULL, ",
                "Checksum VARCHAR(128) NOT NULL, ChecksumType VARCHAR(16) NOT NULL, Status VARCHAR(16) NOT NULL, ",
                "Attempt BIGINT NOT NULL, Error VARCHAR(1024) NOT NULL)",
                $suffix
            ),
            "CREATE INDEX RMS_FilesOperation ON RMS_Files (OperationID, FileID)",
        ]
    };
}

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "requests, operations, files",
    sqlite: &v1!(""),
    mysql: &v1!(" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"),
    postgres: &v1!(""),
}];
