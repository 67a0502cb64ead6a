//! The AF-CLIP adaptor followed by the frozen `ln_post` and `visual.proj` (SPEC §4):
//! `z = ln_post(attn(LN(c)) Wo + bo) @ proj`, 8 heads of 64 over all tokens, no residual.
//!
//! The one forward of the adaptor, [`AdaptorWeights::forward`]: the scorer runs it on its
//! uploaded [`Adaptor`], the training step on the parameters Adam updates in the backend
//! (`crate::train::adaptor`), keeping the [`Activations`] its backward needs.

use super::checkpoint::VisionWeights;
use super::head::{Head, ADAPTOR_HEADS, ADAPTOR_INNER};
use super::transformer::{HEAD_DIM, LN_EPS};
use crate::backend::{Backend, Epilogue};
use anyhow::Result;

/// The frozen `ln_post` and `visual.proj`.
pub struct PostProj<B: Backend> {
    pub(crate) ln_w: B::Buf,
    pub(crate) ln_b: B::Buf,
    proj: B::Mat,
    width: usize,
    embed: usize,
}

impl<B: Backend> PostProj<B> {
    pub fn upload(be: &B, vision: &VisionWeights, width: usize, embed: usize) -> Result<Self> {
        Ok(Self {
            ln_w: be.upload(&vision.ln_post_w)?,
            ln_b: be.upload(&vision.ln_post_b)?,
            proj: be.upload_mat(&vision.proj, embed, width)?,
            width,
            embed,
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }
    pub fn embed(&self) -> usize {
        self.embed
    }

    /// `z = ln_post(x) @ proj`, `x: [rows, d]` → `[rows, e]`: the tail of the adaptor, and on
    /// its own the "no adaptor" ablation.
    pub fn forward(&self, be: &B, x: &B::Buf, rows: usize) -> Result<B::Buf> {
        let mut normed = be.zeros(rows * self.width)?;
        be.layer_norm(
            &mut normed,
            x,
            &self.ln_w,
            &self.ln_b,
            rows,
            self.width,
            LN_EPS,
        )?;
        let mut z = be.zeros(rows * self.embed)?;
        be.linear(&mut z, &normed, &self.proj, None, Epilogue::Store, rows)?;
        Ok(z)
    }
}

/// The adaptor's weights as the forward reads them, borrowed from their owner.
pub struct AdaptorWeights<'a, B: Backend> {
    pub norm_w: &'a B::Buf,
    pub norm_b: &'a B::Buf,
    /// `[3*512, d]`: to_q, to_k, to_v stacked, so one GEMM yields the packed q|k|v layout.
    pub qkv: &'a B::Mat,
    /// `[d, 512]`
    pub out: &'a B::Mat,
    pub out_b: &'a B::Buf,
}

/// The intermediate values of one forward that the training backward reads.
pub struct Activations<B: Backend> {
    /// `[rows, d]`: `LN(c)`.
    pub h: B::Buf,
    /// `[rows, 3*512]`
    pub qkv: B::Buf,
    /// `[rows, 512]`
    pub attn: B::Buf,
    /// `[rows, d]`: the adaptor's output before `ln_post`.
    pub out: B::Buf,
}

impl<B: Backend> AdaptorWeights<'_, B> {
    /// `c: [batch, tokens, d]` → `z: [batch, tokens, e]`, with the [`Activations`] when `keep`
    /// (otherwise each intermediate is freed as soon as it is consumed).
    pub fn forward(
        &self,
        be: &B,
        post: &PostProj<B>,
        c: &B::Buf,
        (batch, tokens): (usize, usize),
        keep: bool,
    ) -> Result<(B::Buf, Option<Activations<B>>)> {
        let rows = batch * tokens;
        let d = post.width;
        let mut h = be.zeros(rows * d)?;
        be.layer_norm(&mut h, c, self.norm_w, self.norm_b, rows, d, LN_EPS)?;
        let mut qkv = be.zeros(rows * 3 * ADAPTOR_INNER)?;
        be.linear(&mut qkv, &h, self.qkv, None, Epilogue::Store, rows)?;
        let h = keep.then_some(h);
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
        let qkv = keep.then_some(qkv);
        let mut out = be.zeros(rows * d)?;
        be.linear(
            &mut out,
            &attn,
            self.out,
            Some(self.out_b),
            Epilogue::Store,
            rows,
        )?;
        let z = post.forward(be, &out, rows)?;
        let acts = match (h, qkv) {
            (Some(h), Some(qkv)) => Some(Activations { h, qkv, attn, out }),
            _ => None,
        };
        Ok((z, acts))
    }
}

/// The scorer's adaptor: a head's weights uploaded once.
pub struct Adaptor<B: Backend> {
    norm_w: B::Buf,
    norm_b: B::Buf,
    qkv: B::Mat,
    out: B::Mat,
    out_b: B::Buf,
    post: PostProj<B>,
}

impl<B: Backend> Adaptor<B> {
    pub fn upload(be: &B, head: &Head, vision: &VisionWeights, embed: usize) -> Result<Self> {
        let d = head.width;
        let mut qkv = Vec::with_capacity(3 * ADAPTOR_INNER * d);
        qkv.extend_from_slice(&head.to_q);
        qkv.extend_from_slice(&head.to_k);
        qkv.extend_from_slice(&head.to_v);
        Ok(Self {
            norm_w: be.upload(&head.norm_w)?,
            norm_b: be.upload(&head.norm_b)?,
            qkv: be.upload_mat(&qkv, 3 * ADAPTOR_INNER, d)?,
            out: be.upload_mat(&head.to_out_w, d, ADAPTOR_INNER)?,
            out_b: be.upload(&head.to_out_b)?,
            post: PostProj::upload(be, vision, d, embed)?,
        })
    }

    /// `c: [batch, tokens, d]` → `z: [batch, tokens, e]`.
    pub fn forward(&self, be: &B, c: &B::Buf, batch: usize, tokens: usize) -> Result<B::Buf> {
        let weights = AdaptorWeights {
            norm_w: &self.norm_w,
            norm_b: &self.norm_b,
            qkv: &self.qkv,
            out: &self.out,
            out_b: &self.out_b,
        };
        let (z, _) = weights.forward(be, &self.post, c, (batch, tokens), false)?;
        Ok(z)
    }

    /// `z = ln_post(c) @ proj`, `c: [batch, tokens, d]`: the "no adaptor" ablation.
    pub fn project(&self, be: &B, c: &B::Buf, batch: usize, tokens: usize) -> Result<B::Buf> {
        self.post.forward(be, c, batch * tokens)
    }
}
