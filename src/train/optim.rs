//! Adam (SPEC §8): betas (0.5, 0.999), eps 1e-8, no weight decay, torch's update order:
//!
//! ```text
//! m += (1 − β1)·(g − m),     v = β2·v + (1 − β2)·g²
//! p −= lr / (1 − β1^t) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
//! ```
//!
//! in f32 like torch's single-tensor CPU path. The moments are saved with a checkpoint so that
//! `--resume` continues exactly.

use super::params::{tensors, tensors_mut};
use crate::model::head::Head;
use anyhow::{ensure, Result};

pub const BETA1: f32 = 0.5;
pub const BETA2: f32 = 0.999;
pub const EPS: f32 = 1e-8;

pub struct Adam {
    pub lr: f32,
    /// Steps taken so far.
    pub step: u64,
    /// First and second moments, shaped like the head.
    pub m: Head,
    pub v: Head,
}

impl Adam {
    pub fn new(lr: f32, like: &Head) -> Self {
        Self {
            lr,
            step: 0,
            m: super::params::zeros_like(like),
            v: super::params::zeros_like(like),
        }
    }

    /// One update of every parameter of `head` with `grads`.
    pub fn update(&mut self, head: &mut Head, grads: &Head) -> Result<()> {
        self.step += 1;
        // Bias corrections in f64, as torch computes them with Python floats.
        let t = self.step as i32;
        let bc1 = 1.0 - f64::from(BETA1).powi(t);
        let bc2 = 1.0 - f64::from(BETA2).powi(t);
        let step_size = (f64::from(self.lr) / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let params = tensors_mut(head);
        let ms = tensors_mut(&mut self.m);
        let vs = tensors_mut(&mut self.v);
        for (((p, g), m), v) in params.into_iter().zip(tensors(grads)).zip(ms).zip(vs) {
            ensure!(
                p.len() == g.len() && p.len() == m.len() && p.len() == v.len(),
                "adam: parameter of {} values got a gradient of {}",
                p.len(),
                g.len()
            );
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m += (1.0 - BETA1) * (g - *m);
                *v = BETA2 * *v + (1.0 - BETA2) * g * g;
                let denom = v.sqrt() / bc2_sqrt + EPS;
                *p -= step_size * (*m / denom);
            }
        }
        Ok(())
    }
}
