//! Image inputs named on the command line: files, or folders walked recursively in sorted order.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

/// One image to score: where it is, and the name it is reported under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub path: PathBuf,
    /// Relative to the INPUT argument it came from, `/`-separated; a file argument's own name.
    pub rel: String,
}

pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Expands `args` into images: a file is taken as it is (whatever its extension, so a bad
/// file is reported rather than skipped); a folder contributes every image file below it.
/// Two inputs reported under the same name are an error (their outputs would collide).
pub fn collect_inputs(args: &[PathBuf]) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    for arg in args {
        let meta = std::fs::metadata(arg)
            .with_context(|| format!("input {} does not exist or cannot be read", arg.display()))?;
        if meta.is_dir() {
            let mut files = Vec::new();
            walk(arg, &mut files)?;
            files.sort();
            for path in files {
                let rel = path
                    .strip_prefix(arg)
                    .expect("walked below the argument")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push(Input { path, rel });
            }
        } else {
            let rel = arg
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .with_context(|| format!("input {} has no file name", arg.display()))?;
            out.push(Input {
                path: arg.clone(),
                rel,
            });
        }
    }
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for input in &out {
        if let Some(first) = seen.insert(input.stem(), &input.path) {
            bail!(
                "inputs {} and {} would both be reported as {} (their maps would collide); \
                 score them in separate runs",
                first.display(),
                input.path.display(),
                input.stem()
            );
        }
    }
    Ok(out)
}

impl Input {
    /// `rel` without its file extension: the name of this image's map files.
    pub fn stem(&self) -> &str {
        let name_start = self.rel.rfind('/').map_or(0, |i| i + 1);
        match self.rel[name_start..].rfind('.') {
            Some(dot) if dot > 0 => &self.rel[..name_start + dot],
            _ => &self.rel,
        }
    }
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read folder {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read folder {}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if kind.is_dir() || (kind.is_symlink() && path.is_dir()) {
            walk(&path, files)?;
        } else if is_image(&path) {
            files.push(path);
        }
    }
    Ok(())
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

    #[test]
    fn folders_are_walked_sorted_and_relative() {
        let dir = temp_dir("walk");
        for f in ["b.png", "a/z.JPG", "a/y.txt", "c/d/e.bmp"] {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"x").unwrap();
        }
        let got = collect_inputs(&[dir.clone(), dir.join("b.png")]);
        let err = got.unwrap_err().to_string();
        assert!(err.contains("b.png"), "{err}");
        std::fs::write(dir.join("b.jpg"), b"x").unwrap();
        let err = collect_inputs(std::slice::from_ref(&dir))
            .unwrap_err()
            .to_string();
        assert!(err.contains("b.jpg") && err.contains("b.png"), "{err}");
        std::fs::remove_file(dir.join("b.jpg")).unwrap();
        let got = collect_inputs(std::slice::from_ref(&dir)).unwrap();
        let rels: Vec<&str> = got.iter().map(|i| i.rel.as_str()).collect();
        assert_eq!(rels, ["a/z.JPG", "b.png", "c/d/e.bmp"]);
        assert_eq!(got[0].stem(), "a/z");
        assert!(collect_inputs(&[dir.join("missing")])
            .unwrap_err()
            .to_string()
            .contains("missing"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
