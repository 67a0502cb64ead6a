//! Decoding, bicubic resizing and normalisation against Pillow / numpy outputs written by
//! `tests/golden/make_resize_golden.py` (see `tests/golden/resize/cases.json`).

use std::path::{Path, PathBuf};

use afclip::data::decode::{decode_grey, decode_rgb, Pixels};
use afclip::data::preprocess::{load_image, load_mask};
use afclip::data::resize::resize_bicubic;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/resize")
}

fn cases(kind: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir().join("cases.json")).expect("read cases.json");
    let all: Value = serde_json::from_str(&text).expect("parse cases.json");
    let list = all[kind].as_array().expect("case list").clone();
    assert!(!list.is_empty(), "no {kind} cases");
    list
}

fn field<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("case field {key}"))
}

fn num(case: &Value, key: &str) -> usize {
    case[key]
        .as_u64()
        .unwrap_or_else(|| panic!("case field {key}")) as usize
}

fn read_f32(name: &str) -> Vec<f32> {
    std::fs::read(dir().join(name))
        .expect("read f32 fixture")
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// (max abs difference, number of differing bytes)
fn compare(got: &Pixels, want: &Pixels) -> (u8, usize) {
    assert_eq!(
        (got.width, got.height, got.channels),
        (want.width, want.height, want.channels)
    );
    got.data
        .iter()
        .zip(&want.data)
        .fold((0, 0), |(max, n), (&a, &b)| {
            let d = a.abs_diff(b);
            (max.max(d), n + usize::from(d != 0))
        })
}

#[test]
fn resize_matches_pillow_bytes() {
    let mut total_diff = 0;
    let mut total_bytes = 0;
    for case in cases("resize") {
        let input = dir().join(field(&case, "input"));
        let expected = dir().join(field(&case, "expected"));
        let decode = match field(&case, "mode") {
            "RGB" => decode_rgb,
            "L" => decode_grey,
            other => panic!("unexpected mode {other}"),
        };
        let src = decode(&input).expect("decode input");
        let want = decode(&expected).expect("decode expected");
        let got = resize_bicubic(&src, num(&case, "width"), num(&case, "height"));
        let (max, n) = compare(&got, &want);
        let order_note = if case["pillow13_vertical_first"].as_bool() == Some(true) {
            " (vertical pass first)"
        } else {
            ""
        };
        eprintln!(
            "{:>16} {}x{} -> {}x{}: max diff {max}, {n} of {} bytes differ{order_note}",
            field(&case, "input"),
            src.width,
            src.height,
            got.width,
            got.height,
            got.data.len()
        );
        assert!(max <= 1, "{}: max diff {max}", expected.display());
        total_diff += n;
        total_bytes += got.data.len();
    }
    eprintln!("resize total: {total_diff} of {total_bytes} bytes differ from Pillow");
    assert_eq!(total_diff, 0, "resize is meant to be byte-exact");
}

#[test]
fn decoders_match_pillow_convert() {
    for case in cases("decode") {
        let input = dir().join(field(&case, "input"));
        let exact = case["exact"].as_bool().expect("exact flag");
        for (decode, key) in [(decode_rgb as fn(&Path) -> _, "rgb"), (decode_grey, "grey")] {
            let got = decode(&input).expect("decode input");
            let want = decode(&dir().join(field(&case, key))).expect("decode expected");
            let (max, n) = compare(&got, &want);
            eprintln!(
                "{:>18} ({:>4}) as {key:>4}: max diff {max}, {n} of {} bytes differ",
                field(&case, "input"),
                field(&case, "pillow_mode"),
                got.data.len()
            );
            if exact {
                assert_eq!(n, 0, "{} as {key}", input.display());
            } else {
                // JPEG: zune-jpeg and libjpeg-turbo round the IDCT / colour conversion slightly
                // differently.
                assert!(max <= 4, "{} as {key}: max diff {max}", input.display());
            }
        }
    }
}

#[test]
fn load_image_matches_numpy() {
    for case in cases("load_image") {
        let side = num(&case, "side");
        let prepared = load_image(&dir().join(field(&case, "input")), side).expect("load");
        let want = read_f32(field(&case, "expected"));
        assert_eq!(prepared.tensor.len(), 3 * side * side);
        assert_eq!(want.len(), prepared.tensor.len());
        let max = prepared
            .tensor
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("load_image side {side}: max |diff| vs numpy {max:e}");
        assert!(max <= 1e-6, "max diff {max}");
        assert_eq!(
            (prepared.resized.width, prepared.resized.height),
            (side, side)
        );
    }
}

#[test]
fn load_mask_matches_pillow() {
    for case in cases("load_mask") {
        let side = num(&case, "side");
        let binarise = case["binarise_nonzero"].as_bool().expect("flag");
        let got = load_mask(&dir().join(field(&case, "input")), side, binarise).expect("mask");
        let want = decode_grey(&dir().join(field(&case, "expected"))).expect("expected");
        assert_eq!(got.len(), side * side);
        let max = got
            .iter()
            .zip(&want.data)
            .map(|(&a, &b)| (a - f32::from(b) / 255.0).abs())
            .fold(0f32, f32::max);
        eprintln!("load_mask side {side} binarise {binarise}: max |diff| {max:e}");
        assert!(max <= 1e-7, "max diff {max}");
        assert!(got.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
