//! Scoring large archives: crash-safe result files with a journal (`--resume`), deterministic
//! sharding (`--shard I/N`) and the merge of shard outputs (`afclip merge`).
//!
//! An output folder of `afclip score` holds, while running:
//!
//! - `scores.csv.partial` (or `scores.jsonl.partial`): the rows, in input order, appended as
//!   they complete;
//! - `rows.idx`: per row, two little-endian u64: the input's position in the full (unsharded)
//!   input order and the row's byte length in the scores file; this is what `merge` uses;
//! - `journal`: a header line (the run's configuration fingerprint) and one line per
//!   checkpoint. A checkpoint is written only after the scores file, `rows.idx` and the maps
//!   of the rows it covers are fsynced, so the state it names is on disk.
//!
//! `--resume` truncates both files to the last checkpoint and continues from the input after
//! it; because checkpoints fall between whole batches and the input order is deterministic,
//! the finished output is the same as an uninterrupted run's. On completion the scores file is
//! renamed to `scores.csv`, `run.json` (the completion record) is written and the journal is
//! removed.

pub mod journal;
pub mod merge;

use crate::data::cache::{fnv1a, FNV_OFFSET};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// `--shard I/N`: this run scores the inputs whose relative path hashes to `I` modulo `N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let (i, n) = text
            .split_once('/')
            .with_context(|| format!("--shard {text:?}: expected I/N, e.g. 0/4"))?;
        let index: u64 = i
            .trim()
            .parse()
            .with_context(|| format!("--shard {text:?}: {i:?} is not a number"))?;
        let count: u64 = n
            .trim()
            .parse()
            .with_context(|| format!("--shard {text:?}: {n:?} is not a number"))?;
        if count == 0 || index >= count {
            bail!("--shard {text:?}: need 0 <= I < N");
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The rows' file format (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `path,score,status,error` with a header line.
    Csv,
    /// One JSON object per line: `{"path", "score", "status", "error"}`.
    Jsonl,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }

    pub fn file_name(self) -> &'static str {
        match self {
            Format::Csv => "scores.csv",
            Format::Jsonl => "scores.jsonl",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "csv" => Some(Format::Csv),
            "jsonl" => Some(Format::Jsonl),
            _ => None,
        }
    }

    /// What the file starts with.
    pub fn header(self) -> &'static str {
        match self {
            Format::Csv => "path,score,status,error\n",
            Format::Jsonl => "",
        }
    }

    /// One row, with its line end. `score` is `None` exactly for failed inputs.
    pub fn row(self, rel: &str, score: Option<f32>, error: Option<&str>) -> String {
        use crate::output::csv::field;
        match self {
            Format::Csv => match (score, error) {
                (Some(s), _) => format!("{},{s},ok,\n", field(rel)),
                (None, e) => format!("{},,error,{}\n", field(rel), field(e.unwrap_or(""))),
            },
            Format::Jsonl => {
                let rel = serde_json::Value::from(rel);
                match (score, error) {
                    (Some(s), _) => {
                        format!(
                            "{{\"path\":{rel},\"score\":{s},\"status\":\"ok\",\"error\":null}}\n"
                        )
                    }
                    (None, e) => format!(
                        "{{\"path\":{rel},\"score\":null,\"status\":\"error\",\"error\":{}}}\n",
                        serde_json::Value::from(e.unwrap_or(""))
                    ),
                }
            }
        }
    }
}

/// A stable 64-bit fingerprint of configuration strings.
pub fn fingerprint(parts: &[String]) -> u64 {
    parts.iter().fold(FNV_OFFSET, |h, p| {
        fnv1a(&[p.as_bytes(), b"\x1f"].concat(), h)
    })
}

/// fsyncs a folder, so renames and new files inside it survive a power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync folder {}", dir.display()))
}

/// `run.json`: written last, it marks an output folder as complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    pub format: Format,
    pub shard: Shard,
    pub rows: u64,
    pub failed: u64,
    /// Inputs in the full (unsharded) input order.
    pub inputs_total: u64,
    /// Fingerprint of everything that decides the rows, except the shard.
    pub config: u64,
    /// Sub-folders with per-image files (`maps`, `masks`), for merge.
    pub folders: Vec<String>,
}

pub const RUN_FILE: &str = "run.json";

impl RunInfo {
    pub fn to_json(&self) -> String {
        let v = serde_json::json!({
            "afclip_run": 1,
            "format": self.format.name(),
            "shard": self.shard.to_string(),
            "rows": self.rows,
            "failed": self.failed,
            "inputs_total": self.inputs_total,
            "config": format!("{:016x}", self.config),
            "folders": self.folders,
        });
        serde_json::to_string_pretty(&v).expect("serialisable") + "\n"
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(RUN_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", path.display()))?;
        let field = |k: &str| {
            v.get(k)
                .with_context(|| format!("{}: no field {k:?}", path.display()))
        };
        let num = |k: &str| -> Result<u64> {
            field(k)?
                .as_u64()
                .with_context(|| format!("{}: {k:?} is not a count", path.display()))
        };
        let text_of = |k: &str| -> Result<String> {
            Ok(field(k)?
                .as_str()
                .with_context(|| format!("{}: {k:?} is not a string", path.display()))?
                .to_string())
        };
        let format = text_of("format")?;
        Ok(RunInfo {
            format: Format::parse(&format)
                .with_context(|| format!("{}: unknown format {format:?}", path.display()))?,
            shard: text_of("shard")?
                .parse()
                .with_context(|| format!("{}: bad shard", path.display()))?,
            rows: num("rows")?,
            failed: num("failed")?,
            inputs_total: num("inputs_total")?,
            config: u64::from_str_radix(&text_of("config")?, 16)
                .with_context(|| format!("{}: bad config fingerprint", path.display()))?,
            folders: field("folders")?
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_reject_nonsense() {
        assert_eq!(
            "2/4".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 4 }
        );
        for bad in ["4/4", "1/0", "x/2", "3", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rows_in_both_formats() {
        assert_eq!(
            Format::Csv.row("a,b.png", Some(0.5), None),
            "\"a,b.png\",0.5,ok,\n"
        );
        assert_eq!(
            Format::Csv.row("x.png", None, Some("x.png: empty")),
            "x.png,,error,x.png: empty\n"
        );
        let line = Format::Jsonl.row("q\"x.png", None, Some("bad, \"really\""));
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["path"], "q\"x.png");
        assert_eq!(v["status"], "error");
        assert!(v["score"].is_null());
        assert_eq!(v["error"], "bad, \"really\"");
        let ok: serde_json::Value =
            serde_json::from_str(Format::Jsonl.row("a.png", Some(0.25), None).trim_end()).unwrap();
        assert_eq!(ok["score"], 0.25);
    }
}
