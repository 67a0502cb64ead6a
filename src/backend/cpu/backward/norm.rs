//! `layer_norm_backward`: for each row of `x, dy: [rows, dim]` (`gamma: [dim]`), with
//! `x̂ = (x − mean)·rstd`, `rstd = 1/sqrt(var + eps)` recomputed exactly as the forward does:
//!
//! ```text
//! g      = dy·gamma
//! dx    += rstd · (g − mean(g) − x̂·mean(g·x̂))
//! dgamma += Σ_rows dy·x̂,   dbeta += Σ_rows dy
//! ```
//!
//! Rows run in parallel; the parameter gradients are summed per fixed block of rows and the
//! block partials added in order, so the result does not depend on the thread count.

use anyhow::Result;
use rayon::prelude::*;

use super::super::check_len;
use super::super::vector::{sum, sum_sq_dev};

/// Rows per block of the parameter-gradient reduction (fixed: results are deterministic).
const BLOCK_ROWS: usize = 64;

/// `(x̂, rstd)` of one row, as the forward computes them.
fn normalise(x: &[f32], eps: f32, xhat: &mut [f32]) -> f32 {
    let n = x.len() as f32;
    let mean = sum(x) / n;
    let var = sum_sq_dev(x, mean) / n;
    let rstd = 1.0 / (var + eps).sqrt();
    for (h, &v) in xhat.iter_mut().zip(x) {
        *h = (v - mean) * rstd;
    }
    rstd
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_norm_backward(
    dx: Option<&mut [f32]>,
    dparams: Option<(&mut [f32], &mut [f32])>,
    dy: &[f32],
    x: &[f32],
    gamma: &[f32],
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<()> {
    let op = "layer_norm_backward";
    check_len(op, "x", x.len(), &[rows, dim])?;
    check_len(op, "dy", dy.len(), &[rows, dim])?;
    check_len(op, "gamma", gamma.len(), &[dim])?;
    if let Some(dx) = &dx {
        check_len(op, "dx", dx.len(), &[rows, dim])?;
    }
    if let Some((dg, db)) = &dparams {
        check_len(op, "dgamma", dg.len(), &[dim])?;
        check_len(op, "dbeta", db.len(), &[dim])?;
    }
    if rows == 0 || dim == 0 {
        return Ok(());
    }
    if let Some(dx) = dx {
        dx.par_chunks_mut(dim)
            .zip(x.par_chunks(dim).zip(dy.par_chunks(dim)))
            .for_each_init(
                || (vec![0f32; dim], vec![0f32; dim]),
                |(xhat, g), (dxr, (xr, dyr))| {
                    let rstd = normalise(xr, eps, xhat);
                    for ((gv, &d), &w) in g.iter_mut().zip(dyr).zip(gamma) {
                        *gv = d * w;
                    }
                    let n = dim as f32;
                    let mean_g = sum(g) / n;
                    let mean_gx = g.iter().zip(xhat.iter()).map(|(a, b)| a * b).sum::<f32>() / n;
                    for ((o, &gv), &h) in dxr.iter_mut().zip(g.iter()).zip(xhat.iter()) {
                        *o += rstd * (gv - mean_g - h * mean_gx);
                    }
                },
            );
    }
    if let Some((dgamma, dbeta)) = dparams {
        let partials: Vec<(Vec<f32>, Vec<f32>)> = x
            .par_chunks(BLOCK_ROWS * dim)
            .zip(dy.par_chunks(BLOCK_ROWS * dim))
            .map(|(xb, dyb)| {
                let mut xhat = vec![0f32; dim];
                let (mut pg, mut pb) = (vec![0f32; dim], vec![0f32; dim]);
                for (xr, dyr) in xb.chunks_exact(dim).zip(dyb.chunks_exact(dim)) {
                    normalise(xr, eps, &mut xhat);
                    for (((a, b), &d), &h) in pg.iter_mut().zip(pb.iter_mut()).zip(dyr).zip(&xhat) {
                        *a += d * h;
                        *b += d;
                    }
                }
                (pg, pb)
            })
            .collect();
        for (pg, pb) in partials {
            dgamma.iter_mut().zip(&pg).for_each(|(o, v)| *o += v);
            dbeta.iter_mut().zip(&pb).for_each(|(o, v)| *o += v);
        }
    }
    Ok(())
}
