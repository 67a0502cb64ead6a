// nearest_cosine: top-1 cosine search against one memory bank (SPEC §7), accumulated. CPU twin:
// `nearest_cosine` in src/backend/cpu/search.rs.
//
//   queries [rows, dim] (raw), bank [bank_rows, dim] (rows L2-normalised), dist [rows]
//   dist[r] += weight * (1 - max_b <q[r], bank[b]> / |q[r]|)     (|q[r]| = 0 gives NaN, as torch)
//
// A hand-written fused kernel rather than cuBLAS plus a row-max pass: the similarities of a
// 64 x 64 (query x bank) tile live in registers (4 x 4 per thread) and fold straight into each
// thread's running maxima, so no similarity matrix is ever written to memory (a cuBLAS tile
// would be written and read back once per bank tile), memory is bounded by construction
// whatever bank_rows, and the products are plain f32 FMAs (no TF32 mode to guard against).
//
// nearest_cosine_partial: grid (ceil(rows / 64), chunks), block 256. Block (x, c) holds query
//   rows 64x..64x+63 and walks bank rows [c chunk_rows, min((c + 1) chunk_rows, bank_rows)) in
//   tiles of 64, the dim in steps of 16 through shared memory: both operands stored k-major,
//   [16][64 + 4] (the padding spreads the transposing stores over the banks and keeps the rows
//   16-byte aligned for the float4 reads). Thread (tx, ty) = (tid % 16, tid / 16) owns query
//   rows 4ty..4ty+3 and bank rows 4tx..4tx+3 of the tile; rows past the end load as zeros and
//   bank rows past the chunk are left out of the maxima. At the end the 16 threads sharing a
//   query row (one half-warp) combine their maxima with shuffles: partial[c, r].
// nearest_cosine_finish: one warp per query row, blockDim (32, rows per block): best = max over
//   the chunks of partial[c, r] (a maximum: exact in any order), |q[r]| from the row,
//   dist[r] += weight * (1 - best / |q[r]|).
// The launcher splits the bank into chunks only to fill the GPU when query tiles are few; the
// extra memory is chunks x rows floats.
#include "common.cuh"

#define SEARCH_BM 64  // query rows per block
#define SEARCH_BN 64  // bank rows per tile
#define SEARCH_BD 16  // dims per shared-memory step
#define SEARCH_PAD 4
#define SEARCH_THREADS 256

__device__ __forceinline__ float warp_max(float v) {
    for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

extern "C" __global__ void __launch_bounds__(SEARCH_THREADS)
    nearest_cosine_partial(float* partial, const float* queries, const float* bank,
                           SearchParams p) {
    __shared__ __align__(16) float qs[SEARCH_BD][SEARCH_BM + SEARCH_PAD];
    __shared__ __align__(16) float bs[SEARCH_BD][SEARCH_BN + SEARCH_PAD];
    const int tid = threadIdx.x;
    const int tx = tid % 16, ty = tid / 16;
    const int r0 = blockIdx.x * SEARCH_BM;
    const int b_begin = blockIdx.y * p.chunk_rows;
    const int b_end = min(b_begin + p.chunk_rows, p.bank_rows);
    float best[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    for (int n0 = b_begin; n0 < b_end; n0 += SEARCH_BN) {
        float acc[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
        }
        for (int k0 = 0; k0 < p.dim; k0 += SEARCH_BD) {
            for (int e = tid; e < SEARCH_BM * SEARCH_BD; e += SEARCH_THREADS) {
                const int row = e / SEARCH_BD, k = e % SEARCH_BD;
                const int kk = k0 + k, qr = r0 + row, br = n0 + row;
                qs[k][row] = (qr < p.rows && kk < p.dim) ? queries[(long long)qr * p.dim + kk]
                                                         : 0.0f;
                bs[k][row] = (br < b_end && kk < p.dim) ? bank[(long long)br * p.dim + kk] : 0.0f;
            }
            __syncthreads();
#pragma unroll
            for (int k = 0; k < SEARCH_BD; ++k) {
                const float4 a = *reinterpret_cast<const float4*>(&qs[k][4 * ty]);
                const float4 b = *reinterpret_cast<const float4*>(&bs[k][4 * tx]);
                const float av[4] = {a.x, a.y, a.z, a.w};
                const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
                for (int i = 0; i < 4; ++i) {
#pragma unroll
                    for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
                }
            }
            __syncthreads();
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            if (n0 + 4 * tx + j < b_end) {
#pragma unroll
                for (int i = 0; i < 4; ++i) best[i] = fmaxf(best[i], acc[i][j]);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        // Lanes tx = 0..15 of a half-warp share query rows: xor offsets below 16 stay inside it.
        for (int o = 8; o > 0; o >>= 1) {
            best[i] = fmaxf(best[i], __shfl_xor_sync(0xffffffffu, best[i], o));
        }
    }
    if (tx == 0) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int r = r0 + 4 * ty + i;
            if (r < p.rows) partial[(long long)blockIdx.y * p.rows + r] = best[i];
        }
    }
}

extern "C" __global__ void nearest_cosine_finish(float* dist, const float* partial,
                                                 const float* queries, SearchParams p) {
    const int row = blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= p.rows) return;
    const float* q = queries + (long long)row * p.dim;
    float sq = 0.0f;
    for (int i = threadIdx.x; i < p.dim; i += WARP) sq = fmaf(q[i], q[i], sq);
    sq = warp_sum(sq);
    float best = -INFINITY;
    for (int c = threadIdx.x; c < p.chunks; c += WARP) {
        best = fmaxf(best, partial[(long long)c * p.rows + row]);
    }
    best = warp_max(best);
    if (threadIdx.x == 0) dist[row] += p.weight * (1.0f - best / sqrtf(sq));
}
