//! Evaluation of one dataset category: decode images and masks on the pipeline, score them in
//! batches with any scorer (zero-shot or few-shot), then the SPEC §9 metrics.

use crate::data::decode::{decode_rgb, Pixels};
use crate::data::layouts::{Category, DatasetInfo, Sample};
use crate::data::pipeline::ordered_map;
use crate::data::preprocess::load_rgb;
use crate::data::resize::resize_bicubic;
use crate::metrics::pixel::{pixel_metrics, PixelImage};
use crate::metrics::ranking::image_metrics;
use crate::metrics::report::CategoryMetrics;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Scores `batch` resized RGB images `[batch, S, S, 3]` (normalised by the backend): image
/// scores `[batch]` and, when `with_maps`, final maps `[batch, S, S]`.
pub trait BatchScorer {
    fn image_size(&self) -> usize;
    fn score_batch(
        &mut self,
        rgb: &[u8],
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
    /// `[S, S, 3]` resized RGB bytes.
    rgb: Vec<u8>,
    /// Binarised (`> 0.5`) mask, all zero for a normal image; empty when masks are not used.
    mask: Vec<u8>,
    /// Something worth telling about this sample that did not stop it (a resized mask).
    warning: Option<String>,
}

fn load_sample(s: &Sample, side: usize, with_masks: bool) -> Result<Loaded> {
    let rgb = load_rgb(&s.path, side)?.data;
    let (mask, warning) = match (&s.mask, with_masks) {
        (_, false) => (Vec::new(), None),
        (None, true) => (vec![0; side * side], None),
        (Some(m), true) => read_mask(m, &s.path, side, s.binarise_mask)?,
    };
    Ok(Loaded { rgb, mask, warning })
}

/// A ground-truth mask per SPEC §1 (grey, bicubic to `side`, `/255`, then `> 0.5`) under the
/// bad-input policy: a mask holding colour (not single-channel) is an error; a mask whose size
/// differs from its image's is resized like any mask, with a warning.
fn read_mask(
    mask: &Path,
    image: &Path,
    side: usize,
    binarise_nonzero: bool,
) -> Result<(Vec<u8>, Option<String>)> {
    let rgb = decode_rgb(mask).with_context(|| format!("mask of {}", image.display()))?;
    if rgb
        .data
        .chunks_exact(3)
        .any(|p| p[0] != p[1] || p[1] != p[2])
    {
        bail!(
            "mask {} of {} is not single-channel: it holds colour pixels",
            mask.display(),
            image.display()
        );
    }
    let mut grey = Pixels {
        width: rgb.width,
        height: rgb.height,
        channels: 1,
        data: rgb.data.iter().step_by(3).copied().collect(),
    };
    if binarise_nonzero {
        grey.data
            .iter_mut()
            .filter(|v| **v != 0)
            .for_each(|v| *v = 255);
    }
    let (iw, ih) = image::image_dimensions(image)
        .with_context(|| format!("cannot read the size of {}", image.display()))?;
    let warning = ((iw as usize, ih as usize) != (grey.width, grey.height)).then(|| {
        format!(
            "mask {} is {}x{} but its image {} is {iw}x{ih}; resized to {side}x{side} like the image",
            mask.display(),
            grey.width,
            grey.height,
            image.display()
        )
    });
    let resized = resize_bicubic(&grey, side, side);
    let binary = resized
        .data
        .iter()
        .map(|&v| u8::from(f32::from(v) / 255.0 > 0.5))
        .collect();
    Ok((binary, warning))
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
        let mut rgb = Vec::with_capacity(n * side * side * 3);
        pending
            .iter()
            .for_each(|(_, l)| rgb.extend_from_slice(&l.rgb));
        let (image, batch_maps) = scorer.score_batch(&rgb, n, with_masks)?;
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
            Ok(l) => {
                if let Some(w) = &l.warning {
                    warnings.push(format!("{}: {w}", category.name));
                }
                pending.push((index, l))
            }
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
        rgb: &[u8],
        batch: usize,
        with_maps: bool,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let out = self.score(crate::model::vision::Images::Rgb(rgb), batch, with_maps)?;
        Ok((out.image, out.maps))
    }
}
