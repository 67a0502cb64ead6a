//! `afclip metrics` and `afclip compare` end to end, on the binary.
//!
//! The maps and masks of two golden cases (tests/golden/metrics) are written out as one
//! `.npy` per image and one `.png` per non-empty mask (images without a mask file are the
//! normal ones), so the metrics the command writes must equal the scikit-learn / official PRO
//! references in expected.json.

use afclip::data::npy::{read_f32_2d, write_f32_2d};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/metrics")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(golden().join("expected.json")).unwrap()).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("afclip_metrics_cli_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn afclip(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_afclip"))
        .args(args)
        .output()
        .expect("run afclip")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes golden case `case` as category `cat`: `maps/cat/NNN.npy`, `masks/cat/NNN.png`.
fn write_case(root: &Path, case: &str, cat: &str, e: &Value) {
    let (n, h, w) = (
        e["n"].as_u64().unwrap() as usize,
        e["h"].as_u64().unwrap() as usize,
        e["w"].as_u64().unwrap() as usize,
    );
    let maps = read_f32_2d(&golden().join(format!("{case}.npy"))).unwrap();
    let masks = image::open(golden().join(format!("{case}_masks.png")))
        .unwrap()
        .to_luma8()
        .into_raw();
    std::fs::create_dir_all(root.join("maps").join(cat)).unwrap();
    std::fs::create_dir_all(root.join("masks").join(cat)).unwrap();
    for i in 0..n {
        let px = i * h * w..(i + 1) * h * w;
        let map_path = root.join(format!("maps/{cat}/{i:03}.npy"));
        write_f32_2d(&map_path, &maps.data[px.clone()], h, w).unwrap();
        if masks[px.clone()].iter().any(|&m| m != 0) {
            image::GrayImage::from_raw(w as u32, h as u32, masks[px].to_vec())
                .unwrap()
                .save(root.join(format!("masks/{cat}/{i:03}.png")))
                .unwrap();
        }
    }
}

fn assert_close(got: &Value, want: &Value, tol: f64, what: &str) {
    match (got.as_f64(), want.as_f64()) {
        (Some(a), Some(b)) => assert!((a - b).abs() <= tol, "{what}: {a} vs {b}"),
        _ => assert_eq!(got, want, "{what}"),
    }
}

#[test]
fn metrics_command_equals_the_references_per_category() {
    let exp = expected();
    let root = scratch("metrics");
    let cases = [("smooth_blobs", "bottle"), ("random_ties", "cable")];
    for (case, cat) in cases {
        write_case(&root, case, cat, &exp["pixel"][case]);
    }
    // Image scores in the `eval` scores.csv layout (header, category column, quoting).
    let img = &exp["image"]["random"];
    let mut csv = String::from("path,category,label,score\n");
    for (i, (s, l)) in img["scores"]
        .as_array()
        .unwrap()
        .iter()
        .zip(img["labels"].as_array().unwrap())
        .enumerate()
    {
        let label = u8::from(l.as_bool().unwrap());
        csv += &format!("\"bottle/img,{i}.png\",bottle,{label},{s}\n");
    }
    std::fs::write(root.join("scores.csv"), csv).unwrap();

    let out_json = root.join("out/metrics.json");
    std::fs::create_dir_all(root.join("out")).unwrap();
    let p = |s: &str| root.join(s).to_string_lossy().into_owned();
    let out = afclip(&[
        "metrics",
        "--maps",
        &p("maps"),
        "--masks",
        &p("masks"),
        "--scores",
        &p("scores.csv"),
        "--out",
        &out_json.to_string_lossy(),
        "--per-dir",
        "--dataset",
        "golden",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: Value = serde_json::from_str(&std::fs::read_to_string(&out_json).unwrap()).unwrap();
    assert_eq!(got["dataset"], "golden");
    for (case, cat) in cases {
        let e = &exp["pixel"][case];
        let g = &got["categories"][cat];
        assert_eq!(g["n_images"], e["n"]);
        for m in ["auroc", "ap", "max_f1"] {
            assert_close(&g["pixel"][m], &e[m], 1e-6, &format!("{cat} {m}"));
        }
        for m in ["pro", "aupro_exact"] {
            assert_close(&g["pixel"][m], &e[m], 1e-5, &format!("{cat} {m}"));
        }
    }
    for m in ["auroc", "ap", "max_f1"] {
        assert_close(&got["categories"]["bottle"]["image"][m], &img[m], 1e-6, m);
    }
    assert!(got["categories"]["cable"].get("image").is_none());
    let mean = got["mean"]["pixel"]["auroc"].as_f64().unwrap();
    let (a, b) = (
        exp["pixel"]["smooth_blobs"]["auroc"].as_f64().unwrap(),
        exp["pixel"]["random_ties"]["auroc"].as_f64().unwrap(),
    );
    assert!((mean - (a + b) / 2.0).abs() < 1e-9);
    // Images without a mask file are the normal ones: reported, not an error.
    assert!(
        text(&out.stderr).contains("have no mask"),
        "{}",
        text(&out.stderr)
    );
    let md = std::fs::read_to_string(root.join("out/metrics.md")).unwrap();
    assert!(md.contains(&format!("({:.1}, ", a * 100.0)), "{md}");
    assert!(text(&out.stdout).contains("| **Mean** |"));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn metrics_command_reports_bad_inputs() {
    let exp = expected();
    let root = scratch("bad");
    write_case(&root, "tiny_regions", "x", &exp["pixel"]["tiny_regions"]);
    let p = |s: &str| root.join(s).to_string_lossy().into_owned();
    // A mask whose size differs from its map.
    image::GrayImage::new(5, 5)
        .save(root.join("masks/x/000.png"))
        .unwrap();
    let out = afclip(&[
        "metrics",
        "--maps",
        &p("maps"),
        "--masks",
        &p("masks"),
        "--out",
        &p("o.json"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("000.png") && err.contains("000.npy"), "{err}");
    // A corrupt map.
    std::fs::remove_file(root.join("masks/x/000.png")).unwrap();
    std::fs::write(root.join("maps/x/001.npy"), b"not numpy").unwrap();
    let out = afclip(&[
        "metrics",
        "--maps",
        &p("maps"),
        "--masks",
        &p("masks"),
        "--out",
        &p("o.json"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("001.npy"),
        "{}",
        text(&out.stderr)
    );
    // A bad score row.
    std::fs::remove_file(root.join("maps/x/001.npy")).unwrap();
    std::fs::write(root.join("s.csv"), "x/a,0.5,1\nx/b,high,0\n").unwrap();
    let out = afclip(&[
        "metrics",
        "--maps",
        &p("maps"),
        "--masks",
        &p("masks"),
        "--scores",
        &p("s.csv"),
        "--out",
        &p("o.json"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("line 2"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn compare_gates_on_drops_beyond_the_tolerance() {
    let root = scratch("compare");
    let base = serde_json::json!({
        "dataset": "mvtec", "image_size": 518, "shots": 0,
        "categories": {
            "bottle": {"n_images": 10,
                       "image": {"auroc": 0.95, "ap": 0.97, "max_f1": 0.9},
                       "pixel": {"auroc": 0.92, "ap": 0.5, "max_f1": 0.5, "pro": 0.85,
                                 "aupro_exact": 0.86}},
            "cable": {"n_images": 8, "image": {"auroc": 0.8, "ap": 0.85, "max_f1": 0.7}}
        },
        "mean": {}
    });
    let mut cur = base.clone();
    cur["categories"]["bottle"]["pixel"]["pro"] = serde_json::json!(0.84);
    let (b, c) = (root.join("base.json"), root.join("cur.json"));
    std::fs::write(&b, base.to_string()).unwrap();
    std::fs::write(&c, cur.to_string()).unwrap();
    let (bs, cs) = (
        b.to_string_lossy().into_owned(),
        c.to_string_lossy().into_owned(),
    );

    let same = afclip(&["compare", &bs, &bs]);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same.stderr));
    assert!(text(&same.stdout).contains("No regressions"));

    let worse = afclip(&["compare", &bs, &cs]);
    assert_eq!(worse.status.code(), Some(1), "{}", text(&worse.stderr));
    let table = text(&worse.stdout);
    assert!(
        table.contains("| bottle |") && table.contains("-1.00 !"),
        "{table}"
    );
    assert!(table.contains("bottle PRO: 85.00 -> 84.00"), "{table}");
    assert!(table.contains("mean PRO"), "{table}");

    let loose = afclip(&["compare", &bs, &cs, "--tolerance", "0.02"]);
    assert_eq!(loose.status.code(), Some(0), "{}", text(&loose.stdout));

    std::fs::write(&c, "{ not json").unwrap();
    let broken = afclip(&["compare", &bs, &cs]);
    assert_eq!(broken.status.code(), Some(2));
    assert!(
        text(&broken.stderr).contains("cur.json"),
        "{}",
        text(&broken.stderr)
    );
    let _ = std::fs::remove_dir_all(&root);
}
