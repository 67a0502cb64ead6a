//! `afclip bank build`: memory banks (SPEC §7) of normal reference images, for
//! `afclip score --bank` and `afclip eval --bank`.

use super::common::{BackendArgs, ModelArgs};
use crate::backend::Backend;
use crate::data::inputs::walk_inputs;
use crate::fewshot::bank::Bank;
use crate::model::afclip::{AfClip, DEFAULT_IMAGE_SIZE};
use anyhow::{bail, ensure, Context, Result};
use clap::{Args as ClapArgs, Subcommand};
use std::path::PathBuf;
use std::time::Instant;

#[derive(ClapArgs, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Subcommand, Debug)]
pub enum Action {
    /// Build the 12 banks (4 layers × 3 scales) of raw aggregated patch features of normal
    /// images into one file that records the model, image size and layers.
    Build(BuildArgs),
}

#[derive(ClapArgs, Debug)]
pub struct BuildArgs {
    /// Folder with one CLIP checkpoint (.safetensors); the head is not needed (banks hold raw
    /// features).
    #[arg(long)]
    pub model: PathBuf,
    /// Which .safetensors file of --model to use, when it holds several.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Side S of the square model input (a multiple of the patch size).
    #[arg(long, default_value_t = DEFAULT_IMAGE_SIZE)]
    pub image_size: usize,
    /// 1-based vision blocks whose outputs are the features (default: four evenly spaced).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The bank file to write (safetensors).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Normal reference images: files or folders (walked recursively, sorted).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    match args.action {
        Action::Build(a) => build(a),
    }
}

fn build(args: BuildArgs) -> Result<()> {
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let mut paths = Vec::new();
    let mut names = Vec::new();
    for input in walk_inputs(&args.inputs)? {
        if let Some(problem) = input.problem {
            bail!("reference image {}: {problem}", input.path.display());
        }
        paths.push(input.path);
        names.push(input.rel);
    }
    ensure!(
        !paths.is_empty(),
        "no images found in {}",
        args.inputs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // A fresh head: the bank holds raw features, which the head does not touch.
    let model_args = ModelArgs {
        model: args.model.clone(),
        weights: args.weights.clone(),
        head: None,
        init_seed: Some(0),
        image_size: args.image_size,
        layers: args.layers.clone(),
        fixed_prompts: false,
    };
    crate::with_backend!(args.backend, |be| write_bank(
        model_args.load(be)?,
        &args,
        &paths,
        names
    ))
}

/// Builds the bank with `model` (on the backend `--device` selected) and writes it.
fn write_bank<B: Backend>(
    model: AfClip<B>,
    args: &BuildArgs,
    paths: &[PathBuf],
    names: Vec<String>,
) -> Result<()> {
    eprintln!(
        "afclip bank build: {} reference images, {}, image size {}, layers {:?}",
        paths.len(),
        model.backend().name(),
        model.image_size(),
        model.layers()
    );
    let start = Instant::now();
    let bank = Bank::build(
        &model,
        paths,
        names,
        &args.model.display().to_string(),
        args.batch_size,
    )?;
    bank.save(&args.out)
        .with_context(|| format!("writing the bank {}", args.out.display()))?;
    eprintln!(
        "wrote {}: {} sets of {} rows x {} in {:.1} s",
        args.out.display(),
        bank.sets.len(),
        bank.rows(),
        bank.meta.width,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
