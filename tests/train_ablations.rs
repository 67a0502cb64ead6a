//! Ablation switches (paper Tables 4 and 6): `train --no-adaptor` moves only the prompt;
//! a trained step's loss without aggregation / adaptor equals the loss of the zero-shot
//! scorer with the same switches (`AfClip::set_ablations`, what `eval --no-aggregation
//! --no-adaptor` uses); `--no-alignment-loss` drops exactly the alignment term.

use afclip::backend::cpu::CpuBackend;
use afclip::data::layouts::{load_dataset, DatasetKind};
use afclip::data::preprocess::load_image;
use afclip::model::afclip::{AfClip, ModelOptions};
use afclip::model::checkpoint::{find_weights, Checkpoint};
use afclip::model::head::Head;
use afclip::model::tokenizer::ClipTokenizer;
use afclip::train::features::{FeatureCache, TrainSample};
use afclip::train::losses::focal_loss;
use afclip::train::optim::Adam;
use afclip::train::params::{tensors, NAMES};
use afclip::train::step::{StepOptions, TrainModel};
use std::path::{Path, PathBuf};

const SIDE: usize = 98;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn ablations_agree_between_training_and_scoring() {
    let model_dir = golden().join("zero_shot/openai");
    let ckpt = Checkpoint::load(&find_weights(&model_dir, None).unwrap()).unwrap();
    let tok = ClipTokenizer::from_model_dir(&model_dir).unwrap();
    let head = Head::load(&golden().join("zero_shot/head.safetensors"), &ckpt.config).unwrap();
    let cats = load_dataset(DatasetKind::Mvtec, &golden().join("train/data"), None).unwrap();
    let samples: Vec<TrainSample> = cats[0]
        .test
        .iter()
        .map(|s| TrainSample {
            path: s.path.clone(),
            label: f32::from(u8::from(s.label == Some(true))),
            mask: s.mask.clone(),
            binarise_mask: false,
        })
        .collect();
    let labels: Vec<f32> = samples.iter().map(|s| s.label).collect();
    let be = CpuBackend::new(Some(2)).unwrap();
    let tmp = std::env::temp_dir();
    let mut cache = FeatureCache::new(
        &be,
        &ckpt,
        samples.clone(),
        SIDE,
        &[1, 2, 3, 4],
        u64::MAX,
        &tmp,
    )
    .unwrap();
    let batch = cache.batch(&be, &[0, 1, 2, 3]).unwrap();
    let pixels: Vec<f32> = samples
        .iter()
        .flat_map(|s| load_image(&s.path, SIDE).unwrap().tensor)
        .collect();
    let opts = ModelOptions {
        image_size: SIDE,
        layers: Some(vec![1, 2, 3, 4]),
    };
    for (aggregation, adaptor) in [(true, true), (false, true), (true, false), (false, false)] {
        let step_opts = StepOptions {
            windows: if aggregation { vec![1, 3, 5] } else { vec![1] },
            align_weight: 0.0,
            adaptor,
        };
        let trainer = TrainModel::new(
            CpuBackend::new(Some(2)).unwrap(),
            &ckpt,
            &tok,
            SIDE,
            step_opts,
        )
        .unwrap();
        let out = trainer.step(&head, &batch).unwrap();
        assert_eq!(out.losses.alignment, 0.0);
        let mut scorer =
            AfClip::new(CpuBackend::new(Some(2)).unwrap(), &ckpt, &head, &tok, &opts).unwrap();
        scorer.set_ablations(aggregation, adaptor);
        let scores = scorer.score(&pixels, 4, false).unwrap();
        let fl = focal_loss(&scores.image, &labels).unwrap().value;
        let rel = (fl - out.losses.image_focal).abs() / fl;
        assert!(
            rel < 1e-5,
            "({aggregation}, {adaptor}): {fl} vs {}",
            out.losses.image_focal
        );
        if !adaptor {
            assert!(out.grads.to_q.iter().all(|&g| g == 0.0));
            let mut trained =
                Head::load(&golden().join("zero_shot/head.safetensors"), &ckpt.config).unwrap();
            Adam::new(1e-4, &trained)
                .update(&mut trained, &out.grads)
                .unwrap();
            for (name, (a, b)) in NAMES
                .iter()
                .zip(tensors(&trained).iter().zip(tensors(&head)))
            {
                let moved = a.iter().zip(b.iter()).any(|(x, y)| x != y);
                assert_eq!(moved, *name == NAMES[0], "{name} moved: {moved}");
            }
        }
    }
}
