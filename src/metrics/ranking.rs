//! AUROC, average precision and max-F1 from a descending sweep over tied score groups.
//!
//! Input: the distinct scores in descending order, each with its count of positives and
//! negatives (`push(pos, neg)`). With `tp`, `fp` the counts at or above a group and `P`, `N`
//! the totals, as scikit-learn 1.x computes them:
//! - AUROC (`roc_auc_score`): trapezoid area of (fp/N, tp/P); per group
//!   `Δfp * (2*tp_before + Δtp)`, summed exactly in integers and divided by `2PN`.
//! - AP (`average_precision_score`): `Σ (R_g - R_{g-1}) * P_g`, `P_g = tp/(tp+fp)`, `R = tp/P`.
//! - max-F1 (`precision_recall_curve`): `max 2*(P*R)/(P+R+1e-16)` over the groups and the
//!   curve's final `(P=1, R=0)` point.
//!
//! Each needs both classes; with one class only, every value is `None`.

use super::keys::key64;
use super::report::ImageMetrics;
use anyhow::{bail, Result};

/// The three ranking metrics of one score set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranking {
    pub auroc: f64,
    pub ap: f64,
    pub max_f1: f64,
}

/// Accumulates the ranking metrics over tie groups pushed in descending score order.
pub struct RankSweep {
    n_pos: u64,
    n_neg: u64,
    tp: u64,
    fp: u64,
    auc2: u128,
    ap: f64,
    recall: f64,
    best_f1: f64,
}

impl RankSweep {
    pub fn new(n_pos: u64, n_neg: u64) -> Self {
        RankSweep {
            n_pos,
            n_neg,
            tp: 0,
            fp: 0,
            auc2: 0,
            ap: 0.0,
            recall: 0.0,
            best_f1: 0.0,
        }
    }

    /// Adds the group of one distinct score: `pos` positives and `neg` negatives.
    #[inline]
    pub fn push(&mut self, pos: u64, neg: u64) {
        if pos == 0 && neg == 0 {
            return;
        }
        self.auc2 += neg as u128 * (2 * self.tp as u128 + pos as u128);
        self.tp += pos;
        self.fp += neg;
        let tp = self.tp as f64;
        let precision = tp / (tp + self.fp as f64);
        let recall = tp / self.n_pos as f64;
        if pos > 0 {
            self.ap += (recall - self.recall) * precision;
            self.recall = recall;
        }
        let f1 = 2.0 * (precision * recall) / (precision + recall + 1e-16);
        if f1 > self.best_f1 {
            self.best_f1 = f1;
        }
    }

    /// The metrics, or `None` when a class is missing. Every pushed count must add up to the
    /// totals given to `new`.
    pub fn finish(self) -> Option<Ranking> {
        debug_assert_eq!((self.tp, self.fp), (self.n_pos, self.n_neg));
        if self.n_pos == 0 || self.n_neg == 0 {
            return None;
        }
        let auroc = self.auc2 as f64 / (2.0 * self.n_pos as f64 * self.n_neg as f64);
        Some(Ranking {
            auroc,
            ap: self.ap,
            max_f1: self.best_f1,
        })
    }
}

/// Ranking metrics of scalar scores with binary labels (`true` = anomalous).
/// Errors on a length mismatch or a non-finite score.
pub fn rank_scores(scores: &[f64], labels: &[bool]) -> Result<Option<Ranking>> {
    if scores.len() != labels.len() {
        bail!("{} scores but {} labels", scores.len(), labels.len());
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        bail!("score {i} is {} (not finite)", scores[i]);
    }
    let mut items: Vec<(u64, bool)> = scores
        .iter()
        .zip(labels)
        .map(|(&s, &l)| (key64(s), l))
        .collect();
    items.sort_unstable_by_key(|item| std::cmp::Reverse(item.0));
    let n_pos = labels.iter().filter(|&&l| l).count() as u64;
    let mut sweep = RankSweep::new(n_pos, labels.len() as u64 - n_pos);
    for group in items.chunk_by(|a, b| a.0 == b.0) {
        let pos = group.iter().filter(|g| g.1).count() as u64;
        sweep.push(pos, group.len() as u64 - pos);
    }
    Ok(sweep.finish())
}

/// Image-level metrics; a missing class gives `None` values and a warning naming `what`.
pub fn image_metrics(
    scores: &[f64],
    labels: &[bool],
    what: &str,
    warnings: &mut Vec<String>,
) -> Result<ImageMetrics> {
    match rank_scores(scores, labels)? {
        Some(r) => Ok(ImageMetrics {
            auroc: Some(r.auroc),
            ap: Some(r.ap),
            max_f1: Some(r.max_f1),
        }),
        None => {
            let n_pos = labels.iter().filter(|&&l| l).count();
            warnings.push(format!(
                "{what}: image metrics undefined: {n_pos} anomalous and {} normal images \
                 (both classes are needed)",
                labels.len() - n_pos
            ));
            Ok(ImageMetrics::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mann-Whitney AUROC: P(pos > neg) + P(pos == neg)/2 over all pairs.
    fn pairwise_auroc(scores: &[f64], labels: &[bool]) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for (i, &si) in scores.iter().enumerate() {
            for (j, &sj) in scores.iter().enumerate() {
                if labels[i] && !labels[j] {
                    den += 1.0;
                    num += if si > sj {
                        1.0
                    } else if si == sj {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        num / den
    }

    /// AP and max-F1 by thresholding at every distinct score.
    fn threshold_ap_f1(scores: &[f64], labels: &[bool]) -> (f64, f64) {
        let mut th: Vec<f64> = scores.to_vec();
        th.sort_by(|a, b| b.partial_cmp(a).unwrap());
        th.dedup();
        let n_pos = labels.iter().filter(|&&l| l).count() as f64;
        let (mut ap, mut prev_r, mut best) = (0.0, 0.0, 0.0f64);
        for t in th {
            let tp = scores
                .iter()
                .zip(labels)
                .filter(|(s, l)| **s >= t && **l)
                .count() as f64;
            let fp = scores
                .iter()
                .zip(labels)
                .filter(|(s, l)| **s >= t && !**l)
                .count() as f64;
            let (p, r) = (tp / (tp + fp), tp / n_pos);
            ap += (r - prev_r) * p;
            prev_r = r;
            best = best.max(2.0 * p * r / (p + r + 1e-16));
        }
        (ap, best)
    }

    #[test]
    fn matches_brute_force_with_ties() {
        let mut s = 99u64;
        for case in 0..300 {
            let n = 2 + case % 40;
            let levels = 1 + (case % 7) as u64 * 3;
            let mut scores = Vec::new();
            let mut labels = Vec::new();
            for _ in 0..n {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                scores.push(((s >> 40) % levels) as f64 * 0.25 - 1.0);
                labels.push((s >> 20).is_multiple_of(3));
            }
            let r = rank_scores(&scores, &labels).unwrap();
            let has_both = labels.iter().any(|&l| l) && labels.iter().any(|&l| !l);
            assert_eq!(r.is_some(), has_both);
            if let Some(r) = r {
                assert!((r.auroc - pairwise_auroc(&scores, &labels)).abs() < 1e-12);
                let (ap, f1) = threshold_ap_f1(&scores, &labels);
                assert!((r.ap - ap).abs() < 1e-12, "case {case}: {} vs {ap}", r.ap);
                assert!((r.max_f1 - f1).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn one_class_warns_and_bad_scores_error() {
        let mut w = Vec::new();
        let m = image_metrics(&[0.1, 0.2], &[true, true], "cat", &mut w).unwrap();
        assert_eq!(m, ImageMetrics::default());
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("cat"));
        assert!(rank_scores(&[0.1, f64::NAN], &[true, false]).is_err());
        assert!(rank_scores(&[0.1], &[true, false]).is_err());
        assert_eq!(
            rank_scores(&[-0.0, 0.0], &[true, false])
                .unwrap()
                .unwrap()
                .auroc,
            0.5
        );
    }
}
