//! PRO, the official 200-threshold definition (SPEC §9), from per-threshold histograms.
//!
//! Reference (AF-CLIP `compute_pro`, NumPy 2 semantics): with `mn`, `mx` the f32 min and max
//! over all maps of a category, `th` runs over `np.arange(mn, mx, (mx - mn) / 200)`; for each,
//! binary = map > th, PRO(th) = mean over every 8-connected ground-truth region of every image
//! of TP pixels / region area, FPR(th) = FP pixels / normal pixels. Thresholds with FPR < 0.3
//! are kept, FPR is divided by the largest kept FPR and `sklearn.metrics.auc` (trapezoid) gives
//! the area.
//!
//! Instead of 200 passes, each pixel falls into one bin `b` = number of thresholds below its
//! score, so it counts for threshold `k` exactly when `b > k`. Normal pixels count 1 in their
//! bin, anomalous pixels `1 / area` of their region; suffix sums give FP and `Σ TP/area` per
//! threshold.
//!
//! The thresholds replicate `np.arange` on float32 scalars bit for bit: `delta` is the f32
//! quotient `(mx - mn) / 200`, the length `ceil(f32((mx - mn) / delta))` (so 200 or 201), the
//! values float64 `t0 = mn`, `t1 = f32(mn + delta)`, `t_i = t0 + i * (t1 - t0)`; a score is
//! compared with them in float64.

/// Number of threshold steps between the min and the max.
pub const PRO_STEPS: u16 = 200;
/// Only thresholds with FPR below this enter the area.
pub const PRO_FPR_LIMIT: f64 = 0.3;

/// The `np.arange` threshold grid of one category.
#[derive(Clone, Debug)]
pub struct ProThresholds {
    t: Vec<f64>,
    t0: f64,
    inv_step: f64,
}

impl ProThresholds {
    /// The grid for maps whose scores span `min..=max`; `None` when `np.arange` would fail or
    /// be empty (constant maps, or a range that overflows f32).
    pub fn new(min: f32, max: f32) -> Option<Self> {
        let range = max - min;
        let delta = range / PRO_STEPS as f32;
        if !(delta > 0.0 && delta.is_finite()) {
            return None;
        }
        let len = ((range / delta) as f64).ceil();
        if !(1.0..=1e6).contains(&len) {
            return None;
        }
        let len = len as usize;
        let t0 = min as f64;
        let t1 = (min + delta) as f64;
        let step = t1 - t0;
        let mut t = Vec::with_capacity(len);
        t.push(t0);
        if len > 1 {
            t.push(t1);
        }
        for i in 2..len {
            t.push(t0 + i as f64 * step);
        }
        let inv_step = if step > 0.0 { 1.0 / step } else { 0.0 };
        Some(ProThresholds { t, t0, inv_step })
    }

    /// Number of thresholds (200, sometimes 201, as `np.arange` gives).
    pub fn len(&self) -> usize {
        self.t.len()
    }

    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }

    /// The thresholds, ascending.
    pub fn values(&self) -> &[f64] {
        &self.t
    }

    /// Bin of a score: how many thresholds lie strictly below it (`0..=len`).
    #[inline]
    pub fn bin(&self, v: f32) -> usize {
        let v = v as f64;
        let n = self.t.len();
        if self.inv_step == 0.0 {
            return self.t.partition_point(|&t| t < v);
        }
        let guess = ((v - self.t0) * self.inv_step).floor();
        let mut e = if guess <= 0.0 {
            0
        } else if guess >= n as f64 {
            n
        } else {
            guess as usize
        };
        while e < n && self.t[e] < v {
            e += 1;
        }
        while e > 0 && self.t[e - 1] >= v {
            e -= 1;
        }
        e
    }
}

/// Per-bin counts for the PRO curve: `neg[b]` normal pixels, `region_weight[b]` = Σ 1/area
/// over anomalous pixels in bin `b`. Both have `thresholds.len() + 1` bins.
#[derive(Clone, Debug)]
pub struct ProHistogram {
    pub neg: Vec<u64>,
    pub region_weight: Vec<f64>,
}

impl ProHistogram {
    pub fn new(thresholds: &ProThresholds) -> Self {
        ProHistogram {
            neg: vec![0; thresholds.len() + 1],
            region_weight: vec![0.0; thresholds.len() + 1],
        }
    }

    /// Adds another histogram over the same thresholds.
    pub fn merge(&mut self, other: &ProHistogram) {
        for (a, b) in self.neg.iter_mut().zip(&other.neg) {
            *a += b;
        }
        for (a, b) in self.region_weight.iter_mut().zip(&other.region_weight) {
            *a += b;
        }
    }

    /// The PRO area, or why it is undefined. `n_regions` regions and `n_neg` normal pixels in
    /// all (every pixel must have been added to the histogram).
    pub fn pro(&self, n_regions: u64, n_neg: u64) -> Result<f64, String> {
        if n_regions == 0 {
            return Err("no ground-truth regions".into());
        }
        if n_neg == 0 {
            return Err("no normal pixels".into());
        }
        let k_len = self.neg.len() - 1;
        let mut fpr = vec![0f64; k_len];
        let mut pro = vec![0f64; k_len];
        let (mut fp, mut w) = (0u64, 0f64);
        for k in (0..k_len).rev() {
            fp += self.neg[k + 1];
            w += self.region_weight[k + 1];
            fpr[k] = fp as f64 / n_neg as f64;
            pro[k] = w / n_regions as f64;
        }
        // FPR does not increase with the threshold: the kept thresholds are a suffix.
        let first = fpr.partition_point(|&f| f >= PRO_FPR_LIMIT);
        let (fpr, pro) = (&fpr[first..], &pro[first..]);
        if fpr.len() < 2 {
            return Err(format!(
                "{} of the {k_len} thresholds give FPR < {PRO_FPR_LIMIT} (2 are needed)",
                fpr.len()
            ));
        }
        let max = fpr.iter().cloned().fold(f64::MIN, f64::max);
        if max <= 0.0 {
            return Err(format!(
                "every threshold with FPR < {PRO_FPR_LIMIT} has FPR 0"
            ));
        }
        // sklearn.metrics.auc: x decreasing, so the area is -trapz(y, x).
        let mut area = 0.0;
        for i in 0..fpr.len() - 1 {
            let dx = fpr[i + 1] / max - fpr[i] / max;
            area += dx * (pro[i + 1] + pro[i]) / 2.0;
        }
        Ok(-area)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_has_200_or_201_increasing_thresholds_and_bins_count_them() {
        let cases = [
            (0.0f32, 1.0f32),
            (-3.25, 7.5),
            (0.1, 0.9),
            (1000.0, 1000.001),
        ];
        for (mn, mx) in cases {
            let g = ProThresholds::new(mn, mx).unwrap();
            assert!(g.len() == 200 || g.len() == 201, "{mn} {mx}: {}", g.len());
            assert_eq!(g.values()[0], mn as f64);
            assert!(g.values().windows(2).all(|w| w[0] <= w[1]));
            assert!(*g.values().last().unwrap() < mx as f64);
            for v in [mn, mx, (mn + mx) / 2.0, mn + (mx - mn) * 0.3001] {
                let brute = g.values().iter().filter(|&&t| t < v as f64).count();
                assert_eq!(g.bin(v), brute, "{v}");
            }
            for &t in g.values() {
                let v = t as f32;
                let brute = g.values().iter().filter(|&&u| u < v as f64).count();
                assert_eq!(g.bin(v), brute);
            }
        }
        assert!(ProThresholds::new(0.5, 0.5).is_none());
    }

    #[test]
    fn undefined_cases_are_errors_not_nan() {
        let g = ProThresholds::new(0.0, 1.0).unwrap();
        let h = ProHistogram::new(&g);
        assert!(h.pro(0, 10).is_err());
        assert!(h.pro(1, 0).is_err());
        // Every normal pixel at the top: FPR is 1 up to the last threshold.
        let mut h = ProHistogram::new(&g);
        h.neg[g.len()] = 10;
        h.region_weight[g.len()] = 1.0;
        assert!(h.pro(1, 10).is_err());
    }
}
