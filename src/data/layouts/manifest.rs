//! A CSV manifest: one row per test image, `path,label[,mask][,category]`.
//!
//! The root is the CSV file, or a folder holding `manifest.csv`; relative paths are taken
//! from the CSV's folder. A first row whose first field is `path` is a header, and then the
//! columns are found by name (`path` and `label` required, `mask` and `category` optional, in
//! any order); otherwise the columns are positional. Labels: `0`/`1`, `normal`/`anomaly`
//! (also `anomalous`, `abnormal`), `good`/`bad`, `ok`/`ng`, `false`/`true`, any case; an empty
//! label is unknown. Rows without a category go to one named after the CSV file's stem. A
//! manifest has no training images. Every listed image and mask must exist.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};

use super::{join_listed, read_csv, require_listed, select_categories, Category, Sample};

const COLUMNS: [&str; 4] = ["path", "label", "mask", "category"];

pub fn load(root: &Path, requested: Option<&[String]>) -> Result<Vec<Category>> {
    let file = if root.is_dir() {
        root.join("manifest.csv")
    } else {
        root.to_path_buf()
    };
    let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let default_category = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "default".to_string());
    let records = read_csv(&file)?;
    let Some(first) = records.first() else {
        bail!("{} has no rows", file.display());
    };
    // Column index of path, label, mask, category.
    let mut columns: [Option<usize>; 4] = [Some(0), Some(1), Some(2), Some(3)];
    let has_header = first
        .fields
        .first()
        .is_some_and(|f| f.trim().eq_ignore_ascii_case("path"));
    let rows = if has_header {
        columns = [None; 4];
        for (i, name) in first.fields.iter().enumerate() {
            let name = name.trim().to_ascii_lowercase();
            let Some(slot) = COLUMNS.iter().position(|c| *c == name) else {
                bail!(
                    "{} line {}: unknown column '{name}' (expected {})",
                    file.display(),
                    first.line,
                    COLUMNS.join(",")
                );
            };
            columns[slot] = Some(i);
        }
        if columns[1].is_none() {
            bail!("{}: header has no 'label' column", file.display());
        }
        &records[1..]
    } else {
        &records[..]
    };
    let width = if has_header {
        first.fields.len()
    } else {
        COLUMNS.len()
    };

    let mut categories: BTreeMap<String, Category> = BTreeMap::new();
    for row in rows {
        let place = format!("{} line {}", file.display(), row.line);
        if row.fields.len() > width || row.fields.len() < 2 {
            bail!(
                "{place}: {} fields, expected {}",
                row.fields.len(),
                if has_header {
                    width.to_string()
                } else {
                    "2 to 4 (path,label[,mask][,category])".to_string()
                }
            );
        }
        let field = |slot: usize| {
            columns[slot]
                .and_then(|i| row.fields.get(i))
                .map(|f| f.trim())
                .unwrap_or("")
        };
        if field(0).is_empty() {
            bail!("{place}: empty path");
        }
        let path = join_listed(&base, field(0));
        require_listed(&path, "image", &place)?;
        let label = parse_label(field(1)).ok_or_else(|| {
            anyhow::anyhow!(
                "{place}: label '{}' is not one of 0/1, normal/anomaly, good/bad, ok/ng, false/true",
                field(1)
            )
        })?;
        let mask = match field(2) {
            "" => None,
            listed => {
                let mask = join_listed(&base, listed);
                require_listed(&mask, "mask", &place)?;
                Some(mask)
            }
        };
        let name = match field(3) {
            "" => default_category.clone(),
            given => given.to_string(),
        };
        categories
            .entry(name.clone())
            .or_insert_with(|| Category {
                name,
                train: Vec::new(),
                test: Vec::new(),
            })
            .test
            .push(Sample {
                path,
                label,
                mask,
                binarise_mask: false,
            });
    }
    select_categories(categories.into_values().collect(), requested, &file)
}

/// `Some(label)` for a recognised value (`Some(None)` = empty, unknown); `None` otherwise.
fn parse_label(text: &str) -> Option<Option<bool>> {
    match text.to_ascii_lowercase().as_str() {
        "" => Some(None),
        "0" | "normal" | "good" | "ok" | "false" => Some(Some(false)),
        "1" | "anomaly" | "anomalous" | "abnormal" | "bad" | "ng" | "true" => Some(Some(true)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_label;

    #[test]
    fn labels() {
        assert_eq!(parse_label("Normal"), Some(Some(false)));
        assert_eq!(parse_label("1"), Some(Some(true)));
        assert_eq!(parse_label("NG"), Some(Some(true)));
        assert_eq!(parse_label(""), Some(None));
        assert_eq!(parse_label("2"), None);
    }
}
