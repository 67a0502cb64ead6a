//! The training losses of SPEC §8 on host slices, and the ground-truth masks.
//!
//! The losses themselves are backend ops (`focal_loss`, `l1_loss`,
//! `patch_alignment` of [`crate::backend::Backend`]) whose reference is the CPU backend
//! (`src/backend/cpu/loss.rs`, with the math); [`focal_loss`] and [`l1_loss`] run that
//! reference on host slices for callers outside a training step.
//!
//! Ground truth: the `S x S` mask bilinearly downsampled to `g x g` (align_corners = false, no
//! antialias), then `< 0.5 → 0`, `> 0.5 → 1`, exactly 0.5 kept.

use crate::backend::cpu::loss;
use crate::backend::ColumnBlock;
use crate::model::pos_embed::bilinear_taps;
use anyhow::{ensure, Result};

/// A loss value and `∂loss/∂input`, one per input element.
pub struct LossGrad {
    pub value: f64,
    pub grad: Vec<f32>,
}

type LossOp = fn(&mut [f32], &mut [f32], &[f32], &[f32], ColumnBlock, f32) -> Result<()>;

fn host_loss(what: &str, op: LossOp, p: &[f32], t: &[f32]) -> Result<LossGrad> {
    ensure!(
        p.len() == t.len() && !p.is_empty(),
        "{what}: {} predictions and {} targets (need equal, non-zero counts)",
        p.len(),
        t.len()
    );
    let block = ColumnBlock {
        rows: 1,
        stride: p.len(),
        offset: 0,
        cols: p.len(),
    };
    let (mut value, mut grad) = ([0f32], vec![0f32; p.len()]);
    op(&mut value, &mut grad, p, t, block, 1.0)?;
    Ok(LossGrad {
        value: f64::from(value[0]),
        grad,
    })
}

/// `FL(p, t)`, mean over the elements.
pub fn focal_loss(p: &[f32], t: &[f32]) -> Result<LossGrad> {
    host_loss("focal loss", loss::focal_loss, p, t)
}

/// `mean |p − t|`.
pub fn l1_loss(p: &[f32], t: &[f32]) -> Result<LossGrad> {
    host_loss("L1 loss", loss::l1_loss, p, t)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::loss::alignment_state_layout;
    use crate::backend::cpu::CpuBackend;
    use crate::backend::Backend;
    use crate::rng::Rng;

    /// `l = −1` where `M = 0`, else `M`.
    fn patch_label(m: f32) -> f32 {
        if m == 0.0 {
            -1.0
        } else {
            m
        }
    }

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

    /// `[batch, 1 + p, e]` tokens (a random CLS row first) whose patch rows have random norms
    /// and the unit directions of `zn: [batch, p, e]`.
    fn with_cls(rng: &mut Rng, zn: &[f32], batch: usize, e: usize) -> Vec<f32> {
        let p = zn.len() / (batch * e);
        let mut z = Vec::with_capacity(batch * (1 + p) * e);
        for img in zn.chunks_exact(p * e) {
            z.extend((0..e).map(|_| rng.normal()));
            for row in img.chunks_exact(e) {
                let s = 0.5 + rng.uniform() as f32;
                z.extend(row.iter().map(|v| v * s));
            }
        }
        z
    }

    /// The backend op on `z: [batch, 1 + p, e]`: `(value, dz)` for a weight of 1.
    fn pal_op(z: &[f32], masks: &[f32], batch: usize, e: usize) -> (f64, Vec<f32>) {
        let be = CpuBackend::new(Some(1)).unwrap();
        let tokens = z.len() / (batch * e);
        let (len, _, _) = alignment_state_layout(batch, tokens - 1, e);
        let (mut value, mut state, mut dz) = (vec![0f32], vec![0f32; len], vec![0f32; z.len()]);
        be.patch_alignment(
            &mut value,
            &mut state,
            &z.to_vec(),
            &masks.to_vec(),
            batch,
            tokens,
            e,
        )
        .unwrap();
        be.patch_alignment_backward(
            &mut dz,
            &state,
            &z.to_vec(),
            &masks.to_vec(),
            batch,
            tokens,
            e,
            1.0,
        )
        .unwrap();
        (f64::from(value[0]), dz)
    }

    /// `z` with its patch rows L2-normalised and CLS dropped.
    fn normalised(z: &[f32], batch: usize, e: usize) -> Vec<f32> {
        let tokens = z.len() / (batch * e);
        z.chunks_exact(tokens * e)
            .flat_map(|img| img[e..].chunks_exact(e))
            .flat_map(|r| {
                let n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
                r.iter().map(move |v| v / n)
            })
            .collect()
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
        let z = with_cls(&mut rng, &zn, batch, e);
        let (value, _) = pal_op(&z, &masks, batch, e);
        let want = pal_bruteforce(&zn, &masks, batch, e);
        assert!((value - want).abs() < 1e-6, "{value} vs {want}");
        // No zero anywhere: 0. All normal: no −1 pair, the value is −mean(+1) → clamped to 0.
        let ones = vec![1.0; batch * p];
        assert_eq!(pal_op(&z, &ones, batch, e).0, 0.0);
        let zeros = vec![0.0; batch * p];
        let (all_normal, dz) = pal_op(&z, &zeros, batch, e);
        assert_eq!(all_normal, 0.0);
        assert!(dz.iter().all(|&g| g == 0.0));
        let be = CpuBackend::new(Some(1)).unwrap();
        let (len, _, _) = alignment_state_layout(batch, p, e);
        let err = be
            .patch_alignment(
                &mut vec![0.0],
                &mut vec![0.0; len],
                &z,
                &masks[1..].to_vec(),
                batch,
                p + 1,
                e,
            )
            .unwrap_err();
        assert!(err.to_string().contains("masks"), "{err}");
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
        let draw = |rng: &mut Rng| {
            let zn = unit_rows(rng, batch * p, e);
            with_cls(rng, &zn, batch, e)
        };
        let mut z = draw(&mut rng);
        while pal_op(&z, &masks, batch, e).0 <= 0.0 {
            z = draw(&mut rng);
        }
        let (_, dz) = pal_op(&z, &masks, batch, e);
        let f = |z: &[f32]| pal_bruteforce(&normalised(z, batch, e), &masks, batch, e);
        let h = 1e-3f32;
        for i in 0..z.len() {
            let mut zp = z.clone();
            zp[i] += h;
            let mut zm = z.clone();
            zm[i] -= h;
            let fd = (f(&zp) - f(&zm)) / (2.0 * f64::from(h));
            assert!(
                (fd - f64::from(dz[i])).abs() < 1e-3,
                "element {i}: {fd} vs {}",
                dz[i]
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
        // The value comes back as f32.
        assert!(
            (fl.value - want).abs() < 1e-7 * want,
            "{} vs {want}",
            fl.value
        );
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
