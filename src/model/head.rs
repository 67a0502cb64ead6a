//! The trainable AF-CLIP head (SPEC §4–5): 12 learnable prompt vectors and the adaptor.
//! Stored as safetensors with the official names; a head trained with the fixed-prompt
//! ablation says so in the file's metadata (`afclip.prompts = fixed`).

use super::checkpoint::ClipConfig;
use super::tensors::{write_f32_with_metadata, TensorFile};
use crate::rng::Rng;
use anyhow::{bail, Result};
use std::path::Path;

/// Number of learnable prompt vectors placed before the SOT embedding.
pub const PROMPT_LEN: usize = 12;
/// Inner width of the adaptor attention: 8 heads of 64.
pub const ADAPTOR_INNER: usize = 512;
pub const ADAPTOR_HEADS: usize = 8;

pub const PROMPT: &str = "state_prompt_embedding";
pub const NORM_W: &str = "adaptor.attention.norm.weight";
pub const NORM_B: &str = "adaptor.attention.norm.bias";
pub const TO_Q: &str = "adaptor.attention.attn.to_q.weight";
pub const TO_K: &str = "adaptor.attention.attn.to_k.weight";
pub const TO_V: &str = "adaptor.attention.attn.to_v.weight";
pub const TO_OUT_W: &str = "adaptor.attention.attn.to_out.0.weight";
pub const TO_OUT_B: &str = "adaptor.attention.attn.to_out.0.bias";
/// Metadata key of the prompt kind: `learned` or `fixed` (absent = learned).
pub const PROMPTS_KEY: &str = "afclip.prompts";

/// Which text features score a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prompts {
    /// The 12 learnable vectors before the state sentences (SPEC §5).
    Learned,
    /// The fixed sentences of the paper's Table 4 "Base" row, no learnable vectors: the head's
    /// prompt tensor is unused and does not train.
    Fixed,
}

impl Prompts {
    /// The value stored under [`PROMPTS_KEY`].
    pub fn name(self) -> &'static str {
        match self {
            Prompts::Learned => "learned",
            Prompts::Fixed => "fixed",
        }
    }

    /// The prompt kind `file`'s [`PROMPTS_KEY`] metadata records; files without it predate
    /// the fixed-prompt ablation and hold learned prompts.
    pub fn recorded_in(file: &TensorFile, path: &Path) -> Result<Prompts> {
        match file.metadata(PROMPTS_KEY).as_deref() {
            None | Some("learned") => Ok(Prompts::Learned),
            Some("fixed") => Ok(Prompts::Fixed),
            Some(other) => bail!(
                "{}: metadata {PROMPTS_KEY} is {other:?}, expected \"learned\" or \"fixed\"",
                path.display()
            ),
        }
    }
}

pub struct Head {
    /// Vision width `d` the adaptor works on.
    pub width: usize,
    /// Text width `t` of the prompt vectors.
    pub text_width: usize,
    /// `[12, t]`
    pub prompt: Vec<f32>,
    pub norm_w: Vec<f32>,
    pub norm_b: Vec<f32>,
    /// `[512, d]` each
    pub to_q: Vec<f32>,
    pub to_k: Vec<f32>,
    pub to_v: Vec<f32>,
    /// `[d, 512]`
    pub to_out_w: Vec<f32>,
    pub to_out_b: Vec<f32>,
    pub prompts: Prompts,
}

impl Head {
    /// Reads a head file and checks it fits `config`'s vision and text widths.
    pub fn load(path: &Path, config: &ClipConfig) -> Result<Self> {
        let file = TensorFile::open(path)?;
        let (d, t) = (config.vision_width, config.text_width);
        if let Some(shape) = file.shape(NORM_W) {
            if shape != [d] {
                bail!(
                    "{}: head was made for vision width {:?} but the model's width is {d} \
                     (tensor {NORM_W} has shape {shape:?})",
                    path.display(),
                    shape.first()
                );
            }
        }
        if let Some(shape) = file.shape(PROMPT) {
            if shape.len() == 3 && shape[2] != t {
                bail!(
                    "{}: head prompt has text width {} but the model's text width is {t} \
                     (tensor {PROMPT} has shape {shape:?}, expected [1, {PROMPT_LEN}, {t}])",
                    path.display(),
                    shape[2]
                );
            }
        }
        let prompts = Prompts::recorded_in(&file, path)?;
        Ok(Self {
            width: d,
            text_width: t,
            prompts,
            prompt: file.read(PROMPT, &[1, PROMPT_LEN, t])?,
            norm_w: file.read(NORM_W, &[d])?,
            norm_b: file.read(NORM_B, &[d])?,
            to_q: file.read(TO_Q, &[ADAPTOR_INNER, d])?,
            to_k: file.read(TO_K, &[ADAPTOR_INNER, d])?,
            to_v: file.read(TO_V, &[ADAPTOR_INNER, d])?,
            to_out_w: file.read(TO_OUT_W, &[d, ADAPTOR_INNER])?,
            to_out_b: file.read(TO_OUT_B, &[d])?,
        })
    }

    /// A fresh head with torch's default initialisation (SPEC §4–5): prompt normal(0, 0.01),
    /// Linear weights and bias uniform in ±1/sqrt(fan_in), LayerNorm 1 and 0. The numbers come
    /// from afclip's own PRNG, so they are deterministic for `seed` but not torch's draws.
    pub fn init(config: &ClipConfig, seed: u64) -> Self {
        let (d, t) = (config.vision_width, config.text_width);
        let mut rng = Rng::new(seed);
        let mut uniform = |n: usize, fan_in: usize| -> Vec<f32> {
            let bound = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| rng.symmetric(bound)).collect()
        };
        let to_q = uniform(ADAPTOR_INNER * d, d);
        let to_k = uniform(ADAPTOR_INNER * d, d);
        let to_v = uniform(ADAPTOR_INNER * d, d);
        let to_out_w = uniform(d * ADAPTOR_INNER, ADAPTOR_INNER);
        let to_out_b = uniform(d, ADAPTOR_INNER);
        let prompt = (0..PROMPT_LEN * t).map(|_| 0.01 * rng.normal()).collect();
        Self {
            width: d,
            text_width: t,
            prompt,
            norm_w: vec![1.0; d],
            norm_b: vec![0.0; d],
            to_q,
            to_k,
            to_v,
            to_out_w,
            to_out_b,
            prompts: Prompts::Learned,
        }
    }

    /// Applies `--fixed-prompts` (`fixed`) to this head, loaded from `file` (`None`: a fresh
    /// head). A head file is scored with the prompts it was trained with, whatever the flag
    /// says, except that the flag on a file trained with learnable prompts is an error: it would
    /// throw away the trained prompt. On a fresh head the flag selects the fixed prompts.
    pub fn select_prompts(&mut self, fixed: bool, file: Option<&Path>) -> Result<()> {
        match (fixed, self.prompts, file) {
            (true, Prompts::Learned, Some(path)) => bail!(
                "{}: this head was trained with learnable prompts (no {PROMPTS_KEY} = fixed in \
                 its metadata); --fixed-prompts would discard its trained prompt. Drop the \
                 flag, or use a head trained with `afclip train --fixed-prompts`",
                path.display()
            ),
            (true, _, _) => self.prompts = Prompts::Fixed,
            (false, _, _) => {}
        }
        Ok(())
    }

    /// Trainable parameters: 2,109,440 for ViT-L (SPEC §4).
    pub fn parameter_count(&self) -> usize {
        self.prompt.len()
            + self.norm_w.len()
            + self.norm_b.len()
            + self.to_q.len()
            + self.to_k.len()
            + self.to_v.len()
            + self.to_out_w.len()
            + self.to_out_b.len()
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let (d, t) = (self.width, self.text_width);
        write_f32_with_metadata(
            path,
            &[
                (PROMPT.into(), vec![1, PROMPT_LEN, t], &self.prompt),
                (NORM_W.into(), vec![d], &self.norm_w),
                (NORM_B.into(), vec![d], &self.norm_b),
                (TO_Q.into(), vec![ADAPTOR_INNER, d], &self.to_q),
                (TO_K.into(), vec![ADAPTOR_INNER, d], &self.to_k),
                (TO_V.into(), vec![ADAPTOR_INNER, d], &self.to_v),
                (TO_OUT_W.into(), vec![d, ADAPTOR_INNER], &self.to_out_w),
                (TO_OUT_B.into(), vec![d], &self.to_out_b),
            ],
            &[(PROMPTS_KEY, self.prompts.name())],
        )
    }
}
