//! JobDB and JobLoggingDB schema for every backend.
//!
//! The `Jobs` row carries the job's JDL, so one submitted job is one durable
//! row (see docs/adr/0002-one-row-per-submitted-job.md). `LoggingInfo` is
//! DIRAC's JobLoggingDB table; it lives in the same database so that a status
//! change and its history record commit together.

use dirac_core::db::Migration;

macro_rules! jobs_table {
    ($bigtext:literal) => {
        concat!(
            "CREATE TABLE Jobs (",
            "JobID BIGINT NOT NULL PRIMARY KEY, ",
            "JobType VARCHAR(32) NOT NULL, ",
            "JobGroup VARCHAR(128) NOT NULL, ",
            "Site VARCHAR(128) NOT NULL, ",
            "JobName VARCHAR(128) NOT NULL, ",
            "Owner VARCHAR(64) NOT NULL, ",
            "OwnerGroup VARCHAR(128) NOT NULL, ",
            "VO VARCHAR(64) NOT NULL, ",
            "SubmissionTime VARCHAR(32) NOT NULL, ",
            "RescheduleTime VARCHAR(32) NULL, ",
            "LastUpdateTime VARCHAR(32) NOT NULL, ",
            "StartExecTime VARCHAR(32) NULL, ",
            "HeartBeatTime VARCHAR(32) NULL, ",
            "EndExecTime VARCHAR(32) NULL, ",
            "LastStatusTime VARCHAR(32) NOT NULL, ",
            "Status VARCHAR(32) NOT NULL, ",
            "MinorStatus VARCHAR(128) NOT NULL, ",
            "ApplicationStatus VARCHAR(255) NOT NULL, ",
            "UserPriority BIGINT NOT NULL, ",
            "RescheduleCounter BIGINT NOT NULL, ",
            "CPUTime BIGINT NOT NULL, ",
            "Lease VARCHAR(40) NULL, ",
            "JDL ",
            $bigtext,
            " NOT NULL",
            ")"
        )
    };
}

const INDEXES: &[&str] = &[
    "CREATE INDEX JobsStatusSite ON Jobs (Status, Site)",
    "CREATE INDEX JobsOwner ON Jobs (Owner, VO, Status)",
    "CREATE INDEX JobsGroup ON Jobs (JobGroup)",
];

/// Version 2 for one backend: its auto-increment key, large text type,
/// floating type and table suffix.
macro_rules! v2 {
    ($auto:literal, $text:literal, $double:literal, $suffix:literal) => {
        [
            concat!(
                "CREATE TABLE tq_TaskQueues (TQId ", $auto, ", KeyHash VARCHAR(64) NOT NULL UNIQUE, ",
                "Owner VARCHAR(64) NOT NULL, OwnerGroup VARCHAR(128) NOT NULL, VO VARCHAR(64) NOT NULL, ",
                "CPUTime BIGINT NOT NULL, Sites ", $text, " NOT NULL, GridCEs ", $text, " NOT NULL, ",
                "BannedSites ", $text, " NOT NULL, Platforms ", $text, " NOT NULL, JobTypes ", $text, " NOT NULL, ",
                "Tags ", $text, " NOT NULL, CreationTime VARCHAR(32) NOT NULL)", $suffix
            ),
            concat!(
                "CREATE TABLE tq_Jobs (JobID BIGINT NOT NULL PRIMARY KEY, TQId BIGINT NOT NULL, ",
                "UserPriority ", $double, " NOT NULL, InsertTime VARCHAR(32) NOT NULL)", $suffix
            ),
            "CREATE INDEX tq_JobsTQ ON tq_Jobs (TQId)",
            concat!(
                "CREATE TABLE PilotAgents (PilotID ", $auto, ", PilotStamp VARCHAR(32) NOT NULL UNIQUE, ",
                "PilotJobReference VARCHAR(255) NOT NULL, VO VARCHAR(64) NOT NULL, GridSite VARCHAR(128) NOT NULL, ",
                "DestinationSite VARCHAR(128) NOT NULL, Queue VARCHAR(128) NOT NULL, GridType VARCHAR(32) NOT NULL, ",
                "Status VARCHAR(32) NOT NULL, StatusReason VARCHAR(255) NOT NULL, SubmissionTime VARCHAR(32) NOT NULL, ",
                "LastUpdateTime VARCHAR(32) NOT NULL, BenchMark ", $double, " NOT NULL, CurrentJobID BIGINT NOT NULL)",
                $suffix
            ),
            "CREATE INDEX PilotAgentsStatus ON PilotAgents (Status)",
            "CREATE INDEX PilotAgentsSite ON PilotAgents (GridSite, DestinationSite, Status)",
            concat!(
                "CREATE TABLE JobToPilotMapping (PilotID BIGINT NOT NULL, JobID BIGINT NOT NULL, ",
                "StartTime VARCHAR(32) NOT NULL, PRIMARY KEY (PilotID, JobID))", $suffix
            ),
            "CREATE INDEX JobToPilotJob ON JobToPilotMapping (JobID)",
            concat!("CREATE TABLE PilotOutput (PilotID BIGINT NOT NULL PRIMARY KEY, Log ", $text, " NOT NULL)", $suffix),
            concat!(
                "CREATE TABLE sb_SandBoxes (SBId ", $auto, ", Owner VARCHAR(64) NOT NULL, ",
                "OwnerGroup VARCHAR(128) NOT NULL, VO VARCHAR(64) NOT NULL, SEName VARCHAR(64) NOT NULL, ",
                "PFN VARCHAR(255) NOT NULL UNIQUE, Bytes BIGINT NOT NULL, Checksum VARCHAR(64) NOT NULL, ",
                "Format VARCHAR(16) NOT NULL, RegistrationTime VARCHAR(32) NOT NULL, ",
                "LastAccessTime VARCHAR(32) NOT NULL, Assigned BIGINT NOT NULL)", $suffix
            ),
            concat!(
                "CREATE TABLE sb_EntityMapping (SBId BIGINT NOT NULL, JobID BIGINT NOT NULL, Type VARCHAR(16) NOT NULL, ",
                "PRIMARY KEY (SBId, JobID, Type))", $suffix
            ),
            "CREATE INDEX sb_EntityJob ON sb_EntityMapping (JobID)",
        ]
    };
}

/// Version 3: DIRAC's `AccountingSent` flag, one accounting record per
/// finished pilot (the stamp as key, so a record is never counted twice),
/// DiracX's (DestinationSite, Queue, Status) index, and the site mask.
macro_rules! v3 {
    ($suffix:literal) => {
        [
            "ALTER TABLE PilotAgents ADD COLUMN AccountingSent BIGINT NOT NULL DEFAULT 0",
            "CREATE INDEX PilotAgentsQueue ON PilotAgents (DestinationSite, Queue, Status)",
            concat!(
                "CREATE TABLE PilotAccounting (PilotStamp VARCHAR(32) NOT NULL PRIMARY KEY, ",
                "VO VARCHAR(64) NOT NULL, GridSite VARCHAR(128) NOT NULL, DestinationSite VARCHAR(128) NOT NULL, ",
                "Queue VARCHAR(128) NOT NULL, GridType VARCHAR(32) NOT NULL, Status VARCHAR(32) NOT NULL, ",
                "Jobs BIGINT NOT NULL, SubmissionTime VARCHAR(32) NOT NULL, EndTime VARCHAR(32) NOT NULL)",
                $suffix
            ),
            "CREATE INDEX PilotAccountingEnd ON PilotAccounting (EndTime)",
            concat!(
                "CREATE TABLE SiteMask (Site VARCHAR(128) NOT NULL PRIMARY KEY, Status VARCHAR(16) NOT NULL, ",
                "Reason VARCHAR(255) NOT NULL, Author VARCHAR(64) NOT NULL, LastUpdate VARCHAR(32) NOT NULL)",
                $suffix
            ),
        ]
    };
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "jobs, logging, parameters, commands, submissions",
        sqlite: &[
            jobs_table!("TEXT"),
            INDEXES[0],
            INDEXES[1],
            INDEXES[2],
            "CREATE TABLE LoggingInfo (SeqID INTEGER PRIMARY KEY AUTOINCREMENT, JobID BIGINT NOT NULL, \
         Status VARCHAR(32) NOT NULL, MinorStatus VARCHAR(128) NOT NULL, ApplicationStatus VARCHAR(255) NOT NULL, \
         StatusTime VARCHAR(32) NOT NULL, Source VARCHAR(64) NOT NULL)",
            "CREATE INDEX LoggingInfoJob ON LoggingInfo (JobID)",
            "CREATE TABLE JobParameters (JobID BIGINT NOT NULL, Name VARCHAR(100) NOT NULL, Value TEXT NOT NULL, \
         PRIMARY KEY (JobID, Name))",
            "CREATE TABLE AtticJobParameters (JobID BIGINT NOT NULL, Name VARCHAR(100) NOT NULL, Value TEXT NOT NULL, \
         RescheduleCycle BIGINT NOT NULL, PRIMARY KEY (JobID, Name, RescheduleCycle))",
            "CREATE TABLE HeartBeatLoggingInfo (ID INTEGER PRIMARY KEY AUTOINCREMENT, JobID BIGINT NOT NULL, \
         Name VARCHAR(100) NOT NULL, Value TEXT NOT NULL, HeartBeatTime VARCHAR(32) NOT NULL)",
            "CREATE INDEX HeartBeatJob ON HeartBeatLoggingInfo (JobID)",
            "CREATE TABLE JobCommands (ID INTEGER PRIMARY KEY AUTOINCREMENT, JobID BIGINT NOT NULL, \
         Command VARCHAR(32) NOT NULL, Arguments TEXT NOT NULL, Status VARCHAR(16) NOT NULL, \
         ReceptionTime VARCHAR(32) NOT NULL, ExecutionTime VARCHAR(32) NULL)",
            "CREATE INDEX JobCommandsJob ON JobCommands (JobID, Status)",
            "CREATE TABLE SubmitRequests (RequestID VARCHAR(128) NOT NULL, Owner VARCHAR(64) NOT NULL, \
         VO VARCHAR(64) NOT NULL, FirstJobID BIGINT NOT NULL, JobsPerJdl TEXT NOT NULL, \
         CreationTime VARCHAR(32) NOT NULL, PRIMARY KEY (RequestID, Owner, VO))",
            "CREATE TABLE JobIdSequence (Name VARCHAR(32) NOT NULL PRIMARY KEY, NextID BIGINT NOT NULL)",
            "INSERT INTO JobIdSequence (Name, NextID) VALUES ('Jobs', 1)",
        ],
        mysql: &[
            concat!(
                jobs_table!("MEDIUMTEXT"),
                " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            ),
            INDEXES[0],
            INDEXES[1],
            INDEXES[2],
            "CREATE TABLE LoggingInfo (SeqID BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, JobID BIGINT NOT NULL, \
         Status VARCHAR(32) NOT NULL, MinorStatus VARCHAR(128) NOT NULL, ApplicationStatus VARCHAR(255) NOT NULL, \
         StatusTime VARCHAR(32) NOT NULL, Source VARCHAR(64) NOT NULL, INDEX LoggingInfoJob (JobID)) \
         ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            "CREATE TABLE JobParameters (JobID BIGINT NOT NULL, Name VARCHAR(100) NOT NULL, Value MEDIUMTEXT NOT NULL, \
         PRIMARY KEY (JobID, Name)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            "CREATE TABLE AtticJobParameters (JobID BIGINT NOT NULL, Name VARCHAR(100) NOT NULL, Value MEDIUMTEXT NOT NULL, \
         RescheduleCycle BIGINT NOT NULL, PRIMARY KEY (JobID, Name, RescheduleCycle)) \
         ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            "CREATE TABLE HeartBeatLoggingInfo (ID BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, JobID BIGINT NOT NULL, \
         Name VARCHAR(100) NOT NULL, Value TEXT NOT NULL, HeartBeatTime VARCHAR(32) NOT NULL, \
         INDEX HeartBeatJob (JobID)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            "CREATE TABLE JobCommands (ID BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, JobID BIGINT NOT NULL, \
         Command VARCHAR(32) NOT NULL, Arguments TEXT NOT NULL, Status VARCHAR(16) NOT NULL, \
         ReceptionTime VARCHAR(32) NOT NULL, ExecutionTime VARCHAR(32) NULL, INDEX JobCommandsJob (JobID, Status)) \
         ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            "CREATE TABLE SubmitRequests (RequestID VARCHAR(128) NOT NULL, Owner VARCHAR(64) NOT NULL, \
         VO VARCHAR(64) NOT NULL, FirstJobID BIGINT NOT NULL, JobsPerJdl MEDIUMTEXT NOT NULL, \
         CreationTime VARCHAR(32) NOT NULL, PRIMARY KEY (RequestID, Owner, VO)) \
         ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE JobIdSequence (Name VARCHAR(32) NOT NULL PRIMARY KEY, NextID BIGINT NOT NULL) ENGINE=InnoDB",
            "INSERT INTO JobIdSequence (Name, NextID) VALUES ('Jobs', 1)",
        ],
        postgres: &[
            jobs_table!("TEXT"),
            INDEXES[0],
            INDEXES[1],
            INDEXES[2],
            "CREATE TABLE LoggingInfo (SeqID BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, JobID BIGINT NOT NULL, \
         Status VARCHAR(32) NOT NULL, MinorStatus VARCHAR(128) NOT NULL, ApplicationStatus VARCHAR(255) NOT NULL, \
         StatusTime VARCHAR(32) NOT NULL, Source VARCHAR(64) NOT NULL)",
            "CREATE INDEX LoggingInfoJob ON LoggingInfo (JobID)",
            "CREATE TABLE JobParameters (JobID BIGINT NOT NULL, Name VARCHAR(100) NOT NULL, Value TEXT NOT NULL, \
         PRIMARY KEY (JobID, Name))",
            "CREATE TABLE AtticJobParameters (JobID BIGINT NOT NULL, Name VARCHAR(100) NOT NULL, Value TEXT NOT NULL, \
         RescheduleCycle BIGINT NOT NULL, PRIMARY KEY (JobID, Name, RescheduleCycle))",
            "CREATE TABLE HeartBeatLoggingInfo (ID BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, \
         JobID BIGINT NOT NULL, Name VARCHAR(100) NOT NULL, Value TEXT NOT NULL, HeartBeatTime VARCHAR(32) NOT NULL)",
            "CREATE INDEX HeartBeatJob ON HeartBeatLoggingInfo (JobID)",
            "CREATE TABLE JobCommands (ID BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, JobID BIGINT NOT NULL, \
         Command VARCHAR(32) NOT NULL, Arguments TEXT NOT NULL, Status VARCHAR(16) NOT NULL, \
         ReceptionTime VARCHAR(32) NOT NULL, ExecutionTime VARCHAR(32) NULL)",
            "CREATE INDEX JobCommandsJob ON JobCommands (JobID, Status)",
            "CREATE TABLE SubmitRequests (RequestID VARCHAR(128) NOT NULL, Owner VARCHAR(64) NOT NULL, \
         VO VARCHAR(64) NOT NULL, FirstJobID BIGINT NOT NULL, JobsPerJdl TEXT NOT NULL, \
         CreationTime VARCHAR(32) NOT NULL, PRIMARY KEY (RequestID, Owner, VO))",
            "CREATE TABLE JobIdSequence (Name VARCHAR(32) NOT NULL PRIMARY KEY, NextID BIGINT NOT NULL)",
            "INSERT INTO JobIdSequence (Name, NextID) VALUES ('Jobs', 1)",
        ],
    },
    Migration {
        version: 2,
        description: "task queues, pilots, sandboxes",
        sqlite: &v2!("INTEGER PRIMARY KEY AUTOINCREMENT", "TEXT", "REAL", ""),
        mysql: &v2!(
            "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
            "MEDIUMTEXT",
            "DOUBLE",
            " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        ),
        postgres: &v2!(
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            "TEXT",
            "DOUBLE PRECISION",
            ""
        ),
    },
    Migration {
        version: 3,
        description: "pilot accounting, the SiteDirector's queue index, the site mask",
        sqlite: &v3!(""),
        mysql: &v3!(" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"),
        postgres: &v3!(""),
    },
];
