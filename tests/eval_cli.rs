//! `afclip eval` end to end on a synthetic MVTec-style set with a random tiny CLIP: the
//! metrics.json schema, scores.csv rows, per-category counts, and a corrupt image that becomes
//! an error row without stopping the evaluation.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn afclip(args: &[&str]) -> std::process::Output {
    let o = Command::new(env!("CARGO_BIN_EXE_afclip"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "afclip {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn eval_writes_the_schema_and_survives_a_corrupt_image() {
    let dir: PathBuf = std::env::temp_dir().join(format!("afclip-eval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (model, data, out) = (dir.join("model"), dir.join("data"), dir.join("out"));
    afclip(&["init-model", "--preset", "tiny", "--out", s(&model)]);
    afclip(&[
        "synth",
        "--out",
        s(&data),
        "--layout",
        "mvtec",
        "--categories",
        "2",
        "--images",
        "6",
        "--size",
        "96x96",
        "--seed",
        "5",
    ]);
    let cats: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let victim = data.join(&cats[1]).join("test/good/000.png");
    std::fs::write(&victim, b"garbage").unwrap();
    // Mask policy: a colour mask is an error row; a mask of another size is resized, warned.
    let masks = |cat: &str| {
        let mut v: Vec<PathBuf> = Vec::new();
        for d in std::fs::read_dir(data.join(cat).join("ground_truth")).unwrap() {
            for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
                v.push(f.unwrap().path());
            }
        }
        v.sort();
        v
    };
    let colour = masks(&cats[0])[0].clone();
    image::RgbImage::from_pixel(96, 96, image::Rgb([255, 0, 0]))
        .save(&colour)
        .unwrap();
    let small = masks(&cats[1])[0].clone();
    let m = image::open(&small).unwrap().to_luma8();
    image::imageops::resize(&m, 48, 48, image::imageops::FilterType::Nearest)
        .save(&small)
        .unwrap();
    let o = afclip(&[
        "eval",
        "--model",
        s(&model),
        "--init-seed",
        "1",
        "--image-size",
        "56",
        "--data",
        s(&data),
        "--dataset",
        "mvtec",
        "--out",
        s(&out),
        "--batch-size",
        "4",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("000.png"),
        "the corrupt image is reported: {stderr}"
    );

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(json["dataset"], "mvtec");
    assert_eq!(json["image_size"], 56);
    for cat in &cats {
        let c = &json["categories"][cat];
        assert_eq!(c["n_images"], 5, "{cat} lost exactly its one bad sample");
        for m in ["auroc", "ap", "max_f1"] {
            let v = c["image"][m].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{cat} image {m} = {v}");
        }
        for m in ["auroc", "ap", "max_f1", "pro", "aupro_exact"] {
            let v = c["pixel"][m].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v.abs()), "{cat} pixel {m} = {v}");
        }
    }
    let mean = json["mean"]["image"]["auroc"].as_f64().unwrap();
    let a = json["categories"][&cats[0]]["image"]["auroc"]
        .as_f64()
        .unwrap();
    let b = json["categories"][&cats[1]]["image"]["auroc"]
        .as_f64()
        .unwrap();
    assert!((mean - (a + b) / 2.0).abs() < 1e-12);

    let csv = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "path,category,label,score,status,error");
    assert_eq!(lines.len(), 1 + 12);
    let bad: Vec<&&str> = lines.iter().filter(|l| l.contains(",error,")).collect();
    assert_eq!(bad.len(), 2);
    assert!(bad.iter().any(|l| l.contains("not single-channel")));
    let corrupt = format!("{}/test/good/000.png,{},0,,error,", cats[1], cats[1]);
    assert!(bad.iter().any(|l| l.starts_with(&corrupt)), "{bad:?}");
    assert!(std::fs::read_to_string(out.join("metrics.md"))
        .unwrap()
        .contains("Mean"));
    std::fs::remove_dir_all(&dir).unwrap();
}
