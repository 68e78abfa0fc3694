//! dirac-jdl
