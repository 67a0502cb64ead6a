//! A pre-LN CLIP residual block on a backend: `x += attn(ln_1(x)); x += mlp(ln_2(x))`,
//! heads of 64, QuickGELU MLP, LayerNorm eps 1e-5. Shared by the vision and text towers.

use super::checkpoint::BlockWeights;
use crate::backend::{Backend, Epilogue};
use anyhow::Result;

pub const LN_EPS: f32 = 1e-5;
pub const HEAD_DIM: usize = 64;

pub struct Block<B: Backend> {
    ln1_w: B::Buf,
    ln1_b: B::Buf,
    in_proj: B::Mat,
    in_proj_b: B::Buf,
    out: B::Mat,
    out_b: B::Buf,
    ln2_w: B::Buf,
    ln2_b: B::Buf,
    fc: B::Mat,
    fc_b: B::Buf,
    proj: B::Mat,
    proj_b: B::Buf,
    width: usize,
    mlp: usize,
}

impl<B: Backend> Block<B> {
    /// `reduced`: store the matrices at the backend's reduced frozen-weight precision (the
    /// vision tower, where the time goes); the text tower runs once and keeps full precision.
    pub fn upload(
        be: &B,
        w: &BlockWeights,
        width: usize,
        mlp: usize,
        reduced: bool,
    ) -> Result<Self> {
        let mat = |m: &[f32], o: usize, i: usize| {
            if reduced {
                be.upload_frozen_mat(m, o, i)
            } else {
                be.upload_mat(m, o, i)
            }
        };
        Ok(Self {
            ln1_w: be.upload(&w.ln1_w)?,
            ln1_b: be.upload(&w.ln1_b)?,
            in_proj: mat(&w.in_proj_w, 3 * width, width)?,
            in_proj_b: be.upload(&w.in_proj_b)?,
            out: mat(&w.out_w, width, width)?,
            out_b: be.upload(&w.out_b)?,
            ln2_w: be.upload(&w.ln2_w)?,
            ln2_b: be.upload(&w.ln2_b)?,
            fc: mat(&w.fc_w, mlp, width)?,
            fc_b: be.upload(&w.fc_b)?,
            proj: mat(&w.proj_w, width, mlp)?,
            proj_b: be.upload(&w.proj_b)?,
            width,
            mlp,
        })
    }

    /// Updates `x: [batch, tokens, width]` in place.
    pub fn forward(
        &self,
        be: &B,
        x: &mut B::Buf,
        scratch: &mut BlockScratch<B>,
        batch: usize,
        tokens: usize,
        causal: bool,
    ) -> Result<()> {
        let rows = batch * tokens;
        let w = self.width;
        let s = scratch;
        be.layer_norm(&mut s.normed, x, &self.ln1_w, &self.ln1_b, rows, w, LN_EPS)?;
        be.linear(
            &mut s.qkv,
            &s.normed,
            &self.in_proj,
            Some(&self.in_proj_b),
            Epilogue::Store,
            rows,
        )?;
        be.attention(
            &mut s.attn,
            &s.qkv,
            batch,
            tokens,
            w / HEAD_DIM,
            HEAD_DIM,
            causal,
        )?;
        be.linear(
            x,
            &s.attn,
            &self.out,
            Some(&self.out_b),
            Epilogue::Accumulate,
            rows,
        )?;
        be.layer_norm(&mut s.normed, x, &self.ln2_w, &self.ln2_b, rows, w, LN_EPS)?;
        be.linear(
            &mut s.hidden,
            &s.normed,
            &self.fc,
            Some(&self.fc_b),
            Epilogue::QuickGelu,
            rows,
        )?;
        be.linear(
            x,
            &s.hidden,
            &self.proj,
            Some(&self.proj_b),
            Epilogue::Accumulate,
            rows,
        )
    }

    pub fn scratch(&self, be: &B, rows: usize) -> Result<BlockScratch<B>> {
        Ok(BlockScratch {
            normed: be.zeros(rows * self.width)?,
            qkv: be.zeros(rows * 3 * self.width)?,
            attn: be.zeros(rows * self.width)?,
            hidden: be.zeros(rows * self.mlp)?,
        })
    }
}

/// Activations a block needs besides the residual stream, reused across blocks.
pub struct BlockScratch<B: Backend> {
    normed: B::Buf,
    qkv: B::Buf,
    attn: B::Buf,
    hidden: B::Buf,
}
