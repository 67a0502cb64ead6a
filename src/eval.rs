//! Evaluation of one dataset category: decode images and masks on the pipeline, score them in
//! batches with any scorer (zero-shot or few-shot), then the SPEC §9 metrics.

use crate::data::layouts::{Category, DatasetInfo, Sample};
use crate::data::pipeline::ordered_map;
use crate::data::preprocess::{load_image, load_mask};
use crate::metrics::pixel::{pixel_metrics, PixelImage};
use crate::metrics::ranking::image_metrics;
use crate::metrics::report::CategoryMetrics;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Scores `batch` normalised images `[batch, 3, S, S]`: image scores `[batch]` and, when
/// `with_maps`, final maps `[batch, S, S]`.
pub trait BatchScorer {
    fn image_size(&self) -> usize;
    fn score_batch(
        &mut self,
        pixels: &[f32],
        batch: usize,
        with_maps: bool,
    ) -> Result<(Vec<f32>, Vec<f32>)>;
}

/// One scored (or failed) test image.
pub struct Row {
    pub path: PathBuf,
    pub label: Option<bool>,
    /// `None` when the image or its mask could not be read (`error` says why).
    pub score: Option<f32>,
    pub error: Option<String>,
}

pub struct CategoryResult {
    pub rows: Vec<Row>,
    pub metrics: CategoryMetrics,
}

struct Loaded {
    pixels: Vec<f32>,
    /// Binarised (`> 0.5`) mask, all zero for a normal image; empty when masks are not used.
    mask: Vec<u8>,
}

fn load_sample(s: &Sample, side: usize, with_masks: bool) -> Result<Loaded> {
    let pixels = load_image(&s.path, side)?.tensor;
    let mask = match (&s.mask, with_masks) {
        (_, false) => Vec::new(),
        (None, true) => vec![0; side * side],
        (Some(m), true) => load_mask(m, side, s.binarise_mask)
            .with_context(|| format!("mask of {}", s.path.display()))?
            .iter()
            .map(|&v| u8::from(v > 0.5))
            .collect(),
    };
    Ok(Loaded { pixels, mask })
}

/// Scores every test image of `category` and computes the metrics `info` allows. An image (or
/// mask) that cannot be read becomes an error row, is left out of the metrics, and is reported
/// in `warnings`; the rest of the category goes on.
pub fn evaluate_category(
    scorer: &mut dyn BatchScorer,
    category: &Category,
    info: DatasetInfo,
    batch_size: usize,
    warnings: &mut Vec<String>,
) -> Result<CategoryResult> {
    let side = scorer.image_size();
    let with_masks = info.has_masks;
    let samples = category.test.clone();
    let rx = ordered_map(samples.clone(), batch_size * 4, move |s: &Sample| {
        load_sample(s, side, with_masks)
    });
    let mut rows = Vec::with_capacity(samples.len());
    let mut scores = Vec::new();
    let mut labels = Vec::new();
    let mut maps: Vec<f32> = Vec::new();
    let mut masks: Vec<u8> = Vec::new();
    let mut pending: Vec<(usize, Loaded)> = Vec::new();
    let mut flush = |pending: &mut Vec<(usize, Loaded)>, rows: &mut Vec<Row>| -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let n = pending.len();
        let mut px = Vec::with_capacity(n * 3 * side * side);
        pending
            .iter()
            .for_each(|(_, l)| px.extend_from_slice(&l.pixels));
        let (image, batch_maps) = scorer.score_batch(&px, n, with_masks)?;
        maps.extend_from_slice(&batch_maps);
        for ((row, loaded), &score) in pending.drain(..).zip(&image) {
            rows[row].score = Some(score);
            scores.push(f64::from(score));
            labels.push(rows[row].label.unwrap_or(false));
            masks.extend_from_slice(&loaded.mask);
        }
        Ok(())
    };
    for (sample, loaded) in samples.iter().zip(rx.iter()) {
        let index = rows.len();
        rows.push(Row {
            path: sample.path.clone(),
            label: sample.label,
            score: None,
            error: None,
        });
        match loaded {
            Ok(l) => pending.push((index, l)),
            Err(e) => {
                let msg = format!("{e:#}");
                warnings.push(format!("{}: skipped: {msg}", category.name));
                rows[index].error = Some(msg);
            }
        }
        if pending.len() == batch_size {
            flush(&mut pending, &mut rows)?;
        }
    }
    flush(&mut pending, &mut rows)?;

    let what = format!("category {}", category.name);
    let image = if info.has_labels {
        Some(image_metrics(&scores, &labels, &what, warnings)?)
    } else {
        None
    };
    let pixel = if with_masks && !scores.is_empty() {
        let images: Vec<PixelImage<'_>> = maps
            .chunks_exact(side * side)
            .zip(masks.chunks_exact(side * side))
            .map(|(m, k)| PixelImage {
                scores: m,
                mask: k,
                height: side,
                width: side,
            })
            .collect();
        Some(pixel_metrics(&images, &what, warnings)?)
    } else {
        None
    };
    Ok(CategoryResult {
        rows,
        metrics: CategoryMetrics {
            n_images: scores.len(),
            image,
            pixel,
        },
    })
}

impl<B: crate::backend::Backend> BatchScorer for crate::model::afclip::AfClip<B> {
    fn image_size(&self) -> usize {
        crate::model::afclip::AfClip::image_size(self)
    }

    fn score_batch(
        &mut self,
        pixels: &[f32],
        batch: usize,
        with_maps: bool,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let out = self.score(pixels, batch, with_maps)?;
        Ok((out.image, out.maps))
    }
}
