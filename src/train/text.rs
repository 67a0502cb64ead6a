//! The frozen text tower with its learnable prompt, forward with saved activations and
//! backward down to the prompt vectors (SPEC §5, §8).
//!
//! Forward, per sentence `s` (rows `[ctx, t]`): `x = concat(P, E[ids])[:ctx] + pos` (`P`: 12
//! learnable vectors, or none for the fixed-prompt ablation); per block
//! `n1 = ln_1(x)`, `qkv = n1 W_inᵀ + b`, `a = attn_causal(qkv)`, `x1 = x + a W_oᵀ + b_o`,
//! `n2 = ln_2(x1)`, `u = n2 W_fcᵀ + b_fc`, `x2 = x1 + quick_gelu(u) W_projᵀ + b_proj`; then
//! `ln_final`, the EOT row, `y = text_projection · v`, `t_s = y / |y|`.
//!
//! Backward from `dt: [2, e]`: through the normalisation and projection on the host (two
//! vectors), `ln_final`, then every block in reverse (weights frozen: input gradients only),
//! and `dP = Σ_s dx_s[0..p]`.

use crate::backend::{Backend, Epilogue};
use crate::model::checkpoint::{BlockWeights, ClipConfig, TextWeights};
use crate::model::transformer::{HEAD_DIM, LN_EPS};
use anyhow::{bail, Result};

struct TextBlock<B: Backend> {
    ln1_w: B::Buf,
    ln1_b: B::Buf,
    in_mat: B::Mat,
    in_w: B::Buf,
    in_b: B::Buf,
    out_mat: B::Mat,
    out_w: B::Buf,
    out_b: B::Buf,
    ln2_w: B::Buf,
    ln2_b: B::Buf,
    fc_mat: B::Mat,
    fc_w: B::Buf,
    fc_b: B::Buf,
    proj_mat: B::Mat,
    proj_w: B::Buf,
    proj_b: B::Buf,
}

impl<B: Backend> TextBlock<B> {
    fn upload(be: &B, w: &BlockWeights, width: usize, mlp: usize) -> Result<Self> {
        Ok(Self {
            ln1_w: be.upload(&w.ln1_w)?,
            ln1_b: be.upload(&w.ln1_b)?,
            in_mat: be.upload_mat(&w.in_proj_w, 3 * width, width)?,
            in_w: be.upload(&w.in_proj_w)?,
            in_b: be.upload(&w.in_proj_b)?,
            out_mat: be.upload_mat(&w.out_w, width, width)?,
            out_w: be.upload(&w.out_w)?,
            out_b: be.upload(&w.out_b)?,
            ln2_w: be.upload(&w.ln2_w)?,
            ln2_b: be.upload(&w.ln2_b)?,
            fc_mat: be.upload_mat(&w.fc_w, mlp, width)?,
            fc_w: be.upload(&w.fc_w)?,
            fc_b: be.upload(&w.fc_b)?,
            proj_mat: be.upload_mat(&w.proj_w, width, mlp)?,
            proj_w: be.upload(&w.proj_w)?,
            proj_b: be.upload(&w.proj_b)?,
        })
    }
}

/// What one block's backward needs.
struct BlockActs<B: Backend> {
    x: B::Buf,
    qkv: B::Buf,
    x1: B::Buf,
    u: B::Buf,
}

pub struct TextActs<B: Backend> {
    blocks: Vec<BlockActs<B>>,
    /// Residual stream after the last block.
    last: B::Buf,
    /// The projected EOT rows before normalising, `[2, e]`.
    y: Vec<f32>,
    /// `[2, e]`, L2-normalised.
    pub features: Vec<f32>,
}

pub struct TrainText<B: Backend> {
    blocks: Vec<TextBlock<B>>,
    ln_final_w: B::Buf,
    ln_final_b: B::Buf,
    /// `[sentences, ctx, t]`: token embeddings + positions of the non-prompt rows (prompt rows
    /// hold only the position embedding; the prompt is added per step).
    base: Vec<f32>,
    /// `[e, t]`
    proj: Vec<f32>,
    eot: Vec<usize>,
    /// Prompt vectors before each sentence.
    prefix: usize,
    t: usize,
    e: usize,
    ctx: usize,
    mlp: usize,
}

impl<B: Backend> TrainText<B> {
    /// `prefix` prompt vectors (12, or 0 for fixed prompts) before each sentence `ids`.
    pub fn new(
        be: &B,
        cfg: &ClipConfig,
        w: &TextWeights,
        ids: &[Vec<u32>],
        prefix: usize,
    ) -> Result<Self> {
        let (t, ctx) = (cfg.text_width, cfg.context);
        let mut base = vec![0f32; ids.len() * ctx * t];
        let mut eot = Vec::with_capacity(ids.len());
        for (s, seq) in ids.iter().enumerate() {
            if let Some(&bad) = seq.iter().find(|&&id| id as usize >= cfg.vocab) {
                bail!(
                    "token id {bad} is outside the model's vocabulary of {}",
                    cfg.vocab
                );
            }
            let mut padded = seq.clone();
            padded.resize(ctx.max(seq.len()), 0);
            let argmax = padded
                .iter()
                .enumerate()
                .max_by_key(|&(i, &id)| (id, std::cmp::Reverse(i)))
                .map_or(0, |(i, _)| i);
            if prefix + argmax >= ctx {
                bail!(
                    "prompt of {prefix} vectors plus {} tokens exceeds the context of {ctx}",
                    seq.len()
                );
            }
            eot.push(prefix + argmax);
            for (j, row) in base[s * ctx * t..(s + 1) * ctx * t]
                .chunks_exact_mut(t)
                .enumerate()
            {
                let pe = &w.pos[j * t..(j + 1) * t];
                if j < prefix {
                    row.copy_from_slice(pe);
                } else {
                    let id = padded[j - prefix] as usize;
                    let emb = &w.token_embedding[id * t..(id + 1) * t];
                    for ((o, a), b) in row.iter_mut().zip(emb).zip(pe) {
                        *o = a + b;
                    }
                }
            }
        }
        Ok(Self {
            blocks: w
                .blocks
                .iter()
                .map(|b| TextBlock::upload(be, b, t, cfg.text_mlp))
                .collect::<Result<_>>()?,
            ln_final_w: be.upload(&w.ln_final_w)?,
            ln_final_b: be.upload(&w.ln_final_b)?,
            base,
            proj: w.proj.clone(),
            eot,
            prefix,
            t,
            e: cfg.embed_dim,
            ctx,
            mlp: cfg.text_mlp,
        })
    }

    fn sentences(&self) -> usize {
        self.eot.len()
    }

    /// Text features for `prompt: [p, t]`, keeping what [`TrainText::backward`] needs.
    pub fn forward(&self, be: &B, prompt: &[f32]) -> Result<TextActs<B>> {
        let (t, ctx, n, p) = (self.t, self.ctx, self.sentences(), self.prefix);
        if prompt.len() != p * t {
            bail!("prompt has {} values, expected [{p}, {t}]", prompt.len());
        }
        let mut x0 = self.base.clone();
        for s in 0..n {
            for (o, v) in x0[s * ctx * t..s * ctx * t + p * t].iter_mut().zip(prompt) {
                // The base row holds the position embedding.
                *o += v;
            }
        }
        let rows = n * ctx;
        let heads = t / HEAD_DIM;
        let mut x = be.upload(&x0)?;
        let mut acts = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let mut n1 = be.zeros(rows * t)?;
            be.layer_norm(&mut n1, &x, &b.ln1_w, &b.ln1_b, rows, t, LN_EPS)?;
            let mut qkv = be.zeros(rows * 3 * t)?;
            be.linear(
                &mut qkv,
                &n1,
                &b.in_mat,
                Some(&b.in_b),
                Epilogue::Store,
                rows,
            )?;
            let mut attn = be.zeros(rows * t)?;
            be.attention(&mut attn, &qkv, n, ctx, heads, HEAD_DIM, true)?;
            let mut x1 = be.upload(&be.download(&x)?)?;
            be.linear(
                &mut x1,
                &attn,
                &b.out_mat,
                Some(&b.out_b),
                Epilogue::Accumulate,
                rows,
            )?;
            let mut n2 = be.zeros(rows * t)?;
            be.layer_norm(&mut n2, &x1, &b.ln2_w, &b.ln2_b, rows, t, LN_EPS)?;
            let mut u = be.zeros(rows * self.mlp)?;
            be.linear(&mut u, &n2, &b.fc_mat, Some(&b.fc_b), Epilogue::Store, rows)?;
            let mut hidden = be.zeros(rows * self.mlp)?;
            be.quick_gelu(&mut hidden, &u, rows * self.mlp)?;
            let mut x2 = be.upload(&be.download(&x1)?)?;
            be.linear(
                &mut x2,
                &hidden,
                &b.proj_mat,
                Some(&b.proj_b),
                Epilogue::Accumulate,
                rows,
            )?;
            acts.push(BlockActs { x, qkv, x1, u });
            x = x2;
        }
        let mut normed = be.zeros(rows * t)?;
        be.layer_norm(
            &mut normed,
            &x,
            &self.ln_final_w,
            &self.ln_final_b,
            rows,
            t,
            LN_EPS,
        )?;
        let normed = be.download(&normed)?;
        let e = self.e;
        let mut y = vec![0f32; n * e];
        let mut features = vec![0f32; n * e];
        for (s, &pos) in self.eot.iter().enumerate() {
            let v = &normed[(s * ctx + pos) * t..(s * ctx + pos + 1) * t];
            let ys = &mut y[s * e..(s + 1) * e];
            for (k, yk) in ys.iter_mut().enumerate() {
                *yk = self.proj[k * t..(k + 1) * t]
                    .iter()
                    .zip(v)
                    .map(|(a, b)| a * b)
                    .sum();
            }
            let norm = ys.iter().map(|v| v * v).sum::<f32>().sqrt();
            for (f, &v) in features[s * e..(s + 1) * e].iter_mut().zip(ys.iter()) {
                *f = v / norm;
            }
        }
        Ok(TextActs {
            blocks: acts,
            last: x,
            y,
            features,
        })
    }

    /// `∂L/∂prompt` `[p, t]` from `dfeatures = ∂L/∂features` `[2, e]`.
    pub fn backward(&self, be: &B, acts: &TextActs<B>, dfeatures: &[f32]) -> Result<Vec<f32>> {
        let (t, e, ctx, n) = (self.t, self.e, self.ctx, self.sentences());
        let rows = n * ctx;
        let heads = t / HEAD_DIM;
        let mut dnormed = vec![0f32; rows * t];
        for (s, &pos) in self.eot.iter().enumerate() {
            let y = &acts.y[s * e..(s + 1) * e];
            let g = &dfeatures[s * e..(s + 1) * e];
            let norm = y.iter().map(|v| v * v).sum::<f32>().sqrt();
            let gy = g.iter().zip(y).map(|(a, b)| a * b).sum::<f32>() / norm;
            // d(y/|y|): (g − <g, ŷ> ŷ) / |y|
            let dy: Vec<f32> = g
                .iter()
                .zip(y)
                .map(|(&gv, &yv)| (gv - gy * yv / norm) / norm)
                .collect();
            let dv = &mut dnormed[(s * ctx + pos) * t..(s * ctx + pos + 1) * t];
            for (k, &d) in dy.iter().enumerate() {
                for (o, &p) in dv.iter_mut().zip(&self.proj[k * t..(k + 1) * t]) {
                    *o += d * p;
                }
            }
        }
        let dnormed = be.upload(&dnormed)?;
        let mut dx = be.zeros(rows * t)?;
        be.layer_norm_backward(
            Some(&mut dx),
            None,
            &dnormed,
            &acts.last,
            &self.ln_final_w,
            rows,
            t,
            LN_EPS,
        )?;
        let mut dhidden = be.zeros(rows * self.mlp)?;
        let mut du = be.zeros(rows * self.mlp)?;
        let mut dn = be.zeros(rows * t)?;
        let mut dattn = be.zeros(rows * t)?;
        let mut dqkv = be.zeros(rows * 3 * t)?;
        for (b, a) in self.blocks.iter().zip(&acts.blocks).rev() {
            // x2 = x1 + quick_gelu(n2 W_fcᵀ + b) W_projᵀ + b
            be.matmul(
                &mut dhidden,
                &dx,
                &b.proj_w,
                (rows, t, self.mlp),
                false,
                false,
                false,
            )?;
            be.quick_gelu_backward(&mut du, &dhidden, &a.u, rows * self.mlp)?;
            be.matmul(
                &mut dn,
                &du,
                &b.fc_w,
                (rows, self.mlp, t),
                false,
                false,
                false,
            )?;
            be.layer_norm_backward(Some(&mut dx), None, &dn, &a.x1, &b.ln2_w, rows, t, LN_EPS)?;
            // x1 = x + attn(n1 W_inᵀ + b) W_oᵀ + b
            be.matmul(&mut dattn, &dx, &b.out_w, (rows, t, t), false, false, false)?;
            be.attention_backward(&mut dqkv, &dattn, &a.qkv, n, ctx, heads, HEAD_DIM, true)?;
            be.matmul(
                &mut dn,
                &dqkv,
                &b.in_w,
                (rows, 3 * t, t),
                false,
                false,
                false,
            )?;
            be.layer_norm_backward(Some(&mut dx), None, &dn, &a.x, &b.ln1_w, rows, t, LN_EPS)?;
        }
        let dx = be.download(&dx)?;
        let p = self.prefix;
        let mut dprompt = vec![0f32; p * t];
        for s in 0..n {
            for (o, &d) in dprompt
                .iter_mut()
                .zip(&dx[s * ctx * t..s * ctx * t + p * t])
            {
                *o += d;
            }
        }
        Ok(dprompt)
    }
}
