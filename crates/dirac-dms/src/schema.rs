//! FileCatalogDB schema for every backend.
//!
//! The namespace is a directory table with the full path (looked up by its
//! SHA-256, so paths of any length are indexed) and a closure table
//! (ancestor, descendant, depth): subtree queries need no recursion and no
//! depth limit. Ids come from a sequence table in blocks, so bulk inserts
//! are multi-row INSERTs with known ids on all three backends.

use dirac_core::db::Migration;

macro_rules! v1 {
    ($suffix:literal, $double:literal) => {
        [
            concat!("CREATE TABLE FC_Sequences (Name VARCHAR(32) NOT NULL PRIMARY KEY, NextID BIGINT NOT NULL)", $suffix),
            "INSERT INTO FC_Sequences (Name, NextID) VALUES ('Dirs', 1)",
            "INSERT INTO FC_Sequences (Name, NextID) VALUES ('Files', 1)",
            "INSERT INTO FC_Sequences (Name, NextID) VALUES ('Datasets', 1)",
            concat!(
                "CREATE TABLE FC_Dirs (DirID BIGINT NOT NULL PRIMARY KEY, ParentID BIGINT NOT NULL, ",
                "Name VARCHAR(255) NOT NULL, Path TEXT NOT NULL, PathHash CHAR(64) NOT NULL, ",
                "Owner VARCHAR(64) NOT NULL, OwnerGroup VARCHAR(128) NOT NULL, Mode INT NOT NULL, ",
                "CreationTime BIGINT NOT NULL, ModificationTime BIGINT NOT NULL)",
                $suffix
            ),
            "CREATE UNIQUE INDEX FC_DirsPath ON FC_Dirs (PathHash)",
            "CREATE UNIQUE INDEX FC_DirsParent ON FC_Dirs (ParentID, Name)",
            concat!(
                "CREATE TABLE FC_DirClosure (Ancestor BIGINT NOT NULL, Descendant BIGINT NOT NULL, ",
                "Depth INT NOT NULL, PRIMARY KEY (Ancestor, Descendant))",
                $suffix
            ),
            "CREATE INDEX FC_DirClosureDescendant ON FC_DirClosure (Descendant, Depth)",
            concat!(
                "CREATE TABLE FC_Files (FileID BIGINT NOT NULL PRIMARY KEY, DirID BIGINT NOT NULL, ",
                "Name VARCHAR(255) NOT NULL, FileKey BIGINT NOT NULL, Size BIGINT NOT NULL, Checksum VARCHAR(64) NOT NULL, ",
                "ChecksumType VARCHAR(16) NOT NULL, GUID VARCHAR(64) NOT NULL, Owner VARCHAR(64) NOT NULL, ",
                "OwnerGroup VARCHAR(128) NOT NULL, Mode INT NOT NULL, Status VARCHAR(16) NOT NULL, ",
                "CreationTime BIGINT NOT NULL, ModificationTime BIGINT NOT NULL)",
                $suffix
            ),
            "CREATE UNIQUE INDEX FC_FilesName ON FC_Files (DirID, Name)",
            "CREATE UNIQUE INDEX FC_FilesGUID ON FC_Files (GUID)",
            "CREATE INDEX FC_FilesKey ON FC_Files (FileKey)",
            // Listings walk a directory's files by id.
            "CREATE INDEX FC_FilesDir ON FC_Files (DirID, FileID)",
            concat!(
                "CREATE TABLE FC_Replicas (FileID BIGINT NOT NULL, SE VARCHAR(64) NOT NULL, ",
                "Status VARCHAR(16) NOT NULL, PFN VARCHAR(1024) NULL, CreationTime BIGINT NOT NULL, ",
                "PRIMARY KEY (FileID, SE))",
                $suffix
            ),
            "CREATE INDEX FC_ReplicasSE ON FC_Replicas (SE)",
            concat!(
                "CREATE TABLE FC_DirUsage (DirID BIGINT NOT NULL, SE VARCHAR(64) NOT NULL, ",
                "Size BIGINT NOT NULL, Files BIGINT NOT NULL, PRIMARY KEY (DirID, SE))",
                $suffix
            ),
            concat!(
                "CREATE TABLE FC_MetaFields (VO VARCHAR(64) NOT NULL, Name VARCHAR(64) NOT NULL, ",
                "Type VARCHAR(8) NOT NULL, Scope VARCHAR(16) NOT NULL, PRIMARY KEY (VO, Name))",
                $suffix
            ),
            concat!(
                "CREATE TABLE FC_DirMeta (DirID BIGINT NOT NULL, Field VARCHAR(64) NOT NULL, ",
                "IntValue BIGINT NULL, FloatValue ", $double, " NULL, StrValue VARCHAR(255) NULL, ",
                "PRIMARY KEY (DirID, Field))",
                $suffix
            ),
            "CREATE INDEX FC_DirMetaInt ON FC_DirMeta (Field, IntValue)",
            "CREATE INDEX FC_DirMetaFloat ON FC_DirMeta (Field, FloatValue)",
            "CREATE INDEX FC_DirMetaStr ON FC_DirMeta (Field, StrValue)",
            concat!(
                "CREATE TABLE FC_FileMeta (FileID BIGINT NOT NULL, Field VARCHAR(64) NOT NULL, ",
                "IntValue BIGINT NULL, FloatValue ", $double, " NULL, StrValue VARCHAR(255) NULL, ",
                "PRIMARY KEY (FileID, Field))",
                $suffix
            ),
            "CREATE INDEX FC_FileMetaInt ON FC_FileMeta (Field, IntValue, FileID)",
            "CREATE INDEX FC_FileMetaFloat ON FC_FileMeta (Field, FloatValue, FileID)",
            "CREATE INDEX FC_FileMetaStr ON FC_FileMeta (Field, StrValue, FileID)",
            concat!(
                "CREATE TABLE FC_Datasets (DatasetID BIGINT NOT NULL PRIMARY KEY, Name TEXT NOT NULL, ",
                "NameHash CHAR(64) NOT NULL, VO VARCHAR(64) NOT NULL, Path TEXT NOT NULL, Query TEXT NOT NULL, ",
                "Status VARCHAR(16) NOT NULL, Owner VARCHAR(64) NOT NULL, OwnerGroup VARCHAR(128) NOT NULL, ",
                "CreationTime BIGINT NOT NULL, Files BIGINT NOT NULL, Size BIGINT NOT NULL)",
                $suffix
            ),
            "CREATE UNIQUE INDEX FC_DatasetsName ON FC_Datasets (NameHash)",
            concat!(
                "CREATE TABLE FC_DatasetFiles (DatasetID BIGINT NOT NULL, FileID BIGINT NOT NULL, ",
                "PRIMARY KEY (DatasetID, FileID))",
                $suffix
            ),
            concat!(
                "CREATE TABLE FC_Ancestors (FileID BIGINT NOT NULL, AncestorID BIGINT NOT NULL, ",
                "Depth INT NOT NULL, PRIMARY KEY (FileID, AncestorID))",
                $suffix
            ),
            "CREATE INDEX FC_AncestorsAncestor ON FC_Ancestors (AncestorID, Depth)",
        ]
    };
}

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "namespace, replicas, usage, metadata, datasets, ancestry",
    sqlite: &v1!("", "REAL"),
    mysql: &v1!(
        " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        "DOUBLE"
    ),
    postgres: &v1!("", "DOUBLE PRECISION"),
}];
