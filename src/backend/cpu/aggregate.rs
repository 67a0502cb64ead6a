//! `aggregate`: multi-scale spatial aggregation of one odd window `r` (SPEC §3).
//!
//! `x, out: [batch, 1 + g*g, dim]`. Token 0 (CLS) is copied. Patch token `(h, w)`:
//!
//! ```text
//! out[h, w] = Σ_{i, j ∈ −r/2..=r/2, (h+i, w+j) inside the grid} k(i, j) · x[h+i, w+j]
//! k(i, j)   = exp(−(i² + j²) / (2σ²)) / Σ_{whole r x r window} exp(−(i² + j²) / (2σ²))
//! ```
//!
//! i.e. zero padding without renormalising at the border; `r = 1` is an exact copy. Weights in
//! f64, rounded once to f32; the sum runs in f32, vectorised over `dim`, one task per grid row.

use anyhow::{ensure, Result};
use rayon::prelude::*;

use super::check_len;
use super::vector::multiversion;

multiversion! {
    /// `y += a · x`.
    fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o += a * v;
        }
    }
}

/// The normalised `r x r` kernel, row-major: f64 weights rounded once to f32 (the CUDA
/// backend uploads the same table).
pub(crate) fn window_kernel(window: usize, sigma: f32) -> Vec<f32> {
    let half = (window / 2) as f64;
    let s2 = 2.0 * (sigma as f64) * (sigma as f64);
    let e: Vec<f64> = (0..window)
        .map(|i| {
            let d = i as f64 - half;
            (-(d * d) / s2).exp()
        })
        .collect();
    let total: f64 = e.iter().sum::<f64>().powi(2);
    e.iter()
        .flat_map(|&a| e.iter().map(move |&b| (a * b / total) as f32))
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn aggregate(
    out: &mut [f32],
    x: &[f32],
    batch: usize,
    grid: usize,
    dim: usize,
    window: usize,
    sigma: f32,
) -> Result<()> {
    ensure!(
        window % 2 == 1,
        "aggregate: window {window} must be odd and positive"
    );
    ensure!(
        sigma.is_finite() && sigma > 0.0,
        "aggregate: sigma {sigma} must be positive and finite"
    );
    let tokens = grid * grid + 1;
    check_len("aggregate", "x", x.len(), &[batch, tokens, dim])?;
    check_len("aggregate", "out", out.len(), &[batch, tokens, dim])?;
    if window == 1 || out.is_empty() {
        out.copy_from_slice(x);
        return Ok(());
    }
    let kernel = window_kernel(window, sigma);
    let half = window / 2;
    for (dst, src) in out
        .chunks_exact_mut(tokens * dim)
        .zip(x.chunks_exact(tokens * dim))
    {
        let (cls_out, patches_out) = dst.split_at_mut(dim);
        cls_out.copy_from_slice(&src[..dim]);
        let patches = &src[dim..];
        patches_out
            .par_chunks_mut(grid * dim)
            .enumerate()
            .for_each(|(h, row)| {
                row.fill(0.0);
                for (w, o) in row.chunks_exact_mut(dim).enumerate() {
                    for ki in 0..window {
                        let Some(hh) = (h + ki).checked_sub(half).filter(|&v| v < grid) else {
                            continue;
                        };
                        for kj in 0..window {
                            let Some(ww) = (w + kj).checked_sub(half).filter(|&v| v < grid) else {
                                continue;
                            };
                            let t = hh * grid + ww;
                            axpy(
                                o,
                                kernel[ki * window + kj],
                                &patches[t * dim..(t + 1) * dim],
                            );
                        }
                    }
                }
            });
    }
    Ok(())
}
