//! `matmul`: `c[m, n] (=|+=) op(a)[m, k] · op(b)[k, n]`, all row-major; `a` is stored `[k, m]`
//! when `trans_a`, `b` is stored `[n, k]` when `trans_b` (the transposes are strides, nothing is
//! copied). Used for the input gradient of a linear layer (`dx = dy · W`), its weight gradient
//! (`dW += dyᵀ · x`) and the attention backward's products. Rayon splits `c` into row bands,
//! each one single-threaded gemm call.

use anyhow::{ensure, Result};
use rayon::prelude::*;

use super::super::{check_len, SharedOut};

/// Rows of `c` per task.
const ROW_BAND: usize = 256;

/// Strides `(column, row)` of a row-major `[rows, cols]` matrix read as-is or transposed.
fn strides(cols_stored: usize, transposed: bool) -> (isize, isize) {
    if transposed {
        (cols_stored as isize, 1)
    } else {
        (1, cols_stored as isize)
    }
}

/// One single-threaded product on raw row-major storage, the building block of every
/// backward op: `c[m, n] = (accumulate ? c : 0) + op(a) · op(b)` where `c` has row stride `ldc`.
///
/// # Safety
/// `a`, `b` and `c` must hold the elements the shapes, transposes and `ldc` address.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_raw(
    c: *mut f32,
    ldc: usize,
    a: *const f32,
    b: *const f32,
    (m, k, n): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
    alpha: f32,
) {
    let (a_cs, a_rs) = strides(if trans_a { m } else { k }, trans_a);
    let (b_cs, b_rs) = strides(if trans_b { k } else { n }, trans_b);
    gemm::gemm(
        m,
        n,
        k,
        c,
        1,
        ldc as isize,
        accumulate,
        a,
        a_cs,
        a_rs,
        b,
        b_cs,
        b_rs,
        if accumulate { 1.0 } else { 0.0 },
        alpha,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) -> Result<()> {
    check_len("matmul", "a", a.len(), &[m, k])?;
    check_len("matmul", "b", b.len(), &[k, n])?;
    check_len("matmul", "c", c.len(), &[m, n])?;
    ensure!(
        isize::try_from(a.len().max(b.len()).max(c.len())).is_ok(),
        "matmul: buffers too large to address"
    );
    if c.is_empty() {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return Ok(());
    }
    let dst = SharedOut::new(c);
    (0..m.div_ceil(ROW_BAND)).into_par_iter().for_each(|band| {
        let r0 = band * ROW_BAND;
        let rows = ROW_BAND.min(m - r0);
        // Row r0 of op(a): element (r0, 0) sits at r0·k, or at r0 when `a` is stored [k, m].
        let a0 = if trans_a { r0 } else { r0 * k };
        // SAFETY: rows r0..r0+rows of `c` belong to this task; `a` and `b` were checked to hold
        // [m, k] and [k, n] elements, and the band reads only rows r0..r0+rows of op(a).
        unsafe {
            let (a_cs, a_rs) = strides(if trans_a { m } else { k }, trans_a);
            let (b_cs, b_rs) = strides(if trans_b { k } else { n }, trans_b);
            gemm::gemm(
                rows,
                n,
                k,
                dst.at(r0 * n),
                1,
                n as isize,
                accumulate,
                a.as_ptr().add(a0),
                a_cs,
                a_rs,
                b.as_ptr(),
                b_cs,
                b_rs,
                if accumulate { 1.0 } else { 0.0 },
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
    Ok(())
}
