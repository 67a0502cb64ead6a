//! Adam (SPEC §8): betas (0.5, 0.999), eps 1e-8, no weight decay, torch's update order in
//! f32 — the backend op [`Backend::adam`] (math in `src/backend/cpu/adam.rs`).
//!
//! [`Adam`] keeps the moments on the host, shaped like the head (checkpoints, tests);
//! [`DeviceAdam`] keeps parameters and moments in the backend's memory for the training loop,
//! in the [`grouped`] layout the step reads its parameters and returns its gradients in. The
//! moments are saved with a checkpoint so that `--resume` continues exactly.

use super::params::{tensors, tensors_mut};
use crate::backend::cpu::adam::adam;
use crate::backend::Backend;
use crate::model::head::Head;
use anyhow::{ensure, Result};

pub use crate::backend::cpu::adam::{BETA1, BETA2, EPS};

/// Tensors of [`grouped`].
pub const GROUPS: usize = 6;

/// The trainable tensors as the training step produces their gradients: prompt, norm weight
/// and bias, `[q; k; v]` as one `[3·512, d]` block, out weight, out bias.
pub fn grouped(h: &Head) -> [Vec<f32>; GROUPS] {
    let qkv = [h.to_q.as_slice(), &h.to_k, &h.to_v].concat();
    [
        h.prompt.clone(),
        h.norm_w.clone(),
        h.norm_b.clone(),
        qkv,
        h.to_out_w.clone(),
        h.to_out_b.clone(),
    ]
}

/// Writes [`grouped`] tensors back into `h` (whose shapes they must have).
pub fn ungroup(h: &mut Head, g: [Vec<f32>; GROUPS]) -> Result<()> {
    let [prompt, norm_w, norm_b, qkv, out_w, out_b] = g;
    let (q, k) = (h.to_q.len(), h.to_k.len());
    ensure!(
        qkv.len() == q + k + h.to_v.len(),
        "training: a q/k/v gradient of {} values for a head of {} + {} + {}",
        qkv.len(),
        q,
        k,
        h.to_v.len()
    );
    for (dst, src) in [
        (&mut h.prompt, prompt),
        (&mut h.norm_w, norm_w),
        (&mut h.norm_b, norm_b),
        (&mut h.to_out_w, out_w),
        (&mut h.to_out_b, out_b),
    ] {
        ensure!(
            dst.len() == src.len(),
            "training: a tensor of {} values for a head tensor of {}",
            src.len(),
            dst.len()
        );
        *dst = src;
    }
    h.to_q.copy_from_slice(&qkv[..q]);
    h.to_k.copy_from_slice(&qkv[q..q + k]);
    h.to_v.copy_from_slice(&qkv[q + k..]);
    Ok(())
}

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

    /// One update of every parameter of `head` with `grads`, on the host.
    pub fn update(&mut self, head: &mut Head, grads: &Head) -> Result<()> {
        self.step += 1;
        let params = tensors_mut(head);
        let ms = tensors_mut(&mut self.m);
        let vs = tensors_mut(&mut self.v);
        for (((p, g), m), v) in params.into_iter().zip(tensors(grads)).zip(ms).zip(vs) {
            let len = p.len();
            adam(p, m, v, g, len, self.lr, self.step)?;
        }
        Ok(())
    }
}

/// Parameters and Adam moments in the backend's memory, in the [`grouped`] layout.
pub struct DeviceAdam<B: Backend> {
    pub lr: f32,
    /// Steps taken so far.
    pub step: u64,
    params: Vec<B::Buf>,
    m: Vec<B::Buf>,
    v: Vec<B::Buf>,
}

/// The [`grouped`] tensors of `h`, uploaded.
pub fn upload_grouped<B: Backend>(be: &B, h: &Head) -> Result<Vec<B::Buf>> {
    grouped(h).iter().map(|t| be.upload(t)).collect()
}

fn download_grouped<B: Backend>(be: &B, bufs: &[B::Buf], into: &mut Head) -> Result<()> {
    let host: Vec<Vec<f32>> = bufs.iter().map(|b| be.download(b)).collect::<Result<_>>()?;
    let host: [Vec<f32>; GROUPS] = host
        .try_into()
        .map_err(|_| anyhow::anyhow!("training: expected {GROUPS} parameter tensors"))?;
    ungroup(into, host)
}

impl<B: Backend> DeviceAdam<B> {
    /// `head` and the state of `adam` uploaded.
    pub fn upload(be: &B, head: &Head, adam: &Adam) -> Result<Self> {
        Ok(Self {
            lr: adam.lr,
            step: adam.step,
            params: upload_grouped(be, head)?,
            m: upload_grouped(be, &adam.m)?,
            v: upload_grouped(be, &adam.v)?,
        })
    }

    /// One update of every parameter with `grads` ([`grouped`] layout, in the backend).
    pub fn update(&mut self, be: &B, grads: &[B::Buf]) -> Result<()> {
        ensure!(
            grads.len() == GROUPS,
            "adam: {} gradient tensors for {GROUPS} parameter tensors",
            grads.len()
        );
        self.step += 1;
        for (((p, m), v), g) in self
            .params
            .iter_mut()
            .zip(&mut self.m)
            .zip(&mut self.v)
            .zip(grads)
        {
            let len = be.buf_len(p);
            be.adam(p, m, v, g, len, self.lr, self.step)?;
        }
        Ok(())
    }

    /// The parameters in the backend, in the [`grouped`] layout: what the training step reads.
    pub fn params(&self) -> &[B::Buf] {
        &self.params
    }

    /// The parameters, written into `head`.
    pub fn download_params(&self, be: &B, head: &mut Head) -> Result<()> {
        download_grouped(be, &self.params, head)
    }

    /// The host [`Adam`] with this state (moments shaped like `like`), for a checkpoint.
    pub fn download_state(&self, be: &B, like: &Head) -> Result<Adam> {
        let mut adam = Adam::new(self.lr, like);
        adam.step = self.step;
        download_grouped(be, &self.m, &mut adam.m)?;
        download_grouped(be, &self.v, &mut adam.v)?;
        Ok(adam)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::model::head::Prompts;
    use crate::rng::Rng;

    fn random_head(rng: &mut Rng) -> Head {
        let mut v = |n: usize| (0..n).map(|_| rng.normal()).collect::<Vec<f32>>();
        Head {
            width: 4,
            text_width: 3,
            prompt: v(36),
            norm_w: v(4),
            norm_b: v(4),
            to_q: v(8),
            to_k: v(8),
            to_v: v(8),
            to_out_w: v(8),
            to_out_b: v(4),
            prompts: Prompts::Learned,
        }
    }

    #[test]
    fn device_adam_matches_host_adam_and_round_trips_its_state() {
        let be = CpuBackend::new(Some(1)).unwrap();
        let start = random_head(&mut Rng::new(4));
        let mut rng = Rng::new(5);
        let grads: Vec<Head> = (0..3).map(|_| random_head(&mut rng)).collect();
        let (mut host, mut host_adam) = (random_head(&mut Rng::new(4)), Adam::new(1e-3, &start));
        let mut device = DeviceAdam::upload(&be, &start, &Adam::new(1e-3, &start)).unwrap();
        for g in &grads {
            host_adam.update(&mut host, g).unwrap();
            let bufs: Vec<Vec<f32>> = grouped(g).to_vec();
            device.update(&be, &bufs).unwrap();
        }
        let mut got = random_head(&mut Rng::new(4));
        device.download_params(&be, &mut got).unwrap();
        assert_eq!(tensors(&got), tensors(&host));
        assert_ne!(tensors(&got), tensors(&start));
        let state = device.download_state(&be, &start).unwrap();
        assert_eq!(state.step, 3);
        assert_eq!(tensors(&state.m), tensors(&host_adam.m));
        assert_eq!(tensors(&state.v), tensors(&host_adam.v));
        let err = device.update(&be, &grouped(&grads[0])[..5]).unwrap_err();
        assert!(err.to_string().contains("adam"), "{err}");
    }
}
