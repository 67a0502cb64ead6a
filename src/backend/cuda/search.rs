//! Launcher of `nearest_cosine` (`kernels/search.cu`: math, shapes and launch layout in its
//! header; CPU twin `nearest_cosine` in `src/backend/cpu/search.rs`).
//!
//! Block `(x, c)` of `nearest_cosine_partial` takes query tile `x` against bank chunk `c`. The
//! bank is split into more than one chunk only when the query tiles alone give fewer than
//! [`TARGET_BLOCKS`] blocks (one query row against a 100k-row bank still fills the GPU); the
//! per-chunk maxima, `chunks x rows` floats, are then reduced by `nearest_cosine_finish`. Memory
//! beyond the inputs is those maxima, whatever `bank_rows`.

use super::ffi::SearchParams;
use super::{grid_rows, i32_dim, CudaBackend, CudaBuf};
use crate::backend::cpu::check_len;
use anyhow::{ensure, Context, Result};
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

// SAFETY: a plain C struct of int/float fields (`kernels/params.h`), passed by value.
unsafe impl DeviceRepr for SearchParams {}

/// Query rows per block (`SEARCH_BM` in kernels/search.cu).
const QUERY_TILE: usize = 64;
/// Bank rows per tile (`SEARCH_BN`); chunks are whole tiles.
const BANK_TILE: usize = 64;
/// Threads per block (`SEARCH_THREADS`).
const THREADS: u32 = 256;
/// Blocks wanted in flight (a few per SM of a large GPU) before the bank is split.
const TARGET_BLOCKS: usize = 1024;

/// `(chunk_rows, chunks)`: the bank split into whole tiles so that `query_tiles x chunks`
/// reaches [`TARGET_BLOCKS`] where the bank allows it.
fn bank_chunks(query_tiles: usize, bank_rows: usize) -> (usize, usize) {
    let bank_tiles = bank_rows.div_ceil(BANK_TILE);
    let wanted = TARGET_BLOCKS.div_ceil(query_tiles).clamp(1, bank_tiles);
    let tiles_per_chunk = bank_tiles.div_ceil(wanted);
    (
        tiles_per_chunk * BANK_TILE,
        bank_tiles.div_ceil(tiles_per_chunk),
    )
}

impl CudaBackend {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn nearest_cosine_impl(
        &self,
        dist: &mut CudaBuf,
        queries: &CudaBuf,
        bank: &CudaBuf,
        rows: usize,
        bank_rows: usize,
        dim: usize,
        weight: f32,
    ) -> Result<()> {
        let op = "nearest_cosine";
        check_len(op, "queries", queries.len, &[rows, dim])?;
        check_len(op, "bank", bank.len, &[bank_rows, dim])?;
        check_len(op, "dist", dist.len, &[rows])?;
        ensure!(bank_rows > 0, "{op}: the bank has no rows");
        ensure!(dim > 0, "{op}: feature width is 0");
        if rows == 0 {
            return Ok(());
        }
        let query_tiles = rows.div_ceil(QUERY_TILE);
        let (chunk_rows, chunks) = bank_chunks(query_tiles, bank_rows);
        let p = SearchParams {
            rows: i32_dim(op, "rows", rows)?,
            bank_rows: i32_dim(op, "bank_rows", bank_rows)?,
            dim: i32_dim(op, "dim", dim)?,
            chunk_rows: i32_dim(op, "chunk rows", chunk_rows)?,
            chunks: i32_dim(op, "chunks", chunks)?,
            weight,
        };
        let mut partial = self.alloc(chunks * rows)?;
        let cfg = LaunchConfig {
            grid_dim: (query_tiles as u32, chunks as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(
            self,
            op,
            "nearest_cosine_partial",
            cfg,
            &mut partial,
            &queries.data,
            &bank.data,
            &p
        )?;
        launch!(
            self,
            op,
            "nearest_cosine_finish",
            grid_rows(rows),
            &mut dist.data,
            &partial,
            &queries.data,
            &p
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_whole_tiles_covering_the_bank() {
        for (query_tiles, bank_rows) in [(1, 1), (1, 100_003), (22, 5000), (257, 5476), (2000, 64)]
        {
            let (chunk_rows, chunks) = bank_chunks(query_tiles, bank_rows);
            assert_eq!(chunk_rows % BANK_TILE, 0);
            assert!(
                chunks * chunk_rows >= bank_rows,
                "{query_tiles} {bank_rows}"
            );
            assert!(
                (chunks - 1) * chunk_rows < bank_rows,
                "{query_tiles} {bank_rows}"
            );
            assert!(chunks <= TARGET_BLOCKS.max(1) && chunks <= 65535);
        }
        assert_eq!(bank_chunks(2000, 1_000_000).1, 1);
        assert!(bank_chunks(1, 100_003).1 >= 512);
    }
}
