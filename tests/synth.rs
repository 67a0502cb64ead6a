//! `synthesize` writes sets that load through `load_dataset` with the right counts, labels and
//! masks, and is byte-for-byte deterministic for a seed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use afclip::data::layouts::{dataset_info, load_dataset, DatasetInfo, DatasetKind};
use afclip::data::synth::{synthesize, SynthLayout, SynthOptions, SynthSummary};

/// A folder under the system temp dir, removed when dropped.
struct Tree(PathBuf);

impl Tree {
    fn new(name: &str) -> Tree {
        let root = std::env::temp_dir().join(format!("afclip-synth-{name}-{}", std::process::id()));
        if root.exists() {
            fs::remove_dir_all(&root).unwrap();
        }
        Tree(root)
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn options(out: &Path, layout: SynthLayout, seed: u64) -> SynthOptions {
    SynthOptions {
        out: out.to_path_buf(),
        layout,
        categories: 5,
        images: 7,
        width: 40,
        height: 32,
        seed,
        overwrite: false,
    }
}

/// Every file under `root`, by relative path, with its bytes.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn check_loads(layout: SynthLayout, kind: DatasetKind) {
    let t = Tree::new(&format!("{layout:?}"));
    let summary = synthesize(&options(&t.0, layout, 11)).unwrap();
    assert_eq!(
        summary,
        SynthSummary {
            categories: [
                "blotches_03",
                "grid_02",
                "noise_01",
                "stripes_00",
                "stripes_04"
            ]
            .map(String::from)
            .to_vec(),
            train: 5 * 3,
            test_normal: 5 * 4,
            test_anomalous: 5 * 3,
        }
    );
    let cats = load_dataset(kind, &t.0, None).unwrap();
    let names: Vec<&str> = cats.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, summary.categories);
    for cat in &cats {
        assert_eq!(cat.train.len(), 3, "{}", cat.name);
        assert!(cat
            .train
            .iter()
            .all(|s| s.label == Some(false) && s.mask.is_none()));
        let normal: Vec<_> = cat.test.iter().filter(|s| s.label == Some(false)).collect();
        let anomalous: Vec<_> = cat.test.iter().filter(|s| s.label == Some(true)).collect();
        assert_eq!((normal.len(), anomalous.len()), (4, 3), "{}", cat.name);
        assert!(normal.iter().all(|s| s.mask.is_none()));
        for sample in &anomalous {
            let image = image::open(&sample.path).unwrap();
            assert_eq!((image.width(), image.height()), (40, 32));
            let mask = image::open(sample.mask.as_ref().unwrap())
                .unwrap()
                .to_luma8();
            assert_eq!(mask.dimensions(), (40, 32));
            let marked = mask.pixels().filter(|p| p.0[0] != 0).count();
            assert!(marked > 0 && marked < 40 * 32, "{}", sample.path.display());
            let on = if layout == SynthLayout::Visa { 1 } else { 255 };
            assert!(mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == on));
            assert_eq!(sample.binarise_mask, layout == SynthLayout::Visa);
        }
        // Three anomalies per category: one of each defect kind (folder layouts).
        if layout != SynthLayout::Visa {
            let mut defects: Vec<String> = anomalous
                .iter()
                .map(|s| {
                    let dir = s.path.parent().unwrap().file_name().unwrap();
                    dir.to_string_lossy().into_owned()
                })
                .collect();
            defects.sort();
            assert_eq!(defects, ["blob", "scratch", "spot"]);
        }
    }
    assert_eq!(
        dataset_info(kind, &cats),
        DatasetInfo {
            has_labels: true,
            has_masks: true
        }
    );
}

#[test]
fn mvtec_layout_loads() {
    check_loads(SynthLayout::Mvtec, DatasetKind::Mvtec);
}

#[test]
fn visa_layout_loads() {
    check_loads(SynthLayout::Visa, DatasetKind::Visa);
}

#[test]
fn folder_layout_loads() {
    check_loads(SynthLayout::Folder, DatasetKind::Folder);
}

#[test]
fn same_seed_same_bytes_other_seed_differs() {
    let a = Tree::new("seed-a");
    let b = Tree::new("seed-b");
    let c = Tree::new("seed-c");
    for layout in [SynthLayout::Mvtec, SynthLayout::Visa] {
        let (pa, pb, pc) = (a.0.join("x"), b.0.join("x"), c.0.join("x"));
        synthesize(&options(&pa, layout, 5)).unwrap();
        // A different thread count must not change a byte.
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| synthesize(&options(&pb, layout, 5)))
            .unwrap();
        synthesize(&options(&pc, layout, 6)).unwrap();
        let (sa, sb, sc) = (snapshot(&pa), snapshot(&pb), snapshot(&pc));
        assert_eq!(sa.len(), sb.len());
        assert!(sa == sb, "{layout:?}: same seed, different files");
        assert_eq!(
            sa.keys().collect::<Vec<_>>(),
            sc.keys().collect::<Vec<_>>(),
            "{layout:?}: the seed changes contents, not names"
        );
        let differing = sa.iter().filter(|(k, v)| sc[*k] != **v).count();
        let images = sa
            .keys()
            .filter(|k| !k.to_string_lossy().ends_with(".csv"))
            .count();
        assert_eq!(
            differing, images,
            "{layout:?}: every image differs with the seed"
        );
        for dir in [&pa, &pb, &pc] {
            fs::remove_dir_all(dir).unwrap();
        }
    }
}

#[test]
fn refuses_a_non_empty_folder_unless_overwriting() {
    let t = Tree::new("overwrite");
    fs::create_dir_all(&t.0).unwrap();
    fs::write(t.0.join("keep.txt"), "mine").unwrap();
    let mut opts = options(&t.0, SynthLayout::Folder, 1);
    let err = format!("{:#}", synthesize(&opts).unwrap_err());
    assert!(
        err.contains("not empty") && err.contains("--overwrite"),
        "{err}"
    );
    opts.overwrite = true;
    synthesize(&opts).unwrap();
    assert_eq!(fs::read_to_string(t.0.join("keep.txt")).unwrap(), "mine");

    opts.images = 1;
    let err = format!("{:#}", synthesize(&opts).unwrap_err());
    assert!(err.contains("at least 2"), "{err}");
}
