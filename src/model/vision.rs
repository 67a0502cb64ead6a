//! The frozen CLIP vision tower (SPEC §2) on a backend, returning the residual stream after the
//! chosen blocks (no `ln_post`).

use super::checkpoint::{ClipConfig, VisionWeights};
use super::pos_embed::interpolate_pos_embedding;
use super::transformer::{Block, LN_EPS};
use crate::backend::{Backend, Epilogue};
use anyhow::{ensure, Result};

/// A batch of `batch` images at the tower's side `S`, in one of the forms the model takes.
pub enum Images<'a, B: Backend> {
    /// `[batch, S, S, 3]` resized RGB bytes (the scoring path): normalised on the way into the
    /// backend ([`Backend::upload_rgb`]), a quarter of the bytes of the f32 form to copy.
    Rgb(&'a [u8]),
    /// `[batch, 3, S, S]` CLIP-normalised values (golden fixtures, training features).
    Normalised(&'a [f32]),
    /// `[batch, 3, S, S]` normalised, already in the backend's memory (e.g. from
    /// [`Backend::upload_rgb`] on a feeding thread, while the previous batch computes).
    Resident(&'a B::Buf),
}

impl<B: Backend> Clone for Images<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for Images<'_, B> {}

impl<'a, B: Backend> From<&'a [f32]> for Images<'a, B> {
    fn from(pixels: &'a [f32]) -> Self {
        Images::Normalised(pixels)
    }
}

impl<'a, B: Backend> From<&'a Vec<f32>> for Images<'a, B> {
    fn from(pixels: &'a Vec<f32>) -> Self {
        Images::Normalised(pixels)
    }
}

pub struct VisionTower<B: Backend> {
    conv: B::Mat,
    cls: B::Buf,
    /// Position embedding already interpolated to this tower's grid: `[1 + g*g, w]`.
    pos: B::Buf,
    ln_pre_w: B::Buf,
    ln_pre_b: B::Buf,
    /// Blocks up to the deepest feature layer; deeper ones are never run.
    blocks: Vec<Block<B>>,
    width: usize,
    patch: usize,
    side: usize,
    grid: usize,
    /// 1-based block indices whose outputs are features, ascending.
    layers: Vec<usize>,
}

impl<B: Backend> VisionTower<B> {
    pub fn upload(
        be: &B,
        cfg: &ClipConfig,
        w: &VisionWeights,
        side: usize,
        layers: &[usize],
    ) -> Result<Self> {
        let grid = side / cfg.patch;
        let width = cfg.vision_width;
        let depth = *layers.iter().max().expect("layers validated non-empty");
        let pos = interpolate_pos_embedding(&w.pos, width, cfg.trained_grid, grid);
        Ok(Self {
            conv: be.upload_frozen_mat(&w.conv, width, 3 * cfg.patch * cfg.patch)?,
            cls: be.upload(&w.cls)?,
            pos: be.upload(&pos)?,
            ln_pre_w: be.upload(&w.ln_pre_w)?,
            ln_pre_b: be.upload(&w.ln_pre_b)?,
            blocks: w.blocks[..depth]
                .iter()
                .map(|b| Block::upload(be, b, width, cfg.vision_mlp, true))
                .collect::<Result<_>>()?,
            width,
            patch: cfg.patch,
            side,
            grid,
            layers: layers.to_vec(),
        })
    }

    pub fn tokens(&self) -> usize {
        1 + self.grid * self.grid
    }

    /// [`VisionTower::forward`] of `batch` images in any of the forms the model takes.
    pub fn forward_images(
        &self,
        be: &B,
        images: Images<'_, B>,
        batch: usize,
    ) -> Result<Vec<B::Buf>> {
        let uploaded;
        let pixels = match images {
            Images::Resident(pixels) => pixels,
            Images::Rgb(rgb) => {
                uploaded = be.upload_rgb(rgb, batch, self.side, self.side)?;
                &uploaded
            }
            Images::Normalised(pixels) => {
                uploaded = be.upload(pixels)?;
                &uploaded
            }
        };
        self.forward(be, pixels, batch)
    }

    /// `pixels: [batch, 3, side, side]` → one `[batch, tokens, width]` buffer per feature layer.
    pub fn forward(&self, be: &B, pixels: &B::Buf, batch: usize) -> Result<Vec<B::Buf>> {
        let n = self.grid * self.grid;
        let t = self.tokens();
        let w = self.width;
        let p = self.patch;
        ensure!(
            be.buf_len(pixels) == batch * 3 * self.side * self.side,
            "vision tower: pixel buffer holds {} values, expected {batch}x3x{}x{}",
            be.buf_len(pixels),
            self.side,
            self.side
        );
        let mut cols = be.zeros(batch * n * 3 * p * p)?;
        be.patch_im2col(&mut cols, pixels, batch, self.side, p)?;
        let mut patches = be.zeros(batch * n * w)?;
        be.linear(
            &mut patches,
            &cols,
            &self.conv,
            None,
            Epilogue::Store,
            batch * n,
        )?;
        drop(cols);
        let mut embedded = be.zeros(batch * t * w)?;
        be.embed_tokens(&mut embedded, &patches, &self.cls, &self.pos, batch, n, w)?;
        drop(patches);
        let mut x = be.zeros(batch * t * w)?;
        be.layer_norm(
            &mut x,
            &embedded,
            &self.ln_pre_w,
            &self.ln_pre_b,
            batch * t,
            w,
            LN_EPS,
        )?;
        drop(embedded);
        let mut scratch = self.blocks[0].scratch(be, batch * t)?;
        let mut features = Vec::with_capacity(self.layers.len());
        for (i, block) in self.blocks.iter().enumerate() {
            block.forward(be, &mut x, &mut scratch, batch, t, false)?;
            for _ in self.layers.iter().filter(|&&l| l == i + 1) {
                // The r = 1 "aggregation" is the identity: it snapshots the stream.
                let mut copy = be.zeros(batch * t * w)?;
                be.aggregate(&mut copy, &x, batch, self.grid, w, 1, 1.0)?;
                features.push(copy);
            }
        }
        Ok(features)
    }
}
