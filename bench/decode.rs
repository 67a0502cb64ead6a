//! Decode throughput: synthetic 1024x1024 RGB PNGs (~2 MB each) to 518x518 normalised CLIP
//! tensors with the loader `afclip score` uses (read, PNG decode, Pillow-exact bicubic resize,
//! normalise), on 1..=cores threads, through the ordered pipeline, and from the decoded cache;
//! against Pillow and torchvision `Resize((518, 518), bicubic)`, `ToTensor`, `Normalize`
//! (bench/decode_baseline.py) measured in the same run on the same files.
//!
//! Run: cargo bench --bench decode   (release; needs python3 with torch, torchvision, Pillow
//! for the baseline rows, and prints why when they are missing). Env AFCLIP_BENCH_IMAGES sets
//! the number of images (default 48). Prints a table last.

use afclip::data::cache::Cache;
use afclip::data::pipeline::{ordered_map, ImageLoader, DEFAULT_MAX_PIXELS};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const SIDE_IN: u32 = 1024;
const SIDE: usize = 518;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A textured image: smooth colour waves plus per-pixel noise, which PNG compresses to ~2 MB.
fn write_png(path: &Path, seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let n = SIDE_IN as usize;
    let mut data = vec![0u8; n * n * 3];
    let (fx, fy) = (
        0.01 + (seed % 7) as f32 * 0.004,
        0.013 + (seed % 5) as f32 * 0.003,
    );
    for y in 0..n {
        for x in 0..n {
            let r = rng.next();
            for c in 0..3 {
                let wave = ((x as f32 * fx + c as f32).sin() + (y as f32 * fy).cos()) * 50.0;
                let noise = ((r >> (c * 8)) & 15) as f32;
                data[(y * n + x) * 3 + c] = (110.0 + wave + noise).clamp(0.0, 255.0) as u8;
            }
        }
    }
    image::save_buffer(
        path,
        &data,
        SIDE_IN,
        SIDE_IN,
        image::ExtendedColorType::Rgb8,
    )
    .expect("write bench PNG");
}

fn loader(cache: Option<Cache>) -> ImageLoader {
    ImageLoader {
        side: SIDE,
        max_pixels: DEFAULT_MAX_PIXELS,
        cache,
    }
}

/// Best of two passes over `files` on a pool of `threads`, in images/s.
fn rate(files: &[PathBuf], threads: usize, loader: &ImageLoader) -> f64 {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    let mut best = f64::MAX;
    for _ in 0..2 {
        let start = Instant::now();
        pool.install(|| {
            files.par_iter().for_each(|f| {
                let p = loader.load(f).expect("decode bench image");
                std::hint::black_box(p.tensor[0]);
            })
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    files.len() as f64 / best
}

fn python(dir: &Path, workers: usize) -> Result<f64, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/decode_baseline.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(dir)
        .args([
            "--side",
            &SIDE.to_string(),
            "--workers",
            &workers.to_string(),
        ])
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("failed").to_string());
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    fields
        .iter()
        .position(|&f| f == "images_per_s")
        .and_then(|i| fields.get(i + 1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("unexpected output {text:?}"))
}

fn main() {
    let n: usize = std::env::var("AFCLIP_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let dir = std::env::temp_dir().join(format!("afclip-bench-decode-{n}"));
    std::fs::create_dir_all(&dir).expect("bench folder");
    let files: Vec<PathBuf> = (0..n)
        .map(|i| dir.join(format!("img_{i:04}.png")))
        .collect();
    let start = Instant::now();
    files
        .par_iter()
        .enumerate()
        .filter(|(_, f)| !f.exists())
        .for_each(|(i, f)| write_png(f, i as u64));
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).expect("bench file").len())
        .sum();
    println!(
        "{n} PNGs {SIDE_IN}x{SIDE_IN} RGB, mean {:.2} MB, in {} ({:.1} s to make)",
        bytes as f64 / n as f64 / 1e6,
        dir.display(),
        start.elapsed().as_secs_f64()
    );

    let plain = loader(None);
    let per_thread: Vec<(usize, f64)> = (1..=cores)
        .map(|t| {
            let r = rate(&files, t, &plain);
            println!("afclip loader, {t} thread(s): {r:.1} images/s");
            (t, r)
        })
        .collect();

    let start = Instant::now();
    let shared = std::sync::Arc::new(loader(None));
    let rx = ordered_map(files.clone(), 16, move |f: &PathBuf| {
        shared.load(f).map(|p| p.tensor.len())
    });
    let delivered = rx.iter().filter(|r| r.is_ok()).count();
    assert_eq!(delivered, n);
    let pipeline = n as f64 / start.elapsed().as_secs_f64();
    println!("ordered pipeline (global pool, {cores} threads): {pipeline:.1} images/s");

    let cache_dir = dir.join("cache");
    let _ = std::fs::remove_dir_all(&cache_dir);
    let cached = loader(Some(Cache::open(&cache_dir).expect("cache")));
    fill_cache(&files, &cached);
    let from_cache = rate(&files, 1, &cached);
    println!("from the decoded cache, 1 thread: {from_cache:.1} images/s");

    let py1 = python(&dir, 1);
    let pyn = python(&dir, cores);
    for (w, r) in [(1, &py1), (cores, &pyn)] {
        match r {
            Ok(r) => println!("Pillow + torchvision, {w} worker(s): {r:.1} images/s"),
            Err(e) => println!("Pillow + torchvision, {w} worker(s): unavailable ({e})"),
        }
    }

    let one = per_thread[0].1;
    let all = per_thread.last().expect("at least one core").1;
    println!();
    println!(
        "| workload ({n} x 1024² PNG -> 518² tensor) | baseline images/s | afclip images/s | ratio | floor |"
    );
    println!("|---|---|---|---|---|");
    let row = |what: &str, base: &Result<f64, String>, ours: f64, floor: &str| {
        let (b, ratio) = match base {
            Ok(b) => (format!("{b:.1}"), format!("{:.2}x", ours / b)),
            Err(_) => ("n/a".into(), "n/a".into()),
        };
        println!("| {what} | {b} | {ours:.1} | {ratio} | {floor} |");
    };
    row("1 core", &py1, one, "2x");
    row(&format!("{cores} cores"), &pyn, all, "2x");
    row(
        &format!("{cores} cores, ordered pipeline"),
        &pyn,
        pipeline,
        "2x",
    );
    row("1 core, from --cache", &py1, from_cache, "-");
    println!(
        "| scaling 1 -> {cores} cores (afclip) | | {:.2}x | | {cores}x ideal |",
        all / one
    );
}

/// Fills the cache with one pass (misses).
fn fill_cache(files: &[PathBuf], cached: &ImageLoader) {
    files.par_iter().for_each(|f| {
        cached.load(f).expect("decode bench image");
    });
}
