//! MVTec AD and the sets laid out like it: MPDD, DTD-Synthetic and BTAD.
//!
//! ```text
//! <root>/<category>/train/<normal>/*           normal training images (folder optional)
//!                  /test/<normal>/*            normal test images
//!                  /test/<defect>/*            anomalous test images
//!                  /ground_truth/<defect>/<stem>_mask.* or <stem>.*   their masks
//! ```
//! `<normal>` is `good` (MVTec AD, MPDD, DTD-Synthetic) or `ok` (BTAD, whose one defect folder
//! is `ko` and whose masks are named like their images). A category is a subfolder of the root
//! that has a `test/` folder. Every anomalous test image must have its mask.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::{
    image_files, resolve_root, select_names, sort_samples, subdirs, Category, DatasetKind,
    MaskIndex, Sample,
};

/// Mask name suffixes tried in turn (`000_mask.png`, then `000.png`).
const MASK_SUFFIXES: &[&str] = &["_mask", ""];

fn normal_folder(kind: DatasetKind) -> &'static str {
    match kind {
        DatasetKind::Btad => "ok",
        _ => "good",
    }
}

fn has_test_categories(dir: &Path) -> bool {
    subdirs(dir)
        .map(|dirs| dirs.iter().any(|(_, path)| path.join("test").is_dir()))
        .unwrap_or(false)
}

/// Reads an MVTec-like set; `kind` is one of Mvtec, Mpdd, Dtd, Btad.
pub fn load(kind: DatasetKind, root: &Path, requested: Option<&[String]>) -> Result<Vec<Category>> {
    let root = resolve_root(
        kind,
        root,
        "category folders with a test/ folder",
        has_test_categories,
    )?;
    let candidates: Vec<(String, PathBuf)> = subdirs(&root)?
        .into_iter()
        .filter(|(_, path)| path.join("test").is_dir())
        .collect();
    let names: Vec<String> = candidates.iter().map(|(name, _)| name.clone()).collect();
    let chosen = select_names(&names, requested, &root)?;
    candidates
        .into_iter()
        .filter(|(name, _)| chosen.binary_search(name).is_ok())
        .map(|(name, dir)| load_category(kind, name, &dir))
        .collect()
}

fn load_category(kind: DatasetKind, name: String, dir: &Path) -> Result<Category> {
    let normal = normal_folder(kind);
    let train_dir = dir.join("train").join(normal);
    let mut train: Vec<Sample> = if train_dir.is_dir() {
        image_files(&train_dir)?
            .into_iter()
            .map(Sample::normal)
            .collect()
    } else {
        Vec::new()
    };
    let mut test = Vec::new();
    for (folder, path) in subdirs(&dir.join("test"))? {
        let images = image_files(&path)?;
        if folder == normal {
            test.extend(images.into_iter().map(Sample::normal));
            continue;
        }
        let mask_dir = dir.join("ground_truth").join(&folder);
        if !mask_dir.is_dir() {
            bail!(
                "mask folder {} missing for the test images in {}",
                mask_dir.display(),
                path.display()
            );
        }
        let masks = MaskIndex::read(&mask_dir)?;
        for image in images {
            let mask = masks.find(&image, MASK_SUFFIXES)?;
            test.push(Sample::anomalous(image, Some(mask)));
        }
    }
    sort_samples(&mut train);
    sort_samples(&mut test);
    Ok(Category { name, train, test })
}
