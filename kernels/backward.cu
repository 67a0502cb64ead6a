// Backward ops of training (SPEC §8). Each kernel is the twin of the CPU function of the same
// name in src/backend/cpu/backward/ (elementwise.rs, norm.rs, score.rs, attention.rs); f32
// throughout.
//
//   quick_gelu             x, y [n]:         y = x * sigmoid(1.702 x)
//   quick_gelu_backward    x, dy, dx [n]:    dx = dy * (s + 1.702 x s (1 - s)),  s = sigmoid(1.702 x)
//   bias_grad              dy [rows, dim]:   db[j] += sum_r dy[r, j]
//   layer_norm_backward    x, dy, dx [rows, dim], gamma [dim]; per row, x^ = (x - mean) rstd
//                          (two-pass mean and biased variance, as the forward), g = dy gamma:
//                          dx += rstd (g - mean(g) - x^ mean(g x^)),
//                          dgamma += sum_r dy x^,  dbeta += sum_r dy
//   state_logits_backward  z, dz [rows, dim], text, dtext [2, dim], dlogits [rows, 2];
//                          z^ = z / |z|, a_s = scale dlogits[r, s], g = a_0 text[0] + a_1 text[1]:
//                          dz[r] += (g - <g, z^> z^) / |z|,  dtext[s] += sum_r a_s z^[r]
//   abnormal_probability_backward  logits, dlogits [rows, 2], dprobs [rows]:
//                          p = sigmoid(l1 - l0), g = dprobs p (1 - p), dlogits[r] = (-g, g)
//   attention_backward     see the block comment above its kernels below.
//
// Launch: the element-wise kernels and abnormal_probability_backward take one thread per
// element (grid-stride loops, any grid); the row-wise ones (layer_norm_stats,
// layer_norm_backward_dx, state_logits_backward_dz) one warp per row, blockDim (32, rows per
// block), gridDim.x = ceil(rows / rows per block).
//
// Column sums (bias_grad's db, layer_norm_backward's dgamma and dbeta, state_logits_backward's
// dtext) are deterministic two-pass reductions, no atomics: pass 1 (`*_partial` / `*_params` /
// `*_dtext`: grid (ceil(dim / 32), chunks), block (32, 8)) gives each block 32 consecutive
// columns of one chunk of `chunk_rows` rows; row lane y sums rows y, y + 8, ... of the chunk in
// order, the 8 lanes are added in order through shared memory, and the block writes its row of
// partial[chunks, width]; pass 2 (`sum_partials`, one thread per column) adds the chunks in
// order into the output. The same inputs give the same bits on every run.
#include "common.cuh"

#define COL_TILE 32
#define ROW_LANES 8

extern "C" __global__ void quick_gelu(float* y, const float* x, GeluParams p) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < p.n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = x[i];
        y[i] = v / (1.0f + expf(-1.702f * v));
    }
}

extern "C" __global__ void quick_gelu_backward(float* dx, const float* dy, const float* x,
                                               GeluParams p) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < p.n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = x[i];
        float s = 1.0f / (1.0f + expf(-1.702f * v));
        dx[i] = dy[i] * (s + 1.702f * v * s * (1.0f - s));
    }
}

// The sum of `v` over the ROW_LANES row lanes (threadIdx.y) of each column (threadIdx.x), added
// in lane order; meaningful in lane 0. Every thread of the block must call it.
__device__ float lanes_sum(float (*buf)[COL_TILE], float v) {
    buf[threadIdx.y][threadIdx.x] = v;
    __syncthreads();
    float s = 0.0f;
    if (threadIdx.y == 0) {
        for (int l = 0; l < ROW_LANES; ++l) s += buf[l][threadIdx.x];
    }
    __syncthreads();
    return s;
}

// out[j] += sum_c partial[c * stride + j] for j < n, chunks in order.
extern "C" __global__ void sum_partials(float* out, const float* partial, SumPartialsParams p) {
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < p.n; j += gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int c = 0; c < p.chunks; ++c) s += partial[(long long)c * p.stride + j];
        out[j] += s;
    }
}

// partial[chunk, dim]: bias_grad's column sums of dy over one chunk of rows.
extern "C" __global__ void bias_grad_partial(float* partial, const float* dy,
                                             BackwardRowsParams p) {
    __shared__ float buf[ROW_LANES][COL_TILE];
    const int col = blockIdx.x * COL_TILE + threadIdx.x;
    const int r0 = blockIdx.y * p.chunk_rows;
    const int r1 = min(r0 + p.chunk_rows, p.rows);
    float s = 0.0f;
    if (col < p.dim) {
        for (int r = r0 + threadIdx.y; r < r1; r += ROW_LANES) s += dy[(long long)r * p.dim + col];
    }
    s = lanes_sum(buf, s);
    if (threadIdx.y == 0 && col < p.dim) partial[(long long)blockIdx.y * p.dim + col] = s;
}

// stats[r] = (mean, rstd) of row r of x, exactly as the forward layer_norm computes them.
extern "C" __global__ void layer_norm_stats(float* stats, const float* x, BackwardRowsParams p) {
    const int row = blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= p.rows) return;
    const float* xr = x + (long long)row * p.dim;
    float s = 0.0f;
    for (int i = threadIdx.x; i < p.dim; i += WARP) s += xr[i];
    const float mean = warp_sum(s) / p.dim;
    float q = 0.0f;
    for (int i = threadIdx.x; i < p.dim; i += WARP) {
        float d = xr[i] - mean;
        q += d * d;
    }
    const float rstd = 1.0f / sqrtf(warp_sum(q) / p.dim + p.eps);
    if (threadIdx.x == 0) {
        stats[2 * row] = mean;
        stats[2 * row + 1] = rstd;
    }
}

// dx += rstd (g - mean(g) - x^ mean(g x^)), one warp per row.
extern "C" __global__ void layer_norm_backward_dx(float* dx, const float* dy, const float* x,
                                                  const float* gamma, const float* stats,
                                                  BackwardRowsParams p) {
    const int row = blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= p.rows) return;
    const long long off = (long long)row * p.dim;
    const float mean = stats[2 * row], rstd = stats[2 * row + 1];
    float sg = 0.0f, sgx = 0.0f;
    for (int i = threadIdx.x; i < p.dim; i += WARP) {
        float g = dy[off + i] * gamma[i];
        sg += g;
        sgx += g * ((x[off + i] - mean) * rstd);
    }
    const float mean_g = warp_sum(sg) / p.dim;
    const float mean_gx = warp_sum(sgx) / p.dim;
    for (int i = threadIdx.x; i < p.dim; i += WARP) {
        float g = dy[off + i] * gamma[i];
        float h = (x[off + i] - mean) * rstd;
        dx[off + i] += rstd * (g - mean_g - h * mean_gx);
    }
}

// partial[chunk, 2, dim]: (sum dy x^, sum dy) of one chunk of rows (dgamma, dbeta).
extern "C" __global__ void layer_norm_backward_params(float* partial, const float* dy,
                                                      const float* x, const float* stats,
                                                      BackwardRowsParams p) {
    __shared__ float buf[ROW_LANES][COL_TILE];
    const int col = blockIdx.x * COL_TILE + threadIdx.x;
    const int r0 = blockIdx.y * p.chunk_rows;
    const int r1 = min(r0 + p.chunk_rows, p.rows);
    float sg = 0.0f, sb = 0.0f;
    if (col < p.dim) {
        for (int r = r0 + threadIdx.y; r < r1; r += ROW_LANES) {
            long long e = (long long)r * p.dim + col;
            float d = dy[e];
            sg += d * ((x[e] - stats[2 * r]) * stats[2 * r + 1]);
            sb += d;
        }
    }
    sg = lanes_sum(buf, sg);
    sb = lanes_sum(buf, sb);
    if (threadIdx.y == 0 && col < p.dim) {
        float* out = partial + (long long)blockIdx.y * 2 * p.dim;
        out[col] = sg;
        out[p.dim + col] = sb;
    }
}

// dz[r] += (g - <g, z^> z^) / |z|, one warp per row; inv_norm[r] = 1 / |z[r]| for the dtext pass.
extern "C" __global__ void state_logits_backward_dz(float* dz, float* inv_norm,
                                                    const float* dlogits, const float* z,
                                                    const float* text, BackwardRowsParams p) {
    const int row = blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= p.rows) return;
    const long long off = (long long)row * p.dim;
    const float* t0 = text;
    const float* t1 = text + p.dim;
    float zz = 0.0f, z0 = 0.0f, z1 = 0.0f;
    for (int i = threadIdx.x; i < p.dim; i += WARP) {
        float v = z[off + i];
        zz = fmaf(v, v, zz);
        z0 = fmaf(v, t0[i], z0);
        z1 = fmaf(v, t1[i], z1);
    }
    const float inv = 1.0f / sqrtf(warp_sum(zz));
    z0 = warp_sum(z0);
    z1 = warp_sum(z1);
    const float a0 = p.scale * dlogits[2 * row], a1 = p.scale * dlogits[2 * row + 1];
    const float gz = (a0 * z0 + a1 * z1) * inv;  // <g, z^>
    for (int i = threadIdx.x; i < p.dim; i += WARP) {
        float g = a0 * t0[i] + a1 * t1[i];
        dz[off + i] += (g - gz * z[off + i] * inv) * inv;
    }
    if (threadIdx.x == 0) inv_norm[row] = inv;
}

// partial[chunk, 2, dim]: sum_r a_s z^[r] of one chunk of rows (dtext).
extern "C" __global__ void state_logits_backward_dtext(float* partial, const float* dlogits,
                                                       const float* z, const float* inv_norm,
                                                       BackwardRowsParams p) {
    __shared__ float buf[ROW_LANES][COL_TILE];
    const int col = blockIdx.x * COL_TILE + threadIdx.x;
    const int r0 = blockIdx.y * p.chunk_rows;
    const int r1 = min(r0 + p.chunk_rows, p.rows);
    float s0 = 0.0f, s1 = 0.0f;
    if (col < p.dim) {
        for (int r = r0 + threadIdx.y; r < r1; r += ROW_LANES) {
            float zh = z[(long long)r * p.dim + col] * inv_norm[r];
            s0 += p.scale * dlogits[2 * r] * zh;
            s1 += p.scale * dlogits[2 * r + 1] * zh;
        }
    }
    s0 = lanes_sum(buf, s0);
    s1 = lanes_sum(buf, s1);
    if (threadIdx.y == 0 && col < p.dim) {
        float* out = partial + (long long)blockIdx.y * 2 * p.dim;
        out[col] = s0;
        out[p.dim + col] = s1;
    }
}

// p = sigmoid(l1 - l0) (evaluated without overflow, as abnormal_probability), one thread per row.
extern "C" __global__ void abnormal_probability_backward(float* dlogits, const float* dprobs,
                                                         const float* logits, ScoreParams p) {
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < p.rows; r += gridDim.x * blockDim.x) {
        float d = logits[2 * r + 1] - logits[2 * r];
        float pr;
        if (d >= 0.0f) {
            pr = 1.0f / (1.0f + expf(-d));
        } else {
            float e = expf(d);
            pr = e / (1.0f + e);
        }
        float g = dprobs[r] * pr * (1.0f - pr);
        dlogits[2 * r] = -g;
        dlogits[2 * r + 1] = g;
    }
}

// ---- attention_backward ----
//
//   qkv, dqkv [batch, tokens, 3, heads, D] (dqkv overwritten), dout [batch, tokens, heads, D];
//   per (image, head), s = scale = 1 / sqrt(D), causal: key j > query i masked:
//   P = softmax(s Q K^T + mask),  dV = P^T dO,  dP = dO V^T,  dS = P o (dP - delta),
//   delta_i = rowsum(dP o P)_i = <dO_i, O_i>,  dQ = s dS K,  dK = s dS^T Q
//
// FlashAttention-2 style: no tokens x tokens matrix exists; three kernels, each one thread per
// row of its own (query or key), streaming the other side's rows through shared memory in tiles:
//   attention_backward_stats_d*: per query, recomputes O_i with an online softmax (running max m,
//     running sum l) and writes lse_i = m + log l and delta_i = <dO_i, O_i>
//     (lse, delta [batch, heads, tokens]);
//   attention_backward_dq_d*:    per query, streams K, V: P_ij = exp(s <q_i, k_j> - lse_i),
//     dP_ij = <dO_i, v_j>, dQ_i += (P_ij (dP_ij - delta_i)) k_j, then dQ_i *= s;
//   attention_backward_dkv_d*:   per key, streams Q, dO, lse, delta (causal: from query j on):
//     dV_j += P_ij dO_i, dK_j += P_ij (dP_ij - delta_i) q_i, then dK_j *= s.
// A thread's own rows sit in shared memory with one float of padding (stride D + 1, so the
// lanes reading their own rows at the same d hit distinct banks); the streamed tile is read by
// every lane at the same address (a broadcast). The gradient accumulators are registers.
// Block ROWS threads, grid (ceil(tokens / ROWS), heads, batch); ROWS and the streamed TILE per
// head dim keep static shared memory under 48 KiB:
//   D = 32: ROWS 64, TILE 32 (25 KiB);  D = 64: ROWS 64, TILE 16 (41 KiB);
//   D = 128: ROWS 32, TILE 8 (41 KiB).
// Tokens need not be a multiple of either: rows past the end load as zeros and are masked.

// rows[r][d] = src[(row0 + r) * stride + d] for r < R, d < D (zeros past `tokens`). Every
// thread of the block takes part.
template <int D, int R, int LD>
__device__ void load_rows(float (*rows)[LD], const float* src, long long stride, int row0,
                          int tokens) {
    for (int e = threadIdx.x; e < R * D; e += blockDim.x) {
        int r = e / D, d = e % D;
        int row = row0 + r;
        rows[r][d] = row < tokens ? src[(long long)row * stride + d] : 0.0f;
    }
}

// Offsets shared by the three kernels for block (x, h, b).
struct AttnIndex {
    long long tok;   // qkv row stride: 3 * heads * D
    long long qbase; // q of (token 0, head h, image b) in qkv; k at + heads * D, v at + 2 heads * D
    long long ostr;  // dout row stride: heads * D
    long long obase; // dout of (token 0, head h, image b)
    long long sbase; // lse / delta of (token 0, head h, image b)
};

template <int D>
__device__ AttnIndex attn_index(const AttentionParams& p) {
    const int b = blockIdx.z, h = blockIdx.y;
    AttnIndex ix;
    ix.tok = 3LL * p.heads * D;
    ix.qbase = (long long)b * p.tokens * ix.tok + (long long)h * D;
    ix.ostr = (long long)p.heads * D;
    ix.obase = (long long)b * p.tokens * ix.ostr + (long long)h * D;
    ix.sbase = ((long long)b * p.heads + h) * p.tokens;
    return ix;
}

template <int D, int ROWS, int TILE>
__device__ void attention_stats(float* lse, float* delta, const float* dout, const float* qkv,
                                AttentionParams p) {
    __shared__ float qs[ROWS][D + 1];
    __shared__ float ks[TILE][D];
    __shared__ float vs[TILE][D];
    const AttnIndex ix = attn_index<D>(p);
    const int t = threadIdx.x, q0 = blockIdx.x * ROWS, i = q0 + t;
    const bool active = i < p.tokens;
    load_rows<D, ROWS>(qs, qkv + ix.qbase, ix.tok, q0, p.tokens);
    float acc[D];
#pragma unroll
    for (int d = 0; d < D; ++d) acc[d] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    const int key_end = p.causal ? min(q0 + ROWS, p.tokens) : p.tokens;
    for (int k0 = 0; k0 < key_end; k0 += TILE) {
        __syncthreads();
        load_rows<D, TILE>(ks, qkv + ix.qbase + p.heads * D, ix.tok, k0, p.tokens);
        load_rows<D, TILE>(vs, qkv + ix.qbase + 2 * p.heads * D, ix.tok, k0, p.tokens);
        __syncthreads();
        if (!active) continue;
        const int jend = min(TILE, (p.causal ? i + 1 : p.tokens) - k0);
        for (int j = 0; j < jend; ++j) {
            float sd = 0.0f;
#pragma unroll
            for (int d = 0; d < D; ++d) sd = fmaf(qs[t][d], ks[j][d], sd);
            sd *= p.scale;
            if (sd > m) {
                float c = expf(m - sd);
                l *= c;
#pragma unroll
                for (int d = 0; d < D; ++d) acc[d] *= c;
                m = sd;
            }
            float pj = expf(sd - m);
            l += pj;
#pragma unroll
            for (int d = 0; d < D; ++d) acc[d] = fmaf(pj, vs[j][d], acc[d]);
        }
    }
    if (active) {
        const float* go = dout + ix.obase + (long long)i * ix.ostr;
        float dd = 0.0f;
#pragma unroll
        for (int d = 0; d < D; ++d) dd = fmaf(go[d], acc[d], dd);
        lse[ix.sbase + i] = m + logf(l);
        delta[ix.sbase + i] = dd / l;
    }
}

template <int D, int ROWS, int TILE>
__device__ void attention_dq(float* dqkv, const float* dout, const float* qkv, const float* lse,
                             const float* delta, AttentionParams p) {
    __shared__ float qs[ROWS][D + 1];
    __shared__ float dos[ROWS][D + 1];
    __shared__ float ks[TILE][D];
    __shared__ float vs[TILE][D];
    const AttnIndex ix = attn_index<D>(p);
    const int t = threadIdx.x, q0 = blockIdx.x * ROWS, i = q0 + t;
    const bool active = i < p.tokens;
    load_rows<D, ROWS>(qs, qkv + ix.qbase, ix.tok, q0, p.tokens);
    load_rows<D, ROWS>(dos, dout + ix.obase, ix.ostr, q0, p.tokens);
    const float li = active ? lse[ix.sbase + i] : 0.0f;
    const float di = active ? delta[ix.sbase + i] : 0.0f;
    float acc[D];
#pragma unroll
    for (int d = 0; d < D; ++d) acc[d] = 0.0f;
    const int key_end = p.causal ? min(q0 + ROWS, p.tokens) : p.tokens;
    for (int k0 = 0; k0 < key_end; k0 += TILE) {
        __syncthreads();
        load_rows<D, TILE>(ks, qkv + ix.qbase + p.heads * D, ix.tok, k0, p.tokens);
        load_rows<D, TILE>(vs, qkv + ix.qbase + 2 * p.heads * D, ix.tok, k0, p.tokens);
        __syncthreads();
        if (!active) continue;
        const int jend = min(TILE, (p.causal ? i + 1 : p.tokens) - k0);
        for (int j = 0; j < jend; ++j) {
            float sd = 0.0f, dp = 0.0f;
#pragma unroll
            for (int d = 0; d < D; ++d) {
                sd = fmaf(qs[t][d], ks[j][d], sd);
                dp = fmaf(dos[t][d], vs[j][d], dp);
            }
            const float ds = expf(sd * p.scale - li) * (dp - di);
#pragma unroll
            for (int d = 0; d < D; ++d) acc[d] = fmaf(ds, ks[j][d], acc[d]);
        }
    }
    if (active) {
        float* dq = dqkv + ix.qbase + (long long)i * ix.tok;
#pragma unroll
        for (int d = 0; d < D; ++d) dq[d] = acc[d] * p.scale;
    }
}

template <int D, int ROWS, int TILE>
__device__ void attention_dkv(float* dqkv, const float* dout, const float* qkv, const float* lse,
                              const float* delta, AttentionParams p) {
    __shared__ float ks[ROWS][D + 1];
    __shared__ float vs[ROWS][D + 1];
    __shared__ float qs[TILE][D];
    __shared__ float dos[TILE][D];
    __shared__ float ls[TILE];
    __shared__ float dls[TILE];
    const AttnIndex ix = attn_index<D>(p);
    const int t = threadIdx.x, k0 = blockIdx.x * ROWS, j = k0 + t;
    const bool active = j < p.tokens;
    const long long kbase = ix.qbase + p.heads * D, vbase = ix.qbase + 2 * p.heads * D;
    load_rows<D, ROWS>(ks, qkv + kbase, ix.tok, k0, p.tokens);
    load_rows<D, ROWS>(vs, qkv + vbase, ix.tok, k0, p.tokens);
    float dk[D], dv[D];
#pragma unroll
    for (int d = 0; d < D; ++d) {
        dk[d] = 0.0f;
        dv[d] = 0.0f;
    }
    // Causal: queries before k0 see none of this block's keys.
    for (int q0 = p.causal ? k0 : 0; q0 < p.tokens; q0 += TILE) {
        __syncthreads();
        load_rows<D, TILE>(qs, qkv + ix.qbase, ix.tok, q0, p.tokens);
        load_rows<D, TILE>(dos, dout + ix.obase, ix.ostr, q0, p.tokens);
        for (int r = t; r < TILE; r += blockDim.x) {
            const bool ok = q0 + r < p.tokens;
            ls[r] = ok ? lse[ix.sbase + q0 + r] : 0.0f;
            dls[r] = ok ? delta[ix.sbase + q0 + r] : 0.0f;
        }
        __syncthreads();
        if (!active) continue;
        const int rbegin = p.causal ? max(0, j - q0) : 0;
        const int rend = min(TILE, p.tokens - q0);
        for (int r = rbegin; r < rend; ++r) {
            float sd = 0.0f, dp = 0.0f;
#pragma unroll
            for (int d = 0; d < D; ++d) {
                sd = fmaf(qs[r][d], ks[t][d], sd);
                dp = fmaf(dos[r][d], vs[t][d], dp);
            }
            const float pij = expf(sd * p.scale - ls[r]);
            const float ds = pij * (dp - dls[r]);
#pragma unroll
            for (int d = 0; d < D; ++d) {
                dv[d] = fmaf(pij, dos[r][d], dv[d]);
                dk[d] = fmaf(ds, qs[r][d], dk[d]);
            }
        }
    }
    if (active) {
        float* gk = dqkv + kbase + (long long)j * ix.tok;
        float* gv = dqkv + vbase + (long long)j * ix.tok;
#pragma unroll
        for (int d = 0; d < D; ++d) {
            gk[d] = dk[d] * p.scale;
            gv[d] = dv[d];
        }
    }
}

#define ATTENTION_BACKWARD(D, ROWS, TILE)                                                       \
    extern "C" __global__ void __launch_bounds__(ROWS) attention_backward_stats_d##D(          \
        float* lse, float* delta, const float* dout, const float* qkv, AttentionParams p) {     \
        attention_stats<D, ROWS, TILE>(lse, delta, dout, qkv, p);                               \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(ROWS) attention_backward_dq_d##D(             \
        float* dqkv, const float* dout, const float* qkv, const float* lse, const float* delta, \
        AttentionParams p) {                                                                    \
        attention_dq<D, ROWS, TILE>(dqkv, dout, qkv, lse, delta, p);                            \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(ROWS) attention_backward_dkv_d##D(            \
        float* dqkv, const float* dout, const float* qkv, const float* lse, const float* delta, \
        AttentionParams p) {                                                                    \
        attention_dkv<D, ROWS, TILE>(dqkv, dout, qkv, lse, delta, p);                           \
    }

ATTENTION_BACKWARD(32, 64, 32)
ATTENTION_BACKWARD(64, 64, 16)
ATTENTION_BACKWARD(128, 32, 8)
