//! Launchers of the training losses in `kernels/loss.cu` (math, shapes and launch layouts in
//! its header; CPU twins of the same names in `src/backend/cpu/loss.rs`): `focal_loss`,
//! `l1_loss` (one block each), `patch_alignment` (`pal_norms`, `pal_sums`, `pal_finalize`) and
//! `patch_alignment_backward` (`pal_backward`). Each checks every length, as the CPU twin does,
//! before its first launch.

use super::ffi::{AlignParams, LossParams};
use super::{grid_rows, i32_dim, CudaBackend, CudaBuf};
use crate::backend::cpu::check_len;
use crate::backend::{patch_alignment_state_len, ColumnBlock};
use anyhow::{ensure, Context, Result};
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

// SAFETY: plain C structs of int/long long/float fields (`kernels/params.h`), passed by value.
unsafe impl DeviceRepr for LossParams {}
unsafe impl DeviceRepr for AlignParams {}

/// Threads of the one-block reductions (`LOSS_THREADS` in kernels/loss.cu).
const LOSS_THREADS: u32 = 1024;
/// Row lanes per block of `pal_sums` (`PAL_ROWS` in kernels/loss.cu).
const PAL_ROWS: u32 = 8;

fn one_block() -> LaunchConfig {
    LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (LOSS_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaBackend {
    /// `focal_loss` or `l1_loss` (`kernel`) after the CPU twin's checks.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn block_loss_impl(
        &self,
        kernel: &'static str,
        loss: &mut CudaBuf,
        dp: &mut CudaBuf,
        p: &CudaBuf,
        t: &CudaBuf,
        b: ColumnBlock,
        weight: f32,
    ) -> Result<()> {
        ensure!(
            b.cols > 0 && b.rows > 0 && b.offset + b.cols <= b.stride,
            "{kernel}: columns {}..{} of rows of {} ({} rows) is not a non-empty block",
            b.offset,
            b.offset + b.cols,
            b.stride,
            b.rows
        );
        check_len(kernel, "loss", loss.len, &[1])?;
        check_len(kernel, "p", p.len, &[b.rows, b.stride])?;
        check_len(kernel, "dp", dp.len, &[b.rows, b.stride])?;
        check_len(kernel, "t", t.len, &[b.rows, b.cols])?;
        let q = LossParams {
            rows: i32_dim(kernel, "rows", b.rows)?,
            stride: i32_dim(kernel, "stride", b.stride)?,
            offset: i32_dim(kernel, "offset", b.offset)?,
            cols: i32_dim(kernel, "cols", b.cols)?,
            weight,
        };
        launch!(
            self,
            kernel,
            kernel,
            one_block(),
            &mut loss.data,
            &mut dp.data,
            &p.data,
            &t.data,
            &q
        )
    }

    fn check_alignment(
        op: &str,
        state: &CudaBuf,
        z: &CudaBuf,
        masks: &CudaBuf,
        batch: usize,
        tokens: usize,
        e: usize,
    ) -> Result<AlignParams> {
        ensure!(
            batch > 0 && tokens > 1,
            "{op}: {batch} images of {tokens} tokens (need at least one image and one patch token)"
        );
        let patches = tokens - 1;
        check_len(op, "z", z.len, &[batch, tokens, e])?;
        check_len(op, "masks", masks.len, &[batch, patches])?;
        check_len(
            op,
            "state",
            state.len,
            &[patch_alignment_state_len(batch, patches, e)],
        )?;
        ensure!(
            batch <= 65535,
            "{op}: {batch} images exceed the launch grid"
        );
        Ok(AlignParams {
            batch: i32_dim(op, "batch", batch)?,
            tokens: i32_dim(op, "tokens", tokens)?,
            e: i32_dim(op, "e", e)?,
            weight: 0.0,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch_alignment_impl(
        &self,
        loss: &mut CudaBuf,
        state: &mut CudaBuf,
        z: &CudaBuf,
        masks: &CudaBuf,
        batch: usize,
        tokens: usize,
        e: usize,
    ) -> Result<()> {
        let op = "patch_alignment";
        let q = Self::check_alignment(op, state, z, masks, batch, tokens, e)?;
        check_len(op, "loss", loss.len, &[1])?;
        let rows = batch * (tokens - 1);
        launch!(
            self,
            op,
            "pal_norms",
            grid_rows(rows),
            &mut state.data,
            &z.data,
            &q
        )?;
        if e > 0 {
            let sums = LaunchConfig {
                grid_dim: ((e as u32).div_ceil(32), batch as u32, 1),
                block_dim: (32, PAL_ROWS, 1),
                shared_mem_bytes: 0,
            };
            launch!(
                self,
                op,
                "pal_sums",
                sums,
                &mut state.data,
                &z.data,
                &masks.data,
                &q
            )?;
        }
        launch!(
            self,
            op,
            "pal_finalize",
            one_block(),
            &mut loss.data,
            &mut state.data,
            &masks.data,
            &q
        )
        .context("patch_alignment: the value")
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch_alignment_backward_impl(
        &self,
        dz: &mut CudaBuf,
        state: &CudaBuf,
        z: &CudaBuf,
        masks: &CudaBuf,
        batch: usize,
        tokens: usize,
        e: usize,
        weight: f32,
    ) -> Result<()> {
        let op = "patch_alignment_backward";
        let mut q = Self::check_alignment(op, state, z, masks, batch, tokens, e)?;
        check_len(op, "dz", dz.len, &[batch, tokens, e])?;
        q.weight = weight;
        launch!(
            self,
            op,
            "pal_backward",
            grid_rows(batch * (tokens - 1)),
            &mut dz.data,
            &state.data,
            &z.data,
            &masks.data,
            &q
        )
    }
}
