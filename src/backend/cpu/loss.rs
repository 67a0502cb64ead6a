//! Training losses (SPEC §8), the reference of `kernels/loss.cu`.
//!
//! `focal_loss`, `l1_loss`: predictions `p[r, offset + c]` of `p: [rows, stride]` (a
//! [`ColumnBlock`]) against `t: [rows, cols]`, `n = rows·cols`, `loss: [1]` overwritten,
//! `dp: [rows, stride]` accumulated on the block's elements with `weight`.
//!
//! - `FL = (1/n)·Σ BCE·(1 − p_t)^4`, `p_t = p·t + (1 − p)(1 − t)` (f32, as torch forms it),
//!   `BCE = −(t·max(ln p, −100) + (1 − t)·max(ln(1 − p), −100))`; gradient
//!   `(dBCE·w + BCE·dw)/n` with torch's `dBCE = (p − t)/max(p(1 − p), 1e-12)` and
//!   `dw = −4(1 − p_t)³(2t − 1)`. Per element in f64, the sum in f64.
//! - `L1 = (1/n)·Σ |p − t|`, gradient `sign(p − t)/n` (0 at a tie).
//!
//! `patch_alignment`: `z: [batch, tokens, e]`, `masks: [batch, P]` (`P = tokens − 1`),
//! `state: [batch·2·e + 2 + batch·P]` = per image `a = Σ_{l=1} ẑ` and `n = Σ_{l=−1} ẑ`
//! (`[batch, 2, e]`, summed in f64, stored f32), the coefficients `(c₋, c₊)`, the row norms.
//! `ẑ = z/|z|` in f32 (`|z|` an f32 sum of squares). The value
//! `max(0, Σ_b 2 a·n / Σ_b 2|A||N| − Σ_b (a·a + n·n) / Σ_b (|A|² + |N|²))` from the stored
//! (f32) sums in f64, so that every backend derives it from the same numbers.
//! `patch_alignment_backward`: `dz[b, 1 + i] += (g − <g, ẑ>ẑ)/|z|`,
//! `g = 2·weight·(c₋·cross + c₊·same)` (`cross`/`same` the other/own class sum of image `b`).

use anyhow::{ensure, Result};

use super::check_len;
use crate::backend::{patch_alignment_state_len, ColumnBlock};

/// Focal-loss exponent γ.
pub const FOCAL_GAMMA: i32 = 4;
/// torch's clamp of each BCE log term.
const LOG_CLAMP: f64 = -100.0;
/// torch's floor of `p(1 − p)` in the BCE backward.
const BCE_GRAD_EPS: f64 = 1e-12;

/// `(state length, offset of (c₋, c₊), offset of the norms)` of a patch-alignment state.
pub(crate) fn alignment_state_layout(
    batch: usize,
    patches: usize,
    e: usize,
) -> (usize, usize, usize) {
    let coef = batch * 2 * e;
    (patch_alignment_state_len(batch, patches, e), coef, coef + 2)
}

/// Checks a loss op's buffers against `block`; returns `n`.
fn check_block(
    op: &str,
    loss: usize,
    dp: usize,
    p: usize,
    t: usize,
    b: ColumnBlock,
) -> Result<usize> {
    ensure!(
        b.cols > 0 && b.rows > 0 && b.offset + b.cols <= b.stride,
        "{op}: columns {}..{} of rows of {} ({} rows) is not a non-empty block",
        b.offset,
        b.offset + b.cols,
        b.stride,
        b.rows
    );
    check_len(op, "loss", loss, &[1])?;
    check_len(op, "p", p, &[b.rows, b.stride])?;
    check_len(op, "dp", dp, &[b.rows, b.stride])?;
    check_len(op, "t", t, &[b.rows, b.cols])?;
    Ok(b.rows * b.cols)
}

/// One element's `(BCE·w, ∂(BCE·w)/∂p)` of the focal loss, in f64.
pub(crate) fn focal_term(p32: f32, t32: f32) -> (f64, f64) {
    let (p, t) = (f64::from(p32), f64::from(t32));
    let bce = -(t * p.ln().max(LOG_CLAMP) + (1.0 - t) * (1.0 - p).ln().max(LOG_CLAMP));
    let pt = f64::from(p32 * t32 + (1.0 - p32) * (1.0 - t32));
    let w = (1.0 - pt).powi(FOCAL_GAMMA);
    let dbce = (p - t) / (p * (1.0 - p)).max(BCE_GRAD_EPS);
    let dw = -f64::from(FOCAL_GAMMA) * (1.0 - pt).powi(FOCAL_GAMMA - 1) * (2.0 * t - 1.0);
    (bce * w, dbce * w + bce * dw)
}

/// The mean of `term` over the block, accumulating `weight·∂/∂p` (each divided by `n` and
/// rounded to f32 first) into `dp`.
fn block_loss(
    dp: &mut [f32],
    p: &[f32],
    t: &[f32],
    b: ColumnBlock,
    weight: f32,
    term: impl Fn(f32, f32) -> (f64, f64),
) -> f64 {
    let n = (b.rows * b.cols) as f64;
    let mut value = 0.0;
    for r in 0..b.rows {
        let at = r * b.stride + b.offset;
        let (pr, dpr) = (&p[at..at + b.cols], &mut dp[at..at + b.cols]);
        for ((&pv, &tv), d) in pr.iter().zip(&t[r * b.cols..(r + 1) * b.cols]).zip(dpr) {
            let (v, g) = term(pv, tv);
            value += v;
            *d += weight * (g / n) as f32;
        }
    }
    value / n
}

pub(crate) fn focal_loss(
    loss: &mut [f32],
    dp: &mut [f32],
    p: &[f32],
    t: &[f32],
    block: ColumnBlock,
    weight: f32,
) -> Result<()> {
    check_block("focal_loss", loss.len(), dp.len(), p.len(), t.len(), block)?;
    loss[0] = block_loss(dp, p, t, block, weight, focal_term) as f32;
    Ok(())
}

/// One element's `(|p − t|, sign(p − t))`.
pub(crate) fn l1_term(p: f32, t: f32) -> (f64, f64) {
    let d = p - t;
    let s = if d > 0.0 {
        1.0
    } else if d < 0.0 {
        -1.0
    } else {
        0.0
    };
    (f64::from(d.abs()), s)
}

pub(crate) fn l1_loss(
    loss: &mut [f32],
    dp: &mut [f32],
    p: &[f32],
    t: &[f32],
    block: ColumnBlock,
    weight: f32,
) -> Result<()> {
    check_block("l1_loss", loss.len(), dp.len(), p.len(), t.len(), block)?;
    loss[0] = block_loss(dp, p, t, block, weight, l1_term) as f32;
    Ok(())
}

/// `l = −1` where `M = 0`, else `M`.
fn patch_label(m: f32) -> f32 {
    if m == 0.0 {
        -1.0
    } else {
        m
    }
}

fn check_alignment(
    op: &str,
    state: usize,
    z: usize,
    masks: usize,
    batch: usize,
    tokens: usize,
    e: usize,
) -> Result<usize> {
    ensure!(
        batch > 0 && tokens > 1,
        "{op}: {batch} images of {tokens} tokens (need at least one image and one patch token)"
    );
    let patches = tokens - 1;
    check_len(op, "z", z, &[batch, tokens, e])?;
    check_len(op, "masks", masks, &[batch, patches])?;
    check_len(
        op,
        "state",
        state,
        &[alignment_state_layout(batch, patches, e).0],
    )?;
    Ok(patches)
}

fn dot(x: &[f32], y: &[f32]) -> f64 {
    x.iter()
        .zip(y)
        .map(|(&u, &v)| f64::from(u) * f64::from(v))
        .sum()
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn patch_alignment(
    loss: &mut [f32],
    state: &mut [f32],
    z: &[f32],
    masks: &[f32],
    batch: usize,
    tokens: usize,
    e: usize,
) -> Result<()> {
    let patches = check_alignment(
        "patch_alignment",
        state.len(),
        z.len(),
        masks.len(),
        batch,
        tokens,
        e,
    )?;
    check_len("patch_alignment", "loss", loss.len(), &[1])?;
    let (_, coef, norms) = alignment_state_layout(batch, patches, e);
    let (mut neg_sum, mut neg_count, mut pos_sum, mut pos_count) = (0.0, 0.0, 0.0, 0.0);
    for b in 0..batch {
        let (mut a, mut n) = (vec![0f64; e], vec![0f64; e]);
        let (mut na, mut nn) = (0.0, 0.0);
        for i in 0..patches {
            let row = &z[(b * tokens + 1 + i) * e..(b * tokens + 2 + i) * e];
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            state[norms + b * patches + i] = norm;
            let l = patch_label(masks[b * patches + i]);
            let (acc, cnt) = if l == 1.0 {
                (&mut a, &mut na)
            } else if l == -1.0 {
                (&mut n, &mut nn)
            } else {
                continue;
            };
            *cnt += 1.0;
            acc.iter_mut()
                .zip(row)
                .for_each(|(s, &v)| *s += f64::from(v / norm));
        }
        let (sa, sn) = state[b * 2 * e..(b + 1) * 2 * e].split_at_mut(e);
        sa.iter_mut().zip(&a).for_each(|(s, &v)| *s = v as f32);
        sn.iter_mut().zip(&n).for_each(|(s, &v)| *s = v as f32);
        let (sa, sn) = (&*sa, &*sn);
        neg_sum += 2.0 * dot(sa, sn);
        neg_count += 2.0 * na * nn;
        pos_sum += dot(sa, sa) + dot(sn, sn);
        pos_count += na * na + nn * nn;
    }
    let mean = |sum: f64, count: f64| if count > 0.0 { sum / count } else { 0.0 };
    let raw = mean(neg_sum, neg_count) - mean(pos_sum, pos_count);
    let inv = |count: f64| if count > 0.0 { 1.0 / count } else { 0.0 };
    let (value, cn, cp) = if !masks.contains(&0.0) || raw < 0.0 {
        (0.0, 0.0, 0.0)
    } else {
        (raw, inv(neg_count), -inv(pos_count))
    };
    loss[0] = value as f32;
    state[coef] = cn as f32;
    state[coef + 1] = cp as f32;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn patch_alignment_backward(
    dz: &mut [f32],
    state: &[f32],
    z: &[f32],
    masks: &[f32],
    batch: usize,
    tokens: usize,
    e: usize,
    weight: f32,
) -> Result<()> {
    let op = "patch_alignment_backward";
    let patches = check_alignment(op, state.len(), z.len(), masks.len(), batch, tokens, e)?;
    check_len(op, "dz", dz.len(), &[batch, tokens, e])?;
    let (_, coef, norms) = alignment_state_layout(batch, patches, e);
    let w = f64::from(weight);
    let (cn, cp) = (f64::from(state[coef]), f64::from(state[coef + 1]));
    if cn == 0.0 && cp == 0.0 {
        return Ok(());
    }
    let mut g = vec![0f32; e];
    for b in 0..batch {
        let (a, n) = state[b * 2 * e..(b + 1) * 2 * e].split_at(e);
        for i in 0..patches {
            let l = patch_label(masks[b * patches + i]);
            let (cross, same) = if l == 1.0 {
                (n, a)
            } else if l == -1.0 {
                (a, n)
            } else {
                continue;
            };
            // d(2 a·n)/dẑ_i = 2n for i in A, 2a for i in N; d(a·a + n·n)/dẑ_i = 2a or 2n.
            for ((gv, &c), &s) in g.iter_mut().zip(cross).zip(same) {
                *gv = (2.0 * w * (cn * f64::from(c) + cp * f64::from(s))) as f32;
            }
            let at = (b * tokens + 1 + i) * e;
            let zr = &z[at..at + e];
            let norm = state[norms + b * patches + i];
            let gz = g.iter().zip(zr).map(|(x, v)| x * v).sum::<f32>() / norm;
            for ((o, &gv), &zv) in dz[at..at + e].iter_mut().zip(&g).zip(zr) {
                *o += (gv - gz * zv / norm) / norm;
            }
        }
    }
    Ok(())
}
