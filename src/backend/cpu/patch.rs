//! Patch embedding glue around the patch GEMM.
//!
//! `patch_im2col`: `images: [batch, 3, side, side]` → `cols: [batch, g*g, 3*p*p]`,
//! `g = ⌊side / p⌋` (as a stride-`p` conv: trailing pixels are dropped),
//! `cols[b, h*g + w, (c*p + i)*p + j] = images[b, c, h*p + i, w*p + j]`, so a conv weight
//! `[d, 3, p, p]` flattened to `[d, 3*p*p]` multiplies it as a `linear`.
//!
//! `embed_tokens`: `x: [batch, 1 + n, dim]`, `patches: [batch, n, dim]`, `cls: [dim]`,
//! `pos: [1 + n, dim]`; `x[b, 0] = cls + pos[0]`, `x[b, 1 + i] = patches[b, i] + pos[1 + i]`.

use anyhow::{ensure, Result};
use rayon::prelude::*;

use super::check_len;

const CHANNELS: usize = 3;

pub(crate) fn patch_im2col(
    cols: &mut [f32],
    images: &[f32],
    batch: usize,
    side: usize,
    patch: usize,
) -> Result<()> {
    ensure!(patch > 0, "patch_im2col: patch size must be positive");
    let g = side / patch;
    let row_len = CHANNELS * patch * patch;
    check_len(
        "patch_im2col",
        "images",
        images.len(),
        &[batch, CHANNELS, side, side],
    )?;
    check_len("patch_im2col", "cols", cols.len(), &[batch, g * g, row_len])?;
    if cols.is_empty() {
        return Ok(());
    }
    // One task per (image, patch row h): `g` consecutive rows of `cols`.
    cols.par_chunks_mut(g * row_len)
        .enumerate()
        .for_each(|(bh, dst)| {
            let (b, h) = (bh / g, bh % g);
            for (w, row) in dst.chunks_exact_mut(row_len).enumerate() {
                for (ci, seg) in row.chunks_exact_mut(patch).enumerate() {
                    let (c, i) = (ci / patch, ci % patch);
                    let src = ((b * CHANNELS + c) * side + h * patch + i) * side + w * patch;
                    seg.copy_from_slice(&images[src..src + patch]);
                }
            }
        });
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn embed_tokens(
    x: &mut [f32],
    patches: &[f32],
    cls: &[f32],
    pos: &[f32],
    batch: usize,
    n_patches: usize,
    dim: usize,
) -> Result<()> {
    let tokens = n_patches + 1;
    check_len("embed_tokens", "x", x.len(), &[batch, tokens, dim])?;
    check_len(
        "embed_tokens",
        "patches",
        patches.len(),
        &[batch, n_patches, dim],
    )?;
    check_len("embed_tokens", "cls", cls.len(), &[dim])?;
    check_len("embed_tokens", "pos", pos.len(), &[tokens, dim])?;
    if x.is_empty() {
        return Ok(());
    }
    x.par_chunks_mut(dim).enumerate().for_each(|(r, dst)| {
        let (b, t) = (r / tokens, r % tokens);
        let p = &pos[t * dim..(t + 1) * dim];
        let src = if t == 0 {
            cls
        } else {
            let i = b * n_patches + t - 1;
            &patches[i * dim..(i + 1) * dim]
        };
        for ((o, &s), &e) in dst.iter_mut().zip(src).zip(p) {
            *o = s + e;
        }
    });
    Ok(())
}
