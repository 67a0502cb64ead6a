//! `afclip bench`: throughput of the full scoring path on a random model (no download), stage by
//! stage, for a list of batch sizes, on the CPU or a GPU.
//!
//! Source images are synthetic PNGs (`afclip synth`'s textures) in a temporary folder, reused in
//! turn to fill the batches. Per batch size: the decode stage (the `score` loader: read, PNG
//! decode, Pillow bicubic resize to RGB bytes) is timed alone on the rayon pool; then
//! `--warmup` untimed and `--iters` timed batches run as `score` runs them, decoding on the
//! rayon pool ahead of the model, each batch's bytes gathered and handed to the backend
//! (`upload_rgb`: normalised there), scored through [`staged_forward`] and its heatmaps written
//! as PNG overlays. Unlike `score`, the upload does not overlap the previous batch's compute.
//! The pipelined rate counts from the first timed batch's arrival, so it is the steady state. The vision tower's achieved FLOP/s is set against the bf16 `linear` rate
//! measured first on a tower-sized GEMM (`rows = min(largest batch, 32) · tokens`,
//! `width → mlp`).

use crate::backend::cpu::Precision;
use crate::backend::profile::Profiled;
use crate::backend::Backend;
use crate::bench::flops::{image_flops, ImageFlops};
use crate::bench::stages::{linear_rate, staged_forward, StageTimes};
use crate::cli::common::{BackendArgs, Device};
use crate::data::decode::Pixels;
use crate::data::inputs::walk_inputs;
use crate::data::pipeline::{ordered_map, ImageLoader, DEFAULT_MAX_PIXELS};
use crate::data::synth::{synthesize, SynthLayout, SynthOptions};
use crate::model::afclip::{AfClip, ModelOptions, DEFAULT_IMAGE_SIZE};
use crate::model::checkpoint::ClipConfig;
use crate::model::head::Head;
use crate::model::random::{preset, random_checkpoint};
use crate::model::tokenizer::ClipTokenizer;
use crate::model::vision::Images;
use crate::output::heatmap::overlay;
use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Args as ClapArgs;
use rayon::prelude::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Random model: vit-l-14-336 (the paper's backbone), vit-l-14, vit-b-16 or tiny.
    #[arg(long, default_value = "vit-l-14-336")]
    pub preset: String,
    /// Side S of the model input (a multiple of the patch size).
    #[arg(long, default_value_t = DEFAULT_IMAGE_SIZE)]
    pub image_size: usize,
    /// Batch sizes to measure, in turn.
    #[arg(long, value_delimiter = ',', default_value = "32,128")]
    pub batch_sizes: Vec<usize>,
    /// Distinct synthetic source images, reused in turn to fill the batches.
    #[arg(long, default_value_t = 16)]
    pub images: usize,
    /// Side of the square source PNGs.
    #[arg(long, default_value_t = 1024)]
    pub source_size: u32,
    /// Timed batches per batch size.
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    /// Untimed batches before them, per batch size.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Stage names as printed, and their keys in the JSON.
const STAGES: [(&str, &str); 7] = [
    ("decode", "decode"),
    ("upload", "upload"),
    ("vision tower", "vision"),
    ("aggregation + adaptor", "aggregation_adaptor"),
    ("scores", "scores"),
    ("maps", "maps"),
    ("writing", "writing"),
];

/// A temporary folder, removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("afclip-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the work folder {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one batch size measured, summed over its timed batches.
struct BatchResult {
    batch: usize,
    /// Images in the timed batches.
    images: usize,
    /// Decoding `batch` images on the rayon pool, `iters` times.
    decode: f64,
    stages: StageTimes,
    writing: f64,
    /// Wall time of the timed batches, pipelined.
    wall: f64,
}

impl BatchResult {
    /// Seconds per stage, in [`STAGES`] order.
    fn stage_secs(&self) -> [f64; 7] {
        let s = &self.stages;
        [
            self.decode,
            s.upload,
            s.vision,
            s.adaptor,
            s.scores,
            s.maps,
            self.writing,
        ]
    }
    fn ms_per_image(&self, secs: f64) -> f64 {
        1e3 * secs / self.images as f64
    }
    fn sum_ms(&self) -> f64 {
        self.ms_per_image(self.stage_secs().iter().sum())
    }
    fn pipelined_rate(&self) -> f64 {
        self.images as f64 / self.wall
    }
}

struct GemmProbe {
    backend: String,
    rows: usize,
    in_dim: usize,
    out_dim: usize,
    flops_per_s: f64,
}

pub fn run(args: Args) -> Result<()> {
    ensure!(
        !args.batch_sizes.is_empty() && args.batch_sizes.iter().all(|&b| b > 0),
        "--batch-sizes needs one or more positive batch sizes"
    );
    ensure!(args.images > 0, "--images must be at least 1");
    ensure!(args.iters > 0, "--iters must be at least 1");
    ensure!(
        args.source_size >= 8,
        "--source-size must be at least 8 pixels"
    );
    let cfg = preset(&args.preset)?;
    ensure!(
        args.image_size > 0 && args.image_size.is_multiple_of(cfg.patch),
        "--image-size {} is not a positive multiple of the {} preset's patch size {}",
        args.image_size,
        args.preset,
        cfg.patch
    );
    let mut backend = args.backend.clone();
    backend.device = match backend.resolve()? {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
    };
    let work = WorkDir::new()?;
    let files = source_images(&work.0.join("sources"), args.images, args.source_size)?;

    let grid = args.image_size / cfg.patch;
    let rows = (grid * grid + 1) * args.batch_sizes.iter().max().map_or(1, |&b| b.min(32));
    let mut bf16 = backend.clone();
    bf16.precision = Precision::Bf16;
    let gemm = crate::with_backend!(bf16, |be| GemmProbe {
        backend: be.name(),
        rows,
        in_dim: cfg.vision_width,
        out_dim: cfg.vision_mlp,
        flops_per_s: linear_rate(&be, rows, cfg.vision_width, cfg.vision_mlp)?,
    });
    eprintln!(
        "bf16 GEMM rate (linear {rows}x{}->{} on {}): {:.2} TFLOP/s",
        cfg.vision_width,
        cfg.vision_mlp,
        gemm.backend,
        gemm.flops_per_s / 1e12
    );
    let measured = crate::with_backend!(backend, |be| measure(
        Profiled::new(be),
        &args,
        &cfg,
        &files,
        &work.0
    )?);
    let report = Report {
        args: &args,
        cfg: &cfg,
        gemm,
        measured,
    };
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.json())?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `count` synthetic PNGs of `side x side` written under `dir`, sorted.
fn source_images(dir: &Path, count: usize, side: u32) -> Result<Arc<Vec<PathBuf>>> {
    let start = Instant::now();
    synthesize(&SynthOptions {
        out: dir.to_path_buf(),
        layout: SynthLayout::Folder,
        categories: 1,
        images: count.max(2),
        width: side,
        height: side,
        seed: 0,
        overwrite: false,
    })?;
    let mut files = Vec::new();
    for input in walk_inputs(&[dir.to_path_buf()])? {
        if let Some(problem) = input.problem {
            bail!(
                "bench: synthetic source {}: {problem}",
                input.path.display()
            );
        }
        if !input.rel.contains("ground_truth") {
            files.push(input.path);
        }
    }
    files.sort();
    files.truncate(count);
    ensure!(
        files.len() == count,
        "bench: synthesised {} source images, wanted {count}",
        files.len()
    );
    eprintln!(
        "{count} source images ({side}x{side} PNG) in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(Arc::new(files))
}

/// What [`measure`] found.
struct Measured {
    /// The backend's name.
    device: String,
    /// Vision blocks run and aggregated sets scored.
    depth: usize,
    sets: usize,
    flops: ImageFlops,
    results: Vec<BatchResult>,
}

/// Builds the random model on `be` and measures every batch size.
fn measure<B: Backend>(
    be: Profiled<B>,
    args: &Args,
    cfg: &ClipConfig,
    files: &Arc<Vec<PathBuf>>,
    work: &Path,
) -> Result<Measured> {
    let start = Instant::now();
    let model = {
        let ckpt = random_checkpoint(cfg, 0);
        let opts = ModelOptions {
            image_size: args.image_size,
            layers: None,
        };
        AfClip::new(
            be,
            &ckpt,
            &Head::init(cfg, 0),
            &ClipTokenizer::builtin()?,
            &opts,
        )?
    };
    let depth = model.layers().iter().copied().max().unwrap_or(0);
    let flops = image_flops(cfg, args.image_size, depth, model.sets());
    let device = model.backend().name().replace(" (profiled)", "");
    eprintln!(
        "random {} at {} px on {device}: ready in {:.1} s; {:.4} TFLOP/image",
        args.preset,
        args.image_size,
        start.elapsed().as_secs_f64(),
        flops.total() / 1e12
    );
    let loader = Arc::new(ImageLoader {
        side: args.image_size,
        max_pixels: DEFAULT_MAX_PIXELS,
        cache: None,
    });
    let maps_dir = work.join("maps");
    std::fs::create_dir_all(&maps_dir)
        .with_context(|| format!("cannot create {}", maps_dir.display()))?;
    let mut results = Vec::new();
    for &batch in &args.batch_sizes {
        let r = bench_batch(&model, args, batch, &loader, files, &maps_dir)
            .with_context(|| format!("bench at batch {batch}"))?;
        eprintln!(
            "batch {batch}: {:.2} ms/image over the stages, {:.2} images/s pipelined",
            r.sum_ms(),
            r.pipelined_rate()
        );
        results.push(r);
    }
    Ok(Measured {
        device,
        depth,
        sets: model.sets(),
        flops,
        results,
    })
}

fn bench_batch<B: Backend>(
    model: &AfClip<Profiled<B>>,
    args: &Args,
    batch: usize,
    loader: &Arc<ImageLoader>,
    files: &Arc<Vec<PathBuf>>,
    maps_dir: &Path,
) -> Result<BatchResult> {
    let side = args.image_size;
    let mut decode = 0.0;
    for _ in 0..args.iters {
        let start = Instant::now();
        (0..batch)
            .into_par_iter()
            .map(|i| loader.load_resized(&files[i % files.len()]))
            .collect::<Result<Vec<_>>>()?;
        decode += start.elapsed().as_secs_f64();
    }

    let batches = args.warmup + args.iters;
    let (l, f) = (Arc::clone(loader), Arc::clone(files));
    let decoded = ordered_map(0..batches * batch, 2 * batch, move |&i| {
        l.load_resized(&f[i % f.len()])
    });
    let mut stages = StageTimes::default();
    let (mut writing, mut timed_from) = (0.0, None);
    for k in 0..batches {
        let group = (0..batch)
            .map(|_| {
                decoded
                    .recv()
                    .ok_or_else(|| anyhow!("the decode pipeline ended early"))?
            })
            .collect::<Result<Vec<Pixels>>>()?;
        if k == args.warmup {
            timed_from = Some(Instant::now());
        }
        // Gathering the batch into one host array is part of the upload, as in `score`.
        let gather = Instant::now();
        let mut rgb = Vec::with_capacity(batch * side * side * 3);
        for p in &group {
            rgb.extend_from_slice(&p.data);
        }
        let gather = gather.elapsed().as_secs_f64();
        let staged = staged_forward(model, Images::Rgb(&rgb), batch)?;
        drop(rgb);
        let write = Instant::now();
        for (i, (p, map)) in group
            .iter()
            .zip(staged.maps.chunks_exact(side * side))
            .enumerate()
        {
            let path = maps_dir.join(format!("{i}.png"));
            let rgb = overlay(p, map);
            image::save_buffer(
                &path,
                &rgb,
                side as u32,
                side as u32,
                image::ExtendedColorType::Rgb8,
            )
            .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if k >= args.warmup {
            stages += staged.times;
            stages.upload += gather;
            writing += write.elapsed().as_secs_f64();
        }
    }
    let wall = timed_from.map_or(0.0, |t| t.elapsed().as_secs_f64());
    Ok(BatchResult {
        batch,
        images: args.iters * batch,
        decode,
        stages,
        writing,
        wall,
    })
}

struct Report<'a> {
    args: &'a Args,
    cfg: &'a ClipConfig,
    gemm: GemmProbe,
    measured: Measured,
}

impl Report<'_> {
    fn vision_rate(&self, r: &BatchResult) -> f64 {
        r.stages.vision_flops / r.stages.vision
    }

    /// The markdown tables printed at the end.
    fn table(&self) -> String {
        let (a, m) = (self.args, &self.measured);
        let f = &m.flops;
        let mut out = format!(
            "\nafclip bench: random {} at {} px on {} ({:?} GEMMs), {} timed batch(es) after {} \
             warm-up, {} source images {}x{} PNG\n{:.1} GFLOP/image (vision {:.1}, adaptor {:.1}, \
             projection {:.1}); bf16 GEMM rate {:.2} TFLOP/s (linear {}x{}->{})\n\n",
            a.preset,
            a.image_size,
            m.device,
            a.backend.precision,
            a.iters,
            a.warmup,
            a.images,
            a.source_size,
            a.source_size,
            f.total() / 1e9,
            f.vision / 1e9,
            f.adaptor / 1e9,
            f.projection / 1e9,
            self.gemm.flops_per_s / 1e12,
            self.gemm.rows,
            self.gemm.in_dim,
            self.gemm.out_dim,
        );
        out += "ms/image by stage:\n\n| batch |";
        for (name, _) in STAGES {
            out += &format!(" {name} |");
        }
        out += " sum | images/s (sum) | images/s (pipelined) |\n|---|";
        out += &"---|".repeat(STAGES.len() + 3);
        out += "\n";
        for r in &m.results {
            out += &format!("| {} |", r.batch);
            for secs in r.stage_secs() {
                out += &format!(" {:.3} |", r.ms_per_image(secs));
            }
            out += &format!(
                " {:.3} | {:.2} | {:.2} |\n",
                r.sum_ms(),
                1e3 / r.sum_ms(),
                r.pipelined_rate()
            );
        }
        out += "\n| batch | vision tower TFLOP/s | % of bf16 GEMM rate | end-to-end TFLOP/s (pipelined) |\n";
        out += "|---|---|---|---|\n";
        for r in &m.results {
            let v = self.vision_rate(r);
            out += &format!(
                "| {} | {:.2} | {:.1}% | {:.2} |\n",
                r.batch,
                v / 1e12,
                100.0 * v / self.gemm.flops_per_s,
                f.total() * r.pipelined_rate() / 1e12
            );
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        let (a, c, m) = (self.args, self.cfg, &self.measured);
        let f = &m.flops;
        let grid = a.image_size / c.patch;
        let batches: Vec<_> = m
            .results
            .iter()
            .map(|r| {
                let stages: serde_json::Map<_, _> = STAGES
                    .iter()
                    .zip(r.stage_secs())
                    .map(|((_, key), secs)| {
                        let ms = r.ms_per_image(secs);
                        (
                            key.to_string(),
                            json!({"ms_per_image": ms, "images_per_s": 1e3 / ms}),
                        )
                    })
                    .collect();
                let v = self.vision_rate(r);
                let images = r.images as f64;
                json!({
                    "batch": r.batch,
                    "images": r.images,
                    "stages": stages,
                    "stage_sum_ms_per_image": r.sum_ms(),
                    "sequential_images_per_s": 1e3 / r.sum_ms(),
                    "pipelined_images_per_s": r.pipelined_rate(),
                    "measured_flops_per_image": {
                        "vision": r.stages.vision_flops / images,
                        "adaptor_and_projection": r.stages.head_flops / images,
                    },
                    "vision_tflops": v / 1e12,
                    "vision_percent_of_gemm": 100.0 * v / self.gemm.flops_per_s,
                    "end_to_end_tflops": f.total() * r.pipelined_rate() / 1e12,
                })
            })
            .collect();
        json!({
            "commit": env!("AFCLIP_COMMIT"),
            "preset": a.preset,
            "image_size": a.image_size,
            "device": m.device,
            "precision": format!("{:?}", a.backend.precision),
            "source_images": a.images,
            "source_size": a.source_size,
            "iters": a.iters,
            "warmup": a.warmup,
            "config": {
                "vision_width": c.vision_width,
                "vision_layers": c.vision_layers,
                "vision_mlp": c.vision_mlp,
                "patch": c.patch,
                "embed_dim": c.embed_dim,
                "grid": grid,
                "tokens": grid * grid + 1,
                "depth": m.depth,
                "sets": m.sets,
            },
            "flops_per_image": {
                "vision": f.vision,
                "adaptor": f.adaptor,
                "projection": f.projection,
                "total": f.total(),
            },
            "gemm": {
                "backend": self.gemm.backend,
                "precision": "bf16",
                "rows": self.gemm.rows,
                "in": self.gemm.in_dim,
                "out": self.gemm.out_dim,
                "tflops": self.gemm.flops_per_s / 1e12,
            },
            "batches": batches,
        })
    }
}
