//! dirac-proto
