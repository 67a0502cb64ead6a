//! `afclip train`: trains the prompt and the adaptor (SPEC §8) on a dataset's test split (the
//! auxiliary set) with CLIP frozen, and writes the head.

use super::common::BackendArgs;
use crate::backend::Backend;
use crate::data::layouts::{load_dataset, Category, DatasetKind};
use crate::model::afclip::{default_layers, DEFAULT_IMAGE_SIZE, WINDOWS};
use crate::model::checkpoint::{find_weights, Checkpoint};
use crate::model::head::{Head, Prompts};
use crate::model::tokenizer::ClipTokenizer;
use crate::train::features::{CachePrecision, FeatureCache, TrainSample};
use crate::train::step::{StepOptions, TrainModel, LAMBDA_ALIGN};
use crate::train::trainer::{train, EpochReport, TrainConfig};
use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use std::path::{Path, PathBuf};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Folder with one CLIP checkpoint (.safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// Which .safetensors file of --model to use, when it holds several.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Dataset root; its test split is the training set.
    #[arg(long)]
    pub data: PathBuf,
    /// Layout (mvtec, visa, btad, dtd, mpdd, dagm, folder, meta, manifest, ...).
    #[arg(long)]
    pub dataset: DatasetKind,
    /// Only these categories (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub categories: Option<Vec<String>>,
    /// The trained head (safetensors), written after every epoch; the resume checkpoint goes
    /// next to it as <stem>.ckpt.safetensors.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f32,
    /// Seed of the shuffling (and of --init-seed's head when that is not given).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Start from this head instead of a fresh one.
    #[arg(long, conflicts_with = "init_seed")]
    pub init_head: Option<PathBuf>,
    /// Seed of the fresh head (default: --seed).
    #[arg(long)]
    pub init_seed: Option<u64>,
    /// Stop after this many steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Batches in dataset order.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Continue from the checkpoint next to --out.
    #[arg(long)]
    pub resume: bool,
    /// Side S of the square model input.
    #[arg(long, default_value_t = DEFAULT_IMAGE_SIZE)]
    pub image_size: usize,
    /// 1-based feature blocks (default: four evenly spaced; one block = the "last layer only"
    /// ablation).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    /// Ablation: windows {1} only instead of {1, 3, 5}.
    #[arg(long)]
    pub no_aggregation: bool,
    /// Ablation: train without the patch-alignment loss.
    #[arg(long)]
    pub no_alignment_loss: bool,
    /// Ablation: no adaptor (`z = ln_post(c) proj`); only the prompt trains. Evaluate the head
    /// with `eval --no-adaptor`.
    #[arg(long)]
    pub no_adaptor: bool,
    /// Ablation (paper Table 4): the fixed sentences "a photo of an object without/with
    /// defect." instead of the 12 learnable prompt vectors; the text features are computed once
    /// and only the adaptor trains. The head file records it (metadata afclip.prompts = fixed),
    /// so `eval`/`score` use the fixed prompts with it automatically. With --init-head, a head
    /// trained with fixed prompts continues with them even without this flag.
    #[arg(long)]
    pub fixed_prompts: bool,
    /// Features are kept in RAM up to this many MiB, else in a memory-mapped file.
    #[arg(long, default_value_t = 8192)]
    pub cache_ram_mb: u64,
    /// Storage of the cached vision features: f32 (exact) or f16 (half the RAM / disk; values
    /// rounded to 11 significant bits, an error if one exceeds f16's range).
    #[arg(long, value_enum, default_value_t = CachePrecision::F32)]
    pub cache_precision: CachePrecision,
    /// Folder of the memory-mapped feature file (default: next to --out).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// The test samples of `categories`, in order, as training samples.
pub fn training_samples(categories: &[Category]) -> Vec<TrainSample> {
    categories
        .iter()
        .flat_map(|c| c.test.iter())
        .map(|s| TrainSample {
            path: s.path.clone(),
            label: match s.label {
                Some(l) => f32::from(u8::from(l)),
                None => f32::from(u8::from(s.mask.is_some())),
            },
            mask: s.mask.clone(),
            binarise_mask: s.binarise_mask,
        })
        .collect()
}

pub fn run(args: Args) -> Result<()> {
    if !args.model.is_dir() {
        bail!("model directory {} does not exist", args.model.display());
    }
    let ckpt = Checkpoint::load(&find_weights(&args.model, args.weights.as_deref())?)?;
    let tokenizer = ClipTokenizer::from_model_dir(&args.model)?;
    let categories = load_dataset(args.dataset, &args.data, args.categories.as_deref())?;
    let samples = training_samples(&categories);
    if samples.is_empty() {
        bail!("{}: no test images to train on", args.data.display());
    }
    let layers = args
        .layers
        .clone()
        .unwrap_or_else(|| default_layers(ckpt.config.vision_layers));
    if let Some(&bad) = layers
        .iter()
        .find(|&&l| l == 0 || l > ckpt.config.vision_layers)
    {
        bail!(
            "feature layer {bad} is outside the vision tower's blocks 1..={}",
            ckpt.config.vision_layers
        );
    }
    let mut head = match &args.init_head {
        Some(p) => Head::load(p, &ckpt.config)?,
        None => Head::init(&ckpt.config, args.init_seed.unwrap_or(args.seed)),
    };
    head.select_prompts(args.fixed_prompts, args.init_head.as_deref())?;
    let opts = StepOptions {
        windows: if args.no_aggregation {
            vec![1]
        } else {
            WINDOWS.to_vec()
        },
        align_weight: if args.no_alignment_loss {
            0.0
        } else {
            LAMBDA_ALIGN
        },
        adaptor: !args.no_adaptor,
        prompts: head.prompts,
    };
    crate::with_backend!(args.backend, |be| fit(
        be,
        &args,
        &ckpt,
        &tokenizer,
        samples,
        &layers,
        opts,
        head,
        &categories
    ))
}

/// The training run on the backend `--device` selected (vision features and steps alike).
#[allow(clippy::too_many_arguments)]
fn fit<B: Backend>(
    be: B,
    args: &Args,
    ckpt: &Checkpoint,
    tokenizer: &ClipTokenizer,
    samples: Vec<TrainSample>,
    layers: &[usize],
    opts: StepOptions,
    mut head: Head,
    categories: &[Category],
) -> Result<()> {
    let model = TrainModel::new(be, ckpt, tokenizer, args.image_size, opts)?;
    let be = model.backend();
    let spill = args.cache_dir.clone().unwrap_or_else(|| {
        args.out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    });
    let mut cache = FeatureCache::with_precision(
        be,
        ckpt,
        samples,
        args.image_size,
        layers,
        args.cache_ram_mb.saturating_mul(1 << 20),
        &spill,
        args.cache_precision,
    )?;
    eprintln!(
        "afclip train: {} images from {} categories, {} trainable parameters{}, feature cache \
         ({:.1} MiB {}) in {}",
        cache.len(),
        categories.len(),
        head.parameter_count(),
        if head.prompts == Prompts::Fixed {
            " (fixed prompts: the prompt tensor stays as it is)"
        } else {
            ""
        },
        cache.bytes() as f64 / f64::from(1 << 20),
        cache.precision().name(),
        if cache.is_mapped() {
            "a mapped file"
        } else {
            "RAM"
        }
    );
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        max_steps: args.max_steps,
        shuffle: !args.no_shuffle,
        out: args.out.clone(),
        resume: args.resume,
        progress: true,
    };
    let reports = train(&model, &mut cache, &mut head, &ckpt.config, &cfg)?;
    print_reports(&reports);
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

pub fn print_reports(reports: &[EpochReport]) {
    for r in reports {
        eprintln!(
            "epoch {}: {} steps, {:.1} s ({} images' features computed), mean loss {:.4} \
             (image FL {:.4}, patch FL {:.4}, L1 {:.4}, alignment {:.4})",
            r.epoch,
            r.steps,
            r.seconds,
            r.features_computed,
            r.mean.total,
            r.mean.image_focal,
            r.mean.patch_focal,
            r.mean.patch_l1,
            r.mean.alignment
        );
    }
}
