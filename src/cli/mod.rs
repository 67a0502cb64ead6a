//! Command-line interface: one file per verb, each with an `Args` (clap) and a `run`.

pub mod bank;
pub mod bench;
pub mod common;
pub mod compare;
pub mod demo;
pub mod eval;
pub mod init_model;
pub mod merge;
pub mod metrics;
pub mod score;
pub mod synth;
pub mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "afclip", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("AFCLIP_COMMIT"), ")"), about = "AF-CLIP visual anomaly detection engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Zero-shot scores and anomaly maps for image files and folders.
    Score(score::Args),
    /// Evaluate on a dataset: per-category and mean metrics, metrics.json/.md, scores.csv.
    Eval(eval::Args),
    /// Write a randomly initialised CLIP checkpoint (no download needed).
    InitModel(init_model::Args),
    /// The no-download demo: train a head on synthetic data, evaluate held-out categories.
    Demo(demo::Args),
    /// Train the prompt and adaptor (CLIP frozen) on a dataset's test split.
    Train(train::Args),
    /// Write a synthetic dataset: textures with painted defects and exact masks.
    Synth(synth::Args),
    /// Image and pixel metrics (AUROC, AP, max-F1, PRO, aupro_exact) of .npy maps and masks.
    Metrics(metrics::Args),
    /// Per-category deltas between two metrics.json; exit code 1 on a regression.
    Compare(compare::Args),
    /// Combine the outputs of `score --shard I/N` runs into one (fails on a missing shard).
    Merge(merge::Args),
    /// Few-shot memory banks of normal reference images (`afclip bank build`).
    Bank(bank::Args),
    /// Throughput of a random ViT-L/14@336 (or smaller) by stage, vs the measured GEMM rate.
    Bench(bench::Args),
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Score(a) => score::run(a),
        Command::Eval(a) => eval::run(a),
        Command::InitModel(a) => init_model::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Train(a) => train::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Metrics(a) => metrics::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Bank(a) => bank::run(a),
        Command::Bench(a) => bench::run(a),
    }
}
