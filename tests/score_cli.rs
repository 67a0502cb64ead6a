//! `afclip score` end to end on the golden tiny model: scores and maps equal the PyTorch
//! reference, a broken image becomes an error row without stopping the run, output is
//! byte-identical across runs, and every kind of bad model input is a one-line error.

use afclip::data::npy::read_f32_2d;
use afclip::model::head::Head;
use afclip::model::random::preset;
use afclip::model::tensors::{write_f32, TensorFile};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/zero_shot")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("afclip-score-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn afclip(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_afclip"))
        .args(args)
        .output()
        .expect("afclip runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn scores_and_maps_match_the_reference_and_bad_images_do_not_stop_the_run() {
    let dir = temp_dir("e2e");
    let inputs = dir.join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    for entry in std::fs::read_dir(golden().join("images")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, inputs.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(inputs.join("b_broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let model = golden().join("openai");
    let head = golden().join("head.safetensors");
    let run = |out: &Path| {
        let o = afclip(&[
            "score",
            "--model",
            s(&model),
            "--head",
            s(&head),
            "--image-size",
            "98",
            "--batch-size",
            "2",
            "--save-maps",
            "npy",
            "--allow-errors",
            "--out",
            s(out),
            s(&inputs),
        ]);
        assert!(o.status.success(), "score failed: {}", stderr(&o));
        std::fs::read_to_string(out.join("scores.csv")).unwrap()
    };
    let csv = run(&dir.join("out1"));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "path,score,status,error");
    let names: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(
        names,
        ["a_grey.png", "b_broken.png", "b_rgba.png", "c_rgb.png"]
    );
    assert!(lines[2].starts_with("b_broken.png,,error,"), "{}", lines[2]);
    assert!(
        lines[2].contains("b_broken.png"),
        "error names the file: {}",
        lines[2]
    );

    let expected = TensorFile::open(&golden().join("expected.safetensors")).unwrap();
    let want_scores = expected.read_any("image_scores").unwrap().data;
    let want_maps = expected.read_any("maps").unwrap().data;
    let good = [(1usize, "a_grey"), (3, "b_rgba"), (4, "c_rgb")];
    for (k, &(line, stem)) in good.iter().enumerate() {
        let fields: Vec<&str> = lines[line].split(',').collect();
        assert_eq!(fields[2], "ok");
        let score: f32 = fields[1].parse().unwrap();
        assert!(
            (score - want_scores[k]).abs() <= 1e-4,
            "{stem}: {score} vs {}",
            want_scores[k]
        );
        let map = read_f32_2d(&dir.join("out1/maps").join(format!("{stem}.npy"))).unwrap();
        assert_eq!((map.rows, map.cols), (98, 98));
        let d = map
            .data
            .iter()
            .zip(&want_maps[k * 98 * 98..(k + 1) * 98 * 98])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d <= 1e-4, "{stem}: map differs by {d}");
    }
    assert!(!dir.join("out1/scores.csv.partial").exists());

    let again = run(&dir.join("out2"));
    assert_eq!(csv, again, "two runs give different scores.csv");
    let m1 = std::fs::read(dir.join("out1/maps/c_rgb.npy")).unwrap();
    let m2 = std::fs::read(dir.join("out2/maps/c_rgb.npy")).unwrap();
    assert_eq!(m1, m2, "two runs give different maps");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Changes one named tensor (its shape and data) before a model file is rewritten.
type TensorEdit = dyn Fn(&str, &mut Vec<usize>, &mut Vec<f32>);

/// Runs `score` on the golden images with `model_dir` and extra flags; returns stderr of a run
/// that must fail.
fn failing_score(model_dir: &Path, extra: &[&str]) -> String {
    let out = temp_dir("fail-out");
    let head = golden().join("head.safetensors");
    let images = golden().join("images");
    let mut args = vec!["score", "--model", s(model_dir), "--out", s(&out)];
    if !extra.contains(&"--init-seed") {
        args.extend(["--head", s(&head)]);
    }
    args.extend(extra);
    args.push(s(&images));
    let o = afclip(&args);
    assert!(!o.status.success(), "expected failure for {extra:?}");
    let err = stderr(&o);
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "not a one-line error: {err}");
    err
}

#[test]
fn bad_model_inputs_are_one_line_errors() {
    let model = golden().join("openai");
    let err = failing_score(&golden().join("no-such-dir"), &[]);
    assert!(err.contains("no-such-dir"), "{err}");

    let err = failing_score(&model, &["--image-size", "100"]);
    assert!(
        err.contains("multiple of the model's patch size 14"),
        "{err}"
    );

    let err = failing_score(&model, &["--layers", "2,9", "--image-size", "98"]);
    assert!(err.contains("feature layer 9"), "{err}");

    let two = temp_dir("two");
    for name in ["a.safetensors", "b.safetensors"] {
        std::fs::copy(model.join("model.safetensors"), two.join(name)).unwrap();
    }
    let err = failing_score(&two, &["--image-size", "98"]);
    assert!(err.contains("--weights"), "{err}");

    let file = TensorFile::open(&model.join("model.safetensors")).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = file
        .names()
        .into_iter()
        .map(|n| {
            let t = file.read_any(&n).unwrap();
            (n, t.shape, t.data)
        })
        .collect();
    let write = |dir: &Path, edit: &TensorEdit| {
        let mut ts = tensors.clone();
        for (n, shape, data) in ts.iter_mut() {
            edit(n, shape, data);
        }
        let list: Vec<(String, Vec<usize>, &[f32])> = ts
            .iter()
            .map(|(n, s, d)| (n.clone(), s.clone(), d.as_slice()))
            .collect();
        write_f32(&dir.join("model.safetensors"), &list).unwrap();
    };
    let nan = temp_dir("nan");
    write(&nan, &|n, _, d| {
        if n == "visual.ln_pre.weight" {
            d[3] = f32::NAN;
        }
    });
    let err = failing_score(&nan, &["--image-size", "98"]);
    assert!(
        err.contains("visual.ln_pre.weight") && err.contains("non-finite"),
        "{err}"
    );

    let shape = temp_dir("shape");
    write(&shape, &|n, s, d| {
        if n == "visual.transformer.resblocks.1.mlp.c_fc.bias" {
            d.pop();
            s[0] -= 1;
        }
    });
    let err = failing_score(&shape, &["--image-size", "98"]);
    assert!(
        err.contains("visual.transformer.resblocks.1.mlp.c_fc.bias")
            && err.contains("[511]")
            && err.contains("[512]"),
        "{err}"
    );

    let other = temp_dir("other-width");
    let mut cfg = preset("tiny").unwrap();
    cfg.vision_width = 192;
    let wide_head = other.join("head.safetensors");
    Head::init(&cfg, 0).save(&wide_head).unwrap();
    let o = afclip(&[
        "score",
        "--model",
        s(&model),
        "--head",
        s(&wide_head),
        "--image-size",
        "98",
        "--out",
        s(&other),
        s(&golden().join("images")),
    ]);
    let err = stderr(&o);
    assert!(!o.status.success() && !err.contains("panicked"), "{err}");
    assert!(
        err.contains("vision width") && err.contains("192") && err.contains("128"),
        "{err}"
    );

    let err = failing_score(
        &model,
        &["--init-seed", "3", "--image-size", "98", "--device", "tpu"],
    );
    assert!(err.contains("tpu"), "{err}");
    for d in [two, nan, shape, other] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn score_with_a_bank_matches_the_few_shot_reference() {
    let dir = temp_dir("bank");
    let model = golden().join("openai");
    let head = golden().join("head.safetensors");
    let fewshot = golden().parent().unwrap().join("fewshot");
    let bank = dir.join("bank.safetensors");
    let o = afclip(&[
        "bank",
        "build",
        "--model",
        s(&model),
        "--image-size",
        "98",
        "--out",
        s(&bank),
        s(&fewshot.join("reference.png")),
    ]);
    assert!(o.status.success(), "bank build failed: {}", stderr(&o));
    let out = dir.join("out");
    let o = afclip(&[
        "score",
        "--model",
        s(&model),
        "--head",
        s(&head),
        "--image-size",
        "98",
        "--bank",
        s(&bank),
        "--out",
        s(&out),
        s(&golden().join("images")),
    ]);
    assert!(o.status.success(), "score --bank failed: {}", stderr(&o));
    let csv = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    let got: Vec<f32> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    let expected = TensorFile::open(&fewshot.join("expected.safetensors")).unwrap();
    let want = expected.read_any("image_scores").unwrap().data;
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-4, "few-shot score {g} vs reference {w}");
    }
    let o = afclip(&[
        "score",
        "--model",
        s(&model),
        "--head",
        s(&head),
        "--image-size",
        "84",
        "--bank",
        s(&bank),
        "--out",
        s(&dir.join("out84")),
        s(&golden().join("images")),
    ]);
    assert!(
        !o.status.success(),
        "a bank built at another image size is refused"
    );
    assert!(stderr(&o).contains("image size"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}
