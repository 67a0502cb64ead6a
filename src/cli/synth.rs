//! `afclip synth`: writes a synthetic anomaly-detection set (textures with painted defects and
//! exact masks) in the MVTec, VisA or generic-folder layout.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

use crate::data::synth::{parse_size, synthesize, SynthLayout, SynthOptions};

#[derive(Parser, Debug)]
pub struct Args {
    /// Dataset root to write (created; must be empty unless --overwrite).
    #[arg(long)]
    pub out: PathBuf,
    /// Folder layout of the written set.
    #[arg(long, value_enum, default_value = "mvtec")]
    pub layout: SynthLayout,
    /// Number of categories (texture families stripes, noise, grid, blotches in turn).
    #[arg(long, default_value_t = 4)]
    pub categories: usize,
    /// Test images per category (half normal, half anomalous), plus half as many normal
    /// training images.
    #[arg(long, default_value_t = 20)]
    pub images: usize,
    /// Image size WIDTHxHEIGHT.
    #[arg(long, default_value = "256x256", value_parser = parse_size_arg)]
    pub size: (u32, u32),
    /// Random seed: the same seed and options give byte-identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write into a non-empty folder (replacing files of the same names, deleting nothing).
    #[arg(long)]
    pub overwrite: bool,
}

fn parse_size_arg(text: &str) -> Result<(u32, u32), String> {
    parse_size(text).map_err(|e| e.to_string())
}

pub fn run(args: Args) -> Result<()> {
    let (width, height) = args.size;
    let summary = synthesize(&SynthOptions {
        out: args.out.clone(),
        layout: args.layout,
        categories: args.categories,
        images: args.images,
        width,
        height,
        seed: args.seed,
        overwrite: args.overwrite,
    })?;
    println!(
        "wrote {} categories ({}) to {}: {} training, {} normal and {} anomalous test images",
        summary.categories.len(),
        summary.categories.join(", "),
        args.out.display(),
        summary.train,
        summary.test_normal,
        summary.test_anomalous
    );
    Ok(())
}
