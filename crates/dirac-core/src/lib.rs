//! dirac-core
