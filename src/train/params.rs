//! The trainable parameters are a [`Head`] (prompt + adaptor); gradients and Adam moments use
//! the same struct. These helpers walk its tensors in one fixed order.

use crate::model::head::Head;

/// The tensors of a head, in the order of its file: prompt, norm weight and bias, q, k, v,
/// out weight, out bias.
pub fn tensors(h: &Head) -> [&Vec<f32>; 8] {
    [
        &h.prompt,
        &h.norm_w,
        &h.norm_b,
        &h.to_q,
        &h.to_k,
        &h.to_v,
        &h.to_out_w,
        &h.to_out_b,
    ]
}

pub fn tensors_mut(h: &mut Head) -> [&mut Vec<f32>; 8] {
    [
        &mut h.prompt,
        &mut h.norm_w,
        &mut h.norm_b,
        &mut h.to_q,
        &mut h.to_k,
        &mut h.to_v,
        &mut h.to_out_w,
        &mut h.to_out_b,
    ]
}

/// Names matching [`tensors`], as in a head file.
pub const NAMES: [&str; 8] = [
    crate::model::head::PROMPT,
    crate::model::head::NORM_W,
    crate::model::head::NORM_B,
    crate::model::head::TO_Q,
    crate::model::head::TO_K,
    crate::model::head::TO_V,
    crate::model::head::TO_OUT_W,
    crate::model::head::TO_OUT_B,
];

/// A head of zeros with `like`'s shapes.
pub fn zeros_like(like: &Head) -> Head {
    let z = |v: &Vec<f32>| vec![0.0; v.len()];
    Head {
        width: like.width,
        text_width: like.text_width,
        prompt: z(&like.prompt),
        norm_w: z(&like.norm_w),
        norm_b: z(&like.norm_b),
        to_q: z(&like.to_q),
        to_k: z(&like.to_k),
        to_v: z(&like.to_v),
        to_out_w: z(&like.to_out_w),
        to_out_b: z(&like.to_out_b),
        prompts: like.prompts,
    }
}
