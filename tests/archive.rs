//! Archive scoring end to end: `kill -9` at random points and `--resume` give exactly the
//! uninterrupted output; 4 shards + `afclip merge` give exactly the single run, `--top` report
//! included; a missing, repeated or interrupted shard, shards with different `--top` or a
//! missing thumbnail make merge fail loudly; `--devices 0,1` (CPU workers) equals
//! one device; `--threshold` masks and the `--top` report.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/zero_shot")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("afclip-archive-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `n` small PNGs in 5 folders, plus one broken file.
fn archive(dir: &Path, n: usize) -> PathBuf {
    let root = dir.join("archive");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for i in 0..n {
        let sub = root.join(format!("line{}", i % 5));
        std::fs::create_dir_all(&sub).unwrap();
        let data: Vec<u8> = (0..40 * 48 * 3)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 56) as u8
            })
            .collect();
        image::save_buffer(
            sub.join(format!("img{i:04}.png")),
            &data,
            48,
            40,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    }
    std::fs::write(root.join("line2/broken.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    root
}

fn base_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "score",
        "--model",
        golden().join("openai").to_str().unwrap(),
        "--head",
        golden().join("head.safetensors").to_str().unwrap(),
        "--image-size",
        "98",
        "--allow-errors",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn afclip(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_afclip"))
        .args(args)
        .output()
        .expect("afclip runs")
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "afclip failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Every file below `dir` (relative name, bytes), sorted.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn assert_same_files(a: &Path, b: &Path, names: &[&str]) {
    for n in names {
        let (x, y) = (a.join(n), b.join(n));
        if x.is_dir() {
            let (tx, ty) = (tree(&x), tree(&y));
            assert_eq!(
                tx.iter().map(|f| &f.0).collect::<Vec<_>>(),
                ty.iter().map(|f| &f.0).collect::<Vec<_>>(),
                "{n}/ differs"
            );
            assert!(tx == ty, "{n}/ contents differ");
        } else {
            assert!(
                std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap(),
                "{n} differs between {} and {}",
                a.display(),
                b.display()
            );
        }
    }
}

#[test]
fn kill_9_at_random_points_then_resume_equals_an_uninterrupted_run() {
    let dir = temp_dir("kill");
    let input = archive(&dir, 400);
    let extra = [
        "--batch-size",
        "3",
        "--save-maps",
        "npy",
        "--sync-secs",
        "0",
        input.to_str().unwrap(),
    ];
    let reference = dir.join("reference");
    let start = Instant::now();
    ok(afclip(&base_args(&reference, &extra)));
    let full = start.elapsed();

    let out = dir.join("resumed");
    let mut seed = Instant::now().elapsed().as_nanos() as u64 | 1;
    println!("kill seed {seed}, uninterrupted run {full:?}");
    let mut kills_mid_run = 0;
    for round in 0..5 {
        let mut args = base_args(&out, &extra);
        if round > 0 {
            args.push("--resume".into());
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_afclip"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = full.mul_f64(0.1 + 0.6 * (seed % 1000) as f64 / 1000.0);
        std::thread::sleep(wait);
        if child.try_wait().unwrap().is_none() {
            kills_mid_run += 1;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let rows = std::fs::read_to_string(out.join("scores.csv.partial"))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        println!("round {round}: killed after {wait:?}, {rows} lines on disk");
    }
    assert!(
        kills_mid_run >= 2,
        "only {kills_mid_run} kills landed mid-run"
    );
    let mut args = base_args(&out, &extra);
    args.push("--resume".into());
    ok(afclip(&args));
    assert_same_files(
        &reference,
        &out,
        &["scores.csv", "rows.idx", "maps", "run.json"],
    );
    assert!(!out.join("journal").exists());
    let csv = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 401, "every input exactly once");

    // A resume of a finished run changes nothing; a plain rerun over an interrupted one is
    // refused.
    ok(afclip(&args));
    assert_same_files(&reference, &out, &["scores.csv"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn four_shards_merged_equal_a_single_run_and_bad_merges_fail() {
    let dir = temp_dir("shards");
    let input = archive(&dir, 60);
    let common = [
        "--batch-size",
        "1",
        "--format",
        "jsonl",
        "--save-maps",
        "npy",
        "--threshold",
        "0.5",
        "--top",
        "7",
    ];
    let with = |out: &Path, more: &[&str]| {
        let mut e: Vec<&str> = common.to_vec();
        e.extend_from_slice(more);
        e.push(input.to_str().unwrap());
        base_args(out, &e)
    };
    let single = dir.join("single");
    ok(afclip(&with(&single, &[])));
    let mut shards = Vec::new();
    let mut total_rows = 0;
    for i in 0..4 {
        let out = dir.join(format!("shard{i}"));
        ok(afclip(&with(&out, &["--shard", &format!("{i}/4")])));
        let rows = std::fs::read_to_string(out.join("scores.jsonl"))
            .unwrap()
            .lines()
            .count();
        assert!(rows > 3 && rows < 40, "shard {i} has {rows} rows");
        total_rows += rows;
        shards.push(out);
    }
    assert_eq!(total_rows, 61);
    let merge = |out: &Path, dirs: &[&PathBuf]| {
        let mut a = vec![
            "merge".to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        a.extend(dirs.iter().rev().map(|d| d.display().to_string()));
        afclip(&a)
    };
    let merged = dir.join("merged");
    ok(merge(&merged, &shards.iter().collect::<Vec<_>>()));
    assert_same_files(
        &single,
        &merged,
        &[
            "scores.jsonl",
            "rows.idx",
            "maps",
            "masks",
            "report.md",
            "top.json",
            "top",
        ],
    );
    let top: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("top.json")).unwrap()).unwrap();
    let listed: Vec<&str> = top["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 7);
    assert_eq!(tree(&merged.join("top")).len(), 7);
    let owners: std::collections::BTreeSet<usize> = listed
        .iter()
        .map(|p| {
            let needle = format!("\"path\":\"{p}\"");
            (0..4)
                .find(|&i| {
                    std::fs::read_to_string(shards[i].join("scores.jsonl"))
                        .unwrap()
                        .contains(&needle)
                })
                .unwrap()
        })
        .collect();
    assert!(
        owners.len() > 1,
        "the top 7 all come from shards {owners:?}"
    );
    let line = std::fs::read_to_string(merged.join("scores.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(first["path"], "line0/img0000.png");
    assert_eq!(first["status"], "ok");

    let fail = |dirs: &[&PathBuf], want: &str| {
        let o = merge(&dir.join("bad-merge"), dirs);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "merge should fail ({want})");
        assert!(err.contains(want), "{err} lacks {want:?}");
    };
    fail(
        &[&shards[0], &shards[1], &shards[3]],
        "shard(s) 2/4 missing",
    );
    fail(
        &[&shards[0], &shards[1], &shards[1], &shards[3]],
        "given twice",
    );
    // An interrupted shard: journal present, no run.json.
    let broken = dir.join("shard2-interrupted");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("journal"),
        "afclip-journal v1 config=0 format=jsonl shard=2/4\n",
    )
    .unwrap();
    fail(
        &[&shards[0], &shards[1], &broken, &shards[3]],
        "is incomplete",
    );
    // A shard output whose rows were cut short.
    let cut = dir.join("shard3-cut");
    std::fs::create_dir_all(&cut).unwrap();
    for f in ["run.json", "scores.jsonl"] {
        std::fs::copy(shards[3].join(f), cut.join(f)).unwrap();
    }
    let idx = std::fs::read(shards[3].join("rows.idx")).unwrap();
    std::fs::write(cut.join("rows.idx"), &idx[..idx.len() - 16]).unwrap();
    fail(&[&shards[0], &shards[1], &shards[2], &cut], "rows.idx");

    // --top: a shard scored with another K, one without --top, one missing a thumbnail.
    let shard_with_top = |out: &Path, i: usize, top: Option<&str>| {
        let mut args = with(out, &["--shard", &format!("{i}/4")]);
        let at = args.iter().position(|a| a == "--top").unwrap();
        match top {
            Some(k) => args[at + 1] = k.into(),
            None => drop(args.drain(at..at + 2)),
        }
        ok(afclip(&args));
        out.to_path_buf()
    };
    let other_k = shard_with_top(&dir.join("shard1-top3"), 1, Some("3"));
    fail(
        &[&shards[0], &other_k, &shards[2], &shards[3]],
        "shard 1/4 (",
    );
    fail(
        &[&shards[0], &other_k, &shards[2], &shards[3]],
        "with --top 3",
    );
    let no_top = shard_with_top(&dir.join("shard2-no-top"), 2, None);
    assert!(!no_top.join("top.json").exists());
    fail(
        &[&shards[0], &shards[1], &no_top, &shards[3]],
        "shard 2/4 (",
    );
    fail(
        &[&shards[0], &shards[1], &no_top, &shards[3]],
        "has no top.json",
    );
    let copy = |from: &Path, name: &str| {
        let to = dir.join(name);
        for (rel, bytes) in tree(from) {
            std::fs::create_dir_all(to.join(&rel).parent().unwrap()).unwrap();
            std::fs::write(to.join(&rel), bytes).unwrap();
        }
        to
    };
    let no_thumb = copy(&shards[3], "shard3-no-thumb");
    std::fs::remove_file(no_thumb.join("top/0002.png")).unwrap();
    fail(
        &[&shards[0], &shards[1], &shards[2], &no_thumb],
        &format!("{} is missing", no_thumb.join("top/0002.png").display()),
    );
    assert!(
        !dir.join("bad-merge").exists(),
        "a failed merge wrote output"
    );
    // The advice for a shard without its report: `--resume --top K` writes it.
    ok(afclip(&with(&no_top, &["--shard", "2/4", "--resume"])));
    let remerged = dir.join("remerged");
    ok(merge(
        &remerged,
        &[&shards[0], &shards[1], &no_top, &shards[3]],
    ));
    assert_same_files(&single, &remerged, &["report.md", "top.json", "top"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn several_devices_threshold_masks_and_top_report() {
    let dir = temp_dir("devices");
    let input = archive(&dir, 30);
    let common = ["--batch-size", "2", "--threshold", "0.4", "--top", "4"];
    let run = |out: &Path, more: &[&str]| {
        let mut e: Vec<&str> = common.to_vec();
        e.extend_from_slice(more);
        e.push(input.to_str().unwrap());
        ok(afclip(&base_args(out, &e)))
    };
    run(&dir.join("one"), &[]);
    run(&dir.join("two"), &["--devices", "0,1", "--threads", "2"]);
    assert_same_files(&dir.join("one"), &dir.join("two"), &["scores.csv", "masks"]);

    let masks = tree(&dir.join("one/masks"));
    assert_eq!(masks.len(), 30);
    for (name, bytes) in &masks {
        let img = image::load_from_memory(bytes).unwrap().into_luma8();
        assert_eq!(img.dimensions(), (98, 98), "{name}");
        assert!(img.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255), "{name}");
    }
    let csv = std::fs::read_to_string(dir.join("one/scores.csv")).unwrap();
    let mut scores: Vec<(f32, String)> = csv
        .lines()
        .skip(1)
        .filter(|l| l.contains(",ok,"))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[1].parse().unwrap(), f[0].to_string())
        })
        .collect();
    scores.sort_by(|a, b| b.0.total_cmp(&a.0));
    let report = std::fs::read_to_string(dir.join("one/report.md")).unwrap();
    let listed: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| rank"))
        .map(|l| l.split('`').nth(1).unwrap())
        .collect();
    assert_eq!(
        listed,
        scores[..4].iter().map(|s| s.1.as_str()).collect::<Vec<_>>()
    );
    for rank in 1..=4 {
        let thumb = dir.join(format!("one/top/{rank:04}.png"));
        let img = image::open(&thumb).unwrap();
        assert_eq!((img.width(), img.height()), (128, 128));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
