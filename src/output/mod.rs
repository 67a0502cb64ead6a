//! Result writers: CSV rows, heatmap overlays, the `--top K` report.

pub mod csv;
pub mod heatmap;
pub mod top;
