//! Element-wise training ops.
//!
//! `quick_gelu`: `y = x·σ(1.702x)` (the forward activation, for training code that keeps the
//! pre-activation). `quick_gelu_backward`: `dx = dy·(σ(1.702x) + 1.702·x·σ(1.702x)(1 − σ(1.702x)))`.
//! `bias_grad`: `db[j] += Σ_r dy[r, j]` over `dy: [rows, dim]`, summed per fixed block of rows
//! and the partials added in order (deterministic for any thread count).

use anyhow::Result;
use rayon::prelude::*;

use super::super::check_len;
use super::super::vector::{exp, multiversion, quick_gelu as qg};

const BLOCK_ROWS: usize = 64;
const MIN_ELEMS_PER_TASK: usize = 16 * 1024;

multiversion! {
    fn gelu_slice(y: &mut [f32], x: &[f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = qg(v);
        }
    }
}

multiversion! {
    fn gelu_backward_slice(dx: &mut [f32], dy: &[f32], x: &[f32]) {
        for ((o, &d), &v) in dx.iter_mut().zip(dy).zip(x) {
            let s = 1.0 / (1.0 + exp(-1.702 * v));
            *o = d * (s + 1.702 * v * s * (1.0 - s));
        }
    }
}

pub(crate) fn quick_gelu(y: &mut [f32], x: &[f32], len: usize) -> Result<()> {
    check_len("quick_gelu", "x", x.len(), &[len])?;
    check_len("quick_gelu", "y", y.len(), &[len])?;
    y.par_chunks_mut(MIN_ELEMS_PER_TASK)
        .zip(x.par_chunks(MIN_ELEMS_PER_TASK))
        .for_each(|(yc, xc)| gelu_slice(yc, xc));
    Ok(())
}

pub(crate) fn quick_gelu_backward(dx: &mut [f32], dy: &[f32], x: &[f32], len: usize) -> Result<()> {
    let op = "quick_gelu_backward";
    check_len(op, "x", x.len(), &[len])?;
    check_len(op, "dy", dy.len(), &[len])?;
    check_len(op, "dx", dx.len(), &[len])?;
    dx.par_chunks_mut(MIN_ELEMS_PER_TASK)
        .zip(
            dy.par_chunks(MIN_ELEMS_PER_TASK)
                .zip(x.par_chunks(MIN_ELEMS_PER_TASK)),
        )
        .for_each(|(o, (d, v))| gelu_backward_slice(o, d, v));
    Ok(())
}

pub(crate) fn bias_grad(db: &mut [f32], dy: &[f32], rows: usize, dim: usize) -> Result<()> {
    check_len("bias_grad", "dy", dy.len(), &[rows, dim])?;
    check_len("bias_grad", "db", db.len(), &[dim])?;
    if rows == 0 || dim == 0 {
        return Ok(());
    }
    let partials: Vec<Vec<f32>> = dy
        .par_chunks(BLOCK_ROWS * dim)
        .map(|block| {
            let mut p = vec![0f32; dim];
            for r in block.chunks_exact(dim) {
                p.iter_mut().zip(r).for_each(|(a, v)| *a += v);
            }
            p
        })
        .collect();
    for p in partials {
        db.iter_mut().zip(&p).for_each(|(o, v)| *o += v);
    }
    Ok(())
}
