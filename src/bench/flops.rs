//! FLOPs of one image's zero-shot forward (SPEC §12), from the model's sizes: 2 × multiply-adds
//! of every GEMM and of attention's `QKᵀ` and `PV`, counted the way the profiling backend
//! ([`crate::backend::profile`]) counts the ops it times. Element-wise ops are left out.
//!
//! With `g = S / patch`, `n = g²`, `t = n + 1`, width `d`, MLP width `m`, embedding `e`:
//! - vision tower: `2·n·3p²·d` (patch embedding) + per block `2·t·d·(3d + d + 2m) + 4·t²·d`,
//!   over the blocks up to the deepest feature layer;
//! - adaptor, per aggregated set: `2·t·d·3·512 + 4·t²·512 + 2·t·512·d`;
//! - projection `ln_post(·) @ proj`, per set: `2·t·d·e`.
//!
//! ViT-L/14 at 518 px: 1.012 + 0.115 + 0.026 = 1.153 TFLOP.

use crate::model::checkpoint::ClipConfig;
use crate::model::head::ADAPTOR_INNER;

/// FLOPs of one image by part.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageFlops {
    pub vision: f64,
    pub adaptor: f64,
    pub projection: f64,
}

impl ImageFlops {
    pub fn total(&self) -> f64 {
        self.vision + self.adaptor + self.projection
    }
}

/// One image at side `side` through `depth` vision blocks and `sets` aggregated token sets.
pub fn image_flops(cfg: &ClipConfig, side: usize, depth: usize, sets: usize) -> ImageFlops {
    let g = (side / cfg.patch) as f64;
    let n = g * g;
    let t = n + 1.0;
    let d = cfg.vision_width as f64;
    let m = cfg.vision_mlp as f64;
    let p = cfg.patch as f64;
    let inner = ADAPTOR_INNER as f64;
    let patch_embed = 2.0 * n * 3.0 * p * p * d;
    let block = 2.0 * t * d * (4.0 * d + 2.0 * m) + 4.0 * t * t * d;
    let adaptor = 2.0 * t * d * 4.0 * inner + 4.0 * t * t * inner;
    ImageFlops {
        vision: patch_embed + depth as f64 * block,
        adaptor: sets as f64 * adaptor,
        projection: sets as f64 * 2.0 * t * d * cfg.embed_dim as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::random::preset;

    #[test]
    fn vit_l_at_518_matches_spec_12() {
        let f = image_flops(&preset("vit-l-14-336").unwrap(), 518, 24, 12);
        assert!((f.vision / 1e12 - 1.01).abs() < 0.01, "{f:?}");
        assert!((f.adaptor / 1e12 - 0.115).abs() < 0.002, "{f:?}");
        assert!((f.projection / 1e12 - 0.026).abs() < 0.001, "{f:?}");
        assert!((f.total() / 1e12 - 1.16).abs() < 0.01, "{f:?}");
    }

    #[test]
    fn shallower_towers_and_fewer_sets_cost_less() {
        let cfg = preset("vit-b-16").unwrap();
        let full = image_flops(&cfg, 224, 12, 12);
        let half = image_flops(&cfg, 224, 6, 6);
        assert!(half.vision < full.vision && half.vision > 0.4 * full.vision);
        assert_eq!(half.adaptor * 2.0, full.adaptor);
        assert_eq!(half.projection * 2.0, full.projection);
    }
}
