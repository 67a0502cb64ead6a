//! `linear`'s GEMM on cuBLAS: `y[rows, out] (=|+=) x[rows, in] · W[out, in]ᵀ`, f32 accumulate.
//!
//! cuBLAS is column-major, so the row-major product is computed as its transpose:
//! `yᵀ (out x rows, ld out) = op(W) · xᵀ` with `W` read as the column-major `in x out`
//! matrix (`transa = T`, `lda = in`) and `x` as `in x rows` (`transb = N`, `ldb = in`).
//! [`Precision::Bf16`]: W and x in bf16 (x converted by the `f32_to_bf16` kernel), y in f32;
//! [`Precision::F32`]: everything f32 (`CUBLAS_COMPUTE_32F`, no TF32).

use anyhow::{ensure, Context, Result};
use cudarc::cublas::{result, sys, CudaBlas};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use std::ffi::c_void;

/// The arithmetic of the CUDA backend's `linear` (frozen weights) and of its `attention` at
/// head dim 64 (`attention.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// bf16 operands, f32 accumulate and output: tensor cores.
    #[default]
    Bf16,
    /// f32 throughout: the CPU backend's arithmetic, for parity checks.
    F32,
}

/// The operands of one GEMM, already on the device.
pub(crate) enum Operands<'a> {
    Bf16 {
        w: &'a CudaSlice<u16>,
        x: &'a CudaSlice<u16>,
    },
    F32 {
        w: &'a CudaSlice<f32>,
        x: &'a CudaSlice<f32>,
    },
}

fn dim(name: &str, v: usize) -> Result<i32> {
    i32::try_from(v).with_context(|| format!("linear: {name} = {v} exceeds cuBLAS's i32 range"))
}

/// `y = x·Wᵀ` (`accumulate`: `y += x·Wᵀ`), `y` holding `rows * out` elements.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    blas: &CudaBlas,
    stream: &CudaStream,
    y: &mut CudaSlice<f32>,
    ops: Operands<'_>,
    rows: usize,
    out: usize,
    inp: usize,
    accumulate: bool,
) -> Result<()> {
    ensure!(
        y.len() >= rows * out,
        "linear: output holds {} elements, need {rows} x {out}",
        y.len()
    );
    let (m, n, k) = (dim("out", out)?, dim("rows", rows)?, dim("in", inp)?);
    let alpha = 1.0f32;
    let beta = if accumulate { 1.0f32 } else { 0.0 };
    let (ty, (w_ptr, _w_sync), (x_ptr, _x_sync)) = match &ops {
        Operands::Bf16 { w, x } => (
            sys::cudaDataType::CUDA_R_16BF,
            w.device_ptr(stream),
            x.device_ptr(stream),
        ),
        Operands::F32 { w, x } => (
            sys::cudaDataType::CUDA_R_32F,
            w.device_ptr(stream),
            x.device_ptr(stream),
        ),
    };
    let (y_ptr, _y_sync) = y.device_ptr_mut(stream);
    // SAFETY: the pointers are live device allocations of this stream holding at least
    // out*in (W), rows*in (x) and rows*out (y) elements of the stated types (checked by the
    // caller for W and x, above for y); alpha and beta are host f32 as the compute type wants.
    unsafe {
        result::gemm_ex(
            *blas.handle(),
            sys::cublasOperation_t::CUBLAS_OP_T,
            sys::cublasOperation_t::CUBLAS_OP_N,
            m,
            n,
            k,
            (&alpha as *const f32).cast::<c_void>(),
            w_ptr as *const c_void,
            ty,
            k,
            x_ptr as *const c_void,
            ty,
            k,
            (&beta as *const f32).cast::<c_void>(),
            y_ptr as *mut c_void,
            sys::cudaDataType::CUDA_R_32F,
            m,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .with_context(|| format!("linear: cublasGemmEx {rows}x{inp} · ({out}x{inp})ᵀ"))
}

/// `Backend::matmul` in f32: row-major `c[m, n] (=|+=) op(a)[m, k] · op(b)[k, n]`, computed as
/// the column-major `cᵀ = op(b)ᵀ · op(a)ᵀ`: `b` is the column-major `n x k` (`N`, ld `n`) or,
/// stored `[n, k]`, the transpose of a `k x n` (`T`, ld `k`); `a` likewise with `k` and `m`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    blas: &CudaBlas,
    stream: &CudaStream,
    c: &mut CudaSlice<f32>,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    (m, k, n): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) -> Result<()> {
    let op = |t: bool| {
        if t {
            sys::cublasOperation_t::CUBLAS_OP_T
        } else {
            sys::cublasOperation_t::CUBLAS_OP_N
        }
    };
    let (mi, ki, ni) = (dim("m", m)?, dim("k", k)?, dim("n", n)?);
    let alpha = 1.0f32;
    let beta = if accumulate { 1.0f32 } else { 0.0 };
    let (a_ptr, _a_sync) = a.device_ptr(stream);
    let (b_ptr, _b_sync) = b.device_ptr(stream);
    let (c_ptr, _c_sync) = c.device_ptr_mut(stream);
    let f32_ty = sys::cudaDataType::CUDA_R_32F;
    // SAFETY: the caller checked a (m*k), b (k*n) and c (m*n) lengths; the leading dimensions
    // follow from the storage layouts documented above.
    unsafe {
        result::gemm_ex(
            *blas.handle(),
            op(trans_b),
            op(trans_a),
            ni,
            mi,
            ki,
            (&alpha as *const f32).cast::<c_void>(),
            b_ptr as *const c_void,
            f32_ty,
            if trans_b { ki } else { ni },
            a_ptr as *const c_void,
            f32_ty,
            if trans_a { mi } else { ki },
            (&beta as *const f32).cast::<c_void>(),
            c_ptr as *mut c_void,
            f32_ty,
            ni,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .with_context(|| format!("matmul: cublasGemmEx ({m}x{k}) · ({k}x{n})"))
}
