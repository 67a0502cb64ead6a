//! Memory banks (SPEC §7): per (layer, window) set, the raw aggregated patch features `c` of k
//! normal reference images (no adaptor, no `ln_post`, no projection; CLS left out), each row
//! L2-normalised: `k·N` rows of width `d`.
//!
//! File: safetensors, one f32 tensor `bank.layer{L}.r{R}` `[k·N, d]` per set, and metadata
//! that pins the features the rows came from — the model's vision fingerprint
//! ([`super::fingerprint`]), image size, feature layers, windows, width — plus the reference
//! images (for the record) and the checkpoint path (informational). [`Bank::check_model`]
//! refuses a bank whose features another model, image size or layer choice would not
//! reproduce, naming the difference.

use crate::backend::Backend;
use crate::data::pipeline::ordered_map;
use crate::data::preprocess::load_rgb;
use crate::model::afclip::{AfClip, WINDOWS};
use crate::model::tensors::TensorFile;
use crate::model::vision::Images;
use anyhow::{anyhow, bail, ensure, Context, Result};
use safetensors::Dtype;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The format tag of a bank file's metadata.
pub const FORMAT: &str = "afclip-bank/1";

/// What a bank's rows depend on, and where they came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BankMeta {
    /// [`AfClip::fingerprint`] of the model the features came from.
    pub fingerprint: String,
    /// The checkpoint file (informational).
    pub model: String,
    pub image_size: usize,
    pub layers: Vec<usize>,
    pub width: usize,
    /// Patch tokens per image (`g²`).
    pub patches: usize,
    /// The reference images, in row order.
    pub images: Vec<String>,
}

/// Memory banks of one set of reference images.
#[derive(Clone, Debug)]
pub struct Bank {
    pub meta: BankMeta,
    /// One per set (layer-major, then [`WINDOWS`]), `[rows, width]`, rows L2-normalised.
    pub sets: Vec<Vec<f32>>,
}

fn set_name(layer: usize, window: usize) -> String {
    format!("bank.layer{layer}.r{window}")
}

fn join(v: &[usize]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl Bank {
    /// Rows per set (`images · patches`).
    pub fn rows(&self) -> usize {
        self.meta.images.len() * self.meta.patches
    }

    /// Builds the banks of `images` with `model` (batches of `batch_size`). Every image must
    /// decode: a bank is never silently built from fewer references than named.
    pub fn build<B: Backend>(
        model: &AfClip<B>,
        images: &[PathBuf],
        names: Vec<String>,
        model_path: &str,
        batch_size: usize,
    ) -> Result<Self> {
        ensure!(!images.is_empty(), "a memory bank needs at least one image");
        ensure!(batch_size > 0, "batch size must be at least 1");
        ensure!(names.len() == images.len(), "one name per reference image");
        let side = model.image_size();
        let (width, grid) = (model.width(), model.grid());
        let (patches, tokens) = (grid * grid, grid * grid + 1);
        let mut sets = vec![Vec::with_capacity(images.len() * patches * width); model.sets()];
        let rx = ordered_map(images.to_vec(), batch_size * 2, move |p: &PathBuf| {
            load_rgb(p, side).with_context(|| format!("reference image {}", p.display()))
        });
        let mut pixels = Vec::with_capacity(batch_size * side * side * 3);
        let mut n = 0;
        let mut flush = |pixels: &mut Vec<u8>, n: &mut usize| -> Result<()> {
            if *n == 0 {
                return Ok(());
            }
            model.for_each_set(Images::Rgb(pixels), *n, &mut |set, c| {
                let host = model.backend().download(c)?;
                for image in host.chunks_exact(tokens * width) {
                    for row in image[width..].chunks_exact(width) {
                        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                        ensure!(
                            norm > 0.0 && norm.is_finite(),
                            "a reference feature vector has norm {norm}"
                        );
                        sets[set].extend(row.iter().map(|v| v / norm));
                    }
                }
                Ok(())
            })?;
            pixels.clear();
            *n = 0;
            Ok(())
        };
        for loaded in rx.iter() {
            pixels.extend_from_slice(&loaded?.data);
            n += 1;
            if n == batch_size {
                flush(&mut pixels, &mut n)?;
            }
        }
        flush(&mut pixels, &mut n)?;
        Ok(Self {
            meta: BankMeta {
                fingerprint: model.fingerprint().to_string(),
                model: model_path.to_string(),
                image_size: side,
                layers: model.layers().to_vec(),
                width,
                patches,
                images: names,
            },
            sets,
        })
    }

    /// Refuses a bank whose features `model` would not reproduce.
    pub fn check_model<B: Backend>(&self, model: &AfClip<B>) -> Result<()> {
        let m = &self.meta;
        if m.fingerprint != model.fingerprint() {
            bail!(
                "the bank was built with another model (vision fingerprint {}, from {}); this \
                 model's is {}: rebuild the bank with this model",
                m.fingerprint,
                m.model,
                model.fingerprint()
            );
        }
        if m.image_size != model.image_size() {
            bail!(
                "the bank was built at image size {}, the model runs at {}: pass --image-size {} \
                 or rebuild the bank",
                m.image_size,
                model.image_size(),
                m.image_size
            );
        }
        if m.layers != model.layers() {
            bail!(
                "the bank was built from layers {}, the model uses {}: pass --layers {} or \
                 rebuild the bank",
                join(&m.layers),
                join(model.layers()),
                join(&m.layers)
            );
        }
        ensure!(
            m.width == model.width() && m.patches == model.grid() * model.grid(),
            "the bank's rows ({} patches of width {}) do not fit the model ({} of {})",
            m.patches,
            m.width,
            model.grid() * model.grid(),
            model.width()
        );
        Ok(())
    }

    /// Writes the bank (through a temporary file renamed into place).
    pub fn save(&self, path: &Path) -> Result<()> {
        let m = &self.meta;
        let rows = self.rows();
        let mut bytes = Vec::with_capacity(self.sets.len());
        let mut names = Vec::with_capacity(self.sets.len());
        for (i, set) in self.sets.iter().enumerate() {
            ensure!(
                set.len() == rows * m.width,
                "bank set {i} has the wrong size"
            );
            bytes.push(
                set.iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>(),
            );
            names.push(set_name(
                m.layers[i / WINDOWS.len()],
                WINDOWS[i % WINDOWS.len()],
            ));
        }
        let views = names
            .iter()
            .zip(&bytes)
            .map(|(n, b)| {
                safetensors::tensor::TensorView::new(Dtype::F32, vec![rows, m.width], b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| anyhow!("bank tensor {n}: {e}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("fingerprint", m.fingerprint.clone()),
            ("model", m.model.clone()),
            ("image_size", m.image_size.to_string()),
            ("layers", join(&m.layers)),
            ("windows", join(&WINDOWS)),
            ("width", m.width.to_string()),
            ("patches", m.patches.to_string()),
            ("images", serde_json::to_string(&m.images)?),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let tmp = path.with_extension("safetensors.partial");
        safetensors::serialize_to_file(views, &Some(metadata), &tmp)
            .map_err(|e| anyhow!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
    }

    /// Reads a bank written by [`Bank::save`], checking its metadata, shapes and row norms.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_inner(path).with_context(|| format!("memory bank {}", path.display()))
    }

    fn load_inner(path: &Path) -> Result<Self> {
        let md = read_metadata(path)?;
        let get = |k: &str| {
            md.get(k)
                .with_context(|| format!("not an afclip bank: no \"{k}\" in its metadata"))
        };
        let format = get("format")?;
        ensure!(
            format == FORMAT,
            "bank format {format:?} is not supported (expected {FORMAT:?})"
        );
        let num = |k: &str| -> Result<usize> {
            get(k)?
                .parse()
                .with_context(|| format!("metadata \"{k}\" is not a number"))
        };
        let list = |k: &str| -> Result<Vec<usize>> {
            get(k)?
                .split(',')
                .map(|v| v.parse().with_context(|| format!("metadata \"{k}\"")))
                .collect()
        };
        ensure!(
            list("windows")? == WINDOWS,
            "the bank's windows {} are not {}",
            get("windows")?,
            join(&WINDOWS)
        );
        let images: Vec<String> =
            serde_json::from_str(get("images")?).context("metadata \"images\"")?;
        let meta = BankMeta {
            fingerprint: get("fingerprint")?.clone(),
            model: get("model")?.clone(),
            image_size: num("image_size")?,
            layers: list("layers")?,
            width: num("width")?,
            patches: num("patches")?,
            images,
        };
        ensure!(
            !meta.images.is_empty(),
            "the bank names no reference images"
        );
        let file = TensorFile::open(path)?;
        let rows = meta.images.len() * meta.patches;
        let mut sets = Vec::with_capacity(meta.layers.len() * WINDOWS.len());
        for &layer in &meta.layers {
            for &r in &WINDOWS {
                let name = set_name(layer, r);
                let data = file.read(&name, &[rows, meta.width])?;
                if let Some(i) = data
                    .chunks_exact(meta.width)
                    .position(|row| (row.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() > 1e-3)
                {
                    bail!("row {i} of {name} is not L2-normalised");
                }
                sets.push(data);
            }
        }
        Ok(Self { meta, sets })
    }
}

/// The `__metadata__` of a safetensors file (its header only is read).
fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let mut f = std::fs::File::open(path).context("cannot open")?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .context("not a safetensors file (too short)")?;
    let len = u64::from_le_bytes(len);
    ensure!(
        len <= 100 << 20,
        "not a safetensors file (header of {len} bytes)"
    );
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .context("not a safetensors file (truncated header)")?;
    let v: serde_json::Value =
        serde_json::from_slice(&header).context("not a safetensors file (header is not JSON)")?;
    let md = v
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .context("not an afclip bank: the file has no metadata")?;
    md.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|s| (k.clone(), s.to_string()))
                .with_context(|| format!("metadata \"{k}\" is not a string"))
        })
        .collect()
}
