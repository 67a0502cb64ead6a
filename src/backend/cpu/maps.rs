//! `anomaly_maps` (SPEC §6): `patch: [batch, g, g]` → `maps: [batch, S, S]`, per image
//!
//! 1. bilinear upsample exactly as torch `F.interpolate(mode="bilinear", align_corners=False)`
//!    on f32: `scale = g / S` (f32), `src = max(scale·(dst + 0.5) − 0.5, 0)`,
//!    `i0 = min(⌊src⌋, g − 1)`, `i1 = min(i0 + 1, g − 1)`, `λ1 = clamp(src − i0, 0, 1)`,
//!    `λ0 = 1 − λ1`; `out = λ0ʰ(λ0ʷ x00 + λ1ʷ x01) + λ1ʰ(λ0ʷ x10 + λ1ʷ x11)`;
//! 2. `scipy.ndimage.gaussian_filter(map, sigma)` with its defaults: radius
//!    `int(4·sigma + 0.5)`, weights `exp(−x²/(2σ²))` over `x = −radius..=radius` normalised to
//!    sum 1 (f64), a 1-D correlation along axis 0 and then along axis 1, each computed in f64
//!    as scipy's `correlate1d` does (`w0·x0 + Σ_{j=radius..1} wj·(x−j + x+j)`) and stored as
//!    f32 between the passes; mode "reflect" (`d c b a | a b c d`), which scipy repeats with
//!    period `2n` when the radius exceeds the line (so `i ↦ m = i mod 2n`, `m < n ? m : 2n−1−m`).
//!    `sigma ≤ 1e-15` skips the filter, as scipy does.
//!
//! Images run one after another; the rows of each pass run in parallel.

use anyhow::{ensure, Result};
use rayon::prelude::*;

use super::check_len;
use super::vector::multiversion;

/// scipy's `truncate` default.
const TRUNCATE: f64 = 4.0;
/// scipy skips axes whose sigma is at most this.
pub(crate) const MIN_SIGMA: f64 = 1e-15;

multiversion! {
    /// `acc[i] = w · a[i]` in f64.
    fn acc_init(acc: &mut [f64], w: f64, a: &[f32]) {
        for (o, &v) in acc.iter_mut().zip(a) {
            *o = v as f64 * w;
        }
    }
}

multiversion! {
    /// `acc[i] += w · (a[i] + b[i])` in f64.
    fn acc_pair(acc: &mut [f64], w: f64, a: &[f32], b: &[f32]) {
        for ((o, &u), &v) in acc.iter_mut().zip(a).zip(b) {
            *o += (u as f64 + v as f64) * w;
        }
    }
}

/// One output coordinate's two source samples and their weights.
#[derive(Clone, Copy)]
struct Tap {
    i0: usize,
    i1: usize,
    l0: f32,
    l1: f32,
}

/// torch's `compute_indices_weights_linear` for `align_corners = false`.
fn bilinear_taps(input: usize, output: usize) -> Vec<Tap> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|dst| {
            let src = scale * (dst as f32 + 0.5) - 0.5;
            let src = if src < 0.0 { 0.0 } else { src };
            let i0 = (src.floor() as usize).min(input - 1);
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            Tap {
                i0,
                i1,
                l0: 1.0 - l1,
                l1,
            }
        })
        .collect()
}

/// The half kernel `w[0..=radius]` of scipy's `_gaussian_kernel1d(sigma, 0, radius)`.
pub(crate) fn gaussian_half_kernel(sigma: f64) -> Vec<f64> {
    let radius = (TRUNCATE * sigma + 0.5) as i64;
    let sigma2 = sigma * sigma;
    let phi = |x: i64| (-0.5 / sigma2 * (x * x) as f64).exp();
    let total: f64 = (-radius..=radius).map(phi).sum();
    (0..=radius).map(|x| phi(x) / total).collect()
}

/// scipy's "reflect" extension of index `i` into `0..n`, repeated with period `2n`.
fn reflect(i: isize, n: usize) -> usize {
    let m = i.rem_euclid(2 * n as isize) as usize;
    if m < n {
        m
    } else {
        2 * n - 1 - m
    }
}

fn upsample(map: &mut [f32], patch: &[f32], grid: usize, taps: &[Tap]) {
    let side = taps.len();
    map.par_chunks_mut(side)
        .zip(taps.par_iter())
        .for_each(|(row, ty)| {
            let top = &patch[ty.i0 * grid..(ty.i0 + 1) * grid];
            let bottom = &patch[ty.i1 * grid..(ty.i1 + 1) * grid];
            for (o, tx) in row.iter_mut().zip(taps) {
                let t = tx.l0 * top[tx.i0] + tx.l1 * top[tx.i1];
                let b = tx.l0 * bottom[tx.i0] + tx.l1 * bottom[tx.i1];
                *o = ty.l0 * t + ty.l1 * b;
            }
        });
}

/// Correlation with the symmetric `half` kernel along axis 0 (rows of `src` are lines' samples).
fn filter_axis0(dst: &mut [f32], src: &[f32], side: usize, half: &[f64]) {
    let row = |i: isize| {
        let r = reflect(i, side);
        &src[r * side..(r + 1) * side]
    };
    dst.par_chunks_mut(side).enumerate().for_each_init(
        || vec![0f64; side],
        |acc, (y, out)| {
            let y = y as isize;
            acc_init(acc, half[0], row(y));
            for (j, &w) in half.iter().enumerate().skip(1).rev() {
                let j = j as isize;
                acc_pair(acc, w, row(y - j), row(y + j));
            }
            for (o, &v) in out.iter_mut().zip(acc.iter()) {
                *o = v as f32;
            }
        },
    );
}

/// Correlation with the symmetric `half` kernel along axis 1 (within each row).
fn filter_axis1(dst: &mut [f32], src: &[f32], side: usize, half: &[f64]) {
    let radius = half.len() - 1;
    dst.par_chunks_mut(side)
        .zip(src.par_chunks(side))
        .for_each_init(
            || (vec![0f32; side + 2 * radius], vec![0f64; side]),
            |(ext, acc), (out, line)| {
                for (k, e) in ext.iter_mut().enumerate() {
                    *e = line[reflect(k as isize - radius as isize, side)];
                }
                acc_init(acc, half[0], &ext[radius..radius + side]);
                for (j, &w) in half.iter().enumerate().skip(1).rev() {
                    let left = &ext[radius - j..radius - j + side];
                    let right = &ext[radius + j..radius + j + side];
                    acc_pair(acc, w, left, right);
                }
                for (o, &v) in out.iter_mut().zip(acc.iter()) {
                    *o = v as f32;
                }
            },
        );
}

pub(crate) fn anomaly_maps(
    maps: &mut [f32],
    patch: &[f32],
    batch: usize,
    grid: usize,
    side: usize,
    sigma: f32,
) -> Result<()> {
    ensure!(
        sigma.is_finite() && sigma >= 0.0,
        "anomaly_maps: sigma {sigma} must be finite and non-negative"
    );
    check_len("anomaly_maps", "patch", patch.len(), &[batch, grid, grid])?;
    check_len("anomaly_maps", "maps", maps.len(), &[batch, side, side])?;
    if maps.is_empty() {
        return Ok(());
    }
    ensure!(
        grid > 0,
        "anomaly_maps: cannot upsample an empty {grid}x{grid} grid to {side}x{side}"
    );
    let taps = bilinear_taps(grid, side);
    let sigma = sigma as f64;
    let half = (sigma > MIN_SIGMA).then(|| gaussian_half_kernel(sigma));
    let mut tmp = vec![0f32; if half.is_some() { side * side } else { 0 }];
    for (map, src) in maps
        .chunks_exact_mut(side * side)
        .zip(patch.chunks_exact(grid * grid))
    {
        upsample(map, src, grid, &taps);
        if let Some(half) = &half {
            filter_axis0(&mut tmp, map, side, half);
            filter_axis1(map, &tmp, side, half);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_repeats_with_period_2n() {
        // n = 3, line a b c: extension … c b a | a b c | c b a | a b c …
        let got: Vec<usize> = (-7..10).map(|i| reflect(i, 3)).collect();
        assert_eq!(got, [0, 0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0, 1, 2, 2]);
        assert_eq!(reflect(-1, 1), 0);
    }

    #[test]
    fn gaussian_radius_and_normalisation_match_scipy() {
        let k = gaussian_half_kernel(4.0);
        assert_eq!(k.len(), 17);
        let total = k[0] + 2.0 * k[1..].iter().sum::<f64>();
        assert!((total - 1.0).abs() < 1e-15);
        assert_eq!(gaussian_half_kernel(1.5).len(), 7);
    }

    #[test]
    fn taps_follow_torch_half_pixel_centres() {
        let t = bilinear_taps(2, 4);
        // src = 0.5 (dst + 0.5) − 0.5 = −0.25 → 0, 0.25, 0.75, 1.25
        assert_eq!((t[0].i0, t[0].i1, t[0].l1), (0, 1, 0.0));
        assert_eq!((t[1].i0, t[1].i1, t[1].l1), (0, 1, 0.25));
        assert_eq!((t[2].i0, t[2].i1, t[2].l1), (0, 1, 0.75));
        assert_eq!((t[3].i0, t[3].i1, t[3].l1), (1, 1, 0.25));
    }
}
