//! The AF-CLIP model: CLIP weights, vision and text towers, aggregation, adaptor, scores.
