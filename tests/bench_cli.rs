//! `afclip bench` end to end on the tiny preset: every stage timed for every batch size, the
//! FLOP counts those of the model's sizes (recomputed here from the preset), rates positive,
//! and bad flags refused with a message.

use afclip::model::random::preset;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn afclip(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_afclip"))
        .args(args)
        .output()
        .expect("afclip runs")
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

#[test]
fn tiny_bench_reports_every_stage_and_the_configs_flops() {
    let dir = std::env::temp_dir().join(format!("afclip-bench-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let json_path: PathBuf = dir.join("out.json");
    let o = afclip(&[
        "bench",
        "--device",
        "cpu",
        "--preset",
        "tiny",
        "--image-size",
        "112",
        "--batch-sizes",
        "2,3",
        "--images",
        "4",
        "--source-size",
        "256",
        "--iters",
        "2",
        "--json",
        json_path.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("| aggregation + adaptor |"), "{stdout}");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();

    // SPEC §12's count for the tiny preset at 112 px: grid 8, 65 tokens, 4 blocks, 12 sets.
    let cfg = preset("tiny").unwrap();
    let (d, m, e, p) = (
        cfg.vision_width as f64,
        cfg.vision_mlp as f64,
        cfg.embed_dim as f64,
        cfg.patch as f64,
    );
    let n = (112.0 / p) * (112.0 / p);
    let t = n + 1.0;
    let vision =
        2.0 * n * 3.0 * p * p * d + 4.0 * (2.0 * t * d * (3.0 * d + d + 2.0 * m) + 4.0 * t * t * d);
    let adaptor = 12.0 * (2.0 * t * d * 3.0 * 512.0 + 4.0 * t * t * 512.0 + 2.0 * t * 512.0 * d);
    let projection = 12.0 * 2.0 * t * d * e;
    let flops = &j["flops_per_image"];
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
    assert!(close(num(flops, "vision"), vision), "{flops}");
    assert!(close(num(flops, "adaptor"), adaptor), "{flops}");
    assert!(close(num(flops, "projection"), projection), "{flops}");
    assert!(
        close(num(flops, "total"), vision + adaptor + projection),
        "{flops}"
    );
    assert_eq!(j["config"]["tokens"], 65);
    assert_eq!(j["config"]["sets"], 12);
    assert_eq!(j["preset"], "tiny");

    let gemm = &j["gemm"];
    assert!(num(gemm, "tflops") > 0.0, "{gemm}");
    assert_eq!(gemm["in"], cfg.vision_width);
    assert_eq!(gemm["out"], cfg.vision_mlp);

    let batches = j["batches"].as_array().unwrap();
    assert_eq!(
        batches
            .iter()
            .map(|b| b["batch"].clone())
            .collect::<Vec<_>>(),
        [2, 3]
    );
    for b in batches {
        let batch = b["batch"].as_u64().unwrap();
        assert_eq!(b["images"].as_u64().unwrap(), 2 * batch);
        let mut sum = 0.0;
        for stage in [
            "decode",
            "upload",
            "vision",
            "aggregation_adaptor",
            "scores",
            "maps",
            "writing",
        ] {
            let s = &b["stages"][stage];
            let ms = num(s, "ms_per_image");
            assert!(ms > 0.0 && ms.is_finite(), "{stage}: {s}");
            assert!(close(num(s, "images_per_s"), 1e3 / ms), "{stage}: {s}");
            sum += ms;
        }
        assert!(
            (num(b, "stage_sum_ms_per_image") - sum).abs() < 1e-6 * sum,
            "{b}"
        );
        assert!(num(b, "pipelined_images_per_s") > 0.0, "{b}");
        assert!(num(b, "vision_tflops") > 0.0, "{b}");
        assert!(num(b, "vision_percent_of_gemm") > 0.0, "{b}");
        // The profiler's count of the GEMMs that ran equals the count from the config.
        let measured = &b["measured_flops_per_image"];
        assert!(close(num(measured, "vision"), vision), "{measured}");
        assert!(
            close(
                num(measured, "adaptor_and_projection"),
                adaptor + projection
            ),
            "{measured}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_flags_are_one_line_errors() {
    for (args, want) in [
        (
            vec!["--preset", "tiny", "--batch-sizes", "0"],
            "--batch-sizes",
        ),
        (
            vec!["--preset", "tiny", "--image-size", "100"],
            "multiple of",
        ),
        (vec!["--preset", "tiny", "--iters", "0"], "--iters"),
        (vec!["--preset", "huge"], "unknown model preset"),
    ] {
        let mut all = vec!["bench", "--device", "cpu"];
        all.extend(args);
        let o = afclip(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{all:?} succeeded");
        assert!(err.contains(want), "{all:?}: {err}");
    }
}
