//! The AVX-512 attention kernel: flash-style (online softmax over key blocks), scores never
//! leave L1/L2, queries in vector lanes so that every softmax reduction is vertical.
//!
//! Per (image, head), `K` is copied to `[tokens', head_dim]` and `V` to `[tokens', dv]`
//! (`tokens'` = tokens rounded up to [`MK`], `dv` = `head_dim` rounded up to [`DV`], padding 0).
//! Each task owns [`QB`] query rows `q0..q0+QB` and keeps, in L1-sized scratch:
//! - `Qᵀ: [head_dim, QB]`, pre-scaled by `log2(e)/sqrt(head_dim)` so that the softmax is a
//!   base-2 exponential (rows past `tokens` are 0);
//! - `Oᵀ: [dv, QB]`, the unnormalised output, with the running maximum `m` and sum `l` per query.
//!
//! For each block of at most [`KB`] keys `j0..j1` (`j1 ≤ q0 + QB` when causal):
//! 1. `Sᵀ[j, i] = Σ_c K[j, c]·Qᵀ[c, i]`: an `MK x QB` register tile per step (broadcast `K`,
//!    vector loads of `Qᵀ`); invisible keys (`j ≥ tokens`, or `j > q0 + i` when causal) are
//!    masked out of everything below;
//! 2. `m' = max(m, max_j Sᵀ[j, ·])`, `Pᵀ[j, ·] = 2^(Sᵀ[j, ·] − m')` (0 where masked) in place,
//!    `α = 2^(m − m')`, `l = α·l + Σ_j Pᵀ[j, ·]`, `m = m'`;
//! 3. `Oᵀ = α·Oᵀ + Vᵀ·Pᵀ`: a `DV x QB` register tile per step (broadcast `V`, vector loads of
//!    `Pᵀ`), `dv / DV` steps.
//!
//! Finally `out[q0 + i, c] = Oᵀ[c, i] / l_i` for the real rows. Key 0 is visible to every query
//! and lies in the first block, so `m` is finite from then on and no `−∞ − −∞` ever occurs.
//! `2^x` is `scalef(p(f), n)` with `n = round(x)`, `f = x − n ∈ [−½, ½]` and `p` the degree-7
//! Taylor polynomial (relative error < 1e-8 before rounding; `p(0) = 1` exactly), `x` clamped
//! below at −125 (results stay normal).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rayon::prelude::*;

use super::super::SharedOut;

/// Queries per task: three zmm of f32 lanes.
const QB: usize = 48;
/// Vectors per query block.
const QV: usize = QB / 16;
/// Keys per `Sᵀ` register tile (`MK·QV` = 24 accumulators).
const MK: usize = 8;
/// Output dimensions per `Oᵀ` register tile (`DV·QV` = 24 accumulators).
const DV: usize = 8;
/// Keys per softmax block: `Sᵀ` is `KB x QB` f32 (24 KiB).
const KB: usize = 128;

/// Whether this CPU runs [`attention`].
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Problem shape shared by every task of one call.
#[derive(Clone, Copy)]
struct Dims {
    tokens: usize,
    head_dim: usize,
    /// `heads·head_dim`: the row stride of `out`, a third of the row stride of `qkv`.
    width: usize,
    /// `head_dim` rounded up to [`DV`]: the row stride of the packed `V`.
    dv: usize,
    causal: bool,
}

/// One head's `K: [tokens', head_dim]` and `V: [tokens', dv]`, zero-padded (module docs).
struct HeadKv {
    k: Vec<f32>,
    v: Vec<f32>,
}

impl HeadKv {
    fn fill(&mut self, qkv_head: &[f32], d: Dims) {
        let rows = d.tokens.next_multiple_of(MK);
        let ld = 3 * d.width;
        self.k.clear();
        self.k.resize(rows * d.head_dim, 0.0);
        self.v.clear();
        self.v.resize(rows * d.dv, 0.0);
        for j in 0..d.tokens {
            let src = &qkv_head[j * ld..];
            self.k[j * d.head_dim..(j + 1) * d.head_dim]
                .copy_from_slice(&src[d.width..d.width + d.head_dim]);
            self.v[j * d.dv..j * d.dv + d.head_dim]
                .copy_from_slice(&src[2 * d.width..2 * d.width + d.head_dim]);
        }
    }
}

/// Per-task scratch (module docs).
#[derive(Default)]
struct Scratch {
    qt: Vec<f32>,
    st: Vec<f32>,
    ot: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

pub(super) fn attention(
    out: &mut [f32],
    qkv: &[f32],
    batch: usize,
    (tokens, heads, head_dim): (usize, usize, usize),
    causal: bool,
) {
    let width = heads * head_dim;
    let d = Dims {
        tokens,
        head_dim,
        width,
        dv: head_dim.next_multiple_of(DV),
        causal,
    };
    let blocks = tokens.div_ceil(QB);
    let dst = SharedOut::new(out);
    (0..batch * heads).into_par_iter().for_each_init(
        || HeadKv {
            k: Vec::new(),
            v: Vec::new(),
        },
        |kv, bh| {
            let (b, h) = (bh / heads, bh % heads);
            let q_head = &qkv[b * tokens * 3 * width + h * head_dim..];
            kv.fill(q_head, d);
            let out_head = dst.offset(b * tokens * width + h * head_dim);
            let kv = &*kv;
            (0..blocks)
                .into_par_iter()
                .for_each_init(Scratch::default, |s, blk| {
                    // SAFETY: `available()` was checked by the caller; rows `blk·QB..` of this
                    // head's output belong to this task alone.
                    unsafe { query_block(out_head, q_head, kv, s, blk * QB, d) }
                });
        },
    );
}

/// `2^x` (module docs), for `x ≤ 0` or NaN-free inputs below 128.
#[inline(always)]
unsafe fn exp2(x: __m512) -> __m512 {
    const C: [f32; 7] = [
        std::f32::consts::LN_2,
        0.240_226_5,
        0.055_504_11,
        0.009_618_129,
        0.001_333_355_8,
        1.540_353e-4,
        1.525_273_4e-5,
    ];
    let x = _mm512_max_ps(x, _mm512_set1_ps(-125.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
    let f = _mm512_sub_ps(x, n);
    let mut p = _mm512_set1_ps(C[6]);
    for &c in C[..6].iter().rev() {
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
    }
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0));
    _mm512_scalef_ps(p, n)
}

/// Lanes of query vector `qv` that see key `j` (module docs, step 1).
#[inline(always)]
unsafe fn visible(j: usize, q0: usize, qv: usize, d: Dims) -> __mmask16 {
    if j >= d.tokens {
        return 0;
    }
    if !d.causal {
        return 0xFFFF;
    }
    // Lane t holds query q0 + 16·qv + t, which sees key j iff j ≤ q0 + 16·qv + t.
    let first = q0 + 16 * qv;
    if j <= first {
        0xFFFF
    } else if j > first + 15 {
        0
    } else {
        0xFFFFu16 << (j - first)
    }
}

/// `Sᵀ[jj, ·] = Σ_c K[jj, c]·Qᵀ[c, ·]` for `MK` keys (step 1).
#[inline(always)]
unsafe fn scores_tile(st: *mut f32, qt: *const f32, k: *const f32, head_dim: usize) {
    let mut acc = [[_mm512_setzero_ps(); QV]; MK];
    for c in 0..head_dim {
        let q: [__m512; QV] = std::array::from_fn(|v| _mm512_loadu_ps(qt.add(c * QB + 16 * v)));
        for (jj, row) in acc.iter_mut().enumerate() {
            let kb = _mm512_set1_ps(*k.add(jj * head_dim + c));
            for (a, &qv) in row.iter_mut().zip(&q) {
                *a = _mm512_fmadd_ps(qv, kb, *a);
            }
        }
    }
    for (jj, row) in acc.iter().enumerate() {
        for (v, &a) in row.iter().enumerate() {
            _mm512_storeu_ps(st.add(jj * QB + 16 * v), a);
        }
    }
}

/// `Oᵀ[c0.., ·] = α·Oᵀ[c0.., ·] + Σ_j V[j, c0..c0+DV]·Pᵀ[j, ·]` over `keys` keys (step 3).
#[inline(always)]
unsafe fn output_tile(
    ot: *mut f32,
    pt: *const f32,
    v: *const f32,
    dv: usize,
    keys: usize,
    alpha: [__m512; QV],
) {
    let mut acc: [[__m512; QV]; DV] = std::array::from_fn(|c| {
        std::array::from_fn(|q| _mm512_mul_ps(_mm512_loadu_ps(ot.add(c * QB + 16 * q)), alpha[q]))
    });
    for j in 0..keys {
        let p: [__m512; QV] = std::array::from_fn(|q| _mm512_loadu_ps(pt.add(j * QB + 16 * q)));
        for (c, row) in acc.iter_mut().enumerate() {
            let vb = _mm512_set1_ps(*v.add(j * dv + c));
            for (a, &pq) in row.iter_mut().zip(&p) {
                *a = _mm512_fmadd_ps(pq, vb, *a);
            }
        }
    }
    for (c, row) in acc.iter().enumerate() {
        for (q, &a) in row.iter().enumerate() {
            _mm512_storeu_ps(ot.add(c * QB + 16 * q), a);
        }
    }
}

/// Steps 2 (softmax of the block `Sᵀ[..keys]` in place) for keys `j0..j0+keys`; returns `α`.
#[inline(always)]
unsafe fn softmax_block(
    st: *mut f32,
    m: *mut f32,
    l: *mut f32,
    (q0, j0, keys): (usize, usize, usize),
    masked: bool,
    d: Dims,
) -> [__m512; QV] {
    std::array::from_fn(|q| {
        let col = st.add(16 * q);
        let m_old = _mm512_loadu_ps(m.add(16 * q));
        let mut mx = m_old;
        for j in 0..keys {
            let s = _mm512_loadu_ps(col.add(j * QB));
            mx = if masked {
                _mm512_mask_max_ps(mx, visible(j0 + j, q0, q, d), mx, s)
            } else {
                _mm512_max_ps(mx, s)
            };
        }
        let mut sum = _mm512_setzero_ps();
        for j in 0..keys {
            let s = _mm512_loadu_ps(col.add(j * QB));
            let mut p = exp2(_mm512_sub_ps(s, mx));
            if masked {
                p = _mm512_maskz_mov_ps(visible(j0 + j, q0, q, d), p);
            }
            _mm512_storeu_ps(col.add(j * QB), p);
            sum = _mm512_add_ps(sum, p);
        }
        let alpha = exp2(_mm512_sub_ps(m_old, mx));
        let l_old = _mm512_loadu_ps(l.add(16 * q));
        _mm512_storeu_ps(l.add(16 * q), _mm512_fmadd_ps(l_old, alpha, sum));
        _mm512_storeu_ps(m.add(16 * q), mx);
        alpha
    })
}

/// Query rows `q0..q0 + QB` (those below `tokens`) of one head, as in the module docs.
#[target_feature(enable = "avx512f")]
unsafe fn query_block(
    out_head: SharedOut,
    q_head: &[f32],
    kv: &HeadKv,
    s: &mut Scratch,
    q0: usize,
    d: Dims,
) {
    let (hd, dv) = (d.head_dim, d.dv);
    let rows = QB.min(d.tokens - q0);
    let ld = 3 * d.width;
    let q_scale = std::f32::consts::LOG2_E / (hd as f32).sqrt();
    s.qt.clear();
    s.qt.resize(hd * QB, 0.0);
    for i in 0..rows {
        let q_row = &q_head[(q0 + i) * ld..(q0 + i) * ld + hd];
        for (c, &x) in q_row.iter().enumerate() {
            s.qt[c * QB + i] = x * q_scale;
        }
    }
    s.st.resize(KB * QB, 0.0);
    s.ot.clear();
    s.ot.resize(dv * QB, 0.0);
    s.m.clear();
    s.m.resize(QB, f32::NEG_INFINITY);
    s.l.clear();
    s.l.resize(QB, 0.0);
    let kv_end = if d.causal {
        d.tokens.min(q0 + QB)
    } else {
        d.tokens
    };
    let (qt, st, ot) = (s.qt.as_ptr(), s.st.as_mut_ptr(), s.ot.as_mut_ptr());
    let mut j0 = 0;
    while j0 < kv_end {
        let keys = KB.min(kv_end - j0).next_multiple_of(MK);
        for jj in (0..keys).step_by(MK) {
            scores_tile(st.add(jj * QB), qt, kv.k.as_ptr().add((j0 + jj) * hd), hd);
        }
        // Keys past `tokens` (the padding), or past the first query when causal, need masks.
        let masked = j0 + keys > d.tokens || (d.causal && j0 + keys > q0 + 1);
        let alpha = softmax_block(
            st,
            s.m.as_mut_ptr(),
            s.l.as_mut_ptr(),
            (q0, j0, keys),
            masked,
            d,
        );
        let v = kv.v.as_ptr().add(j0 * dv);
        for c0 in (0..dv).step_by(DV) {
            output_tile(ot.add(c0 * QB), st, v.add(c0), dv, keys, alpha);
        }
        j0 += keys;
    }
    for i in 0..rows {
        let inv = 1.0 / s.l[i];
        let o = out_head.at((q0 + i) * d.width);
        for c in 0..hd {
            // SAFETY: output row q0+i of this head (`head_dim` elements at stride `width`)
            // belongs to this task alone.
            *o.add(c) = s.ot[c * QB + i] * inv;
        }
    }
}
