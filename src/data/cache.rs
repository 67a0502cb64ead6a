//! The decoded-image cache (`--cache DIR`): each source image's resized `side x side` RGB bytes,
//! stored one file per (image, side) and read back through a memory map, so a second pass over
//! the same data skips decoding and resizing.
//!
//! Key: FNV-1a 64 of the canonical source path, its byte size, its modification time (ns) and
//! `side`; a file that changes size or mtime gets a new key, so it is re-read. Entry file
//! `<key as 16 hex digits>.rgb`, little-endian:
//!
//! ```text
//! magic "AFCLIPC1" | side u32 | size u64 | mtime_s i64 | mtime_ns u32 | path_len u32 | path
//!                  | crc32 u32 of the pixels | pixels (side * side * 3 bytes, HWC)
//! ```
//!
//! An entry is used only when its length, header (path, size, mtime, side) and CRC all match;
//! anything else (truncated, corrupt, a stale key collision) is counted, ignored and rewritten.
//! Entries are written to a temporary file and renamed into place, so a reader never sees a
//! half-written entry from a concurrent or killed writer.

use super::decode::Pixels;
use anyhow::{Context, Result};
use memmap2::Mmap;
use std::fs::{File, Metadata};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

const MAGIC: &[u8; 8] = b"AFCLIPC1";

pub struct Cache {
    dir: PathBuf,
    hits: AtomicU64,
    misses: AtomicU64,
    rebuilt: AtomicU64,
    write_failures: AtomicU64,
    tmp_counter: AtomicU64,
}

/// What a cache did during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries found corrupt or truncated (each one was then rebuilt).
    pub rebuilt: u64,
    pub write_failures: u64,
}

/// 64-bit FNV-1a, a stable hash (the same in every build and on every machine).
pub fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The identity of one source file for the cache.
struct Source {
    path: Vec<u8>,
    size: u64,
    mtime_s: i64,
    mtime_ns: u32,
}

impl Source {
    fn of(path: &Path, meta: &Metadata) -> Self {
        let full = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let (mtime_s, mtime_ns) = match meta.modified().map(|t| t.duration_since(UNIX_EPOCH)) {
            Ok(Ok(d)) => (d.as_secs() as i64, d.subsec_nanos()),
            Ok(Err(before)) => (-(before.duration().as_secs() as i64), 0),
            Err(_) => (0, 0),
        };
        Self {
            path: full.as_os_str().as_encoded_bytes().to_vec(),
            size: meta.len(),
            mtime_s,
            mtime_ns,
        }
    }

    fn header(&self, side: usize) -> Vec<u8> {
        let mut h = Vec::with_capacity(40 + self.path.len());
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&(side as u32).to_le_bytes());
        h.extend_from_slice(&self.size.to_le_bytes());
        h.extend_from_slice(&self.mtime_s.to_le_bytes());
        h.extend_from_slice(&self.mtime_ns.to_le_bytes());
        h.extend_from_slice(&(self.path.len() as u32).to_le_bytes());
        h.extend_from_slice(&self.path);
        h
    }
}

impl Cache {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create cache folder {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            rebuilt: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            tmp_counter: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            rebuilt: self.rebuilt.load(Ordering::Relaxed),
            write_failures: self.write_failures.load(Ordering::Relaxed),
        }
    }

    fn entry_path(&self, header: &[u8]) -> PathBuf {
        self.dir
            .join(format!("{:016x}.rgb", fnv1a(header, FNV_OFFSET)))
    }

    /// The cached `side x side` RGB image of `path` (whose metadata is `meta`), if a valid
    /// entry exists.
    pub fn get(&self, path: &Path, meta: &Metadata, side: usize) -> Option<Pixels> {
        let header = Source::of(path, meta).header(side);
        let entry = self.entry_path(&header);
        let file = match File::open(&entry) {
            Ok(f) => f,
            Err(_) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        // SAFETY: entries are only ever created by rename of a complete file, never modified
        // in place; a concurrent replacement swaps the directory entry, not this inode.
        let map = unsafe { Mmap::map(&file) };
        match map.ok().and_then(|m| valid_pixels(&m, &header, side)) {
            Some(data) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(Pixels {
                    width: side,
                    height: side,
                    channels: 3,
                    data,
                })
            }
            None => {
                eprintln!(
                    "warning: cache entry {} for {} is corrupt or truncated; rebuilding it",
                    entry.display(),
                    path.display()
                );
                self.rebuilt.fetch_add(1, Ordering::Relaxed);
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Stores `resized` for `path`. A failure to write is a warning, not an error: the cache
    /// only saves time.
    pub fn put(&self, path: &Path, meta: &Metadata, resized: &Pixels) {
        if let Err(e) = self.try_put(path, meta, resized) {
            if self.write_failures.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("warning: cannot write to the cache: {e:#}");
            }
        }
    }

    fn try_put(&self, path: &Path, meta: &Metadata, resized: &Pixels) -> Result<()> {
        let header = Source::of(path, meta).header(resized.width);
        let entry = self.entry_path(&header);
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            self.tmp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let crc = crc32(&resized.data);
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&header)?;
            f.write_all(&crc.to_le_bytes())?;
            f.write_all(&resized.data)?;
            f.flush()
        };
        write().with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &entry).with_context(|| format!("renaming to {}", entry.display()))
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

/// The pixels of an entry whose header equals `header` and whose length and CRC are right.
fn valid_pixels(bytes: &[u8], header: &[u8], side: usize) -> Option<Vec<u8>> {
    let n = side * side * 3;
    if bytes.len() != header.len() + 4 + n || !bytes.starts_with(header) {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[header.len()..header.len() + 4].try_into().ok()?);
    let data = &bytes[header.len() + 4..];
    (crc32(data) == crc).then(|| data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("afclip-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn pixels(side: usize, seed: u8) -> Pixels {
        Pixels {
            width: side,
            height: side,
            channels: 3,
            data: (0..side * side * 3)
                .map(|i| (i as u8).wrapping_mul(7) ^ seed)
                .collect(),
        }
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rgb"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn round_trip_change_and_corruption() {
        let dir = temp_dir("rt");
        let src = dir.join("img.png");
        std::fs::write(&src, b"source bytes").unwrap();
        let cache = Cache::open(&dir.join("cache")).unwrap();
        let meta = std::fs::metadata(&src).unwrap();
        assert!(cache.get(&src, &meta, 8).is_none());
        let px = pixels(8, 1);
        cache.put(&src, &meta, &px);
        assert_eq!(cache.get(&src, &meta, 8), Some(px.clone()));
        assert!(
            cache.get(&src, &meta, 9).is_none(),
            "another side is another entry"
        );

        // A changed source (new size and mtime) misses.
        std::fs::write(&src, b"other source bytes, longer").unwrap();
        let meta2 = std::fs::metadata(&src).unwrap();
        assert!(cache.get(&src, &meta2, 8).is_none());

        // Truncation and a flipped pixel byte are both detected, never used.
        let entry = entries(&dir.join("cache")).pop().unwrap();
        let good = std::fs::read(&entry).unwrap();
        std::fs::write(&entry, &good[..good.len() - 5]).unwrap();
        assert!(cache.get(&src, &meta, 8).is_none());
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        std::fs::write(&entry, &bad).unwrap();
        assert!(cache.get(&src, &meta, 8).is_none());
        assert_eq!(cache.stats().rebuilt, 2);
        cache.put(&src, &meta, &px);
        assert_eq!(cache.get(&src, &meta, 8), Some(px));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fnv_is_the_standard_function() {
        assert_eq!(fnv1a(b"", FNV_OFFSET), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a", FNV_OFFSET), 0xaf63_dc4c_8601_ec8c);
    }
}
