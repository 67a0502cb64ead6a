//! Result writers: CSV rows, heatmap overlays.

pub mod csv;
pub mod heatmap;
