//! Zero-shot AF-CLIP (SPEC §2–6): vision features at four layers, three aggregation scales,
//! the shared adaptor, cosine logits against the two state-prompt text features, summed over
//! the 12 sets, softmax, image score, anomaly maps.

use super::adaptor::Adaptor;
use super::checkpoint::Checkpoint;
use super::head::Head;
use super::text::head_text_features;
use super::tokenizer::ClipTokenizer;
use super::vision::{Images, VisionTower};
use crate::backend::Backend;
use anyhow::{bail, Result};

/// Aggregation windows (SPEC §3) and their Gaussian sigma.
pub const WINDOWS: [usize; 3] = [1, 3, 5];
pub const AGGREGATION_SIGMA: f32 = 4.0;
/// Cosine logits are divided by this temperature (SPEC §6).
pub const TEMPERATURE: f32 = 0.07;
/// Gaussian smoothing of the upsampled map (SPEC §6).
pub const MAP_SIGMA: f32 = 4.0;
pub const DEFAULT_IMAGE_SIZE: usize = 518;

/// The four evenly spaced feature layers for a tower of `depth` blocks (6,12,18,24 for 24).
pub fn default_layers(depth: usize) -> Vec<usize> {
    let mut layers: Vec<usize> = (1..=4)
        .map(|k| ((depth * k) as f64 / 4.0).round().max(1.0) as usize)
        .collect();
    layers.dedup();
    layers
}

/// Image size and feature layers, validated against the model by [`AfClip::new`].
#[derive(Clone, Debug)]
pub struct ModelOptions {
    pub image_size: usize,
    /// 1-based; `None` = [`default_layers`].
    pub layers: Option<Vec<usize>>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            image_size: DEFAULT_IMAGE_SIZE,
            layers: None,
        }
    }
}

/// What one batch yields.
pub struct BatchScores {
    /// `[batch]`: `p[0]`, the CLS token's abnormal probability.
    pub image: Vec<f32>,
    /// `[batch, 1 + g*g]`: abnormal probability of every token, CLS first.
    pub probs: Vec<f32>,
    /// `[batch, S, S]` final smoothed maps; empty when maps were not asked for.
    pub maps: Vec<f32>,
}

pub struct AfClip<B: Backend> {
    be: B,
    vision: VisionTower<B>,
    adaptor: Adaptor<B>,
    text: B::Buf,
    text_features: Vec<f32>,
    embed: usize,
    side: usize,
    grid: usize,
    width: usize,
    layers: Vec<usize>,
    /// Aggregation windows ([`WINDOWS`], or `[1]` for the "no aggregation" ablation).
    windows: Vec<usize>,
    /// `false`: the "no adaptor" ablation, `z = ln_post(c) @ proj`.
    use_adaptor: bool,
    fingerprint: String,
}

impl<B: Backend> AfClip<B> {
    pub fn new(
        be: B,
        ckpt: &Checkpoint,
        head: &Head,
        tokenizer: &ClipTokenizer,
        opts: &ModelOptions,
    ) -> Result<Self> {
        let cfg = &ckpt.config;
        let side = opts.image_size;
        if side == 0 || !side.is_multiple_of(cfg.patch) {
            bail!(
                "image size {side} is not a positive multiple of the model's patch size {}",
                cfg.patch
            );
        }
        let layers = match &opts.layers {
            Some(l) => l.clone(),
            None => default_layers(cfg.vision_layers),
        };
        if layers.is_empty() {
            bail!("no feature layers given");
        }
        if let Some(&bad) = layers.iter().find(|&&l| l == 0 || l > cfg.vision_layers) {
            bail!(
                "feature layer {bad} is outside the vision tower's blocks 1..={}",
                cfg.vision_layers
            );
        }
        if head.width != cfg.vision_width || head.text_width != cfg.text_width {
            bail!(
                "head widths (vision {}, text {}) do not match the model (vision {}, text {})",
                head.width,
                head.text_width,
                cfg.vision_width,
                cfg.text_width
            );
        }
        let text_features = head_text_features(&be, cfg, &ckpt.text, head, tokenizer)?;
        Ok(Self {
            vision: VisionTower::upload(&be, cfg, &ckpt.vision, side, &layers)?,
            adaptor: Adaptor::upload(&be, head, &ckpt.vision, cfg.embed_dim)?,
            text: be.upload(&text_features)?,
            text_features,
            embed: cfg.embed_dim,
            side,
            grid: side / cfg.patch,
            width: cfg.vision_width,
            fingerprint: crate::fewshot::fingerprint::vision_fingerprint(
                cfg,
                &ckpt.vision,
                layers.iter().copied().max().unwrap_or(0),
            ),
            layers,
            windows: WINDOWS.to_vec(),
            use_adaptor: true,
            be,
        })
    }

    pub fn backend(&self) -> &B {
        &self.be
    }
    pub fn image_size(&self) -> usize {
        self.side
    }
    pub fn grid(&self) -> usize {
        self.grid
    }
    pub fn layers(&self) -> &[usize] {
        &self.layers
    }
    /// Vision width `d`: the width of the aggregated token sets.
    pub fn width(&self) -> usize {
        self.width
    }
    /// The number of aggregated token sets (layers × windows).
    pub fn sets(&self) -> usize {
        self.layers.len() * self.windows.len()
    }
    /// Ablations (paper Table 6): `aggregation = false` uses window 1 only; `adaptor = false`
    /// scores `ln_post(c) @ proj` directly.
    pub fn set_ablations(&mut self, aggregation: bool, adaptor: bool) {
        self.windows = if aggregation {
            WINDOWS.to_vec()
        } else {
            vec![1]
        };
        self.use_adaptor = adaptor;
    }
    /// Identifies the vision weights that the features depend on (see
    /// [`crate::fewshot::fingerprint`]); memory banks record it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    /// `[2, e]`: normal, abnormal; L2-normalised.
    pub fn text_features(&self) -> &[f32] {
        &self.text_features
    }

    /// Normalises resized RGB bytes `[batch, S, S, 3]` into the backend's memory, for
    /// [`Images::Resident`]: a feeding thread can do this while the previous batch computes.
    pub fn upload_rgb(&self, rgb: &[u8], batch: usize) -> Result<B::Buf> {
        self.be.upload_rgb(rgb, batch, self.side, self.side)
    }

    /// Raw residual streams at the feature layers, `[batch, tokens, width]` each.
    pub fn vision_features<'a>(
        &self,
        images: impl Into<Images<'a, B>>,
        batch: usize,
    ) -> Result<Vec<Vec<f32>>> {
        self.vision
            .forward_images(&self.be, images.into(), batch)?
            .iter()
            .map(|f| self.be.download(f))
            .collect()
    }

    /// Runs the vision tower on `batch` images and hands each aggregated token set
    /// `c: [batch, 1 + g*g, d]` (SPEC §3, raw: no adaptor) to `visit(set, c)`, for set
    /// `layer_index · 3 + window_index` in that order.
    pub fn for_each_set<'a>(
        &self,
        images: impl Into<Images<'a, B>>,
        batch: usize,
        visit: &mut dyn FnMut(usize, &B::Buf) -> Result<()>,
    ) -> Result<()> {
        let be = &self.be;
        let features = self.vision.forward_images(be, images.into(), batch)?;
        let mut aggregated = be.zeros(batch * self.vision.tokens() * self.width)?;
        for (l, f) in features.iter().enumerate() {
            for (w, &r) in self.windows.iter().enumerate() {
                let c = if r == 1 {
                    f
                } else {
                    be.aggregate(
                        &mut aggregated,
                        f,
                        batch,
                        self.grid,
                        self.width,
                        r,
                        AGGREGATION_SIGMA,
                    )?;
                    &aggregated
                };
                visit(l * self.windows.len() + w, c)?;
            }
        }
        Ok(())
    }

    /// Scores a batch of `batch` images.
    pub fn score<'a>(
        &self,
        images: impl Into<Images<'a, B>>,
        batch: usize,
        with_maps: bool,
    ) -> Result<BatchScores> {
        self.score_with(images, batch, with_maps, &mut |_, _| Ok(()))
    }

    /// [`AfClip::score`] in one forward pass with [`AfClip::for_each_set`]: `visit` sees every
    /// aggregated set before the adaptor does (the few-shot search uses this).
    pub fn score_with<'a>(
        &self,
        images: impl Into<Images<'a, B>>,
        batch: usize,
        with_maps: bool,
        visit: &mut dyn FnMut(usize, &B::Buf) -> Result<()>,
    ) -> Result<BatchScores> {
        let be = &self.be;
        let t = self.vision.tokens();
        let rows = batch * t;
        let mut logits = be.zeros(rows * 2)?;
        self.for_each_set(images, batch, &mut |set, c| {
            visit(set, c)?;
            let z = if self.use_adaptor {
                self.adaptor.forward(be, c, batch, t)?
            } else {
                self.adaptor.project(be, c, batch, t)?
            };
            be.state_logits(
                &mut logits,
                &z,
                &self.text,
                rows,
                self.embed,
                1.0 / TEMPERATURE,
            )
        })?;
        let mut probs = be.zeros(rows)?;
        be.abnormal_probability(&mut probs, &logits, rows)?;
        let probs = be.download(&probs)?;
        let image = probs.chunks_exact(t).map(|p| p[0]).collect();
        let maps = if with_maps {
            let patch: Vec<f32> = probs
                .chunks_exact(t)
                .flat_map(|p| p[1..].iter().copied())
                .collect();
            self.maps_from_patches(&patch, batch)?
        } else {
            Vec::new()
        };
        Ok(BatchScores { image, probs, maps })
    }

    /// Upsamples and smooths grid-resolution maps `[batch, g*g]` to `[batch, S, S]`.
    pub fn maps_from_patches(&self, patch: &[f32], batch: usize) -> Result<Vec<f32>> {
        let be = &self.be;
        let mut maps = be.zeros(batch * self.side * self.side)?;
        be.anomaly_maps(
            &mut maps,
            &be.upload(patch)?,
            batch,
            self.grid,
            self.side,
            MAP_SIGMA,
        )?;
        be.download(&maps)
    }
}

#[cfg(test)]
mod tests {
    use super::default_layers;

    #[test]
    fn default_layers_are_evenly_spaced() {
        assert_eq!(default_layers(24), vec![6, 12, 18, 24]);
        assert_eq!(default_layers(12), vec![3, 6, 9, 12]);
        assert_eq!(default_layers(4), vec![1, 2, 3, 4]);
        assert_eq!(default_layers(2), vec![1, 2]);
    }
}
