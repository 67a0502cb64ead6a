//! Model inputs: decode, Pillow bicubic resize to `side x side`, CLIP normalisation (SPEC §1).

use std::path::Path;

use anyhow::{ensure, Result};

use super::decode::{decode_grey, decode_rgb, Pixels};
use super::resize::resize_bicubic;

/// CLIP's per-channel mean (RGB) of `x / 255`.
pub const CLIP_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
/// CLIP's per-channel standard deviation (RGB) of `x / 255`.
// The digits are OpenAI CLIP's published constants; they round to the same `f32`.
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// An image ready for the vision tower.
#[derive(Clone, Debug)]
pub struct PreparedImage {
    /// `[3, side, side]`, channel-first, normalised.
    pub tensor: Vec<f32>,
    /// The `side x side` RGB image the tensor was made from (for overlays).
    pub resized: Pixels,
}

/// The CLIP normalisation of every byte value, per channel: `lut[c][v] = (v / 255 - mean[c]) /
/// std[c]` in `f32`, with the same operations as torchvision's `ToTensor` + `Normalize`. The
/// CUDA backend uploads this very table, so both backends give the same bits.
pub fn normalize_lut() -> [[f32; 256]; 3] {
    std::array::from_fn(|c| {
        std::array::from_fn(|v| (v as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c])
    })
}

/// Writes `(x / 255 - mean) / std` channel-first into `out` (`3 * width * height` values).
pub fn normalize_chw(rgb: &Pixels, out: &mut [f32]) -> Result<()> {
    ensure!(
        rgb.channels == 3,
        "normalize_chw: expected an RGB image, got {} channel(s)",
        rgb.channels
    );
    normalize_rgb(out, &rgb.data, 1, rgb.height, rgb.width)
}

/// CLIP input normalisation of a batch (SPEC §1), the CPU twin of `normalize_rgb` in
/// kernels/preprocess.cu: `out[b, c, y, x] = lut[c][rgb[b, y, x, c]]` ([`normalize_lut`]),
/// `rgb: [batch, height, width, 3]` bytes, `out: [batch, 3, height, width]`.
pub fn normalize_rgb(
    out: &mut [f32],
    rgb: &[u8],
    batch: usize,
    height: usize,
    width: usize,
) -> Result<()> {
    let plane = height * width;
    let want = batch * 3 * plane;
    ensure!(
        rgb.len() == want && out.len() == want,
        "normalize_rgb: {batch} image(s) of {width}x{height} RGB need {want} values, pixel \
         buffer has {}, output has {}",
        rgb.len(),
        out.len()
    );
    if want == 0 {
        return Ok(());
    }
    let luts = normalize_lut();
    for (image, out) in rgb
        .chunks_exact(3 * plane)
        .zip(out.chunks_exact_mut(3 * plane))
    {
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in image.chunks_exact(3).enumerate() {
            r[i] = luts[0][usize::from(px[0])];
            g[i] = luts[1][usize::from(px[1])];
            b[i] = luts[2][usize::from(px[2])];
        }
    }
    Ok(())
}

/// Decodes `path` as RGB and resizes it to `side x side` (the bytes the model normalises).
pub fn load_rgb(path: &Path, side: usize) -> Result<Pixels> {
    ensure!(side > 0, "{}: image side must be positive", path.display());
    Ok(resize_bicubic(&decode_rgb(path)?, side, side))
}

/// Decodes `path` as RGB, resizes it to `side x side` and normalises it.
pub fn load_image(path: &Path, side: usize) -> Result<PreparedImage> {
    let resized = load_rgb(path, side)?;
    let mut tensor = vec![0f32; 3 * side * side];
    normalize_chw(&resized, &mut tensor)?;
    Ok(PreparedImage { tensor, resized })
}

/// Reads a ground-truth mask as grey (optionally every non-zero value becomes 255, as for VisA),
/// resizes it to `side x side` with the same bicubic and returns `value / 255` in `[0, 1]`,
/// row-major.
pub fn load_mask(path: &Path, side: usize, binarise_nonzero: bool) -> Result<Vec<f32>> {
    ensure!(side > 0, "{}: mask side must be positive", path.display());
    let mut grey = decode_grey(path)?;
    if binarise_nonzero {
        for v in &mut grey.data {
            if *v != 0 {
                *v = 255;
            }
        }
    }
    let resized = resize_bicubic(&grey, side, side);
    Ok(resized.data.iter().map(|&v| f32::from(v) / 255.0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_channel_first() {
        let rgb = Pixels {
            width: 2,
            height: 1,
            channels: 3,
            data: vec![0, 128, 255, 10, 20, 30],
        };
        let mut out = vec![0f32; 6];
        normalize_chw(&rgb, &mut out).expect("normalise");
        let expect = |v: u8, c: usize| (f32::from(v) / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        assert_eq!(out[0], expect(0, 0));
        assert_eq!(out[1], expect(10, 0));
        assert_eq!(out[2], expect(128, 1));
        assert_eq!(out[3], expect(20, 1));
        assert_eq!(out[4], expect(255, 2));
        assert_eq!(out[5], expect(30, 2));
        assert!((out[0] + 0.48145466 / 0.26862954).abs() < 1e-6);
    }

    #[test]
    fn normalise_rejects_wrong_shapes() {
        let grey = Pixels {
            width: 2,
            height: 2,
            channels: 1,
            data: vec![0; 4],
        };
        assert!(normalize_chw(&grey, &mut [0.0; 12]).is_err());
        let rgb = Pixels {
            width: 2,
            height: 2,
            channels: 3,
            data: vec![0; 12],
        };
        let err = normalize_chw(&rgb, &mut [0.0; 11]).unwrap_err().to_string();
        assert!(err.contains("output has 11"), "{err}");
        let err = normalize_rgb(&mut [0.0; 24], &[0; 23], 2, 2, 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pixel buffer has 23"), "{err}");
    }

    #[test]
    fn batch_normalisation_is_per_image_chw() {
        let rgb: Vec<u8> = (0..2 * 3 * 2 * 3).map(|i| (i * 37 % 256) as u8).collect();
        let mut batch = vec![0f32; rgb.len()];
        normalize_rgb(&mut batch, &rgb, 2, 3, 2).expect("batch");
        for (image, got) in rgb.chunks_exact(18).zip(batch.chunks_exact(18)) {
            let px = Pixels {
                width: 2,
                height: 3,
                channels: 3,
                data: image.to_vec(),
            };
            let mut one = vec![0f32; 18];
            normalize_chw(&px, &mut one).expect("one");
            assert_eq!(one, got);
            let expect = |y: usize, x: usize, c: usize| {
                (f32::from(image[(y * 2 + x) * 3 + c]) / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c]
            };
            assert_eq!(got[6 + 2 * 2 + 1], expect(2, 1, 1));
            assert_eq!(got[12 + 2], expect(1, 0, 2));
        }
    }

    #[test]
    fn load_errors_name_the_file() {
        let path = std::env::temp_dir().join("afclip-preprocess-missing.png");
        let err = format!("{:#}", load_image(&path, 8).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        let err = format!("{:#}", load_mask(&path, 8, true).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}
