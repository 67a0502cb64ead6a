//! `attention_backward`: the gradient of [`attention`](super::super::attention) with respect
//! to its packed input. Shapes: `qkv, dqkv: [batch, tokens, 3, heads, head_dim]`,
//! `dout: [batch, tokens, heads, head_dim]`. Per image and head, with `s = 1/sqrt(head_dim)`:
//!
//! ```text
//! P  = softmax(s·Q Kᵀ + mask)            (recomputed; causal: j > i masked)
//! dV = Pᵀ dO,   dP = dO Vᵀ,   dS = P ∘ (dP − rowsum(dP ∘ P))
//! dQ = s·dS K,  dK = s·dSᵀ Q
//! ```
//!
//! Rayon runs the (image, head) pairs in parallel; each copies its `Q, K, V, dO` into
//! contiguous `[tokens, head_dim]` arrays, holds `P` and `dS` (`tokens x tokens`) and writes its
//! own columns of `dqkv` (disjoint across tasks).

use anyhow::Result;
use rayon::prelude::*;

use super::super::vector::{exp_shifted_sum, max_of, scale};
use super::super::{check_len, SharedOut};
use super::matmul::gemm_raw;

#[derive(Default)]
struct Scratch {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    dout: Vec<f32>,
    p: Vec<f32>,
    ds: Vec<f32>,
}

/// Copies the `[tokens, head_dim]` strided view starting at `src[0]` (row stride `ld`).
fn gather(dst: &mut Vec<f32>, src: &[f32], tokens: usize, head_dim: usize, ld: usize) {
    dst.clear();
    for t in 0..tokens {
        dst.extend_from_slice(&src[t * ld..t * ld + head_dim]);
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    batch: usize,
    tokens: usize,
    heads: usize,
    head_dim: usize,
    causal: bool,
) -> Result<()> {
    let op = "attention_backward";
    let packed = [batch, tokens, 3, heads, head_dim];
    check_len(op, "qkv", qkv.len(), &packed)?;
    check_len(op, "dqkv", dqkv.len(), &packed)?;
    check_len(op, "dout", dout.len(), &[batch, tokens, heads, head_dim])?;
    if dqkv.is_empty() {
        return Ok(());
    }
    let width = heads * head_dim;
    let ld = 3 * width;
    let s = 1.0 / (head_dim as f32).sqrt();
    let (t, hd) = (tokens, head_dim);
    let dst = SharedOut::new(dqkv);
    (0..batch * heads)
        .into_par_iter()
        .for_each_init(Scratch::default, |sc, bh| {
            let (b, h) = (bh / heads, bh % heads);
            let base = b * t * ld + h * hd;
            gather(&mut sc.q, &qkv[base..], t, hd, ld);
            gather(&mut sc.k, &qkv[base + width..], t, hd, ld);
            gather(&mut sc.v, &qkv[base + 2 * width..], t, hd, ld);
            gather(&mut sc.dout, &dout[b * t * width + h * hd..], t, hd, width);
            sc.p.resize(t * t, 0.0);
            sc.ds.resize(t * t, 0.0);
            // SAFETY (every gemm_raw below): the operands are the contiguous scratch arrays
            // sized above ([t, hd] or [t, t]), and the dqkv destinations are this (b, h)'s
            // columns [.., hd) of rows b·t..(b+1)·t at row stride `ld`, inside `dqkv`.
            unsafe {
                gemm_raw(
                    sc.p.as_mut_ptr(),
                    t,
                    sc.q.as_ptr(),
                    sc.k.as_ptr(),
                    (t, hd, t),
                    false,
                    true,
                    false,
                    s,
                );
            }
            for (i, row) in sc.p.chunks_exact_mut(t).enumerate() {
                let visible = if causal { i + 1 } else { t };
                let (live, masked) = row.split_at_mut(visible);
                let mx = max_of(live);
                let total = exp_shifted_sum(live, mx);
                scale(live, 1.0 / total);
                masked.fill(0.0);
            }
            let out = dst.at(base);
            unsafe {
                // dV = Pᵀ dO
                gemm_raw(
                    out.add(2 * width),
                    ld,
                    sc.p.as_ptr(),
                    sc.dout.as_ptr(),
                    (t, t, hd),
                    true,
                    false,
                    false,
                    1.0,
                );
                // dP = dO Vᵀ
                gemm_raw(
                    sc.ds.as_mut_ptr(),
                    t,
                    sc.dout.as_ptr(),
                    sc.v.as_ptr(),
                    (t, hd, t),
                    false,
                    true,
                    false,
                    1.0,
                );
            }
            for (dsr, pr) in sc.ds.chunks_exact_mut(t).zip(sc.p.chunks_exact(t)) {
                let dot: f32 = dsr.iter().zip(pr).map(|(a, b)| a * b).sum();
                for (d, &p) in dsr.iter_mut().zip(pr) {
                    *d = p * (*d - dot);
                }
            }
            unsafe {
                // dQ = s·dS K
                gemm_raw(
                    out,
                    ld,
                    sc.ds.as_ptr(),
                    sc.k.as_ptr(),
                    (t, t, hd),
                    false,
                    false,
                    false,
                    s,
                );
                // dK = s·dSᵀ Q
                gemm_raw(
                    out.add(width),
                    ld,
                    sc.ds.as_ptr(),
                    sc.q.as_ptr(),
                    (t, t, hd),
                    true,
                    false,
                    false,
                    s,
                );
            }
        });
    Ok(())
}
