//! Few-shot AF-CLIP+ (SPEC §7): memory banks of raw aggregated patch features of a few normal
//! reference images ([`bank`]), the scorer that adds the top-1 cosine distance to the zero-shot
//! score ([`scorer`], searching with the backend's `nearest_cosine`), the K-shot sampling
//! protocol ([`protocol`]) and its multi-run evaluation and report ([`eval`], [`report`]).

pub mod bank;
pub mod eval;
pub mod fingerprint;
pub mod protocol;
pub mod report;
pub mod scorer;
