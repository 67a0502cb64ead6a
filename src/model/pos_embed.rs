//! Position-embedding interpolation (SPEC §2): the CLS row is kept, the patch rows, trained on a
//! `g0 x g0` grid, are resized to `g x g` like torch `F.interpolate(mode="bilinear",
//! align_corners=False)` without antialias. Done once per model on the host.

/// Source sample positions for one output axis: `(i0, i1, lambda)` per output index.
pub fn bilinear_taps(input: usize, output: usize) -> Vec<(usize, usize, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input - 1);
            let i1 = (i0 + 1).min(input - 1);
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

/// `pos: [1 + g0*g0, dim]` → `[1 + g*g, dim]`.
pub fn interpolate_pos_embedding(pos: &[f32], dim: usize, g0: usize, g: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity((1 + g * g) * dim);
    out.extend_from_slice(&pos[..dim]);
    let patches = &pos[dim..];
    let taps = bilinear_taps(g0, g);
    let row = |h: usize, w: usize| &patches[(h * g0 + w) * dim..(h * g0 + w + 1) * dim];
    for &(y0, y1, ly) in &taps {
        for &(x0, x1, lx) in &taps {
            let (a, b, c, d) = (row(y0, x0), row(y0, x1), row(y1, x0), row(y1, x1));
            for k in 0..dim {
                let top = (1.0 - lx) * a[k] + lx * b[k];
                let bottom = (1.0 - lx) * c[k] + lx * d[k];
                out.push((1.0 - ly) * top + ly * bottom);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_grid_is_identity_and_cls_kept() {
        let pos: Vec<f32> = (0..(1 + 9) * 2).map(|v| v as f32 * 0.5).collect();
        assert_eq!(interpolate_pos_embedding(&pos, 2, 3, 3), pos);
    }

    #[test]
    fn upsampling_matches_hand_computed_torch_values() {
        // torch: F.interpolate(tensor([[0,1],[2,3]]).view(1,1,2,2), size=(4,4), mode="bilinear")
        // row 0 = [0, 0.25, 0.75, 1]; row 1 = [0.5, 0.75, 1.25, 1.5]
        let pos = vec![9.0, 0.0, 1.0, 2.0, 3.0];
        let out = interpolate_pos_embedding(&pos, 1, 2, 4);
        assert_eq!(out[0], 9.0);
        assert_eq!(&out[1..5], &[0.0, 0.25, 0.75, 1.0]);
        assert_eq!(&out[5..9], &[0.5, 0.75, 1.25, 1.5]);
        assert_eq!(&out[13..17], &[2.0, 2.25, 2.75, 3.0]);
    }
}
