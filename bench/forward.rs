//! Full-size zero-shot forward on the CPU backend: random ViT-L/14@336 weights (generated here,
//! not downloaded), 518 px, batch 1 and 4, maps included, at each `linear` precision (f32, the
//! reference, then bf16). Prints seconds per image, the share of time in GEMM-bound ops and
//! their throughput, and, when both precisions ran, the relative L2 difference of bf16's image
//! scores and maps from f32's on the same input.
//!
//! Run: `cargo bench --bench forward` (env: AFCLIP_BENCH_PRESET=vit-l-14-336,
//! AFCLIP_BENCH_SIZE=518, AFCLIP_BENCH_BATCHES=1,4, AFCLIP_BENCH_THREADS=<all>,
//! AFCLIP_BENCH_PRECISION=f32|bf16 (default: both)).

use afclip::backend::cpu::{CpuBackend, Precision};
use afclip::backend::profile::Profiled;
use afclip::backend::{Backend, Epilogue};
use afclip::model::afclip::{AfClip, BatchScores, ModelOptions};
use afclip::model::head::Head;
use afclip::model::random::{preset, random_checkpoint};
use afclip::model::tokenizer::ClipTokenizer;
use afclip::rng::Rng;
use anyhow::Result;
use std::time::Instant;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// `‖got − want‖ / ‖want‖`.
fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        err += (f64::from(g) - f64::from(w)).powi(2);
        norm += f64::from(w).powi(2);
    }
    (err / norm).sqrt()
}

/// GFLOP/s of `be`'s `linear` at the MLP up-projection of 4 images: 4·1370 x 1024 -> 4096,
/// QuickGELU (best of 3).
fn mlp_up_rate(be: &CpuBackend) -> Result<f64> {
    let (rows, in_dim, out_dim) = (4 * 1370, 1024, 4096);
    let mut rng = Rng::new(2);
    let mut random = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.normal()).collect() };
    let w = be.upload_mat(&random(out_dim * in_dim), out_dim, in_dim)?;
    let x = be.upload(&random(rows * in_dim))?;
    let bias = be.upload(&random(out_dim))?;
    let mut y = be.zeros(rows * out_dim)?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        be.linear(&mut y, &x, &w, Some(&bias), Epilogue::QuickGelu, rows)?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(2.0 * (rows * in_dim * out_dim) as f64 / best / 1e9)
}

fn main() -> Result<()> {
    let preset_name = env_or("AFCLIP_BENCH_PRESET", "vit-l-14-336");
    let side: usize = env_or("AFCLIP_BENCH_SIZE", "518").parse()?;
    let batches: Vec<usize> = env_or("AFCLIP_BENCH_BATCHES", "1,4")
        .split(',')
        .map(|b| b.trim().parse())
        .collect::<Result<_, _>>()?;
    let threads = std::env::var("AFCLIP_BENCH_THREADS")
        .ok()
        .map(|t| t.parse())
        .transpose()?;
    let precisions: Vec<Precision> = match std::env::var("AFCLIP_BENCH_PRECISION") {
        Ok(p) => vec![p.parse()?],
        Err(_) => vec![Precision::F32, Precision::Bf16],
    };
    let cfg = preset(&preset_name)?;
    let ckpt = random_checkpoint(&cfg, 0);
    let head = Head::init(&cfg, 0);
    let opts = ModelOptions {
        image_size: side,
        layers: None,
    };
    let inputs: Vec<Vec<f32>> = {
        let mut rng = Rng::new(1);
        batches
            .iter()
            .map(|&batch| (0..batch * 3 * side * side).map(|_| rng.normal()).collect())
            .collect()
    };
    let mut rows = Vec::new();
    // Per precision, the outputs of every batch, for the comparison.
    let mut outputs: Vec<(Precision, Vec<BatchScores>)> = Vec::new();
    for &precision in &precisions {
        let t0 = Instant::now();
        let be = CpuBackend::with_precision(threads, precision)?;
        let ran_at = be.precision();
        let mlp_rate = mlp_up_rate(&be)?;
        let model = AfClip::new(
            Profiled::new(be),
            &ckpt,
            &head,
            &ClipTokenizer::builtin()?,
            &opts,
        )?;
        eprintln!(
            "{} at {side} px on {}: model (and linear rate) ready in {:.1} s",
            preset_name,
            model.backend().name(),
            t0.elapsed().as_secs_f64()
        );
        let mut outs = Vec::new();
        for (&batch, pixels) in batches.iter().zip(&inputs) {
            if outs.is_empty() {
                model.score(&pixels[..3 * side * side], 1, true)?;
            }
            model.backend().reset();
            let start = Instant::now();
            let out = model.score(pixels, batch, true)?;
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(out.image.len(), batch);
            let stats = model.backend().stats();
            let gemm: Vec<_> = ["linear", "attention"]
                .iter()
                .filter_map(|k| stats.get(k))
                .collect();
            let gemm_time: f64 = gemm.iter().map(|s| s.time.as_secs_f64()).sum();
            let flops: f64 = gemm.iter().map(|s| s.flops).sum();
            eprintln!("batch {batch}: per-op wall time");
            for (op, s) in &stats {
                eprintln!(
                    "  {op:<22} {:>5} calls {:>8.3} s {:>5.1}%{}",
                    s.calls,
                    s.time.as_secs_f64(),
                    100.0 * s.time.as_secs_f64() / secs,
                    if s.flops > 0.0 {
                        format!("  {:.0} GFLOP/s", s.flops / s.time.as_secs_f64() / 1e9)
                    } else {
                        String::new()
                    }
                );
            }
            rows.push((
                ran_at,
                batch,
                secs / batch as f64,
                gemm_time / secs,
                flops / batch as f64,
                flops / gemm_time,
                mlp_rate,
            ));
            outs.push(out);
        }
        outputs.push((ran_at, outs));
    }
    println!();
    println!(
        "| workload | precision | batch | s/image | GEMM+attention share | TFLOP/image \
         | GFLOP/s in GEMM ops | linear 5480x1024->4096 GFLOP/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (precision, batch, spi, share, fl, rate, mlp) in rows {
        println!(
            "| {preset_name} zero-shot @{side} | {precision:?} | {batch} | {spi:.2} | {:.1}% \
             | {:.3} | {:.0} | {mlp:.0} |",
            100.0 * share,
            fl / 1e12,
            rate / 1e9
        );
    }
    if let [(Precision::F32, reference), (Precision::Bf16, bf16)] = outputs.as_slice() {
        println!();
        println!("| batch | bf16 vs f32: rel. L2 of image scores | of maps | max abs score diff |");
        println!("|---|---|---|---|");
        for ((batch, want), got) in batches.iter().zip(reference).zip(bf16) {
            let max_diff = got
                .image
                .iter()
                .zip(&want.image)
                .map(|(g, w)| (g - w).abs())
                .fold(0.0f32, f32::max);
            println!(
                "| {batch} | {:.2e} | {:.2e} | {max_diff:.2e} |",
                rel_l2(&got.image, &want.image),
                rel_l2(&got.maps, &want.maps)
            );
        }
    }
    Ok(())
}
