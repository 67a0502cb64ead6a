//! The CPU backend's `attention` against an f64 reference at the shapes the model runs
//! (ViT-L/14 at 518 px: 1370 tokens x 16 heads; the adaptor: 8 heads; the text tower: 77
//! causal tokens) and at awkward ones (1 token, odd token counts, small head dims), plus an
//! ignored throughput probe (`cargo test --release --test cpu_attention -- --ignored
//! --nocapture`).
//!
//! Tolerance: `|got − want| ≤ 1e-4·(|want| + rms(want))` per element, as for the other
//! GEMM-based ops in tests/cpu_ops.rs.

use std::time::Instant;

use afclip::backend::cpu::CpuBackend;
use afclip::backend::Backend;

const RTOL: f64 = 1e-4;

/// xorshift64*, uniform in [lo, hi).
fn random(len: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * u
        })
        .collect()
}

/// `softmax(q kᵀ / sqrt(hd) + mask) v` in f64, `[batch, tokens, heads, hd]`.
fn reference(
    qkv: &[f32],
    (batch, tokens, heads, hd): (usize, usize, usize, usize),
    causal: bool,
) -> Vec<f64> {
    let at = |b: usize, t: usize, which: usize, h: usize| {
        let o = (((b * tokens + t) * 3 + which) * heads + h) * hd;
        &qkv[o..o + hd]
    };
    let mut out = vec![0f64; batch * tokens * heads * hd];
    let scale = 1.0 / (hd as f64).sqrt();
    for b in 0..batch {
        for h in 0..heads {
            for i in 0..tokens {
                let visible = if causal { i + 1 } else { tokens };
                let q = at(b, i, 0, h);
                let s: Vec<f64> = (0..visible)
                    .map(|j| {
                        let k = at(b, j, 1, h);
                        q.iter()
                            .zip(k)
                            .map(|(&x, &y)| x as f64 * y as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                let o = &mut out[((b * tokens + i) * heads + h) * hd..][..hd];
                for (j, &w) in e.iter().enumerate() {
                    for (oc, &vc) in o.iter_mut().zip(at(b, j, 2, h)) {
                        *oc += w / z * vc as f64;
                    }
                }
            }
        }
    }
    out
}

/// Panics with the worst element unless every element is within [`RTOL`] (module docs).
fn check(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let rms = (want.iter().map(|v| v * v).sum::<f64>() / want.len() as f64).sqrt();
    let (worst, i) = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs() / (RTOL * (w.abs() + rms)))
        .enumerate()
        .fold((0.0f64, 0usize), |(best, bi), (i, e)| {
            // NaN counts as the worst possible error.
            let e = if e.is_nan() { f64::INFINITY } else { e };
            if e > best {
                (e, i)
            } else {
                (best, bi)
            }
        });
    assert!(
        worst <= 1.0,
        "{what}: element {i} is {} but the reference is {} ({worst:.2}x the tolerance)",
        got[i],
        want[i]
    );
}

/// Runs `attention` at `shape = (batch, tokens, heads, head_dim)` on inputs in `[-amp, amp)`
/// and checks it against [`reference`].
fn case(shape: (usize, usize, usize, usize), causal: bool, amp: f32, seed: u64) {
    let (batch, tokens, heads, hd) = shape;
    let qkv = random(batch * tokens * 3 * heads * hd, seed, -amp, amp);
    let mut out = vec![f32::NAN; batch * tokens * heads * hd];
    let be = CpuBackend::new(Some(2)).expect("cpu backend");
    be.attention(&mut out, &qkv, batch, tokens, heads, hd, causal)
        .expect("attention");
    let what = format!("attention b{batch} t{tokens} h{heads}x{hd} causal {causal} amp {amp}");
    check(&what, &out, &reference(&qkv, shape, causal));
}

#[test]
fn vision_tower_shape() {
    case((1, 1370, 16, 64), false, 2.0, 1);
}

#[test]
fn adaptor_shape_two_images() {
    case((2, 37 * 37 + 1, 8, 64), false, 2.0, 2);
}

#[test]
fn text_tower_causal() {
    case((3, 77, 8, 64), true, 3.0, 3);
}

#[test]
fn single_token() {
    case((2, 1, 4, 64), false, 2.0, 4);
    case((2, 1, 4, 64), true, 2.0, 5);
}

#[test]
fn odd_token_counts() {
    for (tokens, seed) in [
        (2, 6),
        (7, 7),
        (47, 8),
        (49, 9),
        (97, 10),
        (129, 11),
        (131, 12),
    ] {
        case((1, tokens, 3, 64), false, 2.0, seed);
        case((1, tokens, 3, 64), true, 2.0, seed + 100);
    }
}

#[test]
fn causal_over_several_key_blocks() {
    case((1, 301, 2, 64), true, 2.0, 13);
}

#[test]
fn small_and_odd_head_dims() {
    for (hd, seed) in [(8, 14), (16, 15), (24, 16), (32, 17), (12, 18), (1, 19)] {
        case((2, 53, 2, hd), false, 2.0, seed);
        case((2, 53, 2, hd), true, 2.0, seed + 100);
    }
}

#[test]
fn peaked_and_flat_softmax() {
    // Large logits (|s| up to ~100 after scaling) make each row nearly one-hot; tiny ones
    // make it nearly uniform.
    case((1, 200, 2, 64), false, 10.0, 20);
    case((1, 200, 2, 64), true, 10.0, 21);
    case((1, 200, 2, 64), false, 0.01, 22);
}

#[test]
fn causal_first_token_is_its_value() {
    let (tokens, heads, hd) = (77, 2, 64);
    let qkv = random(tokens * 3 * heads * hd, 23, -3.0, 3.0);
    let mut out = vec![0.0; tokens * heads * hd];
    let be = CpuBackend::new(Some(2)).expect("cpu backend");
    be.attention(&mut out, &qkv, 1, tokens, heads, hd, true)
        .expect("attention");
    for h in 0..heads {
        let v0 = &qkv[(2 * heads + h) * hd..(2 * heads + h + 1) * hd];
        assert_eq!(&out[h * hd..(h + 1) * hd], v0, "head {h}");
    }
}

/// GFLOP/s (`4·tokens²·head_dim` per head) at the vision tower's and the adaptor's shapes.
#[test]
#[ignore = "throughput probe; run with --release -- --ignored --nocapture"]
fn throughput() {
    let be = CpuBackend::new(None).expect("cpu backend");
    for (tokens, heads) in [(1370, 16), (1370, 8)] {
        let hd = 64;
        let qkv = random(tokens * 3 * heads * hd, 24, -2.0, 2.0);
        let mut out = vec![0.0; tokens * heads * hd];
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let start = Instant::now();
            be.attention(&mut out, &qkv, 1, tokens, heads, hd, false)
                .expect("attention");
            best = best.min(start.elapsed().as_secs_f64());
        }
        let flops = 4.0 * (tokens * tokens * hd * heads) as f64;
        println!(
            "attention {tokens} tokens x {heads} heads: {:.2} ms, {:.0} GFLOP/s ({} threads)",
            best * 1e3,
            flops / best / 1e9,
            be.threads()
        );
    }
}
