//! The training losses of SPEC §8, each returning its value and its gradient with respect to
//! its input, on the host (they touch `batch x (1 + g²)` probabilities and, for the
//! patch-alignment loss, per-image sums of `e`-vectors).
//!
//! - Focal loss `FL(p, t) = mean(BCE(p, t)·(1 − p_t)^γ)`, `p_t = p·t + (1 − p)(1 − t)`, γ = 4,
//!   `BCE = −(t·max(ln p, −100) + (1 − t)·max(ln(1 − p), −100))` as torch computes it; the
//!   gradient uses torch's BCE backward `(p − t) / max(p(1 − p), 1e-12)`.
//! - L1: `mean |p − t|`, gradient `sign(p − t)/n` (0 at a tie, as torch).
//! - Patch-alignment loss (official, batch-pooled): see [`PatchAlignment`].
//! - Ground truth: the `S x S` mask bilinearly downsampled to `g x g` (align_corners = false,
//!   no antialias), then `< 0.5 → 0`, `> 0.5 → 1`, exactly 0.5 kept.

use crate::model::pos_embed::bilinear_taps;
use anyhow::{ensure, Result};

/// Focal-loss exponent γ.
pub const FOCAL_GAMMA: i32 = 4;
/// torch's clamp of each BCE log term.
const LOG_CLAMP: f64 = -100.0;
/// torch's floor of `p(1 − p)` in the BCE backward.
const BCE_GRAD_EPS: f64 = 1e-12;

/// A loss value and `∂loss/∂input`, one per input element.
pub struct LossGrad {
    pub value: f64,
    pub grad: Vec<f32>,
}

fn check_pair(what: &str, p: &[f32], t: &[f32]) -> Result<()> {
    ensure!(
        p.len() == t.len() && !p.is_empty(),
        "{what}: {} predictions and {} targets (need equal, non-zero counts)",
        p.len(),
        t.len()
    );
    Ok(())
}

/// `FL(p, t)`, mean over the elements.
pub fn focal_loss(p: &[f32], t: &[f32]) -> Result<LossGrad> {
    check_pair("focal loss", p, t)?;
    let n = p.len() as f64;
    let mut value = 0.0;
    let grad = p
        .iter()
        .zip(t)
        .map(|(&p, &t)| {
            let (p32, t32) = (p, t);
            let (p, t) = (f64::from(p), f64::from(t));
            let bce = -(t * p.ln().max(LOG_CLAMP) + (1.0 - t) * (1.0 - p).ln().max(LOG_CLAMP));
            // p_t and 1 − p_t as torch forms them in f32.
            let pt = f64::from(p32 * t32 + (1.0 - p32) * (1.0 - t32));
            let w = (1.0 - pt).powi(FOCAL_GAMMA);
            value += bce * w;
            let dbce = (p - t) / (p * (1.0 - p)).max(BCE_GRAD_EPS);
            let dw = -f64::from(FOCAL_GAMMA) * (1.0 - pt).powi(FOCAL_GAMMA - 1) * (2.0 * t - 1.0);
            ((dbce * w + bce * dw) / n) as f32
        })
        .collect();
    Ok(LossGrad {
        value: value / n,
        grad,
    })
}

/// `mean |p − t|`.
pub fn l1_loss(p: &[f32], t: &[f32]) -> Result<LossGrad> {
    check_pair("L1 loss", p, t)?;
    let n = p.len() as f64;
    let value = p
        .iter()
        .zip(t)
        .map(|(&a, &b)| f64::from((a - b).abs()))
        .sum::<f64>()
        / n;
    let grad = p
        .iter()
        .zip(t)
        .map(|(&a, &b)| {
            let d = a - b;
            let s = if d > 0.0 {
                1.0
            } else if d < 0.0 {
                -1.0
            } else {
                0.0
            };
            (s / n) as f32
        })
        .collect();
    Ok(LossGrad { value, grad })
}

/// The `S x S` mask `[side²]` downsampled to the patch grid `[grid²]` and binarised
/// (SPEC §8).
pub fn downsample_mask(mask: &[f32], side: usize, grid: usize) -> Result<Vec<f32>> {
    ensure!(
        side > 0 && grid > 0 && mask.len() == side * side,
        "mask downsampling: {} values for a {side}x{side} mask to a {grid}x{grid} grid",
        mask.len()
    );
    let taps = bilinear_taps(side, grid);
    let at = |y: usize, x: usize| mask[y * side + x];
    let mut out = Vec::with_capacity(grid * grid);
    for &(y0, y1, ly) in &taps {
        for &(x0, x1, lx) in &taps {
            let top = (1.0 - lx) * at(y0, x0) + lx * at(y0, x1);
            let bottom = (1.0 - lx) * at(y1, x0) + lx * at(y1, x1);
            let v = (1.0 - ly) * top + ly * bottom;
            out.push(if v < 0.5 {
                0.0
            } else if v > 0.5 {
                1.0
            } else {
                v
            });
        }
    }
    Ok(out)
}

/// The batch-pooled patch-alignment loss of one token set (SPEC §8), in closed form.
///
/// Patch label `l = −1` where `M = 0`, else `M` (1, or an exact 0.5). With `sim = ẑ ẑᵀ` per
/// image, the pairs with `l_i l_j = −1` are the (anomalous, normal) pairs and those with
/// `l_i l_j = +1` the same-class pairs, so with `a = Σ_{l=1} ẑ`, `n = Σ_{l=−1} ẑ` per image:
/// `Σ_{−1} sim = 2·a·n` (count `2|A||N|`) and `Σ_{+1} sim = a·a + n·n` (count `|A|² + |N|²`),
/// summed over the batch. Value `max(0, mean_{−1} − mean_{+1})`; 0 when no `M` is 0 anywhere
/// in the batch; the `−1` term is 0 when no pair has it.
pub struct PatchAlignment {
    pub value: f64,
    /// Per image: `(a, n)` sums, `[e]` each, in f64.
    sums: Vec<(Vec<f64>, Vec<f64>)>,
    /// `∂value/∂mean_{−1}` divided by its count, and `∂value/∂mean_{+1}` by its count (0 when
    /// the value is clamped).
    coef: (f64, f64),
}

/// `l = −1` where `M = 0`, else `M`.
fn patch_label(m: f32) -> f32 {
    if m == 0.0 {
        -1.0
    } else {
        m
    }
}

impl PatchAlignment {
    /// `zn: [batch, patches, e]` L2-normalised patch tokens, `masks: [batch, patches]`.
    pub fn new(zn: &[f32], masks: &[f32], batch: usize, e: usize) -> Result<Self> {
        ensure!(
            batch > 0 && masks.len().is_multiple_of(batch) && zn.len() == masks.len() * e,
            "patch alignment: {} token values and {} mask values for {batch} images of width {e}",
            zn.len(),
            masks.len()
        );
        let patches = masks.len() / batch;
        let mut sums = Vec::with_capacity(batch);
        let (mut neg_sum, mut neg_count, mut pos_sum, mut pos_count) = (0.0, 0.0, 0.0, 0.0);
        for (zb, mb) in zn
            .chunks_exact(patches * e)
            .zip(masks.chunks_exact(patches))
        {
            let (mut a, mut n) = (vec![0f64; e], vec![0f64; e]);
            let (mut na, mut nn) = (0.0, 0.0);
            for (z, &m) in zb.chunks_exact(e).zip(mb) {
                let l = patch_label(m);
                let (acc, cnt) = if l == 1.0 {
                    (&mut a, &mut na)
                } else if l == -1.0 {
                    (&mut n, &mut nn)
                } else {
                    continue;
                };
                *cnt += 1.0;
                acc.iter_mut().zip(z).for_each(|(s, &v)| *s += f64::from(v));
            }
            let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(u, v)| u * v).sum::<f64>();
            neg_sum += 2.0 * dot(&a, &n);
            neg_count += 2.0 * na * nn;
            pos_sum += dot(&a, &a) + dot(&n, &n);
            pos_count += na * na + nn * nn;
            sums.push((a, n));
        }
        let any_zero = masks.contains(&0.0);
        let neg_mean = if neg_count > 0.0 {
            neg_sum / neg_count
        } else {
            0.0
        };
        let pos_mean = if pos_count > 0.0 {
            pos_sum / pos_count
        } else {
            0.0
        };
        let raw = neg_mean - pos_mean;
        let (value, coef) = if !any_zero || raw < 0.0 {
            (0.0, (0.0, 0.0))
        } else {
            let cn = if neg_count > 0.0 {
                1.0 / neg_count
            } else {
                0.0
            };
            let cp = if pos_count > 0.0 {
                -1.0 / pos_count
            } else {
                0.0
            };
            (raw, (cn, cp))
        };
        Ok(Self { value, sums, coef })
    }

    /// `∂(weight·value)/∂ẑ` for every patch token, `[batch, patches, e]` (zero for tokens
    /// whose label is neither −1 nor 1).
    pub fn grad(&self, masks: &[f32], e: usize, weight: f64) -> Vec<f32> {
        let batch = self.sums.len();
        let patches = masks.len() / batch.max(1);
        let (cn, cp) = (self.coef.0 * weight, self.coef.1 * weight);
        let mut out = vec![0f32; masks.len() * e];
        if cn == 0.0 && cp == 0.0 {
            return out;
        }
        for ((ob, mb), (a, n)) in out
            .chunks_exact_mut(patches * e)
            .zip(masks.chunks_exact(patches))
            .zip(&self.sums)
        {
            // d(2 a·n)/dẑ_i = 2n for i in A, 2a for i in N; d(a·a + n·n)/dẑ_i = 2a or 2n.
            for (o, &m) in ob.chunks_exact_mut(e).zip(mb) {
                let l = patch_label(m);
                let (cross, same) = if l == 1.0 {
                    (n, a)
                } else if l == -1.0 {
                    (a, n)
                } else {
                    continue;
                };
                for ((g, &c), &s) in o.iter_mut().zip(cross).zip(same) {
                    *g = (2.0 * (cn * c + cp * s)) as f32;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The patch-alignment value by its definition: every pair of every image.
    fn pal_bruteforce(zn: &[f32], masks: &[f32], batch: usize, e: usize) -> f64 {
        let p = masks.len() / batch;
        let (mut ns, mut nc, mut ps, mut pc) = (0.0, 0.0, 0.0, 0.0);
        for b in 0..batch {
            for i in 0..p {
                for j in 0..p {
                    let li = patch_label(masks[b * p + i]);
                    let lj = patch_label(masks[b * p + j]);
                    let zi = &zn[(b * p + i) * e..(b * p + i + 1) * e];
                    let zj = &zn[(b * p + j) * e..(b * p + j + 1) * e];
                    let s: f64 = zi.iter().zip(zj).map(|(x, y)| f64::from(x * y)).sum();
                    if li * lj == -1.0 {
                        ns += s;
                        nc += 1.0;
                    } else if li * lj == 1.0 {
                        ps += s;
                        pc += 1.0;
                    }
                }
            }
        }
        if !masks.contains(&0.0) {
            return 0.0;
        }
        let neg = if nc > 0.0 { ns / nc } else { 0.0 };
        let pos = if pc > 0.0 { ps / pc } else { 0.0 };
        (neg - pos).max(0.0)
    }

    fn unit_rows(rng: &mut Rng, rows: usize, e: usize) -> Vec<f32> {
        let mut z: Vec<f32> = (0..rows * e).map(|_| rng.normal()).collect();
        for r in z.chunks_exact_mut(e) {
            let n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
            r.iter_mut().for_each(|v| *v /= n);
        }
        z
    }

    #[test]
    fn patch_alignment_matches_its_definition_and_edge_cases() {
        let mut rng = Rng::new(3);
        let (batch, p, e) = (3, 9, 5);
        // Anomalous tokens pulled towards one direction so the value is positive.
        let masks: Vec<f32> = (0..batch * p)
            .map(|i| match i % 7 {
                0 | 3 => 1.0,
                5 => 0.5,
                _ => 0.0,
            })
            .collect();
        let zn = unit_rows(&mut rng, batch * p, e);
        let pal = PatchAlignment::new(&zn, &masks, batch, e).unwrap();
        let want = pal_bruteforce(&zn, &masks, batch, e);
        assert!((pal.value - want).abs() < 1e-6, "{} vs {want}", pal.value);
        // No zero anywhere: 0. All normal: no −1 pair, the value is −mean(+1) → clamped to 0.
        let ones = vec![1.0; batch * p];
        assert_eq!(
            PatchAlignment::new(&zn, &ones, batch, e).unwrap().value,
            0.0
        );
        let zeros = vec![0.0; batch * p];
        let all_normal = PatchAlignment::new(&zn, &zeros, batch, e).unwrap();
        assert_eq!(all_normal.value, 0.0);
        assert!(all_normal.grad(&zeros, e, 1.0).iter().all(|&g| g == 0.0));
        assert!(PatchAlignment::new(&zn, &masks[1..], batch, e).is_err());
    }

    #[test]
    fn patch_alignment_gradient_matches_finite_differences() {
        let mut rng = Rng::new(11);
        let (batch, p, e) = (2, 6, 4);
        let masks = vec![
            0.0, 1.0, 0.0, 0.0, 1.0, 0.5, //
            0.0, 0.0, 0.0, 1.0, 0.0, 0.0,
        ];
        // Search a draw whose value is not clamped.
        let mut zn = unit_rows(&mut rng, batch * p, e);
        while PatchAlignment::new(&zn, &masks, batch, e).unwrap().value <= 0.0 {
            zn = unit_rows(&mut rng, batch * p, e);
        }
        let pal = PatchAlignment::new(&zn, &masks, batch, e).unwrap();
        let g = pal.grad(&masks, e, 1.0);
        let h = 1e-3f32;
        for i in 0..zn.len() {
            let mut zp = zn.clone();
            zp[i] += h;
            let mut zm = zn.clone();
            zm[i] -= h;
            let fd = (pal_bruteforce(&zp, &masks, batch, e)
                - pal_bruteforce(&zm, &masks, batch, e))
                / (2.0 * f64::from(h));
            assert!(
                (fd - f64::from(g[i])).abs() < 1e-3,
                "element {i}: {fd} vs {}",
                g[i]
            );
        }
    }

    #[test]
    fn focal_and_l1_match_definitions_and_clamp() {
        let p = [0.2f32, 0.9, 0.5, 1.0, 0.0];
        let t = [0.0f32, 1.0, 1.0, 0.0, 0.0];
        let fl = focal_loss(&p, &t).unwrap();
        let by_hand = |p: f64, t: f64| {
            let bce = -(t * p.ln().max(-100.0) + (1.0 - t) * (1.0 - p).ln().max(-100.0));
            let pt = p * t + (1.0 - p) * (1.0 - t);
            bce * (1.0 - pt).powi(4)
        };
        let want: f64 = p
            .iter()
            .zip(&t)
            .map(|(&a, &b)| by_hand(f64::from(a), f64::from(b)))
            .sum::<f64>()
            / 5.0;
        assert!((fl.value - want).abs() < 1e-9, "{} vs {want}", fl.value);
        // p = 1, t = 0: BCE is clamped at 100 and the weight is 1.
        assert!(want > 100.0 / 5.0 - 1e-6);
        for i in 0..3 {
            let h = 1e-4;
            let f = |d: f64| by_hand(f64::from(p[i]) + d, f64::from(t[i])) / 5.0;
            let fd = (f(h) - f(-h)) / (2.0 * h);
            assert!((fd - f64::from(fl.grad[i])).abs() < 1e-4 * fd.abs().max(1.0));
        }
        let l1 = l1_loss(&p, &t).unwrap();
        assert!((l1.value - (0.2 + 0.1 + 0.5 + 1.0 + 0.0) / 5.0).abs() < 1e-7);
        assert_eq!(l1.grad, vec![0.2, -0.2, -0.2, 0.2, 0.0]);
        assert!(focal_loss(&p, &t[..2]).is_err());
    }

    #[test]
    fn mask_downsampling_binarises_and_keeps_exact_half() {
        // 4x4 mask to 2x2: each output averages a 2x2 block (taps at 0.5).
        let mut m = vec![0f32; 16];
        m[0] = 1.0; // top-left block: mean 0.25 → 0
        m[2] = 1.0;
        m[3] = 1.0; // top-right block: two of four ones → exactly 0.5
        for v in &mut m[8..10] {
            *v = 1.0;
        }
        m[12] = 1.0;
        m[13] = 0.6; // bottom-left: (1 + 1 + 1 + 0.6)/4 = 0.9 → 1
        let d = downsample_mask(&m, 4, 2).unwrap();
        assert_eq!(d, vec![0.0, 0.5, 1.0, 0.0]);
        assert!(downsample_mask(&m, 5, 2).is_err());
    }
}
