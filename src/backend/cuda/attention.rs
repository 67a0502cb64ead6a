//! Launcher of [`Backend::attention`](crate::backend::Backend::attention): two kernels, both in
//! use, the math and tiling in their headers.
//!
//! - `kernels/attention_tc.cu` (`attention_tc_d64`): tensor cores, bf16 operands with f32
//!   accumulation; runs when the backend's precision is [`Precision::Bf16`] and `head_dim` is
//!   64 (every CLIP tower this crate loads: ViT-L/14, ViT-B, the text tower).
//! - `kernels/attention.cu` (`attention_d32`, `_d64`, `_d128`): f32 FMA, the CPU twin's
//!   arithmetic; every other case, so [`Precision::F32`] stays the parity reference.

use super::ffi::AttentionParams;
use super::{i32_dim, CudaBackend, CudaBuf, Precision};
use crate::backend::cpu::check_len;
use anyhow::{bail, ensure, Context, Result};
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// Queries per block of both kernels (`BQ` in attention.cu, `TC_BQ` in attention_tc.cu).
const BQ: u32 = 64;
/// Threads per block: one query each in attention.cu; four warps of 16 queries in
/// attention_tc.cu (`TC_THREADS`).
const F32_THREADS: u32 = BQ;
const TC_THREADS: u32 = 128;

impl CudaBackend {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_impl(
        &self,
        out: &mut CudaBuf,
        qkv: &CudaBuf,
        batch: usize,
        tokens: usize,
        heads: usize,
        head_dim: usize,
        causal: bool,
    ) -> Result<()> {
        check_len(
            "attention",
            "qkv",
            qkv.len,
            &[batch, tokens, 3, heads, head_dim],
        )?;
        check_len(
            "attention",
            "out",
            out.len,
            &[batch, tokens, heads, head_dim],
        )?;
        if out.len == 0 {
            return Ok(());
        }
        let tensor_cores = self.precision == Precision::Bf16 && head_dim == 64;
        let (kernel, threads) = match head_dim {
            64 if tensor_cores => ("attention_tc_d64", TC_THREADS),
            32 => ("attention_d32", F32_THREADS),
            64 => ("attention_d64", F32_THREADS),
            128 => ("attention_d128", F32_THREADS),
            _ => bail!("attention: head_dim {head_dim} has no CUDA kernel (32, 64 or 128)"),
        };
        ensure!(
            batch <= 65535 && heads <= 65535,
            "attention: batch {batch} x heads {heads} exceed the launch grid"
        );
        let p = AttentionParams {
            batch: i32_dim("attention", "batch", batch)?,
            tokens: i32_dim("attention", "tokens", tokens)?,
            heads: i32_dim("attention", "heads", heads)?,
            head_dim: head_dim as i32,
            causal: causal as i32,
            scale: 1.0 / (head_dim as f32).sqrt(),
        };
        let cfg = LaunchConfig {
            grid_dim: ((tokens as u32).div_ceil(BQ), heads as u32, batch as u32),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(self, "attention", kernel, cfg, &mut out.data, &qkv.data, &p)
    }
}
