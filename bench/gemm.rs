//! GFLOP/s of the CPU backend's `linear` and `attention` at the ViT-L/14 @ 518 px shapes
//! (4 images x 1370 tokens, width 1024, MLP 4096, 16 heads of 64), on 2 threads.
//!
//! Run: `cargo bench --bench gemm` (add `-- <threads>` for another thread count).
//! Baseline: the gemm crate alone on the same product, one whole-matrix call with
//! `Parallelism::Rayon` in the same pool and no epilogue (for attention: per head, the full
//! `N x N` `Q Kᵀ` and then `S V`, no softmax). Floor: the FLOPs at the best baseline rate.
//! Prints one table, then the vision-tower time per image these rates imply.

use std::time::Instant;

use afclip::backend::cpu::CpuBackend;
use afclip::backend::{Backend, Epilogue};
use anyhow::Result;

const BATCH: usize = 4;
const TOKENS: usize = 1370;
const WIDTH: usize = 1024;
const MLP: usize = 4096;
const HEADS: usize = 16;
const HEAD_DIM: usize = 64;
const LAYERS: usize = 24;
/// Timed rounds; each runs the baseline and then ours, so that both see the same machine load.
const ROUNDS: usize = 5;

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Best wall times of `baseline` and `ours` over [`ROUNDS`] alternating rounds, after one
/// warm-up of each (best-of-n filters out other processes' bursts on a shared machine).
fn best_secs(
    mut baseline: impl FnMut() -> Result<()>,
    mut ours: impl FnMut() -> Result<()>,
) -> Result<(f64, f64)> {
    baseline()?;
    ours()?;
    let mut best = (f64::INFINITY, f64::INFINITY);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        baseline()?;
        best.0 = best.0.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        ours()?;
        best.1 = best.1.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// `y[m, n] = x[m, k] · Wᵀ` with `Wᵀ` stored `[k, n]`, as one multi-threaded gemm call.
fn raw_gemm(y: &mut [f32], x: &[f32], wt: &[f32], m: usize, k: usize, n: usize, threads: usize) {
    assert_eq!((y.len(), x.len(), wt.len()), (m * n, m * k, k * n));
    // SAFETY: the three lengths were just checked against the shapes the strides describe.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            wt.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads),
        );
    }
}

/// Per (image, head): `S = Q Kᵀ` (`N x N`, scaled) then `O = S V`, no softmax.
fn raw_attention(out: &mut [f32], qkv: &[f32], scores: &mut [f32], threads: usize) {
    let (ld, width) = (3 * WIDTH, WIDTH);
    assert_eq!(qkv.len(), BATCH * TOKENS * ld);
    assert_eq!(out.len(), BATCH * TOKENS * width);
    assert_eq!(scores.len(), TOKENS * TOKENS);
    for b in 0..BATCH {
        for h in 0..HEADS {
            let base = b * TOKENS * ld + h * HEAD_DIM;
            // SAFETY: every view below stays inside the buffers whose lengths were asserted.
            unsafe {
                let q = qkv.as_ptr().add(base);
                gemm::gemm(
                    TOKENS,
                    TOKENS,
                    HEAD_DIM,
                    scores.as_mut_ptr(),
                    1,
                    TOKENS as isize,
                    false,
                    q,
                    1,
                    ld as isize,
                    q.add(width),
                    ld as isize,
                    1,
                    0.0,
                    0.125,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(threads),
                );
                gemm::gemm(
                    TOKENS,
                    HEAD_DIM,
                    TOKENS,
                    out.as_mut_ptr().add(b * TOKENS * width + h * HEAD_DIM),
                    1,
                    width as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    TOKENS as isize,
                    q.add(2 * width),
                    1,
                    ld as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(threads),
                );
            }
        }
    }
}

struct Row {
    workload: String,
    gflop: f64,
    baseline_s: f64,
    ours_s: f64,
    /// How many times one image's vision tower runs this op (per image of the batch).
    per_image: f64,
}

fn main() -> Result<()> {
    let threads = match std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        Some(t) => t.parse()?,
        None => 2,
    };
    let be = CpuBackend::new(Some(threads))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let rows = BATCH * TOKENS;
    let mut table = Vec::new();

    let linears = [
        ("qkv", WIDTH, 3 * WIDTH, Epilogue::Store),
        ("attn out", WIDTH, WIDTH, Epilogue::Accumulate),
        ("fc", WIDTH, MLP, Epilogue::QuickGelu),
        ("proj", MLP, WIDTH, Epilogue::Accumulate),
    ];
    for (i, &(name, k, n, epilogue)) in linears.iter().enumerate() {
        let seed = 10 * i as u64;
        let w = random(n * k, seed + 1);
        let x = random(rows * k, seed + 2);
        let bias = be.upload(&random(n, seed + 3))?;
        let mat = be.upload_mat(&w, n, k)?;
        let x = be.upload(&x)?;
        let mut y = be.upload(&random(rows * n, seed + 4))?;
        let mut y_base = y.clone();
        let mut wt = vec![0f32; k * n];
        for (o, row) in w.chunks_exact(k).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                wt[c * n + o] = v;
            }
        }
        let (baseline_s, ours_s) = best_secs(
            || {
                pool.install(|| raw_gemm(&mut y_base, &x, &wt, rows, k, n, threads));
                Ok(())
            },
            || be.linear(&mut y, &x, &mat, Some(&bias), epilogue, rows),
        )?;
        table.push(Row {
            workload: format!("linear {name} {rows}x{k}->{n} {epilogue:?}"),
            gflop: 2.0 * (rows * k * n) as f64 / 1e9,
            baseline_s,
            ours_s,
            per_image: LAYERS as f64 / BATCH as f64,
        });
    }

    let qkv = be.upload(&random(rows * 3 * WIDTH, 99))?;
    let mut out = be.zeros(rows * WIDTH)?;
    let mut out_base = out.clone();
    let mut scores = vec![0f32; TOKENS * TOKENS];
    let (baseline_s, ours_s) = best_secs(
        || {
            pool.install(|| raw_attention(&mut out_base, &qkv, &mut scores, threads));
            Ok(())
        },
        || be.attention(&mut out, &qkv, BATCH, TOKENS, HEADS, HEAD_DIM, false),
    )?;
    table.push(Row {
        workload: format!("attention {BATCH}x{TOKENS} {HEADS}x{HEAD_DIM}"),
        gflop: 4.0 * (BATCH * HEADS * TOKENS * TOKENS * HEAD_DIM) as f64 / 1e9,
        baseline_s,
        ours_s,
        per_image: LAYERS as f64 / BATCH as f64,
    });

    let peak = table
        .iter()
        .map(|r| r.gflop / r.baseline_s)
        .fold(0.0, f64::max);
    println!("{}", be.name());
    println!(
        "{:<44} {:>7} {:>14} {:>14} {:>6} {:>9}",
        "workload", "GFLOP", "baseline", "ours", "ratio", "floor"
    );
    for r in &table {
        println!(
            "{:<44} {:>7.1} {:>6.1} ms {:>3.0}/s {:>6.1} ms {:>3.0}/s {:>6.2} {:>6.1} ms",
            r.workload,
            r.gflop,
            r.baseline_s * 1e3,
            r.gflop / r.baseline_s,
            r.ours_s * 1e3,
            r.gflop / r.ours_s,
            r.baseline_s / r.ours_s,
            r.gflop / peak * 1e3,
        );
    }
    let tower_s: f64 = table.iter().map(|r| r.ours_s * r.per_image).sum();
    let tower_gflop: f64 = table.iter().map(|r| r.gflop * r.per_image).sum();
    println!(
        "ViT-L/14 @ 518 vision tower, these ops only: {tower_gflop:.0} GFLOP/image, {tower_s:.2} s/image \
         ({:.0} GFLOP/s; floor {:.2} s at {peak:.0} GFLOP/s)",
        tower_gflop / tower_s,
        tower_gflop / peak,
    );
    Ok(())
}
