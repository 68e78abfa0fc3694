//! Integration tests for `dirac-matcher`: property tests of the index against a plain model.

mod properties;
