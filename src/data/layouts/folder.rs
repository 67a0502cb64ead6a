//! A generic folder of good and defective images.
//!
//! ```text
//! <category>/good/*                                normal test images
//! <category>/<defect>/*                            anomalous test images (any other folder)
//! <category>/train/*                               normal training images (optional)
//! <category>/ground_truth/<defect>/<stem>_mask.* or <stem>.*   masks (optional)
//! ```
//! The root is either one such category (it has `good/`; the category takes the root folder's
//! name) or a folder of them (every subfolder with `good/`). `good`, `train` and
//! `ground_truth` are reserved names, never defects.
//!
//! Masks: without a masks folder, a defect has masks when `ground_truth/<defect>/` exists,
//! and then every one of its images must have one. With a masks folder `M`
//! ([`load`]'s `masks`), the masks are in `M/<defect>/` for a single-category root and in
//! `M/<category>/<defect>/` otherwise, and every defect must have its folder there.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::{image_files, select_names, sort_samples, subdirs, Category, MaskIndex, Sample};

const MASK_SUFFIXES: &[&str] = &["_mask", ""];
const RESERVED: [&str; 3] = ["good", "train", "ground_truth"];

/// Reads a generic folder set; `masks` replaces the per-category `ground_truth/` folders.
pub fn load(
    root: &Path,
    masks: Option<&Path>,
    requested: Option<&[String]>,
) -> Result<Vec<Category>> {
    if !root.is_dir() {
        bail!("{} is not a folder", root.display());
    }
    if let Some(masks) = masks {
        if !masks.is_dir() {
            bail!("masks folder {} is not a folder", masks.display());
        }
    }
    if root.join("good").is_dir() {
        let name = root
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "default".to_string());
        select_names(std::slice::from_ref(&name), requested, root)?;
        let mask_root = masks.map(Path::to_path_buf);
        return Ok(vec![load_category(name, root, mask_root)?]);
    }
    let candidates: Vec<(String, PathBuf)> = subdirs(root)?
        .into_iter()
        .filter(|(_, path)| path.join("good").is_dir())
        .collect();
    if candidates.is_empty() {
        bail!(
            "{} has no good/ folder, and no subfolder with a good/ folder",
            root.display()
        );
    }
    let names: Vec<String> = candidates.iter().map(|(name, _)| name.clone()).collect();
    let chosen = select_names(&names, requested, root)?;
    candidates
        .into_iter()
        .filter(|(name, _)| chosen.binary_search(name).is_ok())
        .map(|(name, dir)| {
            let mask_root = masks.map(|m| m.join(&name));
            load_category(name, &dir, mask_root)
        })
        .collect()
}

/// One category folder; `mask_root` is the explicit masks folder for it, if one was given.
fn load_category(name: String, dir: &Path, mask_root: Option<PathBuf>) -> Result<Category> {
    let train_dir = dir.join("train");
    let mut train: Vec<Sample> = if train_dir.is_dir() {
        image_files(&train_dir)?
            .into_iter()
            .map(Sample::normal)
            .collect()
    } else {
        Vec::new()
    };
    let mut test: Vec<Sample> = image_files(&dir.join("good"))?
        .into_iter()
        .map(Sample::normal)
        .collect();
    let explicit = mask_root.is_some();
    let mask_root = mask_root.unwrap_or_else(|| dir.join("ground_truth"));
    for (defect, path) in subdirs(dir)? {
        if RESERVED.contains(&defect.as_str()) {
            continue;
        }
        let images = image_files(&path)?;
        let mask_dir = mask_root.join(&defect);
        let masks = if mask_dir.is_dir() {
            Some(MaskIndex::read(&mask_dir)?)
        } else if explicit {
            bail!(
                "mask folder {} missing for the images in {}",
                mask_dir.display(),
                path.display()
            );
        } else {
            None
        };
        for image in images {
            let mask = match &masks {
                Some(index) => Some(index.find(&image, MASK_SUFFIXES)?),
                None => None,
            };
            test.push(Sample::anomalous(image, mask));
        }
    }
    sort_samples(&mut train);
    sort_samples(&mut test);
    Ok(Category { name, train, test })
}
