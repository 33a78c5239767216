//! Validation of create bodies (being written).
