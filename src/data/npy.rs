//! Minimal `.npy` reader/writer for 2-D float32 arrays (anomaly maps).
//!
//! Format (NumPy NEP 1): magic `\x93NUMPY`, version byte pair, header length (u16 LE for
//! version 1, u32 LE for versions 2 and 3), an ASCII dict
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (H, W), }` padded with spaces and a
//! final `\n` so the data starts at a multiple of 64 bytes, then `H*W` little-endian f32.
//!
//! Reading accepts `<f4`/`>f4` (`|f4`, `=f4` as native little-endian), C or Fortran order, and
//! shape `(H, W)` or `(1, H, W)`; the result is always row-major `H x W`.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

/// A row-major `rows x cols` float32 array.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyF32 {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

/// Reads a 2-D float32 `.npy` file (see the module doc for what is accepted).
pub fn read_f32_2d(path: &Path) -> Result<NpyF32> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_f32_2d(&bytes).with_context(|| format!("{}: not a 2-D float32 .npy file", path.display()))
}

/// Parses the bytes of a 2-D float32 `.npy` file.
pub fn parse_f32_2d(bytes: &[u8]) -> Result<NpyF32> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        bail!("missing the \\x93NUMPY magic");
    }
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                bail!("truncated header");
            }
            let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (n as usize, 12)
        }
        v => bail!("unsupported .npy version {v}"),
    };
    let data_start = header_start + header_len;
    if bytes.len() < data_start {
        bail!("truncated header");
    }
    let header =
        std::str::from_utf8(&bytes[header_start..data_start]).context("header is not text")?;
    let descr = dict_value(header, "descr")?;
    let big_endian = match descr.trim_matches(|c| c == '\'' || c == '"') {
        "<f4" | "|f4" | "=f4" => false,
        ">f4" => true,
        other => bail!("dtype {other} is not float32 (convert with arr.astype(np.float32))"),
    };
    let fortran = match dict_value(header, "fortran_order")? {
        "True" => true,
        "False" => false,
        other => bail!("bad fortran_order {other}"),
    };
    let shape = parse_shape(dict_value(header, "shape")?)?;
    let (rows, cols) = match shape.as_slice() {
        [r, c] => (*r, *c),
        [1, r, c] => (*r, *c),
        _ => bail!("shape {shape:?} is not (H, W) or (1, H, W)"),
    };
    let n = rows
        .checked_mul(cols)
        .filter(|n| n.checked_mul(4).is_some())
        .context("shape too large")?;
    let payload = &bytes[data_start..];
    if payload.len() != n * 4 {
        bail!(
            "shape {shape:?} needs {} data bytes, the file has {}",
            n * 4,
            payload.len()
        );
    }
    let mut data: Vec<f32> = payload
        .chunks_exact(4)
        .map(|c| {
            let b = [c[0], c[1], c[2], c[3]];
            if big_endian {
                f32::from_be_bytes(b)
            } else {
                f32::from_le_bytes(b)
            }
        })
        .collect();
    if fortran && rows > 1 && cols > 1 {
        let mut c_order = vec![0f32; n];
        for (j, col) in data.chunks_exact(rows).enumerate() {
            for (i, &v) in col.iter().enumerate() {
                c_order[i * cols + j] = v;
            }
        }
        data = c_order;
    }
    Ok(NpyF32 { data, rows, cols })
}

/// Writes `data` (row-major `rows x cols`) as a version-1.0 `.npy` file.
pub fn write_f32_2d(path: &Path, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    if rows.checked_mul(cols) != Some(data.len()) {
        bail!(
            "{}: {} values do not make a {rows} x {cols} array",
            path.display(),
            data.len()
        );
    }
    let bytes = encode_f32_2d(data, rows, cols);
    let mut f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(&bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The bytes of a version-1.0 `.npy` file holding `data` as a `rows x cols` float32 array.
pub fn encode_f32_2d(data: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // magic(6) + version(2) + length(2) + header + '\n' padded to a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.extend(std::iter::repeat_n(' ', (64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The raw text of `'key': value` in the header dict (up to the next top-level comma).
fn dict_value<'a>(header: &'a str, key: &str) -> Result<&'a str> {
    let pat_single = format!("'{key}'");
    let pat_double = format!("\"{key}\"");
    let at = header
        .find(&pat_single)
        .map(|i| i + pat_single.len())
        .or_else(|| header.find(&pat_double).map(|i| i + pat_double.len()))
        .with_context(|| format!("header has no '{key}'"))?;
    let rest = header[at..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .with_context(|| format!("header: no ':' after '{key}'"))?
        .trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')').map(|i| i + 1)
    } else {
        rest.find([',', '}'])
    }
    .with_context(|| format!("header: unterminated value of '{key}'"))?;
    Ok(rest[..end].trim())
}

fn parse_shape(text: &str) -> Result<Vec<usize>> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .with_context(|| format!("bad shape {text}"))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .with_context(|| format!("bad shape {text}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_alignment() {
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        let bytes = encode_f32_2d(&data, 3, 4);
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let back = parse_f32_2d(&bytes).unwrap();
        assert_eq!((back.rows, back.cols), (3, 4));
        assert_eq!(back.data, data);
    }

    fn with_header(header: &str, payload: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn fortran_big_endian_and_leading_one() {
        // Column-major 2x3 [[1,2,3],[4,5,6]] stored big-endian: 1,4,2,5,3,6.
        let payload: Vec<u8> = [1f32, 4., 2., 5., 3., 6.]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let h = "{'descr': '>f4', 'fortran_order': True, 'shape': (1, 2, 3), }\n";
        let a = parse_f32_2d(&with_header(h, &payload)).unwrap();
        assert_eq!((a.rows, a.cols), (2, 3));
        assert_eq!(a.data, vec![1., 2., 3., 4., 5., 6.]);
    }

    #[test]
    fn rejects_bad_input() {
        let payload = [0u8; 8];
        let f8 = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1), }\n";
        assert!(parse_f32_2d(&with_header(f8, &payload)).is_err());
        let short = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 1), }\n";
        assert!(parse_f32_2d(&with_header(short, &payload)).is_err());
        let three_d = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 1), }\n";
        assert!(parse_f32_2d(&with_header(three_d, &payload)).is_err());
        assert!(parse_f32_2d(b"not an npy file").is_err());
    }
}
