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
    /// Ablation (paper Table 4 "Base"): score with the fixed sentences "a photo of an object
    /// without/with defect." instead of the head's 12 learned prompt vectors. A head trained
    /// with `train --fixed-prompts` records this and always uses them (the flag may be left
    /// out); the flag with a head trained with learnable prompts is an error.
    #[arg(long)]
    pub fixed_prompts: bool,
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
            self.fixed_prompts,
            &self.options(),
        )
    }
}

#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    /// Compute device: auto (a CUDA GPU when this build has the `cuda` feature and the
    /// machine a driver and a GPU, else the CPU; says which), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// CPU worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Precision of the frozen tower's GEMMs: f32 (the reference) or bf16 (on the CPU
    /// AVX-512 BF16 dot products, ~2e-3 relative error per GEMM, f32 on CPUs without them; on
    /// CUDA cuBLAS bf16 tensor-core GEMMs with f32 accumulation).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
}

/// A backend that `--device` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// A CUDA GPU by ordinal.
    Cuda(usize),
}

impl BackendArgs {
    /// The device `--device` selects; `auto` prints which it chose and why.
    pub fn resolve(&self) -> Result<Device> {
        match self.device.as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            "auto" => Ok(auto_device()),
            other => match other.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(Device::Cuda(n)),
                _ => bail!("unknown device {other:?} (expected auto, cpu, cuda or cuda:N)"),
            },
        }
    }

    /// The CPU backend (for `--device auto` or `cpu`).
    pub fn cpu(&self) -> Result<CpuBackend> {
        match self.resolve()? {
            Device::Cpu => CpuBackend::with_precision(self.threads, self.precision),
            Device::Cuda(n) => bail!("this command runs on the CPU only (got --device cuda:{n})"),
        }
    }

    /// The CUDA backend on GPU `ordinal` at `--precision`.
    #[cfg(feature = "cuda")]
    pub fn cuda(&self, ordinal: usize) -> Result<crate::backend::cuda::CudaBackend> {
        use crate::backend::cuda::{CudaBackend, Precision as GpuPrecision};
        let precision = match self.precision {
            Precision::F32 => GpuPrecision::F32,
            Precision::Bf16 => GpuPrecision::Bf16,
        };
        CudaBackend::new(ordinal, precision)
    }
}

#[cfg(feature = "cuda")]
fn auto_device() -> Device {
    match crate::backend::cuda::probe() {
        Ok(n) => {
            eprintln!("afclip: --device auto: CUDA ({n} GPU(s)), using cuda:0");
            Device::Cuda(0)
        }
        Err(e) => {
            eprintln!("afclip: --device auto: CPU ({e:#})");
            Device::Cpu
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn auto_device() -> Device {
    Device::Cpu
}

/// `with_backend!(backend_args, |be| body)`: `body` with `be` bound to the backend that
/// `--device` selects, compiled once per backend type (model, scoring and evaluation code is
/// generic over [`Backend`]).
#[macro_export]
macro_rules! with_backend {
    ($args:expr, |$be:ident| $body:expr) => {
        match $args.resolve()? {
            $crate::cli::common::Device::Cpu => {
                let $be = $crate::backend::cpu::CpuBackend::with_precision(
                    $args.threads,
                    $args.precision,
                )?;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::cli::common::Device::Cuda(n) => {
                let $be = $args.cuda(n)?;
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::cli::common::Device::Cuda(n) => ::anyhow::bail!(
                "--device cuda:{n}: this build has no CUDA backend (cargo build --features cuda)"
            ),
        }
    };
}
