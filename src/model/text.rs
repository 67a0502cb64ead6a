//! The frozen CLIP text tower with AF-CLIP's learnable state prompts (SPEC §5), or the fixed
//! sentences of the paper's Table 4 "Base" ablation. Run once per model, not per batch.

use super::checkpoint::{ClipConfig, TextWeights};
use super::head::{Head, Prompts};
use super::tokenizer::ClipTokenizer;
use super::transformer::{Block, LN_EPS};
use crate::backend::Backend;
use anyhow::{bail, Result};

/// `"without defect."` and `"with defect."` (SPEC §5).
pub const STATE_SENTENCES: [&str; 2] = ["without defect.", "with defect."];
/// The fixed prompts of the Table 4 ablation (no learnable vectors before them).
pub const FIXED_SENTENCES: [&str; 2] = [
    "a photo of an object without defect.",
    "a photo of an object with defect.",
];

/// The sentences `prompts` scores with, as token ids (normal, abnormal).
pub fn sentence_ids(tokenizer: &ClipTokenizer, prompts: Prompts) -> Result<Vec<Vec<u32>>> {
    let sentences = match prompts {
        Prompts::Learned => STATE_SENTENCES,
        Prompts::Fixed => FIXED_SENTENCES,
    };
    sentences.iter().map(|s| tokenizer.encode(s)).collect()
}

/// The text features `head` scores with: its prompt before [`STATE_SENTENCES`], or
/// [`FIXED_SENTENCES`] alone when it uses fixed prompts.
pub fn head_text_features<B: Backend>(
    be: &B,
    cfg: &ClipConfig,
    w: &TextWeights,
    head: &Head,
    tokenizer: &ClipTokenizer,
) -> Result<Vec<f32>> {
    let ids = sentence_ids(tokenizer, head.prompts)?;
    let prompt: &[f32] = match head.prompts {
        Prompts::Learned => &head.prompt,
        Prompts::Fixed => &[],
    };
    state_text_features(be, cfg, w, prompt, &ids)
}

/// Text features `[2, e]` (normal, abnormal), L2-normalised.
/// `prompt: [p, t]`: `p` vectors before the SOT embedding (12 learned, or none for fixed
/// prompts); `ids`: one token sequence per sentence, `[SOT, ..., EOT]`. The EOT is the row at
/// `p + argmax(ids)`.
pub fn state_text_features<B: Backend>(
    be: &B,
    cfg: &ClipConfig,
    w: &TextWeights,
    prompt: &[f32],
    ids: &[Vec<u32>],
) -> Result<Vec<f32>> {
    let (t, ctx, e) = (cfg.text_width, cfg.context, cfg.embed_dim);
    if !prompt.len().is_multiple_of(t) {
        bail!(
            "prompt has {} values, not a whole number of vectors of the text width {t}",
            prompt.len()
        );
    }
    let prefix = prompt.len() / t;
    let n = ids.len();
    let mut x = vec![0.0f32; n * ctx * t];
    let mut eot = Vec::with_capacity(n);
    for (s, seq) in ids.iter().enumerate() {
        if let Some(&bad) = seq.iter().find(|&&id| id as usize >= cfg.vocab) {
            bail!(
                "token id {bad} is outside the model's vocabulary of {}",
                cfg.vocab
            );
        }
        // Padded ids (0) after the sentence; the EOT has the largest id, as in CLIP.
        let mut padded = seq.clone();
        padded.resize(ctx.max(seq.len()), 0);
        let argmax = padded
            .iter()
            .enumerate()
            .max_by_key(|&(i, &id)| (id, std::cmp::Reverse(i)))
            .map(|(i, _)| i)
            .unwrap_or(0);
        let pos = prefix + argmax;
        if pos >= ctx {
            bail!(
                "prompt of {prefix} vectors plus {} tokens exceeds the context of {ctx}",
                seq.len()
            );
        }
        eot.push(pos);
        let rows = x[s * ctx * t..(s + 1) * ctx * t].chunks_exact_mut(t);
        for (j, row) in rows.enumerate() {
            let src = if j < prefix {
                &prompt[j * t..(j + 1) * t]
            } else {
                let id = padded[j - prefix] as usize;
                &w.token_embedding[id * t..(id + 1) * t]
            };
            let pe = &w.pos[j * t..(j + 1) * t];
            for ((o, a), b) in row.iter_mut().zip(src).zip(pe) {
                *o = a + b;
            }
        }
    }
    let blocks: Vec<Block<B>> = w
        .blocks
        .iter()
        .map(|b| Block::upload(be, b, t, cfg.text_mlp, false))
        .collect::<Result<_>>()?;
    let mut xb = be.upload(&x)?;
    let mut scratch = blocks[0].scratch(be, n * ctx)?;
    for block in &blocks {
        block.forward(be, &mut xb, &mut scratch, n, ctx, true)?;
    }
    let mut normed = be.zeros(n * ctx * t)?;
    let gamma = be.upload(&w.ln_final_w)?;
    let beta = be.upload(&w.ln_final_b)?;
    be.layer_norm(&mut normed, &xb, &gamma, &beta, n * ctx, t, LN_EPS)?;
    let normed = be.download(&normed)?;
    let mut out = vec![0.0f32; n * e];
    for (s, &pos) in eot.iter().enumerate() {
        let v = &normed[(s * ctx + pos) * t..(s * ctx + pos + 1) * t];
        let o = &mut out[s * e..(s + 1) * e];
        for (k, ok) in o.iter_mut().enumerate() {
            *ok = w.proj[k * t..(k + 1) * t]
                .iter()
                .zip(v)
                .map(|(a, b)| a * b)
                .sum();
        }
        let norm = o.iter().map(|v| v * v).sum::<f32>().sqrt();
        o.iter_mut().for_each(|v| *v /= norm);
    }
    Ok(out)
}
