// The element-wise halves of `linear` (the GEMM itself is cuBLAS, see src/backend/cuda/gemm.rs):
//
//   f32_to_bf16:     out[i] = bf16_rne(in[i])                       in: [n] f32, out: [n] bf16
//   linear_epilogue: y[r, c] = act(y[r, c] + bias[c])               y: [rows, cols], bias: [cols]
//                    act = identity, or QuickGELU v * sigmoid(1.702 v)
//
// `linear` = (activations -> bf16) . cuBLAS bf16 x bf16 -> f32 (beta 1 for a fused residual)
// . linear_epilogue. A bf16 `linear` with a bias and no activation takes the bias in cuBLASLt's
// epilogue instead (src/backend/cuda/lt.rs) and skips linear_epilogue's pass over y.
// One thread per element, grid-stride loops.
#include "common.cuh"

extern "C" __global__ void f32_to_bf16(unsigned short* out, const float* in, ConvertParams p) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < p.n;
         i += (long long)gridDim.x * blockDim.x) {
        out[i] = f32_to_bf16_bits(in[i]);
    }
}

extern "C" __global__ void linear_epilogue(float* y, const float* bias, LinearEpilogueParams p) {
    long long n = (long long)p.rows * p.cols;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = y[i];
        if (p.has_bias) v += bias[i % p.cols];
        if (p.quick_gelu) v = v / (1.0f + expf(-1.702f * v));
        y[i] = v;
    }
}
