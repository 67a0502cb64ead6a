//! A fingerprint of the vision weights that raw features depend on, recorded in memory banks
//! so that a bank is never searched with features of another model.
//!
//! Hashed: the vision sizes (width, heads, MLP width, patch, trained grid, depth) and every
//! value of the patch embedding, class and position embeddings, `ln_pre` and blocks
//! `1..=max_layer`, as f32 bits in the canonical (OpenAI) layout. The same weights stored
//! under OpenAI or Hugging Face names, in f32, f16 or bf16, therefore give the same
//! fingerprint; changing any one value changes it. The hash is 64-bit: four interleaved
//! multiply–xorshift lanes per 1 Mi-value chunk (chunks hashed in parallel, combined in order),
//! printed as 16 hex digits.

use crate::model::checkpoint::{ClipConfig, VisionWeights};
use rayon::prelude::*;

const CHUNK: usize = 1 << 20;
const PRIME: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(h: u64, v: u64) -> u64 {
    let x = (h ^ v).wrapping_mul(PRIME);
    x ^ (x >> 29)
}

fn hash_chunk(values: &[f32]) -> u64 {
    let mut lanes = [1u64, 2, 3, 4];
    let mut quads = values.chunks_exact(4);
    for q in &mut quads {
        for (l, v) in lanes.iter_mut().zip(q) {
            *l = mix(*l, u64::from(v.to_bits()));
        }
    }
    let mut h = lanes.iter().fold(0u64, |h, &l| mix(h, l));
    for v in quads.remainder() {
        h = mix(h, u64::from(v.to_bits()));
    }
    h
}

fn hash_tensor(h: u64, values: &[f32]) -> u64 {
    let parts: Vec<u64> = values.par_chunks(CHUNK).map(hash_chunk).collect();
    parts
        .iter()
        .fold(mix(h, values.len() as u64), |h, &p| mix(h, p))
}

/// The fingerprint of the vision tower up to block `max_layer` (1-based).
pub fn vision_fingerprint(cfg: &ClipConfig, vision: &VisionWeights, max_layer: usize) -> String {
    let sizes = [
        cfg.vision_width,
        cfg.vision_heads,
        cfg.vision_mlp,
        cfg.patch,
        cfg.trained_grid,
        max_layer,
    ];
    let mut h = sizes.iter().fold(0u64, |h, &s| mix(h, s as u64));
    let mut tensors: Vec<&[f32]> = vec![
        &vision.conv,
        &vision.cls,
        &vision.pos,
        &vision.ln_pre_w,
        &vision.ln_pre_b,
    ];
    for b in vision.blocks.iter().take(max_layer) {
        tensors.extend([
            b.ln1_w.as_slice(),
            &b.ln1_b,
            &b.in_proj_w,
            &b.in_proj_b,
            &b.out_w,
            &b.out_b,
            &b.ln2_w,
            &b.ln2_b,
            &b.fc_w,
            &b.fc_b,
            &b.proj_w,
            &b.proj_b,
        ]);
    }
    for t in tensors {
        h = hash_tensor(h, t);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_and_its_position_count() {
        let a: Vec<f32> = (0..CHUNK + 7).map(|i| i as f32 * 0.5).collect();
        let base = hash_tensor(0, &a);
        assert_eq!(base, hash_tensor(0, &a));
        for i in [0, 3, 4, CHUNK - 1, CHUNK + 6] {
            let mut b = a.clone();
            b[i] = -b[i] - 1.0;
            assert_ne!(hash_tensor(0, &b), base, "change at {i} missed");
        }
        let mut swapped = a.clone();
        swapped.swap(1, 2);
        assert_ne!(hash_tensor(0, &swapped), base);
        assert_ne!(hash_tensor(0, &a[..CHUNK]), base);
    }
}
