//! Input side: finding images, decoding, Pillow-exact resizing, normalisation.
pub mod cache;
pub mod decode;
pub mod inputs;
pub mod layouts;
pub mod npy;
pub mod pipeline;
pub mod preprocess;
pub mod resize;
pub mod synth;
