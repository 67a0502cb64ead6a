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
//! On AVX-512 CPUs, [`flash`] runs it (online softmax over key blocks, scores kept in L1).
//! Elsewhere, block-wise over the gemm crate, never materialising more than one
//! `QUERY_BLOCK x tokens` score tile per task.
//! Rayon runs the (image, head) pairs in parallel; each copies its `K` as a contiguous `Kᵀ`
//! (`[head_dim, tokens]`) and its `V` as `[tokens, head_dim]` (the gemm crate packs the strided
//! views 2x slower than the copies cost), then runs its blocks of query rows `q0..q0+m` in
//! parallel, each as
//! 1. `S = (Q[q0..q0+m] · Kᵀ[.., ..kv]) / sqrt(head_dim)` with gemm, `Q` read in place
//!    (`kv = tokens`, or `q0 + m` when causal: later keys are masked for the whole block);
//! 2. per row, a stable softmax numerator in place: `S[i, j] = exp(S[i, j] − max_j S[i, ·])`
//!    over the visible keys (`j ≤ q0 + i` when causal; the masked tail is set to 0), keeping
//!    the row sum `l_i`;
//! 3. `out[q0 + i] = (S · V[..kv])[i] / l_i`: gemm writes straight into the strided output
//!    rows, then each row is scaled by `1 / l_i` (cheaper than normalising `S`).

mod flash;

use anyhow::Result;
use rayon::prelude::*;

use super::vector::{exp_shifted_sum, max_of, scale};
use super::{check_len, SharedOut};

/// Query rows per task: a `128 x 1370` f32 score tile (~700 KB) stays in a 1 MB L2.
const QUERY_BLOCK: usize = 128;

/// One head's keys and values, copied out of `qkv` into gemm-friendly contiguous layouts.
struct HeadKv {
    /// `Kᵀ: [head_dim, tokens]`.
    kt: Vec<f32>,
    /// `V: [tokens, head_dim]`.
    v: Vec<f32>,
}

impl HeadKv {
    fn fill(&mut self, qkv_head: &[f32], tokens: usize, head_dim: usize, width: usize) {
        let ld = 3 * width;
        self.kt.resize(head_dim * tokens, 0.0);
        self.v.resize(tokens * head_dim, 0.0);
        for (j, v_row) in self.v.chunks_exact_mut(head_dim).enumerate() {
            let k_row = &qkv_head[j * ld + width..j * ld + width + head_dim];
            for (c, &k) in k_row.iter().enumerate() {
                self.kt[c * tokens + j] = k;
            }
            v_row.copy_from_slice(&qkv_head[j * ld + 2 * width..j * ld + 2 * width + head_dim]);
        }
    }
}

/// Steps 1–3 of the module docs for query rows `q0..q0 + m` of one head.
#[allow(clippy::too_many_arguments)]
fn query_block(
    out_head: SharedOut,
    q_head: &[f32],
    kv_head: &HeadKv,
    scores: &mut Vec<f32>,
    inv_sum: &mut Vec<f32>,
    (q0, m): (usize, usize),
    (tokens, head_dim, width): (usize, usize, usize),
    causal: bool,
) {
    let kv = if causal { q0 + m } else { tokens };
    let qkv_ld = 3 * width;
    scores.resize(m * kv, 0.0);
    inv_sum.resize(m, 0.0);
    let q = &q_head[q0 * qkv_ld..];
    // SAFETY: Q rows q0..q0+m (`head_dim` long, stride `qkv_ld`) lie inside `q_head`, `Kᵀ` is
    // `head_dim x tokens` with `kv ≤ tokens`, and `scores` holds `m x kv`.
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
            kv_head.kt.as_ptr(),
            1,
            tokens as isize,
            0.0,
            1.0 / (head_dim as f32).sqrt(),
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
    let o = out_head.at(q0 * width);
    // SAFETY: `V` is `tokens x head_dim` with `kv ≤ tokens`; the output rows q0..q0+m of this
    // head (stride `width`) lie inside `out` and belong to this block alone.
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
            kv_head.v.as_ptr(),
            1,
            head_dim as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    for (i, &s) in inv_sum.iter().enumerate() {
        // SAFETY: output row q0+i of this head, `head_dim` elements, written by no other task.
        let row = unsafe { std::slice::from_raw_parts_mut(o.add(i * width), head_dim) };
        scale(row, s);
    }
}

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
    if flash::available() {
        flash::attention(out, qkv, batch, (tokens, heads, head_dim), causal);
        return Ok(());
    }
    gemm_attention(out, qkv, batch, (tokens, heads, head_dim), causal);
    Ok(())
}

/// The gemm-crate path of the module docs (CPUs without AVX-512).
fn gemm_attention(
    out: &mut [f32],
    qkv: &[f32],
    batch: usize,
    (tokens, heads, head_dim): (usize, usize, usize),
    causal: bool,
) {
    let width = heads * head_dim;
    let dims = (tokens, head_dim, width);
    let blocks = tokens.div_ceil(QUERY_BLOCK);
    let dst = SharedOut::new(out);
    (0..batch * heads).into_par_iter().for_each_init(
        || HeadKv {
            kt: Vec::new(),
            v: Vec::new(),
        },
        |kv_head, bh| {
            let (b, h) = (bh / heads, bh % heads);
            let q_head = &qkv[b * tokens * 3 * width + h * head_dim..];
            kv_head.fill(q_head, tokens, head_dim, width);
            let out_head = dst.offset(b * tokens * width + h * head_dim);
            let kv_head = &*kv_head;
            (0..blocks).into_par_iter().for_each_init(
                || (Vec::new(), Vec::new()),
                |(scores, inv_sum), blk| {
                    let q0 = blk * QUERY_BLOCK;
                    let rows = (q0, QUERY_BLOCK.min(tokens - q0));
                    query_block(
                        out_head, q_head, kv_head, scores, inv_sum, rows, dims, causal,
                    );
                },
            );
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-2, 2).
    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| {
                let h = (i ^ seed).wrapping_mul(0x9E37_79B1).rotate_left(13);
                (h.wrapping_mul(0x85EB_CA6B) >> 8) as f32 / (1u32 << 22) as f32 - 2.0
            })
            .collect()
    }

    /// The gemm path (the only one on CPUs without AVX-512) and the flash kernel agree.
    #[test]
    fn gemm_path_matches_flash_kernel() {
        if !flash::available() {
            return;
        }
        for (batch, tokens, heads, hd, causal) in [
            (1, 1370, 2, 64, false),
            (2, 77, 3, 64, true),
            (1, 50, 2, 24, true),
        ] {
            let qkv = values(batch * tokens * 3 * heads * hd, tokens as u32);
            let mut want = vec![f32::NAN; batch * tokens * heads * hd];
            let mut got = want.clone();
            flash::attention(&mut want, &qkv, batch, (tokens, heads, hd), causal);
            gemm_attention(&mut got, &qkv, batch, (tokens, heads, hd), causal);
            let worst = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "b{batch} t{tokens} h{heads}x{hd}: {worst}");
        }
    }
}
