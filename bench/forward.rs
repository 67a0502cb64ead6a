//! Full-size zero-shot forward on the CPU backend: random ViT-L/14@336 weights (generated here,
//! not downloaded), 518 px, batch 1 and 4, maps included. Prints seconds per image, the share
//! of time in GEMM-bound ops and their throughput, and the floor implied by SPEC §12.
//!
//! Run: `cargo bench --bench forward` (env: AFCLIP_BENCH_PRESET=vit-l-14-336,
//! AFCLIP_BENCH_SIZE=518, AFCLIP_BENCH_BATCHES=1,4, AFCLIP_BENCH_THREADS=<all>).

use afclip::backend::cpu::CpuBackend;
use afclip::backend::profile::Profiled;
use afclip::model::afclip::{AfClip, ModelOptions};
use afclip::model::head::Head;
use afclip::model::random::{preset, random_checkpoint};
use afclip::model::tokenizer::ClipTokenizer;
use afclip::rng::Rng;
use anyhow::Result;
use std::time::Instant;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
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
    let cfg = preset(&preset_name)?;
    let t0 = Instant::now();
    let ckpt = random_checkpoint(&cfg, 0);
    let head = Head::init(&cfg, 0);
    let be = Profiled::new(CpuBackend::new(threads)?);
    let opts = ModelOptions {
        image_size: side,
        layers: None,
    };
    let model = AfClip::new(be, &ckpt, &head, &ClipTokenizer::builtin()?, &opts)?;
    drop(ckpt);
    eprintln!(
        "{} at {side} px on {}: model ready in {:.1} s",
        preset_name,
        afclip::backend::Backend::name(model.backend()),
        t0.elapsed().as_secs_f64()
    );
    let mut rng = Rng::new(1);
    let mut rows = Vec::new();
    for &batch in &batches {
        let pixels: Vec<f32> = (0..batch * 3 * side * side).map(|_| rng.normal()).collect();
        if rows.is_empty() {
            model.score(&pixels[..3 * side * side], 1, true)?;
        }
        model.backend().reset();
        let start = Instant::now();
        let out = model.score(&pixels, batch, true)?;
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
            batch,
            secs / batch as f64,
            gemm_time / secs,
            flops / batch as f64,
            flops / gemm_time,
        ));
    }
    println!();
    println!(
        "| workload | batch | s/image | GEMM+attention share | TFLOP/image | GFLOP/s in GEMM ops |"
    );
    println!("|---|---|---|---|---|---|");
    for (batch, spi, share, fl, rate) in rows {
        println!(
            "| {preset_name} zero-shot @{side} | {batch} | {spi:.2} | {:.1}% | {:.3} | {:.0} |",
            100.0 * share,
            fl / 1e12,
            rate / 1e9
        );
    }
    Ok(())
}
