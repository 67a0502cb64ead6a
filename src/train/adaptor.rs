//! The adaptor with the frozen `ln_post` and `visual.proj` (SPEC §4) on the parameters Adam
//! updates in the backend's memory: the forward of [`crate::model::adaptor`] keeping its
//! activations, and the backward to the adaptor's parameters.
//!
//! ```text
//! h = LN(c; γ, β)          qkv = h [Wq; Wk; Wv]ᵀ          a = attn(qkv)  (8 heads of 64)
//! o = a Woᵀ + bo           m = ln_post(o)                 z = m projᵀ
//! ```
//!
//! Backward from `dz` (`c` is frozen, so no `dc`):
//! `dm = dz proj`, `do = ln_post'(dm)`, `dWo += doᵀ a`, `dbo += Σ do`, `da = do Wo`,
//! `dqkv = attn'(da)`, `dWqkv += dqkvᵀ h`, `dh = dqkv Wqkv`, `dγ, dβ += LN'(dh)`.

use crate::backend::Backend;
use crate::model::adaptor::{Activations, AdaptorWeights, PostProj};
use crate::model::checkpoint::VisionWeights;
use crate::model::head::{ADAPTOR_HEADS, ADAPTOR_INNER};
use crate::model::transformer::{HEAD_DIM, LN_EPS};
use anyhow::{anyhow, bail, ensure, Result};

/// `ln_post` and `visual.proj`, frozen, uploaded once: the forward's, plus `proj` as a buffer
/// for the backward.
pub struct TrainPost<B: Backend> {
    post: PostProj<B>,
    /// `[e, d]`
    proj: B::Buf,
}

impl<B: Backend> TrainPost<B> {
    pub fn upload(be: &B, w: &VisionWeights, width: usize, embed: usize) -> Result<Self> {
        Ok(Self {
            post: PostProj::upload(be, w, width, embed)?,
            proj: be.upload(&w.proj)?,
        })
    }

    pub fn embed(&self) -> usize {
        self.post.embed()
    }

    /// `z = ln_post(x) projᵀ`, `x: [rows, d]` → `[rows, e]`.
    pub fn forward(&self, be: &B, x: &B::Buf, rows: usize) -> Result<B::Buf> {
        self.post.forward(be, x, rows)
    }

    /// `∂L/∂x` from `dz`, for the `x` [`TrainPost::forward`] was given.
    pub fn backward(&self, be: &B, x: &B::Buf, dz: &B::Buf, rows: usize) -> Result<B::Buf> {
        let (d, e) = (self.post.width(), self.post.embed());
        let mut dm = be.zeros(rows * d)?;
        be.matmul(&mut dm, dz, &self.proj, (rows, e, d), false, false, false)?;
        let mut dx = be.zeros(rows * d)?;
        be.layer_norm_backward(
            Some(&mut dx),
            None,
            &dm,
            x,
            &self.post.ln_w,
            rows,
            d,
            LN_EPS,
        )?;
        Ok(dx)
    }
}

/// The adaptor's parameters, borrowed from the optimiser's buffers, with the two GEMM
/// matrices the forward needs copied from them inside the backend.
pub struct AdaptorParams<'a, B: Backend> {
    norm_w: &'a B::Buf,
    norm_b: &'a B::Buf,
    /// `[3·512, d]`
    qkv: &'a B::Buf,
    qkv_mat: B::Mat,
    /// `[d, 512]`
    out: &'a B::Buf,
    out_mat: B::Mat,
    out_b: &'a B::Buf,
    width: usize,
}

/// Gradients of the adaptor's parameters, accumulated over the 12 token sets.
pub struct AdaptorGrads<B: Backend> {
    pub norm_w: B::Buf,
    pub norm_b: B::Buf,
    /// `[3·512, d]`: q, k, v rows.
    pub qkv: B::Buf,
    pub out: B::Buf,
    pub out_b: B::Buf,
}

impl<B: Backend> AdaptorGrads<B> {
    pub fn zeros(be: &B, width: usize) -> Result<Self> {
        Ok(Self {
            norm_w: be.zeros(width)?,
            norm_b: be.zeros(width)?,
            qkv: be.zeros(3 * ADAPTOR_INNER * width)?,
            out: be.zeros(width * ADAPTOR_INNER)?,
            out_b: be.zeros(width)?,
        })
    }
}

pub struct AdaptorActs<B: Backend> {
    acts: Activations<B>,
    /// `[rows, e]`: the projected tokens the scores are computed from.
    pub z: B::Buf,
}

impl<'a, B: Backend> AdaptorParams<'a, B> {
    /// `[norm_w, norm_b, qkv, out_w, out_b]` of a head of width `d`, in the backend.
    pub fn new(be: &B, params: &'a [B::Buf], d: usize) -> Result<Self> {
        let [norm_w, norm_b, qkv, out, out_b] = params else {
            bail!(
                "training step: {} adaptor parameter tensors, expected 5",
                params.len()
            );
        };
        for (name, buf, len) in [
            ("norm weight", norm_w, d),
            ("norm bias", norm_b, d),
            ("q/k/v weight", qkv, 3 * ADAPTOR_INNER * d),
            ("out weight", out, d * ADAPTOR_INNER),
            ("out bias", out_b, d),
        ] {
            ensure!(
                be.buf_len(buf) == len,
                "training step: the adaptor's {name} holds {} values, expected {len}",
                be.buf_len(buf)
            );
        }
        Ok(Self {
            qkv_mat: be.mat_from_buf(qkv, 3 * ADAPTOR_INNER, d)?,
            out_mat: be.mat_from_buf(out, d, ADAPTOR_INNER)?,
            norm_w,
            norm_b,
            qkv,
            out,
            out_b,
            width: d,
        })
    }

    /// `c: [batch, tokens, d]` → activations ending in `z: [batch, tokens, e]`.
    pub fn forward(
        &self,
        be: &B,
        post: &TrainPost<B>,
        c: &B::Buf,
        batch: usize,
        tokens: usize,
    ) -> Result<AdaptorActs<B>> {
        let weights = AdaptorWeights {
            norm_w: self.norm_w,
            norm_b: self.norm_b,
            qkv: &self.qkv_mat,
            out: &self.out_mat,
            out_b: self.out_b,
        };
        let (z, acts) = weights.forward(be, &post.post, c, (batch, tokens), true)?;
        let acts = acts.ok_or_else(|| anyhow!("adaptor forward kept no activations"))?;
        Ok(AdaptorActs { acts, z })
    }

    /// Accumulates the parameter gradients of one token set into `grads`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        be: &B,
        post: &TrainPost<B>,
        acts: &AdaptorActs<B>,
        c: &B::Buf,
        dz: &B::Buf,
        batch: usize,
        tokens: usize,
        grads: &mut AdaptorGrads<B>,
    ) -> Result<()> {
        let rows = batch * tokens;
        let (d, inner) = (self.width, ADAPTOR_INNER);
        let a = &acts.acts;
        let dout = post.backward(be, &a.out, dz, rows)?;
        be.matmul(
            &mut grads.out,
            &dout,
            &a.attn,
            (d, rows, inner),
            true,
            false,
            true,
        )?;
        be.bias_grad(&mut grads.out_b, &dout, rows, d)?;
        let mut dattn = be.zeros(rows * inner)?;
        be.matmul(
            &mut dattn,
            &dout,
            self.out,
            (rows, d, inner),
            false,
            false,
            false,
        )?;
        drop(dout);
        let mut dqkv = be.zeros(rows * 3 * inner)?;
        be.attention_backward(
            &mut dqkv,
            &dattn,
            &a.qkv,
            batch,
            tokens,
            ADAPTOR_HEADS,
            HEAD_DIM,
            false,
        )?;
        drop(dattn);
        be.matmul(
            &mut grads.qkv,
            &dqkv,
            &a.h,
            (3 * inner, rows, d),
            true,
            false,
            true,
        )?;
        let mut dh = be.zeros(rows * d)?;
        be.matmul(
            &mut dh,
            &dqkv,
            self.qkv,
            (rows, 3 * inner, d),
            false,
            false,
            false,
        )?;
        be.layer_norm_backward(
            None,
            Some((&mut grads.norm_w, &mut grads.norm_b)),
            &dh,
            c,
            self.norm_w,
            rows,
            d,
            LN_EPS,
        )
    }
}
