//! The CPU backend: the reference implementation of every op, and fast (rayon + gemm).
//!
//! Buffers are plain `Vec<f32>`; weight matrices are stored transposed (`[in, out]`, see
//! [`gemm`]), or, at [`Precision::Bf16`], packed into bf16 panels (see [`gemm_bf16`]). Every op runs inside the backend's own rayon pool, so the thread count given to
//! [`CpuBackend::new`] bounds all of its parallelism (including the gemm crate's). One file per
//! op family, each opening with the math and the shapes it implements.

pub(crate) mod adam;
pub(crate) mod aggregate;
mod attention;
mod backward;
mod gemm;
mod gemm_bf16;
pub(crate) mod loss;
pub(crate) mod maps;
mod norm;
mod patch;
mod score;
mod search;
mod vector;

use anyhow::{anyhow, ensure, Context, Result};

use super::{Backend, ColumnBlock, Epilogue};
use gemm::CpuMat as F32Mat;
use gemm_bf16::Bf16Mat;

/// The arithmetic of the CPU backend's `linear` (weights and activations of every GEMM).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 throughout: the reference.
    #[default]
    F32,
    /// Weights and activations rounded to bf16 (nearest even), products summed in f32, on
    /// AVX-512 BF16; CPUs without it run [`Precision::F32`] instead.
    Bf16,
}

impl Precision {
    /// The precision `linear` runs at when `self` is requested on a CPU with (`bf16_cpu`) or
    /// without AVX-512 BF16.
    pub fn resolve(self, bf16_cpu: bool) -> Self {
        if bf16_cpu {
            self
        } else {
            Self::F32
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            _ => Err(anyhow!("unknown precision `{s}` (expected f32 or bf16)")),
        }
    }
}

/// A weight matrix prepared for [`Backend::linear`] at the backend's precision.
pub struct CpuMat(MatData);

enum MatData {
    F32(F32Mat),
    Bf16(Bf16Mat),
}

pub struct CpuBackend {
    pool: rayon::ThreadPool,
    requested: Precision,
    precision: Precision,
}

impl CpuBackend {
    /// A backend with its own pool of `threads` workers (default: every available core), at
    /// [`Precision::F32`].
    pub fn new(threads: Option<usize>) -> Result<Self> {
        Self::with_precision(threads, Precision::F32)
    }

    /// [`CpuBackend::new`] whose `linear` runs at `precision` where the CPU supports it (see
    /// [`Precision::resolve`]; [`CpuBackend::precision`] tells which).
    pub fn with_precision(threads: Option<usize>, precision: Precision) -> Result<Self> {
        let threads = match threads {
            Some(0) => return Err(anyhow!("cpu backend: thread count must be at least 1")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("afclip-cpu-{i}"))
            .build()
            .context("cpu backend: building the rayon pool")?;
        Ok(Self {
            pool,
            requested: precision,
            precision: precision.resolve(gemm_bf16::available()),
        })
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The precision `linear` runs at.
    pub fn precision(&self) -> Precision {
        self.precision
    }
}

/// Checks that buffer `name` of `op` holds exactly `dims.iter().product()` elements.
pub(crate) fn check_len(op: &str, name: &str, got: usize, dims: &[usize]) -> Result<()> {
    let want = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| anyhow!("{op}: shape {dims:?} of `{name}` overflows usize"))?;
    ensure!(
        got == want,
        "{op}: `{name}` has {got} elements, expected {dims:?} = {want}"
    );
    Ok(())
}

/// A raw output pointer shared by parallel tasks that write disjoint elements of one buffer
/// (strided tiles that safe slice splitting cannot express).
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(*mut f32);

// SAFETY: every user hands each task a disjoint set of elements, and the buffer outlives the
// parallel region (rayon joins before the borrow ends).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub(crate) fn new(buf: &mut [f32]) -> Self {
        Self(buf.as_mut_ptr())
    }

    /// The same buffer seen from `offset` elements further on.
    pub(crate) fn offset(self, offset: usize) -> Self {
        Self(self.0.wrapping_add(offset))
    }

    /// The pointer, offset by `offset` elements. A method (not field access) so that closures
    /// capture the whole `Send` wrapper.
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Mat = CpuMat;

    fn name(&self) -> String {
        let precision = match (self.requested, self.precision) {
            (Precision::F32, _) => "",
            (Precision::Bf16, Precision::Bf16) => ", bf16",
            (Precision::Bf16, Precision::F32) => ", f32: no avx512bf16 for bf16",
        };
        format!(
            "cpu ({}, {} threads{precision})",
            vector::isa_name(),
            self.threads()
        )
    }

    fn upload(&self, host: &[f32]) -> Result<Vec<f32>> {
        Ok(host.to_vec())
    }

    fn upload_rgb(
        &self,
        rgb: &[u8],
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<Vec<f32>> {
        let mut images = vec![0f32; rgb.len()];
        crate::data::preprocess::normalize_rgb(&mut images, rgb, batch, height, width)?;
        Ok(images)
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(buf.clone())
    }

    fn buf_len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn upload_mat(&self, w: &[f32], out_dim: usize, in_dim: usize) -> Result<CpuMat> {
        self.pool
            .install(|| Ok(CpuMat(MatData::F32(F32Mat::new(w, out_dim, in_dim)?))))
    }

    fn mat_from_buf(&self, w: &Vec<f32>, out_dim: usize, in_dim: usize) -> Result<CpuMat> {
        self.upload_mat(w, out_dim, in_dim)
    }

    fn upload_frozen_mat(&self, w: &[f32], out_dim: usize, in_dim: usize) -> Result<CpuMat> {
        self.pool.install(|| {
            Ok(CpuMat(match self.precision {
                Precision::F32 => MatData::F32(F32Mat::new(w, out_dim, in_dim)?),
                Precision::Bf16 => MatData::Bf16(Bf16Mat::new(w, out_dim, in_dim)?),
            }))
        })
    }

    fn linear(
        &self,
        y: &mut Vec<f32>,
        x: &Vec<f32>,
        w: &CpuMat,
        bias: Option<&Vec<f32>>,
        epilogue: Epilogue,
        rows: usize,
    ) -> Result<()> {
        let bias = bias.map(|b| b.as_slice());
        self.pool.install(|| match &w.0 {
            MatData::F32(w) => gemm::linear(y, x, w, bias, epilogue, rows),
            MatData::Bf16(w) => gemm_bf16::linear(y, x, w, bias, epilogue, rows),
        })
    }

    fn layer_norm(
        &self,
        y: &mut Vec<f32>,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        self.pool
            .install(|| norm::layer_norm(y, x, gamma, beta, rows, dim, eps))
    }

    fn attention(
        &self,
        out: &mut Vec<f32>,
        qkv: &Vec<f32>,
        batch: usize,
        tokens: usize,
        heads: usize,
        head_dim: usize,
        causal: bool,
    ) -> Result<()> {
        self.pool
            .install(|| attention::attention(out, qkv, batch, tokens, heads, head_dim, causal))
    }

    fn patch_im2col(
        &self,
        cols: &mut Vec<f32>,
        images: &Vec<f32>,
        batch: usize,
        side: usize,
        patch: usize,
    ) -> Result<()> {
        self.pool
            .install(|| patch::patch_im2col(cols, images, batch, side, patch))
    }

    fn embed_tokens(
        &self,
        x: &mut Vec<f32>,
        patches: &Vec<f32>,
        cls: &Vec<f32>,
        pos: &Vec<f32>,
        batch: usize,
        n_patches: usize,
        dim: usize,
    ) -> Result<()> {
        self.pool
            .install(|| patch::embed_tokens(x, patches, cls, pos, batch, n_patches, dim))
    }

    fn aggregate(
        &self,
        out: &mut Vec<f32>,
        x: &Vec<f32>,
        batch: usize,
        grid: usize,
        dim: usize,
        window: usize,
        sigma: f32,
    ) -> Result<()> {
        self.pool
            .install(|| aggregate::aggregate(out, x, batch, grid, dim, window, sigma))
    }

    fn state_logits(
        &self,
        logits: &mut Vec<f32>,
        z: &Vec<f32>,
        text: &Vec<f32>,
        rows: usize,
        dim: usize,
        scale: f32,
    ) -> Result<()> {
        self.pool
            .install(|| score::state_logits(logits, z, text, rows, dim, scale))
    }

    fn abnormal_probability(
        &self,
        probs: &mut Vec<f32>,
        logits: &Vec<f32>,
        rows: usize,
    ) -> Result<()> {
        self.pool
            .install(|| score::abnormal_probability(probs, logits, rows))
    }

    fn anomaly_maps(
        &self,
        maps: &mut Vec<f32>,
        patch: &Vec<f32>,
        batch: usize,
        grid: usize,
        side: usize,
        sigma: f32,
    ) -> Result<()> {
        self.pool
            .install(|| maps::anomaly_maps(maps, patch, batch, grid, side, sigma))
    }
    fn nearest_cosine(
        &self,
        dist: &mut Vec<f32>,
        queries: &Vec<f32>,
        bank: &Vec<f32>,
        rows: usize,
        bank_rows: usize,
        dim: usize,
        weight: f32,
    ) -> Result<()> {
        self.pool
            .install(|| search::nearest_cosine(dist, queries, bank, rows, bank_rows, dim, weight))
    }

    fn matmul(
        &self,
        c: &mut Vec<f32>,
        a: &Vec<f32>,
        b: &Vec<f32>,
        dims: (usize, usize, usize),
        trans_a: bool,
        trans_b: bool,
        accumulate: bool,
    ) -> Result<()> {
        self.pool
            .install(|| backward::matmul::matmul(c, a, b, dims, trans_a, trans_b, accumulate))
    }

    fn bias_grad(&self, db: &mut Vec<f32>, dy: &Vec<f32>, rows: usize, dim: usize) -> Result<()> {
        self.pool
            .install(|| backward::elementwise::bias_grad(db, dy, rows, dim))
    }

    fn quick_gelu(&self, y: &mut Vec<f32>, x: &Vec<f32>, len: usize) -> Result<()> {
        self.pool
            .install(|| backward::elementwise::quick_gelu(y, x, len))
    }

    fn quick_gelu_backward(
        &self,
        dx: &mut Vec<f32>,
        dy: &Vec<f32>,
        x: &Vec<f32>,
        len: usize,
    ) -> Result<()> {
        self.pool
            .install(|| backward::elementwise::quick_gelu_backward(dx, dy, x, len))
    }

    fn layer_norm_backward(
        &self,
        dx: Option<&mut Vec<f32>>,
        dgamma_dbeta: Option<(&mut Vec<f32>, &mut Vec<f32>)>,
        dy: &Vec<f32>,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        let dx = dx.map(|d| d.as_mut_slice());
        let dp = dgamma_dbeta.map(|(g, b)| (g.as_mut_slice(), b.as_mut_slice()));
        self.pool
            .install(|| backward::norm::layer_norm_backward(dx, dp, dy, x, gamma, rows, dim, eps))
    }

    fn attention_backward(
        &self,
        dqkv: &mut Vec<f32>,
        dout: &Vec<f32>,
        qkv: &Vec<f32>,
        batch: usize,
        tokens: usize,
        heads: usize,
        head_dim: usize,
        causal: bool,
    ) -> Result<()> {
        self.pool.install(|| {
            backward::attention::attention_backward(
                dqkv, dout, qkv, batch, tokens, heads, head_dim, causal,
            )
        })
    }

    fn state_logits_backward(
        &self,
        dz: &mut Vec<f32>,
        dtext: &mut Vec<f32>,
        dlogits: &Vec<f32>,
        z: &Vec<f32>,
        text: &Vec<f32>,
        rows: usize,
        dim: usize,
        scale: f32,
    ) -> Result<()> {
        self.pool.install(|| {
            backward::score::state_logits_backward(dz, dtext, dlogits, z, text, rows, dim, scale)
        })
    }

    fn abnormal_probability_backward(
        &self,
        dlogits: &mut Vec<f32>,
        dprobs: &Vec<f32>,
        logits: &Vec<f32>,
        rows: usize,
    ) -> Result<()> {
        self.pool.install(|| {
            backward::score::abnormal_probability_backward(dlogits, dprobs, logits, rows)
        })
    }

    fn focal_loss(
        &self,
        loss: &mut Vec<f32>,
        dp: &mut Vec<f32>,
        p: &Vec<f32>,
        t: &Vec<f32>,
        block: ColumnBlock,
        weight: f32,
    ) -> Result<()> {
        loss::focal_loss(loss, dp, p, t, block, weight)
    }

    fn l1_loss(
        &self,
        loss: &mut Vec<f32>,
        dp: &mut Vec<f32>,
        p: &Vec<f32>,
        t: &Vec<f32>,
        block: ColumnBlock,
        weight: f32,
    ) -> Result<()> {
        loss::l1_loss(loss, dp, p, t, block, weight)
    }

    fn patch_alignment(
        &self,
        loss: &mut Vec<f32>,
        state: &mut Vec<f32>,
        z: &Vec<f32>,
        masks: &Vec<f32>,
        batch: usize,
        tokens: usize,
        e: usize,
    ) -> Result<()> {
        loss::patch_alignment(loss, state, z, masks, batch, tokens, e)
    }

    fn patch_alignment_backward(
        &self,
        dz: &mut Vec<f32>,
        state: &Vec<f32>,
        z: &Vec<f32>,
        masks: &Vec<f32>,
        batch: usize,
        tokens: usize,
        e: usize,
        weight: f32,
    ) -> Result<()> {
        loss::patch_alignment_backward(dz, state, z, masks, batch, tokens, e, weight)
    }

    fn adam(
        &self,
        param: &mut Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        grad: &Vec<f32>,
        len: usize,
        lr: f32,
        step: u64,
    ) -> Result<()> {
        adam::adam(param, m, v, grad, len, lr, step)
    }
}
