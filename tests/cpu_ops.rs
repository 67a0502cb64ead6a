//! Every op of the CPU backend against a naive, obviously-correct f64 reference written here,
//! on seeded random inputs and odd shapes (1370 tokens, a 37x37 grid, row counts that are no
//! multiple of any block size, 1 token, causal 77), plus the anomaly maps against torch/scipy
//! outputs (`tests/golden/make_maps_golden.py`) and the length checks.
//!
//! Tolerances (`close`): `|got − ref| ≤ rtol·|ref| + rtol·rms(ref)`, i.e. relative error
//! `rtol`, with a floor that scales with the data so that values near zero (cancellation) are
//! judged against the magnitude of the output, as llm.c's validators do.
//! - GEMM-based ops (`linear`, `attention`): rtol 1e-4 (f32 sums of up to 4096 products).
//! - Other f32 arithmetic (`layer_norm`, `aggregate`, `state_logits`, `abnormal_probability`,
//!   `anomaly_maps` vs f64): rtol 1e-5, on well-conditioned inputs.
//! - Pure data movement (`patch_im2col`) and single f32 additions (`embed_tokens`): exact.
//! - `anomaly_maps` vs torch + scipy: rtol 1e-6 (the same f32/f64 arithmetic; only the
//!   rounding of a few f32 operations may differ).

use std::path::Path;

use afclip::backend::cpu::CpuBackend;
use afclip::backend::{Backend, Epilogue};

const GEMM_RTOL: f64 = 1e-4;
const F32_RTOL: f64 = 1e-5;
const GOLDEN_RTOL: f64 = 1e-6;

/// xorshift64* with a fixed seed per test.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    fn vec(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len).map(|_| lo + (hi - lo) * self.unit()).collect()
    }
}

fn backend() -> CpuBackend {
    CpuBackend::new(Some(2)).expect("cpu backend")
}

fn rms(x: &[f64]) -> f64 {
    (x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

/// Panics with the worst element unless `|got − want| ≤ rtol·(|want| + rms(want))` everywhere.
fn close(what: &str, got: &[f32], want: &[f64], rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let floor = rms(want);
    let mut worst = (0.0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (g as f64 - w).abs() / (rtol * (w.abs() + floor));
        // NaN compares false: count it as a failure.
        if excess.is_nan() || excess > worst.0 {
            worst = (
                if excess.is_nan() {
                    f64::INFINITY
                } else {
                    excess
                },
                i,
            );
        }
    }
    let i = worst.1;
    assert!(
        worst.0 <= 1.0,
        "{what}: element {i} is {} but the reference is {} ({:.2}x the tolerance rtol {rtol}, \
         rms {floor:.3e})",
        got[i],
        want[i],
        worst.0
    );
}

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

// ---------------------------------------------------------------------------------------------
// linear

#[allow(clippy::too_many_arguments)]
fn linear_ref(
    y0: &[f32],
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    rows: usize,
    in_dim: usize,
    out_dim: usize,
) -> Vec<f64> {
    let mut y = vec![0f64; rows * out_dim];
    for r in 0..rows {
        for o in 0..out_dim {
            let mut acc = bias.map_or(0.0, |b| b[o] as f64);
            for i in 0..in_dim {
                acc += x[r * in_dim + i] as f64 * w[o * in_dim + i] as f64;
            }
            y[r * out_dim + o] = match epilogue {
                Epilogue::Store => acc,
                Epilogue::QuickGelu => acc / (1.0 + (-1.702 * acc).exp()),
                Epilogue::Accumulate => y0[r * out_dim + o] as f64 + acc,
            };
        }
    }
    y
}

#[test]
fn linear_matches_reference() {
    let be = backend();
    let mut rng = Rng::new(1);
    // (rows, in, out): one row, tiny, rows/columns off every tile size, a ViT-L-like width.
    let shapes = [
        (1, 7, 5),
        (3, 1, 2),
        (37, 64, 100),
        (300, 96, 1100),
        (257, 1024, 529),
        (1370, 48, 97),
        (20, 4096, 64),
    ];
    for (rows, in_dim, out_dim) in shapes {
        let w = rng.vec(out_dim * in_dim, -1.0, 1.0);
        let x = rng.vec(rows * in_dim, -1.0, 1.0);
        let b = rng.vec(out_dim, -1.0, 1.0);
        let y0 = rng.vec(rows * out_dim, -4.0, 4.0);
        let mat = be.upload_mat(&w, out_dim, in_dim).unwrap();
        for epilogue in [Epilogue::Store, Epilogue::QuickGelu, Epilogue::Accumulate] {
            for bias in [Some(&b), None] {
                let mut y = y0.clone();
                be.linear(&mut y, &x, &mat, bias, epilogue, rows).unwrap();
                let want = linear_ref(
                    &y0,
                    &x,
                    &w,
                    bias.map(|b| b.as_slice()),
                    epilogue,
                    rows,
                    in_dim,
                    out_dim,
                );
                let what = format!(
                    "linear {rows}x{in_dim}->{out_dim} {epilogue:?} bias {}",
                    bias.is_some()
                );
                close(&what, &y, &want, GEMM_RTOL);
            }
        }
    }
}

#[test]
fn linear_quick_gelu_saturates_cleanly() {
    // Large |v|: gelu(v) → v for v ≫ 0 and → 0 (not NaN) for v ≪ 0.
    let be = backend();
    let w = be.upload_mat(&[1.0], 1, 1).unwrap();
    let x = vec![-200.0, -60.0, -5.0, 0.0, 5.0, 60.0, 200.0];
    let mut y = vec![0.0; x.len()];
    be.linear(&mut y, &x, &w, None, Epilogue::QuickGelu, x.len())
        .unwrap();
    for (&v, &g) in x.iter().zip(&y) {
        let want = v as f64 / (1.0 + (-1.702 * v as f64).exp());
        assert!(
            (g as f64 - want).abs() <= 1e-6 * want.abs().max(1e-30) + 1e-30,
            "{v}: {g}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// layer_norm

#[test]
fn layer_norm_matches_reference() {
    let be = backend();
    let mut rng = Rng::new(2);
    for (rows, dim) in [(1370, 1024), (1, 1), (3, 77), (5, 768), (2, 17)] {
        // Offset and scaled rows: the two-pass variance must not cancel.
        let x: Vec<f32> = rng
            .vec(rows * dim, -1.0, 1.0)
            .iter()
            .enumerate()
            .map(|(i, &v)| 2.0 + v * (1.0 + (i / dim % 3) as f32))
            .collect();
        let gamma = rng.vec(dim, 0.5, 1.5);
        let beta = rng.vec(dim, -0.5, 0.5);
        let mut y = vec![0.0; rows * dim];
        be.layer_norm(&mut y, &x, &gamma, &beta, rows, dim, 1e-5)
            .unwrap();
        let mut want = vec![0f64; rows * dim];
        for r in 0..rows {
            let xr = widen(&x[r * dim..(r + 1) * dim]);
            let mean = xr.iter().sum::<f64>() / dim as f64;
            let var = xr.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / dim as f64;
            for c in 0..dim {
                want[r * dim + c] =
                    (xr[c] - mean) / (var + 1e-5).sqrt() * gamma[c] as f64 + beta[c] as f64;
            }
        }
        close(&format!("layer_norm {rows}x{dim}"), &y, &want, F32_RTOL);
    }
}

// ---------------------------------------------------------------------------------------------
// attention

fn attention_ref(
    qkv: &[f32],
    batch: usize,
    tokens: usize,
    heads: usize,
    hd: usize,
    causal: bool,
) -> Vec<f64> {
    let at = |b: usize, t: usize, which: usize, h: usize, d: usize| {
        qkv[(((b * tokens + t) * 3 + which) * heads + h) * hd + d] as f64
    };
    let mut out = vec![0f64; batch * tokens * heads * hd];
    let scale = 1.0 / (hd as f64).sqrt();
    for b in 0..batch {
        for h in 0..heads {
            for i in 0..tokens {
                let visible = if causal { i + 1 } else { tokens };
                let s: Vec<f64> = (0..visible)
                    .map(|j| {
                        (0..hd)
                            .map(|d| at(b, i, 0, h, d) * at(b, j, 1, h, d))
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    let o: f64 = e
                        .iter()
                        .enumerate()
                        .map(|(j, p)| p * at(b, j, 2, h, d))
                        .sum();
                    out[((b * tokens + i) * heads + h) * hd + d] = o / z;
                }
            }
        }
    }
    out
}

#[test]
fn attention_matches_reference() {
    let be = backend();
    let mut rng = Rng::new(3);
    // (batch, tokens, heads, head_dim, causal)
    let cases = [
        (1, 1370, 2, 64, false),
        (2, 77, 12, 64, true),
        (3, 1, 2, 8, false),
        (3, 1, 2, 8, true),
        (1, 300, 3, 16, true),
        (2, 129, 8, 64, false),
        (1, 257, 1, 32, false),
    ];
    for (batch, tokens, heads, hd, causal) in cases {
        // Spread q and k so that the softmax is far from uniform.
        let qkv = rng.vec(batch * tokens * 3 * heads * hd, -2.0, 2.0);
        let mut out = vec![f32::NAN; batch * tokens * heads * hd];
        be.attention(&mut out, &qkv, batch, tokens, heads, hd, causal)
            .unwrap();
        let want = attention_ref(&qkv, batch, tokens, heads, hd, causal);
        let what = format!("attention b{batch} t{tokens} h{heads}x{hd} causal {causal}");
        close(&what, &out, &want, GEMM_RTOL);
    }
}

#[test]
fn causal_attention_first_token_sees_only_itself() {
    let be = backend();
    let mut rng = Rng::new(4);
    let (tokens, heads, hd) = (77, 2, 64);
    let qkv = rng.vec(tokens * 3 * heads * hd, -3.0, 3.0);
    let mut out = vec![0.0; tokens * heads * hd];
    be.attention(&mut out, &qkv, 1, tokens, heads, hd, true)
        .unwrap();
    for h in 0..heads {
        let v0 = &qkv[(2 * heads + h) * hd..(2 * heads + h + 1) * hd];
        assert_eq!(&out[h * hd..(h + 1) * hd], v0, "head {h}");
    }
}

// ---------------------------------------------------------------------------------------------
// patch embedding glue

#[test]
fn patch_im2col_matches_reference() {
    let be = backend();
    let mut rng = Rng::new(5);
    // (batch, side, patch): the real 518/14, several images, and a side that is no multiple.
    for (batch, side, patch) in [(1, 518, 14), (2, 28, 14), (1, 30, 14), (3, 6, 3), (1, 1, 1)] {
        let images = rng.vec(batch * 3 * side * side, -2.0, 2.0);
        let g = side / patch;
        let cols_len = batch * g * g * 3 * patch * patch;
        let mut cols = vec![f32::NAN; cols_len];
        be.patch_im2col(&mut cols, &images, batch, side, patch)
            .unwrap();
        let mut want = vec![0f32; cols_len];
        let mut k = 0;
        for b in 0..batch {
            for h in 0..g {
                for w in 0..g {
                    for c in 0..3 {
                        for i in 0..patch {
                            for j in 0..patch {
                                want[k] = images
                                    [((b * 3 + c) * side + h * patch + i) * side + w * patch + j];
                                k += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(
            cols, want,
            "patch_im2col b{batch} side {side} patch {patch}"
        );
    }
}

#[test]
fn embed_tokens_matches_reference() {
    let be = backend();
    let mut rng = Rng::new(6);
    for (batch, n, dim) in [(2, 1369, 64), (1, 1, 3), (3, 4, 1)] {
        let patches = rng.vec(batch * n * dim, -1.0, 1.0);
        let cls = rng.vec(dim, -1.0, 1.0);
        let pos = rng.vec((n + 1) * dim, -1.0, 1.0);
        let mut x = vec![f32::NAN; batch * (n + 1) * dim];
        be.embed_tokens(&mut x, &patches, &cls, &pos, batch, n, dim)
            .unwrap();
        for b in 0..batch {
            for t in 0..=n {
                for c in 0..dim {
                    let src = if t == 0 {
                        cls[c]
                    } else {
                        patches[(b * n + t - 1) * dim + c]
                    };
                    let got = x[(b * (n + 1) + t) * dim + c];
                    assert_eq!(got, src + pos[t * dim + c], "b{b} t{t} c{c}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// aggregate

fn aggregate_ref(
    x: &[f32],
    batch: usize,
    grid: usize,
    dim: usize,
    r: usize,
    sigma: f64,
) -> Vec<f64> {
    let half = (r / 2) as isize;
    let weight = |i: isize, j: isize| (-((i * i + j * j) as f64) / (2.0 * sigma * sigma)).exp();
    let mut total = 0.0;
    for i in -half..=half {
        for j in -half..=half {
            total += weight(i, j);
        }
    }
    let tokens = grid * grid + 1;
    let mut out = widen(x);
    for b in 0..batch {
        for h in 0..grid as isize {
            for w in 0..grid as isize {
                for c in 0..dim {
                    let mut acc = 0.0;
                    for i in -half..=half {
                        for j in -half..=half {
                            let (hh, ww) = (h + i, w + j);
                            if hh < 0 || ww < 0 || hh >= grid as isize || ww >= grid as isize {
                                continue;
                            }
                            let t = 1 + hh as usize * grid + ww as usize;
                            acc += weight(i, j) / total * x[(b * tokens + t) * dim + c] as f64;
                        }
                    }
                    let t = 1 + h as usize * grid + w as usize;
                    out[(b * tokens + t) * dim + c] = acc;
                }
            }
        }
    }
    out
}

#[test]
fn aggregate_matches_reference() {
    let be = backend();
    let mut rng = Rng::new(7);
    // (batch, grid, dim, window, sigma): the real 37x37 map, windows wider than the grid.
    let cases = [
        (2, 37, 64, 3, 4.0),
        (1, 37, 32, 5, 4.0),
        (1, 6, 8, 7, 1.5),
        (1, 2, 5, 5, 4.0),
        (2, 1, 4, 3, 4.0),
    ];
    for (batch, grid, dim, window, sigma) in cases {
        let len = batch * (grid * grid + 1) * dim;
        let x = rng.vec(len, 0.0, 1.0);
        let mut out = vec![f32::NAN; len];
        be.aggregate(&mut out, &x, batch, grid, dim, window, sigma)
            .unwrap();
        let want = aggregate_ref(&x, batch, grid, dim, window, sigma as f64);
        let what = format!("aggregate b{batch} g{grid} d{dim} r{window} sigma {sigma}");
        close(&what, &out, &want, F32_RTOL);
        for b in 0..batch {
            let cls = b * (grid * grid + 1) * dim;
            assert_eq!(out[cls..cls + dim], x[cls..cls + dim], "{what}: CLS");
        }
    }
}

#[test]
fn aggregate_window_one_is_a_copy() {
    let be = backend();
    let x = Rng::new(8).vec(2 * 10 * 6, -1.0, 1.0);
    let mut out = vec![0.0; x.len()];
    be.aggregate(&mut out, &x, 2, 3, 6, 1, 4.0).unwrap();
    assert_eq!(out, x);
}

// ---------------------------------------------------------------------------------------------
// scores

#[test]
fn state_logits_match_reference() {
    let be = backend();
    let mut rng = Rng::new(9);
    for (rows, dim) in [(1370, 768), (1, 1), (5, 33)] {
        let mut text = rng.vec(2 * dim, -1.0, 1.0);
        for t in text.chunks_exact_mut(dim) {
            let n = t.iter().map(|v| v * v).sum::<f32>().sqrt();
            t.iter_mut().for_each(|v| *v /= n);
        }
        // Rows leaning towards one state or the other: cosines well away from 0.
        let mut z = rng.vec(rows * dim, -0.5, 0.5);
        for (r, zr) in z.chunks_exact_mut(dim).enumerate() {
            let s = r % 2;
            for (v, &t) in zr.iter_mut().zip(&text[s * dim..(s + 1) * dim]) {
                *v = *v / (dim as f32).sqrt() + 2.0 * t;
            }
        }
        let logits0 = rng.vec(rows * 2, -3.0, 3.0);
        let mut logits = logits0.clone();
        let scale = 1.0 / 0.07;
        be.state_logits(&mut logits, &z, &text, rows, dim, scale)
            .unwrap();
        let mut want = widen(&logits0);
        for r in 0..rows {
            let zr = widen(&z[r * dim..(r + 1) * dim]);
            let norm = zr.iter().map(|v| v * v).sum::<f64>().sqrt();
            for s in 0..2 {
                let dot: f64 = zr
                    .iter()
                    .zip(&text[s * dim..(s + 1) * dim])
                    .map(|(a, &b)| a * b as f64)
                    .sum();
                want[r * 2 + s] += dot / norm * scale as f64;
            }
        }
        close(
            &format!("state_logits {rows}x{dim}"),
            &logits,
            &want,
            F32_RTOL,
        );
    }
}

#[test]
fn abnormal_probability_matches_reference() {
    let be = backend();
    let mut logits = Rng::new(10).vec(2 * 1000, -30.0, 30.0);
    logits.extend([1000.0, -1000.0, -1000.0, 1000.0, 88.0, 89.0, 0.0, 0.0]);
    let rows = logits.len() / 2;
    let mut probs = vec![f32::NAN; rows];
    be.abnormal_probability(&mut probs, &logits, rows).unwrap();
    let want: Vec<f64> = logits
        .chunks_exact(2)
        .map(|l| 1.0 / (1.0 + (l[0] as f64 - l[1] as f64).exp()))
        .collect();
    // Relative to each probability itself (tiny ones included): no absolute floor here.
    for (i, (&g, &w)) in probs.iter().zip(&want).enumerate() {
        assert!((g as f64 - w).abs() <= F32_RTOL * w, "row {i}: {g} vs {w}");
    }
}

// ---------------------------------------------------------------------------------------------
// anomaly maps

fn reflect(i: isize, n: usize) -> usize {
    // scipy "reflect" (d c b a | a b c d), extended with period 2n.
    let n = n as isize;
    let mut i = i;
    loop {
        if i < 0 {
            i = -i - 1;
        } else if i >= n {
            i = 2 * n - 1 - i;
        } else {
            return i as usize;
        }
    }
}

fn anomaly_maps_ref(patch: &[f32], batch: usize, grid: usize, side: usize, sigma: f64) -> Vec<f64> {
    let scale = grid as f64 / side as f64;
    let taps = |d: usize| {
        let src = (scale * (d as f64 + 0.5) - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(grid - 1);
        let i1 = (i0 + 1).min(grid - 1);
        let l1 = (src - i0 as f64).clamp(0.0, 1.0);
        (i0, i1, 1.0 - l1, l1)
    };
    let radius = (4.0 * sigma + 0.5) as isize;
    let kernel: Vec<f64> = (-radius..=radius)
        .map(|x| (-((x * x) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let ksum: f64 = kernel.iter().sum();
    let mut out = Vec::with_capacity(batch * side * side);
    for b in 0..batch {
        let p = |h: usize, w: usize| patch[(b * grid + h) * grid + w] as f64;
        let mut up = vec![0f64; side * side];
        for y in 0..side {
            let (y0, y1, a0, a1) = taps(y);
            for x in 0..side {
                let (x0, x1, b0, b1) = taps(x);
                up[y * side + x] =
                    a0 * (b0 * p(y0, x0) + b1 * p(y0, x1)) + a1 * (b0 * p(y1, x0) + b1 * p(y1, x1));
            }
        }
        if sigma == 0.0 {
            out.extend(up);
            continue;
        }
        let mut tmp = vec![0f64; side * side];
        for y in 0..side {
            for x in 0..side {
                tmp[y * side + x] = (-radius..=radius)
                    .map(|k| {
                        kernel[(k + radius) as usize] / ksum
                            * up[reflect(y as isize + k, side) * side + x]
                    })
                    .sum();
            }
        }
        for y in 0..side {
            for x in 0..side {
                out.push(
                    (-radius..=radius)
                        .map(|k| {
                            kernel[(k + radius) as usize] / ksum
                                * tmp[y * side + reflect(x as isize + k, side)]
                        })
                        .sum(),
                );
            }
        }
    }
    out
}

#[test]
fn anomaly_maps_match_reference() {
    let be = backend();
    let mut rng = Rng::new(11);
    // (batch, grid, side, sigma): the real 37 → 518, a side below the radius, a downsample.
    let cases = [
        (1, 37, 518, 4.0),
        (2, 3, 10, 4.0),
        (1, 5, 7, 1.5),
        (1, 6, 4, 2.0),
        (1, 1, 3, 4.0),
        (1, 4, 9, 0.0),
    ];
    for (batch, grid, side, sigma) in cases {
        let patch = rng.vec(batch * grid * grid, 0.0, 1.0);
        let mut maps = vec![f32::NAN; batch * side * side];
        be.anomaly_maps(&mut maps, &patch, batch, grid, side, sigma)
            .unwrap();
        let want = anomaly_maps_ref(&patch, batch, grid, side, sigma as f64);
        let what = format!("anomaly_maps b{batch} g{grid} side {side} sigma {sigma}");
        close(&what, &maps, &want, F32_RTOL);
    }
}

fn golden_tensor(st: &safetensors::SafeTensors, name: &str) -> (Vec<f32>, Vec<usize>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("tensor {name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    let data = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (data, t.shape().to_vec())
}

#[test]
fn anomaly_maps_match_torch_and_scipy() {
    let be = backend();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/maps");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/golden/maps (run tests/golden/make_maps_golden.py)")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 6, "fixtures in {}", dir.display());
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (patch, pshape) = golden_tensor(&st, "patch");
        let (sigma, _) = golden_tensor(&st, "sigma");
        let (want, mshape) = golden_tensor(&st, "maps");
        let (batch, grid, side) = (pshape[0], pshape[1], mshape[1]);
        let mut maps = vec![f32::NAN; want.len()];
        be.anomaly_maps(&mut maps, &patch, batch, grid, side, sigma[0])
            .unwrap();
        let what = format!("anomaly_maps vs scipy {}", file.display());
        close(&what, &maps, &widen(&want), GOLDEN_RTOL);
    }
}

// ---------------------------------------------------------------------------------------------
// length checks: errors, never panics

fn expect_err(what: &str, result: anyhow::Result<()>, mentions: &str) {
    let err = result.expect_err(what).to_string();
    assert!(
        err.contains(mentions),
        "{what}: error `{err}` does not mention `{mentions}`"
    );
}

#[test]
fn wrong_lengths_are_errors() {
    let be = backend();
    let w = be.upload_mat(&[0.0; 12], 3, 4).unwrap();
    assert!(be.upload_mat(&[0.0; 11], 3, 4).is_err());
    let x = vec![0.0; 2 * 4];
    let mut y = vec![0.0; 2 * 3];
    expect_err(
        "linear x",
        be.linear(&mut y, &vec![0.0; 7], &w, None, Epilogue::Store, 2),
        "`x`",
    );
    expect_err(
        "linear y",
        be.linear(&mut vec![0.0; 5], &x, &w, None, Epilogue::Store, 2),
        "`y`",
    );
    expect_err(
        "linear bias",
        be.linear(&mut y, &x, &w, Some(&vec![0.0; 4]), Epilogue::Store, 2),
        "`bias`",
    );
    expect_err(
        "layer_norm gamma",
        be.layer_norm(
            &mut y,
            &vec![0.0; 6],
            &vec![1.0; 2],
            &vec![0.0; 3],
            2,
            3,
            1e-5,
        ),
        "`gamma`",
    );
    expect_err(
        "attention qkv",
        be.attention(&mut vec![0.0; 8], &vec![0.0; 23], 1, 2, 2, 2, false),
        "`qkv`",
    );
    expect_err(
        "patch_im2col cols",
        be.patch_im2col(&mut vec![0.0; 3], &vec![0.0; 3 * 16], 1, 4, 2),
        "`cols`",
    );
    expect_err(
        "embed_tokens pos",
        be.embed_tokens(
            &mut vec![0.0; 6],
            &vec![0.0; 4],
            &vec![0.0; 2],
            &vec![0.0; 2],
            1,
            2,
            2,
        ),
        "`pos`",
    );
    expect_err(
        "aggregate even window",
        be.aggregate(&mut vec![0.0; 10], &vec![0.0; 10], 1, 3, 1, 2, 4.0),
        "odd",
    );
    expect_err(
        "state_logits text",
        be.state_logits(&mut vec![0.0; 2], &vec![0.0; 3], &vec![0.0; 3], 1, 3, 1.0),
        "`text`",
    );
    expect_err(
        "abnormal_probability probs",
        be.abnormal_probability(&mut vec![0.0; 2], &vec![0.0; 2], 1),
        "`probs`",
    );
    expect_err(
        "anomaly_maps maps",
        be.anomaly_maps(&mut vec![0.0; 15], &vec![0.0; 4], 1, 2, 4, 4.0),
        "`maps`",
    );
    // Nothing was written by the failed calls.
    assert!(y.iter().all(|&v| v == 0.0));
}
