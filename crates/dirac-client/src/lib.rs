//! dirac-client
