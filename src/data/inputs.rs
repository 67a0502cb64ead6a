//! Image inputs named on the command line: files, or folders walked recursively — lazily, one
//! folder listing at a time, so scoring starts at once and memory does not grow with the
//! archive.
//!
//! Order (deterministic): the arguments in the order given; inside a folder, entries sorted by
//! their file name's bytes, depth first (the same order as sorting the relative paths
//! component by component). Each input carries its position in that order (`index`).

use crate::data::cache::{fnv1a, FNV_OFFSET};
use anyhow::{Context, Result};
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

/// One image to score: where it is, and the name it is reported under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub path: PathBuf,
    /// Relative to the INPUT argument it came from, `/`-separated; a file argument's own name.
    pub rel: String,
    /// Position in the full input order (before any sharding), from 0.
    pub index: u64,
    /// Set when listing already found the input unusable (a folder that cannot be read, a
    /// folder symlink loop, a name that collides with an earlier input).
    pub problem: Option<String>,
}

pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

impl Input {
    /// `rel` without its file extension: the name of this image's map files.
    pub fn stem(&self) -> &str {
        stem_of(&self.rel)
    }

    /// The shard (of `n`) this input belongs to: FNV-1a 64 of `rel`, modulo `n`.
    pub fn shard(&self, n: u64) -> u64 {
        fnv1a(self.rel.as_bytes(), FNV_OFFSET) % n
    }
}

fn stem_of(rel: &str) -> &str {
    let name_start = rel.rfind('/').map_or(0, |i| i + 1);
    match rel[name_start..].rfind('.') {
        Some(dot) if dot > 0 => &rel[..name_start + dot],
        _ => rel,
    }
}

/// Expands `args` lazily into images: a file is taken as it is (whatever its extension, so a
/// bad file is reported rather than skipped); a folder contributes every image file below it.
/// An argument that does not exist is an error here, before anything is scored. Problems
/// found while walking (see [`Input::problem`]) become inputs that fail.
pub fn walk_inputs(args: &[PathBuf]) -> Result<InputWalk> {
    for arg in args {
        std::fs::metadata(arg)
            .with_context(|| format!("input {} does not exist or cannot be read", arg.display()))?;
    }
    Ok(InputWalk {
        args: args.iter().cloned().collect(),
        root: PathBuf::new(),
        stack: Vec::new(),
        next_index: 0,
        across_args: (args.len() > 1).then(HashSet::new),
    })
}

struct Frame {
    dir: PathBuf,
    id: (u64, u64),
    entries: std::vec::IntoIter<OsString>,
    /// Stems of this folder's images so far, for the collision check.
    stems: HashMap<String, String>,
}

/// The lazy walk of [`walk_inputs`].
pub struct InputWalk {
    args: VecDeque<PathBuf>,
    root: PathBuf,
    stack: Vec<Frame>,
    next_index: u64,
    /// With several arguments, hashes of every stem so far (8 bytes an input): two arguments
    /// may hold the same relative names.
    across_args: Option<HashSet<u64>>,
}

impl InputWalk {
    fn rel(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    }

    fn make(&mut self, path: PathBuf, rel: String, problem: Option<String>) -> Input {
        let mut problem = problem;
        if let Some(seen) = &mut self.across_args {
            if !seen.insert(fnv1a(stem_of(&rel).as_bytes(), FNV_OFFSET)) && problem.is_none() {
                problem = Some(format!(
                    "{}: reported as {rel}, the same name as an earlier input (their outputs \
                     would collide); score them in separate runs",
                    path.display()
                ));
            }
        }
        let index = self.next_index;
        self.next_index += 1;
        Input {
            path,
            rel,
            index,
            problem,
        }
    }

    /// Opens `dir` as a new frame, or returns the problem that prevents it.
    fn push_dir(&mut self, dir: PathBuf) -> Option<String> {
        let meta = match std::fs::metadata(&dir) {
            Ok(m) => m,
            Err(e) => return Some(format!("{}: cannot read folder: {e}", dir.display())),
        };
        let id = (meta.dev(), meta.ino());
        if let Some(ancestor) = self.stack.iter().find(|f| f.id == id) {
            return Some(format!(
                "{}: symlink loop (leads back to {})",
                dir.display(),
                ancestor.dir.display()
            ));
        }
        let listing = std::fs::read_dir(&dir).and_then(|rd| {
            rd.map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<Vec<_>>>()
        });
        match listing {
            Ok(mut names) => {
                names.sort();
                self.stack.push(Frame {
                    dir,
                    id,
                    entries: names.into_iter(),
                    stems: HashMap::new(),
                });
                None
            }
            Err(e) => Some(format!("{}: cannot read folder: {e}", dir.display())),
        }
    }
}

impl Iterator for InputWalk {
    type Item = Input;

    fn next(&mut self) -> Option<Input> {
        loop {
            let Some(frame) = self.stack.last_mut() else {
                let arg = self.args.pop_front()?;
                if arg.is_dir() {
                    self.root = arg.clone();
                    if let Some(problem) = self.push_dir(arg.clone()) {
                        let rel = arg.display().to_string();
                        return Some(self.make(arg, rel, Some(problem)));
                    }
                    continue;
                }
                let rel = arg
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| arg.display().to_string());
                return Some(self.make(arg, rel, None));
            };
            let Some(name) = frame.entries.next() else {
                self.stack.pop();
                continue;
            };
            let path = frame.dir.join(&name);
            let link = std::fs::symlink_metadata(&path);
            let is_dir = match &link {
                Ok(m) => m.is_dir() || (m.file_type().is_symlink() && path.is_dir()),
                Err(_) => false,
            };
            if is_dir {
                if let Some(problem) = self.push_dir(path.clone()) {
                    let rel = self.rel(&path);
                    return Some(self.make(path, rel, Some(problem)));
                }
                continue;
            }
            if !is_image(&path) {
                continue;
            }
            let rel = self.rel(&path);
            let frame = self.stack.last_mut().expect("the frame listed this entry");
            let stem = stem_of(&rel).to_string();
            let problem = frame.stems.get(&stem).map(|first| {
                format!(
                    "{}: reported under the same name {stem} as {first} (their maps would \
                     collide); rename one of them",
                    path.display()
                )
            });
            frame.stems.entry(stem).or_insert_with(|| rel.clone());
            return Some(self.make(path, rel, problem));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("afclip-inputs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn walk(args: &[PathBuf]) -> Vec<Input> {
        walk_inputs(args).unwrap().collect()
    }

    #[test]
    fn folders_are_walked_sorted_and_relative() {
        let dir = temp_dir("walk");
        for f in [
            "b.png",
            "a/z.JPG",
            "a/y.txt",
            "c/d/e.bmp",
            "a.png",
            "a0/q.png",
        ] {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"x").unwrap();
        }
        let got = walk(std::slice::from_ref(&dir));
        let rels: Vec<&str> = got.iter().map(|i| i.rel.as_str()).collect();
        let mut sorted: Vec<PathBuf> = rels.iter().map(PathBuf::from).collect();
        sorted.sort();
        assert_eq!(rels, ["a/z.JPG", "a.png", "a0/q.png", "b.png", "c/d/e.bmp"]);
        assert_eq!(
            sorted,
            rels.iter().map(PathBuf::from).collect::<Vec<_>>(),
            "the walk order is the sorted order of the paths"
        );
        assert!(got.iter().all(|i| i.problem.is_none()));
        assert_eq!(
            got.iter().map(|i| i.index).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        assert_eq!(got[0].stem(), "a/z");

        // Same stem in one folder: the later one fails, the first is kept.
        std::fs::write(dir.join("b.jpg"), b"x").unwrap();
        let got = walk(std::slice::from_ref(&dir));
        let b: Vec<&Input> = got.iter().filter(|i| i.stem() == "b").collect();
        assert_eq!(b.len(), 2);
        assert!(b[0].problem.is_none() && b[0].rel == "b.jpg");
        assert!(b[1].problem.as_ref().unwrap().contains("b.jpg"));
        std::fs::remove_file(dir.join("b.jpg")).unwrap();

        // The same name from two arguments: the second fails.
        let got = walk(&[dir.clone(), dir.join("b.png")]);
        assert!(got
            .last()
            .unwrap()
            .problem
            .as_ref()
            .unwrap()
            .contains("b.png"));
        assert!(got[..got.len() - 1].iter().all(|i| i.problem.is_none()));

        assert!(walk_inputs(&[dir.join("missing")])
            .err()
            .unwrap()
            .to_string()
            .contains("missing"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn folder_symlink_loops_are_reported_not_followed() {
        let dir = temp_dir("loop");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/x.png"), b"x").unwrap();
        std::os::unix::fs::symlink("..", dir.join("sub/up")).unwrap();
        let got = walk(std::slice::from_ref(&dir));
        let rels: Vec<&str> = got.iter().map(|i| i.rel.as_str()).collect();
        assert_eq!(rels, ["sub/up", "sub/x.png"]);
        assert!(got[0].problem.as_ref().unwrap().contains("symlink loop"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shards_partition_by_relative_path() {
        let inputs: Vec<Input> = (0..200)
            .map(|i| Input {
                path: PathBuf::new(),
                rel: format!("d/{i}.png"),
                index: i,
                problem: None,
            })
            .collect();
        let counts: Vec<usize> = (0..4)
            .map(|s| inputs.iter().filter(|i| i.shard(4) == s).count())
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), 200);
        assert!(counts.iter().all(|&c| c > 25), "{counts:?}");
    }
}
