//! Scores (SPEC §6).
//!
//! `state_logits`: `z: [rows, dim]`, `text: [2, dim]` (L2-normalised), `logits: [rows, 2]`;
//! `logits[r, s] += <z[r], text[s]> / |z[r]| · scale` (a zero row gives NaN, as torch's
//! `z / z.norm()` does). f32 dot products with 16 interleaved accumulators.
//!
//! `abnormal_probability`: `probs[r] = softmax(logits[r])[1] = 1 / (1 + e^(l0 − l1))`, evaluated
//! as `e / (1 + e)`, `e = e^(l1 − l0)`, when `l1 < l0` so that the exponent never overflows.

use anyhow::Result;
use rayon::prelude::*;

use super::check_len;
use super::vector::{dot, multiversion};

const STATES: usize = 2;
/// Rows per rayon task for the row-wise score ops.
const MIN_ELEMS_PER_TASK: usize = 16 * 1024;

multiversion! {
    /// `(<z, t0>, <z, t1>, <z, z>)`.
    fn dots(z: &[f32], t0: &[f32], t1: &[f32]) -> (f32, f32, f32) {
        (dot(z, t0), dot(z, t1), dot(z, z))
    }
}

pub(crate) fn state_logits(
    logits: &mut [f32],
    z: &[f32],
    text: &[f32],
    rows: usize,
    dim: usize,
    scale: f32,
) -> Result<()> {
    check_len("state_logits", "z", z.len(), &[rows, dim])?;
    check_len("state_logits", "text", text.len(), &[STATES, dim])?;
    check_len("state_logits", "logits", logits.len(), &[rows, STATES])?;
    if logits.is_empty() {
        return Ok(());
    }
    let (t0, t1) = text.split_at(dim);
    if dim == 0 {
        // Every row is the zero vector: 0 / |0| is NaN, as in torch.
        logits.iter_mut().for_each(|l| *l += f32::NAN);
        return Ok(());
    }
    logits
        .par_chunks_mut(STATES)
        .zip(z.par_chunks(dim))
        .with_min_len(MIN_ELEMS_PER_TASK.div_ceil(dim))
        .for_each(|(l, zr)| {
            let (d0, d1, sq) = dots(zr, t0, t1);
            let inv = scale / sq.sqrt();
            l[0] += d0 * inv;
            l[1] += d1 * inv;
        });
    Ok(())
}

pub(crate) fn abnormal_probability(probs: &mut [f32], logits: &[f32], rows: usize) -> Result<()> {
    check_len(
        "abnormal_probability",
        "logits",
        logits.len(),
        &[rows, STATES],
    )?;
    check_len("abnormal_probability", "probs", probs.len(), &[rows])?;
    probs
        .par_iter_mut()
        .zip(logits.par_chunks(STATES))
        .with_min_len(MIN_ELEMS_PER_TASK)
        .for_each(|(p, l)| {
            let d = l[1] - l[0];
            *p = if d >= 0.0 {
                1.0 / (1.0 + (-d).exp())
            } else {
                let e = d.exp();
                e / (1.0 + e)
            };
        });
    Ok(())
}
