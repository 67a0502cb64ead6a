//! The zero-shot forward of [`AfClip::score`] and [`AfClip::maps_from_patches`], split into
//! timed stages on the profiling backend (every op synchronised, so the stage boundaries are
//! the device's), and the `linear` rate the vision tower is measured against.
//!
//! Stage boundaries: the first aggregated set handed to the visitor of
//! [`AfClip::score_with`] ends the vision tower (set 0 is window 1, the raw features); the
//! `upload` or `upload_rgb` op before it is the upload; after it, `state_logits`, `abnormal_probability` and
//! the `download` of the probabilities are the scores, everything else the aggregation and the
//! adaptor; the maps are [`AfClip::maps_from_patches`].

use crate::backend::profile::{OpStats, Profiled};
use crate::backend::{Backend, Epilogue};
use crate::model::afclip::AfClip;
use crate::model::vision::Images;
use anyhow::{anyhow, ensure, Result};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Seconds and FLOPs of one or more staged forwards.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageTimes {
    /// Host → device copy of the batch's pixels (none for [`Images::Resident`]).
    pub upload: f64,
    pub vision: f64,
    /// Multi-scale aggregation, adaptor and projection of every set.
    pub adaptor: f64,
    /// Cosine logits, softmax and the probabilities' download.
    pub scores: f64,
    /// Upsampled, smoothed maps, downloaded.
    pub maps: f64,
    /// GEMM and attention FLOPs of the vision tower, as the profiler counted them.
    pub vision_flops: f64,
    /// The same for the adaptors and projections.
    pub head_flops: f64,
}

impl std::ops::AddAssign for StageTimes {
    fn add_assign(&mut self, o: Self) {
        self.upload += o.upload;
        self.vision += o.vision;
        self.adaptor += o.adaptor;
        self.scores += o.scores;
        self.maps += o.maps;
        self.vision_flops += o.vision_flops;
        self.head_flops += o.head_flops;
    }
}

/// What one staged forward yields.
pub struct Staged {
    pub times: StageTimes,
    /// `[batch]` image scores.
    pub image: Vec<f32>,
    /// `[batch, S, S]` final maps.
    pub maps: Vec<f32>,
}

/// Time and FLOPs of the ops in `stats` whose names `pick` accepts.
fn total(stats: &BTreeMap<&'static str, OpStats>, pick: impl Fn(&str) -> bool) -> (f64, f64) {
    stats
        .iter()
        .filter(|(op, _)| pick(op))
        .fold((0.0, 0.0), |(t, f), (_, s)| {
            (t + s.time.as_secs_f64(), f + s.flops)
        })
}

fn is_upload_op(op: &str) -> bool {
    matches!(op, "upload" | "upload_rgb")
}

fn is_score_op(op: &str) -> bool {
    matches!(op, "state_logits" | "abnormal_probability" | "download")
}

/// Scores `batch` images with maps on `model`, timing each stage.
pub fn staged_forward<B: Backend>(
    model: &AfClip<Profiled<B>>,
    images: Images<'_, Profiled<B>>,
    batch: usize,
) -> Result<Staged> {
    let be = model.backend();
    be.synchronize()?;
    be.reset();
    let start = Instant::now();
    let mut vision_done = None;
    let scored = model.score_with(images, batch, false, &mut |_, _| {
        if vision_done.is_none() {
            vision_done = Some((Instant::now(), be.stats()));
        }
        Ok(())
    })?;
    let scored_at = Instant::now();
    let (vision_at, before) =
        vision_done.ok_or_else(|| anyhow!("bench: the forward handed over no token set"))?;
    let after = be.stats();
    let tokens = 1 + model.grid() * model.grid();
    let patch: Vec<f32> = scored
        .probs
        .chunks_exact(tokens)
        .flat_map(|p| p[1..].iter().copied())
        .collect();
    let maps = model.maps_from_patches(&patch, batch)?;
    let done = Instant::now();

    let (upload, _) = total(&before, is_upload_op);
    let (_, vision_flops) = total(&before, |_| true);
    let (all_flops, score_before) = (total(&after, |_| true).1, total(&before, is_score_op).0);
    let scores = total(&after, is_score_op).0 - score_before;
    let secs = |d: Duration| d.as_secs_f64();
    Ok(Staged {
        times: StageTimes {
            upload,
            vision: secs(vision_at - start) - upload,
            adaptor: secs(scored_at - vision_at) - scores,
            scores,
            maps: secs(done - scored_at),
            vision_flops,
            head_flops: all_flops - vision_flops,
        },
        image: scored.image,
        maps,
    })
}

/// FLOP/s of `be.linear` with a frozen (tower) weight, `y[rows, out] = x[rows, in] · Wᵀ`: one
/// warm-up call, then the best of at least 3 timed calls (more while under 0.3 s in all, at
/// most 100), each synchronised.
pub fn linear_rate<B: Backend>(be: &B, rows: usize, in_dim: usize, out_dim: usize) -> Result<f64> {
    ensure!(
        rows > 0 && in_dim > 0 && out_dim > 0,
        "GEMM rate: empty shape {rows}x{in_dim}->{out_dim}"
    );
    // Values in [-1, 1]; their distribution does not change a dense GEMM's speed.
    let fill = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0)
            .collect()
    };
    let w = be.upload_frozen_mat(&fill(out_dim * in_dim), out_dim, in_dim)?;
    let x = be.upload(&fill(rows * in_dim))?;
    let mut y = be.zeros(rows * out_dim)?;
    be.linear(&mut y, &x, &w, None, Epilogue::Store, rows)?;
    be.synchronize()?;
    let (mut best, mut spent, mut calls) = (f64::INFINITY, 0.0, 0);
    while calls < 3 || (spent < 0.3 && calls < 100) {
        let start = Instant::now();
        be.linear(&mut y, &x, &w, None, Epilogue::Store, rows)?;
        be.synchronize()?;
        let secs = start.elapsed().as_secs_f64();
        best = best.min(secs);
        spent += secs;
        calls += 1;
    }
    Ok(2.0 * rows as f64 * in_dim as f64 * out_dim as f64 / best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::bench::flops::image_flops;
    use crate::model::afclip::ModelOptions;
    use crate::model::head::Head;
    use crate::model::random::{preset, random_checkpoint};
    use crate::model::tokenizer::ClipTokenizer;

    #[test]
    fn stages_add_up_and_flops_match_the_config() {
        let cfg = preset("tiny").unwrap();
        let opts = ModelOptions {
            image_size: 56,
            layers: None,
        };
        let be = Profiled::new(CpuBackend::new(Some(1)).unwrap());
        let model = AfClip::new(
            be,
            &random_checkpoint(&cfg, 0),
            &Head::init(&cfg, 0),
            &ClipTokenizer::builtin().unwrap(),
            &opts,
        )
        .unwrap();
        let batch = 2;
        let rgb: Vec<u8> = (0..batch * 56 * 56 * 3)
            .map(|i| (i * 37 % 256) as u8)
            .collect();
        let staged = staged_forward(&model, Images::Rgb(&rgb), batch).unwrap();
        let want = model.score(Images::Rgb(&rgb), batch, true).unwrap();
        assert_eq!(staged.image, want.image);
        assert_eq!(staged.maps, want.maps);
        let t = staged.times;
        for (name, v) in [
            ("upload", t.upload),
            ("vision", t.vision),
            ("adaptor", t.adaptor),
            ("scores", t.scores),
            ("maps", t.maps),
        ] {
            assert!(v > 0.0, "{name}: {v}");
        }
        let depth = *model.layers().iter().max().unwrap();
        let f = image_flops(&cfg, 56, depth, model.sets());
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b;
        assert!(
            close(t.vision_flops, batch as f64 * f.vision),
            "{t:?} {f:?}"
        );
        assert!(
            close(t.head_flops, batch as f64 * (f.adaptor + f.projection)),
            "{t:?} {f:?}"
        );
    }

    #[test]
    fn linear_rate_is_positive_and_rejects_empty_shapes() {
        let be = CpuBackend::new(Some(1)).unwrap();
        assert!(linear_rate(&be, 64, 32, 48).unwrap() > 0.0);
        assert!(linear_rate(&be, 0, 32, 48).is_err());
    }
}
