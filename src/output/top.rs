//! The `--top K` report: `report.md` lists the K highest-scoring images (ties: input order)
//! with 128-pixel thumbnails `top/0001.png`, ...; `top.json`, written last, is its index:
//!
//! ```text
//! {"k":K,"images":[
//! {"path":"a/b.png","score":0.93,"thumbnail":"top/0001.png"},
//! ...
//! ]}
//! ```
//!
//! (`thumbnail` is null when the source was not readable). `afclip merge` builds the global
//! report of a sharded run from the shards' indexes.

use crate::archive::journal::write_synced;
use crate::archive::Format;
use anyhow::{ensure, Context, Result};
use std::io::BufRead;
use std::path::Path;

pub const REPORT_FILE: &str = "report.md";
pub const TOP_FILE: &str = "top.json";
pub const TOP_DIR: &str = "top";

/// The `k` highest scores pushed so far, best first; equal scores in increasing `order`.
pub struct Best<T> {
    k: usize,
    items: Vec<(f32, u64, T)>,
}

impl<T> Best<T> {
    pub fn new(k: usize) -> Self {
        Best {
            k,
            items: Vec::new(),
        }
    }

    /// `order` (the input position) must increase from call to call.
    pub fn push(&mut self, score: f32, order: u64, item: T) {
        let at = self
            .items
            .partition_point(|x| x.0.total_cmp(&score).then(order.cmp(&x.1)).is_gt());
        if at < self.k {
            self.items.insert(at, (score, order, item));
            self.items.truncate(self.k);
        }
    }

    /// `(score, order, item)`, best first.
    pub fn into_vec(self) -> Vec<(f32, u64, T)> {
        self.items
    }
}

/// The `k` best ok rows of a finished scores file: `(score, line number, path)`, best first.
pub fn best_rows(path: &Path, format: Format, k: usize) -> Result<Vec<(f32, u64, String)>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut best = Best::new(k);
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if let Some((rel, score)) = parse_row(format, &line) {
            best.push(score, n as u64, rel);
        }
    }
    Ok(best.into_vec())
}

/// One listed image.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub path: String,
    pub score: f32,
    /// Relative to the output folder; `None` when the source was not readable.
    pub thumbnail: Option<String>,
}

/// The thumbnail of the image ranked `rank` (0-based), relative to the output folder.
pub fn thumbnail_name(rank: usize) -> String {
    format!("{TOP_DIR}/{:04}.png", rank + 1)
}

/// Writes `report.md`, then `top.json`, for `--top k` listing `entries` (best first; the
/// thumbnails already in place).
pub fn write_report(out: &Path, k: usize, entries: &[Entry]) -> Result<()> {
    let mut md = format!(
        "# The {} most anomalous images\n\n| rank | score | image | thumbnail |\n|---|---|---|---|\n",
        entries.len()
    );
    let mut json = format!("{{\"k\":{k},\"images\":[\n");
    for (rank, e) in entries.iter().enumerate() {
        let cell = match &e.thumbnail {
            Some(t) => format!("![{}]({t})", e.path),
            None => "(source not readable)".to_string(),
        };
        md += &format!("| {} | {} | `{}` | {cell} |\n", rank + 1, e.score, e.path);
        let thumb = e.thumbnail.as_deref().map(serde_json::Value::from);
        json += &format!(
            "{}{{\"path\":{},\"score\":{},\"thumbnail\":{}}}\n",
            if rank > 0 { "," } else { "" },
            serde_json::Value::from(e.path.as_str()),
            e.score,
            thumb.unwrap_or(serde_json::Value::Null)
        );
    }
    json += "]}\n";
    std::fs::write(out.join(REPORT_FILE), md)
        .with_context(|| format!("cannot write {}", out.join(REPORT_FILE).display()))?;
    write_synced(&out.join(TOP_FILE), json.as_bytes())
}

/// A `top.json`: the `K` of `--top K` and the listed images, best first.
#[derive(Debug, PartialEq)]
pub struct Index {
    pub k: usize,
    pub images: Vec<Entry>,
}

/// The `top.json` in `dir`, `None` when there is none (a run without `--top`).
pub fn read_index(dir: &Path) -> Result<Option<Index>> {
    let path = dir.join(TOP_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let bad = |what: &str| format!("{}: {what}", path.display());
    let k = v["k"].as_u64().with_context(|| bad("no count \"k\""))? as usize;
    let list = v["images"]
        .as_array()
        .with_context(|| bad("no list \"images\""))?;
    ensure!(
        list.len() <= k,
        "{}",
        bad(&format!("{} images for k={k}", list.len()))
    );
    let images = list
        .iter()
        .map(|e| {
            Ok(Entry {
                path: e["path"]
                    .as_str()
                    .with_context(|| bad("an image without \"path\""))?
                    .to_string(),
                score: e["score"]
                    .as_f64()
                    .with_context(|| bad("an image without \"score\""))?
                    as f32,
                thumbnail: match &e["thumbnail"] {
                    serde_json::Value::Null => None,
                    t => Some(
                        t.as_str()
                            .with_context(|| bad("a \"thumbnail\" that is not a string"))?
                            .to_string(),
                    ),
                },
            })
        })
        .collect::<Result<_>>()?;
    Ok(Some(Index { k, images }))
}

/// `(rel, score)` of an ok row written by [`Format::row`] (without its line end).
pub fn parse_row(format: Format, line: &str) -> Option<(String, f32)> {
    match format {
        Format::Jsonl => {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            Some((v["path"].as_str()?.to_string(), v["score"].as_f64()? as f32))
        }
        Format::Csv => {
            let (rel, rest) = if let Some(quoted) = line.strip_prefix('"') {
                let mut rel = String::new();
                let mut chars = quoted.char_indices().peekable();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    if c == '"' {
                        if chars.peek().map(|&(_, c)| c) == Some('"') {
                            rel.push('"');
                            chars.next();
                        } else {
                            end = Some(i + 1);
                            break;
                        }
                    } else {
                        rel.push(c);
                    }
                }
                (rel, &quoted[end?..])
            } else {
                let comma = line.find(',')?;
                (line[..comma].to_string(), &line[comma..])
            };
            let score = rest.strip_prefix(',')?.split(',').next()?.parse().ok()?;
            Some((rel, score))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_back() {
        for format in [Format::Csv, Format::Jsonl] {
            for rel in ["a.png", "x,\"y\".png", "d/é.png"] {
                let line = format.row(rel, Some(0.125), None);
                assert_eq!(
                    parse_row(format, line.trim_end()),
                    Some((rel.to_string(), 0.125))
                );
                let err = format.row(rel, None, Some("bad, really"));
                assert_eq!(parse_row(format, err.trim_end()), None);
            }
        }
    }

    #[test]
    fn best_keeps_k_highest_with_ties_in_input_order() {
        let scores = [0.5, 0.9, 0.5, 0.1, 0.9, 0.7, 0.5];
        let mut best = Best::new(4);
        for (i, &s) in scores.iter().enumerate() {
            best.push(s, i as u64, i);
        }
        let order: Vec<usize> = best.into_vec().into_iter().map(|x| x.2).collect();
        assert_eq!(order, [1, 4, 5, 0]);
        let mut none = Best::new(0);
        none.push(1.0, 0, ());
        assert!(none.into_vec().is_empty());
    }

    #[test]
    fn index_round_trips() {
        let dir = std::env::temp_dir().join(format!("afclip-top-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let images = vec![
            Entry {
                path: "a \"q\".png".into(),
                score: 0.75,
                thumbnail: Some(thumbnail_name(0)),
            },
            Entry {
                path: "b.png".into(),
                score: 0.5,
                thumbnail: None,
            },
        ];
        write_report(&dir, 3, &images).unwrap();
        assert_eq!(read_index(&dir).unwrap(), Some(Index { k: 3, images }));
        let md = std::fs::read_to_string(dir.join(REPORT_FILE)).unwrap();
        assert!(md.contains("| 1 | 0.75 | `a \"q\".png` | ![a \"q\".png](top/0001.png) |\n"));
        assert!(md.contains("| 2 | 0.5 | `b.png` | (source not readable) |\n"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read_index(&dir).unwrap(), None);
    }
}
