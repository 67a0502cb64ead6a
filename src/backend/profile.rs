//! A [`Backend`] wrapper that times every op (wall clock, per op name) and counts GEMM flops,
//! for benches and `afclip bench`. Each op is followed by [`Backend::synchronize`], so its time
//! is the device's on an asynchronous backend (CUDA) too; the price is that the host no longer
//! queues the next op while the device runs this one.

use super::{Backend, ColumnBlock, Epilogue};
use anyhow::Result;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Default, Debug)]
pub struct OpStats {
    pub calls: u64,
    pub time: Duration,
    /// 2·m·n·k summed, for `linear` and `attention` (`QKᵀ` and `PV`).
    pub flops: f64,
}

pub struct Profiled<B: Backend> {
    inner: B,
    stats: Mutex<BTreeMap<&'static str, OpStats>>,
}

impl<B: Backend> Profiled<B> {
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            stats: Mutex::new(BTreeMap::new()),
        }
    }

    /// Per-op totals since the last reset, by op name.
    pub fn stats(&self) -> BTreeMap<&'static str, OpStats> {
        self.stats.lock().expect("stats lock").clone()
    }

    pub fn reset(&self) {
        self.stats.lock().expect("stats lock").clear();
    }

    fn time<T>(&self, op: &'static str, flops: f64, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let start = Instant::now();
        let out = f()?;
        self.inner.synchronize()?;
        let mut stats = self.stats.lock().expect("stats lock");
        let s = stats.entry(op).or_default();
        s.calls += 1;
        s.time += start.elapsed();
        s.flops += flops;
        Ok(out)
    }
}

impl<B: Backend> Backend for Profiled<B> {
    type Buf = B::Buf;
    type Mat = (B::Mat, usize, usize);

    fn name(&self) -> String {
        format!("{} (profiled)", self.inner.name())
    }
    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }
    fn upload(&self, host: &[f32]) -> Result<Self::Buf> {
        self.time("upload", 0.0, || self.inner.upload(host))
    }
    fn upload_rgb(
        &self,
        rgb: &[u8],
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<Self::Buf> {
        self.time("upload_rgb", 0.0, || {
            self.inner.upload_rgb(rgb, batch, height, width)
        })
    }
    fn zeros(&self, len: usize) -> Result<Self::Buf> {
        self.time("zeros", 0.0, || self.inner.zeros(len))
    }
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>> {
        self.time("download", 0.0, || self.inner.download(buf))
    }
    fn buf_len(&self, buf: &Self::Buf) -> usize {
        self.inner.buf_len(buf)
    }
    fn upload_mat(&self, w: &[f32], out_dim: usize, in_dim: usize) -> Result<Self::Mat> {
        Ok((self.inner.upload_mat(w, out_dim, in_dim)?, out_dim, in_dim))
    }
    fn mat_from_buf(&self, w: &Self::Buf, out_dim: usize, in_dim: usize) -> Result<Self::Mat> {
        let mat = self.time("mat_from_buf", 0.0, || {
            self.inner.mat_from_buf(w, out_dim, in_dim)
        })?;
        Ok((mat, out_dim, in_dim))
    }
    fn upload_frozen_mat(&self, w: &[f32], out_dim: usize, in_dim: usize) -> Result<Self::Mat> {
        Ok((
            self.inner.upload_frozen_mat(w, out_dim, in_dim)?,
            out_dim,
            in_dim,
        ))
    }
    fn linear(
        &self,
        y: &mut Self::Buf,
        x: &Self::Buf,
        w: &Self::Mat,
        bias: Option<&Self::Buf>,
        epilogue: Epilogue,
        rows: usize,
    ) -> Result<()> {
        let flops = 2.0 * rows as f64 * w.1 as f64 * w.2 as f64;
        self.time("linear", flops, || {
            self.inner.linear(y, x, &w.0, bias, epilogue, rows)
        })
    }
    fn layer_norm(
        &self,
        y: &mut Self::Buf,
        x: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        self.time("layer_norm", 0.0, || {
            self.inner.layer_norm(y, x, gamma, beta, rows, dim, eps)
        })
    }
    fn attention(
        &self,
        out: &mut Self::Buf,
        qkv: &Self::Buf,
        batch: usize,
        tokens: usize,
        heads: usize,
        head_dim: usize,
        causal: bool,
    ) -> Result<()> {
        let flops = 4.0 * (batch * heads) as f64 * (tokens * tokens * head_dim) as f64;
        self.time("attention", flops, || {
            self.inner
                .attention(out, qkv, batch, tokens, heads, head_dim, causal)
        })
    }
    fn patch_im2col(
        &self,
        cols: &mut Self::Buf,
        images: &Self::Buf,
        batch: usize,
        side: usize,
        patch: usize,
    ) -> Result<()> {
        self.time("patch_im2col", 0.0, || {
            self.inner.patch_im2col(cols, images, batch, side, patch)
        })
    }
    fn embed_tokens(
        &self,
        x: &mut Self::Buf,
        patches: &Self::Buf,
        cls: &Self::Buf,
        pos: &Self::Buf,
        batch: usize,
        n_patches: usize,
        dim: usize,
    ) -> Result<()> {
        self.time("embed_tokens", 0.0, || {
            self.inner
                .embed_tokens(x, patches, cls, pos, batch, n_patches, dim)
        })
    }
    fn aggregate(
        &self,
        out: &mut Self::Buf,
        x: &Self::Buf,
        batch: usize,
        grid: usize,
        dim: usize,
        window: usize,
        sigma: f32,
    ) -> Result<()> {
        self.time("aggregate", 0.0, || {
            self.inner
                .aggregate(out, x, batch, grid, dim, window, sigma)
        })
    }
    fn state_logits(
        &self,
        logits: &mut Self::Buf,
        z: &Self::Buf,
        text: &Self::Buf,
        rows: usize,
        dim: usize,
        scale: f32,
    ) -> Result<()> {
        self.time("state_logits", 0.0, || {
            self.inner.state_logits(logits, z, text, rows, dim, scale)
        })
    }
    fn abnormal_probability(
        &self,
        probs: &mut Self::Buf,
        logits: &Self::Buf,
        rows: usize,
    ) -> Result<()> {
        self.time("abnormal_probability", 0.0, || {
            self.inner.abnormal_probability(probs, logits, rows)
        })
    }
    fn anomaly_maps(
        &self,
        maps: &mut Self::Buf,
        patch: &Self::Buf,
        batch: usize,
        grid: usize,
        side: usize,
        sigma: f32,
    ) -> Result<()> {
        self.time("anomaly_maps", 0.0, || {
            self.inner
                .anomaly_maps(maps, patch, batch, grid, side, sigma)
        })
    }
    fn nearest_cosine(
        &self,
        dist: &mut Self::Buf,
        queries: &Self::Buf,
        bank: &Self::Buf,
        rows: usize,
        bank_rows: usize,
        dim: usize,
        weight: f32,
    ) -> Result<()> {
        let flops = 2.0 * rows as f64 * bank_rows as f64 * dim as f64;
        self.time("nearest_cosine", flops, || {
            self.inner
                .nearest_cosine(dist, queries, bank, rows, bank_rows, dim, weight)
        })
    }

    fn matmul(
        &self,
        c: &mut Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        dims: (usize, usize, usize),
        trans_a: bool,
        trans_b: bool,
        accumulate: bool,
    ) -> Result<()> {
        let flops = 2.0 * dims.0 as f64 * dims.1 as f64 * dims.2 as f64;
        self.time("matmul", flops, || {
            self.inner
                .matmul(c, a, b, dims, trans_a, trans_b, accumulate)
        })
    }
    fn bias_grad(&self, db: &mut Self::Buf, dy: &Self::Buf, rows: usize, dim: usize) -> Result<()> {
        self.time("bias_grad", 0.0, || self.inner.bias_grad(db, dy, rows, dim))
    }
    fn quick_gelu(&self, y: &mut Self::Buf, x: &Self::Buf, len: usize) -> Result<()> {
        self.time("quick_gelu", 0.0, || self.inner.quick_gelu(y, x, len))
    }
    fn quick_gelu_backward(
        &self,
        dx: &mut Self::Buf,
        dy: &Self::Buf,
        x: &Self::Buf,
        len: usize,
    ) -> Result<()> {
        self.time("quick_gelu_backward", 0.0, || {
            self.inner.quick_gelu_backward(dx, dy, x, len)
        })
    }
    fn layer_norm_backward(
        &self,
        dx: Option<&mut Self::Buf>,
        dgamma_dbeta: Option<(&mut Self::Buf, &mut Self::Buf)>,
        dy: &Self::Buf,
        x: &Self::Buf,
        gamma: &Self::Buf,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        self.time("layer_norm_backward", 0.0, || {
            self.inner
                .layer_norm_backward(dx, dgamma_dbeta, dy, x, gamma, rows, dim, eps)
        })
    }
    fn attention_backward(
        &self,
        dqkv: &mut Self::Buf,
        dout: &Self::Buf,
        qkv: &Self::Buf,
        batch: usize,
        tokens: usize,
        heads: usize,
        head_dim: usize,
        causal: bool,
    ) -> Result<()> {
        // P recomputed (QKᵀ), dV, dP, dQ, dK: five t·t·hd products per head.
        let flops = 10.0 * (batch * heads) as f64 * (tokens * tokens * head_dim) as f64;
        self.time("attention_backward", flops, || {
            self.inner
                .attention_backward(dqkv, dout, qkv, batch, tokens, heads, head_dim, causal)
        })
    }
    fn state_logits_backward(
        &self,
        dz: &mut Self::Buf,
        dtext: &mut Self::Buf,
        dlogits: &Self::Buf,
        z: &Self::Buf,
        text: &Self::Buf,
        rows: usize,
        dim: usize,
        scale: f32,
    ) -> Result<()> {
        self.time("state_logits_backward", 0.0, || {
            self.inner
                .state_logits_backward(dz, dtext, dlogits, z, text, rows, dim, scale)
        })
    }
    fn abnormal_probability_backward(
        &self,
        dlogits: &mut Self::Buf,
        dprobs: &Self::Buf,
        logits: &Self::Buf,
        rows: usize,
    ) -> Result<()> {
        self.time("abnormal_probability_backward", 0.0, || {
            self.inner
                .abnormal_probability_backward(dlogits, dprobs, logits, rows)
        })
    }
    fn focal_loss(
        &self,
        loss: &mut Self::Buf,
        dp: &mut Self::Buf,
        p: &Self::Buf,
        t: &Self::Buf,
        block: ColumnBlock,
        weight: f32,
    ) -> Result<()> {
        self.time("focal_loss", 0.0, || {
            self.inner.focal_loss(loss, dp, p, t, block, weight)
        })
    }
    fn l1_loss(
        &self,
        loss: &mut Self::Buf,
        dp: &mut Self::Buf,
        p: &Self::Buf,
        t: &Self::Buf,
        block: ColumnBlock,
        weight: f32,
    ) -> Result<()> {
        self.time("l1_loss", 0.0, || {
            self.inner.l1_loss(loss, dp, p, t, block, weight)
        })
    }
    fn patch_alignment(
        &self,
        loss: &mut Self::Buf,
        state: &mut Self::Buf,
        z: &Self::Buf,
        masks: &Self::Buf,
        batch: usize,
        tokens: usize,
        e: usize,
    ) -> Result<()> {
        self.time("patch_alignment", 0.0, || {
            self.inner
                .patch_alignment(loss, state, z, masks, batch, tokens, e)
        })
    }
    fn patch_alignment_backward(
        &self,
        dz: &mut Self::Buf,
        state: &Self::Buf,
        z: &Self::Buf,
        masks: &Self::Buf,
        batch: usize,
        tokens: usize,
        e: usize,
        weight: f32,
    ) -> Result<()> {
        self.time("patch_alignment_backward", 0.0, || {
            self.inner
                .patch_alignment_backward(dz, state, z, masks, batch, tokens, e, weight)
        })
    }
    fn adam(
        &self,
        param: &mut Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        grad: &Self::Buf,
        len: usize,
        lr: f32,
        step: u64,
    ) -> Result<()> {
        self.time("adam", 0.0, || {
            self.inner.adam(param, m, v, grad, len, lr, step)
        })
    }
}
