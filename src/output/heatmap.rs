//! Anomaly maps as heatmap overlays: a jet colour map of the score, blended over the resized
//! input image.

use crate::data::decode::Pixels;

/// Matplotlib-like jet colour of `v` in `[0, 1]`.
pub fn jet(v: f32) -> [u8; 3] {
    let v = v.clamp(0.0, 1.0);
    let channel =
        |offset: f32| ((1.5 - (4.0 * v - offset).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [channel(3.0), channel(2.0), channel(1.0)]
}

/// `map: [side*side]` scores in `[0, 1]` blended 50/50 over `image` (RGB, `side x side`).
pub fn overlay(image: &Pixels, map: &[f32]) -> Vec<u8> {
    debug_assert_eq!(image.channels, 3);
    let mut out = Vec::with_capacity(map.len() * 3);
    for (px, &v) in image.data.chunks_exact(3).zip(map) {
        let c = jet(v);
        for k in 0..3 {
            out.push((px[k] as u16 + c[k] as u16).div_ceil(2) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_runs_blue_to_red() {
        assert_eq!(jet(0.0), [0, 0, 128]);
        assert_eq!(jet(0.5), [128, 255, 128]);
        assert_eq!(jet(1.0), [128, 0, 0]);
        assert_eq!(jet(-3.0), jet(0.0));
    }

    #[test]
    fn overlay_blends_evenly() {
        let img = Pixels {
            width: 1,
            height: 1,
            channels: 3,
            data: vec![255, 255, 255],
        };
        assert_eq!(overlay(&img, &[1.0]), vec![192, 128, 128]);
    }
}
