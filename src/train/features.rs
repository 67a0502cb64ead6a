//! The frozen-vision feature cache (SPEC §8): CLIP is frozen and preprocessing deterministic,
//! so each training image's feature-layer outputs (`layers x (1 + g²) x d`) and its
//! downsampled mask are computed once, the first time a batch needs them, and reused by every
//! later epoch. Features are stored as little-endian f32 (exact) or f16 (half the bytes,
//! rounded to nearest: relative error ≤ 2⁻¹¹), in RAM when they fit the budget, otherwise in a
//! memory-mapped scratch file (deleted when the cache is dropped). Batches read back f32.

use super::losses::downsample_mask;
use super::step::Batch;
use crate::backend::Backend;
use crate::data::pipeline::ordered_map;
use crate::data::preprocess::{load_image, load_mask};
use crate::model::checkpoint::Checkpoint;
use crate::model::vision::VisionTower;
use anyhow::{bail, ensure, Context, Result};
use half::f16;
use memmap2::MmapMut;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// One training image.
#[derive(Clone, Debug)]
pub struct TrainSample {
    pub path: PathBuf,
    /// 1 anomalous, 0 normal.
    pub label: f32,
    pub mask: Option<PathBuf>,
    /// Every non-zero mask value means 255 (VisA).
    pub binarise_mask: bool,
}

/// How cached features are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CachePrecision {
    F32,
    F16,
}

impl CachePrecision {
    pub fn bytes(self) -> usize {
        match self {
            CachePrecision::F32 => 4,
            CachePrecision::F16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CachePrecision::F32 => "f32",
            CachePrecision::F16 => "f16",
        }
    }
}

enum Store {
    Ram(Vec<u8>),
    Mapped {
        map: MmapMut,
        _file: File,
        path: PathBuf,
    },
}

pub struct FeatureCache<B: Backend> {
    tower: VisionTower<B>,
    samples: Vec<TrainSample>,
    side: usize,
    grid: usize,
    layers: usize,
    /// Values per image and layer: `(1 + g²)·d`.
    per_layer: usize,
    precision: CachePrecision,
    store: Store,
    /// `[g²]` per image once computed.
    masks: Vec<Option<Vec<f32>>>,
    /// Images whose vision features were computed (the rest are computed when first needed).
    pub computed: usize,
}

impl<B: Backend> FeatureCache<B> {
    /// A cache for `samples` at image size `side`, stored as f32. Features take
    /// `samples·layers·(1+g²)·d·4` bytes: in RAM up to `ram_budget` bytes, else in a scratch
    /// file under `spill_dir`.
    pub fn new(
        be: &B,
        ckpt: &Checkpoint,
        samples: Vec<TrainSample>,
        side: usize,
        layers: &[usize],
        ram_budget: u64,
        spill_dir: &Path,
    ) -> Result<Self> {
        Self::with_precision(
            be,
            ckpt,
            samples,
            side,
            layers,
            ram_budget,
            spill_dir,
            CachePrecision::F32,
        )
    }

    /// [`FeatureCache::new`] storing `precision.bytes()` bytes per value.
    #[allow(clippy::too_many_arguments)]
    pub fn with_precision(
        be: &B,
        ckpt: &Checkpoint,
        samples: Vec<TrainSample>,
        side: usize,
        layers: &[usize],
        ram_budget: u64,
        spill_dir: &Path,
        precision: CachePrecision,
    ) -> Result<Self> {
        let cfg = &ckpt.config;
        let grid = side / cfg.patch;
        let per_layer = (1 + grid * grid) * cfg.vision_width;
        let total = samples.len() * layers.len() * per_layer;
        let bytes = total as u64 * precision.bytes() as u64;
        let store = if bytes <= ram_budget {
            Store::Ram(vec![0u8; bytes as usize])
        } else {
            std::fs::create_dir_all(spill_dir)
                .with_context(|| format!("cannot create {}", spill_dir.display()))?;
            let path = spill_dir.join(format!(
                "afclip-features-{}.{}",
                std::process::id(),
                precision.name()
            ));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .with_context(|| format!("cannot create feature cache file {}", path.display()))?;
            file.set_len(bytes)
                .with_context(|| format!("cannot size {} to {bytes} bytes", path.display()))?;
            // SAFETY: the file was created by this process for this cache alone and is not
            // resized while mapped.
            let map = unsafe { MmapMut::map_mut(&file) }
                .with_context(|| format!("cannot map {}", path.display()))?;
            Store::Mapped {
                map,
                _file: file,
                path,
            }
        };
        Ok(Self {
            tower: VisionTower::upload(be, cfg, &ckpt.vision, side, layers)?,
            masks: vec![None; samples.len()],
            samples,
            side,
            grid,
            layers: layers.len(),
            per_layer,
            precision,
            store,
            computed: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Whether features are in a memory-mapped file rather than RAM.
    pub fn is_mapped(&self) -> bool {
        matches!(self.store, Store::Mapped { .. })
    }

    pub fn precision(&self) -> CachePrecision {
        self.precision
    }

    /// Bytes the stored features take (RAM or file).
    pub fn bytes(&self) -> usize {
        self.bytes_of().len()
    }

    fn bytes_of(&self) -> &[u8] {
        match &self.store {
            Store::Ram(v) => v,
            Store::Mapped { map, .. } => map,
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.store {
            Store::Ram(v) => v,
            Store::Mapped { map, .. } => map,
        }
    }

    fn per_image(&self) -> usize {
        self.layers * self.per_layer
    }

    /// Stores `values` as image `index`'s `layer`; with f16 a value beyond f16's range is an
    /// error rather than an infinity.
    fn write(&mut self, index: usize, layer: usize, values: &[f32]) -> Result<()> {
        let w = self.precision.bytes();
        let start = (index * self.per_image() + layer * self.per_layer) * w;
        let precision = self.precision;
        let bytes = &mut self.bytes_mut()[start..start + values.len() * w];
        match precision {
            CachePrecision::F32 => {
                for (dst, v) in bytes.chunks_exact_mut(4).zip(values) {
                    dst.copy_from_slice(&v.to_le_bytes());
                }
            }
            CachePrecision::F16 => {
                for (dst, &v) in bytes.chunks_exact_mut(2).zip(values) {
                    let h = f16::from_f32(v);
                    if !h.is_finite() {
                        bail!(
                            "feature value {v} (layer {}) is outside the f16 range of ±{}: \
                             use --cache-precision f32",
                            layer + 1,
                            f16::MAX
                        );
                    }
                    dst.copy_from_slice(&h.to_le_bytes());
                }
            }
        }
        Ok(())
    }

    fn read(&self, index: usize, layer: usize, out: &mut Vec<f32>) {
        let w = self.precision.bytes();
        let start = (index * self.per_image() + layer * self.per_layer) * w;
        let bytes = &self.bytes_of()[start..start + self.per_layer * w];
        match self.precision {
            CachePrecision::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            CachePrecision::F16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
        }
    }

    /// Computes what `indices` still lack: decode + preprocess on the pipeline, the vision
    /// tower in one batch, the masks.
    fn ensure_computed(&mut self, be: &B, indices: &[usize]) -> Result<()> {
        let missing: Vec<usize> = indices
            .iter()
            .copied()
            .filter(|&i| self.masks[i].is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let side = self.side;
        let grid = self.grid;
        let todo: Vec<TrainSample> = missing.iter().map(|&i| self.samples[i].clone()).collect();
        let rx = ordered_map(todo, missing.len(), move |s: &TrainSample| {
            let pixels = load_image(&s.path, side)?.tensor;
            let mask = match &s.mask {
                Some(m) => {
                    let full = load_mask(m, side, s.binarise_mask)
                        .with_context(|| format!("mask of {}", s.path.display()))?;
                    downsample_mask(&full, side, grid)?
                }
                None => vec![0.0; grid * grid],
            };
            Ok::<_, anyhow::Error>((pixels, mask))
        });
        let mut pixels = Vec::with_capacity(missing.len() * 3 * side * side);
        let mut masks = Vec::with_capacity(missing.len());
        for r in rx.iter() {
            let (p, m) = r?;
            pixels.extend_from_slice(&p);
            masks.push(m);
        }
        ensure!(
            masks.len() == missing.len(),
            "feature cache: the decode pipeline delivered {} of {} images",
            masks.len(),
            missing.len()
        );
        let features = self
            .tower
            .forward(be, &be.upload(&pixels)?, missing.len())?;
        for (layer, f) in features.iter().enumerate() {
            let host = be.download(f)?;
            for (k, &i) in missing.iter().enumerate() {
                self.write(
                    i,
                    layer,
                    &host[k * self.per_layer..(k + 1) * self.per_layer],
                )
                .with_context(|| format!("feature cache: {}", self.samples[i].path.display()))?;
            }
        }
        for (&i, m) in missing.iter().zip(masks) {
            self.masks[i] = Some(m);
        }
        self.computed += missing.len();
        Ok(())
    }

    /// The batch of `indices` (computing any features not cached yet).
    pub fn batch(&mut self, be: &B, indices: &[usize]) -> Result<Batch> {
        self.ensure_computed(be, indices)?;
        let mut features = vec![Vec::with_capacity(indices.len() * self.per_layer); self.layers];
        let mut masks = Vec::with_capacity(indices.len() * self.grid * self.grid);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            for (layer, f) in features.iter_mut().enumerate() {
                self.read(i, layer, f);
            }
            if let Some(m) = &self.masks[i] {
                masks.extend_from_slice(m);
            }
            labels.push(self.samples[i].label);
        }
        Ok(Batch {
            size: indices.len(),
            features,
            labels,
            masks,
        })
    }
}

impl<B: Backend> Drop for FeatureCache<B> {
    fn drop(&mut self) {
        if let Store::Mapped { path, .. } = &self.store {
            // Best effort: a scratch file left behind is harmless.
            let _ = std::fs::remove_file(path);
        }
    }
}
