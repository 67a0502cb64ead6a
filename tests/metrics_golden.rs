//! afclip's metrics against the reference procedures (scikit-learn, scikit-image, the
//! official 200-threshold PRO loop, the MVTec AUPRO code) on the golden cases written by
//! tests/golden/make_metrics_golden.py: AUROC/AP/max-F1 within 1e-6, PRO and aupro_exact
//! within 1e-5, and `null` exactly where the reference cannot compute a value.

use afclip::data::npy::read_f32_2d;
use afclip::metrics::pixel::{pixel_metrics, PixelImage};
use afclip::metrics::ranking::image_metrics;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/metrics")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Compares one metric; returns its absolute error (0 when both are null).
fn check(case: &str, name: &str, ours: Option<f64>, reference: &Value, tol: f64) -> f64 {
    match (ours, reference.as_f64()) {
        (Some(a), Some(b)) => {
            let err = (a - b).abs();
            assert!(
                err <= tol,
                "{case} {name}: ours {a}, reference {b}, error {err:e}"
            );
            err
        }
        (None, None) => 0.0,
        (a, _) => panic!("{case} {name}: ours {a:?}, reference {reference}"),
    }
}

#[test]
fn pixel_metrics_equal_the_reference() {
    let exp = expected();
    let cases = exp["pixel"].as_object().unwrap();
    assert!(cases.len() >= 10);
    let (mut worst_rank, mut worst_pro) = (0f64, 0f64);
    for (name, e) in cases {
        let n = e["n"].as_u64().unwrap() as usize;
        let h = e["h"].as_u64().unwrap() as usize;
        let w = e["w"].as_u64().unwrap() as usize;
        let maps = read_f32_2d(&dir().join(format!("{name}.npy"))).unwrap();
        assert_eq!((maps.rows, maps.cols), (n * h, w));
        let masks = image::open(dir().join(format!("{name}_masks.png")))
            .unwrap()
            .to_luma8()
            .into_raw();
        assert_eq!(masks.len(), n * h * w);
        let images: Vec<PixelImage> = (0..n)
            .map(|i| PixelImage {
                scores: &maps.data[i * h * w..(i + 1) * h * w],
                mask: &masks[i * h * w..(i + 1) * h * w],
                height: h,
                width: w,
            })
            .collect();
        let mut warnings = Vec::new();
        let m = pixel_metrics(&images, name, &mut warnings).unwrap();
        for (metric, ours) in [("auroc", m.auroc), ("ap", m.ap), ("max_f1", m.max_f1)] {
            worst_rank = worst_rank.max(check(name, metric, ours, &e[metric], 1e-6));
        }
        for (metric, ours) in [("pro", m.pro), ("aupro_exact", m.aupro_exact)] {
            worst_pro = worst_pro.max(check(name, metric, ours, &e[metric], 1e-5));
        }
        let nulls = [m.auroc, m.pro, m.aupro_exact]
            .iter()
            .filter(|v| v.is_none())
            .count();
        assert_eq!(warnings.is_empty(), nulls == 0, "{name}: {warnings:?}");
    }
    eprintln!("worst error: AUROC/AP/max-F1 {worst_rank:e}, PRO/aupro_exact {worst_pro:e}");
}

#[test]
fn image_metrics_equal_scikit_learn() {
    let exp = expected();
    let cases = exp["image"].as_object().unwrap();
    let mut worst = 0f64;
    for (name, e) in cases {
        let scores: Vec<f64> = e["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let labels: Vec<bool> = e["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_bool().unwrap())
            .collect();
        let mut warnings = Vec::new();
        let m = image_metrics(&scores, &labels, name, &mut warnings).unwrap();
        for (metric, ours) in [("auroc", m.auroc), ("ap", m.ap), ("max_f1", m.max_f1)] {
            worst = worst.max(check(name, metric, ours, &e[metric], 1e-6));
        }
        assert_eq!(
            warnings.is_empty(),
            m.auroc.is_some(),
            "{name}: {warnings:?}"
        );
    }
    eprintln!("worst error: image AUROC/AP/max-F1 {worst:e}");
}
