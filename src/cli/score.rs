//! `afclip score`: zero-shot scores (and optionally anomaly maps) for images, folders and whole
//! archives.
//!
//! Flow: a lazy folder walk (scoring starts at once) → `--shard` filter → the ordered decode
//! pipeline (rayon pool, bounded) → groups of `--batch-size` decodable images → one model per
//! `--devices` entry, groups dealt round-robin and collected back in order → the crash-safe
//! result writer (`crate::archive`), which checkpoints and supports `--resume`. Each model has
//! a feeder thread that hands the next group's resized RGB bytes to the backend
//! (`AfClip::upload_rgb`: normalised on the device, copied on its own stream) while the
//! model's scoring thread computes the current group.

use super::common::{BackendArgs, Device, ModelArgs};
use crate::archive::journal::{chain, Checkpoint, Opened, ResultWriter, EMPTY_HASH};
use crate::archive::{fingerprint, Format, Shard};
use crate::data::cache::Cache;
use crate::data::decode::{decode_rgb, Pixels};
use crate::data::inputs::{walk_inputs, Input};
use crate::data::pipeline::{ordered_map, ImageLoader, DEFAULT_MAX_PIXELS};
use crate::data::resize::resize_bicubic;
use crate::fewshot::bank::Bank;
use crate::fewshot::scorer::{FewShot, DEFAULT_ALPHA};
use crate::model::afclip::AfClip;
use crate::model::vision::Images;
use crate::output::heatmap::overlay;
use crate::output::top::{best_rows, read_index, thumbnail_name, write_report, Entry, TOP_DIR};
use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::{Args as ClapArgs, ValueEnum};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Output folder: scores.csv (or scores.jsonl), maps/, masks/, run.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Images per forward pass.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    #[arg(long, value_enum, default_value_t = MapFormat::None)]
    pub save_maps: MapFormat,
    /// Format of the rows.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Also write masks/<name>.png: 255 where the anomaly map exceeds T, else 0.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Write report.md with the K highest-scoring images and their thumbnails (top/).
    #[arg(long)]
    pub top: Option<usize>,
    /// Continue the interrupted run in --out (starts fresh when there is none).
    #[arg(long)]
    pub resume: bool,
    /// Score only shard I of N: the inputs whose relative path hashes to I (mod N).
    #[arg(long, default_value = "0/1")]
    pub shard: Shard,
    /// Device ordinals, one model and pipeline each, sharing the decode pool (this build:
    /// CPU workers that split --threads).
    #[arg(long, value_delimiter = ',')]
    pub devices: Option<Vec<usize>>,
    /// Seconds between checkpoints (fsync of rows and maps, then a journal line).
    #[arg(long, default_value_t = 2.0)]
    pub sync_secs: f64,
    /// Keep resized images here (memory-mapped files) so later runs skip decoding.
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Refuse images with more pixels than this (before decoding them).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Exit with code 0 even when some inputs failed (default: code 3).
    #[arg(long)]
    pub allow_errors: bool,
    /// Few-shot AF-CLIP+ (SPEC §7): score against this memory bank (`afclip bank build`).
    #[arg(long)]
    pub bank: Option<PathBuf>,
    /// Weight of the zero-shot score in the few-shot combination.
    #[arg(long, default_value_t = DEFAULT_ALPHA, requires = "bank")]
    pub alpha: f32,
    /// Image files or folders (walked recursively, sorted).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

type Loaded = (Input, Result<Pixels>);
/// One device's queue of groups and its results, in order.
type Lane = (Sender<Vec<Loaded>>, Receiver<Result<Scored>>);

/// A group of inputs whose decodable images are one forward pass.
struct Scored {
    rows: Vec<(Input, Result<f32, String>)>,
    files: Vec<PathBuf>,
}

struct Outputs {
    dir: PathBuf,
    maps: MapFormat,
    threshold: Option<f32>,
}

impl Outputs {
    fn with_maps(&self) -> bool {
        self.maps != MapFormat::None || self.threshold.is_some()
    }

    fn folders(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.maps != MapFormat::None {
            f.push("maps".to_string());
        }
        if self.threshold.is_some() {
            f.push("masks".to_string());
        }
        f
    }
}

pub fn run(args: Args) -> Result<()> {
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    ensure!(
        args.sync_secs >= 0.0 && args.sync_secs.is_finite(),
        "--sync-secs must be a non-negative number of seconds"
    );
    if let Some(t) = args.threshold {
        ensure!(t.is_finite(), "--threshold must be a finite number");
    }
    let devices = args.devices.clone().unwrap_or_else(|| vec![0]);
    ensure!(!devices.is_empty(), "--devices needs at least one device");
    let config = fingerprint(&[
        format!("{:?}", args.inputs),
        format!("{:?}", args.model),
        format!("{:?}", args.backend.device),
        format!("{:?}", args.save_maps),
        format!("{:?}", args.threshold),
        args.format.name().to_string(),
        args.batch_size.to_string(),
    ]);
    let outputs = Outputs {
        dir: args.out.clone(),
        maps: args.save_maps,
        threshold: args.threshold,
    };
    // Arguments are checked before the output folder is touched.
    walk_inputs(&args.inputs)?;
    let opened = ResultWriter::open(
        &args.out,
        args.format,
        config,
        args.shard,
        args.resume,
        Duration::from_secs_f64(args.sync_secs),
    )?;
    let (writer, start) = match opened {
        Opened::Writer(w, start) => (w, start),
        Opened::Complete(info) => {
            eprintln!(
                "{} already holds the complete run ({} rows, {} failed)",
                args.out.display(),
                info.rows,
                info.failed
            );
            // A run stopped between run.json and top.json gets its report here.
            if let Some(k) = args.top {
                if read_index(&args.out)?.map(|t| t.k) != Some(k) {
                    write_top(&args, k)?;
                }
            }
            return finish_code(info.failed, info.rows, &args);
        }
    };
    if start.next > 0 {
        check_prefix(&args, start.next, start.rows, start.hash)?;
        eprintln!(
            "resuming after {} rows (input #{} of the full order)",
            start.rows, start.next
        );
    }

    let bank = args.bank.as_deref().map(Bank::load).transpose()?;
    let run = Run {
        args: &args,
        outputs,
        writer,
        start,
        bank,
    };
    match args.backend.resolve()? {
        Device::Cpu => {
            let threads = args
                .backend
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let per_device = (threads / devices.len()).max(1);
            let mut models = Vec::new();
            for _ in &devices {
                let mut backend = args.backend.clone();
                if devices.len() > 1 {
                    backend.threads = Some(per_device);
                }
                models.push(args.model.load(backend.cpu()?)?);
            }
            run.on(models)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(first) => {
            let ordinals = args.devices.clone().unwrap_or_else(|| vec![first]);
            let models = ordinals
                .iter()
                .map(|&n| args.model.load(args.backend.cuda(n)?))
                .collect::<Result<Vec<_>>>()?;
            run.on(models)
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(n) => {
            bail!("--device cuda:{n}: this build has no CUDA backend (cargo build --features cuda)")
        }
    }
}

/// A prepared `score` run, waiting for its models.
struct Run<'a> {
    args: &'a Args,
    outputs: Outputs,
    writer: Box<ResultWriter>,
    start: Checkpoint,
    bank: Option<Bank>,
}

impl Run<'_> {
    fn on<B: crate::backend::Backend>(self, models: Vec<AfClip<B>>) -> Result<()> {
        let Run {
            args,
            outputs,
            mut writer,
            start,
            bank,
        } = self;
        let scorers = models
            .iter()
            .map(|m| match &bank {
                Some(b) => Ok(Scorer::FewShot(FewShot::new(m, b, args.alpha)?)),
                None => Ok(Scorer::ZeroShot(m)),
            })
            .collect::<Result<Vec<_>>>()?;
        let side = models[0].image_size();
        eprintln!(
            "afclip score: {} x {}, image size {side}, layers {:?}, shard {}",
            models.len(),
            crate::backend::Backend::name(models[0].backend()),
            models[0].layers(),
            args.shard
        );

        let total = Arc::new(AtomicU64::new(u64::MAX));
        count_in_background(&args.inputs, args.shard, start.next, Arc::clone(&total));
        let seen = Arc::new(AtomicU64::new(0));
        let seen_in_walk = Arc::clone(&seen);
        let (shard, from) = (args.shard, start.next);
        let stream = walk_inputs(&args.inputs)?
            .inspect(move |i| seen_in_walk.store(i.index + 1, Ordering::SeqCst))
            .filter(move |i| i.index >= from && i.shard(shard.count) == shard.index);
        let cache = args.cache.as_deref().map(Cache::open).transpose()?;
        let loader = Arc::new(ImageLoader {
            side,
            max_pixels: args.max_pixels,
            cache,
        });
        let worker_loader = Arc::clone(&loader);
        let rx = ordered_map(
            stream,
            args.batch_size * 4 * models.len(),
            move |input: &Input| {
                let result = match &input.problem {
                    Some(p) => Err(anyhow!("{p}")),
                    None => worker_loader.load_resized(&input.path),
                };
                (input.clone(), result)
            },
        );

        let mut progress = Progress::new(total);
        std::thread::scope(|scope| -> Result<()> {
            let mut lanes: Vec<Lane> = Vec::new();
            for model in &scorers {
                let (job_tx, job_rx) = bounded::<Vec<Loaded>>(1);
                let (staged_tx, staged_rx) = bounded::<Result<Staged<B>>>(1);
                let (res_tx, res_rx) = bounded::<Result<Scored>>(1);
                let outputs = &outputs;
                scope.spawn(move || {
                    for group in job_rx.iter() {
                        if staged_tx.send(stage_group(model.model(), group)).is_err() {
                            return;
                        }
                    }
                });
                scope.spawn(move || {
                    for staged in staged_rx.iter() {
                        let scored = staged.and_then(|s| score_group(model, s, outputs));
                        if res_tx.send(scored).is_err() {
                            return;
                        }
                    }
                });
                lanes.push((job_tx, res_rx));
            }
            let mut sent = 0usize;
            let mut received = 0usize;
            let mut collect = |received: &mut usize| -> Result<()> {
                let scored = lanes[*received % lanes.len()]
                    .1
                    .recv()
                    .context("a scoring worker stopped")??;
                *received += 1;
                let mut last = None;
                for (input, result) in &scored.rows {
                    match result {
                        Ok(score) => writer.row(input.index, &input.rel, Some(*score), None)?,
                        Err(e) => {
                            eprintln!("warning: {e}");
                            writer.row(input.index, &input.rel, None, Some(e))?;
                        }
                    }
                    last = Some(input.index);
                }
                writer.wrote_files(scored.files);
                if let Some(last) = last {
                    writer.done_before(last + 1)?;
                }
                progress.advance(scored.rows.len());
                Ok(())
            };
            let mut group: Vec<Loaded> = Vec::new();
            let mut ready = 0;
            let mut items = rx.iter();
            loop {
                let item = items.next();
                let end = item.is_none();
                if let Some(item) = item {
                    ready += usize::from(item.1.is_ok());
                    group.push(item);
                }
                if ready == args.batch_size || (end && !group.is_empty()) {
                    // Two groups in flight per model: one computing, the next being fed.
                    if sent - received == 2 * lanes.len() {
                        collect(&mut received)?;
                    }
                    lanes[sent % lanes.len()]
                        .0
                        .send(std::mem::take(&mut group))
                        .map_err(|_| anyhow!("a scoring worker stopped"))?;
                    sent += 1;
                    ready = 0;
                }
                if end {
                    break;
                }
            }
            while received < sent {
                collect(&mut received)?;
            }
            drop(lanes);
            Ok(())
        })?;
        progress.finish();
        let inputs_total = seen.load(Ordering::SeqCst).max(start.next);
        let failed = writer.failed();
        let rows = writer.rows();
        writer.finish(inputs_total, outputs.folders())?;
        eprintln!(
            "wrote {} ({rows} rows)",
            args.out.join(args.format.file_name()).display()
        );
        if let Some(stats) = loader.cache.as_ref().map(Cache::stats) {
            eprintln!(
                "cache: {} hits, {} misses, {} corrupt entries rebuilt",
                stats.hits, stats.misses, stats.rebuilt
            );
        }
        if let Some(k) = args.top {
            write_top(args, k)?;
        }
        finish_code(failed, rows, args)
    }
}

/// Zero-shot AF-CLIP, or AF-CLIP+ against a memory bank.
enum Scorer<'m, B: crate::backend::Backend> {
    ZeroShot(&'m AfClip<B>),
    FewShot(FewShot<'m, B>),
}

impl<B: crate::backend::Backend> Scorer<'_, B> {
    fn model(&self) -> &AfClip<B> {
        match self {
            Scorer::ZeroShot(m) => m,
            Scorer::FewShot(f) => f.model(),
        }
    }

    /// Image scores `[batch]` and, when asked, final maps `[batch, S, S]`.
    fn score(
        &self,
        images: Images<'_, B>,
        batch: usize,
        with_maps: bool,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        match self {
            Scorer::ZeroShot(m) => m.score(images, batch, with_maps).map(|s| (s.image, s.maps)),
            Scorer::FewShot(f) => f.score(images, batch, with_maps).map(|s| (s.image, s.maps)),
        }
    }
}

fn finish_code(failed: u64, rows: u64, args: &Args) -> Result<()> {
    if failed > 0 && !args.allow_errors {
        return Err(InputsFailed {
            failed,
            total: rows,
            csv: args.out.join(args.format.file_name()),
        }
        .into());
    }
    Ok(())
}

/// On resume: the inputs before position `next` of this shard must be the rows already
/// written (same count, same names in the same order).
fn check_prefix(args: &Args, next: u64, rows: u64, hash: u64) -> Result<()> {
    let (mut n, mut h) = (0u64, EMPTY_HASH);
    for input in walk_inputs(&args.inputs)?.take_while(|i| i.index < next) {
        if input.shard(args.shard.count) == args.shard.index {
            n += 1;
            h = chain(h, &input.rel);
        }
    }
    if n != rows || h != hash {
        bail!(
            "cannot resume in {}: the inputs changed since the interrupted run (its {rows} rows \
             no longer match the first {n} inputs); start again in a new --out",
            args.out.display()
        );
    }
    Ok(())
}

/// Counts this shard's remaining inputs on a listing-only walk, so progress can show an ETA.
fn count_in_background(inputs: &[PathBuf], shard: Shard, from: u64, total: Arc<AtomicU64>) {
    let inputs = inputs.to_vec();
    std::thread::spawn(move || {
        if let Ok(walk) = walk_inputs(&inputs) {
            let n = walk
                .filter(|i| i.index >= from && i.shard(shard.count) == shard.index)
                .count();
            total.store(n as u64, Ordering::SeqCst);
        }
    });
}

/// A group whose decodable images are already in the backend's memory, normalised
/// (`[batch, 3, S, S]`; `None` when none decoded).
struct Staged<B: crate::backend::Backend> {
    group: Vec<Loaded>,
    pixels: Option<B::Buf>,
}

/// Hands the decodable images of `group` to the backend as one batch.
fn stage_group<B: crate::backend::Backend>(
    model: &AfClip<B>,
    group: Vec<Loaded>,
) -> Result<Staged<B>> {
    let good: Vec<&Pixels> = group.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
    let pixels = if good.is_empty() {
        None
    } else {
        let mut rgb = Vec::with_capacity(good.iter().map(|p| p.data.len()).sum());
        good.iter().for_each(|p| rgb.extend_from_slice(&p.data));
        Some(model.upload_rgb(&rgb, good.len())?)
    };
    Ok(Staged { group, pixels })
}

/// Scores a staged group in one batch; writes the maps and masks of its images.
fn score_group<B: crate::backend::Backend>(
    scorer: &Scorer<'_, B>,
    staged: Staged<B>,
    out: &Outputs,
) -> Result<Scored> {
    let s = scorer.model().image_size();
    let Staged { group, pixels } = staged;
    let batch = group.iter().filter(|(_, r)| r.is_ok()).count();
    let scores = match &pixels {
        Some(px) => Some(scorer.score(Images::Resident(px), batch, out.with_maps())?),
        None => None,
    };
    let mut rows = Vec::with_capacity(group.len());
    let mut files = Vec::new();
    let mut k = 0;
    for (input, result) in group {
        match result {
            Ok(resized) => {
                let scores = scores.as_ref().expect("a batch ran for good images");
                if out.with_maps() {
                    let map = &scores.1[k * s * s..(k + 1) * s * s];
                    write_map(out, input.stem(), map, &resized, s, &mut files)?;
                }
                rows.push((input, Ok(scores.0[k])));
                k += 1;
            }
            Err(e) => {
                let msg = format!("{e:#}");
                rows.push((input, Err(msg)));
            }
        }
    }
    Ok(Scored { rows, files })
}

fn write_map(
    out: &Outputs,
    stem: &str,
    map: &[f32],
    resized: &Pixels,
    side: usize,
    files: &mut Vec<PathBuf>,
) -> Result<()> {
    let mut targets = Vec::new();
    match out.maps {
        MapFormat::Png => targets.push(("maps", "png")),
        MapFormat::Npy => targets.push(("maps", "npy")),
        MapFormat::None => {}
    }
    if out.threshold.is_some() {
        targets.push(("masks", "png"));
    }
    for (folder, ext) in targets {
        let path = out.dir.join(folder).join(format!("{stem}.{ext}"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let (bytes, colour) = match (folder, ext) {
            ("masks", _) => {
                let t = out.threshold.expect("masks only with a threshold");
                let mask: Vec<u8> = map.iter().map(|&v| if v > t { 255 } else { 0 }).collect();
                (Some(mask), image::ExtendedColorType::L8)
            }
            (_, "png") => (Some(overlay(resized, map)), image::ExtendedColorType::Rgb8),
            _ => (None, image::ExtendedColorType::L8),
        };
        match bytes {
            Some(b) => image::save_buffer(&path, &b, side as u32, side as u32, colour)
                .with_context(|| format!("cannot write {}", path.display()))?,
            None => crate::data::npy::write_f32_2d(&path, map, side, side)?,
        }
        files.push(path);
    }
    Ok(())
}

/// The `--top k` report (see [`crate::output::top`]), read back from the finished scores
/// file, with 128-pixel thumbnails decoded from the sources.
fn write_top(args: &Args, k: usize) -> Result<()> {
    let best = best_rows(&args.out.join(args.format.file_name()), args.format, k)?;
    let top_dir = args.out.join(TOP_DIR);
    std::fs::create_dir_all(&top_dir)
        .with_context(|| format!("cannot create {}", top_dir.display()))?;
    let mut entries = Vec::new();
    for (rank, (score, _, rel)) in best.into_iter().enumerate() {
        let thumb = thumbnail_name(rank);
        let thumbnail = match source_of(&args.inputs, &rel).map(|p| decode_rgb(&p)) {
            Some(Ok(rgb)) => {
                let small = resize_bicubic(&rgb, 128, 128);
                image::save_buffer(
                    args.out.join(&thumb),
                    &small.data,
                    128,
                    128,
                    image::ExtendedColorType::Rgb8,
                )
                .with_context(|| format!("cannot write {thumb}"))?;
                Some(thumb)
            }
            _ => None,
        };
        entries.push(Entry {
            path: rel,
            score,
            thumbnail,
        });
    }
    write_report(&args.out, k, &entries)
}

/// The source file an input argument list reports as `rel`.
fn source_of(inputs: &[PathBuf], rel: &str) -> Option<PathBuf> {
    inputs.iter().find_map(|arg| {
        if arg.is_dir() {
            let p = arg.join(rel);
            p.is_file().then_some(p)
        } else {
            (arg.file_name()?.to_string_lossy() == rel).then(|| arg.clone())
        }
    })
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

/// Images/s and, once the listing is counted, ETA on stderr: a rewritten line on a terminal,
/// a line every 10 s otherwise.
struct Progress {
    done: usize,
    total: Arc<AtomicU64>,
    start: Instant,
    last: Instant,
    tty: bool,
}

impl Progress {
    fn new(total: Arc<AtomicU64>) -> Self {
        let now = Instant::now();
        Self {
            done: 0,
            total,
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
        let rate = self.done as f64 / secs;
        let line = match self.total.load(Ordering::SeqCst) {
            u64::MAX => format!("scored {} images, {rate:.2} images/s", self.done),
            total => {
                let left = total.saturating_sub(self.done as u64) as f64;
                let eta = if rate > 0.0 { left / rate } else { 0.0 };
                format!(
                    "scored {}/{total} images, {rate:.2} images/s, ETA {}",
                    self.done,
                    hms(eta)
                )
            }
        };
        if self.tty {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
        let _ = std::io::stderr().flush();
    }

    fn finish(&self) {
        self.print();
        if self.tty {
            eprintln!();
        }
    }
}

fn hms(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hms_formats() {
        assert_eq!(hms(3725.0), "1:02:05");
    }
}
