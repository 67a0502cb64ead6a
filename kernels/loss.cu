// Training losses (SPEC §8; CPU twin src/backend/cpu/loss.rs, with the full math)
//
//   focal_loss, l1_loss: p, dp [rows, stride], the block p[r, offset + c], c < cols, against
//       t [rows, cols], n = rows * cols; loss[0] = (1/n) sum term(p, t) (overwritten),
//       dp[r, offset + c] += weight * (d term / dp) / n.
//       focal: term = BCE * (1 - p_t)^4, p_t = p t + (1 - p)(1 - t) (f32, unfused),
//       BCE = -(t max(ln p, -100) + (1 - t) max(ln(1 - p), -100)), torch's BCE backward
//       (p - t) / max(p (1 - p), 1e-12); l1: term = |p - t|, gradient sign(p - t).
//       One block of LOSS_THREADS threads, per-element math and the sum in double, the sum a
//       fixed tree (deterministic).
//   patch alignment: z [batch, tokens, e] (row 0 of each image is CLS, skipped),
//       masks [batch, P], P = tokens - 1, label l = -1 where M = 0 else M,
//       state [batch, 2, e] sums a = sum_{l=1} zhat, n = sum_{l=-1} zhat, then (c-, c+), then
//       the row norms [batch, P]; zhat = z / |z| (f32).
//       pal_norms     one warp per patch row: |z|.
//       pal_sums      grid (ceil(e / 32), batch), block (32, PAL_ROWS): column j of image b,
//                     rows strided over threadIdx.y, double sums combined in a fixed order.
//       pal_finalize  one block of LOSS_THREADS: counts, a.n, a.a, n.n per image (double,
//                     from the stored f32 sums), then
//                     value = max(0, sum 2 a.n / sum 2|A||N|
//                                    - sum (a.a + n.n) / sum (|A|^2 + |N|^2))
//                     (0 when no M is 0; a mean over no pair is 0), c- = 1 / count-,
//                     c+ = -1 / count+ (0 for an empty count; both 0 when clamped).
//       pal_backward  one warp per patch row with l = +-1: g = 2 weight (c- cross + c+ same),
//                     dz += (g - <g, zhat> zhat) / |z|.
#include "common.cuh"

#define LOSS_THREADS 1024
#define PAL_ROWS 8

// Sum of `v` over the block (blockDim.x a power of two, <= LOSS_THREADS), in a fixed order;
// every thread gets the result.
__device__ double block_sum(double v, double* sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

__device__ __forceinline__ void focal_term(float p32, float t32, double* value, double* grad) {
    double p = p32, t = t32;
    double bce = -(t * fmax(log(p), -100.0) + (1.0 - t) * fmax(log(1.0 - p), -100.0));
    float pt = __fadd_rn(__fmul_rn(p32, t32), __fmul_rn(1.0f - p32, 1.0f - t32));
    double om = 1.0 - (double)pt;
    double om2 = om * om;
    double w = om2 * om2;
    double dbce = (p - t) / fmax(p * (1.0 - p), 1e-12);
    double dw = -4.0 * (om2 * om) * (2.0 * t - 1.0);
    *value = bce * w;
    *grad = dbce * w + bce * dw;
}

__device__ __forceinline__ void l1_term(float p, float t, double* value, double* grad) {
    float d = p - t;
    *value = fabsf(d);
    *grad = d > 0.0f ? 1.0 : (d < 0.0f ? -1.0 : 0.0);
}

template <bool FOCAL>
__device__ void block_loss(float* loss, float* dp, const float* p, const float* t, LossParams q) {
    __shared__ double sh[LOSS_THREADS];
    long long n = (long long)q.rows * q.cols;
    double nd = (double)n;
    double acc = 0.0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        long long at = (i / q.cols) * q.stride + q.offset + i % q.cols;
        double v, g;
        if (FOCAL) {
            focal_term(p[at], t[i], &v, &g);
        } else {
            l1_term(p[at], t[i], &v, &g);
        }
        acc += v;
        dp[at] = __fadd_rn(dp[at], __fmul_rn(q.weight, (float)(g / nd)));
    }
    double total = block_sum(acc, sh);
    if (threadIdx.x == 0) loss[0] = (float)(total / nd);
}

extern "C" __global__ void __launch_bounds__(LOSS_THREADS)
    focal_loss(float* loss, float* dp, const float* p, const float* t, LossParams q) {
    block_loss<true>(loss, dp, p, t, q);
}

extern "C" __global__ void __launch_bounds__(LOSS_THREADS)
    l1_loss(float* loss, float* dp, const float* p, const float* t, LossParams q) {
    block_loss<false>(loss, dp, p, t, q);
}

__device__ __forceinline__ float patch_label(float m) { return m == 0.0f ? -1.0f : m; }

__device__ __forceinline__ long long coef_offset(AlignParams q) {
    return (long long)q.batch * 2 * q.e;
}

extern "C" __global__ void pal_norms(float* state, const float* z, AlignParams q) {
    int patches = q.tokens - 1;
    long long row = (long long)blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= (long long)q.batch * patches) return;
    long long b = row / patches, i = row % patches;
    const float* zr = z + (b * q.tokens + 1 + i) * q.e;
    float sq = 0.0f;
    for (int j = threadIdx.x; j < q.e; j += WARP) sq = fmaf(zr[j], zr[j], sq);
    sq = warp_sum(sq);
    if (threadIdx.x == 0) state[coef_offset(q) + 2 + row] = sqrtf(sq);
}

extern "C" __global__ void pal_sums(float* state, const float* z, const float* masks,
                                    AlignParams q) {
    __shared__ double sa[PAL_ROWS][WARP];
    __shared__ double sn[PAL_ROWS][WARP];
    int patches = q.tokens - 1;
    long long b = blockIdx.y;
    int j = blockIdx.x * WARP + threadIdx.x;
    const float* norms = state + coef_offset(q) + 2 + b * patches;
    double a = 0.0, n = 0.0;
    if (j < q.e) {
        for (int i = threadIdx.y; i < patches; i += PAL_ROWS) {
            float l = patch_label(masks[b * patches + i]);
            if (l != 1.0f && l != -1.0f) continue;
            float v = z[(b * q.tokens + 1 + i) * q.e + j] / norms[i];
            if (l == 1.0f) {
                a += v;
            } else {
                n += v;
            }
        }
    }
    sa[threadIdx.y][threadIdx.x] = a;
    sn[threadIdx.y][threadIdx.x] = n;
    __syncthreads();
    if (threadIdx.y == 0 && j < q.e) {
        double ta = 0.0, tn = 0.0;
        for (int y = 0; y < PAL_ROWS; ++y) {
            ta += sa[y][threadIdx.x];
            tn += sn[y][threadIdx.x];
        }
        state[b * 2 * q.e + j] = (float)ta;
        state[(b * 2 + 1) * q.e + j] = (float)tn;
    }
}

extern "C" __global__ void __launch_bounds__(LOSS_THREADS)
    pal_finalize(float* loss, float* state, const float* masks, AlignParams q) {
    __shared__ double sh[LOSS_THREADS];
    int patches = q.tokens - 1;
    double neg_sum = 0.0, neg_count = 0.0, pos_sum = 0.0, pos_count = 0.0, zeros = 0.0;
    for (long long b = 0; b < q.batch; ++b) {
        double na = 0.0, nn = 0.0, nz = 0.0;
        for (int i = threadIdx.x; i < patches; i += blockDim.x) {
            float m = masks[b * patches + i];
            float l = patch_label(m);
            na += l == 1.0f;
            nn += l == -1.0f;
            nz += m == 0.0f;
        }
        const float* a = state + b * 2 * q.e;
        const float* n = a + q.e;
        double an = 0.0, aa = 0.0, n2 = 0.0;
        for (int j = threadIdx.x; j < q.e; j += blockDim.x) {
            double x = a[j], y = n[j];
            an += x * y;
            aa += x * x;
            n2 += y * y;
        }
        na = block_sum(na, sh);
        nn = block_sum(nn, sh);
        zeros += block_sum(nz, sh);
        neg_sum += 2.0 * block_sum(an, sh);
        neg_count += 2.0 * na * nn;
        pos_sum += block_sum(aa, sh) + block_sum(n2, sh);
        pos_count += na * na + nn * nn;
    }
    if (threadIdx.x != 0) return;
    double neg = neg_count > 0.0 ? neg_sum / neg_count : 0.0;
    double pos = pos_count > 0.0 ? pos_sum / pos_count : 0.0;
    double raw = neg - pos;
    double value = 0.0, cn = 0.0, cp = 0.0;
    if (zeros > 0.0 && !(raw < 0.0)) {
        value = raw;
        cn = neg_count > 0.0 ? 1.0 / neg_count : 0.0;
        cp = pos_count > 0.0 ? -1.0 / pos_count : 0.0;
    }
    loss[0] = (float)value;
    state[coef_offset(q)] = (float)cn;
    state[coef_offset(q) + 1] = (float)cp;
}

extern "C" __global__ void pal_backward(float* dz, const float* state, const float* z,
                                        const float* masks, AlignParams q) {
    int patches = q.tokens - 1;
    long long row = (long long)blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= (long long)q.batch * patches) return;
    long long coef = coef_offset(q);
    double cn = state[coef], cp = state[coef + 1];
    if (cn == 0.0 && cp == 0.0) return;
    float l = patch_label(masks[row]);
    long long b = row / patches, i = row % patches;
    const float* a = state + b * 2 * q.e;
    const float* n = a + q.e;
    const float* cross;
    const float* same;
    if (l == 1.0f) {
        cross = n;
        same = a;
    } else if (l == -1.0f) {
        cross = a;
        same = n;
    } else {
        return;
    }
    float norm = state[coef + 2 + row];
    long long at = (b * q.tokens + 1 + i) * q.e;
    double w2 = 2.0 * (double)q.weight;
    float gz = 0.0f;
    for (int j = threadIdx.x; j < q.e; j += WARP) {
        float g = (float)(w2 * (cn * (double)cross[j] + cp * (double)same[j]));
        gz = fmaf(g, z[at + j], gz);
    }
    gz = warp_sum(gz) / norm;
    for (int j = threadIdx.x; j < q.e; j += WARP) {
        float g = (float)(w2 * (cn * (double)cross[j] + cp * (double)same[j]));
        dz[at + j] += (g - gz * z[at + j] / norm) / norm;
    }
}
