//! `afclip demo` learns (issue 5): on a smaller configuration than the default (fewer steps),
//! training on synthetic categories lifts the held-out categories' mean image AUROC from
//! chance to at least 0.85, and the demo writes everything its report names.

use afclip::backend::cpu::Precision;
use afclip::cli::common::BackendArgs;
use afclip::cli::demo::{run_demo, Args};

#[test]
fn demo_training_lifts_held_out_image_auroc_above_085() {
    let out = std::env::temp_dir().join(format!("afclip-demo-test-{}", std::process::id()));
    let args = Args {
        out: out.clone(),
        seed: 0,
        train_categories: 12,
        eval_categories: 4,
        images: 24,
        steps: 150,
        batch_size: 8,
        lr: 1e-3,
        image_size: 224,
        defect_scale: 3.0,
        backend: BackendArgs {
            device: "cpu".into(),
            threads: None,
            precision: Precision::F32,
        },
    };
    let result = run_demo(&args).unwrap();
    let image_auroc = |r: &afclip::metrics::report::MetricsReport| {
        r.mean()
            .image
            .and_then(|m| m.auroc)
            .expect("the held-out categories have normal and anomalous images")
    };
    let (before, after) = (image_auroc(&result.before), image_auroc(&result.after));
    eprintln!(
        "held-out image AUROC {before:.3} -> {after:.3} in {:.0} s",
        result.seconds
    );
    assert_eq!(result.after.categories.len(), 4, "four held-out categories");
    assert!(
        (0.3..=0.7).contains(&before),
        "a fresh head should score near chance, got {before:.3}"
    );
    assert!(
        after >= 0.85,
        "held-out image AUROC after training {after:.3} < 0.85"
    );
    for file in [
        "report.md",
        "head.safetensors",
        "before/metrics.json",
        "after/metrics.json",
    ] {
        assert!(out.join(file).is_file(), "demo did not write {file}");
    }
    let heatmaps = std::fs::read_dir(out.join("heatmaps")).unwrap().count();
    assert_eq!(
        heatmaps, 8,
        "one anomalous and one normal heatmap per held-out category"
    );
    std::fs::remove_dir_all(&out).unwrap();
}
