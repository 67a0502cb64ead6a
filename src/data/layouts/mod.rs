//! Dataset layouts: from a dataset root on disk to categories of (image, label, optional mask).
//!
//! Every reader follows `SPEC.md` §10 and returns the same shape, [`Category`] with its normal
//! training images and its test [`Sample`]s, in a fixed order:
//!
//! - categories sorted by name (byte order, so `Class10` comes before `Class2`);
//! - within a category, `train` and `test` each sorted by image path, compared component by
//!   component in byte order (the same as sorting by the path relative to the dataset root).
//!
//! The root may be the dataset folder itself (`.../mvtec`) or the folder holding it under one
//! of its usual names (`.../datasets` with `mvtec/` inside); see [`DatasetKind::folder_names`].
//! Images are found by extension (case-insensitive, see [`looks_like_image`]), hidden files
//! (names starting with `.`) are skipped, and symbolic links are listed as they are, so that a
//! broken one is reported when it is decoded rather than silently dropped.
//!
//! Errors name the folder or file and the problem: a missing expected folder, an unknown
//! category (with the list of available ones), a mask that is referenced or expected by the
//! layout's convention but missing, a malformed CSV or JSON row.

pub mod dagm;
pub mod folder;
pub mod manifest;
pub mod medical;
pub mod meta_json;
pub mod mvtec;
pub mod visa;

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};

/// One image to score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The image file.
    pub path: PathBuf,
    /// `Some(true)` = anomalous, `Some(false)` = normal, `None` = unknown.
    pub label: Option<bool>,
    /// Ground-truth mask; `None` for normal images (an all-zero mask) and for sets without masks.
    pub mask: Option<PathBuf>,
    /// The mask stores labels rather than 0/255 (VisA): every non-zero value means 255.
    pub binarise_mask: bool,
}

impl Sample {
    /// A normal image (no mask).
    pub fn normal(path: PathBuf) -> Self {
        Sample {
            path,
            label: Some(false),
            mask: None,
            binarise_mask: false,
        }
    }

    /// An anomalous image with its mask, if the layout has one.
    pub fn anomalous(path: PathBuf, mask: Option<PathBuf>) -> Self {
        Sample {
            path,
            label: Some(true),
            mask,
            binarise_mask: false,
        }
    }
}

/// One category (MVTec's "bottle", VisA's "pcb1", ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub name: String,
    /// Normal training images (few-shot references); may be empty.
    pub train: Vec<Sample>,
    pub test: Vec<Sample>,
}

/// The layouts afclip reads; the CLI names are those of [`DatasetKind::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum DatasetKind {
    #[value(name = "mvtec")]
    Mvtec,
    #[value(name = "visa")]
    Visa,
    #[value(name = "btad")]
    Btad,
    #[value(name = "dtd")]
    Dtd,
    #[value(name = "mpdd")]
    Mpdd,
    #[value(name = "dagm")]
    Dagm,
    #[value(name = "brainmri")]
    BrainMri,
    #[value(name = "br35h")]
    Br35h,
    #[value(name = "isic")]
    Isic,
    #[value(name = "clinicdb")]
    ClinicDb,
    #[value(name = "colondb")]
    ColonDb,
    #[value(name = "kvasir")]
    Kvasir,
    #[value(name = "folder")]
    Folder,
    #[value(name = "meta")]
    MetaJson,
    #[value(name = "manifest")]
    Manifest,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 15] = [
        DatasetKind::Mvtec,
        DatasetKind::Visa,
        DatasetKind::Btad,
        DatasetKind::Dtd,
        DatasetKind::Mpdd,
        DatasetKind::Dagm,
        DatasetKind::BrainMri,
        DatasetKind::Br35h,
        DatasetKind::Isic,
        DatasetKind::ClinicDb,
        DatasetKind::ColonDb,
        DatasetKind::Kvasir,
        DatasetKind::Folder,
        DatasetKind::MetaJson,
        DatasetKind::Manifest,
    ];

    /// The name used on the command line (`--dataset NAME`).
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mvtec => "mvtec",
            DatasetKind::Visa => "visa",
            DatasetKind::Btad => "btad",
            DatasetKind::Dtd => "dtd",
            DatasetKind::Mpdd => "mpdd",
            DatasetKind::Dagm => "dagm",
            DatasetKind::BrainMri => "brainmri",
            DatasetKind::Br35h => "br35h",
            DatasetKind::Isic => "isic",
            DatasetKind::ClinicDb => "clinicdb",
            DatasetKind::ColonDb => "colondb",
            DatasetKind::Kvasir => "kvasir",
            DatasetKind::Folder => "folder",
            DatasetKind::MetaJson => "meta",
            DatasetKind::Manifest => "manifest",
        }
    }

    /// The dataset's usual name, for messages.
    pub fn title(self) -> &'static str {
        match self {
            DatasetKind::Mvtec => "MVTec AD",
            DatasetKind::Visa => "VisA",
            DatasetKind::Btad => "BTAD",
            DatasetKind::Dtd => "DTD-Synthetic",
            DatasetKind::Mpdd => "MPDD",
            DatasetKind::Dagm => "DAGM 2007",
            DatasetKind::BrainMri => "BrainMRI",
            DatasetKind::Br35h => "Br35H",
            DatasetKind::Isic => "ISIC 2016",
            DatasetKind::ClinicDb => "CVC-ClinicDB",
            DatasetKind::ColonDb => "CVC-ColonDB",
            DatasetKind::Kvasir => "Kvasir",
            DatasetKind::Folder => "generic folder",
            DatasetKind::MetaJson => "meta.json",
            DatasetKind::Manifest => "CSV manifest",
        }
    }

    /// Usual names of the dataset's own folder: a root that is not the dataset folder itself is
    /// searched for a subfolder of one of these names. Empty for the generic formats, whose
    /// root is always taken as given.
    pub fn folder_names(self) -> &'static [&'static str] {
        match self {
            DatasetKind::Mvtec => &[
                "mvtec",
                "MVTec",
                "mvtec_ad",
                "MVTec-AD",
                "mvtec_anomaly_detection",
            ],
            DatasetKind::Visa => &["visa", "VisA", "VisA_20220922"],
            DatasetKind::Btad => &["btad", "BTAD", "BTech_Dataset_transformed"],
            DatasetKind::Dtd => &["DTD-Synthetic", "dtd", "DTD", "dtd_synthetic"],
            DatasetKind::Mpdd => &["mpdd", "MPDD"],
            DatasetKind::Dagm => &["DAGM_KaggleUpload", "DAGM", "dagm"],
            DatasetKind::BrainMri => &["BrainMRI", "brainmri", "brain_tumor_dataset"],
            DatasetKind::Br35h => &["Br35H", "br35h"],
            DatasetKind::Isic => &["ISIC2016", "ISIC", "isic2016", "isic"],
            DatasetKind::ClinicDb => &["CVC-ClinicDB", "ClinicDB", "clinicdb"],
            DatasetKind::ColonDb => &["CVC-ColonDB", "ColonDB", "colondb"],
            DatasetKind::Kvasir => &["Kvasir", "Kvasir-SEG", "kvasir"],
            DatasetKind::Folder | DatasetKind::MetaJson | DatasetKind::Manifest => &[],
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_lowercase();
        DatasetKind::ALL
            .into_iter()
            .find(|kind| kind.name() == wanted)
            .with_context(|| {
                let names: Vec<&str> = DatasetKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown dataset '{s}': expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Which metrics a loaded set supports (SPEC §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetInfo {
    /// Image-level metrics make sense: labels are known and both classes occur.
    pub has_labels: bool,
    /// Pixel-level metrics make sense: every anomalous test image has a mask.
    pub has_masks: bool,
}

/// What `kind` supports: fixed by SPEC §9 for the public sets (BrainMRI and Br35H have labels
/// only; ISIC, CVC-ClinicDB, CVC-ColonDB and Kvasir masks only), read from the loaded samples
/// for the generic formats (labels: every test label known and both classes present; masks:
/// at least one anomalous test image and a mask for every one).
pub fn dataset_info(kind: DatasetKind, categories: &[Category]) -> DatasetInfo {
    match kind {
        DatasetKind::BrainMri | DatasetKind::Br35h => DatasetInfo {
            has_labels: true,
            has_masks: false,
        },
        DatasetKind::Isic | DatasetKind::ClinicDb | DatasetKind::ColonDb | DatasetKind::Kvasir => {
            DatasetInfo {
                has_labels: false,
                has_masks: true,
            }
        }
        DatasetKind::Folder | DatasetKind::MetaJson | DatasetKind::Manifest => {
            let test = || categories.iter().flat_map(|c| c.test.iter());
            let all_known = test().all(|s| s.label.is_some());
            let any_normal = test().any(|s| s.label == Some(false));
            let mut anomalous = test().filter(|s| s.label == Some(true)).peekable();
            let any_anomalous = anomalous.peek().is_some();
            let masks_complete = anomalous.all(|s| s.mask.is_some());
            DatasetInfo {
                has_labels: all_known && any_normal && any_anomalous,
                has_masks: any_anomalous && masks_complete,
            }
        }
        _ => DatasetInfo {
            has_labels: true,
            has_masks: true,
        },
    }
}

/// Reads the dataset of `kind` at `root`; `categories` keeps only the named ones (an unknown
/// name is an error that lists the available ones). Every returned category has at least one
/// test image. The generic folder layout read this way takes its masks from
/// `ground_truth/`; [`folder::load`] also takes a separate masks folder.
pub fn load_dataset(
    kind: DatasetKind,
    root: &Path,
    categories: Option<&[String]>,
) -> Result<Vec<Category>> {
    let loaded = match kind {
        DatasetKind::Mvtec | DatasetKind::Btad | DatasetKind::Dtd | DatasetKind::Mpdd => {
            mvtec::load(kind, root, categories)
        }
        DatasetKind::Visa => visa::load(root, categories),
        DatasetKind::Dagm => dagm::load(root, categories),
        DatasetKind::BrainMri
        | DatasetKind::Br35h
        | DatasetKind::Isic
        | DatasetKind::ClinicDb
        | DatasetKind::ColonDb
        | DatasetKind::Kvasir => medical::load(kind, root, categories),
        DatasetKind::Folder => folder::load(root, None, categories),
        DatasetKind::MetaJson => meta_json::load(root, categories),
        DatasetKind::Manifest => manifest::load(root, categories),
    }
    .with_context(|| format!("reading {} dataset at {}", kind.title(), root.display()))?;
    if let Some(empty) = loaded.iter().find(|c| c.test.is_empty()) {
        bail!(
            "{} dataset at {}: category '{}' has no test images",
            kind.title(),
            root.display(),
            empty.name
        );
    }
    Ok(loaded)
}

/// Extensions taken for images (compared without case). Formats the decoder does not support
/// are listed too, so that such a file is reported as unsupported instead of being skipped.
const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "jpe", "bmp", "tif", "tiff", "gif", "webp", "ppm", "pgm", "pbm", "pnm",
    "tga", "ico", "jp2", "j2k", "jxl", "heic", "heif", "avif", "exr", "hdr", "dds", "qoi",
];

/// Whether `path` has an image extension (see the module docs).
pub fn looks_like_image(path: &Path) -> bool {
    path.extension()
        .map(|ext| {
            let ext = ext.to_string_lossy().to_ascii_lowercase();
            IMAGE_EXTENSIONS.contains(&ext.as_str())
        })
        .unwrap_or(false)
}

fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// The non-hidden entries of `dir`, sorted by name, split into folders (symbolic links to
/// folders included) and image files (anything else with an image extension, including links
/// that lead nowhere).
struct Listing {
    dirs: Vec<(OsString, PathBuf)>,
    images: Vec<PathBuf>,
}

fn list_dir(dir: &Path) -> Result<Listing> {
    let entries =
        fs::read_dir(dir).with_context(|| format!("cannot list folder {}", dir.display()))?;
    let mut dirs = Vec::new();
    let mut images = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list folder {}", dir.display()))?;
        let name = entry.file_name();
        if is_hidden(&name) {
            continue;
        }
        let path = entry.path();
        // `metadata` follows links; a link that leads nowhere counts as a (broken) file.
        if fs::metadata(&path).map(|m| m.is_dir()).unwrap_or(false) {
            dirs.push((name, path));
        } else if looks_like_image(&path) {
            images.push(path);
        }
    }
    dirs.sort();
    images.sort();
    Ok(Listing { dirs, images })
}

/// Image files directly inside `dir`, sorted.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(list_dir(dir)?.images)
}

/// Subfolders of `dir` as (name, path), sorted by name.
fn subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    Ok(list_dir(dir)?
        .dirs
        .into_iter()
        .map(|(name, path)| (name.to_string_lossy().into_owned(), path))
        .collect())
}

/// The dataset folder: `root` itself when `probe` accepts it, otherwise the first subfolder of
/// `root` named in [`DatasetKind::folder_names`] that `probe` accepts.
fn resolve_root(
    kind: DatasetKind,
    root: &Path,
    expected: &str,
    probe: impl Fn(&Path) -> bool,
) -> Result<PathBuf> {
    if !root.is_dir() {
        bail!("{} is not a folder", root.display());
    }
    if probe(root) {
        return Ok(root.to_path_buf());
    }
    for name in kind.folder_names() {
        let candidate = root.join(name);
        if candidate.is_dir() && probe(&candidate) {
            return Ok(candidate);
        }
    }
    bail!(
        "{} does not look like a {} dataset: expected {expected} in it, or in a subfolder named {}",
        root.display(),
        kind.title(),
        kind.folder_names().join(" or ")
    )
}

/// Keeps the `requested` names of `available` (sorted, without duplicates); all of them when
/// nothing is requested. An unknown name is an error listing the available ones.
fn select_names(
    available: &[String],
    requested: Option<&[String]>,
    place: &Path,
) -> Result<Vec<String>> {
    let available_set: BTreeSet<&String> = available.iter().collect();
    let Some(requested) = requested else {
        return Ok(available_set.into_iter().cloned().collect());
    };
    let mut chosen = BTreeSet::new();
    for name in requested {
        if !available_set.contains(name) {
            let list: Vec<&str> = available_set.iter().map(|s| s.as_str()).collect();
            bail!(
                "unknown category '{name}' in {}: available categories are {}",
                place.display(),
                if list.is_empty() {
                    "(none)".to_string()
                } else {
                    list.join(", ")
                }
            );
        }
        chosen.insert(name.clone());
    }
    Ok(chosen.into_iter().collect())
}

/// Keeps the requested categories of an already read set (see [`select_names`]) and sorts the
/// categories and their samples.
fn select_categories(
    mut all: Vec<Category>,
    requested: Option<&[String]>,
    place: &Path,
) -> Result<Vec<Category>> {
    let names: Vec<String> = all.iter().map(|c| c.name.clone()).collect();
    let chosen = select_names(&names, requested, place)?;
    all.retain(|c| chosen.binary_search(&c.name).is_ok());
    all.sort_by(|a, b| a.name.cmp(&b.name));
    for category in &mut all {
        sort_samples(&mut category.train);
        sort_samples(&mut category.test);
    }
    Ok(all)
}

fn sort_samples(samples: &mut [Sample]) {
    samples.sort_by(|a, b| a.path.cmp(&b.path));
}

fn file_stem(path: &Path) -> OsString {
    path.file_stem()
        .map(OsStr::to_os_string)
        .unwrap_or_default()
}

/// The image files of one mask folder, by file stem.
struct MaskIndex {
    dir: PathBuf,
    by_stem: HashMap<OsString, PathBuf>,
}

impl MaskIndex {
    fn read(dir: &Path) -> Result<Self> {
        let mut by_stem = HashMap::new();
        // Sorted listing and first-wins: `x.bmp` is taken over `x.png`, always the same way.
        for path in image_files(dir)? {
            by_stem.entry(file_stem(&path)).or_insert(path);
        }
        Ok(MaskIndex {
            dir: dir.to_path_buf(),
            by_stem,
        })
    }

    /// The mask of `image`: the first of `<stem><suffix>.*` found, for each suffix in turn.
    fn get(&self, image: &Path, suffixes: &[&str]) -> Option<PathBuf> {
        let stem = file_stem(image);
        suffixes.iter().find_map(|suffix| {
            let mut key = stem.clone();
            key.push(suffix);
            self.by_stem.get(&key).cloned()
        })
    }

    /// Like [`MaskIndex::get`], but a missing mask is an error naming what was expected.
    fn find(&self, image: &Path, suffixes: &[&str]) -> Result<PathBuf> {
        if let Some(path) = self.get(image, suffixes) {
            return Ok(path);
        }
        let stem = file_stem(image);
        let expected: Vec<String> = suffixes
            .iter()
            .map(|s| format!("{}{s}.png", stem.to_string_lossy()))
            .collect();
        bail!(
            "mask missing for {}: expected {} (any image extension) in {}",
            image.display(),
            expected.join(" or "),
            self.dir.display()
        )
    }
}

/// A path named in a CSV or JSON file: relative ones are taken from `base`.
fn join_listed(base: &Path, listed: &str) -> PathBuf {
    base.join(listed.trim())
}

/// Checks that a file named in `source` exists (a link counts even when broken: reading it
/// reports that later).
fn require_listed(path: &Path, what: &str, source: &str) -> Result<()> {
    if fs::symlink_metadata(path).is_err() {
        bail!("{source}: {what} {} not found", path.display());
    }
    Ok(())
}

/// One CSV record and the line it starts on (1-based).
#[derive(Debug, PartialEq, Eq)]
struct CsvRecord {
    line: usize,
    fields: Vec<String>,
}

/// Reads a CSV file (RFC 4180: `,` separated, `"` quoted with `""` for a quote, LF or CRLF,
/// optional UTF-8 byte-order mark). Blank lines are skipped; fields are not trimmed.
fn read_csv(file: &Path) -> Result<Vec<CsvRecord>> {
    let bytes = fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{} is not UTF-8 text: {e}", file.display()))?;
    parse_csv(&text).with_context(|| format!("malformed CSV {}", file.display()))
}

fn parse_csv(text: &str) -> Result<Vec<CsvRecord>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut record_line = 1;
    let mut in_quotes = false;
    let mut quoted_field = false;
    let mut chars = text.chars().peekable();
    let mut end_record = |fields: &mut Vec<String>, field: &mut String, record_line: usize| {
        fields.push(std::mem::take(field));
        let is_blank = fields.len() == 1 && fields[0].is_empty();
        let taken = std::mem::take(fields);
        if !is_blank {
            records.push(CsvRecord {
                line: record_line,
                fields: taken,
            });
        }
    };
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !quoted_field => {
                in_quotes = true;
                quoted_field = true;
            }
            '"' => bail!("line {line}: stray '\"' inside an unquoted field"),
            ',' => {
                fields.push(std::mem::take(&mut field));
                quoted_field = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                end_record(&mut fields, &mut field, record_line);
                quoted_field = false;
                line += 1;
                record_line = line;
            }
            _ if quoted_field => bail!("line {line}: text after a closing '\"'"),
            _ => field.push(c),
        }
    }
    if in_quotes {
        bail!("line {record_line}: quoted field never closed");
    }
    if !fields.is_empty() || !field.is_empty() || quoted_field {
        end_record(&mut fields, &mut field, record_line);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_plain_quoted_and_crlf() {
        let text = "\u{feff}a,b,c\r\n\r\n\"x,1\",\"say \"\"hi\"\"\",\n\"multi\nline\",2,3\nlast,,";
        let parsed = parse_csv(text).unwrap();
        let got: Vec<(usize, Vec<&str>)> = parsed
            .iter()
            .map(|r| (r.line, r.fields.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, vec!["a", "b", "c"]),
                (3, vec!["x,1", "say \"hi\"", ""]),
                (4, vec!["multi\nline", "2", "3"]),
                (6, vec!["last", "", ""]),
            ]
        );
    }

    #[test]
    fn csv_errors_name_the_line() {
        let err = parse_csv("a,b\n\"open,c\n").unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("never closed"),
            "{err}"
        );
        let err = parse_csv("a,b\nx\"y,c\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("stray"), "{err}");
        let err = parse_csv("\"a\"b,c\n").unwrap_err().to_string();
        assert!(
            err.contains("line 1") && err.contains("after a closing"),
            "{err}"
        );
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in DatasetKind::ALL {
            assert_eq!(kind.name().parse::<DatasetKind>().unwrap(), kind);
            let via_clap = <DatasetKind as clap::ValueEnum>::from_str(kind.name(), false).unwrap();
            assert_eq!(via_clap, kind);
        }
        let err = "mvtech".parse::<DatasetKind>().unwrap_err().to_string();
        assert!(err.contains("mvtech") && err.contains("kvasir"), "{err}");
    }

    #[test]
    fn image_extensions_ignore_case() {
        assert!(looks_like_image(Path::new("a/0001.PNG")));
        assert!(looks_like_image(Path::new("a/x.JPG")));
        assert!(looks_like_image(Path::new("x.webp")));
        assert!(!looks_like_image(Path::new("Labels.txt")));
        assert!(!looks_like_image(Path::new("README")));
    }

    #[test]
    fn select_names_sorts_dedups_and_rejects_unknown() {
        let available: Vec<String> = ["b", "a", "c"].iter().map(|s| s.to_string()).collect();
        let req: Vec<String> = ["c", "a", "c"].iter().map(|s| s.to_string()).collect();
        let got = select_names(&available, Some(&req), Path::new("/d")).unwrap();
        assert_eq!(got, vec!["a", "c"]);
        let all = select_names(&available, None, Path::new("/d")).unwrap();
        assert_eq!(all, vec!["a", "b", "c"]);
        let bad = vec!["zz".to_string()];
        let err = select_names(&available, Some(&bad), Path::new("/d"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("'zz'") && err.contains("a, b, c"), "{err}");
    }
}
