//! The crash-safe result writer of `afclip score`: rows appended to the scores file and
//! `rows.idx`, fsynced with the maps they cover at checkpoints, each checkpoint then recorded
//! in the `journal` (see the module docs of [`crate::archive`]).
//!
//! Journal lines (text, space-separated `key=value`):
//!
//! ```text
//! afclip-journal v1 config=<16 hex> format=csv shard=I/N
//! checkpoint rows=R bytes=B failed=F hash=<16 hex> next=K
//! ```
//!
//! `bytes` is the scores file's length, `hash` the FNV-1a chain of the rows' relative paths
//! (checked against the inputs on resume), `next` the position (in the full input order) of the
//! first input not yet covered. A line torn by a crash is ignored.

use super::{sync_dir, Format, RunInfo, Shard, RUN_FILE};
use crate::data::cache::{fnv1a, FNV_OFFSET};
use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const JOURNAL_FILE: &str = "journal";
pub const INDEX_FILE: &str = "rows.idx";

/// The state a checkpoint records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub rows: u64,
    pub bytes: u64,
    pub failed: u64,
    pub hash: u64,
    pub next: u64,
}

impl Default for Checkpoint {
    /// The state before the first row.
    fn default() -> Self {
        Checkpoint {
            rows: 0,
            bytes: 0,
            failed: 0,
            hash: EMPTY_HASH,
            next: 0,
        }
    }
}

/// Chains `rel` into a rows hash.
pub fn chain(hash: u64, rel: &str) -> u64 {
    fnv1a(&[rel.as_bytes(), b"\n"].concat(), hash)
}

pub const EMPTY_HASH: u64 = FNV_OFFSET;

pub struct ResultWriter {
    dir: PathBuf,
    format: Format,
    config: u64,
    shard: Shard,
    partial: PathBuf,
    data: BufWriter<File>,
    index: BufWriter<File>,
    journal: File,
    state: Checkpoint,
    synced: Checkpoint,
    last_sync: Instant,
    sync_every: Duration,
    unsynced_files: Vec<PathBuf>,
}

fn header_line(config: u64, format: Format, shard: Shard) -> String {
    format!(
        "afclip-journal v1 config={config:016x} format={} shard={shard}\n",
        format.name()
    )
}

fn parse_checkpoint(line: &str) -> Option<Checkpoint> {
    let mut words = line.split(' ');
    if words.next()? != "checkpoint" {
        return None;
    }
    let mut ck = Checkpoint {
        hash: 0,
        ..Checkpoint::default()
    };
    let mut seen = 0;
    for w in words {
        let (k, v) = w.split_once('=')?;
        let slot = match k {
            "rows" => &mut ck.rows,
            "bytes" => &mut ck.bytes,
            "failed" => &mut ck.failed,
            "hash" => {
                ck.hash = u64::from_str_radix(v, 16).ok()?;
                seen += 1;
                continue;
            }
            "next" => &mut ck.next,
            _ => return None,
        };
        *slot = v.parse().ok()?;
        seen += 1;
    }
    (seen == 5).then_some(ck)
}

/// What [`ResultWriter::open`] found in the output folder.
pub enum Opened {
    /// Write rows from the checkpoint on (a fresh run starts at the default checkpoint).
    Writer(Box<ResultWriter>, Checkpoint),
    /// `--resume` on a folder whose run is already complete.
    Complete(RunInfo),
}

impl ResultWriter {
    /// Starts a run in `dir`, or with `resume` continues the interrupted one there (a folder
    /// with nothing to resume starts fresh). Without `resume`, an interrupted run in `dir` is
    /// an error; a complete one is replaced.
    pub fn open(
        dir: &Path,
        format: Format,
        config: u64,
        shard: Shard,
        resume: bool,
        sync_every: Duration,
    ) -> Result<Opened> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create output folder {}", dir.display()))?;
        let journal_path = dir.join(JOURNAL_FILE);
        let final_path = dir.join(format.file_name());
        let partial = dir.join(format!("{}.partial", format.file_name()));
        let index_path = dir.join(INDEX_FILE);
        let has_journal = journal_path.exists();
        if resume && !has_journal && dir.join(RUN_FILE).exists() {
            let info = RunInfo::read(dir)?;
            if info.config != config || info.format != format || info.shard != shard {
                bail!(
                    "{}: holds a complete run with other settings; use another --out",
                    dir.display()
                );
            }
            return Ok(Opened::Complete(info));
        }
        let start = if resume && has_journal {
            let text = std::fs::read_to_string(&journal_path)
                .with_context(|| format!("cannot read {}", journal_path.display()))?;
            if !text.starts_with(&header_line(config, format, shard)) {
                bail!(
                    "{}: the interrupted run used other settings (inputs, model, shard, format \
                     or map options differ); rerun it with the same flags or use another --out",
                    journal_path.display()
                );
            }
            let ck = text
                .split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .rev()
                .find_map(|l| parse_checkpoint(l.trim_end()))
                .unwrap_or_default();
            // A crash between the final rename and run.json leaves the rows under the final name.
            if !partial.exists() && final_path.exists() {
                std::fs::rename(&final_path, &partial)
                    .with_context(|| format!("cannot reopen {}", final_path.display()))?;
            }
            ck
        } else {
            if has_journal {
                bail!(
                    "{} holds an interrupted run; pass --resume to continue it, or use another \
                     --out",
                    dir.display()
                );
            }
            for stale in [dir.join(RUN_FILE), final_path.clone()] {
                if stale.exists() {
                    std::fs::remove_file(&stale)
                        .with_context(|| format!("cannot remove {}", stale.display()))?;
                }
            }
            Checkpoint::default()
        };
        let mut data = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&partial)
            .with_context(|| format!("cannot open {}", partial.display()))?;
        let mut index = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&index_path)
            .with_context(|| format!("cannot open {}", index_path.display()))?;
        use std::io::{Seek, SeekFrom};
        let header = format.header().as_bytes();
        let bytes = if start.rows == 0 {
            data.set_len(0)?;
            index.set_len(0)?;
            data.write_all(header)?;
            header.len() as u64
        } else {
            let have = data.metadata()?.len();
            let have_index = index.metadata()?.len();
            if have < start.bytes || have_index < 16 * start.rows {
                bail!(
                    "{}: shorter than its journal says ({have} bytes for {}, {have_index} index \
                     bytes for {} rows); the output folder was changed — start again in a new \
                     folder",
                    partial.display(),
                    start.bytes,
                    start.rows
                );
            }
            data.set_len(start.bytes)?;
            index.set_len(16 * start.rows)?;
            data.seek(SeekFrom::End(0))?;
            start.bytes
        };
        index.seek(SeekFrom::End(0))?;
        let mut journal = if resume && has_journal {
            OpenOptions::new().append(true).open(&journal_path)
        } else {
            let mut j = File::create(&journal_path)
                .with_context(|| format!("cannot create {}", journal_path.display()))?;
            j.write_all(header_line(config, format, shard).as_bytes())?;
            j.sync_all()?;
            Ok(j)
        }
        .with_context(|| format!("cannot open {}", journal_path.display()))?;
        journal.flush()?;
        sync_dir(dir)?;
        let state = Checkpoint { bytes, ..start };
        let writer = ResultWriter {
            dir: dir.to_path_buf(),
            format,
            config,
            shard,
            partial,
            data: BufWriter::new(data),
            index: BufWriter::new(index),
            journal,
            state,
            synced: state,
            last_sync: Instant::now(),
            sync_every,
            unsynced_files: Vec::new(),
        };
        Ok(Opened::Writer(Box::new(writer), start))
    }

    /// Appends one row for the input at position `index` of the full input order.
    pub fn row(
        &mut self,
        index: u64,
        rel: &str,
        score: Option<f32>,
        error: Option<&str>,
    ) -> Result<()> {
        let line = self.format.row(rel, score, error);
        self.data
            .write_all(line.as_bytes())
            .with_context(|| format!("cannot write {}", self.partial.display()))?;
        self.index.write_all(&index.to_le_bytes())?;
        self.index.write_all(&(line.len() as u64).to_le_bytes())?;
        self.state.rows += 1;
        self.state.bytes += line.len() as u64;
        self.state.failed += u64::from(score.is_none());
        self.state.hash = chain(self.state.hash, rel);
        Ok(())
    }

    /// Files (maps, masks) that the next checkpoint must fsync before it is recorded.
    pub fn wrote_files(&mut self, files: impl IntoIterator<Item = PathBuf>) {
        self.unsynced_files.extend(files);
    }

    /// Marks every input before position `next` as done; checkpoints when `sync_every` has
    /// passed since the last one.
    pub fn done_before(&mut self, next: u64) -> Result<()> {
        self.state.next = next;
        if self.last_sync.elapsed() >= self.sync_every {
            self.checkpoint()?;
        }
        Ok(())
    }

    pub fn failed(&self) -> u64 {
        self.state.failed
    }

    pub fn rows(&self) -> u64 {
        self.state.rows
    }

    fn checkpoint(&mut self) -> Result<()> {
        self.last_sync = Instant::now();
        if self.state == self.synced {
            return Ok(());
        }
        let what = || format!("cannot sync {}", self.partial.display());
        self.data.flush().with_context(what)?;
        self.data.get_ref().sync_data().with_context(what)?;
        self.index.flush()?;
        self.index.get_ref().sync_data()?;
        let mut dirs: Vec<PathBuf> = Vec::new();
        for f in self.unsynced_files.drain(..) {
            File::open(&f)
                .and_then(|h| h.sync_all())
                .with_context(|| format!("cannot sync {}", f.display()))?;
            if let Some(d) = f.parent() {
                if !dirs.iter().any(|x| x == d) {
                    dirs.push(d.to_path_buf());
                }
            }
        }
        for d in &dirs {
            sync_dir(d)?;
        }
        let s = self.state;
        writeln!(
            self.journal,
            "checkpoint rows={} bytes={} failed={} hash={:016x} next={}",
            s.rows, s.bytes, s.failed, s.hash, s.next
        )?;
        self.journal
            .sync_data()
            .context("cannot sync the journal")?;
        self.synced = s;
        Ok(())
    }

    /// Completes the run: final checkpoint, the scores file renamed into place, `run.json`
    /// written, the journal removed.
    pub fn finish(mut self, inputs_total: u64, folders: Vec<String>) -> Result<RunInfo> {
        self.state.next = inputs_total;
        self.checkpoint()?;
        let final_path = self.dir.join(self.format.file_name());
        std::fs::rename(&self.partial, &final_path)
            .with_context(|| format!("cannot move {} into place", self.partial.display()))?;
        let info = RunInfo {
            format: self.format,
            shard: self.shard,
            rows: self.state.rows,
            failed: self.state.failed,
            inputs_total,
            config: self.config,
            folders,
        };
        write_synced(&self.dir.join(RUN_FILE), info.to_json().as_bytes())?;
        std::fs::remove_file(self.dir.join(JOURNAL_FILE)).context("cannot remove the journal")?;
        sync_dir(&self.dir)?;
        Ok(info)
    }
}

/// Writes `bytes` to `path` through a temporary file, fsynced, renamed into place.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} into place", tmp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_lines_round_trip_and_torn_lines_are_rejected() {
        let line = "checkpoint rows=3 bytes=120 failed=1 hash=00000000000000ff next=9";
        let ck = parse_checkpoint(line).unwrap();
        assert_eq!(
            ck,
            Checkpoint {
                rows: 3,
                bytes: 120,
                failed: 1,
                hash: 255,
                next: 9
            }
        );
        assert!(parse_checkpoint("checkpoint rows=3 bytes=120 failed=1 hash=00").is_none());
        assert!(parse_checkpoint("checkpoint rows=3 bytes=1x0 failed=1 hash=ff next=9").is_none());
    }

    #[test]
    fn resume_truncates_to_the_last_checkpoint() {
        let dir = std::env::temp_dir().join(format!("afclip-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let open = |resume| match ResultWriter::open(
            &dir,
            Format::Csv,
            7,
            Shard::ALL,
            resume,
            Duration::ZERO,
        )
        .unwrap()
        {
            Opened::Writer(w, ck) => (w, ck),
            Opened::Complete(_) => panic!("not complete yet"),
        };
        let (mut w, ck) = open(false);
        assert_eq!(ck, Checkpoint::default());
        w.row(0, "a.png", Some(0.5), None).unwrap();
        w.done_before(1).unwrap();
        w.row(2, "c.png", None, Some("c.png: bad")).unwrap();
        w.data.flush().unwrap();
        drop(w);
        assert!(
            ResultWriter::open(&dir, Format::Csv, 7, Shard::ALL, false, Duration::ZERO).is_err()
        );
        assert!(
            ResultWriter::open(&dir, Format::Csv, 8, Shard::ALL, true, Duration::ZERO).is_err()
        );
        let (mut w, ck) = open(true);
        assert_eq!((ck.rows, ck.next, ck.failed), (1, 1, 0));
        assert_eq!(ck.hash, chain(EMPTY_HASH, "a.png"));
        w.row(2, "c.png", None, Some("c.png: bad")).unwrap();
        let info = w.finish(3, Vec::new()).unwrap();
        assert_eq!((info.rows, info.failed, info.inputs_total), (2, 1, 3));
        assert_eq!(
            std::fs::read_to_string(dir.join("scores.csv")).unwrap(),
            "path,score,status,error\na.png,0.5,ok,\nc.png,,error,c.png: bad\n"
        );
        assert_eq!(RunInfo::read(&dir).unwrap(), info);
        assert!(!dir.join(JOURNAL_FILE).exists());
        assert!(matches!(
            ResultWriter::open(&dir, Format::Csv, 7, Shard::ALL, true, Duration::ZERO).unwrap(),
            Opened::Complete(_)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
