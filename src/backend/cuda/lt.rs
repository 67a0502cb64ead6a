//! `linear`'s bf16 GEMM with the bias fused into cuBLASLt's epilogue:
//! `y[rows, out] (=|+=) x[rows, in] · W[out, in]ᵀ + bias[out]`, bf16 operands, f32 accumulate,
//! f32 output, in the column-major transpose of [`super::gemm`]
//! (`yᵀ = op(W) · xᵀ + bias`, `transa = T`).
//!
//! What removes a memory pass, and what does not:
//! - `Store` and `Accumulate` with a bias (`in_proj`, `out_proj`, `c_proj`: three of the four
//!   GEMMs of a block) take the `CUBLASLT_EPILOGUE_BIAS` epilogue. The GEMM adds the bias as it
//!   writes `y` (with `beta = 1` on top of the residual already in `y`: `y += x·Wᵀ + b`, C = D,
//!   in place), so `linear_epilogue`'s read and write of all of `y` disappear.
//! - `QuickGelu` (`c_fc`) keeps cuBLAS + `linear_epilogue`: cuBLASLt has GELU (erf/tanh)
//!   epilogues but not CLIP's `v·sigmoid(1.702 v)`, and a bias-only Lt epilogue followed by an
//!   activation pass moves the same bytes as the fused bias + activation pass it would replace.
//! - The `f32 → bf16` pass over `x` stays: the consumer of a buffer cannot know it was not
//!   written since a producer emitted a bf16 copy, without a bf16 buffer type in the
//!   [`crate::backend::Backend`] interface (not done here).
//!
//! When this GPU/library has no algorithm for the bias epilogue (the heuristic finds none or
//! refuses the configuration), `linear` says so once on stderr and keeps the cuBLAS +
//! epilogue-kernel path for that shape.

use anyhow::{Context, Result};
use cudarc::cublaslt::result::{self, CublasError};
use cudarc::cublaslt::sys;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// cuBLASLt's scratch space (NVIDIA recommends 32 MiB on Hopper).
const WORKSPACE_BYTES: usize = 32 << 20;

/// `(rows, out, in, accumulate)` of a bias GEMM.
type Shape = (usize, usize, usize, bool);

/// A cuBLASLt handle and its workspace, on the compute stream.
pub(crate) struct Lt {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    /// The heuristic's algorithm per shape (`None`: not supported), asked once per shape: the
    /// heuristic costs far more host time than the launch.
    algos: Mutex<HashMap<Shape, Option<sys::cublasLtMatmulAlgo_t>>>,
    /// Whether the fallback to cuBLAS + `linear_epilogue` was reported.
    warned: AtomicBool,
}

// SAFETY: the handle is only used under the backend's calls, which queue on one stream; cuBLASLt
// handles may be used from any thread.
unsafe impl Send for Lt {}
unsafe impl Sync for Lt {}

impl Drop for Lt {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        let _ = unsafe { result::destroy_handle(self.handle) };
    }
}

/// Destroys the cuBLASLt descriptors of one call on every path out of it.
struct Descriptors {
    desc: sys::cublasLtMatmulDesc_t,
    layouts: Vec<sys::cublasLtMatrixLayout_t>,
    pref: Option<sys::cublasLtMatmulPreference_t>,
}

impl Drop for Descriptors {
    fn drop(&mut self) {
        // SAFETY: each was created once by this call and is destroyed once here.
        unsafe {
            for &l in &self.layouts {
                let _ = result::destroy_matrix_layout(l);
            }
            if let Some(p) = self.pref {
                let _ = result::destroy_matmul_pref(p);
            }
            let _ = result::destroy_matmul_desc(self.desc);
        }
    }
}

/// Sets a descriptor attribute of `T`'s size from `value`.
///
/// # Safety
/// `desc` must be live and `T` the attribute's documented type.
unsafe fn set_desc<T>(
    desc: sys::cublasLtMatmulDesc_t,
    attr: sys::cublasLtMatmulDescAttributes_t,
    value: &T,
) -> Result<(), CublasError> {
    result::set_matmul_desc_attribute(
        desc,
        attr,
        (value as *const T).cast::<c_void>(),
        std::mem::size_of::<T>(),
    )
}

impl Lt {
    /// `None` when libcublasLt cannot be loaded.
    pub fn new(stream: &Arc<CudaStream>) -> Result<Option<Self>> {
        // SAFETY: only tries to open the library.
        if !unsafe { sys::is_culib_present() } {
            return Ok(None);
        }
        let handle = result::create_handle().context("cuda: creating the cuBLASLt handle")?;
        let workspace = match stream.alloc_zeros::<u8>(WORKSPACE_BYTES) {
            Ok(w) => w,
            Err(e) => {
                // SAFETY: just created, not used.
                let _ = unsafe { result::destroy_handle(handle) };
                return Err(e).context("cuda: allocating the cuBLASLt workspace");
            }
        };
        Ok(Some(Self {
            handle,
            workspace,
            algos: Mutex::new(HashMap::new()),
            warned: AtomicBool::new(false),
        }))
    }

    /// `y (=|+=) x·Wᵀ + bias`: `w: [out, in]`, `x: [rows, in]` bf16, `bias: [out]`,
    /// `y: [rows, out]` f32; the caller checked every length. `false` (nothing queued) when
    /// cuBLASLt has no algorithm for it.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_bias(
        &self,
        stream: &CudaStream,
        y: &mut CudaSlice<f32>,
        w: &CudaSlice<u16>,
        x: &CudaSlice<u16>,
        bias: &CudaSlice<f32>,
        (rows, out, inp): (usize, usize, usize),
        accumulate: bool,
    ) -> Result<bool> {
        let context = || format!("linear: cuBLASLt bias GEMM {rows}x{inp} · ({out}x{inp})ᵀ");
        let (m, n, k) = (out as u64, rows as u64, inp as u64);
        let bf16 = sys::cudaDataType::CUDA_R_16BF;
        let f32_ty = sys::cudaDataType::CUDA_R_32F;
        let mut d = Descriptors {
            desc: result::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, f32_ty)
                .with_context(context)?,
            layouts: Vec::with_capacity(3),
            pref: None,
        };
        // Column-major: W is `in x out` (ld in), read transposed; x is `in x rows` (ld in);
        // y is `out x rows` (ld out), both C and D.
        for (ty, r, c, ld) in [(bf16, k, m, k), (bf16, k, n, k), (f32_ty, m, n, m)] {
            let l = result::create_matrix_layout(ty, r, c, ld as i64).with_context(context)?;
            d.layouts.push(l);
        }
        let (w_ptr, _w) = w.device_ptr(stream);
        let (x_ptr, _x) = x.device_ptr(stream);
        let (b_ptr, _b) = bias.device_ptr(stream);
        let (y_ptr, _y) = y.device_ptr_mut(stream);
        let (ws_ptr, _ws) = self.workspace.device_ptr(stream);
        let workspace_bytes = WORKSPACE_BYTES as u64;
        // SAFETY: live descriptors; each value has its attribute's type (cublasOperation_t and
        // cublasLtEpilogue_t are 32-bit enums, the bias pointer a device pointer, the
        // workspace size a u64).
        unsafe {
            use sys::cublasLtMatmulDescAttributes_t as A;
            set_desc(
                d.desc,
                A::CUBLASLT_MATMUL_DESC_TRANSA,
                &cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T,
            )
            .with_context(context)?;
            set_desc(
                d.desc,
                A::CUBLASLT_MATMUL_DESC_EPILOGUE,
                &sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
            )
            .with_context(context)?;
            set_desc(d.desc, A::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b_ptr).with_context(context)?;
            let pref = result::create_matmul_pref().with_context(context)?;
            d.pref = Some(pref);
            result::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&workspace_bytes as *const u64).cast::<c_void>(),
                std::mem::size_of::<u64>(),
            )
            .with_context(context)?;
        }
        let (a_l, b_l, c_l) = (d.layouts[0], d.layouts[1], d.layouts[2]);
        let pref = d.pref.expect("set above");
        let mut algos = self
            .algos
            .lock()
            .map_err(|_| anyhow::anyhow!("cuda: cuBLASLt algorithm cache lock poisoned"))?;
        let shape = (rows, out, inp, accumulate);
        let algo = match algos.get(&shape) {
            Some(&algo) => algo,
            None => {
                // SAFETY: live descriptors describing the buffers below.
                let found = unsafe {
                    result::get_matmul_algo_heuristic(self.handle, d.desc, a_l, b_l, c_l, c_l, pref)
                };
                // No algorithm (NOT_SUPPORTED), or a configuration this library refuses: the
                // cuBLAS path is always there, so fall back rather than fail.
                if let Err(CublasError(status)) = found {
                    if !self.warned.swap(true, Ordering::Relaxed) {
                        eprintln!(
                            "cuda: cuBLASLt bias epilogue unavailable for {rows}x{inp} · \
                             ({out}x{inp})ᵀ ({status:?}); such GEMMs use cuBLAS and a separate \
                             bias pass"
                        );
                    }
                }
                let found = found.ok().map(|h| h.algo);
                algos.insert(shape, found);
                found
            }
        };
        drop(algos);
        let Some(algo) = algo else {
            return Ok(false);
        };
        let alpha = 1.0f32;
        let beta = if accumulate { 1.0f32 } else { 0.0 };
        // SAFETY: W holds out*in and x rows*in bf16, y rows*out f32, bias out f32 (checked by
        // the caller), the workspace WORKSPACE_BYTES; C = D = y with one layout, which cuBLASLt
        // allows in place; alpha and beta are host f32 as the f32 scale type wants.
        unsafe {
            result::matmul(
                self.handle,
                d.desc,
                (&alpha as *const f32).cast::<c_void>(),
                (&beta as *const f32).cast::<c_void>(),
                w_ptr as *const c_void,
                a_l,
                x_ptr as *const c_void,
                b_l,
                y_ptr as *const c_void,
                c_l,
                y_ptr as *mut c_void,
                c_l,
                &algo,
                ws_ptr as *mut c_void,
                WORKSPACE_BYTES,
                stream.cu_stream() as sys::cudaStream_t,
            )
        }
        .with_context(context)?;
        Ok(true)
    }
}
