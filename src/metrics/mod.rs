//! Detection metrics (SPEC §9).

pub mod aupro;
pub mod compare;
pub mod keys;
pub mod pixel;
pub mod pro;
pub mod ranking;
pub mod regions;
pub mod report;
