//! `afclip init-model`: a randomly initialised CLIP checkpoint of a standard size, for trying the
//! tool, tests and benches without downloading weights.

use crate::model::random::{preset, random_checkpoint, save_openai};
use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use std::path::PathBuf;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Model folder to create; receives model.safetensors (OpenAI naming, f32).
    #[arg(long)]
    pub out: PathBuf,
    /// tiny, vit-b-16, vit-l-14 or vit-l-14-336.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    let config = preset(&args.preset)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let path = args.out.join("model.safetensors");
    save_openai(&random_checkpoint(&config, args.seed), &path)?;
    eprintln!("wrote random {} CLIP to {}", args.preset, path.display());
    Ok(())
}
