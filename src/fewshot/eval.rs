//! `afclip eval --shots K --runs R --seed S` and `afclip eval --bank FILE`: the few-shot
//! protocol of SPEC §7 on top of the zero-shot evaluation (`crate::cli::eval`).
//!
//! Per run and category, K normal training images are drawn ([`draw_references`], printed),
//! their banks built, and the category's test images scored by [`FewShot`]. Each run is
//! written as a complete single-run evaluation under `OUT/run-<r>/` (metrics.json, metrics.md,
//! scores.csv); `OUT/metrics.json` and `OUT/metrics.md` hold every run with the mean and std
//! over runs ([`super::report`]). With `--bank`, the one bank serves every category and the
//! output is the single-run layout.

use super::bank::Bank;
use super::protocol::draw_references;
use super::report::{summarise, RunReport};
use super::scorer::FewShot;
use crate::backend::Backend;
use crate::cli::eval::{evaluate, Args};
use crate::data::layouts::{Category, DatasetInfo};
use crate::eval::evaluate_category;
use crate::model::afclip::AfClip;
use anyhow::{ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} into place", tmp.display()))
}

pub fn run<B: Backend>(
    model: &AfClip<B>,
    args: &Args,
    categories: &[Category],
    info: DatasetInfo,
) -> Result<()> {
    let side = model.image_size();
    if let Some(path) = &args.bank {
        let bank = Bank::load(path)?;
        let mut scorer = FewShot::new(model, &bank, args.alpha)
            .with_context(|| format!("memory bank {}", path.display()))?;
        eprintln!(
            "few-shot: bank {} ({} reference images, {} rows per set), alpha {}",
            path.display(),
            bank.meta.images.len(),
            bank.rows(),
            args.alpha
        );
        let out = evaluate(
            args,
            categories,
            side,
            bank.meta.images.len(),
            &mut |cat, w| evaluate_category(&mut scorer, cat, info, args.batch_size, w),
        )?;
        return out.write(&args.out);
    }
    ensure!(args.runs > 0, "--runs must be at least 1");
    let model_label = args.model.model.display().to_string();
    let mut runs = Vec::with_capacity(args.runs);
    for run in 0..args.runs {
        eprintln!(
            "few-shot run {}/{}: {} shots, seed {}, alpha {}",
            run + 1,
            args.runs,
            args.shots,
            args.seed,
            args.alpha
        );
        let mut references = BTreeMap::new();
        let out = evaluate(args, categories, side, args.shots, &mut |cat, w| {
            let picked = draw_references(cat.train.len(), args.shots, args.seed, run, &cat.name)?;
            let paths: Vec<PathBuf> = picked.iter().map(|&i| cat.train[i].path.clone()).collect();
            let names: Vec<String> = paths.iter().map(|p| relative(p, &args.data)).collect();
            eprintln!("  {} references: {}", cat.name, names.join(", "));
            let bank = Bank::build(model, &paths, names.clone(), &model_label, args.batch_size)
                .with_context(|| format!("category {}: building the memory bank", cat.name))?;
            references.insert(cat.name.clone(), names);
            let mut scorer = FewShot::new(model, &bank, args.alpha)?;
            evaluate_category(&mut scorer, cat, info, args.batch_size, w)
        })?;
        out.write(&args.out.join(format!("run-{run}")))?;
        runs.push(RunReport {
            run,
            references,
            report: out.report,
        });
    }
    let summary = summarise(&runs);
    let json = serde_json::to_string_pretty(&summary.to_json(&runs, args.alpha, args.seed))? + "\n";
    write_atomic(&args.out.join("metrics.json"), json.as_bytes())?;
    let md = summary.to_markdown(runs.len());
    write_atomic(&args.out.join("metrics.md"), md.as_bytes())?;
    print!("{md}");
    eprintln!("wrote {}", args.out.join("metrics.json").display());
    Ok(())
}
