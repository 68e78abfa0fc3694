//! Integration tests for `dirac-jdl`: the reference example JDLs and property tests.

mod examples;
mod properties;
