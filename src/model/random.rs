//! Randomly initialised CLIP checkpoints of the standard sizes, for tests, benches and the
//! no-download demo. Weights are scaled so activations stay O(1) through the towers.

use super::checkpoint::{BlockWeights, Checkpoint, ClipConfig, Naming, TextWeights, VisionWeights};
use super::tensors::write_f32;
use crate::rng::Rng;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Named model sizes: `tiny` (SPEC §13's demo model), `vit-b-16`, `vit-l-14`, `vit-l-14-336`.
pub fn preset(name: &str) -> Result<ClipConfig> {
    let (vw, vl, patch, grid, tw, tl, e) = match name {
        "tiny" => (128, 4, 14, 8, 64, 2, 64),
        "vit-b-16" => (768, 12, 16, 14, 512, 12, 512),
        "vit-l-14" => (1024, 24, 14, 16, 768, 12, 768),
        "vit-l-14-336" => (1024, 24, 14, 24, 768, 12, 768),
        other => bail!("unknown model preset {other:?} (tiny, vit-b-16, vit-l-14, vit-l-14-336)"),
    };
    Ok(ClipConfig {
        vision_width: vw,
        vision_layers: vl,
        vision_heads: vw / 64,
        vision_mlp: 4 * vw,
        patch,
        trained_grid: grid,
        embed_dim: e,
        text_width: tw,
        text_layers: tl,
        text_heads: tw / 64,
        text_mlp: 4 * tw,
        context: 77,
        vocab: 49408,
    })
}

struct Filler(Rng);

impl Filler {
    fn normal(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n).map(|_| std * self.0.normal()).collect()
    }
    fn around_one(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| 1.0 + 0.05 * self.0.normal()).collect()
    }
    fn matrix(&mut self, out: usize, inp: usize) -> Vec<f32> {
        self.normal(out * inp, 1.0 / (inp as f32).sqrt())
    }
    fn block(&mut self, w: usize, mlp: usize) -> BlockWeights {
        BlockWeights {
            ln1_w: self.around_one(w),
            ln1_b: self.normal(w, 0.02),
            in_proj_w: self.matrix(3 * w, w),
            in_proj_b: self.normal(3 * w, 0.02),
            out_w: self.normal(w * w, 0.5 / (w as f32).sqrt()),
            out_b: self.normal(w, 0.02),
            ln2_w: self.around_one(w),
            ln2_b: self.normal(w, 0.02),
            fc_w: self.matrix(mlp, w),
            fc_b: self.normal(mlp, 0.02),
            proj_w: self.normal(w * mlp, 0.5 / (mlp as f32).sqrt()),
            proj_b: self.normal(w, 0.02),
        }
    }
}

pub fn random_checkpoint(config: &ClipConfig, seed: u64) -> Checkpoint {
    let c = config;
    let mut f = Filler(Rng::new(seed));
    let (vw, tw, e) = (c.vision_width, c.text_width, c.embed_dim);
    let vision = VisionWeights {
        conv: f.matrix(vw, 3 * c.patch * c.patch),
        cls: f.normal(vw, 0.5),
        pos: f.normal((c.trained_grid * c.trained_grid + 1) * vw, 0.5),
        ln_pre_w: f.around_one(vw),
        ln_pre_b: f.normal(vw, 0.02),
        blocks: (0..c.vision_layers)
            .map(|_| f.block(vw, c.vision_mlp))
            .collect(),
        ln_post_w: f.around_one(vw),
        ln_post_b: f.normal(vw, 0.02),
        proj: f.matrix(e, vw),
    };
    let text = TextWeights {
        token_embedding: f.normal(c.vocab * tw, 0.5),
        pos: f.normal(c.context * tw, 0.1),
        blocks: (0..c.text_layers)
            .map(|_| f.block(tw, c.text_mlp))
            .collect(),
        ln_final_w: f.around_one(tw),
        ln_final_b: f.normal(tw, 0.02),
        proj: f.matrix(e, tw),
    };
    Checkpoint {
        path: PathBuf::from(format!("<random seed {seed}>")),
        naming: Naming::OpenAi,
        config: c.clone(),
        vision,
        text,
    }
}

fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; m.len()];
    for r in 0..rows {
        for col in 0..cols {
            t[col * rows + r] = m[r * cols + col];
        }
    }
    t
}

/// Writes `ckpt` in OpenAI naming (f32).
pub fn save_openai(ckpt: &Checkpoint, path: &Path) -> Result<()> {
    let c = &ckpt.config;
    let (v, t) = (&ckpt.vision, &ckpt.text);
    let (vw, tw, e, p) = (c.vision_width, c.text_width, c.embed_dim, c.patch);
    let vproj = transpose(&v.proj, e, vw);
    let tproj = transpose(&t.proj, e, tw);
    let mut list: Vec<(String, Vec<usize>, &[f32])> = vec![
        ("visual.conv1.weight".into(), vec![vw, 3, p, p], &v.conv),
        ("visual.class_embedding".into(), vec![vw], &v.cls),
        (
            "visual.positional_embedding".into(),
            vec![c.trained_grid * c.trained_grid + 1, vw],
            &v.pos,
        ),
        ("visual.ln_pre.weight".into(), vec![vw], &v.ln_pre_w),
        ("visual.ln_pre.bias".into(), vec![vw], &v.ln_pre_b),
        ("visual.ln_post.weight".into(), vec![vw], &v.ln_post_w),
        ("visual.ln_post.bias".into(), vec![vw], &v.ln_post_b),
        ("visual.proj".into(), vec![vw, e], &vproj),
        (
            "token_embedding.weight".into(),
            vec![c.vocab, tw],
            &t.token_embedding,
        ),
        ("positional_embedding".into(), vec![c.context, tw], &t.pos),
        ("ln_final.weight".into(), vec![tw], &t.ln_final_w),
        ("ln_final.bias".into(), vec![tw], &t.ln_final_b),
        ("text_projection".into(), vec![tw, e], &tproj),
    ];
    let blocks = v
        .blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            (
                format!("visual.transformer.resblocks.{i}"),
                b,
                vw,
                c.vision_mlp,
            )
        })
        .chain(
            t.blocks
                .iter()
                .enumerate()
                .map(|(i, b)| (format!("transformer.resblocks.{i}"), b, tw, c.text_mlp)),
        );
    for (prefix, b, w, mlp) in blocks {
        let entries: [(&str, Vec<usize>, &[f32]); 12] = [
            ("ln_1.weight", vec![w], &b.ln1_w),
            ("ln_1.bias", vec![w], &b.ln1_b),
            ("attn.in_proj_weight", vec![3 * w, w], &b.in_proj_w),
            ("attn.in_proj_bias", vec![3 * w], &b.in_proj_b),
            ("attn.out_proj.weight", vec![w, w], &b.out_w),
            ("attn.out_proj.bias", vec![w], &b.out_b),
            ("ln_2.weight", vec![w], &b.ln2_w),
            ("ln_2.bias", vec![w], &b.ln2_b),
            ("mlp.c_fc.weight", vec![mlp, w], &b.fc_w),
            ("mlp.c_fc.bias", vec![mlp], &b.fc_b),
            ("mlp.c_proj.weight", vec![w, mlp], &b.proj_w),
            ("mlp.c_proj.bias", vec![w], &b.proj_b),
        ];
        for (name, shape, data) in entries {
            list.push((format!("{prefix}.{name}"), shape, data));
        }
    }
    write_f32(path, &list)
}
