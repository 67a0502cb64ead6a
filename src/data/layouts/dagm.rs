//! DAGM 2007 (Kaggle upload).
//!
//! ```text
//! <root>/Class<k>/Train/*.PNG, Train/Label/<stem>_label.PNG
//!                /Test/*.PNG,  Test/Label/<stem>_label.PNG
//! ```
//! An image is anomalous exactly when its label file exists, and that file is its mask.
//! Training images with a label file are anomalous and therefore left out of `train`, which
//! holds normal images only. A category is a subfolder of the root with a `Test/` folder.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{
    image_files, resolve_root, select_names, sort_samples, subdirs, Category, DatasetKind,
    MaskIndex, Sample,
};

const LABEL_SUFFIX: &[&str] = &["_label"];

fn has_test_classes(dir: &Path) -> bool {
    subdirs(dir)
        .map(|dirs| dirs.iter().any(|(_, path)| path.join("Test").is_dir()))
        .unwrap_or(false)
}

pub fn load(root: &Path, requested: Option<&[String]>) -> Result<Vec<Category>> {
    let root = resolve_root(
        DatasetKind::Dagm,
        root,
        "class folders (Class1 ...) with a Test/ folder",
        has_test_classes,
    )?;
    let candidates: Vec<(String, PathBuf)> = subdirs(&root)?
        .into_iter()
        .filter(|(_, path)| path.join("Test").is_dir())
        .collect();
    let names: Vec<String> = candidates.iter().map(|(name, _)| name.clone()).collect();
    let chosen = select_names(&names, requested, &root)?;
    candidates
        .into_iter()
        .filter(|(name, _)| chosen.binary_search(name).is_ok())
        .map(|(name, dir)| {
            let train_dir = dir.join("Train");
            let mut train: Vec<Sample> = if train_dir.is_dir() {
                labelled(&train_dir)?
                    .into_iter()
                    .filter(|s| s.label == Some(false))
                    .collect()
            } else {
                Vec::new()
            };
            let mut test = labelled(&dir.join("Test"))?;
            sort_samples(&mut train);
            sort_samples(&mut test);
            Ok(Category { name, train, test })
        })
        .collect()
}

/// The images of a Train or Test folder, anomalous where `Label/<stem>_label.*` exists.
fn labelled(dir: &Path) -> Result<Vec<Sample>> {
    let label_dir = dir.join("Label");
    let labels = if label_dir.is_dir() {
        Some(MaskIndex::read(&label_dir)?)
    } else {
        None
    };
    Ok(image_files(dir)?
        .into_iter()
        .map(
            |image| match labels.as_ref().and_then(|l| l.get(&image, LABEL_SUFFIX)) {
                Some(mask) => Sample::anomalous(image, Some(mask)),
                None => Sample::normal(image),
            },
        )
        .collect())
}
