//! Reduced-precision `linear` (opt-in, [`super::Precision::Bf16`]):
//! `y[rows, out] (=|+=) epilogue(bf16(x)[rows, in] · bf16(W)ᵀ + bias[out])`, products
//! accumulated in f32 by the AVX-512 BF16 dot instruction `vdpbf16ps`
//! (`acc[j] += a[2j]·b[2j] + a[2j+1]·b[2j+1]`, 32 multiply-adds per instruction, twice f32 FMA).
//!
//! Layout: [`Bf16Mat`] packs `W: [out, in]` once, at upload, into panels of [`NR`] = 32 output
//! columns; inside a panel, k-pair `p` holds, for each column `j`, the 32-bit pair
//! `(W[j, 2p], W[j, 2p+1])` (bf16, round-to-nearest-even), so one k-pair of a panel is two zmm
//! loads. Columns past `out` and the odd `k` past `in` are zero.
//!
//! Schedule: the output is cut into tiles of at most `ROW_TILE x COL_TILE` run in parallel by
//! rayon. Per tile and per block of [`KC_PAIRS`] k-pairs, the tile's rows of `x` are converted
//! to bf16 (`vcvtne2ps2bf16`, round-to-nearest-even) into an L2-resident block of
//! [`MR`]-row micro-panels (pair-interleaved like the weights); then, for each weight panel
//! (kept in L1 across the micro-panels), the `MR x 32` micro-kernel keeps its output in 24 zmm
//! accumulators, broadcasting each row's k-pair of `x`. The first k block stores (or, for
//! `Accumulate`, adds to `y`), later ones add; the bias / QuickGELU epilogue of the f32 path
//! ([`super::gemm::finish_row`]) runs on the tile once its last k block is done.

use anyhow::{bail, ensure, Result};
use rayon::prelude::*;

use super::gemm::finish_row;
use super::{check_len, SharedOut};
use crate::backend::Epilogue;

/// Output columns per weight panel and micro-kernel call: two zmm of f32.
const NR: usize = 32;
/// Rows per micro-kernel call: `2·MR` accumulators + 2 weight vectors + 1 broadcast ≤ 32 zmm.
const MR: usize = 12;
/// k-pairs per cache block: a `KC_PAIRS x 32` weight panel is 32 KiB (L1), a
/// `ROW_TILE x 2·KC_PAIRS` bf16 block of `x` 192 KiB (L2).
const KC_PAIRS: usize = 256;
const ROW_TILE: usize = 16 * MR;
const COL_TILE: usize = 16 * NR;

/// Whether this CPU runs the bf16 kernels (AVX-512F + AVX-512 BF16).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A `[out, in]` weight matrix packed into bf16 panels (see the module docs).
pub struct Bf16Mat {
    /// `out.div_ceil(NR)` panels of `k_pairs x NR` bf16 pairs.
    panels: Vec<u32>,
    out_dim: usize,
    in_dim: usize,
    k_pairs: usize,
}

/// `(lo, hi)` as one 32-bit pair of bf16 bit patterns, rounded to nearest even.
fn bf16_pair(lo: f32, hi: f32) -> u32 {
    let bits = |v: f32| u32::from(half::bf16::from_f32(v).to_bits());
    bits(lo) | (bits(hi) << 16)
}

impl Bf16Mat {
    /// Packs torch's row-major `w: [out_dim, in_dim]` (in parallel over panels). Fails on a
    /// CPU without AVX-512 BF16, so that every `Bf16Mat` can run [`linear`].
    pub(crate) fn new(w: &[f32], out_dim: usize, in_dim: usize) -> Result<Self> {
        check_len("upload_mat", "w", w.len(), &[out_dim, in_dim])?;
        ensure!(available(), "upload_mat: this CPU lacks AVX-512 BF16");
        let k_pairs = in_dim.div_ceil(2);
        let panel_len = k_pairs * NR;
        let mut panels = vec![0u32; out_dim.div_ceil(NR) * panel_len];
        if panel_len > 0 {
            panels
                .par_chunks_mut(panel_len)
                .enumerate()
                .for_each(|(p, panel)| {
                    let cols = NR.min(out_dim - p * NR);
                    for j in 0..cols {
                        let row = &w[(p * NR + j) * in_dim..(p * NR + j + 1) * in_dim];
                        for (kp, pair) in row.chunks(2).enumerate() {
                            panel[kp * NR + j] =
                                bf16_pair(pair[0], pair.get(1).map_or(0.0, |&v| v));
                        }
                    }
                });
        }
        Ok(Self {
            panels,
            out_dim,
            in_dim,
            k_pairs,
        })
    }
}

/// Column-tile width: [`COL_TILE`], or narrower (a multiple of [`NR`]) so that at least ~4
/// tiles per thread exist.
fn col_tile(rows: usize, out_dim: usize, threads: usize) -> usize {
    let row_tiles = rows.div_ceil(ROW_TILE).max(1);
    let col_tiles = (4 * threads).div_ceil(row_tiles).max(1);
    out_dim
        .div_ceil(col_tiles)
        .next_multiple_of(NR)
        .clamp(NR, COL_TILE)
}

pub(crate) fn linear(
    y: &mut [f32],
    x: &[f32],
    w: &Bf16Mat,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    rows: usize,
) -> Result<()> {
    let (out_dim, in_dim) = (w.out_dim, w.in_dim);
    check_len("linear", "x", x.len(), &[rows, in_dim])?;
    check_len("linear", "y", y.len(), &[rows, out_dim])?;
    if let Some(b) = bias {
        check_len("linear", "bias", b.len(), &[out_dim])?;
    }
    if y.is_empty() {
        return Ok(());
    }
    let accumulate = epilogue == Epilogue::Accumulate;
    let gelu = epilogue == Epilogue::QuickGelu;
    if in_dim == 0 && !accumulate {
        y.fill(0.0);
    }
    let width = col_tile(rows, out_dim, rayon::current_num_threads());
    let col_tiles = out_dim.div_ceil(width);
    let tiles = rows.div_ceil(ROW_TILE) * col_tiles;
    let dst = SharedOut::new(y);
    (0..tiles).into_par_iter().try_for_each(|t| {
        let (r0, c0) = ((t / col_tiles) * ROW_TILE, (t % col_tiles) * width);
        let (m, n) = (ROW_TILE.min(rows - r0), width.min(out_dim - c0));
        let tile = dst.at(r0 * out_dim + c0);
        // SAFETY: the tile `[r0, r0+m) x [c0, c0+n)` of `y` (`rows x out`, checked above)
        // belongs to this task alone; `x` holds `rows x in` values; `w` was packed on a CPU
        // with AVX-512 BF16 (checked by `Bf16Mat::new`), this one.
        unsafe {
            tile_product(
                tile,
                out_dim,
                &x[r0 * in_dim..(r0 + m) * in_dim],
                m,
                w,
                c0,
                n,
                accumulate,
            )
        }?;
        if bias.is_some() || gelu {
            let bias = bias.map(|b| &b[c0..c0 + n]);
            for r in 0..m {
                // SAFETY: row `r` of this task's tile, `n` elements inside `y`, not aliased.
                let seg = unsafe { std::slice::from_raw_parts_mut(tile.add(r * out_dim), n) };
                finish_row(seg, bias, gelu);
            }
        }
        Ok(())
    })
}

/// `tile[r, j] (=|+=) Σ_k x[r, k]·W[c0 + j, k]` for the `m` rows of `x: [m, in]` and the `n`
/// columns from `c0` (a multiple of [`NR`]).
///
/// # Safety
/// `tile` must address `m x n` writable elements with row stride `ldc`, not aliased.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_product(
    tile: *mut f32,
    ldc: usize,
    x: &[f32],
    m: usize,
    w: &Bf16Mat,
    c0: usize,
    n: usize,
    accumulate: bool,
) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    {
        if available() {
            // SAFETY: the CPU has the features; the caller upholds the tile contract.
            unsafe { kernels::tile_product(tile, ldc, x, m, w, c0, n, accumulate) };
            return Ok(());
        }
    }
    let _ = (tile, ldc, x, m, w, c0, n, accumulate);
    bail!("linear: bf16 weights on a CPU without AVX-512 BF16")
}

#[cfg(target_arch = "x86_64")]
mod kernels {
    use std::arch::x86_64::*;

    use super::{Bf16Mat, KC_PAIRS, MR, NR, ROW_TILE};

    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile_product(
        tile: *mut f32,
        ldc: usize,
        x: &[f32],
        m: usize,
        w: &Bf16Mat,
        c0: usize,
        n: usize,
        accumulate: bool,
    ) {
        let in_dim = w.in_dim;
        let panels = m.div_ceil(MR);
        let mut a = vec![0u32; ROW_TILE.div_ceil(MR) * MR * KC_PAIRS];
        for kp0 in (0..w.k_pairs).step_by(KC_PAIRS) {
            let kc = KC_PAIRS.min(w.k_pairs - kp0);
            let k_end = in_dim.min(2 * (kp0 + kc));
            for r in 0..m {
                let row = &x[r * in_dim + 2 * kp0..r * in_dim + k_end];
                let dst = &mut a[(r / MR) * MR * kc + r % MR..];
                pack_row(dst, row);
            }
            // Rows past `m` in the last micro-panel stay zero (never written).
            let load_c = accumulate || kp0 > 0;
            for j0 in (0..n).step_by(NR) {
                let cols = NR.min(n - j0);
                let b = w.panels[((c0 + j0) / NR) * w.k_pairs * NR + kp0 * NR..].as_ptr();
                for ip in 0..panels {
                    let rows = MR.min(m - ip * MR);
                    // SAFETY: `a` holds `panels x MR x kc` pairs, the panel `kc x NR` from
                    // `b`; the output block stays inside the caller's tile.
                    unsafe {
                        micro_kernel(
                            a[ip * MR * kc..].as_ptr(),
                            b,
                            kc,
                            tile.add(ip * MR * ldc + j0),
                            ldc,
                            rows,
                            cols,
                            load_c,
                        )
                    };
                }
            }
        }
    }

    /// Converts one row segment of `x` to bf16 pairs, storing pair `p` at `dst[p·MR]`
    /// (an odd last value is paired with zero).
    #[target_feature(enable = "avx512f,avx512bf16")]
    fn pack_row(dst: &mut [u32], row: &[f32]) {
        for (c, chunk) in row.chunks(32).enumerate() {
            let lo_n = chunk.len().min(16);
            let hi_n = chunk.len() - lo_n;
            // SAFETY: the masked loads read only `chunk`'s elements.
            let packed = unsafe {
                let lo = _mm512_maskz_loadu_ps(((1u32 << lo_n) - 1) as u16, chunk.as_ptr());
                let hi =
                    _mm512_maskz_loadu_ps(((1u32 << hi_n) - 1) as u16, chunk.as_ptr().add(lo_n));
                _mm512_cvtne2ps_pbh(hi, lo)
            };
            // SAFETY: `__m512bh` and `[u32; 16]` are both 64 plain bytes.
            let pairs = unsafe { std::mem::transmute::<__m512bh, [u32; 16]>(packed) };
            for (p, &v) in pairs[..chunk.len().div_ceil(2)].iter().enumerate() {
                dst[(16 * c + p) * MR] = v;
            }
        }
    }

    /// `c[r, j] (= | +=) Σ_p a[p·MR + r] ⋅ b[p·NR + j]` (bf16 pair dot products, f32 sums) for
    /// `r < rows`, `j < cols`.
    ///
    /// # Safety
    /// `a` must hold `kc·MR` pairs and `b` `kc·NR`; `c` must address `rows` rows of `cols`
    /// writable f32 with stride `ldc`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn micro_kernel(
        a: *const u32,
        b: *const u32,
        kc: usize,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        load_c: bool,
    ) {
        let mut acc = [_mm512_setzero_ps(); 2 * MR];
        for p in 0..kc {
            // SAFETY: in bounds by the contract; `__m512i` and `__m512bh` are both 64 bytes.
            unsafe {
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR).cast()));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16).cast()));
                for r in 0..MR {
                    let av: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*a.add(p * MR + r) as i32));
                    acc[2 * r] = _mm512_dpbf16_ps(acc[2 * r], av, b0);
                    acc[2 * r + 1] = _mm512_dpbf16_ps(acc[2 * r + 1], av, b1);
                }
            }
        }
        let m0 = ((1u32 << cols.min(16)) - 1) as u16;
        let m1 = ((1u32 << cols.saturating_sub(16)) - 1) as u16;
        for r in 0..rows {
            // SAFETY: row `r < rows` of `c`, masked to its `cols` elements.
            unsafe {
                let row = c.add(r * ldc);
                let (mut v0, mut v1) = (acc[2 * r], acc[2 * r + 1]);
                if load_c {
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row.add(16)));
                }
                _mm512_mask_storeu_ps(row, m0, v0);
                _mm512_mask_storeu_ps(row.add(16), m1, v1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_to_nearest_even() {
        // 1 + 2^-8 is halfway between bf16 1.0 and 1 + 2^-7: ties go to the even 1.0.
        let tie = f32::from_bits(0x3F80_8000);
        assert_eq!(bf16_pair(tie, -2.0), 0x3F80 | (0xC000 << 16));
        let above = f32::from_bits(0x3F80_8001);
        assert_eq!(bf16_pair(above, 0.0), 0x3F81);
    }

    #[test]
    fn column_tiles_are_whole_panels() {
        assert_eq!(col_tile(5480, 4096, 2), COL_TILE);
        assert_eq!(col_tile(1, 50, 2), NR);
        assert_eq!(col_tile(154, 1024, 2) % NR, 0);
    }
}
