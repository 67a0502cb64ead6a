//! `layer_norm`: for each row `r` of `x, y: [rows, dim]` (`gamma, beta: [dim]`)
//!
//! ```text
//! mean = Σ x / dim,  var = Σ (x − mean)² / dim   (two passes, biased variance)
//! y    = (x − mean) / sqrt(var + eps) · gamma + beta
//! ```
//!
//! in f32 with 16 interleaved accumulators per sum; rows run in parallel.

use anyhow::Result;
use rayon::prelude::*;

use super::check_len;
use super::vector::{multiversion, sum, sum_sq_dev};

/// Rows per rayon task: enough work to amortise scheduling on small widths.
const MIN_ELEMS_PER_TASK: usize = 16 * 1024;

multiversion! {
    fn layer_norm_row(y: &mut [f32], x: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let n = x.len() as f32;
        let mean = sum(x) / n;
        let var = sum_sq_dev(x, mean) / n;
        let rstd = 1.0 / (var + eps).sqrt();
        for (((o, &v), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
            *o = (v - mean) * rstd * g + b;
        }
    }
}

pub(crate) fn layer_norm(
    y: &mut [f32],
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<()> {
    check_len("layer_norm", "x", x.len(), &[rows, dim])?;
    check_len("layer_norm", "y", y.len(), &[rows, dim])?;
    check_len("layer_norm", "gamma", gamma.len(), &[dim])?;
    check_len("layer_norm", "beta", beta.len(), &[dim])?;
    if y.is_empty() {
        return Ok(());
    }
    y.par_chunks_mut(dim)
        .zip(x.par_chunks(dim))
        .with_min_len(MIN_ELEMS_PER_TASK.div_ceil(dim))
        .for_each(|(yr, xr)| layer_norm_row(yr, xr, gamma, beta, eps));
    Ok(())
}
