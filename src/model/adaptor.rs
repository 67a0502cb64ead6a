//! The AF-CLIP adaptor followed by the frozen `ln_post` and `visual.proj` (SPEC §4):
//! `z = ln_post(attn(LN(c)) Wo + bo) @ proj`, 8 heads of 64 over all tokens, no residual.

use super::checkpoint::VisionWeights;
use super::head::{Head, ADAPTOR_HEADS, ADAPTOR_INNER};
use super::transformer::{HEAD_DIM, LN_EPS};
use crate::backend::{Backend, Epilogue};
use anyhow::Result;

pub struct Adaptor<B: Backend> {
    norm_w: B::Buf,
    norm_b: B::Buf,
    /// `[3*512, d]`: to_q, to_k, to_v stacked, so one GEMM yields the packed q|k|v layout.
    qkv: B::Mat,
    out: B::Mat,
    out_b: B::Buf,
    ln_post_w: B::Buf,
    ln_post_b: B::Buf,
    proj: B::Mat,
    width: usize,
    embed: usize,
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
            ln_post_w: be.upload(&vision.ln_post_w)?,
            ln_post_b: be.upload(&vision.ln_post_b)?,
            proj: be.upload_mat(&vision.proj, embed, d)?,
            width: d,
            embed,
        })
    }

    /// `c: [batch, tokens, d]` → `z: [batch, tokens, e]`.
    pub fn forward(&self, be: &B, c: &B::Buf, batch: usize, tokens: usize) -> Result<B::Buf> {
        let rows = batch * tokens;
        let d = self.width;
        let mut normed = be.zeros(rows * d)?;
        be.layer_norm(&mut normed, c, &self.norm_w, &self.norm_b, rows, d, LN_EPS)?;
        let mut qkv = be.zeros(rows * 3 * ADAPTOR_INNER)?;
        be.linear(&mut qkv, &normed, &self.qkv, None, Epilogue::Store, rows)?;
        drop(normed);
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
        drop(qkv);
        let mut out = be.zeros(rows * d)?;
        be.linear(
            &mut out,
            &attn,
            &self.out,
            Some(&self.out_b),
            Epilogue::Store,
            rows,
        )?;
        self.project(be, &out, batch, tokens)
    }

    /// `z = ln_post(c) @ proj`, `c: [batch, tokens, d]`: the tail of [`Adaptor::forward`], and
    /// on its own the "no adaptor" ablation.
    pub fn project(&self, be: &B, c: &B::Buf, batch: usize, tokens: usize) -> Result<B::Buf> {
        let rows = batch * tokens;
        let mut normed = be.zeros(rows * self.width)?;
        be.layer_norm(
            &mut normed,
            c,
            &self.ln_post_w,
            &self.ln_post_b,
            rows,
            self.width,
            LN_EPS,
        )?;
        let mut z = be.zeros(rows * self.embed)?;
        be.linear(&mut z, &normed, &self.proj, None, Epilogue::Store, rows)?;
        Ok(z)
    }
}
