//! One full training step against the PyTorch golden (`tests/golden/make_train_golden.py`):
//! the tiny CLIP and head of zero_shot/, a batch of 4 images (2 with masks) at S = 98. Loss
//! within 1e-5 relative, every gradient within 1e-4 relative L2, the parameters after one
//! Adam step within 1e-6; then the same through `afclip train --no-shuffle --max-steps 1`.
//!
//! Adam's first step moves each parameter by about `lr·sign(g)`, so an element whose gradient
//! is below f32 resolution of the sums behind it (|g| < 1e-5 of the tensor's RMS gradient; 1
//! of 65,536 in to_q and to_k here) can move the other way. Such elements (at most 1e-4 of a
//! tensor) are counted, not compared; Adam itself is checked on every element by applying it
//! to the golden gradients.

use afclip::backend::cpu::CpuBackend;
use afclip::data::layouts::{load_dataset, DatasetKind};
use afclip::model::checkpoint::{find_weights, Checkpoint};
use afclip::model::head::Head;
use afclip::model::tensors::TensorFile;
use afclip::model::tokenizer::ClipTokenizer;
use afclip::train::features::{FeatureCache, TrainSample};
use afclip::train::optim::Adam;
use afclip::train::params::{tensors, NAMES};
use afclip::train::step::{StepOptions, TrainModel};
use std::path::{Path, PathBuf};
use std::process::Command;

const SIDE: usize = 98;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = want
        .iter()
        .map(|b| f64::from(*b).powi(2))
        .sum::<f64>()
        .sqrt();
    num / den
}

fn max_abs(got: &[f32], want: &[f32]) -> f32 {
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// Updated parameters within 1e-6, except gradients too small to carry a sign (see above).
fn check_updates(got: &afclip::model::head::Head, expected: &TensorFile) {
    for (name, p) in NAMES.iter().zip(tensors(got)) {
        let want = expected.read_any(&format!("updated.{name}")).unwrap().data;
        let grad = expected.read_any(&format!("grad.{name}")).unwrap().data;
        let rms =
            (grad.iter().map(|g| f64::from(*g).powi(2)).sum::<f64>() / grad.len() as f64).sqrt();
        let mut skipped = 0;
        for ((a, b), g) in p.iter().zip(&want).zip(&grad) {
            if f64::from(g.abs()) < 1e-5 * rms {
                skipped += 1;
                continue;
            }
            assert!(
                (a - b).abs() <= 1e-6,
                "updated {name}: {a} vs {b} (gradient {g})"
            );
        }
        assert!(
            skipped as f64 <= 1e-4 * p.len() as f64,
            "{name}: {skipped} gradients below resolution"
        );
    }
}

fn samples() -> Vec<TrainSample> {
    let cats = load_dataset(DatasetKind::Mvtec, &golden().join("train/data"), None).unwrap();
    cats.iter()
        .flat_map(|c| c.test.iter())
        .map(|s| TrainSample {
            path: s.path.clone(),
            label: if s.label == Some(true) { 1.0 } else { 0.0 },
            mask: s.mask.clone(),
            binarise_mask: s.binarise_mask,
        })
        .collect()
}

#[test]
fn one_step_matches_pytorch() {
    let model_dir = golden().join("zero_shot/openai");
    let ckpt = Checkpoint::load(&find_weights(&model_dir, None).unwrap()).unwrap();
    let tok = ClipTokenizer::from_model_dir(&model_dir).unwrap();
    let mut head = Head::load(&golden().join("zero_shot/head.safetensors"), &ckpt.config).unwrap();
    let expected = TensorFile::open(&golden().join("train/expected.safetensors")).unwrap();
    let be = CpuBackend::new(Some(2)).unwrap();
    let samples = samples();
    assert_eq!(samples.len(), 4);
    let tmp = std::env::temp_dir().join(format!("afclip-train-step-{}", std::process::id()));
    // RAM, then a budget of 0 bytes: the memory-mapped store must give identical results.
    let mut results = Vec::new();
    for budget in [u64::MAX, 0] {
        let mut cache = FeatureCache::new(
            &be,
            &ckpt,
            samples.clone(),
            SIDE,
            &[1, 2, 3, 4],
            budget,
            &tmp,
        )
        .unwrap();
        assert_eq!(cache.is_mapped(), budget == 0);
        let batch = cache.batch(&be, &[0, 1, 2, 3]).unwrap();
        assert_eq!(
            batch.masks,
            expected.read_any("masks").unwrap().data,
            "downsampled masks"
        );
        let model = TrainModel::new(
            CpuBackend::new(Some(2)).unwrap(),
            &ckpt,
            &tok,
            SIDE,
            StepOptions::default(),
        )
        .unwrap();
        results.push(model.step(&head, &batch).unwrap());
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let out = &results[0];
    assert_eq!(out.losses.total, results[1].losses.total);
    let want = expected.read_any("losses").unwrap().data;
    let got = [
        out.losses.total,
        out.losses.image_focal,
        out.losses.patch_focal,
        out.losses.patch_l1,
        out.losses.alignment,
    ];
    eprintln!("losses {got:?} vs {want:?}");
    assert!(want[4] > 0.0, "the golden must exercise the alignment loss");
    for (g, w) in got.iter().zip(&want) {
        let rel = (g - f64::from(*w)).abs() / f64::from(w.abs()).max(1e-12);
        assert!(rel <= 1e-5, "loss term {g} vs {w} (relative {rel:.2e})");
    }
    for (name, grad) in NAMES.iter().zip(tensors(&out.grads)) {
        let want = expected.read_any(&format!("grad.{name}")).unwrap().data;
        let rel = rel_l2(grad, &want);
        eprintln!("grad {name}: relative L2 {rel:.2e}");
        assert!(
            rel <= 1e-4,
            "gradient of {name}: relative L2 error {rel:.2e}"
        );
    }
    // Adam on the golden gradients: every element.
    let mut golden_grads =
        Head::load(&golden().join("zero_shot/head.safetensors"), &ckpt.config).unwrap();
    for (name, g) in NAMES
        .iter()
        .zip(afclip::train::params::tensors_mut(&mut golden_grads))
    {
        *g = expected.read_any(&format!("grad.{name}")).unwrap().data;
    }
    let mut from_golden =
        Head::load(&golden().join("zero_shot/head.safetensors"), &ckpt.config).unwrap();
    Adam::new(1e-4, &from_golden)
        .update(&mut from_golden, &golden_grads)
        .unwrap();
    for (name, p) in NAMES.iter().zip(tensors(&from_golden)) {
        let want = expected.read_any(&format!("updated.{name}")).unwrap().data;
        let err = max_abs(p, &want);
        assert!(
            err <= 1e-6,
            "Adam on golden gradients, {name}: max abs error {err:.2e}"
        );
    }
    // Adam on afclip's gradients.
    let mut adam = Adam::new(1e-4, &head);
    adam.update(&mut head, &out.grads).unwrap();
    check_updates(&head, &expected);
}

#[test]
fn train_cli_one_step_matches_pytorch() {
    let out = std::env::temp_dir().join(format!("afclip-train-cli-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let head_out = out.join("head.safetensors");
    let status = Command::new(env!("CARGO_BIN_EXE_afclip"))
        .args(["train", "--model"])
        .arg(golden().join("zero_shot/openai"))
        .arg("--data")
        .arg(golden().join("train/data"))
        .args([
            "--dataset",
            "mvtec",
            "--image-size",
            "98",
            "--layers",
            "1,2,3,4",
        ])
        .args([
            "--batch-size",
            "4",
            "--no-shuffle",
            "--max-steps",
            "1",
            "--threads",
            "2",
        ])
        .arg("--init-head")
        .arg(golden().join("zero_shot/head.safetensors"))
        .arg("--out")
        .arg(&head_out)
        .status()
        .unwrap();
    assert!(status.success());
    let model_dir = golden().join("zero_shot/openai");
    let ckpt = Checkpoint::load(&find_weights(&model_dir, None).unwrap()).unwrap();
    let got = Head::load(&head_out, &ckpt.config).unwrap();
    let expected = TensorFile::open(&golden().join("train/expected.safetensors")).unwrap();
    check_updates(&got, &expected);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn repeated_steps_reduce_the_loss() {
    let model_dir = golden().join("zero_shot/openai");
    let ckpt = Checkpoint::load(&find_weights(&model_dir, None).unwrap()).unwrap();
    let tok = ClipTokenizer::from_model_dir(&model_dir).unwrap();
    let mut head = Head::load(&golden().join("zero_shot/head.safetensors"), &ckpt.config).unwrap();
    let be = CpuBackend::new(Some(2)).unwrap();
    let tmp = std::env::temp_dir();
    let mut cache =
        FeatureCache::new(&be, &ckpt, samples(), SIDE, &[1, 2, 3, 4], u64::MAX, &tmp).unwrap();
    let batch = cache.batch(&be, &[0, 1, 2, 3]).unwrap();
    let model = TrainModel::new(be, &ckpt, &tok, SIDE, StepOptions::default()).unwrap();
    let mut adam = Adam::new(1e-3, &head);
    let first = model.step(&head, &batch).unwrap();
    adam.update(&mut head, &first.grads).unwrap();
    let mut last = first.losses.total;
    for _ in 0..9 {
        let out = model.step(&head, &batch).unwrap();
        adam.update(&mut head, &out.grads).unwrap();
        last = out.losses.total;
    }
    assert!(
        last < 0.5 * first.losses.total,
        "loss {} -> {last} after 10 steps",
        first.losses.total
    );
}
