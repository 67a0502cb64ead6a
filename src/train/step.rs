//! One training step (SPEC §8) on cached vision features: forward through the 12 token sets,
//! the losses, and the backward to every trainable parameter.
//!
//! ```text
//! t_n, t_a = text(P)                                   (saved activations)
//! for each layer f, window r:  c = agg_r(f),  z = adaptor(c),  S += cos(z, t)/0.07
//! p = softmax(S)[:, 1]
//! L = FL(p[0], y) + λ1·(FL(P, M) + L1(P, M)) + λ2·mean_12 Lpal(z)
//! ```
//!
//! The backward runs the chain in reverse: `dS` (shared by the 12 sets, whose logits are
//! summed), then per set `dz` (scores + alignment) → adaptor gradients and `dt`, then the text
//! tower down to `dP`. Activations of all 12 sets are kept between the two passes. With fixed
//! prompts the text features are computed once, when the model is built, and `dP = 0`.

use super::adaptor::{AdaptorActs, AdaptorGrads, AdaptorParams, TrainPost};
use super::optim::{ungroup, upload_grouped, GROUPS};
use super::params::zeros_like;
use super::text::TrainText;
use crate::backend::{patch_alignment_state_len, Backend, ColumnBlock};
use crate::model::afclip::{AGGREGATION_SIGMA, TEMPERATURE, WINDOWS};
use crate::model::checkpoint::Checkpoint;
use crate::model::head::{Head, Prompts, PROMPT_LEN};
use crate::model::text::sentence_ids;
use crate::model::tokenizer::ClipTokenizer;
use anyhow::{anyhow, ensure, Result};

/// Loss weights λ1 (patch focal + L1) and λ2 (patch alignment), SPEC §8.
pub const LAMBDA_PATCH: f64 = 1.0;
pub const LAMBDA_ALIGN: f64 = 1.0;

/// What the step trains on; the ablations switch parts off.
#[derive(Clone, Debug)]
pub struct StepOptions {
    /// Aggregation windows (SPEC §3: 1, 3, 5; `[1]` = no aggregation).
    pub windows: Vec<usize>,
    /// Weight of the patch-alignment loss (0 = the "no alignment loss" ablation).
    pub align_weight: f64,
    /// `false` = the "no adaptor" ablation: `z = ln_post(c) projᵀ`, only the prompt trains.
    pub adaptor: bool,
    /// `Fixed`: the fixed-prompt ablation; the text features are constant, only the adaptor
    /// trains. Must match the head's [`Head::prompts`].
    pub prompts: Prompts,
}

impl Default for StepOptions {
    fn default() -> Self {
        Self {
            windows: WINDOWS.to_vec(),
            align_weight: LAMBDA_ALIGN,
            adaptor: true,
            prompts: Prompts::Learned,
        }
    }
}

/// One batch: cached features and ground truth.
pub struct Batch {
    pub size: usize,
    /// One `[size, tokens, d]` array per feature layer.
    pub features: Vec<Vec<f32>>,
    /// `[size]`: 1 anomalous, 0 normal.
    pub labels: Vec<f32>,
    /// `[size, g²]`: downsampled, binarised masks (SPEC §8).
    pub masks: Vec<f32>,
}

/// The loss and its terms (the patch terms before λ1, the alignment term before λ2).
#[derive(Clone, Copy, Debug, Default)]
pub struct Losses {
    pub total: f64,
    pub image_focal: f64,
    pub patch_focal: f64,
    pub patch_l1: f64,
    pub alignment: f64,
}

pub struct StepOutput {
    pub losses: Losses,
    /// `∂L/∂θ` for every trainable tensor, shaped like the head.
    pub grads: Head,
}

/// The frozen parts of the model a step needs.
pub struct TrainModel<B: Backend> {
    be: B,
    text: TextSide<B>,
    post: TrainPost<B>,
    width: usize,
    grid: usize,
    opts: StepOptions,
}

/// The text tower with the learnable prompt, or the constant `[2, e]` features of fixed prompts.
enum TextSide<B: Backend> {
    Learned(TrainText<B>),
    Fixed(Vec<f32>),
}

/// A token set's projected tokens, with the adaptor's activations when it is used.
enum SetZ<B: Backend> {
    Adaptor(AdaptorActs<B>),
    Direct(B::Buf),
}

impl<B: Backend> SetZ<B> {
    fn z(&self) -> &B::Buf {
        match self {
            SetZ::Adaptor(acts) => &acts.z,
            SetZ::Direct(z) => z,
        }
    }
}

struct SetState<B: Backend> {
    c: Option<B::Buf>,
    acts: SetZ<B>,
    /// `(loss, state)` of [`Backend::patch_alignment`].
    alignment: Option<(B::Buf, B::Buf)>,
}

impl<B: Backend> TrainModel<B> {
    pub fn new(
        be: B,
        ckpt: &Checkpoint,
        tokenizer: &ClipTokenizer,
        image_size: usize,
        opts: StepOptions,
    ) -> Result<Self> {
        let cfg = &ckpt.config;
        ensure!(
            image_size > 0 && image_size.is_multiple_of(cfg.patch),
            "image size {image_size} is not a positive multiple of the model's patch size {}",
            cfg.patch
        );
        ensure!(
            !opts.windows.is_empty() && opts.windows.iter().all(|w| w % 2 == 1),
            "aggregation windows {:?} must be odd and at least one",
            opts.windows
        );
        ensure!(
            opts.adaptor || opts.prompts == Prompts::Learned,
            "fixed prompts without the adaptor leave nothing to train (that is the untrained \
             Table 4 \"Base\" row: evaluate it with `eval --init-seed 0 --fixed-prompts \
             --no-adaptor`)"
        );
        let ids = sentence_ids(tokenizer, opts.prompts)?;
        let text = match opts.prompts {
            Prompts::Learned => {
                TextSide::Learned(TrainText::new(&be, cfg, &ckpt.text, &ids, PROMPT_LEN)?)
            }
            Prompts::Fixed => TextSide::Fixed(
                TrainText::new(&be, cfg, &ckpt.text, &ids, 0)?
                    .forward(&be, &[])?
                    .features,
            ),
        };
        Ok(Self {
            text,
            post: TrainPost::upload(&be, &ckpt.vision, cfg.vision_width, cfg.embed_dim)?,
            width: cfg.vision_width,
            grid: image_size / cfg.patch,
            opts,
            be,
        })
    }

    pub fn backend(&self) -> &B {
        &self.be
    }
    pub fn grid(&self) -> usize {
        self.grid
    }
    pub fn options(&self) -> &StepOptions {
        &self.opts
    }

    /// Whether `head` is one this model trains (its prompt kind).
    pub fn check_head(&self, head: &Head) -> Result<()> {
        ensure!(
            head.prompts == self.opts.prompts,
            "training step: the head uses {:?} prompts but the model was built for {:?} prompts",
            head.prompts,
            self.opts.prompts
        );
        Ok(())
    }

    /// Loss and gradients of `head` on `batch`, on the host.
    pub fn step(&self, head: &Head, batch: &Batch) -> Result<StepOutput> {
        self.check_head(head)?;
        let params = upload_grouped(&self.be, head)?;
        let (losses, grads) = self.step_grads(&params, batch)?;
        let host: Vec<Vec<f32>> = grads
            .iter()
            .map(|g| self.be.download(g))
            .collect::<Result<_>>()?;
        let host: [Vec<f32>; GROUPS] = host
            .try_into()
            .map_err(|_| anyhow!("training step: expected {GROUPS} gradient tensors"))?;
        let mut out = zeros_like(head);
        ungroup(&mut out, host)?;
        Ok(StepOutput { losses, grads: out })
    }

    /// [`TrainModel::step`] on parameters in the backend's memory (those of a
    /// [`super::optim::DeviceAdam`]), in [`super::optim::grouped`] order, with the gradients
    /// left there in the same order. Downloaded: the loss terms, and with learned prompts the
    /// prompt (`[12, t]`, the text tower's input on the host).
    pub fn step_grads(&self, params: &[B::Buf], batch: &Batch) -> Result<(Losses, Vec<B::Buf>)> {
        let be = &self.be;
        let (bsz, d, g2) = (batch.size, self.width, self.grid * self.grid);
        let e = self.post.embed();
        let tokens = 1 + g2;
        let rows = bsz * tokens;
        ensure!(
            bsz > 0 && batch.labels.len() == bsz && batch.masks.len() == bsz * g2,
            "training batch: {bsz} images with {} labels and {} mask values (expected {} each)",
            batch.labels.len(),
            batch.masks.len(),
            g2
        );
        for (i, f) in batch.features.iter().enumerate() {
            ensure!(
                f.len() == rows * d,
                "training batch: features of layer {i} hold {} values, expected [{bsz}, {tokens}, {d}]",
                f.len()
            );
        }
        ensure!(
            params.len() == GROUPS,
            "training step: {} parameter tensors, expected {GROUPS}",
            params.len()
        );
        let (prompt, adaptor) = params.split_at(1);
        let (text_acts, text) = match &self.text {
            TextSide::Learned(tower) => {
                let acts = tower.forward(be, &be.download(&prompt[0])?)?;
                let text = be.upload(&acts.features)?;
                (Some(acts), text)
            }
            TextSide::Fixed(features) => (None, be.upload(features)?),
        };
        let params = if self.opts.adaptor {
            Some(AdaptorParams::new(be, adaptor, d)?)
        } else {
            None
        };
        let n_sets = batch.features.len() * self.opts.windows.len();
        let align = self.opts.align_weight;

        let masks = be.upload(&batch.masks)?;

        // Forward: every set's activations, the summed logits, the alignment terms.
        let mut logits = be.zeros(rows * 2)?;
        let mut sets: Vec<SetState<B>> = Vec::with_capacity(n_sets);
        let mut alignment = 0.0;
        let layer_bufs: Vec<B::Buf> = batch
            .features
            .iter()
            .map(|f| be.upload(f))
            .collect::<Result<_>>()?;
        for f in &layer_bufs {
            for &r in &self.opts.windows {
                let c = if r == 1 {
                    None
                } else {
                    let mut c = be.zeros(rows * d)?;
                    be.aggregate(&mut c, f, bsz, self.grid, d, r, AGGREGATION_SIGMA)?;
                    Some(c)
                };
                let input = c.as_ref().unwrap_or(f);
                let acts = match &params {
                    Some(p) => SetZ::Adaptor(p.forward(be, &self.post, input, bsz, tokens)?),
                    None => SetZ::Direct(self.post.forward(be, input, rows)?),
                };
                be.state_logits(&mut logits, acts.z(), &text, rows, e, 1.0 / TEMPERATURE)?;
                let alignment_terms = if align != 0.0 {
                    let mut loss = be.zeros(1)?;
                    let mut state = be.zeros(patch_alignment_state_len(bsz, g2, e))?;
                    be.patch_alignment(&mut loss, &mut state, acts.z(), &masks, bsz, tokens, e)?;
                    Some((loss, state))
                } else {
                    None
                };
                sets.push(SetState {
                    c,
                    acts,
                    alignment: alignment_terms,
                });
            }
        }
        let mut probs = be.zeros(rows)?;
        be.abnormal_probability(&mut probs, &logits, rows)?;

        // Losses and ∂L/∂p: the image probability is column 0 of `probs: [batch, tokens]`,
        // the patch probabilities columns 1..tokens.
        let image = ColumnBlock {
            rows: bsz,
            stride: tokens,
            offset: 0,
            cols: 1,
        };
        let patch = ColumnBlock {
            offset: 1,
            cols: g2,
            ..image
        };
        let labels = be.upload(&batch.labels)?;
        let mut dprobs = be.zeros(rows)?;
        let mut terms: Vec<B::Buf> = (0..3).map(|_| be.zeros(1)).collect::<Result<_>>()?;
        be.focal_loss(&mut terms[0], &mut dprobs, &probs, &labels, image, 1.0)?;
        let lambda = LAMBDA_PATCH as f32;
        be.focal_loss(&mut terms[1], &mut dprobs, &probs, &masks, patch, lambda)?;
        be.l1_loss(&mut terms[2], &mut dprobs, &probs, &masks, patch, lambda)?;
        let scalar = |b: &B::Buf| -> Result<f64> { Ok(f64::from(be.download(b)?[0])) };
        let [fl_image, fl_patch, l1] = [scalar(&terms[0])?, scalar(&terms[1])?, scalar(&terms[2])?];
        for (loss, _) in sets.iter().filter_map(|s| s.alignment.as_ref()) {
            alignment += scalar(loss)? / n_sets as f64;
        }
        let losses = Losses {
            total: fl_image + LAMBDA_PATCH * (fl_patch + l1) + align * alignment,
            image_focal: fl_image,
            patch_focal: fl_patch,
            patch_l1: l1,
            alignment,
        };
        let mut dlogits = be.zeros(rows * 2)?;
        be.abnormal_probability_backward(&mut dlogits, &dprobs, &logits, rows)?;

        // Backward through every set, then the text tower.
        let mut grads = AdaptorGrads::zeros(be, d)?;
        let mut dtext = be.zeros(2 * e)?;
        let set_layers = self.opts.windows.len();
        for (k, set) in sets.iter().enumerate() {
            let mut dz = be.zeros(rows * e)?;
            if let Some((_, state)) = &set.alignment {
                let weight = (align / n_sets as f64) as f32;
                be.patch_alignment_backward(
                    &mut dz,
                    state,
                    set.acts.z(),
                    &masks,
                    bsz,
                    tokens,
                    e,
                    weight,
                )?;
            }
            be.state_logits_backward(
                &mut dz,
                &mut dtext,
                &dlogits,
                set.acts.z(),
                &text,
                rows,
                e,
                1.0 / TEMPERATURE,
            )?;
            if let (SetZ::Adaptor(acts), Some(params)) = (&set.acts, &params) {
                let f = &layer_bufs[k / set_layers];
                let c = set.c.as_ref().unwrap_or(f);
                params.backward(be, &self.post, acts, c, &dz, bsz, tokens, &mut grads)?;
            }
        }
        let dprompt = match (&self.text, &text_acts) {
            (TextSide::Learned(tower), Some(acts)) => {
                be.upload(&tower.backward(be, acts, &be.download(&dtext)?)?)?
            }
            _ => be.zeros(be.buf_len(&prompt[0]))?,
        };
        let grads = vec![
            dprompt,
            grads.norm_w,
            grads.norm_b,
            grads.qkv,
            grads.out,
            grads.out_b,
        ];
        Ok((losses, grads))
    }
}
