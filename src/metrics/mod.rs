//! Detection metrics (SPEC §9).
