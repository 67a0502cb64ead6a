// attention: multi-head scaled dot-product attention, flash style (CPU twin
// src/backend/cpu/attention.rs).
//
//   qkv [batch, tokens, 3, heads, D]  (q, k, v of each token, as a fused in_proj writes them)
//   out [batch, tokens, heads, D]
//   out_h[i] = sum_j softmax_j(<q_i, k_j> * scale) v_j,   j <= i when causal
//
// Never materialises the tokens x tokens scores: block (x, h, b) holds BQ queries (one per
// thread, q and the f32 accumulator in registers); keys and values stream through shared
// memory in tiles of BK; each tile's scores go to registers, then one online-softmax rescale
// (running max m, running sum l) per tile. f32 in, f32 accumulate. Instantiated for head
// dims 32, 64 and 128 (`attention_d64`, ...); grid (ceil(tokens / BQ), heads, batch),
// block BQ.
#include "common.cuh"

#define BQ 64
#define BK 32

template <int D>
__device__ void attention_tile(float* out, const float* qkv, AttentionParams p) {
    __shared__ float ks[BK][D];
    __shared__ float vs[BK][D];
    const int b = blockIdx.z, h = blockIdx.y;
    const int q0 = blockIdx.x * BQ;
    const int i = q0 + threadIdx.x;
    const long long tok_stride = 3LL * p.heads * D;
    const float* base = qkv + (long long)b * p.tokens * tok_stride + (long long)h * D;
    const bool active = i < p.tokens;

    float q[D], acc[D];
    if (active) {
        const float* qi = base + (long long)i * tok_stride;
        for (int d = 0; d < D; ++d) q[d] = qi[d] * p.scale;
    }
    for (int d = 0; d < D; ++d) acc[d] = 0.0f;
    float m = -INFINITY, l = 0.0f;

    int last_q = min(q0 + BQ, p.tokens) - 1;
    int key_end = p.causal ? last_q + 1 : p.tokens;
    for (int k0 = 0; k0 < key_end; k0 += BK) {
        __syncthreads();
        for (int e = threadIdx.x; e < BK * D; e += BQ) {
            int j = e / D, d = e % D;
            int key = k0 + j;
            float kv = 0.0f, vv = 0.0f;
            if (key < p.tokens) {
                const float* kp = base + (long long)key * tok_stride + p.heads * D;
                kv = kp[d];
                vv = kp[p.heads * D + d];
            }
            ks[j][d] = kv;
            vs[j][d] = vv;
        }
        __syncthreads();
        if (!active) continue;
        float s[BK];
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < BK; ++j) {
            int key = k0 + j;
            bool ok = key < p.tokens && (!p.causal || key <= i);
            float dot = 0.0f;
            for (int d = 0; d < D; ++d) dot = fmaf(q[d], ks[j][d], dot);
            s[j] = ok ? dot : -INFINITY;
            tile_max = fmaxf(tile_max, s[j]);
        }
        if (tile_max == -INFINITY) continue;
        float m_new = fmaxf(m, tile_max);
        float corr = expf(m - m_new);
        l *= corr;
        for (int d = 0; d < D; ++d) acc[d] *= corr;
#pragma unroll
        for (int j = 0; j < BK; ++j) {
            float pj = expf(s[j] - m_new);
            l += pj;
            for (int d = 0; d < D; ++d) acc[d] = fmaf(pj, vs[j][d], acc[d]);
        }
        m = m_new;
    }
    if (active) {
        float inv = 1.0f / l;
        float* o = out + (((long long)b * p.tokens + i) * p.heads + h) * D;
        for (int d = 0; d < D; ++d) o[d] = acc[d] * inv;
    }
}

extern "C" __global__ void __launch_bounds__(BQ) attention_d32(float* out, const float* qkv,
                                                               AttentionParams p) {
    attention_tile<32>(out, qkv, p);
}

extern "C" __global__ void __launch_bounds__(BQ) attention_d64(float* out, const float* qkv,
                                                               AttentionParams p) {
    attention_tile<64>(out, qkv, p);
}

extern "C" __global__ void __launch_bounds__(BQ) attention_d128(float* out, const float* qkv,
                                                                AttentionParams p) {
    attention_tile<128>(out, qkv, p);
}
