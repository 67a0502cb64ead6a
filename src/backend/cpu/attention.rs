//! `attention`: multi-head scaled dot-product attention over packed projections.
//!
//! Shapes: `qkv: [batch, tokens, 3, heads, head_dim]`, `out: [batch, tokens, heads, head_dim]`.
//! For each image `b` and head `h`, with `Q, K, V: [tokens, head_dim]` strided views into `qkv`
//! (row stride `3·heads·head_dim`):
//!
//! ```text
//! out_h = softmax(Q Kᵀ / sqrt(head_dim) + mask) V,   mask[i, j] = −∞ for j > i when causal
//! ```
//!
//! Block-wise, never materialising more than one `QUERY_BLOCK x tokens` score tile per task:
//! a task is one (image, head, block of query rows `q0..q0+m`), all tasks run in parallel on
//! rayon, and each runs
//! 1. `S = (Q[q0..q0+m] · K[..kv]ᵀ) / sqrt(head_dim)` with gemm straight from the strided views
//!    (`kv = tokens`, or `q0 + m` when causal: later keys are masked for the whole block);
//! 2. per row, a stable softmax numerator in place: `S[i, j] = exp(S[i, j] − max_j S[i, ·])`
//!    over the visible keys (`j ≤ q0 + i` when causal; the masked tail is set to 0), keeping
//!    the row sum `l_i`;
//! 3. `out[q0 + i] = (S · V[..kv])[i] / l_i`: gemm writes straight into the strided output
//!    rows, then each row is scaled by `1 / l_i` (cheaper than normalising `S`).

use anyhow::Result;
use rayon::prelude::*;

use super::vector::{exp_shifted_sum, max_of, scale};
use super::{check_len, SharedOut};

/// Query rows per task: a `128 x 1370` f32 score tile (~700 KB) stays in a 1 MB L2.
const QUERY_BLOCK: usize = 128;

pub(crate) fn attention(
    out: &mut [f32],
    qkv: &[f32],
    batch: usize,
    tokens: usize,
    heads: usize,
    head_dim: usize,
    causal: bool,
) -> Result<()> {
    check_len(
        "attention",
        "qkv",
        qkv.len(),
        &[batch, tokens, 3, heads, head_dim],
    )?;
    check_len(
        "attention",
        "out",
        out.len(),
        &[batch, tokens, heads, head_dim],
    )?;
    if out.is_empty() {
        return Ok(());
    }
    let width = heads * head_dim;
    let qkv_ld = 3 * width;
    let softmax_scale = 1.0 / (head_dim as f32).sqrt();
    let blocks = tokens.div_ceil(QUERY_BLOCK);
    let dst = SharedOut::new(out);
    (0..batch * heads * blocks).into_par_iter().for_each_init(
        || (Vec::<f32>::new(), Vec::<f32>::new()),
        |(scores, inv_sum), task| {
            let (b, h, blk) = (
                task / (heads * blocks),
                (task / blocks) % heads,
                task % blocks,
            );
            let q0 = blk * QUERY_BLOCK;
            let m = QUERY_BLOCK.min(tokens - q0);
            let kv = if causal { q0 + m } else { tokens };
            scores.resize(m * kv, 0.0);
            inv_sum.resize(m, 0.0);
            let base = b * tokens * qkv_ld + h * head_dim;
            let q = &qkv[base + q0 * qkv_ld..];
            let k = &qkv[base + width..];
            let v = &qkv[base + 2 * width..];
            // SAFETY: Q rows q0..q0+m and K rows 0..kv (each `head_dim` long, stride `qkv_ld`)
            // lie inside `qkv` (its length was checked); `scores` holds `m x kv`.
            unsafe {
                gemm::gemm(
                    m,
                    kv,
                    head_dim,
                    scores.as_mut_ptr(),
                    1,
                    kv as isize,
                    false,
                    q.as_ptr(),
                    1,
                    qkv_ld as isize,
                    k.as_ptr(),
                    qkv_ld as isize,
                    1,
                    0.0,
                    softmax_scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for (i, (row, inv)) in scores
                .chunks_exact_mut(kv)
                .zip(inv_sum.iter_mut())
                .enumerate()
            {
                let visible = if causal { q0 + i + 1 } else { kv };
                let (live, masked) = row.split_at_mut(visible);
                let mx = max_of(live);
                *inv = 1.0 / exp_shifted_sum(live, mx);
                masked.fill(0.0);
            }
            let o = dst.at((b * tokens + q0) * width + h * head_dim);
            // SAFETY: V rows 0..kv lie inside `qkv`; the output rows q0..q0+m of head `h` of
            // image `b` (stride `width`) lie inside `out` and belong to this task alone.
            unsafe {
                gemm::gemm(
                    m,
                    head_dim,
                    kv,
                    o,
                    1,
                    width as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    kv as isize,
                    v.as_ptr(),
                    1,
                    qkv_ld as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for (i, &s) in inv_sum.iter().enumerate() {
                // SAFETY: output row q0+i of this task's head, `head_dim` elements, unaliased.
                let row = unsafe { std::slice::from_raw_parts_mut(o.add(i * width), head_dim) };
                scale(row, s);
            }
        },
    );
    Ok(())
}
