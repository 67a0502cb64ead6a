//! `aupro_exact`: the threshold-free area under the PRO curve up to FPR 0.3, divided by 0.3.
//!
//! This is the MVTec AD evaluation procedure (Bergmann et al., `compute_pro` + `trapezoid`):
//! every anomalous pixel of a ground-truth region `r` weighs `1 / (R * area_r)` (R = number of
//! 8-connected regions over all images), every normal pixel `1 / N`. Sweeping the distinct
//! scores in descending order, the curve goes through `(FPR, PRO)` = (normal weight at or above
//! the score, region weight at or above it), starting at `(0, 0)`; PRO is clipped at 1. The
//! trapezoid area is taken up to FPR 0.3, interpolating linearly on the segment that crosses
//! 0.3, and divided by 0.3. Unlike the 200-threshold PRO, no threshold grid is involved.

/// Integration limit of `aupro_exact`.
pub const AUPRO_FPR_LIMIT: f64 = 0.3;

/// Accumulates the area while tie groups are pushed in descending score order.
pub struct AuproSweep {
    n_neg: f64,
    n_regions: f64,
    fp: u64,
    weight: f64,
    x: f64,
    y: f64,
    area: f64,
    done: bool,
}

impl AuproSweep {
    /// `n_neg` normal pixels in all, `n_regions` ground-truth regions in all.
    pub fn new(n_neg: u64, n_regions: u64) -> Self {
        AuproSweep {
            n_neg: n_neg as f64,
            n_regions: n_regions as f64,
            fp: 0,
            weight: 0.0,
            x: 0.0,
            y: 0.0,
            area: 0.0,
            done: false,
        }
    }

    /// Adds one tie group: `neg` normal pixels and `region_weight = Σ 1/area_r` over its
    /// anomalous pixels.
    #[inline]
    pub fn push(&mut self, neg: u64, region_weight: f64) {
        self.fp += neg;
        self.weight += region_weight;
        if self.done {
            return;
        }
        let x1 = self.fp as f64 / self.n_neg;
        let y1 = (self.weight / self.n_regions).min(1.0);
        if x1 <= AUPRO_FPR_LIMIT {
            self.area += 0.5 * (y1 + self.y) * (x1 - self.x);
        } else {
            let y_at = self.y + (y1 - self.y) * (AUPRO_FPR_LIMIT - self.x) / (x1 - self.x);
            self.area += 0.5 * (y_at + self.y) * (AUPRO_FPR_LIMIT - self.x);
            self.done = true;
        }
        self.x = x1;
        self.y = y1;
    }

    /// The normalised area; `None` without normal pixels or without regions.
    pub fn finish(self) -> Option<f64> {
        if self.n_neg == 0.0 || self.n_regions == 0.0 {
            return None;
        }
        Some(self.area / AUPRO_FPR_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_random_and_reversed() {
        // Anomalous pixels all above every normal pixel: PRO is 1 from FPR 0 on.
        let mut s = AuproSweep::new(10, 1);
        s.push(0, 1.0);
        for _ in 0..10 {
            s.push(1, 0.0);
        }
        assert!((s.finish().unwrap() - 1.0).abs() < 1e-12);
        // One group holding everything: the diagonal, area 0.3^2/2 over 0.3 = 0.15.
        let mut s = AuproSweep::new(100, 2);
        s.push(100, 2.0);
        assert!((s.finish().unwrap() - 0.15).abs() < 1e-12);
        // All anomalous pixels below every normal pixel: area 0.
        let mut s = AuproSweep::new(5, 1);
        s.push(5, 0.0);
        s.push(0, 1.0);
        assert_eq!(s.finish().unwrap(), 0.0);
        assert!(AuproSweep::new(0, 1).finish().is_none());
        assert!(AuproSweep::new(3, 0).finish().is_none());
    }
}
