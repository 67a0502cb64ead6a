//! The bad-input policy of `afclip score` on a generated tree holding every kind of broken
//! input: each becomes a `status=error` row whose message names the file and the cause, the
//! good images are still scored, the exit code is 3 (0 with `--allow-errors`). Also the
//! decoded cache (`--cache`): hits on a second pass, identical output, corrupt entries rebuilt.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/zero_shot")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("afclip-bad-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn score(out: &Path, inputs: &[&Path], extra: &[&str]) -> Output {
    let model = golden().join("openai");
    let head = golden().join("head.safetensors");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_afclip"));
    cmd.args(["score", "--model"])
        .arg(model)
        .arg("--head")
        .arg(head)
        .args(["--image-size", "98", "--batch-size", "2", "--out"])
        .arg(out)
        .args(extra)
        .args(inputs);
    cmd.output().expect("afclip runs")
}

fn png(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let data: Vec<u8> = (0..width * height * 3)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let img = image::RgbImage::from_raw(width, height, data).unwrap();
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A PNG whose header claims `width x height` RGB pixels, followed by a tiny IDAT (far too
/// little data for those pixels).
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, body) in [(b"IHDR", ihdr), (b"IDAT", vec![0x78, 0x9c, 0x03, 0x00])] {
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(&body);
        out.extend_from_slice(kind);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    out
}

struct Row {
    path: String,
    score: String,
    status: String,
    error: String,
}

/// Parses scores.csv (quoted fields may hold commas).
fn rows(csv: &str) -> Vec<Row> {
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("path,score,status,error"));
    lines
        .map(|line| {
            let mut fields = Vec::new();
            let mut cur = String::new();
            let mut quoted = false;
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match (c, quoted) {
                    ('"', true) if chars.peek() == Some(&'"') => {
                        cur.push('"');
                        chars.next();
                    }
                    ('"', _) => quoted = !quoted,
                    (',', false) => fields.push(std::mem::take(&mut cur)),
                    _ => cur.push(c),
                }
            }
            fields.push(cur);
            assert_eq!(fields.len(), 4, "{line}");
            Row {
                path: fields[0].clone(),
                score: fields[1].clone(),
                status: fields[2].clone(),
                error: fields[3].clone(),
            }
        })
        .collect()
}

#[test]
fn every_bad_input_is_an_error_row_and_the_rest_is_scored() {
    let dir = temp_dir("tree");
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    let good = png(40, 30, 1);
    std::fs::write(tree.join("good.png"), &good).unwrap();
    std::fs::write(tree.join("sub/good2.png"), png(20, 50, 9)).unwrap();
    std::fs::write(tree.join("zero.png"), b"").unwrap();
    std::fs::write(tree.join("truncated.png"), &good[..good.len() / 2]).unwrap();
    let mut corrupt = good.clone();
    for b in corrupt[60..].iter_mut() {
        *b = b.wrapping_mul(13) ^ 0x5a;
    }
    std::fs::write(tree.join("corrupt.png"), &corrupt).unwrap();
    std::fs::write(tree.join("notes.jpg"), b"just some text, not a picture").unwrap();
    std::fs::write(tree.join("wrong_ext.jpg"), &good).unwrap();
    std::fs::write(
        tree.join("unsupported.bmp"),
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
    )
    .unwrap();
    std::fs::write(tree.join("enormous.png"), png_header_only(20_000, 10_000)).unwrap();
    std::fs::write(tree.join("unreadable.png"), &good).unwrap();
    std::fs::set_permissions(
        tree.join("unreadable.png"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    let unreadable_is_readable = std::fs::read(tree.join("unreadable.png")).is_ok();
    if unreadable_is_readable {
        println!(
            "skipping the unreadable-file case: this process (root?) can read a file with \
             mode 000"
        );
        std::fs::remove_file(tree.join("unreadable.png")).unwrap();
    }
    std::os::unix::fs::symlink("no-such-target.png", tree.join("dangling.png")).unwrap();
    std::os::unix::fs::symlink("loop.png", tree.join("loop.png")).unwrap();
    std::os::unix::fs::symlink("..", tree.join("sub/up")).unwrap();
    let non_utf8 = tree.join(OsStr::from_bytes(b"bad\xffname.png"));
    std::fs::write(&non_utf8, &good).unwrap();

    // (row name, words its error must contain); `None` for the images that must score.
    let mut expected: Vec<(&str, Option<&[&str]>)> = vec![
        (
            "bad\u{fffd}name.png",
            Some(&["name.png", "not valid UTF-8"]),
        ),
        (
            "corrupt.png",
            Some(&["corrupt.png", "corrupt or truncated"]),
        ),
        ("dangling.png", Some(&["dangling.png", "dangling symlink"])),
        (
            "enormous.png",
            Some(&["enormous.png", "200000000 pixels", "100000000"]),
        ),
        ("good.png", None),
        ("loop.png", Some(&["loop.png", "symlink loop"])),
        ("notes.jpg", Some(&["notes.jpg", "not a recognised image"])),
        ("sub/good2.png", None),
        ("sub/up", Some(&["sub/up", "symlink loop"])),
        (
            "truncated.png",
            Some(&["truncated.png", "corrupt or truncated"]),
        ),
        (
            "unreadable.png",
            Some(&["unreadable.png", "Permission denied"]),
        ),
        (
            "unsupported.bmp",
            Some(&["unsupported.bmp", "Gif images are not supported"]),
        ),
        (
            "wrong_ext.jpg",
            Some(&["wrong_ext.jpg", "wrong extension", "Png"]),
        ),
        ("zero.png", Some(&["zero.png", "empty file"])),
    ];
    if unreadable_is_readable {
        expected.retain(|(name, _)| *name != "unreadable.png");
    }

    let strict = score(&dir.join("out-strict"), &[&tree], &[]);
    let err = String::from_utf8_lossy(&strict.stderr);
    assert_eq!(strict.status.code(), Some(3), "{err}");
    let failed = expected.iter().filter(|(_, e)| e.is_some()).count();
    assert!(
        err.contains(&format!("{failed} of {} inputs failed", expected.len())),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let lenient = score(&dir.join("out"), &[&tree], &["--allow-errors"]);
    assert!(
        lenient.status.success(),
        "{}",
        String::from_utf8_lossy(&lenient.stderr)
    );
    let csv = std::fs::read_to_string(dir.join("out/scores.csv")).unwrap();
    assert_eq!(
        csv,
        std::fs::read_to_string(dir.join("out-strict/scores.csv")).unwrap(),
        "the exit code is the only difference --allow-errors makes"
    );
    let got = rows(&csv);
    assert_eq!(
        got.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        expected.iter().map(|(n, _)| *n).collect::<Vec<_>>()
    );
    for (row, (name, want)) in got.iter().zip(&expected) {
        match want {
            None => {
                assert_eq!(row.status, "ok", "{name}: {}", row.error);
                let s: f32 = row.score.parse().unwrap();
                assert!((0.0..=1.0).contains(&s), "{name}: score {s}");
            }
            Some(words) => {
                assert_eq!(row.status, "error", "{name} should fail");
                assert!(row.score.is_empty(), "{name} has a score");
                for w in words.iter() {
                    assert!(row.error.contains(w), "{name}: {:?} lacks {w:?}", row.error);
                }
            }
        }
    }

    // The pixel limit is configurable.
    let small = score(
        &dir.join("out-limit"),
        &[&tree.join("good.png")],
        &["--max-pixels", "1000"],
    );
    assert_eq!(small.status.code(), Some(3));
    let limited = rows(&std::fs::read_to_string(dir.join("out-limit/scores.csv")).unwrap());
    assert!(
        limited[0].error.contains("40x30 = 1200 pixels"),
        "{}",
        limited[0].error
    );
    if !unreadable_is_readable {
        std::fs::remove_file(tree.join("unreadable.png")).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_cache_is_used_and_never_trusted_when_corrupt() {
    let dir = temp_dir("cache");
    let images = golden().join("images");
    let cache = dir.join("cache");
    let run = |name: &str| {
        let o = score(
            &dir.join(name),
            &[&images],
            &["--cache", cache.to_str().unwrap(), "--save-maps", "npy"],
        );
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        (
            std::fs::read(dir.join(name).join("scores.csv")).unwrap(),
            err,
        )
    };
    let plain = score(&dir.join("plain"), &[&images], &[]);
    assert!(plain.status.success());
    let (first, err) = run("first");
    assert!(err.contains("cache: 0 hits, 3 misses"), "{err}");
    assert_eq!(first, std::fs::read(dir.join("plain/scores.csv")).unwrap());
    let (second, err) = run("second");
    assert!(err.contains("cache: 3 hits, 0 misses"), "{err}");
    assert_eq!(first, second);
    assert_eq!(
        std::fs::read(dir.join("first/maps/c_rgb.npy")).unwrap(),
        std::fs::read(dir.join("second/maps/c_rgb.npy")).unwrap()
    );

    let mut entries: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert_eq!(entries.len(), 3, "{entries:?}");
    let bytes = std::fs::read(&entries[0]).unwrap();
    std::fs::write(&entries[0], &bytes[..bytes.len() - 100]).unwrap();
    let mut flipped = std::fs::read(&entries[1]).unwrap();
    let n = flipped.len();
    flipped[n - 7] ^= 1;
    std::fs::write(&entries[1], &flipped).unwrap();
    let (third, err) = run("third");
    assert!(
        err.contains("cache: 1 hits, 2 misses, 2 corrupt entries rebuilt"),
        "{err}"
    );
    assert_eq!(first, third);
    let (_, err) = run("fourth");
    assert!(err.contains("cache: 3 hits, 0 misses"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
