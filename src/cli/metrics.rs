//! `afclip metrics`: the SPEC §9 metrics for anomaly maps made by any method.
//!
//! Maps are `<rel>.npy` files (2-D float32) under `--maps`, matched by relative path without
//! extension to `<rel>.png` masks under `--masks` (non-zero = anomalous; a map without a mask
//! is a normal image). Image scores come from an optional CSV. Output: metrics.json (the
//! `eval` schema), a markdown table next to it (`.md`) and on stdout; warnings on stderr.

use crate::data::npy::read_f32_2d;
use crate::metrics::pixel::{pixel_metrics, PixelImage};
use crate::metrics::ranking::image_metrics;
use crate::metrics::report::{CategoryMetrics, MetricsReport};
use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The category of every map and score when `--per-dir` is not given.
pub const SINGLE_CATEGORY: &str = "all";

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Folder of anomaly maps: `<rel>.npy`, 2-D float32, walked recursively.
    #[arg(long)]
    pub maps: PathBuf,
    /// Folder of ground-truth masks `<rel>.png` (non-zero = anomalous), same size as the map;
    /// a map without a mask is a normal image.
    #[arg(long)]
    pub masks: PathBuf,
    /// Image scores, CSV `path,score,label` (label 0/1, or normal/anomaly); a header row
    /// naming the columns is allowed and may add a `category` column.
    #[arg(long)]
    pub scores: Option<PathBuf>,
    /// Output metrics.json; the markdown table is written next to it with extension `.md`.
    #[arg(long)]
    pub out: PathBuf,
    /// Each top-level folder of --maps (and the first component of each score path) is a
    /// category, and the mean over categories is reported; otherwise one category, "all".
    #[arg(long)]
    pub per_dir: bool,
    /// Dataset name in the JSON (default: the name of the --maps folder).
    #[arg(long)]
    pub dataset: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    let mut warnings = Vec::new();
    let report = evaluate(&args, &mut warnings)?;
    report.write_json(&args.out)?;
    let md = report.to_markdown();
    let md_path = args.out.with_extension("md");
    std::fs::write(&md_path, &md).with_context(|| format!("cannot write {}", md_path.display()))?;
    warnings.extend(report.mean_warnings());
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    print!("{md}");
    eprintln!(
        "afclip metrics: wrote {} and {}",
        args.out.display(),
        md_path.display()
    );
    Ok(())
}

/// Computes the report for `args` (no files written).
pub fn evaluate(args: &Args, warnings: &mut Vec<String>) -> Result<MetricsReport> {
    let maps = find_files(&args.maps, "npy")?;
    if maps.is_empty() {
        bail!("no .npy maps under {}", args.maps.display());
    }
    let masks: BTreeSet<String> = find_files(&args.masks, "png")?.into_iter().collect();
    let orphans = masks.iter().filter(|m| !maps.contains(m)).count();
    if orphans > 0 {
        warnings.push(format!(
            "{orphans} masks under {} have no map (e.g. {}.png)",
            args.masks.display(),
            masks.iter().find(|m| !maps.contains(m)).unwrap()
        ));
    }
    let mut by_cat: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rel in &maps {
        by_cat
            .entry(category_of(rel, args.per_dir, &args.maps)?)
            .or_default()
            .push(rel.clone());
    }
    let scores = match &args.scores {
        Some(p) => read_scores(p, args.per_dir)?,
        None => BTreeMap::new(),
    };

    let mut report = MetricsReport {
        dataset: args.dataset.clone().unwrap_or_else(|| {
            args.maps
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default()
        }),
        ..Default::default()
    };
    let mut sides = BTreeSet::new();
    let mut unmasked = 0usize;
    for (cat, rels) in &by_cat {
        let loaded = rels
            .par_iter()
            .map(|rel| load_pair(&args.maps, &args.masks, rel, masks.contains(rel)))
            .collect::<Result<Vec<_>>>()?;
        unmasked += rels.iter().filter(|r| !masks.contains(*r)).count();
        for (map, _) in &loaded {
            sides.insert((map.rows, map.cols));
        }
        let images: Vec<PixelImage> = loaded
            .iter()
            .map(|(map, mask)| PixelImage {
                scores: &map.data,
                mask,
                height: map.rows,
                width: map.cols,
            })
            .collect();
        let pixel =
            pixel_metrics(&images, cat, warnings).with_context(|| format!("category {cat}"))?;
        report.categories.insert(
            cat.clone(),
            CategoryMetrics {
                n_images: rels.len(),
                image: None,
                pixel: Some(pixel),
            },
        );
    }
    for (cat, rows) in &scores {
        let s: Vec<f64> = rows.iter().map(|r| r.0).collect();
        let l: Vec<bool> = rows.iter().map(|r| r.1).collect();
        let image = image_metrics(&s, &l, cat, warnings)?;
        let entry = report.categories.entry(cat.clone()).or_default();
        if entry.pixel.is_some() && entry.n_images != rows.len() {
            warnings.push(format!(
                "{cat}: {} maps but {} image scores",
                entry.n_images,
                rows.len()
            ));
        }
        if entry.pixel.is_none() {
            entry.n_images = rows.len();
        }
        entry.image = Some(image);
    }
    if unmasked > 0 {
        warnings.push(format!(
            "{unmasked} maps have no mask under {}: taken as normal images",
            args.masks.display()
        ));
    }
    if let [(h, w)] = sides.iter().copied().collect::<Vec<_>>()[..] {
        report.image_size = (h == w).then_some(h as u64);
    }
    Ok(report)
}

/// `/`-separated relative paths, without extension, of the files with extension `ext`
/// (case-insensitive) below `root`, sorted.
fn find_files(root: &Path, ext: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read folder {}", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("cannot read folder {}", dir.display()))?
                .path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case(ext))
            {
                let rel = path.strip_prefix(root).unwrap_or(&path).with_extension("");
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn category_of(rel: &str, per_dir: bool, root: &Path) -> Result<String> {
    if !per_dir {
        return Ok(SINGLE_CATEGORY.to_string());
    }
    match rel.split_once('/') {
        Some((cat, _)) => Ok(cat.to_string()),
        None => bail!(
            "--per-dir: {}/{rel}.npy is not inside a category folder",
            root.display()
        ),
    }
}

/// Loads a map and its mask (all zero when there is none), checking they match.
fn load_pair(
    maps: &Path,
    masks: &Path,
    rel: &str,
    has_mask: bool,
) -> Result<(crate::data::npy::NpyF32, Vec<u8>)> {
    let map_path = maps.join(format!("{rel}.npy"));
    let map = read_f32_2d(&map_path)?;
    if let Some(i) = map.data.iter().position(|v| !v.is_finite()) {
        bail!(
            "{}: score {} at row {}, column {} is not finite",
            map_path.display(),
            map.data[i],
            i / map.cols,
            i % map.cols
        );
    }
    if !has_mask {
        let n = map.data.len();
        return Ok((map, vec![0; n]));
    }
    let mask_path = masks.join(format!("{rel}.png"));
    let img = image::open(&mask_path)
        .with_context(|| format!("cannot read mask {}", mask_path.display()))?
        .into_rgb16();
    if (img.height() as usize, img.width() as usize) != (map.rows, map.cols) {
        bail!(
            "mask {} is {}x{} but map {} is {}x{} (height x width)",
            mask_path.display(),
            img.height(),
            img.width(),
            map_path.display(),
            map.rows,
            map.cols
        );
    }
    let mask = img
        .pixels()
        .map(|p| u8::from(p.0.iter().any(|&c| c != 0)))
        .collect();
    Ok((map, mask))
}

/// Image scores per category: (score, label) in file order.
type ScoreRows = BTreeMap<String, Vec<(f64, bool)>>;

fn read_scores(path: &Path, per_dir: bool) -> Result<ScoreRows> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .peekable();
    let mut cols = (0usize, 1usize, 2usize, None::<usize>);
    if let Some((_, first)) = lines.peek() {
        let names: Vec<String> = split_csv(first)
            .iter()
            .map(|f| f.trim().to_ascii_lowercase())
            .collect();
        if names.iter().any(|n| n == "score") {
            let find = |n: &str| {
                names.iter().position(|x| x == n).with_context(|| {
                    format!("{}: the header has no \"{n}\" column", path.display())
                })
            };
            cols = (
                find("path")?,
                find("score")?,
                find("label")?,
                names.iter().position(|x| x == "category"),
            );
            lines.next();
        }
    }
    let mut out = ScoreRows::new();
    let mut seen = BTreeSet::new();
    for (i, line) in lines {
        let at = || format!("{} line {}", path.display(), i + 1);
        let f = split_csv(line);
        let get = |c: usize| {
            f.get(c)
                .map(|s| s.trim())
                .with_context(|| format!("{}: expected path,score,label", at()))
        };
        let rel = get(cols.0)?;
        let score: f64 = get(cols.1)?
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite())
            .with_context(|| format!("{}: score {:?} is not a finite number", at(), f[cols.1]))?;
        let label = match get(cols.2)?.to_ascii_lowercase().as_str() {
            "1" | "true" | "anomaly" | "anomalous" | "abnormal" => true,
            "0" | "false" | "normal" | "good" => false,
            other => bail!("{}: label {other:?} is not 0/1 or normal/anomaly", at()),
        };
        let rel = rel.trim_start_matches("./");
        let cat = match cols.3 {
            Some(c) => get(c)?.to_string(),
            None if per_dir => rel
                .split_once('/')
                .map(|(c, _)| c.to_string())
                .with_context(|| {
                    format!("{}: --per-dir: path {rel} has no category folder", at())
                })?,
            None => SINGLE_CATEGORY.to_string(),
        };
        if !seen.insert(rel.to_string()) {
            bail!("{}: {rel} is listed twice", at());
        }
        out.entry(cat).or_default().push((score, label));
    }
    Ok(out)
}

/// Splits one CSV line (RFC 4180 quoting: `"a,b"`, `""` for a quote).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        let cur = fields.last_mut().expect("at least one field");
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            _ => cur.push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_and_quotes() {
        assert_eq!(split_csv("a,1.5,0"), vec!["a", "1.5", "0"]);
        assert_eq!(split_csv("\"x,\"\"y\"\"\",2,1"), vec!["x,\"y\"", "2", "1"]);
    }
}
