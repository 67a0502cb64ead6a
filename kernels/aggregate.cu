// aggregate: multi-scale spatial aggregation of one odd window r (SPEC §3; CPU twin
// src/backend/cpu/aggregate.rs). x, out [batch, 1 + g*g, dim]; weights [r*r] row-major, the
// Gaussian window normalised over the whole r x r (computed on the host in f64, rounded once).
//
//   out[b, 0] = x[b, 0]                                             (CLS passes unchanged)
//   out[b, 1 + h*g + w] = sum_{ki, kj < r, (h+ki-r/2, w+kj-r/2) in grid}
//                           weights[ki*r + kj] * x[b, 1 + (h+ki-r/2)*g + (w+kj-r/2)]
//
// Zero padding, no renormalisation at the border. Same summation order as the CPU twin (ki,
// then kj; no fused multiply-add, as in Rust), so results match bit for bit. One thread per output element, consecutive threads on consecutive channels.
#include "common.cuh"

extern "C" __global__ void aggregate(float* out, const float* x, const float* weights,
                                     AggregateParams p) {
    long long tokens = (long long)p.grid * p.grid + 1;
    long long n = (long long)p.batch * tokens * p.dim;
    int half = p.window / 2;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n;
         e += (long long)gridDim.x * blockDim.x) {
        long long d = e % p.dim;
        long long t = (e / p.dim) % tokens;
        long long b = e / (tokens * p.dim);
        if (t == 0) {
            out[e] = x[e];
            continue;
        }
        int h = (int)((t - 1) / p.grid);
        int w = (int)((t - 1) % p.grid);
        const float* xb = x + (b * tokens + 1) * p.dim + d;
        float acc = 0.0f;
        for (int ki = 0; ki < p.window; ++ki) {
            int hh = h + ki - half;
            if (hh < 0 || hh >= p.grid) continue;
            for (int kj = 0; kj < p.window; ++kj) {
                int ww = w + kj - half;
                if (ww < 0 || ww >= p.grid) continue;
                float v = xb[((long long)hh * p.grid + ww) * p.dim];
                acc = __fadd_rn(acc, __fmul_rn(weights[ki * p.window + kj], v));
            }
        }
        out[e] = acc;
    }
}
