//! Training the prompt and the adaptor (SPEC §8) with CLIP frozen: losses, Adam, one step
//! (forward + hand-written backward through the adaptor, the scores and the text tower).

pub mod adaptor;
pub mod losses;
pub mod optim;
pub mod params;
pub mod step;
pub mod text;
