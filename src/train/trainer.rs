//! The epoch loop (SPEC §8): batches in dataset order or shuffled per epoch with afclip's own
//! PRNG (`seed + epoch`, so a resumed run draws the same orders), one step and one Adam update
//! per batch, the last partial batch kept (torch's `drop_last=False`), a running-loss progress
//! line, and after every epoch the head (`out`) plus a resume checkpoint
//! (`<out>.ckpt.safetensors`: head, Adam moments, progress). Deterministic on the CPU for a
//! seed.

use super::features::FeatureCache;
use super::optim::{Adam, DeviceAdam};
use super::params::{tensors, tensors_mut, NAMES};
use super::step::{Losses, TrainModel};
use crate::backend::Backend;
use crate::model::checkpoint::ClipConfig;
use crate::model::head::{Head, Prompts, PROMPTS_KEY};
use crate::model::tensors::{write_f32_with_metadata, TensorFile};
use crate::rng::Rng;
use anyhow::{bail, ensure, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub seed: u64,
    /// Stop after this many steps in all (the head is written then).
    pub max_steps: Option<usize>,
    pub shuffle: bool,
    /// The head file written after every epoch and at the end.
    pub out: PathBuf,
    /// Continue from `<out>.ckpt.safetensors` when it exists.
    pub resume: bool,
    /// Print the progress line.
    pub progress: bool,
}

/// What one epoch did.
#[derive(Clone, Debug)]
pub struct EpochReport {
    pub epoch: usize,
    pub steps: usize,
    pub mean: Losses,
    pub seconds: f64,
    /// Images whose vision features were computed during this epoch (0 once all are cached).
    pub features_computed: usize,
}

/// The resume checkpoint next to `out`.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    let mut name = out.file_stem().unwrap_or_default().to_os_string();
    name.push(".ckpt.safetensors");
    out.with_file_name(name)
}

const STATE: &str = "train.state";

fn save_checkpoint(path: &Path, head: &Head, adam: &Adam, epochs_done: usize) -> Result<()> {
    let state = [epochs_done as f32, adam.step as f32];
    let shapes = head_shapes(head);
    let mut list: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
    for (prefix, h) in [("", head), ("adam.m.", &adam.m), ("adam.v.", &adam.v)] {
        for ((name, t), shape) in NAMES.iter().zip(tensors(h)).zip(&shapes) {
            list.push((format!("{prefix}{name}"), shape.clone(), t));
        }
    }
    list.push((STATE.into(), vec![2], &state));
    write_f32_with_metadata(path, &list, &[(PROMPTS_KEY, head.prompts.name())])
}

fn head_shapes(h: &Head) -> Vec<Vec<usize>> {
    tensors(h).iter().map(|t| vec![t.len()]).collect()
}

/// `(head, adam, epochs done)` from a checkpoint, the head with the prompt kind it records.
fn load_checkpoint(path: &Path, cfg: &ClipConfig, lr: f32) -> Result<(Head, Adam, usize)> {
    let file = TensorFile::open(path)?;
    let mut head = Head {
        prompts: Prompts::recorded_in(&file, path)?,
        ..Head::init(cfg, 0)
    };
    let mut adam = Adam::new(lr, &head);
    for (prefix, h) in [
        ("", &mut head),
        ("adam.m.", &mut adam.m),
        ("adam.v.", &mut adam.v),
    ] {
        for (name, t) in NAMES.iter().zip(tensors_mut(h)) {
            *t = file
                .read(&format!("{prefix}{name}"), &[t.len()])
                .with_context(|| format!("resume checkpoint {}", path.display()))?;
        }
    }
    let state = file.read(STATE, &[2])?;
    adam.step = state[1] as u64;
    Ok((head, adam, state[0] as usize))
}

/// Batches of one epoch: dataset order, or a Fisher–Yates shuffle seeded by `seed + epoch`.
pub fn epoch_order(n: usize, epoch: usize, seed: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = Rng::new(seed.wrapping_add(epoch as u64));
        for i in (1..n).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
    }
    order
}

fn add(acc: &mut Losses, l: &Losses, w: f64) {
    acc.total += w * l.total;
    acc.image_focal += w * l.image_focal;
    acc.patch_focal += w * l.patch_focal;
    acc.patch_l1 += w * l.patch_l1;
    acc.alignment += w * l.alignment;
}

/// Trains `head` in place; returns one report per epoch run.
pub fn train<B: Backend>(
    model: &TrainModel<B>,
    cache: &mut FeatureCache<B>,
    head: &mut Head,
    clip: &ClipConfig,
    cfg: &TrainConfig,
) -> Result<Vec<EpochReport>> {
    ensure!(cfg.batch_size > 0, "batch size must be at least 1");
    ensure!(!cache.is_empty(), "no training images");
    let ckpt = checkpoint_path(&cfg.out);
    let (mut adam, first_epoch) = if cfg.resume && ckpt.is_file() {
        let (h, adam, done) = load_checkpoint(&ckpt, clip, cfg.lr)?;
        if h.prompts != head.prompts {
            bail!(
                "{}: this run was started with {} prompts; resuming it with {} prompts would \
                 mix the two (drop or add --fixed-prompts, or start afresh without --resume)",
                ckpt.display(),
                h.prompts.name(),
                head.prompts.name()
            );
        }
        *head = h;
        eprintln!(
            "resuming from {} after epoch {done} (step {})",
            ckpt.display(),
            adam.step
        );
        (adam, done)
    } else {
        if cfg.resume {
            eprintln!("no checkpoint {} yet: starting fresh", ckpt.display());
        }
        (Adam::new(cfg.lr, head), 0)
    };
    adam.lr = cfg.lr;
    model.check_head(head)?;
    let be = model.backend();
    // Parameters and moments live in the backend's memory, where the step reads them; `head`
    // is refreshed from there only when it is written.
    let mut state = DeviceAdam::upload(be, head, &adam)?;
    let n = cache.len();
    let per_epoch = n.div_ceil(cfg.batch_size);
    let mut reports = Vec::new();
    let mut steps_done = state.step as usize;
    for epoch in first_epoch..cfg.epochs {
        if cfg.max_steps.is_some_and(|m| steps_done >= m) {
            break;
        }
        let start = Instant::now();
        let before = cache.computed;
        let order = epoch_order(n, epoch, cfg.seed, cfg.shuffle);
        let mut sum = Losses::default();
        let mut steps = 0;
        for (b, idx) in order.chunks(cfg.batch_size).enumerate() {
            if cfg.max_steps.is_some_and(|m| steps_done >= m) {
                break;
            }
            let batch = cache.batch(be, idx)?;
            let (losses, grads) = model.step_grads(state.params(), &batch)?;
            if !losses.total.is_finite() {
                bail!(
                    "epoch {}, step {}: the loss is not finite ({:?})",
                    epoch + 1,
                    b + 1,
                    losses
                );
            }
            state.update(be, &grads)?;
            add(&mut sum, &losses, 1.0);
            steps += 1;
            steps_done += 1;
            if cfg.progress {
                let done = (b + 1) * 30 / per_epoch;
                eprint!(
                    "\repoch {}/{} [{}{}] step {}/{} loss {:.4} (mean {:.4})",
                    epoch + 1,
                    cfg.epochs,
                    "#".repeat(done),
                    ".".repeat(30 - done),
                    b + 1,
                    per_epoch,
                    losses.total,
                    sum.total / steps as f64
                );
                let _ = std::io::stderr().flush();
            }
        }
        if cfg.progress {
            eprintln!();
        }
        let mut mean = Losses::default();
        add(&mut mean, &sum, 1.0 / steps.max(1) as f64);
        reports.push(EpochReport {
            epoch: epoch + 1,
            steps,
            mean,
            seconds: start.elapsed().as_secs_f64(),
            features_computed: cache.computed - before,
        });
        state.download_params(be, head)?;
        head.save(&cfg.out)?;
        if steps == per_epoch {
            save_checkpoint(&ckpt, head, &state.download_state(be, head)?, epoch + 1)?;
        }
    }
    state.download_params(be, head)?;
    head.save(&cfg.out)?;
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations_deterministic_per_seed_and_epoch() {
        let a = epoch_order(50, 0, 7, true);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(50, 0, 7, true));
        assert_ne!(a, epoch_order(50, 1, 7, true));
        assert_ne!(a, epoch_order(50, 0, 8, true));
        assert_eq!(epoch_order(5, 3, 7, false), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn checkpoint_path_sits_next_to_the_head() {
        assert_eq!(
            checkpoint_path(Path::new("/x/head.safetensors")),
            Path::new("/x/head.ckpt.safetensors")
        );
    }
}
