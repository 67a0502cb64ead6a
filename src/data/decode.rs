//! Image decoding to 8-bit RGB or grey with Pillow's conversion semantics.
//!
//! The reference pipeline reads images with `Image.open(p).convert("RGB")` and masks with
//! `Image.open(p).convert("L")`. This module reproduces what those calls produce for the layouts
//! the `image` crate decodes (PNG, JPEG, BMP, TIFF):
//!
//! - alpha is dropped, never composited (grey+alpha, RGBA, palette with transparency);
//! - palettes are expanded to their RGB entries;
//! - 1/2/4-bit grey is scaled to 0..=255 (×255, ×85, ×17), as Pillow's `1`, `L;2`, `L;4` do;
//! - 16-bit grey follows Pillow's `I;16` conversion, which CLAMPS values to 255 (it does not
//!   rescale: a 16-bit grey value of 1000 becomes 255, 100 stays 100);
//! - 16-bit RGB, RGBA and grey+alpha keep the high byte (`v >> 8`), as Pillow's `RGB;16B`,
//!   `RGBA;16B` and `LA;16B` raw modes do;
//! - colour to grey uses Pillow's fixed-point ITU-R 601-2 luma,
//!   `L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16`, which is what Pillow computes for
//!   `R*299/1000 + G*587/1000 + B*114/1000` (identical to Pillow for all 2^24 colours).
//!
//! Known differences from Pillow: JPEG is decoded by `zune-jpeg` rather than libjpeg-turbo, so
//! decoded JPEG samples may differ by a few levels (IDCT and chroma upsampling rounding); CMYK
//! JPEGs use `zune-jpeg`'s CMYK→RGB conversion; 32-bit float images are rejected.

use std::io::Cursor;
use std::path::Path;

use anyhow::{bail, Context, Result};
use image::{DynamicImage, ImageFormat, ImageReader};

/// An 8-bit image, interleaved row-major (HWC); `channels` is 1 (grey) or 3 (RGB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pixels {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

/// Decodes an image file to 8-bit RGB (`channels == 3`) like Pillow's `convert("RGB")`.
pub fn decode_rgb(path: &Path) -> Result<Pixels> {
    let bytes = read_file(path)?;
    decode_rgb_bytes(&bytes, &path.display().to_string())
}

/// Decodes an image file to 8-bit grey (`channels == 1`) like Pillow's `convert("L")`.
pub fn decode_grey(path: &Path) -> Result<Pixels> {
    let bytes = read_file(path)?;
    decode_grey_bytes(&bytes, &path.display().to_string())
}

/// [`decode_rgb`] on an in-memory encoded image; `name` is used in error messages.
pub fn decode_rgb_bytes(bytes: &[u8], name: &str) -> Result<Pixels> {
    let img = decode_dynamic(bytes, name)?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data = match img {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageLuma8(b) => grey_to_rgb(b.as_raw().iter().copied()),
        DynamicImage::ImageLumaA8(b) => grey_to_rgb(b.as_raw().iter().step_by(2).copied()),
        DynamicImage::ImageRgba8(b) => drop_alpha(b.as_raw()),
        DynamicImage::ImageLuma16(b) => grey_to_rgb(b.as_raw().iter().map(|&v| clamp16(v))),
        DynamicImage::ImageLumaA16(b) => {
            grey_to_rgb(b.as_raw().iter().step_by(2).map(|&v| high_byte(v)))
        }
        DynamicImage::ImageRgb16(b) => b.as_raw().iter().map(|&v| high_byte(v)).collect(),
        DynamicImage::ImageRgba16(b) => b
            .as_raw()
            .chunks_exact(4)
            .flat_map(|p| [high_byte(p[0]), high_byte(p[1]), high_byte(p[2])])
            .collect(),
        other => bail!(
            "{name}: unsupported pixel layout {:?} (only 8- and 16-bit images are read)",
            other.color()
        ),
    };
    Ok(Pixels {
        width,
        height,
        channels: 3,
        data,
    })
}

/// [`decode_grey`] on an in-memory encoded image; `name` is used in error messages.
pub fn decode_grey_bytes(bytes: &[u8], name: &str) -> Result<Pixels> {
    let img = decode_dynamic(bytes, name)?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data = match img {
        DynamicImage::ImageLuma8(b) => b.into_raw(),
        DynamicImage::ImageLumaA8(b) => b.as_raw().iter().step_by(2).copied().collect(),
        DynamicImage::ImageRgb8(b) => b.as_raw().chunks_exact(3).map(luma).collect(),
        DynamicImage::ImageRgba8(b) => b.as_raw().chunks_exact(4).map(luma).collect(),
        DynamicImage::ImageLuma16(b) => b.as_raw().iter().map(|&v| clamp16(v)).collect(),
        DynamicImage::ImageLumaA16(b) => b
            .as_raw()
            .iter()
            .step_by(2)
            .map(|&v| high_byte(v))
            .collect(),
        DynamicImage::ImageRgb16(b) => b.as_raw().chunks_exact(3).map(luma16).collect(),
        DynamicImage::ImageRgba16(b) => b.as_raw().chunks_exact(4).map(luma16).collect(),
        other => bail!(
            "{name}: unsupported pixel layout {:?} (only 8- and 16-bit images are read)",
            other.color()
        ),
    };
    Ok(Pixels {
        width,
        height,
        channels: 1,
        data,
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read image file {}", path.display()))
}

fn decode_dynamic(bytes: &[u8], name: &str) -> Result<DynamicImage> {
    if bytes.is_empty() {
        bail!("{name}: empty file, not an image");
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("{name}: cannot read image header"))?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Bmp | ImageFormat::Tiff)) => {
            f
        }
        Some(other) => bail!("{name}: {other:?} images are not supported (PNG, JPEG, BMP, TIFF)"),
        None => bail!("{name}: not a recognised image (expected PNG, JPEG, BMP or TIFF)"),
    };
    let img = reader.decode().with_context(|| {
        format!("{name}: cannot decode {format:?} image (corrupt or truncated?)")
    })?;
    if img.width() == 0 || img.height() == 0 {
        bail!(
            "{name}: zero-sized image ({}x{})",
            img.width(),
            img.height()
        );
    }
    Ok(img)
}

fn grey_to_rgb(grey: impl Iterator<Item = u8>) -> Vec<u8> {
    grey.flat_map(|v| [v, v, v]).collect()
}

fn drop_alpha(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect()
}

/// Pillow's `I;16` → 8-bit conversion: values above 255 saturate.
fn clamp16(v: u16) -> u8 {
    v.min(255) as u8
}

/// Pillow's `;16B` raw modes keep the most significant byte.
fn high_byte(v: u16) -> u8 {
    (v >> 8) as u8
}

/// Pillow's `L24` luma: ITU-R 601-2 in 16-bit fixed point, rounded.
fn luma(p: &[u8]) -> u8 {
    let l = 19595 * u32::from(p[0]) + 38470 * u32::from(p[1]) + 7471 * u32::from(p[2]) + 0x8000;
    (l >> 16) as u8
}

fn luma16(p: &[u16]) -> u8 {
    luma(&[high_byte(p[0]), high_byte(p[1]), high_byte(p[2])])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(img: DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .expect("encode test PNG");
        out
    }

    fn sample_rgb() -> DynamicImage {
        let data: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 37 % 256) as u8).collect();
        DynamicImage::ImageRgb8(image::RgbImage::from_raw(4, 3, data).expect("buffer size"))
    }

    fn temp_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("afclip-decode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        dir.join(name)
    }

    #[test]
    fn missing_file_names_path() {
        let path = temp_path("does-not-exist.png");
        let err = format!("{:#}", decode_rgb(&path).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("cannot read image file"), "{err}");
    }

    #[test]
    fn garbage_bytes_name_path() {
        let path = temp_path("garbage.png");
        std::fs::write(&path, b"this is definitely not an image file").expect("write");
        let err = format!("{:#}", decode_rgb(&path).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("not a recognised image"), "{err}");
    }

    #[test]
    fn empty_file_is_rejected() {
        let path = temp_path("empty.png");
        std::fs::write(&path, b"").expect("write");
        let err = format!("{:#}", decode_grey(&path).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("empty file"), "{err}");
    }

    #[test]
    fn unsupported_format_is_named() {
        let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;";
        let err = format!("{:#}", decode_rgb_bytes(gif, "x.gif").unwrap_err());
        assert!(err.contains("x.gif: Gif images are not supported"), "{err}");
    }

    #[test]
    fn truncated_png_names_path() {
        let bytes = png_bytes(sample_rgb());
        let path = temp_path("truncated.png");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
        let err = format!("{:#}", decode_rgb(&path).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("cannot decode Png image"), "{err}");
    }

    #[test]
    fn rgb_png_round_trips() {
        let img = sample_rgb();
        let px = decode_rgb_bytes(&png_bytes(img.clone()), "mem.png").expect("decode");
        assert_eq!((px.width, px.height, px.channels), (4, 3, 3));
        assert_eq!(px.data, img.into_rgb8().into_raw());
    }

    #[test]
    fn rgba_drops_alpha_without_compositing() {
        let data = vec![10, 20, 30, 0, 200, 100, 50, 128];
        let img = DynamicImage::ImageRgba8(image::RgbaImage::from_raw(2, 1, data).expect("size"));
        let px = decode_rgb_bytes(&png_bytes(img), "mem.png").expect("decode");
        assert_eq!(px.data, vec![10, 20, 30, 200, 100, 50]);
    }

    #[test]
    fn grey_uses_pillow_luma() {
        // (255, 0, 0) -> 76, (0, 255, 0) -> 150, (0, 0, 255) -> 29, (1, 1, 1) -> 1.
        let data = vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 1, 1, 1];
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_raw(4, 1, data).expect("size"));
        let px = decode_grey_bytes(&png_bytes(img), "mem.png").expect("decode");
        assert_eq!(px.channels, 1);
        assert_eq!(px.data, vec![76, 150, 29, 1]);
    }

    #[test]
    fn grey16_saturates_like_pillow() {
        let data = vec![0u16, 1, 255, 256, 1000, 65535];
        let img =
            DynamicImage::ImageLuma16(image::ImageBuffer::from_raw(6, 1, data).expect("size"));
        let bytes = png_bytes(img);
        let grey = decode_grey_bytes(&bytes, "mem.png").expect("decode");
        assert_eq!(grey.data, vec![0, 1, 255, 255, 255, 255]);
        let rgb = decode_rgb_bytes(&bytes, "mem.png").expect("decode");
        assert_eq!(rgb.data[9..12], [255, 255, 255]);
        assert_eq!(rgb.data[3..6], [1, 1, 1]);
    }
}
