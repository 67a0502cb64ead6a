//! Backward ops of the CPU backend (SPEC §8 training), one file per op family, and the plain
//! row-major GEMM they are built from. Each file states its math and shapes at the top; the
//! CUDA backend mirrors them op for op.

pub(crate) mod attention;
pub(crate) mod elementwise;
pub(crate) mod matmul;
pub(crate) mod norm;
pub(crate) mod score;
