//! `afclip eval`: a dataset's metrics per category and their mean (SPEC §9), in the schema
//! of `metrics.json`, the paper's table layout (`metrics.md`) and per-image `scores.csv`.

use super::common::{BackendArgs, ModelArgs};
use crate::data::layouts::Category;
use crate::data::layouts::{dataset_info, load_dataset, DatasetKind};
use crate::eval::{evaluate_category, CategoryResult, Row};
use crate::metrics::report::MetricsReport;
use crate::output::csv::field;
use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(ClapArgs, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Dataset root (the dataset's own folder or its parent).
    #[arg(long)]
    pub data: PathBuf,
    /// Layout: mvtec, visa, btad, dtd, mpdd, dagm, brainmri, br35h, isic, clinicdb, colondb,
    /// kvasir, folder, meta, manifest.
    #[arg(long)]
    pub dataset: DatasetKind,
    /// Output folder: metrics.json, metrics.md, scores.csv.
    #[arg(long)]
    pub out: PathBuf,
    /// Only these categories (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub categories: Option<Vec<String>>,
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Few-shot AF-CLIP+ (SPEC §7): K normal training images per category and run form the
    /// memory banks (0: zero-shot).
    #[arg(long, default_value_t = 0)]
    pub shots: usize,
    /// Few-shot draws, each a full evaluation; metrics.json gets every run, their mean and std.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Seed of the few-shot draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A memory bank from `afclip bank build`, used for every category (instead of --shots).
    #[arg(long, conflicts_with = "shots")]
    pub bank: Option<PathBuf>,
    /// Weight of the zero-shot score in the few-shot score.
    #[arg(long, default_value_t = crate::fewshot::scorer::DEFAULT_ALPHA)]
    pub alpha: f32,
    /// Ablation: aggregation window 1 only (no multi-scale aggregation).
    #[arg(long)]
    pub no_aggregation: bool,
    /// Ablation: no adaptor, `z = ln_post(c) @ proj` (for heads trained with `train
    /// --no-adaptor`).
    #[arg(long)]
    pub no_adaptor: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let categories = load_dataset(args.dataset, &args.data, args.categories.as_deref())?;
    let info = dataset_info(args.dataset, &categories);
    crate::with_backend!(args.backend, |be| run_on(
        args.model.load(be)?,
        &args,
        &categories,
        info
    ))
}

/// `eval` on the backend `--device` selected.
fn run_on<B: crate::backend::Backend>(
    mut model: crate::model::afclip::AfClip<B>,
    args: &Args,
    categories: &[Category],
    info: crate::data::layouts::DatasetInfo,
) -> Result<()> {
    eprintln!(
        "afclip eval: {} ({} categories, {} test images) on {}, image size {}",
        args.dataset.title(),
        categories.len(),
        categories.iter().map(|c| c.test.len()).sum::<usize>(),
        crate::backend::Backend::name(model.backend()),
        model.image_size()
    );
    model.set_ablations(!args.no_aggregation, !args.no_adaptor);
    if args.shots > 0 || args.bank.is_some() {
        return crate::fewshot::eval::run(&model, args, categories, info);
    }
    let side = model.image_size();
    let report = evaluate(args, categories, side, 0, &mut |cat, warnings| {
        evaluate_category(&mut model, cat, info, args.batch_size, warnings)
    })?;
    report.write(&args.out)
}

/// Everything `eval` writes.
pub struct EvalOutput {
    pub report: MetricsReport,
    /// `(category, row)` in category order, then dataset order.
    pub rows: Vec<(String, Row)>,
    pub warnings: Vec<String>,
}

/// Evaluates every category with `score_category` (a zero- or few-shot scorer on
/// [`evaluate_category`]) into one report.
pub(crate) fn evaluate(
    args: &Args,
    categories: &[Category],
    image_size: usize,
    shots: usize,
    score_category: &mut dyn FnMut(&Category, &mut Vec<String>) -> Result<CategoryResult>,
) -> Result<EvalOutput> {
    let mut report = MetricsReport {
        dataset: args.dataset.name().to_string(),
        image_size: Some(image_size as u64),
        shots: Some(shots as u64),
        categories: Default::default(),
    };
    let mut rows = Vec::new();
    let mut warnings = Vec::new();
    for cat in categories {
        let start = Instant::now();
        let result = score_category(cat, &mut warnings)?;
        eprintln!(
            "  {:<16} {:>5} images in {:>7.1} s",
            cat.name,
            cat.test.len(),
            start.elapsed().as_secs_f64()
        );
        report.categories.insert(cat.name.clone(), result.metrics);
        rows.extend(result.rows.into_iter().map(|mut r| {
            if let Ok(rel) = r.path.strip_prefix(&args.data) {
                r.path = rel.to_path_buf();
            }
            (cat.name.clone(), r)
        }));
    }
    warnings.extend(report.mean_warnings());
    Ok(EvalOutput {
        report,
        rows,
        warnings,
    })
}

impl EvalOutput {
    /// Writes metrics.json, metrics.md and scores.csv into `out` (each through a temporary
    /// file renamed into place) and prints the table and the warnings.
    pub fn write(&self, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out)
            .with_context(|| format!("cannot create output folder {}", out.display()))?;
        for w in &self.warnings {
            eprintln!("warning: {w}");
        }
        let mut csv = Vec::new();
        writeln!(csv, "path,category,label,score,status,error")?;
        for (cat, r) in &self.rows {
            let label = match r.label {
                Some(true) => "1",
                Some(false) => "0",
                None => "",
            };
            let score = r.score.map(|s| s.to_string()).unwrap_or_default();
            let (status, error) = match &r.error {
                Some(e) => ("error", e.as_str()),
                None => ("ok", ""),
            };
            writeln!(
                csv,
                "{},{},{label},{score},{status},{}",
                field(&r.path.display().to_string()),
                field(cat),
                field(error)
            )?;
        }
        write_atomic(&out.join("scores.csv"), &csv)?;
        let md = self.report.to_markdown();
        write_atomic(&out.join("metrics.md"), md.as_bytes())?;
        let json = serde_json::to_string_pretty(&self.report.to_json())? + "\n";
        write_atomic(&out.join("metrics.json"), json.as_bytes())?;
        print!("{md}");
        eprintln!("wrote {}", out.join("metrics.json").display());
        Ok(())
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} into place", tmp.display()))
}
