//! The CPU backend: the reference implementation of every op, and fast (rayon + gemm).
