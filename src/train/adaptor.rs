//! The adaptor with the frozen `ln_post` and `visual.proj` (SPEC §4), forward with saved
//! activations and backward to the adaptor's parameters. Same ops, same order as
//! [`crate::model::adaptor::Adaptor::forward`]:
//!
//! ```text
//! h = LN(c; γ, β)          qkv = h [Wq; Wk; Wv]ᵀ          a = attn(qkv)  (8 heads of 64)
//! o = a Woᵀ + bo           m = ln_post(o)                 z = m projᵀ
//! ```
//!
//! Backward from `dz` (`c` is frozen, so no `dc`):
//! `dm = dz proj`, `do = ln_post'(dm)`, `dWo += doᵀ a`, `dbo += Σ do`, `da = do Wo`,
//! `dqkv = attn'(da)`, `dWqkv += dqkvᵀ h`, `dh = dqkv Wqkv`, `dγ, dβ += LN'(dh)`.

use crate::backend::{Backend, Epilogue};
use crate::model::checkpoint::VisionWeights;
use crate::model::head::{Head, ADAPTOR_HEADS, ADAPTOR_INNER};
use crate::model::transformer::{HEAD_DIM, LN_EPS};
use anyhow::Result;

/// `ln_post` and `visual.proj`: frozen, uploaded once.
pub struct PostProj<B: Backend> {
    ln_w: B::Buf,
    ln_b: B::Buf,
    /// `[e, d]`, for the backward, and the same as a matrix for the forward.
    proj: B::Buf,
    proj_mat: B::Mat,
    width: usize,
    embed: usize,
}

impl<B: Backend> PostProj<B> {
    pub fn upload(be: &B, w: &VisionWeights, width: usize, embed: usize) -> Result<Self> {
        Ok(Self {
            ln_w: be.upload(&w.ln_post_w)?,
            ln_b: be.upload(&w.ln_post_b)?,
            proj: be.upload(&w.proj)?,
            proj_mat: be.upload_mat(&w.proj, embed, width)?,
            width,
            embed,
        })
    }

    pub fn embed(&self) -> usize {
        self.embed
    }
}

/// The adaptor's parameters on the backend (uploaded from a [`Head`] once per step).
pub struct AdaptorParams<B: Backend> {
    norm_w: B::Buf,
    norm_b: B::Buf,
    /// `[3·512, d]`
    qkv: B::Buf,
    qkv_mat: B::Mat,
    /// `[d, 512]`
    out: B::Buf,
    out_mat: B::Mat,
    out_b: B::Buf,
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

pub struct AdaptorActs<B: Backend> {
    h: B::Buf,
    qkv: B::Buf,
    attn: B::Buf,
    out: B::Buf,
    /// `[rows, e]`: the projected tokens the scores are computed from.
    pub z: B::Buf,
}

impl<B: Backend> AdaptorParams<B> {
    pub fn upload(be: &B, head: &Head) -> Result<Self> {
        let d = head.width;
        let mut qkv = Vec::with_capacity(3 * ADAPTOR_INNER * d);
        qkv.extend_from_slice(&head.to_q);
        qkv.extend_from_slice(&head.to_k);
        qkv.extend_from_slice(&head.to_v);
        Ok(Self {
            norm_w: be.upload(&head.norm_w)?,
            norm_b: be.upload(&head.norm_b)?,
            qkv_mat: be.upload_mat(&qkv, 3 * ADAPTOR_INNER, d)?,
            qkv: be.upload(&qkv)?,
            out_mat: be.upload_mat(&head.to_out_w, d, ADAPTOR_INNER)?,
            out: be.upload(&head.to_out_w)?,
            out_b: be.upload(&head.to_out_b)?,
        })
    }

    pub fn zero_grads(&self, be: &B, width: usize) -> Result<AdaptorGrads<B>> {
        Ok(AdaptorGrads {
            norm_w: be.zeros(width)?,
            norm_b: be.zeros(width)?,
            qkv: be.zeros(3 * ADAPTOR_INNER * width)?,
            out: be.zeros(width * ADAPTOR_INNER)?,
            out_b: be.zeros(width)?,
        })
    }

    /// `c: [batch, tokens, d]` → activations ending in `z: [batch, tokens, e]`.
    pub fn forward(
        &self,
        be: &B,
        post: &PostProj<B>,
        c: &B::Buf,
        batch: usize,
        tokens: usize,
    ) -> Result<AdaptorActs<B>> {
        let rows = batch * tokens;
        let d = post.width;
        let mut h = be.zeros(rows * d)?;
        be.layer_norm(&mut h, c, &self.norm_w, &self.norm_b, rows, d, LN_EPS)?;
        let mut qkv = be.zeros(rows * 3 * ADAPTOR_INNER)?;
        be.linear(&mut qkv, &h, &self.qkv_mat, None, Epilogue::Store, rows)?;
        let mut attn = be.zeros(rows * ADAPTOR_INNER)?;
        be.attention(
            &mut attn,
            &qkv,
            batch,
            tokens,
            ADAPTOR_HEADS,
            HEAD_DIM,
            false,
        )?;
        let mut out = be.zeros(rows * d)?;
        be.linear(
            &mut out,
            &attn,
            &self.out_mat,
            Some(&self.out_b),
            Epilogue::Store,
            rows,
        )?;
        let z = post.forward(be, &out, rows)?;
        Ok(AdaptorActs {
            h,
            qkv,
            attn,
            out,
            z,
        })
    }

    /// Accumulates the parameter gradients of one token set into `grads`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        be: &B,
        post: &PostProj<B>,
        acts: &AdaptorActs<B>,
        c: &B::Buf,
        dz: &B::Buf,
        batch: usize,
        tokens: usize,
        grads: &mut AdaptorGrads<B>,
    ) -> Result<()> {
        let rows = batch * tokens;
        let (d, inner) = (post.width, ADAPTOR_INNER);
        let dout = post.backward(be, &acts.out, dz, rows)?;
        be.matmul(
            &mut grads.out,
            &dout,
            &acts.attn,
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
            &self.out,
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
            &acts.qkv,
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
            &acts.h,
            (3 * inner, rows, d),
            true,
            false,
            true,
        )?;
        let mut dh = be.zeros(rows * d)?;
        be.matmul(
            &mut dh,
            &dqkv,
            &self.qkv,
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
            &self.norm_w,
            rows,
            d,
            LN_EPS,
        )
    }
}

impl<B: Backend> PostProj<B> {
    /// `z = ln_post(x) projᵀ`, `x: [rows, d]` → `[rows, e]`.
    pub fn forward(&self, be: &B, x: &B::Buf, rows: usize) -> Result<B::Buf> {
        let mut m = be.zeros(rows * self.width)?;
        be.layer_norm(&mut m, x, &self.ln_w, &self.ln_b, rows, self.width, LN_EPS)?;
        let mut z = be.zeros(rows * self.embed)?;
        be.linear(&mut z, &m, &self.proj_mat, None, Epilogue::Store, rows)?;
        Ok(z)
    }

    /// `∂L/∂x` from `dz`, for the `x` [`PostProj::forward`] was given.
    pub fn backward(&self, be: &B, x: &B::Buf, dz: &B::Buf, rows: usize) -> Result<B::Buf> {
        let (d, e) = (self.width, self.embed);
        let mut dm = be.zeros(rows * d)?;
        be.matmul(&mut dm, dz, &self.proj, (rows, e, d), false, false, false)?;
        let mut dx = be.zeros(rows * d)?;
        be.layer_norm_backward(Some(&mut dx), None, &dm, x, &self.ln_w, rows, d, LN_EPS)?;
        Ok(dx)
    }
}
