//! VisA, read from its split file `<root>/split_csv/1cls.csv`.
//!
//! Columns (by header name, any order): `object` (the category), `split` (`train`/`test`),
//! `label` (`normal`/`anomaly`), `image`, `mask` (empty for normal images); paths are relative
//! to the root. Training rows must be normal. VisA masks store defect labels, not 0/255, so
//! every sample is marked [`Sample::binarise_mask`]. Every listed image and mask must exist.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{
    join_listed, read_csv, require_listed, resolve_root, select_categories, Category, DatasetKind,
    Sample,
};

const SPLIT_FILE: &str = "split_csv/1cls.csv";
const COLUMNS: [&str; 5] = ["object", "split", "label", "image", "mask"];

pub fn load(root: &Path, requested: Option<&[String]>) -> Result<Vec<Category>> {
    let root = resolve_root(DatasetKind::Visa, root, SPLIT_FILE, |dir| {
        dir.join(SPLIT_FILE).is_file()
    })?;
    let csv_path = root.join(SPLIT_FILE);
    let records = read_csv(&csv_path)?;
    let Some((header, rows)) = records.split_first() else {
        bail!("{} is empty", csv_path.display());
    };
    let mut index = [0usize; 5];
    for (slot, column) in index.iter_mut().zip(COLUMNS) {
        *slot = header
            .fields
            .iter()
            .position(|f| f.trim() == column)
            .with_context(|| {
                format!(
                    "{}: header has no '{column}' column (expected {})",
                    csv_path.display(),
                    COLUMNS.join(",")
                )
            })?;
    }
    let [object, split, label, image, mask] = index;
    let width = index.iter().max().copied().unwrap_or(0) + 1;

    let mut categories: BTreeMap<String, Category> = BTreeMap::new();
    for row in rows {
        let place = format!("{} line {}", csv_path.display(), row.line);
        if row.fields.len() < width {
            bail!(
                "{place}: {} fields, expected {}",
                row.fields.len(),
                header.fields.len()
            );
        }
        let field = |i: usize| row.fields[i].trim();
        let anomalous = match field(label) {
            "normal" => false,
            "anomaly" => true,
            other => bail!("{place}: label '{other}' is neither normal nor anomaly"),
        };
        let image_path = join_listed(&root, field(image));
        require_listed(&image_path, "image", &place)?;
        let mask_path = match field(mask) {
            "" => None,
            listed => {
                let path = join_listed(&root, listed);
                require_listed(&path, "mask", &place)?;
                Some(path)
            }
        };
        let sample = Sample {
            path: image_path,
            label: Some(anomalous),
            mask: mask_path,
            binarise_mask: true,
        };
        let name = field(object).to_string();
        let category = categories.entry(name.clone()).or_insert_with(|| Category {
            name,
            train: Vec::new(),
            test: Vec::new(),
        });
        match field(split) {
            "train" if anomalous => bail!("{place}: a training image labelled anomaly"),
            "train" => category.train.push(sample),
            "test" => category.test.push(sample),
            other => bail!("{place}: split '{other}' is neither train nor test"),
        }
    }
    select_categories(categories.into_values().collect(), requested, &csv_path)
}
