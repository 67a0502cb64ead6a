//! The CUDA backend: every [`Backend`] op on one GPU, through cudarc with dynamic loading (the
//! binary starts without CUDA; [`probe`] says whether a driver and a GPU are there).
//!
//! One context, one compute stream, the kernel modules loaded once ([`modules`]), one cuBLAS
//! handle for `linear` ([`gemm`]); a second stream only copies inputs in, through pinned host
//! memory ([`pinned`]), and cudarc's per-buffer event tracking is off: every cross-stream
//! dependency is an explicit event, all of them in [`pinned`].
//! Buffers are f32 device arrays, like the CPU backend's. `linear`
//! with a frozen tower weight (`upload_frozen_mat`) runs in bf16 with f32 accumulation
//! ([`Precision::Bf16`], the default) or in f32; trainable weights (`upload_mat`) stay f32.
//! `attention` with head dim 64 follows the same precision ([`attention`]). Ops are
//! queued on the stream and return before the GPU finishes; `download` waits. Each launcher
//! checks every length before its launch; the kernels' math and shapes are in the headers of
//! `kernels/*.cu`, and each kernel's CPU twin has the same name in `src/backend/cpu/`.

mod gemm;
mod lt;
mod modules;
mod pinned;
mod preprocess;

/// Rust mirrors of `kernels/params.h` (bindgen, or the committed `params.rs`; see build.rs).
#[allow(non_camel_case_types, non_snake_case, clippy::all)]
mod ffi {
    include!(concat!(env!("OUT_DIR"), "/params.rs"));
}

pub use gemm::Precision;

use super::cpu::check_len;
use super::{Backend, ColumnBlock, Epilogue};
use crate::backend::cpu::aggregate::window_kernel;
use crate::backend::cpu::maps::{gaussian_half_kernel, MIN_SIGMA};
use anyhow::{anyhow, bail, ensure, Context, Result};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};
use ffi::*;
use modules::Kernels;
use std::sync::{Arc, Mutex};

// SAFETY: plain C structs of int/long long/float fields (`kernels/params.h`), passed by value.
unsafe impl DeviceRepr for LinearEpilogueParams {}
unsafe impl DeviceRepr for LayerNormParams {}
unsafe impl DeviceRepr for AttentionParams {}
unsafe impl DeviceRepr for PatchParams {}
unsafe impl DeviceRepr for EmbedParams {}
unsafe impl DeviceRepr for AggregateParams {}
unsafe impl DeviceRepr for ScoreParams {}
unsafe impl DeviceRepr for MapsParams {}
unsafe impl DeviceRepr for ConvertParams {}
unsafe impl DeviceRepr for PreprocessParams {}

/// Launches kernel `$name` of op `$op` with the arguments in order (outputs first, then
/// inputs, then the params struct), as an `anyhow::Result<()>`.
macro_rules! launch {
    ($self:ident, $op:expr, $name:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let f = $self.kernels.get($name)?;
        let mut builder = $self.stream.launch_builder(f);
        $(builder.arg($arg);)+
        // SAFETY: every launcher checks the lengths of the buffers it passes against the
        // dimensions in its params struct, which is all the kernel indexes.
        unsafe { builder.launch($cfg) }
            .map(|_| ())
            .with_context(|| format!("{}: launching `{}`", $op, $name))
    }};
}

// After `launch!`, which they use.
mod attention;
mod backward;
mod search;

mod adam;
mod loss;

/// Threads per block of the element-wise kernels.
const THREADS: u32 = 256;
/// Rows (one warp each) per block of the row-wise kernels.
const ROWS_PER_BLOCK: u32 = 8;

/// Whether this machine has a usable CUDA driver and at least one GPU: `Ok(count)`, or why not.
pub fn probe() -> Result<usize> {
    // SAFETY: only tries to open the driver library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        bail!("no CUDA driver library (libcuda.so) on this machine");
    }
    let n = CudaContext::device_count().context("cuda: cuInit / counting devices")?;
    ensure!(n > 0, "the CUDA driver reports no GPU");
    Ok(n as usize)
}

/// A device buffer of `len` f32 (at least one element is allocated, so empty buffers exist).
pub struct CudaBuf {
    data: CudaSlice<f32>,
    len: usize,
}

enum MatData {
    Bf16(CudaSlice<u16>),
    F32(CudaSlice<f32>),
}

/// A `[out, in]` weight on the device at the backend's precision.
pub struct CudaMat {
    data: MatData,
    out_dim: usize,
    in_dim: usize,
}

pub struct CudaBackend {
    ordinal: usize,
    device: String,
    precision: Precision,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: Kernels,
    /// bf16 copy of `linear`'s activations, grown on demand.
    scratch: Mutex<Option<CudaSlice<u16>>>,
    /// Stands in for an absent bias pointer.
    dummy: CudaSlice<f32>,
    /// `upload_rgb`'s normalisation table (`[3, 256]`) and pinned input staging.
    lut: CudaSlice<f32>,
    inputs: Mutex<pinned::InputStage>,
    /// Pinned staging of `download`.
    outputs: Mutex<pinned::OutputStage>,
    /// bf16 `linear` with the bias in the GEMM's epilogue ([`lt`]); `None` without cuBLASLt.
    lt: Option<lt::Lt>,
}

fn i32_dim(op: &str, name: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| anyhow!("{op}: {name} = {v} exceeds the kernels' i32 range"))
}

fn grid_1d(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 1 << 16) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn grid_rows(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((rows as u32).div_ceil(ROWS_PER_BLOCK).max(1), 1, 1),
        block_dim: (32, ROWS_PER_BLOCK, 1),
        shared_mem_bytes: 0,
    }
}

/// bf16 (round to nearest even) bits of `v`, as `f32_to_bf16_bits` in kernels/common.cuh.
fn bf16_bits(v: f32) -> u16 {
    half::bf16::from_f32(v).to_bits()
}

impl CudaBackend {
    /// The backend on GPU `ordinal` with `linear` at `precision`.
    pub fn new(ordinal: usize, precision: Precision) -> Result<Self> {
        let count = probe()?;
        ensure!(
            ordinal < count,
            "cuda:{ordinal} does not exist: this machine has {count} GPU(s)"
        );
        let ctx = CudaContext::new(ordinal).with_context(|| format!("cuda:{ordinal}: context"))?;
        // SAFETY: before any buffer exists; the streams are synchronised by explicit events
        // (see `pinned`), so cudarc need not record events around every launch argument.
        unsafe { ctx.disable_event_tracking() };
        let device = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let stream = ctx.default_stream();
        // SAFETY: only tries to open the cuBLAS library.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            bail!("cuda:{ordinal}: cuBLAS (libcublas.so) not found");
        }
        let blas = CudaBlas::new(stream.clone()).context("cuda: creating the cuBLAS handle")?;
        let kernels = Kernels::load(&ctx)?;
        let dummy = stream.alloc_zeros::<f32>(1).context("cuda: allocating")?;
        let lut = preprocess::upload_lut(&stream)?;
        let inputs = Mutex::new(pinned::InputStage::new(&ctx)?);
        let lt = lt::Lt::new(&stream)?;
        Ok(Self {
            ordinal,
            device,
            precision,
            stream,
            blas,
            kernels,
            scratch: Mutex::new(None),
            dummy,
            lut,
            inputs,
            outputs: Mutex::new(pinned::OutputStage::default()),
            lt,
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// How each kernel module was loaded (cubin, PTX or NVRTC).
    pub fn kernel_provenance(&self) -> &[String] {
        &self.kernels.provenance
    }

    /// Waits for every queued op.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().context("cuda: synchronising")
    }

    fn alloc(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.stream
            .alloc_zeros::<f32>(len.max(1))
            .with_context(|| format!("cuda: allocating {len} f32"))
    }

    /// A `[out, in]` weight at `precision`.
    fn mat(
        &self,
        w: &[f32],
        out_dim: usize,
        in_dim: usize,
        precision: Precision,
    ) -> Result<CudaMat> {
        check_len("upload_mat", "w", w.len(), &[out_dim, in_dim])?;
        let n = w.len().max(1);
        let data = match precision {
            Precision::F32 => {
                let mut d = self.alloc(n)?;
                if !w.is_empty() {
                    self.stream
                        .memcpy_htod(w, &mut d.slice_mut(..w.len()))
                        .context("upload_mat: copying the weight")?;
                }
                MatData::F32(d)
            }
            Precision::Bf16 => {
                let mut bits: Vec<u16> = w.iter().map(|&v| bf16_bits(v)).collect();
                bits.resize(n, 0);
                MatData::Bf16(
                    self.stream
                        .clone_htod(&bits)
                        .context("upload_mat: copying the bf16 weight")?,
                )
            }
        };
        Ok(CudaMat {
            data,
            out_dim,
            in_dim,
        })
    }

    /// `x` as bf16 in the scratch buffer (grown to fit), for a bf16 GEMM.
    fn to_bf16_scratch(
        &self,
        x: &CudaBuf,
    ) -> Result<std::sync::MutexGuard<'_, Option<CudaSlice<u16>>>> {
        let mut scratch = self
            .scratch
            .lock()
            .map_err(|_| anyhow!("cuda: scratch lock poisoned"))?;
        if scratch.as_ref().is_none_or(|s| s.len() < x.len) {
            *scratch = Some(
                self.stream
                    .alloc_zeros::<u16>(x.len.max(1))
                    .with_context(|| format!("cuda: allocating {} bf16", x.len))?,
            );
        }
        let buf = scratch.as_mut().expect("scratch was just filled");
        let p = ConvertParams { n: x.len as i64 };
        launch!(
            self,
            "linear",
            "f32_to_bf16",
            grid_1d(x.len),
            &mut *buf,
            &x.data,
            &p
        )?;
        Ok(scratch)
    }
}

impl Backend for CudaBackend {
    type Buf = CudaBuf;
    type Mat = CudaMat;

    fn name(&self) -> String {
        let precision = match self.precision {
            Precision::Bf16 => "bf16 GEMMs",
            Precision::F32 => "f32 GEMMs",
        };
        format!("cuda:{} ({}, {precision})", self.ordinal, self.device)
    }

    fn synchronize(&self) -> Result<()> {
        CudaBackend::synchronize(self)
    }

    fn upload(&self, host: &[f32]) -> Result<CudaBuf> {
        let mut data = self.alloc(host.len())?;
        if !host.is_empty() {
            self.stream
                .memcpy_htod(host, &mut data.slice_mut(..host.len()))
                .with_context(|| format!("cuda: uploading {} f32", host.len()))?;
        }
        Ok(CudaBuf {
            data,
            len: host.len(),
        })
    }

    fn zeros(&self, len: usize) -> Result<CudaBuf> {
        Ok(CudaBuf {
            data: self.alloc(len)?,
            len,
        })
    }

    fn upload_rgb(&self, rgb: &[u8], batch: usize, height: usize, width: usize) -> Result<CudaBuf> {
        self.upload_rgb_impl(rgb, batch, height, width)
    }

    fn download(&self, buf: &CudaBuf) -> Result<Vec<f32>> {
        let host = self
            .outputs
            .lock()
            .map_err(|_| anyhow!("cuda: output stage lock poisoned"))?
            .download(self.stream.context(), &self.stream, &buf.data, buf.len)?;
        self.synchronize()?;
        Ok(host)
    }

    fn buf_len(&self, buf: &CudaBuf) -> usize {
        buf.len
    }

    fn upload_mat(&self, w: &[f32], out_dim: usize, in_dim: usize) -> Result<CudaMat> {
        self.mat(w, out_dim, in_dim, Precision::F32)
    }

    fn mat_from_buf(&self, w: &CudaBuf, out_dim: usize, in_dim: usize) -> Result<CudaMat> {
        check_len("mat_from_buf", "w", w.len, &[out_dim, in_dim])?;
        let data = self
            .stream
            .clone_dtod(&w.data)
            .context("mat_from_buf: copying the weight")?;
        Ok(CudaMat {
            data: MatData::F32(data),
            out_dim,
            in_dim,
        })
    }

    fn upload_frozen_mat(&self, w: &[f32], out_dim: usize, in_dim: usize) -> Result<CudaMat> {
        self.mat(w, out_dim, in_dim, self.precision)
    }

    fn linear(
        &self,
        y: &mut CudaBuf,
        x: &CudaBuf,
        w: &CudaMat,
        bias: Option<&CudaBuf>,
        epilogue: Epilogue,
        rows: usize,
    ) -> Result<()> {
        let (out, inp) = (w.out_dim, w.in_dim);
        check_len("linear", "x", x.len, &[rows, inp])?;
        check_len("linear", "y", y.len, &[rows, out])?;
        if let Some(b) = bias {
            check_len("linear", "bias", b.len, &[out])?;
        }
        if y.len == 0 {
            return Ok(());
        }
        let accumulate = epilogue == Epilogue::Accumulate;
        let quick_gelu = epilogue == Epilogue::QuickGelu;
        if inp == 0 {
            ensure!(
                !accumulate,
                "linear: an empty inner dimension cannot accumulate"
            );
            self.stream
                .memset_zeros(&mut y.data)
                .context("linear: zeroing")?;
        } else {
            match &w.data {
                MatData::F32(wd) => gemm::gemm(
                    &self.blas,
                    &self.stream,
                    &mut y.data,
                    gemm::Operands::F32 { w: wd, x: &x.data },
                    rows,
                    out,
                    inp,
                    accumulate,
                )?,
                MatData::Bf16(wd) => {
                    let scratch = self.to_bf16_scratch(x)?;
                    let xs = scratch.as_ref().expect("filled by to_bf16_scratch");
                    if let (Some(lt), Some(b), false) = (&self.lt, bias, quick_gelu) {
                        let dims = (rows, out, inp);
                        let (y, b) = (&mut y.data, &b.data);
                        if lt.gemm_bias(&self.stream, y, wd, xs, b, dims, accumulate)? {
                            return Ok(());
                        }
                    }
                    gemm::gemm(
                        &self.blas,
                        &self.stream,
                        &mut y.data,
                        gemm::Operands::Bf16 { w: wd, x: xs },
                        rows,
                        out,
                        inp,
                        accumulate,
                    )?
                }
            }
        }
        if bias.is_none() && !quick_gelu {
            return Ok(());
        }
        let p = LinearEpilogueParams {
            rows: i32_dim("linear", "rows", rows)?,
            cols: i32_dim("linear", "out", out)?,
            has_bias: bias.is_some() as i32,
            quick_gelu: quick_gelu as i32,
        };
        let b = bias.map_or(&self.dummy, |b| &b.data);
        launch!(
            self,
            "linear",
            "linear_epilogue",
            grid_1d(y.len),
            &mut y.data,
            b,
            &p
        )
    }

    fn layer_norm(
        &self,
        y: &mut CudaBuf,
        x: &CudaBuf,
        gamma: &CudaBuf,
        beta: &CudaBuf,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        check_len("layer_norm", "x", x.len, &[rows, dim])?;
        check_len("layer_norm", "y", y.len, &[rows, dim])?;
        check_len("layer_norm", "gamma", gamma.len, &[dim])?;
        check_len("layer_norm", "beta", beta.len, &[dim])?;
        if y.len == 0 {
            return Ok(());
        }
        let p = LayerNormParams {
            rows: i32_dim("layer_norm", "rows", rows)?,
            dim: i32_dim("layer_norm", "dim", dim)?,
            eps,
        };
        launch!(
            self,
            "layer_norm",
            "layer_norm",
            grid_rows(rows),
            &mut y.data,
            &x.data,
            &gamma.data,
            &beta.data,
            &p
        )
    }

    fn attention(
        &self,
        out: &mut CudaBuf,
        qkv: &CudaBuf,
        batch: usize,
        tokens: usize,
        heads: usize,
        head_dim: usize,
        causal: bool,
    ) -> Result<()> {
        self.attention_impl(out, qkv, batch, tokens, heads, head_dim, causal)
    }

    fn patch_im2col(
        &self,
        cols: &mut CudaBuf,
        images: &CudaBuf,
        batch: usize,
        side: usize,
        patch: usize,
    ) -> Result<()> {
        ensure!(
            patch > 0 && side.is_multiple_of(patch),
            "patch_im2col: image side {side} is not a multiple of the patch size {patch}"
        );
        let grid = side / patch;
        check_len(
            "patch_im2col",
            "images",
            images.len,
            &[batch, 3, side, side],
        )?;
        check_len(
            "patch_im2col",
            "cols",
            cols.len,
            &[batch, grid * grid, 3 * patch * patch],
        )?;
        if cols.len == 0 {
            return Ok(());
        }
        let p = PatchParams {
            batch: i32_dim("patch_im2col", "batch", batch)?,
            side: i32_dim("patch_im2col", "side", side)?,
            patch: i32_dim("patch_im2col", "patch", patch)?,
            grid: grid as i32,
        };
        launch!(
            self,
            "patch_im2col",
            "patch_im2col",
            grid_1d(cols.len),
            &mut cols.data,
            &images.data,
            &p
        )
    }

    fn embed_tokens(
        &self,
        x: &mut CudaBuf,
        patches: &CudaBuf,
        cls: &CudaBuf,
        pos: &CudaBuf,
        batch: usize,
        n_patches: usize,
        dim: usize,
    ) -> Result<()> {
        check_len("embed_tokens", "x", x.len, &[batch, 1 + n_patches, dim])?;
        check_len(
            "embed_tokens",
            "patches",
            patches.len,
            &[batch, n_patches, dim],
        )?;
        check_len("embed_tokens", "cls", cls.len, &[dim])?;
        check_len("embed_tokens", "pos", pos.len, &[1 + n_patches, dim])?;
        if x.len == 0 {
            return Ok(());
        }
        let p = EmbedParams {
            batch: i32_dim("embed_tokens", "batch", batch)?,
            n_patches: i32_dim("embed_tokens", "n_patches", n_patches)?,
            dim: i32_dim("embed_tokens", "dim", dim)?,
        };
        launch!(
            self,
            "embed_tokens",
            "embed_tokens",
            grid_1d(x.len),
            &mut x.data,
            &patches.data,
            &cls.data,
            &pos.data,
            &p
        )
    }

    fn aggregate(
        &self,
        out: &mut CudaBuf,
        x: &CudaBuf,
        batch: usize,
        grid: usize,
        dim: usize,
        window: usize,
        sigma: f32,
    ) -> Result<()> {
        ensure!(
            window % 2 == 1,
            "aggregate: window {window} must be odd and positive"
        );
        ensure!(
            sigma.is_finite() && sigma > 0.0,
            "aggregate: sigma {sigma} must be positive and finite"
        );
        let tokens = grid * grid + 1;
        check_len("aggregate", "x", x.len, &[batch, tokens, dim])?;
        check_len("aggregate", "out", out.len, &[batch, tokens, dim])?;
        if out.len == 0 {
            return Ok(());
        }
        if window == 1 {
            self.stream
                .memcpy_dtod(&x.data, &mut out.data)
                .context("aggregate: copying (window 1)")?;
            return Ok(());
        }
        let weights = self.upload(&window_kernel(window, sigma))?;
        let p = AggregateParams {
            batch: i32_dim("aggregate", "batch", batch)?,
            grid: i32_dim("aggregate", "grid", grid)?,
            dim: i32_dim("aggregate", "dim", dim)?,
            window: i32_dim("aggregate", "window", window)?,
        };
        launch!(
            self,
            "aggregate",
            "aggregate",
            grid_1d(out.len),
            &mut out.data,
            &x.data,
            &weights.data,
            &p
        )
    }

    fn state_logits(
        &self,
        logits: &mut CudaBuf,
        z: &CudaBuf,
        text: &CudaBuf,
        rows: usize,
        dim: usize,
        scale: f32,
    ) -> Result<()> {
        check_len("state_logits", "z", z.len, &[rows, dim])?;
        check_len("state_logits", "text", text.len, &[2, dim])?;
        check_len("state_logits", "logits", logits.len, &[rows, 2])?;
        if logits.len == 0 {
            return Ok(());
        }
        let p = ScoreParams {
            rows: i32_dim("state_logits", "rows", rows)?,
            dim: i32_dim("state_logits", "dim", dim)?,
            scale,
        };
        launch!(
            self,
            "state_logits",
            "state_logits",
            grid_rows(rows),
            &mut logits.data,
            &z.data,
            &text.data,
            &p
        )
    }

    fn abnormal_probability(
        &self,
        probs: &mut CudaBuf,
        logits: &CudaBuf,
        rows: usize,
    ) -> Result<()> {
        check_len("abnormal_probability", "logits", logits.len, &[rows, 2])?;
        check_len("abnormal_probability", "probs", probs.len, &[rows])?;
        if rows == 0 {
            return Ok(());
        }
        let p = ScoreParams {
            rows: i32_dim("abnormal_probability", "rows", rows)?,
            dim: 2,
            scale: 1.0,
        };
        launch!(
            self,
            "abnormal_probability",
            "abnormal_probability",
            grid_1d(rows),
            &mut probs.data,
            &logits.data,
            &p
        )
    }

    fn anomaly_maps(
        &self,
        maps: &mut CudaBuf,
        patch: &CudaBuf,
        batch: usize,
        grid: usize,
        side: usize,
        sigma: f32,
    ) -> Result<()> {
        ensure!(
            sigma.is_finite() && sigma >= 0.0,
            "anomaly_maps: sigma {sigma} must be finite and non-negative"
        );
        check_len("anomaly_maps", "patch", patch.len, &[batch, grid, grid])?;
        check_len("anomaly_maps", "maps", maps.len, &[batch, side, side])?;
        if maps.len == 0 {
            return Ok(());
        }
        ensure!(
            grid > 0,
            "anomaly_maps: cannot upsample an empty {grid}x{grid} grid to {side}x{side}"
        );
        let half = (sigma as f64 > MIN_SIGMA).then(|| gaussian_half_kernel(sigma as f64));
        let mut p = MapsParams {
            batch: i32_dim("anomaly_maps", "batch", batch)?,
            grid: i32_dim("anomaly_maps", "grid", grid)?,
            side: i32_dim("anomaly_maps", "side", side)?,
            radius: 0,
        };
        let cfg = grid_1d(maps.len);
        launch!(
            self,
            "anomaly_maps",
            "upsample_bilinear",
            cfg,
            &mut maps.data,
            &patch.data,
            &p
        )?;
        let Some(half) = half else {
            return Ok(());
        };
        p.radius = i32_dim("anomaly_maps", "radius", half.len() - 1)?;
        let half = self
            .stream
            .clone_htod(&half)
            .context("anomaly_maps: uploading the Gaussian kernel")?;
        let mut tmp = self.alloc(maps.len)?;
        launch!(
            self,
            "anomaly_maps",
            "gauss_axis0",
            cfg,
            &mut tmp,
            &maps.data,
            &half,
            &p
        )?;
        launch!(
            self,
            "anomaly_maps",
            "gauss_axis1",
            cfg,
            &mut maps.data,
            &tmp,
            &half,
            &p
        )
    }

    fn nearest_cosine(
        &self,
        dist: &mut CudaBuf,
        queries: &CudaBuf,
        bank: &CudaBuf,
        rows: usize,
        bank_rows: usize,
        dim: usize,
        weight: f32,
    ) -> Result<()> {
        self.nearest_cosine_impl(dist, queries, bank, rows, bank_rows, dim, weight)
    }

    fn matmul(
        &self,
        c: &mut CudaBuf,
        a: &CudaBuf,
        b: &CudaBuf,
        dims: (usize, usize, usize),
        trans_a: bool,
        trans_b: bool,
        accumulate: bool,
    ) -> Result<()> {
        let (m, k, n) = dims;
        check_len("matmul", "a", a.len, &[m, k])?;
        check_len("matmul", "b", b.len, &[k, n])?;
        check_len("matmul", "c", c.len, &[m, n])?;
        if c.len == 0 {
            return Ok(());
        }
        if k == 0 {
            if !accumulate {
                self.stream
                    .memset_zeros(&mut c.data)
                    .context("matmul: zeroing")?;
            }
            return Ok(());
        }
        gemm::matmul(
            &self.blas,
            &self.stream,
            &mut c.data,
            &a.data,
            &b.data,
            dims,
            trans_a,
            trans_b,
            accumulate,
        )
    }

    fn bias_grad(&self, db: &mut CudaBuf, dy: &CudaBuf, rows: usize, dim: usize) -> Result<()> {
        self.bias_grad_impl(db, dy, rows, dim)
    }

    fn quick_gelu(&self, y: &mut CudaBuf, x: &CudaBuf, len: usize) -> Result<()> {
        self.quick_gelu_impl(y, x, len)
    }

    fn quick_gelu_backward(
        &self,
        dx: &mut CudaBuf,
        dy: &CudaBuf,
        x: &CudaBuf,
        len: usize,
    ) -> Result<()> {
        self.quick_gelu_backward_impl(dx, dy, x, len)
    }

    fn layer_norm_backward(
        &self,
        dx: Option<&mut CudaBuf>,
        dgamma_dbeta: Option<(&mut CudaBuf, &mut CudaBuf)>,
        dy: &CudaBuf,
        x: &CudaBuf,
        gamma: &CudaBuf,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        self.layer_norm_backward_impl(dx, dgamma_dbeta, dy, x, gamma, rows, dim, eps)
    }

    fn attention_backward(
        &self,
        dqkv: &mut CudaBuf,
        dout: &CudaBuf,
        qkv: &CudaBuf,
        batch: usize,
        tokens: usize,
        heads: usize,
        head_dim: usize,
        causal: bool,
    ) -> Result<()> {
        self.attention_backward_impl(dqkv, dout, qkv, batch, tokens, heads, head_dim, causal)
    }

    fn state_logits_backward(
        &self,
        dz: &mut CudaBuf,
        dtext: &mut CudaBuf,
        dlogits: &CudaBuf,
        z: &CudaBuf,
        text: &CudaBuf,
        rows: usize,
        dim: usize,
        scale: f32,
    ) -> Result<()> {
        self.state_logits_backward_impl(dz, dtext, dlogits, z, text, rows, dim, scale)
    }

    fn abnormal_probability_backward(
        &self,
        dlogits: &mut CudaBuf,
        dprobs: &CudaBuf,
        logits: &CudaBuf,
        rows: usize,
    ) -> Result<()> {
        self.abnormal_probability_backward_impl(dlogits, dprobs, logits, rows)
    }

    fn focal_loss(
        &self,
        loss: &mut CudaBuf,
        dp: &mut CudaBuf,
        p: &CudaBuf,
        t: &CudaBuf,
        block: ColumnBlock,
        weight: f32,
    ) -> Result<()> {
        self.block_loss_impl("focal_loss", loss, dp, p, t, block, weight)
    }

    fn l1_loss(
        &self,
        loss: &mut CudaBuf,
        dp: &mut CudaBuf,
        p: &CudaBuf,
        t: &CudaBuf,
        block: ColumnBlock,
        weight: f32,
    ) -> Result<()> {
        self.block_loss_impl("l1_loss", loss, dp, p, t, block, weight)
    }

    fn patch_alignment(
        &self,
        loss: &mut CudaBuf,
        state: &mut CudaBuf,
        z: &CudaBuf,
        masks: &CudaBuf,
        batch: usize,
        tokens: usize,
        e: usize,
    ) -> Result<()> {
        self.patch_alignment_impl(loss, state, z, masks, batch, tokens, e)
    }

    fn patch_alignment_backward(
        &self,
        dz: &mut CudaBuf,
        state: &CudaBuf,
        z: &CudaBuf,
        masks: &CudaBuf,
        batch: usize,
        tokens: usize,
        e: usize,
        weight: f32,
    ) -> Result<()> {
        self.patch_alignment_backward_impl(dz, state, z, masks, batch, tokens, e, weight)
    }

    fn adam(
        &self,
        param: &mut CudaBuf,
        m: &mut CudaBuf,
        v: &mut CudaBuf,
        grad: &CudaBuf,
        len: usize,
        lr: f32,
        step: u64,
    ) -> Result<()> {
        self.adam_impl(param, m, v, grad, len, lr, step)
    }
}
