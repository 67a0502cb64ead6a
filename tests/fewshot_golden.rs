//! Few-shot AF-CLIP+ against the PyTorch reference (`tests/golden/make_fewshot_golden.py`):
//! 1-shot with a fixed reference image on the tiny model and head of the zero-shot golden.
//! Banks, bank distances, image scores, patch maps and final maps within 1e-4; bank files
//! round-trip and are refused by another model, image size or layer choice.

use afclip::backend::cpu::CpuBackend;
use afclip::fewshot::bank::Bank;
use afclip::fewshot::scorer::FewShot;
use afclip::model::afclip::{AfClip, ModelOptions};
use afclip::model::checkpoint::{find_weights, Checkpoint};
use afclip::model::head::Head;
use afclip::model::tensors::TensorFile;
use afclip::model::tokenizer::ClipTokenizer;
use std::path::{Path, PathBuf};

fn golden(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(sub)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn model_with(
    naming: &str,
    side: usize,
    layers: Option<Vec<usize>>,
    edit: impl FnOnce(&mut Checkpoint),
) -> AfClip<CpuBackend> {
    let dir = golden("zero_shot").join(naming);
    let mut ckpt = Checkpoint::load(&find_weights(&dir, None).unwrap()).unwrap();
    edit(&mut ckpt);
    let head = Head::load(&golden("zero_shot/head.safetensors"), &ckpt.config).unwrap();
    let tok = ClipTokenizer::from_model_dir(&dir).unwrap();
    let opts = ModelOptions {
        image_size: side,
        layers,
    };
    AfClip::new(CpuBackend::new(Some(2)).unwrap(), &ckpt, &head, &tok, &opts).unwrap()
}

fn model() -> AfClip<CpuBackend> {
    model_with("openai", 98, None, |_| {})
}

fn reference_bank(model: &AfClip<CpuBackend>) -> Bank {
    let reference = golden("fewshot/reference.png");
    Bank::build(
        model,
        std::slice::from_ref(&reference),
        vec!["reference.png".into()],
        "tiny",
        1,
    )
    .unwrap()
}

#[test]
fn one_shot_matches_reference() {
    let expected = TensorFile::open(&golden("fewshot/expected.safetensors")).unwrap();
    let read = |n: &str| expected.read_any(n).unwrap().data;
    let model = model();
    assert_eq!(model.layers(), &[1, 2, 3, 4]);
    let bank = reference_bank(&model);
    assert_eq!(bank.sets.len(), 12);
    assert_eq!(bank.rows(), 49);
    let mut k = 0;
    for layer in 1..=4 {
        for r in [1, 3, 5] {
            let d = max_abs(&bank.sets[k], &read(&format!("bank_{layer}_{r}")));
            assert!(d <= 1e-4, "bank layer {layer} r {r} differs by {d}");
            k += 1;
        }
    }

    let scorer = FewShot::new(&model, &bank, 0.1).unwrap();
    let out = scorer.score(&read("pixels"), 3, true).unwrap();
    let checks = [
        ("distances", max_abs(&out.distances, &read("distances"))),
        ("image scores", max_abs(&out.image, &read("image_scores"))),
        ("patch maps", max_abs(&out.patch, &read("patch_maps"))),
        ("maps", max_abs(&out.maps, &read("maps"))),
    ];
    eprintln!("max abs error: {checks:?}");
    for (what, d) in checks {
        assert!(d <= 1e-4, "{what} differ by {d}");
    }
    // the image score is the patch maximum plus alpha times the zero-shot score
    let z = model.score(&read("pixels"), 3, false).unwrap();
    for i in 0..3 {
        let best = out.distances[i * 49..(i + 1) * 49]
            .iter()
            .copied()
            .fold(f32::MIN, f32::max);
        assert!((out.image[i] - best - 0.1 * z.image[i]).abs() < 1e-6);
    }
}

#[test]
fn bank_files_round_trip_and_name_their_model() {
    let model = model();
    let bank = reference_bank(&model);
    let dir = std::env::temp_dir().join(format!("afclip-fewshot-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bank.safetensors");
    bank.save(&path).unwrap();
    let back = Bank::load(&path).unwrap();
    assert_eq!(back.meta, bank.meta);
    assert_eq!(back.sets, bank.sets);
    back.check_model(&model).unwrap();

    // The same weights under Hugging Face names (f16/bf16 tensors) are the same model.
    back.check_model(&model_with("hf", 98, None, |_| {}))
        .unwrap();

    let err = |m: &AfClip<CpuBackend>| format!("{:#}", FewShot::new(m, &back, 0.1).err().unwrap());
    let e = err(&model_with("openai", 84, None, |_| {}));
    assert!(e.contains("image size 98"), "{e}");
    let e = err(&model_with("openai", 98, Some(vec![2, 4]), |_| {}));
    assert!(e.contains("layers 1,2,3,4"), "{e}");
    let e = err(&model_with("openai", 98, None, |c| {
        c.vision.blocks[0].fc_b[3] += 0.5;
    }));
    assert!(e.contains("another model"), "{e}");
    // a weight of a block after the last feature layer does not change the features
    let m = model_with("openai", 98, Some(vec![1, 2, 3]), |c| {
        c.vision.blocks[3].fc_b[3] += 0.5;
    });
    assert_eq!(
        m.fingerprint(),
        model_with("openai", 98, Some(vec![1, 2, 3]), |_| {}).fingerprint()
    );

    // a file that is not a bank, and a bank whose rows were tampered with
    let e = format!(
        "{:#}",
        Bank::load(&golden("zero_shot/head.safetensors")).unwrap_err()
    );
    assert!(
        e.contains("head.safetensors") && e.contains("not an afclip bank"),
        "{e}"
    );
    let mut bad = bank.clone();
    bad.sets[5][7] += 1.0;
    bad.save(&path).unwrap();
    let e = format!("{:#}", Bank::load(&path).unwrap_err());
    assert!(
        e.contains("bank.layer2.r5") && e.contains("not L2-normalised"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
