//! Launchers of the training ops in `kernels/backward.cu` (math, shapes and launch layouts in
//! its header; CPU twins of the same names in `src/backend/cpu/backward/`): `quick_gelu`,
//! `quick_gelu_backward`, `bias_grad`, `layer_norm_backward`, `attention_backward`,
//! `state_logits_backward`, `abnormal_probability_backward`. Each checks every length, as the
//! CPU twin does, before its first launch.
//!
//! Column sums (`db`, `dgamma`/`dbeta`, `dtext`) run in two deterministic passes: one partial
//! row per chunk of rows, then `sum_partials` adds the chunks in order. Chunks are at least
//! [`CHUNK_ROWS`] rows and at most [`MAX_CHUNKS`] per sum, so the partials hold at most
//! `MAX_CHUNKS` rows whatever `rows`.

use super::ffi::{AttentionParams, BackwardRowsParams, GeluParams, ScoreParams, SumPartialsParams};
use super::{grid_1d, grid_rows, i32_dim, CudaBackend, CudaBuf};
use crate::backend::cpu::check_len;
use anyhow::{bail, ensure, Context, Result};
use cudarc::driver::{CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg};

// SAFETY: plain C structs of int/long long/float fields (`kernels/params.h`), passed by value.
unsafe impl DeviceRepr for GeluParams {}
unsafe impl DeviceRepr for BackwardRowsParams {}
unsafe impl DeviceRepr for SumPartialsParams {}

/// Fewest rows per partial of a column sum.
const CHUNK_ROWS: usize = 64;
/// Most partials of one column sum.
const MAX_CHUNKS: usize = 1024;
/// Columns per block of the partial kernels (`COL_TILE` in kernels/backward.cu).
const COL_TILE: u32 = 32;
/// Row lanes per block of the partial kernels (`ROW_LANES` in kernels/backward.cu).
const ROW_LANES: u32 = 8;

/// `(chunk_rows, chunks)` of a column sum over `rows` rows.
fn chunking(rows: usize) -> (usize, usize) {
    let chunk_rows = CHUNK_ROWS.max(rows.div_ceil(MAX_CHUNKS));
    (chunk_rows, rows.div_ceil(chunk_rows))
}

/// Grid of a partial kernel: 32 columns x one chunk per block.
fn grid_partials(dim: usize, chunks: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((dim as u32).div_ceil(COL_TILE), chunks as u32, 1),
        block_dim: (COL_TILE, ROW_LANES, 1),
        shared_mem_bytes: 0,
    }
}

/// `(rows per block, kernel names)` of `attention_backward` for a head dim (the ROWS column of
/// the table in kernels/backward.cu).
fn attention_kernels(head_dim: usize) -> Result<(u32, [&'static str; 3])> {
    Ok(match head_dim {
        32 => (
            64,
            [
                "attention_backward_stats_d32",
                "attention_backward_dq_d32",
                "attention_backward_dkv_d32",
            ],
        ),
        64 => (
            64,
            [
                "attention_backward_stats_d64",
                "attention_backward_dq_d64",
                "attention_backward_dkv_d64",
            ],
        ),
        128 => (
            32,
            [
                "attention_backward_stats_d128",
                "attention_backward_dq_d128",
                "attention_backward_dkv_d128",
            ],
        ),
        _ => bail!("attention_backward: head_dim {head_dim} has no CUDA kernel (32, 64 or 128)"),
    })
}

impl CudaBackend {
    /// The parameters of a row-wise op, with `rows` and `dim` range-checked.
    fn rows_params(
        op: &str,
        rows: usize,
        dim: usize,
        eps: f32,
        scale: f32,
    ) -> Result<BackwardRowsParams> {
        Ok(BackwardRowsParams {
            rows: i32_dim(op, "rows", rows)?,
            dim: i32_dim(op, "dim", dim)?,
            chunk_rows: i32_dim(op, "chunk rows", chunking(rows).0)?,
            eps,
            scale,
        })
    }

    /// `out[j] += Σ_c partial[c·stride + j]` for `j < n`, chunks in order.
    fn sum_partials(
        &self,
        op: &str,
        out: &mut CudaSlice<f32>,
        partial: &CudaView<'_, f32>,
        chunks: usize,
        n: usize,
        stride: usize,
    ) -> Result<()> {
        ensure!(
            out.len() >= n && partial.len() >= (chunks - 1) * stride + n,
            "{op}: partial sums of {chunks} x {n} do not fit their buffers"
        );
        let p = SumPartialsParams {
            chunks: i32_dim(op, "chunks", chunks)?,
            n: i32_dim(op, "columns", n)?,
            stride: i32_dim(op, "partial stride", stride)?,
        };
        launch!(self, op, "sum_partials", grid_1d(n), out, partial, &p)
    }

    pub(super) fn quick_gelu_impl(&self, y: &mut CudaBuf, x: &CudaBuf, len: usize) -> Result<()> {
        check_len("quick_gelu", "x", x.len, &[len])?;
        check_len("quick_gelu", "y", y.len, &[len])?;
        if len == 0 {
            return Ok(());
        }
        let p = GeluParams { n: len as i64 };
        launch!(
            self,
            "quick_gelu",
            "quick_gelu",
            grid_1d(len),
            &mut y.data,
            &x.data,
            &p
        )
    }

    pub(super) fn quick_gelu_backward_impl(
        &self,
        dx: &mut CudaBuf,
        dy: &CudaBuf,
        x: &CudaBuf,
        len: usize,
    ) -> Result<()> {
        let op = "quick_gelu_backward";
        check_len(op, "x", x.len, &[len])?;
        check_len(op, "dy", dy.len, &[len])?;
        check_len(op, "dx", dx.len, &[len])?;
        if len == 0 {
            return Ok(());
        }
        let p = GeluParams { n: len as i64 };
        launch!(
            self,
            op,
            "quick_gelu_backward",
            grid_1d(len),
            &mut dx.data,
            &dy.data,
            &x.data,
            &p
        )
    }

    pub(super) fn bias_grad_impl(
        &self,
        db: &mut CudaBuf,
        dy: &CudaBuf,
        rows: usize,
        dim: usize,
    ) -> Result<()> {
        let op = "bias_grad";
        check_len(op, "dy", dy.len, &[rows, dim])?;
        check_len(op, "db", db.len, &[dim])?;
        if rows == 0 || dim == 0 {
            return Ok(());
        }
        let p = Self::rows_params(op, rows, dim, 0.0, 1.0)?;
        let chunks = chunking(rows).1;
        let mut partial = self.alloc(chunks * dim)?;
        launch!(
            self,
            op,
            "bias_grad_partial",
            grid_partials(dim, chunks),
            &mut partial,
            &dy.data,
            &p
        )?;
        self.sum_partials(op, &mut db.data, &partial.slice(..), chunks, dim, dim)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn layer_norm_backward_impl(
        &self,
        dx: Option<&mut CudaBuf>,
        dparams: Option<(&mut CudaBuf, &mut CudaBuf)>,
        dy: &CudaBuf,
        x: &CudaBuf,
        gamma: &CudaBuf,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        let op = "layer_norm_backward";
        check_len(op, "x", x.len, &[rows, dim])?;
        check_len(op, "dy", dy.len, &[rows, dim])?;
        check_len(op, "gamma", gamma.len, &[dim])?;
        if let Some(dx) = &dx {
            check_len(op, "dx", dx.len, &[rows, dim])?;
        }
        if let Some((dg, db)) = &dparams {
            check_len(op, "dgamma", dg.len, &[dim])?;
            check_len(op, "dbeta", db.len, &[dim])?;
        }
        if rows == 0 || dim == 0 || (dx.is_none() && dparams.is_none()) {
            return Ok(());
        }
        let p = Self::rows_params(op, rows, dim, eps, 1.0)?;
        let mut stats = self.alloc(2 * rows)?;
        launch!(
            self,
            op,
            "layer_norm_stats",
            grid_rows(rows),
            &mut stats,
            &x.data,
            &p
        )?;
        if let Some(dx) = dx {
            launch!(
                self,
                op,
                "layer_norm_backward_dx",
                grid_rows(rows),
                &mut dx.data,
                &dy.data,
                &x.data,
                &gamma.data,
                &stats,
                &p
            )?;
        }
        if let Some((dgamma, dbeta)) = dparams {
            let chunks = chunking(rows).1;
            let mut partial = self.alloc(chunks * 2 * dim)?;
            launch!(
                self,
                op,
                "layer_norm_backward_params",
                grid_partials(dim, chunks),
                &mut partial,
                &dy.data,
                &x.data,
                &stats,
                &p
            )?;
            let stride = 2 * dim;
            self.sum_partials(
                op,
                &mut dgamma.data,
                &partial.slice(..),
                chunks,
                dim,
                stride,
            )?;
            self.sum_partials(
                op,
                &mut dbeta.data,
                &partial.slice(dim..),
                chunks,
                dim,
                stride,
            )?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_backward_impl(
        &self,
        dqkv: &mut CudaBuf,
        dout: &CudaBuf,
        qkv: &CudaBuf,
        batch: usize,
        tokens: usize,
        heads: usize,
        head_dim: usize,
        causal: bool,
    ) -> Result<()> {
        let op = "attention_backward";
        let packed = [batch, tokens, 3, heads, head_dim];
        check_len(op, "qkv", qkv.len, &packed)?;
        check_len(op, "dqkv", dqkv.len, &packed)?;
        check_len(op, "dout", dout.len, &[batch, tokens, heads, head_dim])?;
        if dqkv.len == 0 {
            return Ok(());
        }
        let (rows, [stats_k, dq_k, dkv_k]) = attention_kernels(head_dim)?;
        ensure!(
            batch <= 65535 && heads <= 65535,
            "{op}: batch {batch} x heads {heads} exceed the launch grid"
        );
        let p = AttentionParams {
            batch: i32_dim(op, "batch", batch)?,
            tokens: i32_dim(op, "tokens", tokens)?,
            heads: i32_dim(op, "heads", heads)?,
            head_dim: head_dim as i32,
            causal: causal as i32,
            scale: 1.0 / (head_dim as f32).sqrt(),
        };
        let cfg = LaunchConfig {
            grid_dim: ((tokens as u32).div_ceil(rows), heads as u32, batch as u32),
            block_dim: (rows, 1, 1),
            shared_mem_bytes: 0,
        };
        // lse, delta: [batch, heads, tokens]
        let mut lse = self.alloc(batch * heads * tokens)?;
        let mut delta = self.alloc(batch * heads * tokens)?;
        launch!(self, op, stats_k, cfg, &mut lse, &mut delta, &dout.data, &qkv.data, &p)?;
        launch!(
            self,
            op,
            dq_k,
            cfg,
            &mut dqkv.data,
            &dout.data,
            &qkv.data,
            &lse,
            &delta,
            &p
        )?;
        launch!(
            self,
            op,
            dkv_k,
            cfg,
            &mut dqkv.data,
            &dout.data,
            &qkv.data,
            &lse,
            &delta,
            &p
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn state_logits_backward_impl(
        &self,
        dz: &mut CudaBuf,
        dtext: &mut CudaBuf,
        dlogits: &CudaBuf,
        z: &CudaBuf,
        text: &CudaBuf,
        rows: usize,
        dim: usize,
        scale: f32,
    ) -> Result<()> {
        let op = "state_logits_backward";
        check_len(op, "z", z.len, &[rows, dim])?;
        check_len(op, "dz", dz.len, &[rows, dim])?;
        check_len(op, "text", text.len, &[2, dim])?;
        check_len(op, "dtext", dtext.len, &[2, dim])?;
        check_len(op, "dlogits", dlogits.len, &[rows, 2])?;
        if rows == 0 || dim == 0 {
            return Ok(());
        }
        let p = Self::rows_params(op, rows, dim, 0.0, scale)?;
        let mut inv_norm = self.alloc(rows)?;
        launch!(
            self,
            op,
            "state_logits_backward_dz",
            grid_rows(rows),
            &mut dz.data,
            &mut inv_norm,
            &dlogits.data,
            &z.data,
            &text.data,
            &p
        )?;
        let chunks = chunking(rows).1;
        let mut partial = self.alloc(chunks * 2 * dim)?;
        launch!(
            self,
            op,
            "state_logits_backward_dtext",
            grid_partials(dim, chunks),
            &mut partial,
            &dlogits.data,
            &z.data,
            &inv_norm,
            &p
        )?;
        self.sum_partials(
            op,
            &mut dtext.data,
            &partial.slice(..),
            chunks,
            2 * dim,
            2 * dim,
        )
    }

    pub(super) fn abnormal_probability_backward_impl(
        &self,
        dlogits: &mut CudaBuf,
        dprobs: &CudaBuf,
        logits: &CudaBuf,
        rows: usize,
    ) -> Result<()> {
        let op = "abnormal_probability_backward";
        check_len(op, "logits", logits.len, &[rows, 2])?;
        check_len(op, "dlogits", dlogits.len, &[rows, 2])?;
        check_len(op, "dprobs", dprobs.len, &[rows])?;
        if rows == 0 {
            return Ok(());
        }
        let p = ScoreParams {
            rows: i32_dim(op, "rows", rows)?,
            dim: 2,
            scale: 1.0,
        };
        launch!(
            self,
            op,
            "abnormal_probability_backward",
            grid_1d(rows),
            &mut dlogits.data,
            &dprobs.data,
            &logits.data,
            &p
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_rows_and_stay_bounded() {
        for rows in [1, 63, 64, 65, 10_960, 64 * 1024, 64 * 1024 + 1, 10_000_000] {
            let (chunk_rows, chunks) = chunking(rows);
            assert!(
                chunk_rows >= CHUNK_ROWS && chunks <= MAX_CHUNKS,
                "rows {rows}"
            );
            assert!(chunks * chunk_rows >= rows && (chunks - 1) * chunk_rows < rows);
        }
    }
}
