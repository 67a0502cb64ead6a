//! `afclip score`: zero-shot scores (and optionally anomaly maps) for images and folders.

use super::common::{BackendArgs, ModelArgs};
use crate::data::cache::Cache;
use crate::data::inputs::{walk_inputs, Input};
use crate::data::pipeline::{ordered_map, ImageLoader, DEFAULT_MAX_PIXELS};
use crate::data::preprocess::PreparedImage;
use crate::model::afclip::AfClip;
use crate::output::csv::field;
use crate::output::heatmap::overlay;
use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, ValueEnum};
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MapFormat {
    /// Heatmap overlay on the resized image.
    Png,
    /// float32 S×S array, the final smoothed map.
    Npy,
    None,
}

#[derive(ClapArgs, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Output folder: scores.csv and maps/.
    #[arg(long)]
    pub out: PathBuf,
    /// Images per forward pass.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value_t = MapFormat::None)]
    pub save_maps: MapFormat,
    /// Keep resized images here (memory-mapped files) so later runs skip decoding.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Refuse images with more pixels than this (before decoding them).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Exit with code 0 even when some inputs failed (default: code 3).
    #[arg(long)]
    pub allow_errors: bool,
    /// Image files or folders (walked recursively, sorted).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let inputs = walk_inputs(&args.inputs)?;
    let be = args.backend.cpu()?;
    let model = args.model.load(be)?;
    eprintln!(
        "afclip score: {}, image size {}, layers {:?}",
        crate::backend::Backend::name(model.backend()),
        model.image_size(),
        model.layers()
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create output folder {}", args.out.display()))?;
    let final_csv = args.out.join("scores.csv");
    let partial_csv = args.out.join("scores.csv.partial");
    let mut csv = BufWriter::new(
        File::create(&partial_csv)
            .with_context(|| format!("cannot create {}", partial_csv.display()))?,
    );
    writeln!(csv, "path,score,status,error")?;
    let cache = args.cache.as_deref().map(Cache::open).transpose()?;
    let loader = ImageLoader {
        side: model.image_size(),
        max_pixels: args.max_pixels,
        cache,
    };
    let loader = std::sync::Arc::new(loader);
    let worker = std::sync::Arc::clone(&loader);
    let rx = ordered_map(inputs, args.batch_size * 4, move |input: &Input| {
        let result = match &input.problem {
            Some(p) => Err(anyhow::anyhow!("{p}")),
            None => worker.load(&input.path),
        };
        (input.clone(), result)
    });
    let mut progress = Progress::new();
    let mut group: Vec<(Input, Result<PreparedImage>)> = Vec::new();
    let mut ready = 0;
    let mut failed = 0u64;
    for item in rx.iter() {
        ready += item.1.is_ok() as usize;
        failed += item.1.is_err() as u64;
        group.push(item);
        if ready == args.batch_size {
            progress.advance(group.len());
            score_group(&model, &mut group, args.save_maps, &args.out, &mut csv)?;
            ready = 0;
        }
    }
    progress.advance(group.len());
    score_group(&model, &mut group, args.save_maps, &args.out, &mut csv)?;
    progress.finish();
    csv.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot write {}", partial_csv.display()))?;
    std::fs::rename(&partial_csv, &final_csv)
        .with_context(|| format!("cannot move {} into place", partial_csv.display()))?;
    eprintln!("wrote {}", final_csv.display());
    if let Some(stats) = loader.cache.as_ref().map(Cache::stats) {
        eprintln!(
            "cache: {} hits, {} misses, {} corrupt entries rebuilt",
            stats.hits, stats.misses, stats.rebuilt
        );
    }
    if failed > 0 && !args.allow_errors {
        return Err(InputsFailed {
            failed,
            total: progress.done as u64,
            csv: final_csv,
        }
        .into());
    }
    Ok(())
}

/// Some inputs could not be scored (their rows say why); the process exits with code 3.
#[derive(Debug)]
pub struct InputsFailed {
    pub failed: u64,
    pub total: u64,
    pub csv: PathBuf,
}

impl std::fmt::Display for InputsFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} inputs failed (rows with status=error in {}); --allow-errors accepts that",
            self.failed,
            self.total,
            self.csv.display()
        )
    }
}

impl std::error::Error for InputsFailed {}

/// Scores the decodable images of `group` in one batch and writes every row in input order.
fn score_group<B: crate::backend::Backend>(
    model: &AfClip<B>,
    group: &mut Vec<(Input, Result<PreparedImage>)>,
    maps: MapFormat,
    out: &Path,
    csv: &mut impl Write,
) -> Result<()> {
    let good: Vec<&PreparedImage> = group.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
    let batch = good.len();
    let s = model.image_size();
    let scores = if batch > 0 {
        let mut pixels = Vec::with_capacity(batch * 3 * s * s);
        good.iter()
            .for_each(|p| pixels.extend_from_slice(&p.tensor));
        Some(model.score(&pixels, batch, maps != MapFormat::None)?)
    } else {
        None
    };
    let mut k = 0;
    for (input, result) in group.drain(..) {
        match result {
            Ok(prepared) => {
                let scores = scores.as_ref().expect("a batch ran for good images");
                writeln!(csv, "{},{},ok,", field(&input.rel), scores.image[k])?;
                if maps != MapFormat::None {
                    let map = &scores.maps[k * s * s..(k + 1) * s * s];
                    write_map(out, input.stem(), maps, map, &prepared, s)?;
                }
                k += 1;
            }
            Err(e) => {
                eprintln!("warning: {}: {e:#}", input.path.display());
                writeln!(
                    csv,
                    "{},,error,{}",
                    field(&input.rel),
                    field(&format!("{e:#}"))
                )?;
            }
        }
    }
    Ok(())
}

fn write_map(
    out: &Path,
    stem: &str,
    format: MapFormat,
    map: &[f32],
    prepared: &PreparedImage,
    side: usize,
) -> Result<()> {
    let ext = match format {
        MapFormat::Png => "png",
        MapFormat::Npy => "npy",
        MapFormat::None => return Ok(()),
    };
    let path = out.join("maps").join(format!("{stem}.{ext}"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match format {
        MapFormat::Png => {
            let rgb = overlay(&prepared.resized, map);
            image::save_buffer(
                &path,
                &rgb,
                side as u32,
                side as u32,
                image::ExtendedColorType::Rgb8,
            )
            .with_context(|| format!("cannot write {}", path.display()))
        }
        _ => crate::data::npy::write_f32_2d(&path, map, side, side),
    }
}

/// Images/s on stderr: a rewritten line on a terminal, a line every 10 s otherwise.
struct Progress {
    done: usize,
    start: Instant,
    last: Instant,
    tty: bool,
}

impl Progress {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            done: 0,
            start: now,
            last: now,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn advance(&mut self, n: usize) {
        self.done += n;
        let every = if self.tty { 0.2 } else { 10.0 };
        if self.last.elapsed().as_secs_f64() >= every {
            self.last = Instant::now();
            self.print();
        }
    }

    fn print(&self) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let line = format!(
            "scored {} images, {:.2} images/s",
            self.done,
            self.done as f64 / secs
        );
        if self.tty {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        self.print();
        if self.tty {
            eprintln!();
        }
    }
}
