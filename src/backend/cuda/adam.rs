//! Launcher of `kernels/adam.cu` (math in its header; CPU twin `src/backend/cpu/adam.rs`,
//! whose [`bias_corrections`] it shares, so both backends update bit for bit alike).

use super::ffi::AdamParams;
use super::{grid_1d, CudaBackend, CudaBuf};
use crate::backend::cpu::adam::{bias_corrections, BETA1, BETA2, EPS};
use crate::backend::cpu::check_len;
use anyhow::{Context, Result};
use cudarc::driver::{DeviceRepr, PushKernelArg};

// SAFETY: a plain C struct of long long/float fields (`kernels/params.h`), passed by value.
unsafe impl DeviceRepr for AdamParams {}

impl CudaBackend {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn adam_impl(
        &self,
        param: &mut CudaBuf,
        m: &mut CudaBuf,
        v: &mut CudaBuf,
        grad: &CudaBuf,
        len: usize,
        lr: f32,
        step: u64,
    ) -> Result<()> {
        for (name, got) in [
            ("param", param.len),
            ("m", m.len),
            ("v", v.len),
            ("grad", grad.len),
        ] {
            check_len("adam", name, got, &[len])?;
        }
        let (step_size, bc2_sqrt) = bias_corrections(lr, step)?;
        if len == 0 {
            return Ok(());
        }
        let q = AdamParams {
            n: len as i64,
            step_size,
            bc2_sqrt,
            beta1: BETA1,
            beta2: BETA2,
            eps: EPS,
        };
        launch!(
            self,
            "adam",
            "adam",
            grid_1d(len),
            &mut param.data,
            &mut m.data,
            &mut v.data,
            &grad.data,
            &q
        )
    }
}
