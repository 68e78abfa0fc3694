//! dirac-wms
