//! Adam (SPEC §8), the reference of `kernels/adam.cu`: `param, m, v, grad: [len]`, betas
//! (0.5, 0.999), eps 1e-8, no weight decay, torch's single-tensor order in f32:
//!
//! ```text
//! m += (1 − β1)·(g − m),     v = β2·v + (1 − β2)·g²
//! param −= step_size · m / (sqrt(v) / bc2_sqrt + eps)
//! ```
//!
//! with `step_size = lr / (1 − β1^t)` and `bc2_sqrt = sqrt(1 − β2^t)` formed in f64 and rounded
//! to f32 ([`bias_corrections`], shared with the CUDA launcher).

use anyhow::{ensure, Result};

use super::check_len;

pub const BETA1: f32 = 0.5;
pub const BETA2: f32 = 0.999;
pub const EPS: f32 = 1e-8;

/// `(lr / (1 − β1^t), sqrt(1 − β2^t))` of update `step` = t ≥ 1, in f64 as torch computes
/// them with Python floats, rounded to f32.
pub(crate) fn bias_corrections(lr: f32, step: u64) -> Result<(f32, f32)> {
    ensure!(step >= 1, "adam: step {step}: updates count from 1");
    let t = i32::try_from(step).unwrap_or(i32::MAX);
    let bc1 = 1.0 - f64::from(BETA1).powi(t);
    let bc2 = 1.0 - f64::from(BETA2).powi(t);
    Ok(((f64::from(lr) / bc1) as f32, bc2.sqrt() as f32))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn adam(
    param: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grad: &[f32],
    len: usize,
    lr: f32,
    step: u64,
) -> Result<()> {
    for (name, got) in [
        ("param", param.len()),
        ("m", m.len()),
        ("v", v.len()),
        ("grad", grad.len()),
    ] {
        check_len("adam", name, got, &[len])?;
    }
    let (step_size, bc2_sqrt) = bias_corrections(lr, step)?;
    for (((p, &g), m), v) in param.iter_mut().zip(grad).zip(m).zip(v) {
        *m += (1.0 - BETA1) * (g - *m);
        *v = BETA2 * *v + (1.0 - BETA2) * g * g;
        let denom = v.sqrt() / bc2_sqrt + EPS;
        *p -= step_size * (*m / denom);
    }
    Ok(())
}
