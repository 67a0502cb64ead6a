//! Memory-mapped safetensors files: named tensors read as `f32` with shape checks.

use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::fs::File;
use std::path::{Path, PathBuf};

/// One safetensors file, memory-mapped for its lifetime.
pub struct TensorFile {
    path: PathBuf,
    mmap: Mmap,
}

/// A tensor read out of a [`TensorFile`], converted to `f32`.
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl TensorFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: the file is opened read-only and kept mapped only while this value lives;
        // a concurrent writer truncating it is outside what the tool supports.
        let mmap = unsafe { Mmap::map(&file) }
            .with_context(|| format!("cannot memory-map {}", path.display()))?;
        SafeTensors::deserialize(&mmap)
            .map_err(|e| anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn view(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.mmap).expect("validated when the file was opened")
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.view().names().into_iter().cloned().collect();
        names.sort();
        names
    }

    pub fn contains(&self, name: &str) -> bool {
        self.view().tensor(name).is_ok()
    }

    /// The value of `key` in the file's `__metadata__`, if present.
    pub fn metadata(&self, key: &str) -> Option<String> {
        let (_, meta) = SafeTensors::read_metadata(&self.mmap).ok()?;
        meta.metadata().as_ref()?.get(key).cloned()
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.view().tensor(name).ok().map(|t| t.shape().to_vec())
    }

    /// Reads `name` as `f32`, requiring `expected` as its shape (a `[1, n]`/`[n]` mismatch is
    /// still an error: callers state what they accept). NaN or Inf is an error.
    pub fn read(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let t = self.read_any(name)?;
        if t.shape != expected {
            bail!(
                "{}: tensor {name} has shape {:?}, expected {:?}",
                self.path.display(),
                t.shape,
                expected
            );
        }
        Ok(t.data)
    }

    /// Reads `name` as `f32` whatever its shape.
    pub fn read_any(&self, name: &str) -> Result<HostTensor> {
        let view = self.view();
        let t = view
            .tensor(name)
            .map_err(|_| anyhow!("{}: missing tensor {name}", self.path.display()))?;
        let bytes = t.data();
        let data: Vec<f32> = match t.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => bail!(
                "{}: tensor {name} has dtype {other:?}; only F32, F16 and BF16 are supported",
                self.path.display()
            ),
        };
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            bail!(
                "{}: tensor {name} holds a non-finite value ({}) at element {i}",
                self.path.display(),
                data[i]
            );
        }
        Ok(HostTensor {
            shape: t.shape().to_vec(),
            data,
        })
    }
}

/// Writes `f32` tensors to a safetensors file (names sorted by the format).
pub fn write_f32(path: &Path, tensors: &[(String, Vec<usize>, &[f32])]) -> Result<()> {
    write_f32_with_metadata(path, tensors, &[])
}

/// [`write_f32`] with `(key, value)` pairs in the file's `__metadata__`.
pub fn write_f32_with_metadata(
    path: &Path,
    tensors: &[(String, Vec<usize>, &[f32])],
    metadata: &[(&str, &str)],
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| anyhow!("tensor {name}: {e}"))
        })
        .collect::<Result<_>>()?;
    let tmp = path.with_extension("safetensors.tmp");
    let metadata = (!metadata.is_empty()).then(|| {
        metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    });
    safetensors::serialize_to_file(views, &metadata, &tmp)
        .map_err(|e| anyhow!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
}
