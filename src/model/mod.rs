//! The AF-CLIP model: CLIP weights, vision and text towers, aggregation, adaptor, scores.
pub mod tokenizer;
pub mod adaptor;
pub mod afclip;
pub mod checkpoint;
pub mod head;
pub mod pos_embed;
pub mod tensors;
pub mod text;
pub mod transformer;
pub mod vision;
pub mod load;
pub mod random;
