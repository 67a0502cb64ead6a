//! The AF-CLIP model: CLIP weights, vision and text towers, aggregation, adaptor, scores.
pub mod adaptor;
pub mod afclip;
pub mod checkpoint;
pub mod head;
pub mod load;
pub mod pos_embed;
pub mod random;
pub mod tensors;
pub mod text;
pub mod tokenizer;
pub mod transformer;
pub mod vision;
