//! The op interface every compute backend implements.
//!
//! Model, scoring and (later) training code are generic over [`Backend`]; the CPU backend is
//! the reference and the CUDA backend mirrors it op for op. Every buffer is a flat, row-major
//! `f32` array in the backend's memory; shapes are passed explicitly, outputs first, as in
//! llm.c. Each op documents its math and its shapes; implementations must check the lengths
//! of what they are handed and return an error (never panic) when they do not match.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod profile;

use anyhow::Result;

/// What a [`Backend::linear`] does with its product before storing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// `y = x·Wᵀ + b`
    Store,
    /// `y = quick_gelu(x·Wᵀ + b)`, `quick_gelu(v) = v·sigmoid(1.702·v)`
    QuickGelu,
    /// `y += x·Wᵀ + b` (a fused residual connection)
    Accumulate,
}

/// Where a loss op reads its predictions: columns `offset..offset + cols` of every row of a
/// row-major `[rows, stride]` buffer (e.g. the image probability, column 0, or the patch
/// probabilities, columns `1..1 + g²`, of `probs: [batch, 1 + g²]`); `n = rows·cols` elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnBlock {
    pub rows: usize,
    pub stride: usize,
    pub offset: usize,
    pub cols: usize,
}

/// Length of [`Backend::patch_alignment`]'s `state` for `batch` images of `patches` patch
/// tokens of width `e`: `batch·2·e + 2 + batch·patches`.
pub fn patch_alignment_state_len(batch: usize, patches: usize, e: usize) -> usize {
    batch * 2 * e + 2 + batch * patches
}

pub trait Backend: Send + Sync {
    /// A dense `f32` buffer in the backend's memory (owned: no borrowed data inside).
    type Buf: Send + Sync + 'static;
    /// A weight matrix in torch `Linear` layout `[out, in]`, prepared for [`Backend::linear`].
    type Mat: Send + Sync;

    /// Human-readable name, e.g. `cpu (avx512, 2 threads)`.
    fn name(&self) -> String;

    /// Waits until every op queued so far has finished. Ops of an asynchronous backend (CUDA)
    /// return once queued, so timing needs this; the CPU backend's ops finish before they return.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn upload(&self, host: &[f32]) -> Result<Self::Buf>;
    /// CLIP input normalisation (SPEC §1) on the way in: `rgb: [batch, height, width, 3]`
    /// resized RGB bytes on the host become `images: [batch, 3, height, width]`,
    /// `images[b, c, y, x] = (rgb[b, y, x, c] / 255 − mean[c]) / std[c]`, bit for bit as
    /// [`crate::data::preprocess::normalize_rgb`]. A quarter of the bytes of [`Backend::upload`]
    /// cross to the device.
    fn upload_rgb(
        &self,
        rgb: &[u8],
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<Self::Buf>;
    fn zeros(&self, len: usize) -> Result<Self::Buf>;
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    fn buf_len(&self, buf: &Self::Buf) -> usize;
    /// `w` is `[out_dim, in_dim]` row-major, kept at full precision.
    fn upload_mat(&self, w: &[f32], out_dim: usize, in_dim: usize) -> Result<Self::Mat>;
    /// A frozen CLIP tower weight: the backend may store it at its reduced GEMM precision
    /// (the CPU backend's `--precision bf16`); by default it is [`Backend::upload_mat`].
    fn upload_frozen_mat(&self, w: &[f32], out_dim: usize, in_dim: usize) -> Result<Self::Mat> {
        self.upload_mat(w, out_dim, in_dim)
    }
    /// [`Backend::upload_mat`] of a weight already in the backend's memory (a trained
    /// parameter, `w: [out_dim, in_dim]`): copied within the backend, never through the host.
    fn mat_from_buf(&self, w: &Self::Buf, out_dim: usize, in_dim: usize) -> Result<Self::Mat>;

    /// `y[rows, out] (=|+=) epilogue(x[rows, in] · Wᵀ + bias[out])`.
    fn linear(
        &self,
        y: &mut Self::Buf,
        x: &Self::Buf,
        w: &Self::Mat,
        bias: Option<&Self::Buf>,
        epilogue: Epilogue,
        rows: usize,
    ) -> Result<()>;

    /// Row-wise LayerNorm: `y[r] = (x[r] - mean) / sqrt(var + eps) * gamma + beta`, biased
    /// variance, `x, y: [rows, dim]`, `gamma, beta: [dim]`.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm(
        &self,
        y: &mut Self::Buf,
        x: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()>;

    /// Multi-head scaled dot-product attention over packed projections.
    /// `qkv: [batch, tokens, 3, heads, head_dim]` (q, then k, then v for each token, as a
    /// fused `in_proj` produces them); `out: [batch, tokens, heads, head_dim]`.
    /// `out_h = softmax(q_h k_hᵀ / sqrt(head_dim) + mask) v_h`; with `causal`, token `i`
    /// attends to tokens `0..=i` only.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        out: &mut Self::Buf,
        qkv: &Self::Buf,
        batch: usize,
        tokens: usize,
        heads: usize,
        head_dim: usize,
        causal: bool,
    ) -> Result<()>;

    /// Non-overlapping patches as rows for the patch-embedding GEMM.
    /// `images: [batch, 3, side, side]`, `cols: [batch, g*g, 3*patch*patch]` with `g = side /
    /// patch`; patch `(h, w)` is row `h*g + w` and its columns are ordered `(c, i, j)`, matching
    /// a conv weight `[d, 3, patch, patch]` flattened to `[d, 3*patch*patch]`.
    fn patch_im2col(
        &self,
        cols: &mut Self::Buf,
        images: &Self::Buf,
        batch: usize,
        side: usize,
        patch: usize,
    ) -> Result<()>;

    /// Token assembly: `x[b, 0] = cls + pos[0]`, `x[b, 1 + i] = patches[b, i] + pos[1 + i]`.
    /// `x: [batch, 1 + n_patches, dim]`, `patches: [batch, n_patches, dim]`, `cls: [dim]`,
    /// `pos: [1 + n_patches, dim]`.
    #[allow(clippy::too_many_arguments)]
    fn embed_tokens(
        &self,
        x: &mut Self::Buf,
        patches: &Self::Buf,
        cls: &Self::Buf,
        pos: &Self::Buf,
        batch: usize,
        n_patches: usize,
        dim: usize,
    ) -> Result<()>;

    /// Multi-scale spatial aggregation (SPEC §3) of one window size `r` (odd).
    /// `x, out: [batch, 1 + grid*grid, dim]`. Token 0 (CLS) is copied unchanged; patch token
    /// `(h, w)` becomes `sum_{i,j in -r/2..=r/2} k(i,j) * x[h+i, w+j]` where
    /// `k(i,j) = exp(-(i²+j²)/(2σ²)) / Σ exp(...)` over the whole `r x r` window, positions
    /// outside the grid contribute zero and the weights are not renormalised there.
    /// `r = 1` is a copy.
    #[allow(clippy::too_many_arguments)]
    fn aggregate(
        &self,
        out: &mut Self::Buf,
        x: &Self::Buf,
        batch: usize,
        grid: usize,
        dim: usize,
        window: usize,
        sigma: f32,
    ) -> Result<()>;

    /// Cosine state logits, accumulated: `logits[r, s] += <z[r]/|z[r]|, text[s]> * scale`.
    /// `z: [rows, dim]`, `text: [2, dim]` (already L2-normalised), `logits: [rows, 2]`.
    fn state_logits(
        &self,
        logits: &mut Self::Buf,
        z: &Self::Buf,
        text: &Self::Buf,
        rows: usize,
        dim: usize,
        scale: f32,
    ) -> Result<()>;

    /// `probs[r] = softmax(logits[r])[1]`, `logits: [rows, 2]`, `probs: [rows]`.
    fn abnormal_probability(
        &self,
        probs: &mut Self::Buf,
        logits: &Self::Buf,
        rows: usize,
    ) -> Result<()>;

    /// Anomaly maps (SPEC §6): bilinear upsample `patch: [batch, grid, grid]` to
    /// `maps: [batch, side, side]` (align_corners = false), then a Gaussian filter with scipy's
    /// defaults (`sigma`, truncate 4, mode "reflect": `d c b a | a b c d`).
    fn anomaly_maps(
        &self,
        maps: &mut Self::Buf,
        patch: &Self::Buf,
        batch: usize,
        grid: usize,
        side: usize,
        sigma: f32,
    ) -> Result<()>;

    /// Top-1 cosine search against one memory bank (SPEC §7), accumulated:
    /// `dist[r] += weight · (1 − max_b <q[r], bank[b]> / |q[r]|)`.
    /// `queries: [rows, dim]` as they are (normalised inside), `bank: [bank_rows, dim]` with
    /// L2-normalised rows (already in the backend's memory, reused across calls),
    /// `dist: [rows]`. A blocked product with a running maximum: at most a fixed tile of
    /// query × bank similarities exists at a time, whatever `rows` and `bank_rows`, and the same
    /// path serves a 1-image bank and one of 100k+ rows. `bank_rows ≥ 1`; a zero query row gives
    /// NaN, as torch's `q / |q|` does.
    #[allow(clippy::too_many_arguments)]
    fn nearest_cosine(
        &self,
        dist: &mut Self::Buf,
        queries: &Self::Buf,
        bank: &Self::Buf,
        rows: usize,
        bank_rows: usize,
        dim: usize,
        weight: f32,
    ) -> Result<()>;

    // ---- Training (SPEC §8): backward ops and the GEMM they are built from. ----

    /// General matrix product `c[m, n] (=|+=) op(a) · op(b)`, `dims = (m, k, n)`,
    /// `op(a): [m, k]`, `op(b): [k, n]`.
    /// `a` is stored `[m, k]` row-major, or `[k, m]` when `trans_a`; `b` is `[k, n]`, or `[n, k]`
    /// when `trans_b`. With `accumulate` the product is added to `c`.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &self,
        c: &mut Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        dims: (usize, usize, usize),
        trans_a: bool,
        trans_b: bool,
        accumulate: bool,
    ) -> Result<()>;

    /// Bias gradient: `db[j] += Σ_r dy[r, j]`, `dy: [rows, dim]`, `db: [dim]`.
    fn bias_grad(&self, db: &mut Self::Buf, dy: &Self::Buf, rows: usize, dim: usize) -> Result<()>;

    /// `y[i] = x[i]·sigmoid(1.702·x[i])`, the activation a `QuickGelu` epilogue applies.
    fn quick_gelu(&self, y: &mut Self::Buf, x: &Self::Buf, len: usize) -> Result<()>;

    /// `dx[i] = dy[i] · d/dx quick_gelu(x[i])` (`x` the pre-activation).
    fn quick_gelu_backward(
        &self,
        dx: &mut Self::Buf,
        dy: &Self::Buf,
        x: &Self::Buf,
        len: usize,
    ) -> Result<()>;

    /// Backward of [`Backend::layer_norm`] for `x, dy: [rows, dim]`, recomputing mean and
    /// variance from `x`. Every output is accumulated: `dx += ∂L/∂x` (when given),
    /// `dgamma += Σ_r dy·x̂`, `dbeta += Σ_r dy` (when given).
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_backward(
        &self,
        dx: Option<&mut Self::Buf>,
        dgamma_dbeta: Option<(&mut Self::Buf, &mut Self::Buf)>,
        dy: &Self::Buf,
        x: &Self::Buf,
        gamma: &Self::Buf,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()>;

    /// Backward of [`Backend::attention`]: `dqkv` (same layout as `qkv`, overwritten) from
    /// `dout: [batch, tokens, heads, head_dim]`, recomputing the softmax from `qkv`:
    /// `dV = Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ∘ (dP − rowsum(dP ∘ P))`, `dQ = dS K / sqrt(hd)`,
    /// `dK = dSᵀ Q / sqrt(hd)`.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        dqkv: &mut Self::Buf,
        dout: &Self::Buf,
        qkv: &Self::Buf,
        batch: usize,
        tokens: usize,
        heads: usize,
        head_dim: usize,
        causal: bool,
    ) -> Result<()>;

    /// Backward of [`Backend::state_logits`], accumulated: with `ẑ = z/|z|`,
    /// `g[r] = scale·Σ_s dlogits[r, s]·text[s]`, `dz[r] += (g[r] − <g[r], ẑ[r]>·ẑ[r]) / |z[r]|`
    /// and `dtext[s] += scale·Σ_r dlogits[r, s]·ẑ[r]`. `z, dz: [rows, dim]`,
    /// `text, dtext: [2, dim]`, `dlogits: [rows, 2]`.
    #[allow(clippy::too_many_arguments)]
    fn state_logits_backward(
        &self,
        dz: &mut Self::Buf,
        dtext: &mut Self::Buf,
        dlogits: &Self::Buf,
        z: &Self::Buf,
        text: &Self::Buf,
        rows: usize,
        dim: usize,
        scale: f32,
    ) -> Result<()>;

    /// Backward of [`Backend::abnormal_probability`]: `p = sigmoid(l1 − l0)`,
    /// `dlogits[r] = (−g, g)` with `g = dprobs[r]·p(1 − p)`; overwritten.
    fn abnormal_probability_backward(
        &self,
        dlogits: &mut Self::Buf,
        dprobs: &Self::Buf,
        logits: &Self::Buf,
        rows: usize,
    ) -> Result<()>;

    // ---- Training losses and the optimiser (SPEC §8). ----

    /// Focal loss with its gradient, `p` read through `block` (`p, dp: [rows, stride]`,
    /// `t: [rows, cols]`, `loss: [1]`): with `p_t = p·t + (1 − p)(1 − t)` (f32, as torch) and
    /// `BCE = −(t·max(ln p, −100) + (1 − t)·max(ln(1 − p), −100))`,
    /// `loss[0] = FL = (1/n)·Σ BCE·(1 − p_t)^4` (overwritten) and `dp += weight·∂FL/∂p` on the
    /// block's elements only, torch's BCE backward `(p − t)/max(p(1 − p), 1e-12)` inside.
    fn focal_loss(
        &self,
        loss: &mut Self::Buf,
        dp: &mut Self::Buf,
        p: &Self::Buf,
        t: &Self::Buf,
        block: ColumnBlock,
        weight: f32,
    ) -> Result<()>;

    /// L1 loss with its gradient, shapes as [`Backend::focal_loss`]:
    /// `loss[0] = (1/n)·Σ |p − t|`, `dp += weight·sign(p − t)/n` (0 at a tie, as torch).
    fn l1_loss(
        &self,
        loss: &mut Self::Buf,
        dp: &mut Self::Buf,
        p: &Self::Buf,
        t: &Self::Buf,
        block: ColumnBlock,
        weight: f32,
    ) -> Result<()>;

    /// Batch-pooled patch-alignment loss of one token set (SPEC §8, official form).
    /// `z: [batch, tokens, e]` (token 0 is CLS and is skipped; `ẑ` = patch row / its L2 norm),
    /// `masks: [batch, tokens − 1]`, `loss: [1]`, `state: [batch·2·e + 2 + batch·(tokens − 1)]`
    /// (written here, read by [`Backend::patch_alignment_backward`]).
    /// Label `l = −1` where `M = 0`, else `M`. Per image `sim = ẑ ẑᵀ`, `mask = l lᵀ`; the value
    /// is `max(0, mean_{mask=−1} sim − mean_{mask=+1} sim)` over all images together, 0 when
    /// no `M` is 0 anywhere, a mean over no pair being 0. Computed in closed form (no `N x N`
    /// product): with `a = Σ_{l=1} ẑ`, `n = Σ_{l=−1} ẑ` per image, `Σ_{−1} sim = 2 a·n` over
    /// `2|A||N|` pairs and `Σ_{+1} sim = a·a + n·n` over `|A|² + |N|²`.
    /// `state` holds per image `a` then `n` (`[batch, 2, e]`), then `(c₋, c₊)` =
    /// `(1/count₋, −1/count₊)` (0 for an empty count, both 0 when the value is clamped or 0),
    /// then every patch row's norm `|z|` (`[batch, tokens − 1]`).
    #[allow(clippy::too_many_arguments)]
    fn patch_alignment(
        &self,
        loss: &mut Self::Buf,
        state: &mut Self::Buf,
        z: &Self::Buf,
        masks: &Self::Buf,
        batch: usize,
        tokens: usize,
        e: usize,
    ) -> Result<()>;

    /// Backward of [`Backend::patch_alignment`], accumulated into `dz: [batch, tokens, e]`: for
    /// a patch row with `l = 1`, `g = 2·weight·(c₋·n + c₊·a)`; with `l = −1`,
    /// `g = 2·weight·(c₋·a + c₊·n)` (its image's sums); then `dz += (g − <g, ẑ>ẑ)/|z|`. Rows
    /// with any other label and CLS rows are left as they are.
    #[allow(clippy::too_many_arguments)]
    fn patch_alignment_backward(
        &self,
        dz: &mut Self::Buf,
        state: &Self::Buf,
        z: &Self::Buf,
        masks: &Self::Buf,
        batch: usize,
        tokens: usize,
        e: usize,
        weight: f32,
    ) -> Result<()>;

    /// One Adam update (SPEC §8: betas (0.5, 0.999), eps 1e-8, no weight decay) of
    /// `param, m, v, grad: [len]`, `step` = t ≥ 1 the number of this update, torch's order in
    /// f32: `m += (1 − β1)(g − m)`, `v = β2 v + (1 − β2) g²`,
    /// `param −= lr/(1 − β1^t) · m / (sqrt(v)/sqrt(1 − β2^t) + eps)`, the two bias corrections
    /// formed in f64 on the host (as torch does with Python floats).
    #[allow(clippy::too_many_arguments)]
    fn adam(
        &self,
        param: &mut Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        grad: &Self::Buf,
        len: usize,
        lr: f32,
        step: u64,
    ) -> Result<()>;
}
