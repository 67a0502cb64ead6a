//! `afclip merge`: combines the output folders of the shards of one run into the output of a
//! single run: rows in the full input order (a k-way merge on `rows.idx`), maps and masks
//! linked (or copied) over. Fails loudly, before writing anything, when a shard is missing,
//! repeated, incomplete (no `run.json`: interrupted), from another run, or when the rows do not
//! cover every input exactly once.
//!
//! Shards scored with `--top K` give the report of the single run (`report.md`, `top/`,
//! `top.json`): the global top K, selected from the merged rows with the single run's tie rule
//! (input order), each a prefix of its own shard's top K, so the thumbnails are linked over
//! from the shards. Shards with different K, or some without `--top`, are refused.

use super::journal::{write_synced, INDEX_FILE, JOURNAL_FILE};
use super::{sync_dir, RunInfo, Shard, RUN_FILE};
use crate::output::top::{
    parse_row, read_index, thumbnail_name, write_report, Best, Entry, Index, TOP_DIR, TOP_FILE,
};
use anyhow::{bail, ensure, Context, Result};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

struct ShardRows {
    dir: PathBuf,
    data: BufReader<File>,
    index: BufReader<File>,
    left: u64,
}

impl ShardRows {
    /// The next `(input position, row bytes)`.
    fn next(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let mut rec = [0u8; 16];
        self.index
            .read_exact(&mut rec)
            .with_context(|| format!("{}: {INDEX_FILE} is truncated", self.dir.display()))?;
        let pos = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(rec[8..].try_into().expect("8 bytes"));
        ensure!(
            len < 1 << 24,
            "{}: {INDEX_FILE} is corrupt (a row of {len} bytes)",
            self.dir.display()
        );
        let mut row = vec![0u8; len as usize];
        self.data
            .read_exact(&mut row)
            .with_context(|| format!("{}: the scores file is truncated", self.dir.display()))?;
        Ok(Some((pos, row)))
    }
}

/// Merges the shard folders `dirs` into `out`; returns the merged run's record.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<RunInfo> {
    ensure!(!dirs.is_empty(), "merge: give the shards' output folders");
    let mut infos = Vec::new();
    for dir in dirs {
        if !dir.join(RUN_FILE).exists() {
            if dir.join(JOURNAL_FILE).exists() {
                bail!(
                    "{} is incomplete: its run was interrupted (a journal, no {RUN_FILE}); \
                     finish it with `afclip score ... --resume` and merge again",
                    dir.display()
                );
            }
            bail!(
                "{} is not a finished afclip score output (no {RUN_FILE})",
                dir.display()
            );
        }
        infos.push(RunInfo::read(dir)?);
    }
    let first = infos[0].clone();
    let n = first.shard.count;
    let mut owner: Vec<Option<&PathBuf>> = vec![None; n as usize];
    for (dir, info) in dirs.iter().zip(&infos) {
        ensure!(
            info.shard.count == n,
            "{} is shard {} but {} is shard {}: not parts of one run",
            dir.display(),
            info.shard,
            dirs[0].display(),
            first.shard
        );
        ensure!(
            info.config == first.config
                && info.format == first.format
                && info.inputs_total == first.inputs_total,
            "{} and {} come from runs with different inputs or settings",
            dirs[0].display(),
            dir.display()
        );
        if let Some(other) = owner[info.shard.index as usize].replace(dir) {
            bail!(
                "shard {} is given twice: {} and {}",
                info.shard,
                other.display(),
                dir.display()
            );
        }
    }
    let missing: Vec<String> = owner
        .iter()
        .enumerate()
        .filter(|(_, o)| o.is_none())
        .map(|(i, _)| format!("{i}/{n}"))
        .collect();
    ensure!(
        missing.is_empty(),
        "shard(s) {} missing: give all {n} shard output folders",
        missing.join(", ")
    );
    let rows: u64 = infos.iter().map(|i| i.rows).sum();
    ensure!(
        rows == first.inputs_total,
        "the shards hold {rows} rows for {} inputs",
        first.inputs_total
    );

    let mut shards = Vec::new();
    for (dir, info) in dirs.iter().zip(&infos) {
        let data_path = dir.join(info.format.file_name());
        let mut data = BufReader::new(
            File::open(&data_path)
                .with_context(|| format!("cannot read {}", data_path.display()))?,
        );
        let mut header = vec![0u8; info.format.header().len()];
        data.read_exact(&mut header)
            .with_context(|| format!("{}: no header", data_path.display()))?;
        ensure!(
            header == info.format.header().as_bytes(),
            "{}: unexpected header",
            data_path.display()
        );
        let index_path = dir.join(INDEX_FILE);
        let index_len = std::fs::metadata(&index_path)
            .with_context(|| format!("cannot read {}", index_path.display()))?
            .len();
        ensure!(
            index_len == 16 * info.rows,
            "{}: {index_len} bytes for {} rows",
            index_path.display(),
            info.rows
        );
        shards.push(ShardRows {
            dir: dir.clone(),
            data,
            index: BufReader::new(File::open(&index_path)?),
            left: info.rows,
        });
    }

    let tops = top_indexes(dirs, &infos)?;

    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output folder {}", out.display()))?;
    let final_path = out.join(first.format.file_name());
    let partial = out.join(format!("{}.partial", first.format.file_name()));
    let index_out = out.join(INDEX_FILE);
    let mut data_out = BufWriter::new(File::create(&partial)?);
    let mut idx_out = BufWriter::new(File::create(&index_out)?);
    data_out.write_all(first.format.header().as_bytes())?;
    let mut heads: Vec<Option<(u64, Vec<u8>)>> =
        shards.iter_mut().map(|s| s.next()).collect::<Result<_>>()?;
    let mut best = Best::new(tops.as_ref().map_or(0, |(k, _)| *k));
    for expected in 0..first.inputs_total {
        let k = heads
            .iter()
            .position(|h| h.as_ref().is_some_and(|(p, _)| *p == expected))
            .with_context(|| {
                format!(
                    "no shard holds input #{expected} (of {}): a shard output is incomplete or \
                     was changed",
                    first.inputs_total
                )
            })?;
        let (pos, row) = heads[k].take().expect("found above");
        if tops.is_some() {
            let line = std::str::from_utf8(&row)
                .ok()
                .and_then(|r| r.strip_suffix('\n'));
            if let Some((rel, score)) = line.and_then(|l| parse_row(first.format, l)) {
                best.push(score, pos, (rel, k));
            }
        }
        data_out.write_all(&row)?;
        idx_out.write_all(&pos.to_le_bytes())?;
        idx_out.write_all(&(row.len() as u64).to_le_bytes())?;
        heads[k] = shards[k].next()?;
    }
    data_out.flush()?;
    data_out.get_ref().sync_all()?;
    idx_out.flush()?;
    idx_out.get_ref().sync_all()?;

    for folder in &first.folders {
        for dir in dirs {
            link_tree(&dir.join(folder), &out.join(folder))?;
        }
    }
    if let Some((k, indexes)) = &tops {
        merge_top(dirs, &infos, indexes, *k, best.into_vec(), out)?;
    }
    std::fs::rename(&partial, &final_path)
        .with_context(|| format!("cannot move {} into place", partial.display()))?;
    let info = RunInfo {
        shard: Shard::ALL,
        rows,
        failed: infos.iter().map(|i| i.failed).sum(),
        ..first
    };
    write_synced(&out.join(RUN_FILE), info.to_json().as_bytes())?;
    sync_dir(out)?;
    Ok(info)
}

/// The shards' `top.json`s with their common K; `None` when no shard was run with `--top`.
/// Fails when only some shards have one, when their K differ, or when a listed thumbnail is
/// missing.
fn top_indexes(dirs: &[PathBuf], infos: &[RunInfo]) -> Result<Option<(usize, Vec<Index>)>> {
    let found: Vec<Option<Index>> = dirs.iter().map(|d| read_index(d)).collect::<Result<_>>()?;
    let Some(with) = found.iter().position(Option::is_some) else {
        return Ok(None);
    };
    let k = found[with].as_ref().expect("found").k;
    let name = |i: usize| format!("shard {} ({})", infos[i].shard, dirs[i].display());
    let mut indexes = Vec::new();
    for (i, index) in found.into_iter().enumerate() {
        let index = index.with_context(|| {
            format!(
                "{} has no {TOP_FILE} (scored without --top, or stopped before its report) but \
                 {} was scored with --top {k}: rerun it with `afclip score ... --resume --top \
                 {k}`",
                name(i),
                name(with)
            )
        })?;
        ensure!(
            index.k == k,
            "{} was scored with --top {} but {} with --top {k}: score every shard with the \
             same --top",
            name(i),
            index.k,
            name(with)
        );
        for thumb in index.images.iter().filter_map(|e| e.thumbnail.as_ref()) {
            let path = dirs[i].join(thumb);
            ensure!(
                path.is_file(),
                "{} is missing: {} lists it",
                path.display(),
                dirs[i].join(TOP_FILE).display()
            );
        }
        indexes.push(index);
    }
    Ok(Some((k, indexes)))
}

/// Writes the global top-`k` report: `best` (from the merged rows: `(score, input position,
/// (path, shard number))`), whose entries of each shard are a prefix of that shard's index.
fn merge_top(
    dirs: &[PathBuf],
    infos: &[RunInfo],
    indexes: &[Index],
    k: usize,
    best: Vec<(f32, u64, (String, usize))>,
    out: &Path,
) -> Result<()> {
    let top_dir = out.join(TOP_DIR);
    std::fs::create_dir_all(&top_dir)
        .with_context(|| format!("cannot create {}", top_dir.display()))?;
    let mut used = vec![0usize; dirs.len()];
    let mut entries = Vec::new();
    for (rank, (score, _, (path, s))) in best.into_iter().enumerate() {
        let listed = indexes[s].images.get(used[s]).filter(|e| e.path == path);
        let listed = listed.with_context(|| {
            format!(
                "shard {}: {} does not list {path:?} as its number {} (its rows do): the \
                 report does not belong to these rows",
                infos[s].shard,
                dirs[s].join(TOP_FILE).display(),
                used[s] + 1
            )
        })?;
        used[s] += 1;
        let thumbnail = match &listed.thumbnail {
            Some(t) => {
                let name = thumbnail_name(rank);
                link_file(&dirs[s].join(t), &out.join(&name))?;
                Some(name)
            }
            None => None,
        };
        entries.push(Entry {
            path,
            score,
            thumbnail,
        });
    }
    write_report(out, k, &entries)
}

/// Hard-links (or copies, across file systems) every file below `from` into `to`.
fn link_tree(from: &Path, to: &Path) -> Result<()> {
    if !from.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .with_context(|| format!("cannot read {}", from.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            link_tree(&src, &dst)?;
            continue;
        }
        link_file(&src, &dst)?;
    }
    Ok(())
}

/// Hard-links (or copies, across file systems) `src` to `dst`, replacing `dst`.
fn link_file(src: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        std::fs::remove_file(dst).with_context(|| format!("cannot replace {}", dst.display()))?;
    }
    if std::fs::hard_link(src, dst).is_err() {
        std::fs::copy(src, dst)
            .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
    }
    Ok(())
}
