//! Every dataset layout read from a small generated tree: categories, order, labels, masks, and
//! the errors for unknown categories and missing files.

use std::fs;
use std::path::{Path, PathBuf};

use afclip::data::layouts::{
    dataset_info, folder, load_dataset, Category, DatasetInfo, DatasetKind, Sample,
};
use image::{GrayImage, Luma, RgbImage};

/// A folder under the system temp dir, removed when dropped.
struct Tree(PathBuf);

impl Tree {
    fn new(name: &str) -> Tree {
        let root =
            std::env::temp_dir().join(format!("afclip-datasets-{name}-{}", std::process::id()));
        if root.exists() {
            fs::remove_dir_all(&root).unwrap();
        }
        fs::create_dir_all(&root).unwrap();
        Tree(root)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    /// An 8x8 image (format from the extension).
    fn image(&self, rel: &str) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_pixel(8, 8, image::Rgb([90, 120, 30]))
            .save(&path)
            .unwrap();
        path
    }

    /// An 8x8 mask with one marked pixel.
    fn mask(&self, rel: &str) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut mask = GrayImage::new(8, 8);
        mask.put_pixel(3, 4, Luma([255]));
        mask.save(&path).unwrap();
        path
    }

    fn text(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn names(categories: &[Category]) -> Vec<&str> {
    categories.iter().map(|c| c.name.as_str()).collect()
}

/// (path relative to `base`, label, mask relative to `base`) of each sample.
fn rows(base: &Path, samples: &[Sample]) -> Vec<(String, Option<bool>, Option<String>)> {
    let rel = |p: &Path| {
        p.strip_prefix(base)
            .unwrap_or_else(|_| panic!("{} not under {}", p.display(), base.display()))
            .to_string_lossy()
            .into_owned()
    };
    samples
        .iter()
        .map(|s| (rel(&s.path), s.label, s.mask.as_deref().map(rel)))
        .collect()
}

fn row(
    path: &str,
    label: Option<bool>,
    mask: Option<&str>,
) -> (String, Option<bool>, Option<String>) {
    (path.to_string(), label, mask.map(str::to_string))
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn error(result: anyhow::Result<Vec<Category>>) -> String {
    format!("{:#}", result.expect_err("expected an error"))
}

fn mvtec_tree(t: &Tree, top: &str) {
    for cat in ["bottle", "cable"] {
        t.image(&format!("{top}/{cat}/train/good/001.png"));
        t.image(&format!("{top}/{cat}/train/good/000.png"));
        t.image(&format!("{top}/{cat}/test/good/000.png"));
        for defect in ["scratch", "broken"] {
            for i in ["000", "001"] {
                t.image(&format!("{top}/{cat}/test/{defect}/{i}.png"));
                t.mask(&format!("{top}/{cat}/ground_truth/{defect}/{i}_mask.png"));
            }
        }
    }
    t.text(&format!("{top}/license.txt"), "not a category");
    t.image(&format!("{top}/bottle/test/good/.hidden.png"));
    t.text(&format!("{top}/bottle/test/good/notes.txt"), "not an image");
    fs::create_dir_all(t.path(&format!("{top}/docs"))).unwrap();
}

#[test]
fn mvtec_order_labels_masks_and_root_resolution() {
    let t = Tree::new("mvtec");
    mvtec_tree(&t, "mvtec");
    let from_parent = load_dataset(DatasetKind::Mvtec, &t.0, None).unwrap();
    let from_self = load_dataset(DatasetKind::Mvtec, &t.path("mvtec"), None).unwrap();
    assert_eq!(from_parent, from_self);
    assert_eq!(names(&from_self), ["bottle", "cable"]);
    let bottle = &from_self[0];
    let base = t.path("mvtec/bottle");
    assert_eq!(
        rows(&base, &bottle.train),
        [
            row("train/good/000.png", Some(false), None),
            row("train/good/001.png", Some(false), None),
        ]
    );
    assert_eq!(
        rows(&base, &bottle.test),
        [
            row(
                "test/broken/000.png",
                Some(true),
                Some("ground_truth/broken/000_mask.png")
            ),
            row(
                "test/broken/001.png",
                Some(true),
                Some("ground_truth/broken/001_mask.png")
            ),
            row("test/good/000.png", Some(false), None),
            row(
                "test/scratch/000.png",
                Some(true),
                Some("ground_truth/scratch/000_mask.png")
            ),
            row(
                "test/scratch/001.png",
                Some(true),
                Some("ground_truth/scratch/001_mask.png")
            ),
        ]
    );
    assert!(bottle.test.iter().all(|s| !s.binarise_mask));

    let only = load_dataset(DatasetKind::Mvtec, &t.0, Some(&strings(&["cable"]))).unwrap();
    assert_eq!(names(&only), ["cable"]);
    let err = error(load_dataset(
        DatasetKind::Mvtec,
        &t.0,
        Some(&strings(&["screw"])),
    ));
    assert!(
        err.contains("'screw'") && err.contains("bottle, cable"),
        "{err}"
    );

    // MPDD and DTD-Synthetic read the same structure.
    for kind in [DatasetKind::Mpdd, DatasetKind::Dtd] {
        assert_eq!(
            load_dataset(kind, &t.path("mvtec"), None).unwrap(),
            from_self
        );
    }
}

#[test]
fn mvtec_missing_masks_are_errors() {
    let t = Tree::new("mvtec-missing");
    mvtec_tree(&t, "mvtec");
    fs::remove_file(t.path("mvtec/cable/ground_truth/broken/001_mask.png")).unwrap();
    let err = error(load_dataset(DatasetKind::Mvtec, &t.0, None));
    assert!(
        err.contains("mask missing") && err.contains("001.png"),
        "{err}"
    );
    assert!(err.contains("001_mask.png"), "{err}");
    // Only the asked-for category is read.
    load_dataset(DatasetKind::Mvtec, &t.0, Some(&strings(&["bottle"]))).unwrap();

    fs::remove_dir_all(t.path("mvtec/bottle/ground_truth/scratch")).unwrap();
    let err = error(load_dataset(
        DatasetKind::Mvtec,
        &t.0,
        Some(&strings(&["bottle"])),
    ));
    assert!(
        err.contains("ground_truth/scratch") && err.contains("missing"),
        "{err}"
    );

    let err = error(load_dataset(
        DatasetKind::Mvtec,
        &t.path("mvtec/bottle/test"),
        None,
    ));
    assert!(
        err.contains("does not look like a MVTec AD dataset"),
        "{err}"
    );
}

#[test]
fn btad_ok_ko_with_same_named_masks() {
    let t = Tree::new("btad");
    for cat in ["02", "01"] {
        t.image(&format!("btad/{cat}/train/ok/0000.bmp"));
        t.image(&format!("btad/{cat}/test/ok/0000.bmp"));
        t.image(&format!("btad/{cat}/test/ko/0001.bmp"));
        t.mask(&format!("btad/{cat}/ground_truth/ko/0001.png"));
    }
    let cats = load_dataset(DatasetKind::Btad, &t.0, None).unwrap();
    assert_eq!(names(&cats), ["01", "02"]);
    let base = t.path("btad/01");
    assert_eq!(
        rows(&base, &cats[0].train),
        [row("train/ok/0000.bmp", Some(false), None)]
    );
    assert_eq!(
        rows(&base, &cats[0].test),
        [
            row(
                "test/ko/0001.bmp",
                Some(true),
                Some("ground_truth/ko/0001.png")
            ),
            row("test/ok/0000.bmp", Some(false), None),
        ]
    );
}

#[test]
fn visa_split_csv() {
    let t = Tree::new("visa");
    let csv = "object,split,label,image,mask\n\
        pcb1,train,normal,pcb1/Data/Images/Normal/0001.JPG,\n\
        pcb1,test,anomaly,pcb1/Data/Images/Anomaly/000.JPG,pcb1/Data/Masks/Anomaly/000.png\n\
        pcb1,test,normal,pcb1/Data/Images/Normal/0000.JPG,\n\
        candle,test,normal,candle/Data/Images/Normal/0000.JPG,\n\
        candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png\n";
    t.text("VisA/split_csv/1cls.csv", csv);
    for cat in ["pcb1", "candle"] {
        t.image(&format!("VisA/{cat}/Data/Images/Normal/0000.JPG"));
        t.image(&format!("VisA/{cat}/Data/Images/Anomaly/000.JPG"));
        t.mask(&format!("VisA/{cat}/Data/Masks/Anomaly/000.png"));
    }
    t.image("VisA/pcb1/Data/Images/Normal/0001.JPG");
    let cats = load_dataset(DatasetKind::Visa, &t.0, None).unwrap();
    assert_eq!(names(&cats), ["candle", "pcb1"]);
    let base = t.path("VisA");
    assert!(cats[0].train.is_empty());
    assert_eq!(
        rows(&base, &cats[1].train),
        [row("pcb1/Data/Images/Normal/0001.JPG", Some(false), None)]
    );
    assert_eq!(
        rows(&base, &cats[1].test),
        [
            row(
                "pcb1/Data/Images/Anomaly/000.JPG",
                Some(true),
                Some("pcb1/Data/Masks/Anomaly/000.png")
            ),
            row("pcb1/Data/Images/Normal/0000.JPG", Some(false), None),
        ]
    );
    assert!(cats.iter().flat_map(|c| &c.test).all(|s| s.binarise_mask));

    fs::remove_file(t.path("VisA/candle/Data/Masks/Anomaly/000.png")).unwrap();
    let err = error(load_dataset(DatasetKind::Visa, &t.0, None));
    assert!(
        err.contains("line 6") && err.contains("mask") && err.contains("not found"),
        "{err}"
    );
    assert!(err.contains("candle/Data/Masks/Anomaly/000.png"), "{err}");

    t.text(
        "VisA/split_csv/1cls.csv",
        &csv.replace("test,normal", "test,ok"),
    );
    let err = error(load_dataset(
        DatasetKind::Visa,
        &t.path("VisA"),
        Some(&strings(&["pcb1"])),
    ));
    assert!(
        err.contains("label 'ok'") && err.contains("line 4"),
        "{err}"
    );

    t.text("VisA/split_csv/1cls.csv", "object,split,label,image\n");
    let err = error(load_dataset(DatasetKind::Visa, &t.0, None));
    assert!(err.contains("no 'mask' column"), "{err}");
}

#[test]
fn dagm_label_files_decide_anomalies() {
    let t = Tree::new("dagm");
    for cat in ["Class1", "Class10"] {
        for split in ["Train", "Test"] {
            t.image(&format!("DAGM_KaggleUpload/{cat}/{split}/0001.PNG"));
            t.image(&format!("DAGM_KaggleUpload/{cat}/{split}/0002.PNG"));
            t.mask(&format!(
                "DAGM_KaggleUpload/{cat}/{split}/Label/0002_label.PNG"
            ));
            t.text(
                &format!("DAGM_KaggleUpload/{cat}/{split}/Label/Labels.txt"),
                "x",
            );
        }
    }
    let cats = load_dataset(DatasetKind::Dagm, &t.0, None).unwrap();
    assert_eq!(names(&cats), ["Class1", "Class10"]);
    let base = t.path("DAGM_KaggleUpload/Class1");
    assert_eq!(
        rows(&base, &cats[0].train),
        [row("Train/0001.PNG", Some(false), None)]
    );
    assert_eq!(
        rows(&base, &cats[0].test),
        [
            row("Test/0001.PNG", Some(false), None),
            row(
                "Test/0002.PNG",
                Some(true),
                Some("Test/Label/0002_label.PNG")
            ),
        ]
    );
    let err = error(load_dataset(
        DatasetKind::Dagm,
        &t.0,
        Some(&strings(&["Class2"])),
    ));
    assert!(err.contains("Class1, Class10"), "{err}");
}

#[test]
fn brain_sets_have_labels_only() {
    for (kind, top) in [
        (DatasetKind::BrainMri, "BrainMRI"),
        (DatasetKind::Br35h, "Br35H"),
    ] {
        let t = Tree::new(top);
        t.image(&format!("{top}/no/n1.jpg"));
        t.image(&format!("{top}/yes/Y1.jpg"));
        t.image(&format!("{top}/yes/Y2.jpg"));
        let cats = load_dataset(kind, &t.0, None).unwrap();
        assert_eq!(names(&cats), [kind.name()]);
        assert_eq!(
            rows(&t.path(top), &cats[0].test),
            [
                row("no/n1.jpg", Some(false), None),
                row("yes/Y1.jpg", Some(true), None),
                row("yes/Y2.jpg", Some(true), None),
            ]
        );
        assert_eq!(
            dataset_info(kind, &cats),
            DatasetInfo {
                has_labels: true,
                has_masks: false
            }
        );
    }
}

#[test]
fn mask_sets_pair_sorted_images_and_masks() {
    let t = Tree::new("isic");
    let data = "ISIC2016/ISBI2016_ISIC_Part1_Test_Data";
    let truth = "ISIC2016/ISBI2016_ISIC_Part1_Test_GroundTruth";
    for id in ["ISIC_0000003", "ISIC_0000001"] {
        t.image(&format!("{data}/{id}.jpg"));
        t.mask(&format!("{truth}/{id}_Segmentation.png"));
    }
    let cats = load_dataset(DatasetKind::Isic, &t.0, None).unwrap();
    assert_eq!(names(&cats), ["isic"]);
    let base = t.path("ISIC2016");
    assert_eq!(
        rows(&base, &cats[0].test),
        [
            row(
                "ISBI2016_ISIC_Part1_Test_Data/ISIC_0000001.jpg",
                Some(true),
                Some("ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_0000001_Segmentation.png")
            ),
            row(
                "ISBI2016_ISIC_Part1_Test_Data/ISIC_0000003.jpg",
                Some(true),
                Some("ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_0000003_Segmentation.png")
            ),
        ]
    );
    assert_eq!(
        dataset_info(DatasetKind::Isic, &cats),
        DatasetInfo {
            has_labels: false,
            has_masks: true
        }
    );
    t.mask(&format!("{truth}/ISIC_0000009_Segmentation.png"));
    let err = error(load_dataset(DatasetKind::Isic, &t.0, None));
    assert!(
        err.contains("2 images but") && err.contains("3 masks"),
        "{err}"
    );

    for (kind, top) in [
        (DatasetKind::ClinicDb, "CVC-ClinicDB"),
        (DatasetKind::ColonDb, "CVC-ColonDB"),
        (DatasetKind::Kvasir, "Kvasir"),
    ] {
        t.image(&format!("{top}/images/2.png"));
        t.image(&format!("{top}/images/1.png"));
        t.mask(&format!("{top}/masks/2.png"));
        t.mask(&format!("{top}/masks/1.png"));
        let cats = load_dataset(kind, &t.path(top), None).unwrap();
        assert_eq!(names(&cats), [kind.name()]);
        assert_eq!(
            rows(&t.path(top), &cats[0].test),
            [
                row("images/1.png", Some(true), Some("masks/1.png")),
                row("images/2.png", Some(true), Some("masks/2.png")),
            ]
        );
        let err = error(load_dataset(kind, &t.0.join("nowhere"), None));
        assert!(err.contains("not a folder"), "{err}");
    }
    let err = error(load_dataset(DatasetKind::Kvasir, &t.path("ISIC2016"), None));
    assert!(err.contains("images/ and masks/"), "{err}");
}

#[test]
fn folder_single_and_multi_category() {
    let t = Tree::new("folder");
    // Multi-category root: `widget` has masks for `dent` only, `gadget` none.
    t.image("set/widget/good/b.png");
    t.image("set/widget/good/a.png");
    t.image("set/widget/train/t0.png");
    t.image("set/widget/dent/d0.png");
    t.mask("set/widget/ground_truth/dent/d0_mask.png");
    t.image("set/widget/crack/c0.png");
    t.image("set/gadget/good/g.png");
    t.image("set/gadget/hole/h.png");
    fs::create_dir_all(t.path("set/no_good_here/defect")).unwrap();
    let cats = load_dataset(DatasetKind::Folder, &t.path("set"), None).unwrap();
    assert_eq!(names(&cats), ["gadget", "widget"]);
    let base = t.path("set/widget");
    assert_eq!(
        rows(&base, &cats[1].train),
        [row("train/t0.png", Some(false), None)]
    );
    assert_eq!(
        rows(&base, &cats[1].test),
        [
            row("crack/c0.png", Some(true), None),
            row(
                "dent/d0.png",
                Some(true),
                Some("ground_truth/dent/d0_mask.png")
            ),
            row("good/a.png", Some(false), None),
            row("good/b.png", Some(false), None),
        ]
    );
    // Not every anomaly has a mask: no pixel metrics.
    assert_eq!(
        dataset_info(DatasetKind::Folder, &cats),
        DatasetInfo {
            has_labels: true,
            has_masks: false
        }
    );
    let dent_only = folder::load(&t.path("set/widget"), None, None).unwrap();
    assert_eq!(names(&dent_only), ["widget"]);
    assert_eq!(dent_only[0], cats[1]);

    // A masks folder given separately must cover every defect.
    t.mask("masks/widget/dent/d0.png");
    t.mask("masks/widget/crack/c0_mask.png");
    t.mask("masks/gadget/hole/h.png");
    let with_masks = folder::load(&t.path("set"), Some(&t.path("masks")), None).unwrap();
    assert_eq!(
        rows(&t.0, &with_masks[1].test)[..2],
        [
            row(
                "set/widget/crack/c0.png",
                Some(true),
                Some("masks/widget/crack/c0_mask.png")
            ),
            row(
                "set/widget/dent/d0.png",
                Some(true),
                Some("masks/widget/dent/d0.png")
            ),
        ]
    );
    assert_eq!(
        dataset_info(DatasetKind::Folder, &with_masks),
        DatasetInfo {
            has_labels: true,
            has_masks: true
        }
    );
    fs::remove_dir_all(t.path("masks/gadget")).unwrap();
    let err = error(folder::load(&t.path("set"), Some(&t.path("masks")), None));
    assert!(
        err.contains("masks/gadget/hole") && err.contains("missing"),
        "{err}"
    );

    // ground_truth/<defect> present: every image of that defect needs its mask.
    t.image("set/widget/dent/d1.png");
    let err = error(load_dataset(DatasetKind::Folder, &t.path("set"), None));
    assert!(
        err.contains("mask missing for") && err.contains("d1.png"),
        "{err}"
    );

    let err = error(load_dataset(
        DatasetKind::Folder,
        &t.path("set/widget/dent"),
        None,
    ));
    assert!(err.contains("no good/ folder"), "{err}");
}

#[test]
fn meta_json_splits_and_errors() {
    let t = Tree::new("meta");
    t.image("data/bottle/train/good/000.png");
    t.image("data/bottle/test/good/000.png");
    t.image("data/bottle/test/broken/000.png");
    t.mask("data/bottle/ground_truth/broken/000_mask.png");
    t.image("data/pill/test/good/000.png");
    let meta = r#"{
      "train": {"bottle": [{"img_path": "bottle/train/good/000.png", "mask_path": "",
                            "cls_name": "bottle", "specie_name": "good", "anomaly": 0}]},
      "test": {
        "pill": [{"img_path": "pill/test/good/000.png", "mask_path": "", "cls_name": "pill",
                  "specie_name": "good", "anomaly": 0}],
        "bottle": [
          {"img_path": "bottle/test/good/000.png", "mask_path": "", "cls_name": "bottle",
           "specie_name": "good", "anomaly": 0},
          {"img_path": "bottle/test/broken/000.png",
           "mask_path": "bottle/ground_truth/broken/000_mask.png",
           "cls_name": "bottle", "specie_name": "broken", "anomaly": 1}]}
    }"#;
    let file = t.text("data/meta.json", meta);
    let cats = load_dataset(DatasetKind::MetaJson, &t.path("data"), None).unwrap();
    assert_eq!(
        cats,
        load_dataset(DatasetKind::MetaJson, &file, None).unwrap()
    );
    assert_eq!(names(&cats), ["bottle", "pill"]);
    let base = t.path("data");
    assert_eq!(
        rows(&base, &cats[0].train),
        [row("bottle/train/good/000.png", Some(false), None)]
    );
    assert_eq!(
        rows(&base, &cats[0].test),
        [
            row(
                "bottle/test/broken/000.png",
                Some(true),
                Some("bottle/ground_truth/broken/000_mask.png")
            ),
            row("bottle/test/good/000.png", Some(false), None),
        ]
    );
    assert!(cats[0].test[0].binarise_mask);

    t.text(
        "data/meta.json",
        &meta.replace("\"anomaly\": 0}]},", "\"anomaly\": 1}]},"),
    );
    let err = error(load_dataset(DatasetKind::MetaJson, &file, None));
    assert!(
        err.contains("train/bottle[0]") && err.contains("anomaly 1"),
        "{err}"
    );

    t.text(
        "data/meta.json",
        &meta.replace("pill/test/good/000.png", "pill/gone.png"),
    );
    let err = error(load_dataset(DatasetKind::MetaJson, &file, None));
    assert!(
        err.contains("test/pill[0]") && err.contains("pill/gone.png"),
        "{err}"
    );

    t.text("data/meta.json", "{\"test\": [1, 2]}");
    let err = error(load_dataset(DatasetKind::MetaJson, &file, None));
    assert!(err.contains("'test' must map class names"), "{err}");
    t.text("data/meta.json", "{\"test\": ");
    let err = error(load_dataset(DatasetKind::MetaJson, &file, None));
    assert!(err.contains("not valid JSON"), "{err}");
}

#[test]
fn manifest_with_and_without_header() {
    let t = Tree::new("manifest");
    t.image("imgs/b.png");
    t.image("imgs/a.png");
    t.image("imgs/c.png");
    t.mask("imgs/c_mask.png");
    let abs = t.image("elsewhere/z.png");
    let file = t.text(
        "list.csv",
        &format!(
            "imgs/b.png,normal\nimgs/c.png,1,imgs/c_mask.png,parts\n{},,,\nimgs/a.png,NG\n",
            abs.display()
        ),
    );
    let cats = load_dataset(DatasetKind::Manifest, &file, None).unwrap();
    assert_eq!(names(&cats), ["list", "parts"]);
    assert_eq!(
        rows(&t.0, &cats[0].test),
        [
            row("elsewhere/z.png", None, None),
            row("imgs/a.png", Some(true), None),
            row("imgs/b.png", Some(false), None),
        ]
    );
    assert_eq!(
        rows(&t.0, &cats[1].test),
        [row("imgs/c.png", Some(true), Some("imgs/c_mask.png"))]
    );
    assert!(cats.iter().all(|c| c.train.is_empty()));
    // An unknown label: image metrics are off.
    assert!(!dataset_info(DatasetKind::Manifest, &cats).has_labels);

    t.text(
        "manifest.csv",
        "Path,category,label,mask\nimgs/a.png,x,0,\nimgs/c.png,x,anomaly,imgs/c_mask.png\n",
    );
    let cats = load_dataset(DatasetKind::Manifest, &t.0, None).unwrap();
    assert_eq!(names(&cats), ["x"]);
    assert_eq!(
        rows(&t.0, &cats[0].test),
        [
            row("imgs/a.png", Some(false), None),
            row("imgs/c.png", Some(true), Some("imgs/c_mask.png")),
        ]
    );
    assert_eq!(
        dataset_info(DatasetKind::Manifest, &cats),
        DatasetInfo {
            has_labels: true,
            has_masks: true
        }
    );

    t.text("manifest.csv", "path,lable\nimgs/a.png,0\n");
    let err = error(load_dataset(DatasetKind::Manifest, &t.0, None));
    assert!(err.contains("unknown column 'lable'"), "{err}");
    t.text("manifest.csv", "imgs/a.png,maybe\n");
    let err = error(load_dataset(DatasetKind::Manifest, &t.0, None));
    assert!(err.contains("line 1") && err.contains("'maybe'"), "{err}");
    t.text("manifest.csv", "imgs/a.png,0\nimgs/missing.png,0\n");
    let err = error(load_dataset(DatasetKind::Manifest, &t.0, None));
    assert!(
        err.contains("line 2") && err.contains("imgs/missing.png"),
        "{err}"
    );
    t.text("manifest.csv", "imgs/a.png,1,imgs/a_mask.png\n");
    let err = error(load_dataset(DatasetKind::Manifest, &t.0, None));
    assert!(
        err.contains("mask") && err.contains("imgs/a_mask.png"),
        "{err}"
    );
    t.text("manifest.csv", "imgs/a.png,0,,,extra\n");
    let err = error(load_dataset(DatasetKind::Manifest, &t.0, None));
    assert!(err.contains("5 fields"), "{err}");
}

#[test]
fn category_without_test_images_is_an_error() {
    let t = Tree::new("empty-test");
    t.image("mvtec/bottle/train/good/000.png");
    fs::create_dir_all(t.path("mvtec/bottle/test/good")).unwrap();
    let err = error(load_dataset(DatasetKind::Mvtec, &t.0, None));
    assert!(err.contains("'bottle' has no test images"), "{err}");
}

#[cfg(unix)]
#[test]
fn broken_links_are_listed_for_the_decoder_to_report() {
    let t = Tree::new("links");
    t.image("mvtec/bottle/test/good/000.png");
    std::os::unix::fs::symlink(
        t.path("mvtec/nowhere.png"),
        t.path("mvtec/bottle/test/good/001.png"),
    )
    .unwrap();
    let cats = load_dataset(DatasetKind::Mvtec, &t.0, None).unwrap();
    assert_eq!(
        rows(&t.path("mvtec/bottle"), &cats[0].test),
        [
            row("test/good/000.png", Some(false), None),
            row("test/good/001.png", Some(false), None),
        ]
    );
}

#[test]
fn kinds_parse_from_cli_names() {
    let names: Vec<&str> = DatasetKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(
        names,
        [
            "mvtec", "visa", "btad", "dtd", "mpdd", "dagm", "brainmri", "br35h", "isic",
            "clinicdb", "colondb", "kvasir", "folder", "meta", "manifest"
        ]
    );
    assert_eq!("VisA".parse::<DatasetKind>().unwrap(), DatasetKind::Visa);
    assert!("coco".parse::<DatasetKind>().is_err());
}
