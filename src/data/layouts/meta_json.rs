//! The `meta.json` of other CLIP anomaly detectors (AnomalyCLIP, AdaCLIP, ...):
//!
//! ```text
//! {"train": {cls: [entry, ...]}, "test": {cls: [entry, ...]}}
//! entry = {"img_path": str, "mask_path": str ("" if normal), "cls_name": str,
//!          "specie_name": str, "anomaly": 0 | 1}
//! ```
//! The root is the `meta.json` file itself or the folder holding it; paths are relative to
//! that folder. The categories are the `cls` keys; `cls_name` and `specie_name` are not used.
//! Either split may be missing; training entries must be normal. Every listed image and mask
//! must exist. Masks are binarised (every non-zero value is defect), as those detectors read
//! them (`mask > 0`), so VisA's label-valued masks work through a meta.json too.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{join_listed, require_listed, select_categories, Category, Sample};

pub fn load(root: &Path, requested: Option<&[String]>) -> Result<Vec<Category>> {
    let (file, base) = if root.is_dir() {
        (root.join("meta.json"), root.to_path_buf())
    } else {
        let base = root.parent().unwrap_or(Path::new(".")).to_path_buf();
        (root.to_path_buf(), base)
    };
    let text =
        fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let json: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", file.display()))?;
    let Some(top) = json.as_object() else {
        bail!(
            "{}: expected an object with train/test keys",
            file.display()
        );
    };
    if let Some(key) = top.keys().find(|k| *k != "train" && *k != "test") {
        bail!(
            "{}: unexpected top-level key '{key}' (expected train and/or test)",
            file.display()
        );
    }
    if top.is_empty() {
        bail!("{}: neither a train nor a test split", file.display());
    }
    let mut categories: BTreeMap<String, Category> = BTreeMap::new();
    for (split, classes) in top {
        let Some(classes) = classes.as_object() else {
            bail!(
                "{}: '{split}' must map class names to lists",
                file.display()
            );
        };
        for (class, entries) in classes {
            let Some(entries) = entries.as_array() else {
                bail!("{}: {split}/{class} is not a list", file.display());
            };
            let category = categories.entry(class.clone()).or_insert_with(|| Category {
                name: class.clone(),
                train: Vec::new(),
                test: Vec::new(),
            });
            for (i, entry) in entries.iter().enumerate() {
                let place = format!("{}: {split}/{class}[{i}]", file.display());
                let sample = parse_entry(entry, &base, &place)?;
                if split == "train" {
                    if sample.label == Some(true) {
                        bail!("{place}: a training entry marked anomaly 1");
                    }
                    category.train.push(sample);
                } else {
                    category.test.push(sample);
                }
            }
        }
    }
    select_categories(categories.into_values().collect(), requested, &file)
}

fn parse_entry(entry: &Value, base: &Path, place: &str) -> Result<Sample> {
    let Some(img) = entry.get("img_path").and_then(Value::as_str) else {
        bail!("{place}: no img_path string");
    };
    let anomalous = match entry.get("anomaly") {
        Some(Value::Number(n)) if n.as_u64() == Some(0) => false,
        Some(Value::Number(n)) if n.as_u64() == Some(1) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => bail!("{place}: anomaly is {other}, expected 0 or 1"),
        None => bail!("{place}: no anomaly field"),
    };
    let path = join_listed(base, img);
    require_listed(&path, "image", place)?;
    let mask = match entry.get("mask_path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => {
            let mask = join_listed(base, s);
            require_listed(&mask, "mask", place)?;
            Some(mask)
        }
        Some(other) => bail!("{place}: mask_path is {other}, expected a string"),
    };
    Ok(Sample {
        path,
        label: Some(anomalous),
        mask,
        binarise_mask: true,
    })
}
