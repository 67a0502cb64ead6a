// attention_tc: multi-head scaled dot-product attention on tensor cores, head dim 64, bf16
// operands with f32 accumulation (CPU twin src/backend/cpu/attention.rs; the f32 kernels in
// attention.cu compute the same op).
//
//   qkv [batch, tokens, 3, heads, 64]  f32 (q, k, v of each token, as a fused in_proj writes them)
//   out [batch, tokens, heads, 64]     f32
//   out_h[i] = sum_j softmax_j(<q_i, k_j> * scale) v_j,   j <= i when causal
//
// FlashAttention-2 forward. Block (x, h, b) owns BQ = 64 queries, 16 per warp (4 warps); keys
// and values stream through shared memory in tiles of BK = 64, converted f32 -> bf16 (round to
// nearest even) on the way in. Per tile, each warp (rows i of its 16, keys j of the tile):
//   S = Q K^T                16 x 64, 8 n-tiles x 4 k-steps of mma.m16n8k16 (bf16, f32 acc)
//   S = S * scale * log2(e), -inf where j >= tokens or (causal) j > i
//   m' = max(m, max_j S),  alpha = 2^(m - m'),  P = 2^(S - m'),  l = alpha l + sum_j P
//   O = alpha O + P V        16 x 64, P rounded to bf16 straight from the C fragments of S
// then out = O / l. Key 0 lies in the first tile and every query sees it, so m is finite from
// the first tile on: no (-inf) - (-inf); a causal row whose keys in a later tile are all masked
// gets P = 0 and alpha = 1 there. Rows past `tokens` read zero queries and are not stored;
// keys past `tokens` are zero in shared memory (a 0 weight times garbage could be NaN) and
// masked. When causal, the block stops after its last query's tile and a warp skips the tiles
// past its last row (it still loads and syncs).
//
// mma.m16n8k16 fragments, lane = 4g + t: A (16 x 16, row-major) holds (g, 2t..2t+1),
// (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..) in its 4 registers; B (16 x 8, k x n) holds
// (k = 2t..2t+1, n = g), (k = 2t+8.., n = g); C (16 x 8 f32) holds (g, 2t), (g, 2t+1),
// (g+8, 2t), (g+8, 2t+1). The lower column / k sits in the lower half of a bf16x2 register.
// Q's A fragments are loaded once from global memory; K's B fragments come from the row-major
// [key][dim] tile by ldmatrix (rows = keys), V's from the same layout by ldmatrix.trans; the C
// fragments of S are P's A fragments (n-tiles 2kk, 2kk+1 = k-step kk), so P never leaves
// registers.
//
// Shared memory: K and V tiles, [64][72] bf16 each (rows padded by 16 bytes so that the eight
// 16-byte rows one ldmatrix phase reads fall in distinct banks): 18 KiB per block, static.
// Registers: Q fragments 16, O accumulators 32, S/P 32, m and l 4, plus the 32 f32 of a
// tile's loads in flight and addressing. __launch_bounds__(128, 4) caps them at 128 (ptxas
// 13.0 for sm_90: 36 bytes spilled, 6 L1 accesses per tile against 64 mma; 168 registers
// uncapped), so 4 blocks (16 warps, 72 KiB of shared memory) fit on an sm_90 SM: 25%
// occupancy, the latency of the unbuffered tile loads hidden by the other blocks. ViT-L at
// 518 px (1370 tokens, 16 heads) is 22 x 16 blocks per image, one wave over 132 SMs for a
// single image. Grid (ceil(tokens / 64), heads, batch), block 128. Inline PTX only (sm_80 and
// newer), so NVRTC needs no toolkit headers.
// Why not yet wgmma/TMA (Hopper, FlashAttention-3 style): they read bf16 tiles straight from
// memory, and qkv is f32 here (the QKV GEMM's output), converted in registers on the way in;
// a bf16 QKV epilogue would come first.
#include "common.cuh"

#define TC_D 64
#define TC_BQ 64
#define TC_BK 64
#define TC_THREADS (TC_BQ / 16 * WARP)
// Shared-memory row of a K or V tile, in bf16: 64 plus 8 of padding (module header).
#define TC_LD (TC_D + 8)

// Two f32 as one bf16x2 register, `lo` in the low half, each rounded to nearest even.
__device__ __forceinline__ unsigned int pack_bf16x2(float lo, float hi) {
    unsigned int r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ unsigned int shared_addr(const void* p) {
    return (unsigned int)__cvta_generic_to_shared(p);
}

// Four 8x8 bf16 matrices; lanes 8i..8i+7 give the addresses of matrix i's rows, and register
// i of lane 4g + t gets row g, columns 2t..2t+1 of matrix i (`trans`: rows 2t..2t+1, column g).
__device__ __forceinline__ void ldmatrix_x4(unsigned int r[4], unsigned int addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned int r[4], unsigned int addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}

// c += a b for one m16n8k16 tile (fragments in the module header).
__device__ __forceinline__ void mma_bf16(float c[4], const unsigned int a[4], unsigned int b0,
                                         unsigned int b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

extern "C" __global__ void __launch_bounds__(TC_THREADS, 4)
    attention_tc_d64(float* __restrict__ out, const float* __restrict__ qkv, AttentionParams p) {
    __shared__ __align__(16) unsigned short ks[TC_BK][TC_LD];
    __shared__ __align__(16) unsigned short vs[TC_BK][TC_LD];
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * TC_BQ;
    const int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
    const int g = lane / 4, t = lane % 4;
    const long long tok_stride = 3LL * p.heads * TC_D;
    const float* base = qkv + (long long)b * p.tokens * tok_stride + (long long)h * TC_D;
    const int row0 = q0 + warp * 16;
    // The two query rows of this lane's fragments (g and g + 8 of the warp's 16).
    const int rows[2] = {row0 + g, row0 + g + 8};

    // Q's A fragments, k-step kk = dims 16kk..16kk+15.
    unsigned int qa[4][4];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const bool in = rows[r] < p.tokens;
        const float* qr = base + (long long)(in ? rows[r] : 0) * tok_stride;
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                float2 v = {0.0f, 0.0f};
                if (in) v = *(const float2*)(qr + 16 * kk + 8 * half + 2 * t);
                qa[kk][r + 2 * half] = pack_bf16x2(v.x, v.y);
            }
        }
    }

    // O's C fragments, n-tile dn = dims 8dn..8dn+7; m and l of rows g and g + 8 (l is this
    // lane's partial sum over its columns, summed over the quad at the end).
    float o[8][4];
#pragma unroll
    for (int dn = 0; dn < 8; ++dn)
        for (int e = 0; e < 4; ++e) o[dn][e] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    const float scale_log2 = p.scale * 1.4426950408889634f;

    const int key_end = p.causal ? min(q0 + TC_BQ, p.tokens) : p.tokens;
    for (int k0 = 0; k0 < key_end; k0 += TC_BK) {
        __syncthreads();  // every warp is done reading the previous tile
        // 64 keys x 16 float4 of K and of V; 16 consecutive threads read one key's 256 bytes
        // and write its 128-byte bf16 row.
#pragma unroll
        for (int it = 0; it < TC_BK * TC_D / 4 / TC_THREADS; ++it) {
            const int e = it * TC_THREADS + threadIdx.x;
            const int j = e / (TC_D / 4), c = e % (TC_D / 4) * 4;
            const int key = k0 + j;
            float4 kv = {0.0f, 0.0f, 0.0f, 0.0f}, vv = {0.0f, 0.0f, 0.0f, 0.0f};
            if (key < p.tokens) {
                const float* kp = base + (long long)key * tok_stride + p.heads * TC_D + c;
                kv = *(const float4*)kp;
                vv = *(const float4*)(kp + p.heads * TC_D);
            }
            *(uint2*)&ks[j][c] = {pack_bf16x2(kv.x, kv.y), pack_bf16x2(kv.z, kv.w)};
            *(uint2*)&vs[j][c] = {pack_bf16x2(vv.x, vv.y), pack_bf16x2(vv.z, vv.w)};
        }
        __syncthreads();
        // Warp-uniform: rows all past `tokens`, or (causal) every key after every row.
        if (row0 >= p.tokens || (p.causal && k0 > row0 + 15)) continue;

        // S n-tile nt = keys k0 + 8nt..+7; one ldmatrix.x4 gives B for 2 k-steps.
        float s[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
            for (int e = 0; e < 4; ++e) s[nt][e] = 0.0f;
#pragma unroll
            for (int kp = 0; kp < 2; ++kp) {
                unsigned int kb[4];
                ldmatrix_x4(kb, shared_addr(&ks[8 * nt + lane % 8][32 * kp + 8 * (lane / 8)]));
                mma_bf16(s[nt], qa[2 * kp], kb[0], kb[1]);
                mma_bf16(s[nt], qa[2 * kp + 1], kb[2], kb[3]);
            }
        }

        // Only tiles that reach past `tokens` or past the warp's first row need the mask.
        const bool edge = k0 + TC_BK > p.tokens || (p.causal && k0 + TC_BK - 1 > row0);
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float v = s[nt][e] * scale_log2;
                if (edge) {
                    const int key = k0 + 8 * nt + 2 * t + (e & 1);
                    if (key >= p.tokens || (p.causal && key > rows[e >> 1])) v = -INFINITY;
                }
                s[nt][e] = v;
                mx[e >> 1] = fmaxf(mx[e >> 1], v);
            }
        }
        float alpha[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            // The quad (t = 0..3) holds the row's 64 columns.
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            alpha[r] = exp2f(m[r] - mx[r]);
            m[r] = mx[r];
            l[r] *= alpha[r];
        }
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[nt][e] = exp2f(s[nt][e] - m[e >> 1]);
                l[e >> 1] += s[nt][e];
            }
        }
#pragma unroll
        for (int dn = 0; dn < 8; ++dn)
            for (int e = 0; e < 4; ++e) o[dn][e] *= alpha[e >> 1];

        // O += P V over k-steps kk = keys k0 + 16kk..+15; one ldmatrix.x4.trans gives B for
        // the O n-tiles 2dp and 2dp + 1.
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
            const unsigned int pa[4] = {
                pack_bf16x2(s[2 * kk][0], s[2 * kk][1]),
                pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]),
            };
#pragma unroll
            for (int dp = 0; dp < 4; ++dp) {
                unsigned int vb[4];
                const int j = 16 * kk + lane % 8 + 8 * (lane / 8 % 2);
                ldmatrix_x4_trans(vb, shared_addr(&vs[j][16 * dp + 8 * (lane / 16)]));
                mma_bf16(o[2 * dp], pa, vb[0], vb[1]);
                mma_bf16(o[2 * dp + 1], pa, vb[2], vb[3]);
            }
        }
    }

    if (row0 >= p.tokens) return;  // warp-uniform, after the last __syncthreads
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        if (rows[r] >= p.tokens) continue;
        const float inv = 1.0f / l[r];
        float* orow = out + (((long long)b * p.tokens + rows[r]) * p.heads + h) * TC_D;
#pragma unroll
        for (int dn = 0; dn < 8; ++dn)
            *(float2*)(orow + 8 * dn + 2 * t) = {o[dn][2 * r] * inv, o[dn][2 * r + 1] * inv};
    }
}
