//! Top-1 cosine search (`Backend::nearest_cosine`, SPEC §7) at ViT-L shapes: one image's 1369
//! patch queries of width 1024 against banks of k = 1, 4 and 100 reference images (1369,
//! 5476 and 136,900 rows), on 2 threads.
//!
//! Run: `cargo bench --bench search` (add `-- <threads> <k>...` for other threads and banks).
//! Baseline (brute force): the full `queries x bank` similarity matrix from one whole-matrix
//! gemm call (`Parallelism::Rayon`, same pool), then a parallel row maximum and the same
//! distance formula. Equality: the largest |ours − brute| over all queries (the two sum in
//! different orders, so equal to f32 rounding, not bit for bit). Reported: time, query×bank
//! rows searched per second, GFLOP/s, and the memory each holds for similarities. Floor: the
//! FLOPs at the best gemm rate measured.

use std::time::Instant;

use afclip::backend::cpu::CpuBackend;
use afclip::backend::Backend;
use anyhow::Result;
use rayon::prelude::*;

const QUERIES: usize = 1369;
const DIM: usize = 1024;
const ROUNDS: usize = 3;

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

fn normalised(rows: usize, seed: u64) -> Vec<f32> {
    let mut v = random(rows * DIM, seed);
    v.par_chunks_mut(DIM).for_each(|r| {
        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        r.iter_mut().for_each(|x| *x /= n);
    });
    v
}

/// The whole similarity matrix, then its row maxima: `1 − max / |q|`.
fn brute(queries: &[f32], bank: &[f32], bank_rows: usize, threads: usize) -> Vec<f32> {
    let mut sims = vec![0f32; QUERIES * bank_rows];
    // SAFETY: `sims` is QUERIES x bank_rows, `queries` QUERIES x DIM, `bank` bank_rows x DIM
    // (read transposed through its strides); all allocations of exactly those sizes.
    unsafe {
        gemm::gemm(
            QUERIES,
            bank_rows,
            DIM,
            sims.as_mut_ptr(),
            1,
            bank_rows as isize,
            false,
            queries.as_ptr(),
            1,
            DIM as isize,
            bank.as_ptr(),
            DIM as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads),
        );
    }
    sims.par_chunks(bank_rows)
        .zip(queries.par_chunks(DIM))
        .map(|(s, q)| {
            let best = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            1.0 - best / q.iter().map(|x| x * x).sum::<f32>().sqrt()
        })
        .collect()
}

fn best<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut out = f();
    let mut t = f64::INFINITY;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        out = f();
        t = t.min(start.elapsed().as_secs_f64());
    }
    (t, out)
}

fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let threads = args.first().copied().unwrap_or(2);
    let ks: Vec<usize> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        vec![1, 4, 100]
    };
    let be = CpuBackend::new(Some(threads))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let queries = random(QUERIES * DIM, 1);
    println!("{}; queries {QUERIES} x {DIM}", be.name());
    let mut rows_out = Vec::new();
    let mut best_rate = 0f64;
    for &k in &ks {
        let bank_rows = k * QUERIES;
        let bank = normalised(bank_rows, 2 + k as u64);
        let flop = 2.0 * (QUERIES * bank_rows * DIM) as f64;
        let (tb, want) = pool.install(|| best(|| brute(&queries, &bank, bank_rows, threads)));
        let (to, got) = best(|| {
            let mut d = vec![0f32; QUERIES];
            be.nearest_cosine(&mut d, &queries, &bank, QUERIES, bank_rows, DIM, 1.0)
                .map(|_| d)
        });
        let got = got?;
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        best_rate = best_rate.max(flop / tb).max(flop / to);
        rows_out.push((k, bank_rows, flop, tb, to, diff));
    }
    println!(
        "\n| bank (k images) | rows | brute force | ours | ratio | ours rows/s | ours GFLOP/s \
         | brute sims MiB | ours sims MiB | max abs diff | floor |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let scratch = (threads * 512 * 512 * 4) as f64 / (1 << 20) as f64;
    for (k, bank_rows, flop, tb, to, diff) in rows_out {
        println!(
            "| {k} | {bank_rows} | {:.1} ms | {:.1} ms | {:.2}x | {:.3e} | {:.0} | {:.0} | {:.2} | \
             {diff:.1e} | {:.1} ms |",
            tb * 1e3,
            to * 1e3,
            tb / to,
            (QUERIES * bank_rows) as f64 / to,
            flop / to / 1e9,
            (QUERIES * bank_rows * 4) as f64 / (1 << 20) as f64,
            scratch,
            flop / best_rate * 1e3
        );
    }
    Ok(())
}
