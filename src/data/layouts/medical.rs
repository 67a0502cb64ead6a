//! The medical sets: one category each, named like the CLI name (`brainmri`, `br35h`, `isic`,
//! `clinicdb`, `colondb`, `kvasir`), with no training images.
//!
//! ```text
//! BrainMRI, Br35H:    <root>/no/*  (normal)   <root>/yes/*  (anomalous)   no masks
//! ISIC 2016:          <root>/ISBI2016_ISIC_Part1_Test_Data/*.jpg
//!                     <root>/ISBI2016_ISIC_Part1_Test_GroundTruth/*.png
//! CVC-ClinicDB, CVC-ColonDB, Kvasir:
//!                     <root>/images/*   <root>/masks/*
//!                     (also the original names: Original/ and "Ground Truth"/)
//! ```
//! In the mask sets every image is anomalous, and images and masks are paired in sorted order
//! (SPEC §10), so both folders must hold the same number of images.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::{image_files, resolve_root, select_names, Category, DatasetKind, Sample};

/// (image folder names, mask folder names) of the mask sets, first match wins.
fn mask_set_folders(kind: DatasetKind) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        DatasetKind::Isic => (
            &["ISBI2016_ISIC_Part1_Test_Data"],
            &["ISBI2016_ISIC_Part1_Test_GroundTruth"],
        ),
        _ => (
            &["images", "Original"],
            &["masks", "Ground Truth", "GroundTruth"],
        ),
    }
}

fn first_dir(root: &Path, names: &[&str]) -> Option<PathBuf> {
    names
        .iter()
        .map(|name| root.join(name))
        .find(|path| path.is_dir())
}

/// Reads one of BrainMRI, Br35H, ISIC, CVC-ClinicDB, CVC-ColonDB, Kvasir.
pub fn load(kind: DatasetKind, root: &Path, requested: Option<&[String]>) -> Result<Vec<Category>> {
    let name = kind.name().to_string();
    let test = match kind {
        DatasetKind::BrainMri | DatasetKind::Br35h => {
            let root = resolve_root(kind, root, "no/ and yes/ folders", |dir| {
                dir.join("no").is_dir() && dir.join("yes").is_dir()
            })?;
            select_names(std::slice::from_ref(&name), requested, &root)?;
            let mut test: Vec<Sample> = image_files(&root.join("no"))?
                .into_iter()
                .map(Sample::normal)
                .collect();
            test.extend(
                image_files(&root.join("yes"))?
                    .into_iter()
                    .map(|path| Sample::anomalous(path, None)),
            );
            test
        }
        _ => {
            let (image_names, mask_names) = mask_set_folders(kind);
            let expected = format!("{}/ and {}/", image_names[0], mask_names[0]);
            let root = resolve_root(kind, root, &expected, |dir| {
                first_dir(dir, image_names).is_some() && first_dir(dir, mask_names).is_some()
            })?;
            select_names(std::slice::from_ref(&name), requested, &root)?;
            let (Some(image_dir), Some(mask_dir)) =
                (first_dir(&root, image_names), first_dir(&root, mask_names))
            else {
                bail!("{} has no {expected} folders", root.display());
            };
            let images = image_files(&image_dir)?;
            let masks = image_files(&mask_dir)?;
            if images.len() != masks.len() {
                bail!(
                    "{} holds {} images but {} holds {} masks; they are paired in sorted order",
                    image_dir.display(),
                    images.len(),
                    mask_dir.display(),
                    masks.len()
                );
            }
            images
                .into_iter()
                .zip(masks)
                .map(|(image, mask)| Sample::anomalous(image, Some(mask)))
                .collect()
        }
    };
    Ok(vec![Category {
        name,
        train: Vec::new(),
        test,
    }])
}
