//! Flags shared by the verbs that run the model.

use crate::backend::cpu::{CpuBackend, Precision};
use crate::backend::Backend;
use crate::model::afclip::{AfClip, ModelOptions, DEFAULT_IMAGE_SIZE};
use crate::model::load::{load_afclip, HeadSource};
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Folder with one CLIP checkpoint (.safetensors, OpenAI or Hugging Face naming) and
    /// optionally its tokenizer.json.
    #[arg(long)]
    pub model: PathBuf,
    /// Which .safetensors file of --model to use, when it holds several.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Trained AF-CLIP head (prompt + adaptor) as safetensors.
    #[arg(
        long,
        conflicts_with = "init_seed",
        required_unless_present = "init_seed"
    )]
    pub head: Option<PathBuf>,
    /// Use a fresh, untrained head made from this seed instead of --head.
    #[arg(long)]
    pub init_seed: Option<u64>,
    /// Side S of the square model input (a multiple of the patch size).
    #[arg(long, default_value_t = DEFAULT_IMAGE_SIZE)]
    pub image_size: usize,
    /// 1-based vision blocks whose outputs are the features, e.g. 6,12,18,24 (default: four
    /// evenly spaced blocks).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
}

impl ModelArgs {
    pub fn head_source(&self) -> Result<HeadSource> {
        match (&self.head, self.init_seed) {
            (Some(p), None) => Ok(HeadSource::File(p.clone())),
            (None, Some(s)) => Ok(HeadSource::Seed(s)),
            _ => bail!("give exactly one of --head FILE and --init-seed S"),
        }
    }

    pub fn options(&self) -> ModelOptions {
        ModelOptions {
            image_size: self.image_size,
            layers: self.layers.clone(),
        }
    }

    pub fn load<B: Backend>(&self, be: B) -> Result<AfClip<B>> {
        load_afclip(
            be,
            &self.model,
            self.weights.as_deref(),
            &self.head_source()?,
            &self.options(),
        )
    }
}

#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    /// Compute device: auto, cpu (this build has the CPU backend only).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// CPU worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Precision of the frozen tower's GEMMs on the CPU: f32 (the reference) or bf16
    /// (AVX-512 BF16 dot products, ~2e-3 relative error per GEMM; falls back to f32 on CPUs
    /// without them).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
}

impl BackendArgs {
    pub fn cpu(&self) -> Result<CpuBackend> {
        match self.device.as_str() {
            "auto" | "cpu" => CpuBackend::with_precision(self.threads, self.precision),
            other => bail!(
                "device {other:?} is not available: this build has the CPU backend only \
                 (use --device cpu or auto)"
            ),
        }
    }
}
