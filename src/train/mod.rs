//! Training the prompt and the adaptor (SPEC §8) with CLIP frozen: losses, Adam, the vision
//! feature cache, one step (forward + hand-written backward through the adaptor, the scores and
//! the text tower) and the epoch loop with checkpoints.

pub mod adaptor;
pub mod features;
pub mod losses;
pub mod optim;
pub mod params;
pub mod step;
pub mod text;
pub mod trainer;
