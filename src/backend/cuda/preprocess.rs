//! `upload_rgb` on the GPU: the resized RGB bytes cross through the pinned input stage
//! ([`super::pinned::InputStage`], copy stream) and `normalize_rgb` (kernels/preprocess.cu)
//! turns them into the normalised `[batch, 3, H, W]` f32 batch on the compute stream, with the
//! CPU twin's own lookup table ([`normalize_lut`]), so the result is bit-identical to
//! `data::preprocess::normalize_rgb`.

use super::ffi::PreprocessParams;
use super::{grid_1d, i32_dim, CudaBackend, CudaBuf};
use crate::backend::cpu::check_len;
use crate::data::preprocess::normalize_lut;
use anyhow::{anyhow, Context, Result};
use cudarc::driver::{CudaSlice, CudaStream, PushKernelArg};
use std::sync::Arc;

/// `[3, 256]`: the normalised value of every byte, per channel, on the device.
pub(crate) fn upload_lut(stream: &Arc<CudaStream>) -> Result<CudaSlice<f32>> {
    let lut: Vec<f32> = normalize_lut().concat();
    stream
        .clone_htod(&lut)
        .context("cuda: uploading the normalisation table")
}

impl CudaBackend {
    pub(crate) fn upload_rgb_impl(
        &self,
        rgb: &[u8],
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<CudaBuf> {
        check_len("upload_rgb", "rgb", rgb.len(), &[batch, height, width, 3])?;
        if rgb.is_empty() {
            return Ok(CudaBuf {
                data: self.alloc(0)?,
                len: 0,
            });
        }
        let p = PreprocessParams {
            batch: i32_dim("upload_rgb", "batch", batch)?,
            height: i32_dim("upload_rgb", "height", height)?,
            width: i32_dim("upload_rgb", "width", width)?,
        };
        let len = rgb.len();
        // SAFETY: `normalize_rgb` writes every one of the `len` values.
        let mut data = unsafe { self.stream.alloc::<f32>(len) }
            .with_context(|| format!("cuda: allocating {len} f32"))?;
        let f = self.kernels.get("normalize_rgb")?;
        let mut stage = self
            .inputs
            .lock()
            .map_err(|_| anyhow!("cuda: input stage lock poisoned"))?;
        stage.upload(&self.stream, rgb, |bytes| {
            let mut builder = self.stream.launch_builder(f);
            builder.arg(&mut data).arg(bytes).arg(&self.lut).arg(&p);
            // SAFETY: `data` holds batch*3*height*width f32 and `bytes` at least as many
            // bytes (checked above and by the stage), `lut` 768 f32: all the kernel indexes.
            unsafe { builder.launch(grid_1d(len / 3)) }
                .map(|_| ())
                .context("upload_rgb: launching `normalize_rgb`")
        })?;
        Ok(CudaBuf { data, len })
    }
}
