//! CLIP tokenizer: SPEC §5 ids, built-in BPE vs the shared Hugging Face tokenizer.json, errors.

use std::fs;
use std::path::{Path, PathBuf};

use afclip::model::tokenizer::ClipTokenizer;

const NORMAL: &str = "without defect.";
const ABNORMAL: &str = "with defect.";
const NORMAL_IDS: [u32; 5] = [49406, 2193, 44013, 269, 49407];
const ABNORMAL_IDS: [u32; 5] = [49406, 593, 44013, 269, 49407];

fn shared_tokenizer_json() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/clip-bpe/tokenizer.json");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "skipping the tokenizer.json comparison: {} not found",
            path.display()
        );
        None
    }
}

/// A fresh, empty directory under the system temp dir, unique to this test.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "afclip-tokenizer-test-{}-{name}",
        std::process::id()
    ));
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap();
    }
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn builtin_gives_spec_ids() {
    let tokenizer = ClipTokenizer::builtin().unwrap();
    assert_eq!(tokenizer.describe(), "built-in CLIP BPE");
    assert_eq!(tokenizer.encode(NORMAL).unwrap(), NORMAL_IDS);
    assert_eq!(tokenizer.encode(ABNORMAL).unwrap(), ABNORMAL_IDS);
    assert_eq!(
        tokenizer.encode("  WITHOUT\t\n Defect. ").unwrap(),
        NORMAL_IDS
    );
    assert_eq!(tokenizer.encode("").unwrap(), [49406, 49407]);
}

#[test]
fn tokenizer_json_gives_spec_ids() {
    let Some(path) = shared_tokenizer_json() else {
        return;
    };
    let tokenizer = ClipTokenizer::from_tokenizer_json(&path).unwrap();
    assert_eq!(tokenizer.describe(), path.display().to_string());
    assert_eq!(tokenizer.encode(NORMAL).unwrap(), NORMAL_IDS);
    assert_eq!(tokenizer.encode(ABNORMAL).unwrap(), ABNORMAL_IDS);
    assert_eq!(tokenizer.encode("").unwrap(), [49406, 49407]);
}

/// Hand-picked fragments, whitespace-separated: punctuation, digits, contractions, accents
/// (composed and decomposed), mixed case, other scripts, emoji, long words, odd symbols.
const FRAGMENTS: &str = "\
    without defect with a photo of the Anomaly SCRATCH metal_nut pcb4 hello-world e-mail \
    state-of-the-art . , !? ... … ;: -- — 's 't 're 've 'm 'll 'd n't it's I'M they'RE '' ' \
    \"quoted\" (x) [y] {z} #1 @home C++ a/b \\n 50% $3.99 €12,50 1,000,000 2024-01-01 \
    0 7 123456789 3.14159 １２３ Ⅻ ½ ² café naïve Zürich Ångström señor cafe\u{301} A\u{30a} \
    ÉCOLE Straße İstanbul ǅ ﬁ McDonald's iPhone YouTube gRPC 日本語 中文字符 русский \
    Ελληνικά עברית العربية हिन्दी 한국어 ภาษาไทย 😀 👍🏽 🇫🇷 ❤️ 👨‍👩‍👧 🙂🙂🙂 ™ © °C ± → \
    <unk> </w> <|end |> <| \u{7} \u{7f} \u{200b} \u{feff} \
    supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis \
    aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa abcabcabcabcabcabcabcabcabcabc \
    xxxxxxxxxxxxxxxyyyyyyyyyyyyyyzzzzzz !!!!!!!!!!!!!!!! 0000000000000000";

const SEPARATORS: &[&str] = &[
    " ", " ", " ", "", "  ", "\t", "\n", " \u{a0} ", "\u{3000}", "\r\n", "   \t ",
];

/// A few hundred varied strings: every fragment alone, upper-cased, padded, and random
/// combinations (fixed-seed LCG) of 1..=8 fragments with random separators.
fn varied_strings() -> Vec<String> {
    let fragments: Vec<&str> = FRAGMENTS.split_whitespace().collect();
    let mut strings: Vec<String> = fragments.iter().map(|f| f.to_string()).collect();
    strings.extend(fragments.iter().map(|f| f.to_uppercase()));
    strings.extend(fragments.iter().map(|f| format!("  {f}\t ")));
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |bound: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize % bound
    };
    for _ in 0..300 {
        let mut text = String::new();
        for i in 0..1 + next(8) {
            if i > 0 {
                text.push_str(SEPARATORS[next(SEPARATORS.len())]);
            }
            text.push_str(fragments[next(fragments.len())]);
        }
        strings.push(text);
    }
    strings
}

#[test]
fn builtin_equals_tokenizer_json() {
    let Some(path) = shared_tokenizer_json() else {
        return;
    };
    let json = ClipTokenizer::from_tokenizer_json(&path).unwrap();
    let builtin = ClipTokenizer::builtin().unwrap();
    let strings = varied_strings();
    assert!(strings.len() >= 600, "{} strings", strings.len());
    let mismatches: Vec<String> = strings
        .iter()
        .filter_map(|text| {
            let (a, b) = (builtin.encode(text).unwrap(), json.encode(text).unwrap());
            (a != b).then(|| format!("{text:?}: built-in {a:?}, tokenizer.json {b:?}"))
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} strings differ:\n{}",
        mismatches.len(),
        strings.len(),
        mismatches.join("\n")
    );
}

#[test]
fn model_dir_without_tokenizer_json_uses_builtin() {
    let dir = scratch_dir("no-json");
    let tokenizer = ClipTokenizer::from_model_dir(&dir).unwrap();
    assert_eq!(tokenizer.describe(), "built-in CLIP BPE");
    assert_eq!(tokenizer.encode(NORMAL).unwrap(), NORMAL_IDS);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn model_dir_with_tokenizer_json_uses_it() {
    let Some(shared) = shared_tokenizer_json() else {
        return;
    };
    let dir = scratch_dir("with-json");
    let path = dir.join("tokenizer.json");
    fs::copy(&shared, &path).unwrap();
    let tokenizer = ClipTokenizer::from_model_dir(&dir).unwrap();
    assert_eq!(tokenizer.describe(), path.display().to_string());
    assert_eq!(tokenizer.encode(ABNORMAL).unwrap(), ABNORMAL_IDS);
    fs::remove_dir_all(&dir).unwrap();
}

fn assert_error_names(result: anyhow::Result<ClipTokenizer>, path: &Path, problem: &str) {
    let message = match result {
        Ok(_) => panic!("{} loaded without error", path.display()),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        message.contains(&path.display().to_string()),
        "error does not name {}: {message}",
        path.display()
    );
    assert!(
        message.contains(problem),
        "error does not say {problem:?}: {message}"
    );
}

#[test]
fn missing_tokenizer_json_is_an_error_naming_the_file() {
    let dir = scratch_dir("missing");
    let path = dir.join("tokenizer.json");
    assert_error_names(
        ClipTokenizer::from_tokenizer_json(&path),
        &path,
        "cannot load",
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_tokenizer_json_is_an_error_naming_the_file() {
    let dir = scratch_dir("corrupt");
    let path = dir.join("tokenizer.json");
    fs::write(&path, "{\"version\": \"1.0\", \"model\": [truncated").unwrap();
    assert_error_names(
        ClipTokenizer::from_tokenizer_json(&path),
        &path,
        "cannot load",
    );
    assert_error_names(ClipTokenizer::from_model_dir(&dir), &path, "cannot load");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tokenizer_json_without_clip_special_tokens_is_an_error_naming_the_file() {
    let dir = scratch_dir("no-specials");
    let path = dir.join("tokenizer.json");
    let json = r#"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"a": 0, "[UNK]": 1}, "unk_token": "[UNK]"}}"#;
    fs::write(&path, json).unwrap();
    assert_error_names(
        ClipTokenizer::from_tokenizer_json(&path),
        &path,
        "no <|startoftext|> token",
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tokenizer_json_without_post_processor_gets_sot_and_eot() {
    let dir = scratch_dir("no-post-processor");
    let path = dir.join("tokenizer.json");
    let json = r#"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "unk_token": "[UNK]",
        "vocab": {"a": 0, "[UNK]": 1, "<|startoftext|>": 2, "<|endoftext|>": 3}}}"#;
    fs::write(&path, json).unwrap();
    let tokenizer = ClipTokenizer::from_tokenizer_json(&path).unwrap();
    assert_eq!(tokenizer.encode("a b a").unwrap(), [2, 0, 1, 0, 3]);
    assert_eq!(tokenizer.encode("").unwrap(), [2, 3]);
    fs::remove_dir_all(&dir).unwrap();
}
