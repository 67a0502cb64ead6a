//! Backward of the score ops (SPEC §6).
//!
//! `state_logits_backward` (`z, dz: [rows, dim]`, `text, dtext: [2, dim]`, `dlogits: [rows, 2]`),
//! with `ẑ = z/|z|` and the forward `logits[r, s] += scale·<ẑ[r], text[s]>`:
//!
//! ```text
//! g[r]      = scale · Σ_s dlogits[r, s] · text[s]
//! dz[r]    += (g[r] − <g[r], ẑ[r]> ẑ[r]) / |z[r]|
//! dtext[s] += scale · Σ_r dlogits[r, s] · ẑ[r]
//! ```
//!
//! `abnormal_probability_backward` (`dlogits: [rows, 2]`, `dprobs: [rows]`): `p = σ(l1 − l0)`,
//! `dlogits[r] = (−dprobs[r]·p(1 − p), dprobs[r]·p(1 − p))`.
//!
//! `dtext` is summed per fixed block of rows and the partials added in order (deterministic).

use anyhow::Result;
use rayon::prelude::*;

use super::super::check_len;
use super::super::vector::dot;

const STATES: usize = 2;
const BLOCK_ROWS: usize = 256;

#[allow(clippy::too_many_arguments)]
pub(crate) fn state_logits_backward(
    dz: &mut [f32],
    dtext: &mut [f32],
    dlogits: &[f32],
    z: &[f32],
    text: &[f32],
    rows: usize,
    dim: usize,
    scale: f32,
) -> Result<()> {
    let op = "state_logits_backward";
    check_len(op, "z", z.len(), &[rows, dim])?;
    check_len(op, "dz", dz.len(), &[rows, dim])?;
    check_len(op, "text", text.len(), &[STATES, dim])?;
    check_len(op, "dtext", dtext.len(), &[STATES, dim])?;
    check_len(op, "dlogits", dlogits.len(), &[rows, STATES])?;
    if rows == 0 || dim == 0 {
        return Ok(());
    }
    let (t0, t1) = text.split_at(dim);
    let partials: Vec<Vec<f32>> = dz
        .par_chunks_mut(BLOCK_ROWS * dim)
        .zip(z.par_chunks(BLOCK_ROWS * dim))
        .zip(dlogits.par_chunks(BLOCK_ROWS * STATES))
        .map(|((dzb, zb), dlb)| {
            let mut part = vec![0f32; STATES * dim];
            let mut g = vec![0f32; dim];
            for ((dzr, zr), dl) in dzb
                .chunks_exact_mut(dim)
                .zip(zb.chunks_exact(dim))
                .zip(dlb.chunks_exact(STATES))
            {
                let inv = 1.0 / dot(zr, zr).sqrt();
                let (a0, a1) = (scale * dl[0], scale * dl[1]);
                for ((gv, &u), &v) in g.iter_mut().zip(t0).zip(t1) {
                    *gv = a0 * u + a1 * v;
                }
                let gz = dot(&g, zr) * inv;
                for ((o, &gv), &zv) in dzr.iter_mut().zip(&g).zip(zr) {
                    *o += (gv - gz * zv * inv) * inv;
                }
                let (p0, p1) = part.split_at_mut(dim);
                for ((x0, x1), &zv) in p0.iter_mut().zip(p1.iter_mut()).zip(zr) {
                    *x0 += a0 * zv * inv;
                    *x1 += a1 * zv * inv;
                }
            }
            part
        })
        .collect();
    for p in partials {
        dtext.iter_mut().zip(&p).for_each(|(o, v)| *o += v);
    }
    Ok(())
}

pub(crate) fn abnormal_probability_backward(
    dlogits: &mut [f32],
    dprobs: &[f32],
    logits: &[f32],
    rows: usize,
) -> Result<()> {
    let op = "abnormal_probability_backward";
    check_len(op, "logits", logits.len(), &[rows, STATES])?;
    check_len(op, "dlogits", dlogits.len(), &[rows, STATES])?;
    check_len(op, "dprobs", dprobs.len(), &[rows])?;
    dlogits
        .par_chunks_mut(STATES)
        .zip(logits.par_chunks(STATES).zip(dprobs.par_iter()))
        .with_min_len(4096)
        .for_each(|(d, (l, &dp))| {
            let p = 1.0 / (1.0 + (l[0] - l[1]).exp());
            let g = dp * p * (1.0 - p);
            d[0] = -g;
            d[1] = g;
        });
    Ok(())
}
