//! `nearest_cosine`: top-1 cosine search against a memory bank (SPEC §7), accumulated.
//!
//! `queries: [rows, dim]` (raw), `bank: [bank_rows, dim]` (rows L2-normalised), `dist: [rows]`:
//! `dist[r] += weight · (1 − max_b <q[r], bank[b]> / |q[r]|)`.
//!
//! Schedule: queries are cut into tiles of [`QUERY_TILE`] rows and the bank into chunks of
//! whole [`BANK_TILE`]-row tiles. One rayon task takes one (query tile, bank chunk) pair and
//! walks the chunk a bank tile at a time: a single-threaded gemm writes the `QUERY_TILE x
//! BANK_TILE` similarities into the task's scratch (1 MiB, L2-resident), and a vectorised
//! row maximum folds them into the task's running maximum. The bank is split into more chunks
//! only when there are too few query tiles to keep every thread busy (one query row against a
//! 100k-row bank still runs on every core); the per-chunk maxima (`chunks x rows` floats) are
//! then reduced. Memory is the scratch per thread plus those maxima, whatever the bank size;
//! the full `rows x bank_rows` matrix never exists.

use anyhow::{ensure, Result};
use rayon::prelude::*;

use super::check_len;
use super::vector::{dot, max, multiversion};

/// Query rows per task.
pub(crate) const QUERY_TILE: usize = 512;
/// Bank rows per gemm call.
pub(crate) const BANK_TILE: usize = 512;
/// Tasks wanted per thread when the bank must be split to find enough work.
const TASKS_PER_THREAD: usize = 4;

multiversion! {
    /// `running[i] = max(running[i], max_j sims[i, j])`, `sims: [running.len(), width]`.
    fn fold_row_max(running: &mut [f32], sims: &[f32], width: usize) {
        for (m, row) in running.iter_mut().zip(sims.chunks_exact(width)) {
            let v = max(row);
            *m = if v > *m { v } else { *m };
        }
    }
}

multiversion! {
    /// `dist[i] += weight · (1 − best[i] / |q_i|)`, `queries: [dist.len(), dim]`.
    fn finish(dist: &mut [f32], best: &[f32], queries: &[f32], dim: usize, weight: f32) {
        for ((d, &b), q) in dist.iter_mut().zip(best).zip(queries.chunks_exact(dim)) {
            *d += weight * (1.0 - b / dot(q, q).sqrt());
        }
    }
}

/// Bank chunks (in whole bank tiles) so that `query_tiles x chunks` gives every thread work.
fn bank_chunks(query_tiles: usize, bank_tiles: usize, threads: usize) -> usize {
    (TASKS_PER_THREAD * threads)
        .div_ceil(query_tiles)
        .clamp(1, bank_tiles.max(1))
}

/// The running maximum of `queries[r0..r0+m] · bank[b0..b1]ᵀ` per query row, into `best`.
fn search_tile(
    best: &mut [f32],
    scratch: &mut [f32],
    queries: &[f32],
    bank: &[f32],
    r0: usize,
    (b0, b1): (usize, usize),
    dim: usize,
) {
    let m = best.len();
    for t0 in (b0..b1).step_by(BANK_TILE) {
        let n = BANK_TILE.min(b1 - t0);
        let sims = &mut scratch[..m * n];
        // SAFETY: `sims` is `m x n` (row stride n) and owned by this task; the lhs rows
        // `r0..r0+m` and bank rows `t0..t0+n` of `dim` columns lie inside `queries` and `bank`,
        // whose lengths were checked by the caller and fit in isize (they are allocations).
        unsafe {
            gemm::gemm(
                m,
                n,
                dim,
                sims.as_mut_ptr(),
                1,
                n as isize,
                false,
                queries.as_ptr().add(r0 * dim),
                1,
                dim as isize,
                bank.as_ptr().add(t0 * dim),
                dim as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        fold_row_max(best, sims, n);
    }
}

pub(crate) fn nearest_cosine(
    dist: &mut [f32],
    queries: &[f32],
    bank: &[f32],
    rows: usize,
    bank_rows: usize,
    dim: usize,
    weight: f32,
) -> Result<()> {
    check_len("nearest_cosine", "queries", queries.len(), &[rows, dim])?;
    check_len("nearest_cosine", "bank", bank.len(), &[bank_rows, dim])?;
    check_len("nearest_cosine", "dist", dist.len(), &[rows])?;
    ensure!(bank_rows > 0, "nearest_cosine: the bank has no rows");
    ensure!(dim > 0, "nearest_cosine: feature width is 0");
    if rows == 0 {
        return Ok(());
    }
    let query_tiles = rows.div_ceil(QUERY_TILE);
    let bank_tiles = bank_rows.div_ceil(BANK_TILE);
    let chunks = bank_chunks(query_tiles, bank_tiles, rayon::current_num_threads());
    let tiles_per_chunk = bank_tiles.div_ceil(chunks);
    let chunks = bank_tiles.div_ceil(tiles_per_chunk);
    // partial[c * rows + r]: the maximum of query row r over bank chunk c.
    let mut partial = vec![f32::NEG_INFINITY; chunks * rows];
    partial
        .par_chunks_mut(rows)
        .enumerate()
        .flat_map(|(c, part)| {
            part.par_chunks_mut(QUERY_TILE)
                .enumerate()
                .map(move |(q, best)| (c, q, best))
        })
        .for_each_init(
            || vec![0f32; QUERY_TILE * BANK_TILE],
            |scratch, (c, q, best)| {
                let b0 = c * tiles_per_chunk * BANK_TILE;
                let b1 = ((c + 1) * tiles_per_chunk * BANK_TILE).min(bank_rows);
                search_tile(best, scratch, queries, bank, q * QUERY_TILE, (b0, b1), dim);
            },
        );
    let (best, rest) = partial.split_at_mut(rows);
    for part in rest.chunks_exact(rows) {
        best.iter_mut().zip(part).for_each(|(b, &p)| {
            *b = if p > *b { p } else { *b };
        });
    }
    dist.par_chunks_mut(QUERY_TILE)
        .zip(best.par_chunks(QUERY_TILE))
        .zip(queries.par_chunks(QUERY_TILE * dim))
        .for_each(|((d, b), q)| finish(d, b, q, dim, weight));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 reference: every pair, normalised explicitly.
    fn reference(queries: &[f32], bank: &[f32], dim: usize) -> Vec<f64> {
        queries
            .chunks_exact(dim)
            .map(|q| {
                let nq = q.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
                let best = bank
                    .chunks_exact(dim)
                    .map(|b| {
                        q.iter()
                            .zip(b)
                            .map(|(&x, &y)| f64::from(x) * f64::from(y))
                            .sum::<f64>()
                            / nq
                    })
                    .fold(f64::NEG_INFINITY, f64::max);
                1.0 - best
            })
            .collect()
    }

    fn data(n: usize, dim: usize, seed: u64, normalise: bool) -> Vec<f32> {
        let mut r = crate::rng::Rng::new(seed);
        let mut v: Vec<f32> = (0..n * dim).map(|_| r.normal()).collect();
        if normalise {
            for row in v.chunks_exact_mut(dim) {
                let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                row.iter_mut().for_each(|x| *x /= n);
            }
        }
        v
    }

    #[test]
    fn matches_f64_reference_across_tile_edges_and_accumulates() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for &(rows, bank_rows, dim) in &[
            (1, 1, 1),
            (5, 3, 7),
            (QUERY_TILE + 1, BANK_TILE + 1, 33),
            (2, 3 * BANK_TILE + 5, 16),
            (2 * QUERY_TILE, 2 * BANK_TILE, 64),
        ] {
            let q = data(rows, dim, 1 + rows as u64, false);
            let b = data(bank_rows, dim, 2 + bank_rows as u64, true);
            let mut dist = vec![0.5f32; rows];
            pool.install(|| nearest_cosine(&mut dist, &q, &b, rows, bank_rows, dim, 0.25))
                .unwrap();
            let want = reference(&q, &b, dim);
            for (i, (&got, &w)) in dist.iter().zip(&want).enumerate() {
                let w = 0.5 + 0.25 * w;
                assert!(
                    (f64::from(got) - w).abs() < 2e-6,
                    "rows {rows} bank {bank_rows} dim {dim} row {i}: {got} vs {w}"
                );
            }
        }
    }

    #[test]
    fn a_query_in_the_bank_has_distance_zero() {
        let dim = 24;
        let b = data(300, dim, 9, true);
        let q: Vec<f32> = b[17 * dim..18 * dim].iter().map(|v| v * 3.0).collect();
        let mut dist = vec![0.0];
        nearest_cosine(&mut dist, &q, &b, 1, 300, dim, 1.0).unwrap();
        assert!(dist[0].abs() < 1e-6, "{}", dist[0]);
    }

    #[test]
    fn bad_shapes_and_empty_banks_are_errors() {
        let mut dist = vec![0.0; 2];
        let q = vec![1.0; 8];
        assert!(nearest_cosine(&mut dist, &q, &[], 2, 0, 4, 1.0).is_err());
        assert!(nearest_cosine(&mut dist, &q, &[1.0; 4], 2, 1, 3, 1.0).is_err());
        let err = nearest_cosine(&mut dist, &q, &[1.0; 5], 2, 1, 4, 1.0).unwrap_err();
        assert!(format!("{err}").contains("bank"), "{err}");
    }

    #[test]
    fn splits_the_bank_only_when_query_tiles_are_too_few() {
        assert_eq!(bank_chunks(100, 50, 2), 1);
        assert_eq!(bank_chunks(1, 50, 2), 8);
        assert_eq!(bank_chunks(1, 3, 2), 3);
        assert_eq!(bank_chunks(8, 1, 16), 1);
    }
}
