//! Integration tests of the WMS: repository tests against real SQLite,
//! MariaDB and PostgreSQL databases, and the gRPC services in-process on
//! loopback.

mod jobdb;
mod matching;
mod services;
mod support;
