//! `afclip bench`'s library side: FLOPs of an image from the model's sizes ([`flops`]), the
//! zero-shot forward split into timed stages and the GEMM rate it is compared with
//! ([`stages`]).

pub mod flops;
pub mod stages;
