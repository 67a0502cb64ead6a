//! Building a ready-to-score [`AfClip`] from a model directory and a head.

use super::afclip::{AfClip, ModelOptions};
use super::checkpoint::{find_weights, Checkpoint};
use super::head::Head;
use super::tokenizer::ClipTokenizer;
use crate::backend::Backend;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Where the trainable head comes from.
#[derive(Clone, Debug)]
pub enum HeadSource {
    File(PathBuf),
    /// A fresh head per SPEC §4–5, deterministic for the seed (untrained runs).
    Seed(u64),
}

/// `fixed_prompts`: `--fixed-prompts`, applied by [`Head::select_prompts`].
pub fn load_afclip<B: Backend>(
    be: B,
    model_dir: &Path,
    weights: Option<&Path>,
    head: &HeadSource,
    fixed_prompts: bool,
    opts: &ModelOptions,
) -> Result<AfClip<B>> {
    if !model_dir.is_dir() {
        anyhow::bail!(
            "model directory {} does not exist or is not a directory",
            model_dir.display()
        );
    }
    let path = find_weights(model_dir, weights)?;
    let ckpt = Checkpoint::load(&path)?;
    let (mut head, file) = match head {
        HeadSource::File(p) => (Head::load(p, &ckpt.config)?, Some(p.as_path())),
        HeadSource::Seed(s) => (Head::init(&ckpt.config, *s), None),
    };
    head.select_prompts(fixed_prompts, file)?;
    let tokenizer = ClipTokenizer::from_model_dir(model_dir)?;
    AfClip::new(be, &ckpt, &head, &tokenizer, opts)
        .with_context(|| format!("cannot build AF-CLIP from {}", path.display()))
}
