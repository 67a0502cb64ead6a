//! `afclip demo`: the no-download demonstration of training (SPEC §13). A random tiny CLIP, a
//! synthetic MVTec-style set (textures with painted defects and exact masks), zero-shot metrics
//! of held-out categories with a fresh head, training per SPEC §8 on the other categories,
//! the same metrics again, heatmaps and a report.

use super::common::{BackendArgs, Device};
use super::eval::EvalOutput;
use super::train::{print_reports, training_samples};
use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::data::layouts::{dataset_info, load_dataset, Category, DatasetKind};
use crate::data::preprocess::load_image;
use crate::data::synth::{synthesize_scaled, SynthLayout, SynthOptions};
use crate::eval::evaluate_category;
use crate::metrics::report::{pct, MetricsReport};
use crate::model::afclip::{AfClip, ModelOptions};
use crate::model::head::Head;
use crate::model::random::{preset, random_checkpoint};
use crate::model::tokenizer::ClipTokenizer;
use crate::train::features::FeatureCache;
use crate::train::step::{StepOptions, TrainModel};
use crate::train::trainer::{train, TrainConfig};
use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(ClapArgs, Debug, Clone)]
pub struct Args {
    /// Output folder (data/, before/, after/, heatmaps/, head.safetensors, report.md).
    #[arg(long, default_value = "demo")]
    pub out: PathBuf,
    /// Seed of the model, the data, the head and the shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Categories trained on (the four texture families in turn, each with its own colours and
    /// scale: more categories transfer better to the held-out ones, bench/RESULTS.md).
    #[arg(long, default_value_t = 12)]
    pub train_categories: usize,
    /// Held-out categories evaluated before and after training (the next ones in generation
    /// order: with the defaults, one of each texture family).
    #[arg(long, default_value_t = 4)]
    pub eval_categories: usize,
    /// Test images per synthetic category (half of them with a defect).
    #[arg(long, default_value_t = 24)]
    pub images: usize,
    /// Training steps.
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Model input side (a multiple of 14) and the side of the synthetic images.
    #[arg(long, default_value_t = 224)]
    pub image_size: usize,
    /// Defect size relative to `afclip synth`'s (1 = the same data; larger defects transfer
    /// better to the held-out categories, bench/RESULTS.md).
    #[arg(long, default_value_t = 3.0)]
    pub defect_scale: f32,
    /// Where the model runs: `--device`, `--threads`, `--precision` as for `eval`.
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Metrics of the held-out categories before and after training.
pub struct DemoResult {
    pub before: MetricsReport,
    pub after: MetricsReport,
    pub seconds: f64,
}

fn evaluate<B: Backend>(
    model: &mut AfClip<B>,
    categories: &[Category],
    data: &Path,
) -> Result<EvalOutput> {
    let info = dataset_info(DatasetKind::Mvtec, categories);
    let mut report = MetricsReport {
        dataset: "synthetic (held-out categories)".into(),
        image_size: Some(model.image_size() as u64),
        shots: Some(0),
        categories: Default::default(),
    };
    let (mut rows, mut warnings) = (Vec::new(), Vec::new());
    for cat in categories {
        let result = evaluate_category(model, cat, info, 16, &mut warnings)?;
        report.categories.insert(cat.name.clone(), result.metrics);
        rows.extend(result.rows.into_iter().map(|mut r| {
            if let Ok(rel) = r.path.strip_prefix(data) {
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

/// Heatmap overlays of the first anomalous and the first normal test image of each category.
fn write_heatmaps<B: Backend>(
    model: &AfClip<B>,
    categories: &[Category],
    dir: &Path,
) -> Result<()> {
    let side = model.image_size();
    for cat in categories {
        let picks = [
            cat.test.iter().find(|s| s.label == Some(true)),
            cat.test.iter().find(|s| s.label == Some(false)),
        ];
        for sample in picks.into_iter().flatten() {
            let img = load_image(&sample.path, side)?;
            let maps = model.score(&img.tensor, 1, true)?.maps;
            let rgb = crate::output::heatmap::overlay(&img.resized, &maps);
            let kind = if sample.label == Some(true) {
                "anomalous"
            } else {
                "normal"
            };
            let out = dir.join(format!("{}_{kind}.png", cat.name));
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            image::save_buffer(
                &out,
                &rgb,
                side as u32,
                side as u32,
                image::ExtendedColorType::Rgb8,
            )
            .with_context(|| format!("cannot write {}", out.display()))?;
        }
    }
    Ok(())
}

/// Runs the whole demo into `args.out`.
pub fn run_demo(args: &Args) -> Result<DemoResult> {
    let start = Instant::now();
    if args.train_categories == 0 || args.eval_categories == 0 {
        bail!("the demo needs at least one training and one held-out category");
    }
    let data = args.out.join("data");
    synthesize_scaled(
        &SynthOptions {
            out: data.clone(),
            layout: SynthLayout::Mvtec,
            categories: args.train_categories + args.eval_categories,
            images: args.images,
            width: args.image_size as u32,
            height: args.image_size as u32,
            seed: args.seed,
            overwrite: true,
        },
        args.defect_scale,
    )?;
    // Generation order (the names' numeric suffix), so that every texture family is trained on
    // and the last categories drawn are held out.
    let mut all = load_dataset(DatasetKind::Mvtec, &data, None)?;
    all.sort_by_key(|c| {
        let digits = c.name.rsplit('_').next().unwrap_or("");
        (
            digits.parse::<usize>().unwrap_or(usize::MAX),
            c.name.clone(),
        )
    });
    let (train_cats, eval_cats) = all.split_at(args.train_categories);
    // The demo holds three models on the device at once (scorer, trainer, feature cache), so
    // it needs a backend per role rather than the one `with_backend!` makes.
    let b = &args.backend;
    match b.resolve()? {
        Device::Cpu => demo_on(args, &data, train_cats, eval_cats, start, || {
            CpuBackend::with_precision(b.threads, b.precision)
        }),
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => demo_on(args, &data, train_cats, eval_cats, start, || b.cuda(n)),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(n) => {
            bail!("--device cuda:{n}: this build has no CUDA backend (cargo build --features cuda)")
        }
    }
}

/// Everything after the data exists, on the backends `make` returns.
fn demo_on<B: Backend>(
    args: &Args,
    data: &Path,
    train_cats: &[Category],
    eval_cats: &[Category],
    start: Instant,
    make: impl Fn() -> Result<B>,
) -> Result<DemoResult> {
    let cfg = preset("tiny")?;
    let ckpt = random_checkpoint(&cfg, args.seed);
    let tokenizer = ClipTokenizer::builtin()?;
    let opts = ModelOptions {
        image_size: args.image_size,
        layers: None,
    };
    let mut head = Head::init(&cfg, args.seed);

    eprintln!(
        "afclip demo: random tiny CLIP; training on {} synthetic categories, evaluating on {} \
         held-out ones",
        train_cats.len(),
        eval_cats.len()
    );
    let mut model = AfClip::new(make()?, &ckpt, &head, &tokenizer, &opts)?;
    let before = evaluate(&mut model, eval_cats, data)?;
    eprintln!("before training (fresh head):");
    before.write(&args.out.join("before"))?;

    let layers = model.layers().to_vec();
    let be = make()?;
    let trainer = TrainModel::new(
        make()?,
        &ckpt,
        &tokenizer,
        args.image_size,
        StepOptions::default(),
    )?;
    let samples = training_samples(train_cats);
    let per_epoch = samples.len().div_ceil(args.batch_size);
    let mut cache = FeatureCache::new(
        &be,
        &ckpt,
        samples,
        args.image_size,
        &layers,
        u64::MAX,
        &args.out,
    )?;
    let reports = train(
        &trainer,
        &mut cache,
        &mut head,
        &cfg,
        &TrainConfig {
            epochs: args.steps.div_ceil(per_epoch),
            batch_size: args.batch_size,
            lr: args.lr,
            seed: args.seed,
            max_steps: Some(args.steps),
            shuffle: true,
            out: args.out.join("head.safetensors"),
            resume: false,
            progress: true,
        },
    )?;
    print_reports(&reports);

    let mut model = AfClip::new(make()?, &ckpt, &head, &tokenizer, &opts)?;
    let after = evaluate(&mut model, eval_cats, data)?;
    eprintln!("after training:");
    after.write(&args.out.join("after"))?;
    write_heatmaps(&model, eval_cats, &args.out.join("heatmaps"))?;
    let result = DemoResult {
        before: before.report,
        after: after.report,
        seconds: start.elapsed().as_secs_f64(),
    };
    let report = report_markdown(args, &result, reports.len());
    std::fs::write(args.out.join("report.md"), &report)
        .with_context(|| format!("cannot write {}", args.out.join("report.md").display()))?;
    Ok(result)
}

fn report_markdown(args: &Args, r: &DemoResult, epochs: usize) -> String {
    let (b, a) = (r.before.mean(), r.after.mean());
    let img = |m: Option<crate::metrics::report::ImageMetrics>| {
        m.map_or((None, None), |m| (m.auroc, m.ap))
    };
    let px = |m: Option<crate::metrics::report::PixelMetrics>| {
        m.map_or((None, None), |m| (m.auroc, m.pro))
    };
    let (bi, ai, bp, ap) = (img(b.image), img(a.image), px(b.pixel), px(a.pixel));
    let mut s = String::new();
    let _ = writeln!(s, "# afclip demo\n");
    let _ = writeln!(
        s,
        "Random tiny CLIP (seed {}), {} px, defects x{}; head trained {} steps (batch {}, lr {}, \
         {epochs} epochs) on {} synthetic categories; metrics on {} held-out categories; {:.0} s.\n",
        args.seed,
        args.image_size,
        args.defect_scale,
        args.steps,
        args.batch_size,
        args.lr,
        args.train_categories,
        args.eval_categories,
        r.seconds
    );
    let _ = writeln!(s, "| | image AUROC | image AP | pixel AUROC | PRO |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (name, i, p) in [("before", bi, bp), ("after", ai, ap)] {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} |",
            pct(i.0),
            pct(i.1),
            pct(p.0),
            pct(p.1)
        );
    }
    let _ = writeln!(
        s,
        "\nPer category: before/metrics.md, after/metrics.md. Heatmaps: heatmaps/."
    );
    s
}

pub fn run(args: Args) -> Result<()> {
    let result = run_demo(&args)?;
    let report = std::fs::read_to_string(args.out.join("report.md"))?;
    print!("{report}");
    eprintln!(
        "demo finished in {:.0} s; wrote {}",
        result.seconds,
        args.out.display()
    );
    Ok(())
}
