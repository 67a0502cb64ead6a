//! `afclip score`: zero-shot scores (and optionally anomaly maps) for images and folders.

use super::common::{BackendArgs, ModelArgs};
use crate::data::inputs::{collect_inputs, Input};
use crate::data::pipeline::ordered_map;
use crate::data::preprocess::{load_image, PreparedImage};
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
    /// Image files or folders (walked recursively, sorted).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let inputs = collect_inputs(&args.inputs)?;
    let be = args.backend.cpu()?;
    let model = args.model.load(be)?;
    eprintln!(
        "afclip score: {} images, {}, image size {}, layers {:?}",
        inputs.len(),
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
    let total = inputs.len();
    let side = model.image_size();
    let rx = ordered_map(inputs, args.batch_size * 4, move |input: &Input| {
        (input.clone(), load_image(&input.path, side))
    });
    let mut progress = Progress::new(total);
    let mut group: Vec<(Input, Result<PreparedImage>)> = Vec::new();
    let mut ready = 0;
    for item in rx.iter() {
        ready += item.1.is_ok() as usize;
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
    Ok(())
}

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
    total: usize,
    done: usize,
    start: Instant,
    last: Instant,
    tty: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        let now = Instant::now();
        Self {
            total,
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
            "scored {}/{} images, {:.2} images/s",
            self.done,
            self.total,
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
