//! Ablation switches (paper Tables 4 and 6): `train --no-adaptor` moves only the prompt;
//! a trained step's loss without aggregation / adaptor equals the loss of the zero-shot
//! scorer with the same switches (`AfClip::set_ablations`, what `eval --no-aggregation
//! --no-adaptor` uses); `--no-alignment-loss` drops exactly the alignment term.
//! `--fixed-prompts`: the fixed sentences' text features match PyTorch
//! (`tests/golden/make_fixed_prompt_golden.py`) on both the inference and the training path,
//! only the adaptor trains, the head file records the prompt kind and scoring it agrees with
//! training. `--cache-precision f16`: half the bytes, values within f16 rounding, the step's
//! loss within 1e-3.

use afclip::backend::cpu::CpuBackend;
use afclip::data::layouts::{load_dataset, DatasetKind};
use afclip::data::preprocess::load_image;
use afclip::model::afclip::{AfClip, ModelOptions};
use afclip::model::checkpoint::{find_weights, Checkpoint};
use afclip::model::head::{Head, Prompts};
use afclip::model::tensors::TensorFile;
use afclip::model::text::{head_text_features, sentence_ids, FIXED_SENTENCES};
use afclip::model::tokenizer::ClipTokenizer;
use afclip::train::features::{CachePrecision, FeatureCache, TrainSample};
use afclip::train::losses::focal_loss;
use afclip::train::optim::Adam;
use afclip::train::params::{tensors, NAMES};
use afclip::train::step::{StepOptions, TrainModel};
use afclip::train::text::TrainText;
use afclip::train::trainer::{train, TrainConfig};
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
    let mut cache = ram_cache(&be, &ckpt, &samples, &tmp);
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
            prompts: Prompts::Learned,
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

fn fixture() -> (Checkpoint, ClipTokenizer, Vec<TrainSample>) {
    let model_dir = golden().join("zero_shot/openai");
    let ckpt = Checkpoint::load(&find_weights(&model_dir, None).unwrap()).unwrap();
    let tok = ClipTokenizer::from_model_dir(&model_dir).unwrap();
    let cats = load_dataset(DatasetKind::Mvtec, &golden().join("train/data"), None).unwrap();
    let samples = cats[0]
        .test
        .iter()
        .map(|s| TrainSample {
            path: s.path.clone(),
            label: f32::from(u8::from(s.label == Some(true))),
            mask: s.mask.clone(),
            binarise_mask: false,
        })
        .collect();
    (ckpt, tok, samples)
}

/// An f32 feature cache of `samples` in RAM, all four layers of the golden model.
fn ram_cache(
    be: &CpuBackend,
    ckpt: &Checkpoint,
    samples: &[TrainSample],
    spill: &Path,
) -> FeatureCache<CpuBackend> {
    FeatureCache::new(
        be,
        ckpt,
        samples.to_vec(),
        SIDE,
        &[1, 2, 3, 4],
        u64::MAX,
        spill,
    )
    .unwrap()
}

fn fixed_head(ckpt: &Checkpoint, seed: u64) -> Head {
    let mut head = Head::init(&ckpt.config, seed);
    head.select_prompts(true, None).unwrap();
    assert_eq!(head.prompts, Prompts::Fixed);
    head
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol, "{what}[{i}]: {a} vs {b}");
    }
}

#[test]
fn fixed_prompt_text_features_match_pytorch() {
    let (ckpt, tok, _) = fixture();
    let expected = TensorFile::open(&golden().join("zero_shot/fixed_prompts.safetensors")).unwrap();
    let want = expected.read("text_features", &[2, 64]).unwrap();
    let want_ids = expected.read("ids", &[2, 77]).unwrap();
    let ids = sentence_ids(&tok, Prompts::Fixed).unwrap();
    assert_eq!(ids.len(), FIXED_SENTENCES.len());
    for (seq, row) in ids.iter().zip(want_ids.chunks_exact(77)) {
        let mut padded: Vec<f32> = seq.iter().map(|&i| i as f32).collect();
        padded.resize(77, 0.0);
        assert_eq!(padded, row, "token ids of the fixed sentences");
    }
    let be = CpuBackend::new(Some(2)).unwrap();
    // Inference path (model::text, the transformer blocks of the towers).
    let head = fixed_head(&ckpt, 3);
    let got = head_text_features(&be, &ckpt.config, &ckpt.text, &head, &tok).unwrap();
    assert_close(&got, &want, 1e-5, "head_text_features");
    // The fixed features do not depend on the head's (untrained) prompt tensor.
    let other = head_text_features(&be, &ckpt.config, &ckpt.text, &fixed_head(&ckpt, 4), &tok);
    assert_eq!(got, other.unwrap());
    // Training path (train::text, its own forward with saved activations), no prefix.
    let tower = TrainText::new(&be, &ckpt.config, &ckpt.text, &ids, 0).unwrap();
    let train_features = tower.forward(&be, &[]).unwrap().features;
    assert_close(&train_features, &want, 1e-5, "TrainText with no prefix");
    // The scorer built from the head uses them; a learned head does not.
    let opts = ModelOptions {
        image_size: SIDE,
        layers: Some(vec![1, 2, 3, 4]),
    };
    let scorer = AfClip::new(CpuBackend::new(Some(2)).unwrap(), &ckpt, &head, &tok, &opts).unwrap();
    assert_eq!(scorer.text_features(), &got[..]);
    let learned = Head::init(&ckpt.config, 3);
    let scorer = AfClip::new(be, &ckpt, &learned, &tok, &opts).unwrap();
    assert!(scorer
        .text_features()
        .iter()
        .zip(&want)
        .any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn fixed_prompts_train_only_the_adaptor_and_scoring_agrees() {
    let (ckpt, tok, samples) = fixture();
    let labels: Vec<f32> = samples.iter().map(|s| s.label).collect();
    let be = CpuBackend::new(Some(2)).unwrap();
    let tmp = std::env::temp_dir().join(format!("afclip-fixed-prompts-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cache = ram_cache(&be, &ckpt, &samples, &tmp);
    let opts = StepOptions {
        prompts: Prompts::Fixed,
        ..StepOptions::default()
    };
    let model = TrainModel::new(
        CpuBackend::new(Some(2)).unwrap(),
        &ckpt,
        &tok,
        SIDE,
        opts.clone(),
    )
    .unwrap();

    // Nothing would train without the adaptor; a learned head does not fit the model.
    let err = TrainModel::new(
        CpuBackend::new(Some(2)).unwrap(),
        &ckpt,
        &tok,
        SIDE,
        StepOptions {
            adaptor: false,
            ..opts.clone()
        },
    )
    .err()
    .expect("fixed prompts without the adaptor must be refused");
    assert!(format!("{err:#}").contains("nothing to train"), "{err:#}");
    let batch = cache.batch(&be, &[0, 1, 2, 3]).unwrap();
    let learned = Head::init(&ckpt.config, 5);
    assert!(model.step(&learned, &batch).is_err());

    // Two Adam steps through the epoch loop: the prompt stays, every adaptor tensor moves.
    let initial = fixed_head(&ckpt, 5);
    let mut head = fixed_head(&ckpt, 5);
    let out = tmp.join("head.safetensors");
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 2,
        lr: 1e-3,
        seed: 0,
        max_steps: None,
        shuffle: false,
        out: out.clone(),
        resume: false,
        progress: false,
    };
    let reports = train(&model, &mut cache, &mut head, &ckpt.config, &cfg).unwrap();
    assert_eq!(reports[0].steps, 2);
    let saved = Head::load(&out, &ckpt.config).unwrap();
    assert_eq!(
        saved.prompts,
        Prompts::Fixed,
        "the head file records fixed prompts"
    );
    for (name, (a, b)) in NAMES
        .iter()
        .zip(tensors(&saved).iter().zip(tensors(&initial)))
    {
        let moved = a.iter().zip(b.iter()).any(|(x, y)| x != y);
        assert_eq!(moved, *name != NAMES[0], "{name} moved: {moved}");
    }

    // Scoring the saved head picks the fixed prompts from the file and agrees with training's
    // forward; --fixed-prompts may repeat it.
    let pixels: Vec<f32> = samples
        .iter()
        .flat_map(|s| load_image(&s.path, SIDE).unwrap().tensor)
        .collect();
    let step = model.step(&saved, &batch).unwrap();
    let mut reloaded = Head::load(&out, &ckpt.config).unwrap();
    reloaded.select_prompts(false, Some(&out)).unwrap();
    assert_eq!(reloaded.prompts, Prompts::Fixed);
    reloaded.select_prompts(true, Some(&out)).unwrap();
    let model_opts = ModelOptions {
        image_size: SIDE,
        layers: Some(vec![1, 2, 3, 4]),
    };
    let scorer = AfClip::new(
        CpuBackend::new(Some(2)).unwrap(),
        &ckpt,
        &reloaded,
        &tok,
        &model_opts,
    )
    .unwrap();
    let scores = scorer.score(&pixels, 4, false).unwrap();
    let fl = focal_loss(&scores.image, &labels).unwrap().value;
    let rel = (fl - step.losses.image_focal).abs() / fl;
    assert!(rel < 1e-5, "{fl} vs {}", step.losses.image_focal);

    // --fixed-prompts on a head trained with learnable prompts is refused, naming the file.
    let learned_file = tmp.join("learned.safetensors");
    Head::init(&ckpt.config, 6).save(&learned_file).unwrap();
    let mut h = Head::load(&learned_file, &ckpt.config).unwrap();
    assert_eq!(h.prompts, Prompts::Learned);
    let err = h.select_prompts(true, Some(&learned_file)).unwrap_err();
    assert!(err.to_string().contains("learned.safetensors"), "{err}");

    // The resume checkpoint records the prompt kind: resuming the fixed-prompt run with learned
    // prompts is refused, naming the checkpoint; with fixed prompts it runs the missing epoch.
    let resume = TrainConfig {
        epochs: 2,
        resume: true,
        ..cfg
    };
    let mut learned_head = Head::init(&ckpt.config, 5);
    let err = train(&model, &mut cache, &mut learned_head, &ckpt.config, &resume).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("head.ckpt.safetensors") && msg.contains("fixed prompts"),
        "{msg}"
    );
    let mut again = fixed_head(&ckpt, 5);
    let more = train(&model, &mut cache, &mut again, &ckpt.config, &resume).unwrap();
    assert_eq!(more.len(), 1, "one epoch left after the checkpoint");
    assert_eq!(more[0].epoch, 2, "the resumed run starts at epoch 2");
    assert_eq!(again.prompts, Prompts::Fixed);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn f16_feature_cache_halves_the_bytes_and_keeps_the_loss() {
    let (ckpt, tok, samples) = fixture();
    let head = Head::load(&golden().join("zero_shot/head.safetensors"), &ckpt.config).unwrap();
    let be = CpuBackend::new(Some(2)).unwrap();
    let tmp = std::env::temp_dir().join(format!("afclip-f16-cache-{}", std::process::id()));
    let model = TrainModel::new(
        CpuBackend::new(Some(2)).unwrap(),
        &ckpt,
        &tok,
        SIDE,
        StepOptions::default(),
    )
    .unwrap();
    let idx = [0, 1, 2, 3];
    let mut reference = ram_cache(&be, &ckpt, &samples, &tmp);
    assert_eq!(reference.precision(), CachePrecision::F32);
    let want = reference.batch(&be, &idx).unwrap();
    let want_loss = model.step(&head, &want).unwrap().losses.total;
    // RAM, then a budget of 0 bytes (the memory-mapped file).
    for budget in [u64::MAX, 0] {
        let mut cache = FeatureCache::with_precision(
            &be,
            &ckpt,
            samples.clone(),
            SIDE,
            &[1, 2, 3, 4],
            budget,
            &tmp,
            CachePrecision::F16,
        )
        .unwrap();
        assert_eq!(cache.is_mapped(), budget == 0);
        assert_eq!(2 * cache.bytes(), reference.bytes());
        let got = cache.batch(&be, &idx).unwrap();
        assert_eq!(got.masks, want.masks);
        assert_eq!(got.labels, want.labels);
        let mut rounded = 0;
        for (g, w) in got.features.iter().zip(&want.features) {
            assert_eq!(g.len(), w.len());
            for (&a, &b) in g.iter().zip(w) {
                // Round to nearest: half a unit in the last of 11 significant bits (normal
                // range), or half of the smallest subnormal step 2^-24.
                let bound = (b.abs() * 2f32.powi(-11)).max(2f32.powi(-25));
                assert!((a - b).abs() <= bound, "{a} stored for {b}");
                rounded += usize::from(a != b);
            }
        }
        assert!(rounded > 0, "f16 storage must round something");
        let loss = model.step(&head, &got).unwrap().losses.total;
        let rel = (loss - want_loss).abs() / want_loss;
        eprintln!(
            "feature cache for {} images: f32 {} bytes, f16 {} bytes ({}); step loss f32 \
             {want_loss}, f16 {loss} (relative {rel:.1e})",
            samples.len(),
            reference.bytes(),
            cache.bytes(),
            if cache.is_mapped() { "mapped" } else { "RAM" }
        );
        assert!(rel < 1e-3, "f16 cache loss {loss} vs f32 {want_loss}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
