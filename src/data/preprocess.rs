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

/// Writes `(x / 255 - mean) / std` channel-first into `out` (`3 * width * height` values),
/// with the same `f32` operations as torchvision's `ToTensor` + `Normalize`.
pub fn normalize_chw(rgb: &Pixels, out: &mut [f32]) -> Result<()> {
    let plane = rgb.width * rgb.height;
    ensure!(
        rgb.channels == 3,
        "normalize_chw: expected an RGB image, got {} channel(s)",
        rgb.channels
    );
    ensure!(
        rgb.data.len() == 3 * plane && out.len() == 3 * plane,
        "normalize_chw: {}x{} image needs {} values, pixel buffer has {}, output has {}",
        rgb.width,
        rgb.height,
        3 * plane,
        rgb.data.len(),
        out.len()
    );
    let luts: [[f32; 256]; 3] = std::array::from_fn(|c| {
        std::array::from_fn(|v| (v as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c])
    });
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in rgb.data.chunks_exact(3).enumerate() {
        r[i] = luts[0][usize::from(px[0])];
        g[i] = luts[1][usize::from(px[1])];
        b[i] = luts[2][usize::from(px[2])];
    }
    Ok(())
}

/// Decodes `path` as RGB, resizes it to `side x side` and normalises it.
pub fn load_image(path: &Path, side: usize) -> Result<PreparedImage> {
    ensure!(side > 0, "{}: image side must be positive", path.display());
    let rgb = decode_rgb(path)?;
    let resized = resize_bicubic(&rgb, side, side);
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
