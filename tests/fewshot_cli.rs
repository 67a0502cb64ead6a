//! Few-shot from the command line on a synthetic MVTec-style set with a random tiny CLIP:
//! `afclip eval --shots K --runs R --seed S` (every run, the summary, the references, exact
//! repetition for a seed), `afclip bank build` + `afclip eval --bank`, and refusals (a bank
//! used at another image size, more shots than training images).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn afclip(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_afclip"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> Output {
    let o = afclip(args);
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

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

struct Setup {
    dir: PathBuf,
    model: PathBuf,
    data: PathBuf,
}

fn setup(name: &str) -> Setup {
    let dir = std::env::temp_dir().join(format!("afclip-fewshot-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (model, data) = (dir.join("model"), dir.join("data"));
    ok(&["init-model", "--preset", "tiny", "--out", s(&model)]);
    ok(&[
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
    Setup { dir, model, data }
}

fn eval(st: &Setup, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "eval",
        "--model",
        s(&st.model),
        "--init-seed",
        "1",
        "--image-size",
        "56",
        "--data",
        s(&st.data),
        "--dataset",
        "mvtec",
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    afclip(&args)
}

#[test]
fn shots_runs_seed_protocol() {
    let st = setup("protocol");
    let out = st.dir.join("out");
    let o = eval(&st, &out, &["--shots", "2", "--runs", "2", "--seed", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("references: "),
        "references are printed: {stderr}"
    );

    let doc = json(&out.join("metrics.json"));
    assert_eq!(doc["shots"], 2);
    assert_eq!(doc["seed"], 3);
    assert_eq!(doc["alpha"].as_f64().unwrap(), 0.1);
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let cats: Vec<&String> = doc["categories"].as_object().unwrap().keys().collect();
    assert_eq!(cats.len(), 2);
    for (r, run) in runs.iter().enumerate() {
        assert_eq!(run["run"], r);
        // the per-run object is the single-run schema, also written on its own
        let alone = json(&out.join(format!("run-{r}/metrics.json")));
        assert_eq!(alone["categories"], run["categories"]);
        assert!(out.join(format!("run-{r}/scores.csv")).is_file());
        for c in &cats {
            let refs = run["references"][c.as_str()].as_array().unwrap();
            assert_eq!(refs.len(), 2);
            assert!(
                refs[0].as_str().unwrap().contains("train/good/"),
                "{refs:?}"
            );
        }
    }
    // summary: mean and std over the runs, per category and of the category mean
    let a: Vec<f64> = runs
        .iter()
        .map(|r| r["mean"]["image"]["auroc"].as_f64().unwrap())
        .collect();
    let mean = (a[0] + a[1]) / 2.0;
    let std = (a[0] - a[1]).abs() / 2.0;
    let sm = doc["summary"]["mean"]["mean"]["image"]["auroc"]
        .as_f64()
        .unwrap();
    let ss = doc["summary"]["std"]["mean"]["image"]["auroc"]
        .as_f64()
        .unwrap();
    assert!(
        (sm - mean).abs() < 1e-12 && (ss - std).abs() < 1e-12,
        "{sm} {ss} {a:?}"
    );
    assert!(doc["summary"]["std"]["categories"][cats[0].as_str()]["pixel"]["auroc"].is_f64());
    assert!(std::fs::read_to_string(out.join("metrics.md"))
        .unwrap()
        .contains(" ± "));

    // the same seed repeats exactly; another seed draws other references
    let again = st.dir.join("again");
    assert!(
        eval(&st, &again, &["--shots", "2", "--runs", "2", "--seed", "3"])
            .status
            .success()
    );
    assert_eq!(json(&again.join("metrics.json")), doc);
    let other = st.dir.join("other");
    assert!(
        eval(&st, &other, &["--shots", "1", "--runs", "3", "--seed", "4"])
            .status
            .success()
    );
    let refs: Vec<Value> = json(&other.join("metrics.json"))["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["references"].clone())
        .collect();
    assert!(refs[0] != refs[1] || refs[1] != refs[2], "{refs:?}");

    // more shots than training images
    let o = eval(&st, &st.dir.join("x"), &["--shots", "9", "--runs", "1"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("fewer than the 9 shots"), "{e}");
    std::fs::remove_dir_all(&st.dir).unwrap();
}

#[test]
fn bank_build_then_eval_with_the_bank() {
    let st = setup("bank");
    let cat = std::fs::read_dir(&st.data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let bank = st.dir.join("bank.safetensors");
    ok(&[
        "bank",
        "build",
        "--model",
        s(&st.model),
        "--image-size",
        "56",
        "--out",
        s(&bank),
        s(&cat.join("train/good")),
    ]);
    let out = st.dir.join("out");
    let o = eval(&st, &out, &["--bank", s(&bank)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc = json(&out.join("metrics.json"));
    assert_eq!(doc["shots"], 3, "the bank's three reference images");
    assert!(doc["mean"]["image"]["auroc"].is_f64());
    assert!(out.join("scores.csv").is_file());

    // a bank built at 56 px is refused at 84 px, naming the sizes
    let o = afclip(&[
        "eval",
        "--model",
        s(&st.model),
        "--init-seed",
        "1",
        "--image-size",
        "84",
        "--data",
        s(&st.data),
        "--dataset",
        "mvtec",
        "--out",
        s(&st.dir.join("y")),
        "--bank",
        s(&bank),
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("image size 56") && e.contains("84"), "{e}");
    std::fs::remove_dir_all(&st.dir).unwrap();
}
