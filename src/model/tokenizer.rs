//! CLIP text tokenizer (SPEC §5): text → `[SOT, ...bpe ids..., EOT]`, no padding, no truncation.
//!
//! Two sources:
//! - a Hugging Face `tokenizer.json` next to the weights, run through the `tokenizers` crate;
//! - the built-in CLIP BPE, a re-implementation of OpenAI CLIP's `simple_tokenizer.py` over the
//!   embedded merges file (`assets/bpe_simple_vocab_16e6.txt.gz`, MIT, see
//!   `assets/LICENSE-CLIP.txt`).
//!
//! Built-in pipeline, step by step as in `simple_tokenizer.py`:
//! 1. clean: NFC (the normalisation ftfy applies; the rest of ftfy and `html.unescape` are not
//!    reproduced), strip, collapse whitespace runs to one space, lowercase (full Unicode, final
//!    sigma included, as Python's `str.lower`);
//! 2. split with [`CLIP_PATTERN`]; the two special-token texts are matched there and map
//!    straight to their ids;
//! 3. map every UTF-8 byte of a piece to its byte-unicode symbol, append `</w>` to the last one;
//! 4. BPE: repeatedly merge every non-overlapping occurrence (left to right) of the adjacent
//!    pair with the lowest merge rank, until no adjacent pair has a rank.
//!
//! Vocabulary (49408 ids): 256 byte symbols, the same with `</w>`, the first 48894 merges joined,
//! `<|startoftext|>` (49406), `<|endoftext|>` (49407).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use flate2::read::GzDecoder;
use tokenizers::utils::SysRegex;
use tokenizers::{NormalizedString, Tokenizer};

/// OpenAI CLIP's merges file, gzip-compressed.
const MERGES_GZ: &[u8] = include_bytes!("../../assets/bpe_simple_vocab_16e6.txt.gz");

const SOT_TEXT: &str = "<|startoftext|>";
const EOT_TEXT: &str = "<|endoftext|>";
const END_OF_WORD: &str = "</w>";
/// CLIP keeps the merges on lines `1..=48894` of the file (line 0 is a version header).
const NUM_MERGES: usize = 49152 - 256 - 2;
/// 256 byte symbols + 256 with `</w>` + merges + 2 special tokens.
const VOCAB_SIZE: usize = 2 * 256 + NUM_MERGES + 2;

/// The CLIP pre-tokenisation regex (`re.IGNORECASE` is moot: text is lowercased first).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A CLIP text tokenizer, built-in or loaded from a `tokenizer.json`.
pub struct ClipTokenizer {
    source: Source,
}

enum Source {
    Builtin(Box<BuiltinBpe>),
    Json {
        path: PathBuf,
        tokenizer: Box<Tokenizer>,
        sot: u32,
        eot: u32,
    },
}

impl ClipTokenizer {
    /// `dir/tokenizer.json` if present (Hugging Face format, through the tokenizers crate),
    /// else the built-in CLIP BPE.
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        let present = json
            .try_exists()
            .with_context(|| format!("cannot check whether {} exists", json.display()))?;
        if present {
            Self::from_tokenizer_json(&json)
        } else {
            Self::builtin()
        }
    }

    /// The built-in CLIP BPE (OpenAI `simple_tokenizer`), from the embedded merges file.
    pub fn builtin() -> Result<Self> {
        Ok(Self {
            source: Source::Builtin(Box::new(BuiltinBpe::new()?)),
        })
    }

    /// A Hugging Face `tokenizer.json`; its vocabulary must hold `<|startoftext|>` and
    /// `<|endoftext|>`.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self> {
        let tokenizer = Tokenizer::from_file(path)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("cannot load tokenizer file {}", path.display()))?;
        let special = |text: &str| {
            tokenizer.token_to_id(text).ok_or_else(|| {
                anyhow!(
                    "tokenizer file {} has no {text} token in its vocabulary",
                    path.display()
                )
            })
        };
        let (sot, eot) = (special(SOT_TEXT)?, special(EOT_TEXT)?);
        Ok(Self {
            source: Source::Json {
                path: path.to_path_buf(),
                tokenizer: Box::new(tokenizer),
                sot,
                eot,
            },
        })
    }

    /// `[SOT, ...bpe ids..., EOT]`, no padding, no truncation. A `tokenizer.json` whose
    /// post-processor does not add SOT/EOT gets them added here.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.source {
            Source::Builtin(bpe) => Ok(bpe.encode(text)),
            Source::Json {
                path,
                tokenizer,
                sot,
                eot,
            } => {
                let encoding = tokenizer
                    .encode(text, true)
                    .map_err(|e| anyhow!("{e}"))
                    .with_context(|| format!("tokenizer {} failed on {text:?}", path.display()))?;
                let body = encoding.get_ids();
                let mut ids = Vec::with_capacity(body.len() + 2);
                if body.first() != Some(sot) {
                    ids.push(*sot);
                }
                ids.extend_from_slice(body);
                if ids.len() < 2 || ids.last() != Some(eot) {
                    ids.push(*eot);
                }
                Ok(ids)
            }
        }
    }

    /// Where the tokenizer came from: "built-in CLIP BPE" or the `tokenizer.json` path.
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Builtin(_) => "built-in CLIP BPE".to_string(),
            Source::Json { path, .. } => path.display().to_string(),
        }
    }
}

/// OpenAI CLIP `simple_tokenizer`, with symbols held as vocabulary ids.
struct BuiltinBpe {
    /// Vocabulary id of each byte's symbol (add 256 for the `</w>` form).
    byte_ids: [u32; 256],
    /// Adjacent symbol pair → (merge rank, id of the merged symbol).
    merges: HashMap<(u32, u32), (u32, u32)>,
    pattern: SysRegex,
    sot: u32,
    eot: u32,
}

impl BuiltinBpe {
    fn new() -> Result<Self> {
        let mut text = String::new();
        GzDecoder::new(MERGES_GZ)
            .read_to_string(&mut text)
            .context(
                "cannot decompress the embedded CLIP merges file bpe_simple_vocab_16e6.txt.gz",
            )?;

        let symbols = bytes_to_unicode();
        let mut byte_ids = [0u32; 256];
        let mut vocab: Vec<String> = Vec::with_capacity(VOCAB_SIZE);
        for (id, &(byte, symbol)) in (0u32..).zip(&symbols) {
            byte_ids[usize::from(byte)] = id;
            vocab.push(symbol.to_string());
        }
        vocab.extend(symbols.iter().map(|&(_, c)| format!("{c}{END_OF_WORD}")));

        let mut pairs = Vec::with_capacity(NUM_MERGES);
        for (index, line) in text.lines().enumerate().skip(1).take(NUM_MERGES) {
            let (first, second) = line.split_once(' ').with_context(|| {
                format!(
                    "embedded CLIP merges file bpe_simple_vocab_16e6.txt.gz: line {} is not a pair: {line:?}",
                    index + 1
                )
            })?;
            vocab.push(format!("{first}{second}"));
            pairs.push((first, second));
        }
        if pairs.len() != NUM_MERGES {
            bail!(
                "embedded CLIP merges file bpe_simple_vocab_16e6.txt.gz: {} merges, expected {NUM_MERGES}",
                pairs.len()
            );
        }
        vocab.push(SOT_TEXT.to_string());
        vocab.push(EOT_TEXT.to_string());

        let ids: HashMap<&str, u32> = vocab.iter().map(String::as_str).zip(0u32..).collect();
        if ids.len() != VOCAB_SIZE {
            bail!(
                "embedded CLIP merges file bpe_simple_vocab_16e6.txt.gz: {} distinct vocabulary entries, expected {VOCAB_SIZE}",
                ids.len()
            );
        }
        let id = |symbol: &str| {
            ids.get(symbol).copied().with_context(|| {
                format!(
                    "embedded CLIP merges file bpe_simple_vocab_16e6.txt.gz: merge symbol {symbol:?} is not in the vocabulary"
                )
            })
        };
        let mut merges = HashMap::with_capacity(NUM_MERGES);
        for (rank, &(first, second)) in (0u32..).zip(&pairs) {
            let merged = id(&format!("{first}{second}"))?;
            merges.insert((id(first)?, id(second)?), (rank, merged));
        }
        let pattern = SysRegex::new(CLIP_PATTERN)
            .map_err(|e| anyhow!("{e}"))
            .context("cannot compile the CLIP pre-tokenisation regex")?;
        Ok(Self {
            byte_ids,
            merges,
            pattern,
            sot: id(SOT_TEXT)?,
            eot: id(EOT_TEXT)?,
        })
    }

    fn encode(&self, text: &str) -> Vec<u32> {
        let text = clean(text);
        let mut ids = vec![self.sot];
        for (start, end) in self.pattern.find_iter(&text) {
            match &text[start..end] {
                SOT_TEXT => ids.push(self.sot),
                EOT_TEXT => ids.push(self.eot),
                piece => ids.extend(self.bpe(piece)),
            }
        }
        ids.push(self.eot);
        ids
    }

    /// BPE over one pre-tokenised piece (non-empty: every regex alternative consumes input).
    fn bpe(&self, piece: &str) -> Vec<u32> {
        let mut word: Vec<u32> = piece
            .bytes()
            .map(|b| self.byte_ids[usize::from(b)])
            .collect();
        if let Some(last) = word.last_mut() {
            *last += 256;
        }
        while let Some((pair, merged)) = word
            .windows(2)
            .filter_map(|w| {
                let pair = (w[0], w[1]);
                self.merges
                    .get(&pair)
                    .map(|&(rank, merged)| (rank, pair, merged))
            })
            .min()
            .map(|(_, pair, merged)| (pair, merged))
        {
            let mut next = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && (word[i], word[i + 1]) == pair {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(word[i]);
                    i += 1;
                }
            }
            word = next;
        }
        word
    }
}

/// CLIP's byte ↔ symbol table, in vocabulary order: the printable Latin-1 bytes as themselves,
/// then every other byte `b` (ascending) as `chr(256 + n)`.
fn bytes_to_unicode() -> Vec<(u8, char)> {
    let printable = |b: &u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table: Vec<(u8, char)> = (0..=255u8)
        .filter(printable)
        .map(|b| (b, char::from(b)))
        .collect();
    let shifted = ('\u{100}'..).zip((0..=255u8).filter(|b| !printable(b)));
    table.extend(shifted.map(|(c, b)| (b, c)));
    table
}

/// `simple_tokenizer`'s cleaning without ftfy: NFC, strip, whitespace runs to one space,
/// lowercase. Python's `str.strip` also removes U+001C..U+001F, the `regex` module's `\s` (used
/// for the collapse) does not; `char::is_whitespace` is that `\s`.
fn clean(text: &str) -> String {
    let mut normalized = NormalizedString::from(text);
    normalized.nfc();
    let py_isspace = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
    normalized
        .get()
        .trim_matches(py_isspace)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_covers_every_byte_once_in_clip_order() {
        let table = bytes_to_unicode();
        assert_eq!(table.len(), 256);
        let mut bytes: Vec<u8> = table.iter().map(|&(b, _)| b).collect();
        bytes.sort_unstable();
        assert_eq!(bytes, (0..=255u8).collect::<Vec<_>>());
        assert_eq!(table[0], (b'!', '!'));
        assert_eq!(table[188], (0, '\u{100}'));
        assert_eq!(table[188 + usize::from(b' ')], (b' ', '\u{120}'));
        assert_eq!(table[255], (0xAD, '\u{143}'));
    }

    #[test]
    fn clean_matches_python_whitespace_and_lowercase() {
        assert_eq!(clean("\u{1d} A\t\u{1c}B\u{3000}\n "), "a \u{1c}b");
        assert_eq!(clean("ΟΔΟΣ"), "οδος");
        assert_eq!(clean("e\u{301}"), "\u{e9}");
        assert_eq!(clean(" \n"), "");
    }

    #[test]
    fn builtin_matches_simple_tokenizer_where_tokenizer_json_differs() {
        let bpe = BuiltinBpe::new().unwrap();
        // Ids from OpenAI CLIP's simple_tokenizer (ftfy and html.unescape left out).
        assert_eq!(bpe.encode(""), vec![49406, 49407]);
        assert_eq!(
            bpe.encode("a<|endoftext|>b"),
            vec![49406, 320, 49407, 321, 49407]
        );
        assert_eq!(
            bpe.encode("<|StartOfText|>x"),
            vec![49406, 49406, 343, 49407]
        );
        assert_eq!(
            bpe.encode("<<|endoftext|>"),
            vec![49406, 24588, 347, 40786, 4160, 91, 285, 49407]
        );
        assert_eq!(
            bpe.encode("ΟΔΟΣ"),
            vec![49406, 138, 123, 138, 112, 138, 123, 139, 480, 49407]
        );
        assert_eq!(bpe.encode("a\u{1c}b"), vec![49406, 320, 472, 321, 49407]);
    }
}
