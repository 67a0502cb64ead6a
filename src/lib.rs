//! afclip: AF-CLIP zero-/few-shot visual anomaly detection.
//!
//! Flow: [`data`] (inputs, decode, resize) → [`model`] (CLIP towers, aggregation, adaptor,
//! prompts, scores) → [`metrics`]; every compute op goes through a [`backend::Backend`].

pub mod archive;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod data;
pub mod eval;
pub mod fewshot;
pub mod metrics;
pub mod model;
pub mod output;
pub mod rng;
pub mod train;
