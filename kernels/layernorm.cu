// layer_norm: for each row r of x, y [rows, dim] (gamma, beta [dim])
//
//   mean = sum(x) / dim,  var = sum((x - mean)^2) / dim      (two passes, biased variance)
//   y    = (x - mean) * rsqrt(var + eps) * gamma + beta
//
// One warp per row, f32 throughout (the CPU twin: src/backend/cpu/norm.rs). Launch with
// blockDim = (32, ROWS_PER_BLOCK) and gridDim.x = ceil(rows / ROWS_PER_BLOCK).
#include "common.cuh"

extern "C" __global__ void layer_norm(float* y, const float* x, const float* gamma,
                                      const float* beta, LayerNormParams p) {
    int row = blockIdx.x * blockDim.y + threadIdx.y;
    if (row >= p.rows) return;
    const float* xr = x + (long long)row * p.dim;
    float* yr = y + (long long)row * p.dim;
    float s = 0.0f;
    for (int i = threadIdx.x; i < p.dim; i += WARP) s += xr[i];
    float mean = warp_sum(s) / p.dim;
    float q = 0.0f;
    for (int i = threadIdx.x; i < p.dim; i += WARP) {
        float d = xr[i] - mean;
        q += d * d;
    }
    float rstd = 1.0f / sqrtf(warp_sum(q) / p.dim + p.eps);
    for (int i = threadIdx.x; i < p.dim; i += WARP) {
        yr[i] = (xr[i] - mean) * rstd * gamma[i] + beta[i];
    }
}
