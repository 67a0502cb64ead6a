//! The few-shot AF-CLIP+ scorer (SPEC §7): one forward pass gives the zero-shot probabilities
//! and, set by set, the aggregated features that are searched against the banks on the
//! backend (`nearest_cosine`, accumulated into one distance per token):
//!
//! `A_i = mean over the sets of min_b (1 − <c_i/|c_i|, b>) / 2`,
//! image score `max_i A_i + α·p[0]`, map `A + α·p[1:]` at grid resolution, then upsampled and
//! smoothed as the zero-shot map.

use super::bank::Bank;
use crate::backend::Backend;
use crate::eval::BatchScorer;
use crate::model::afclip::AfClip;
use crate::model::vision::Images;
use anyhow::{Context, Result};

/// The weight of the zero-shot score (SPEC §7: the paper's α and β, one value in the code).
pub const DEFAULT_ALPHA: f32 = 0.1;

/// What one few-shot batch yields.
pub struct FewShotScores {
    /// `[batch]`: `max_i A_i + α·p[0]`.
    pub image: Vec<f32>,
    /// `[batch, g*g]`: `A + α·p[1:]`.
    pub patch: Vec<f32>,
    /// `[batch, g*g]`: the bank distances `A`.
    pub distances: Vec<f32>,
    /// `[batch, 1 + g*g]`: the zero-shot abnormal probabilities, CLS first.
    pub probs: Vec<f32>,
    /// `[batch, S, S]` final maps; empty when not asked for.
    pub maps: Vec<f32>,
}

pub struct FewShot<'m, B: Backend> {
    model: &'m AfClip<B>,
    /// One per set, `[rows, d]`, in the backend's memory.
    banks: Vec<B::Buf>,
    rows: usize,
    alpha: f32,
}

impl<'m, B: Backend> FewShot<'m, B> {
    /// Checks that `bank` fits `model` and uploads it.
    pub fn new(model: &'m AfClip<B>, bank: &Bank, alpha: f32) -> Result<Self> {
        bank.check_model(model)?;
        anyhow::ensure!(alpha.is_finite(), "alpha must be finite, not {alpha}");
        let be = model.backend();
        let banks = bank
            .sets
            .iter()
            .map(|s| be.upload(s))
            .collect::<Result<Vec<_>>>()
            .context("uploading the memory bank")?;
        Ok(Self {
            model,
            banks,
            rows: bank.rows(),
            alpha,
        })
    }

    /// The zero-shot model this scorer extends.
    pub fn model(&self) -> &'m AfClip<B> {
        self.model
    }

    /// Scores a batch of `batch` images.
    pub fn score<'a>(
        &self,
        images: impl Into<Images<'a, B>>,
        batch: usize,
        with_maps: bool,
    ) -> Result<FewShotScores> {
        let m = self.model;
        let be = m.backend();
        let patches = m.grid() * m.grid();
        let tokens = patches + 1;
        let rows = batch * tokens;
        let weight = 0.5 / self.banks.len() as f32;
        let mut dist = be.zeros(rows)?;
        let zero_shot = m.score_with(images, batch, false, &mut |set, c| {
            be.nearest_cosine(
                &mut dist,
                c,
                &self.banks[set],
                rows,
                self.rows,
                m.width(),
                weight,
            )
        })?;
        let all = be.download(&dist)?;
        let mut distances = Vec::with_capacity(batch * patches);
        let mut patch = Vec::with_capacity(batch * patches);
        let mut image = Vec::with_capacity(batch);
        for (a, p) in all
            .chunks_exact(tokens)
            .zip(zero_shot.probs.chunks_exact(tokens))
        {
            let a = &a[1..];
            distances.extend_from_slice(a);
            patch.extend(a.iter().zip(&p[1..]).map(|(&a, &p)| a + self.alpha * p));
            let best = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            image.push(best + self.alpha * p[0]);
        }
        let maps = if with_maps {
            m.maps_from_patches(&patch, batch)?
        } else {
            Vec::new()
        };
        Ok(FewShotScores {
            image,
            patch,
            distances,
            probs: zero_shot.probs,
            maps,
        })
    }
}

impl<B: Backend> BatchScorer for FewShot<'_, B> {
    fn image_size(&self) -> usize {
        self.model.image_size()
    }

    fn score_batch(
        &mut self,
        rgb: &[u8],
        batch: usize,
        with_maps: bool,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let out = self.score(Images::Rgb(rgb), batch, with_maps)?;
        Ok((out.image, out.maps))
    }
}
